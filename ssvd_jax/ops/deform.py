"""Deformable convolution (DCNv1, optional DCNv2 modulation) in pure jnp, NHWC.

Semantics are torchvision.ops.deform_conv2d's (= the release's mmdetection DCN, REFERENCE_SPEC
4.3): tap (ky, kx) of output pixel (y, x) samples the input bilinearly at
(y*stride - padding + ky*dilation + dy, x*stride - padding + kx*dilation + dx), each corner outside
the map contributing 0; offsets are laid out as channel g*2*kh*kw + 2*k + {0: dy, 1: dx} with
k = ky*kw + kx, and deformable group g reads input channels [g*C/G, (g+1)*C/G).

How (shared/docs/PERF_NOTES.md, "What made the JAX deformable conv fast"): the input becomes a
table of rows, one row = the C/G channels of one deformable group at one pixel; for each output
pixel, tap and group the 4 bilinear corner rows are fetched with 4 whole-row gathers (never one
stacked 4-corner gather: 7x slower, and its gradient crashed XLA CPU), weighted and summed, and a
matmul over (group x channel) contracts them with that tap's kernel slice. Unlike PERF_NOTES' one
matmul over (tap x group x channel), the taps go through a scan that accumulates the output:
only a [P, C] block of samples is alive instead of [P, K*C]. XLA:CPU allocates a call's
temporaries afresh and page-faulting them in is expensive here, so the scan measured ~15%
faster forward at 1x256x56x56 and 7x256x56x56 (CPU time) than the single matmul.

The gradient is a custom VJP, also scanned over taps: it recomputes each tap's samples instead of
keeping all K of them from the forward (PERF_NOTES: 2.9 GB kept for one layer at 8x56x56), forms
the kernel and sample gradients with two matmuls, and scatters the latter into the input's
cotangent in place (`sampling.weighted_gather_transpose`). This made fwd+bwd 1.7-1.9x faster than
jax's derived gradient of the same forward. The bilinear weights' derivatives w.r.t. offsets and
mask are still derived by jax, so they follow `sampling.bilinear_corners` (torchvision's
per-corner gradient, also at integer positions). Reverse-mode only (no jax.jvp).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ssvd_jax.ops.sampling import (
    bilinear_corners,
    weighted_gather,
    weighted_gather_transpose,
)

Array = jax.Array


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sample_and_contract(
    table_RxCg: Array,
    rows: tuple[Array, ...],
    weights: tuple[Array, ...],
    kernel_KxCxO: Array,
    precision: jax.lax.PrecisionLike,
) -> Array:
    """out[p] = sum_k (sum_i weights[i][k, p, g] * table[rows[i][k, p, g]]) @ kernel[k]: [P, O].

    rows/weights: 4 corner arrays of shape [K, P, G] (tap, output pixel, group). A scan over taps
    keeps the live sampled block at [P, C] instead of [P, K*C] (page-faulting fresh memory for
    the big block cost more than the 9 smaller matmuls here).
    """
    return _contract_fwd(table_RxCg, rows, weights, kernel_KxCxO, precision)[0]


def _contract_fwd(table_RxCg, rows, weights, kernel_KxCxO, precision):
    num_pixels = rows[0].shape[1]
    taps, channels, out_channels = kernel_KxCxO.shape

    def tap_step(acc_PxO, tap):
        rows_k, weights_k, kernel_CxO = tap
        sampled = weighted_gather(table_RxCg, rows_k, weights_k).reshape(num_pixels, channels)
        return acc_PxO + jnp.matmul(sampled, kernel_CxO, precision=precision), None

    acc = jnp.zeros((num_pixels, out_channels), jnp.result_type(table_RxCg, kernel_KxCxO))
    out, _ = jax.lax.scan(tap_step, acc, (rows, weights, kernel_KxCxO))
    return out, (table_RxCg, rows, weights, kernel_KxCxO)


def _contract_bwd(precision, residuals, g_out_PxO):
    """Per tap: recompute the samples (cheaper than keeping [K, P, C] of them alive), then the
    kernel gradient, the sample gradient, and its transpose through the bilinear gather."""
    table_RxCg, rows, weights, kernel_KxCxO = residuals
    num_pixels, groups = rows[0].shape[1:]
    channels = kernel_KxCxO.shape[1]

    def tap_step(g_table, tap):
        rows_k, weights_k, kernel_CxO = tap
        sampled = weighted_gather(table_RxCg, rows_k, weights_k).reshape(num_pixels, channels)
        g_kernel_CxO = jnp.matmul(sampled.T, g_out_PxO, precision=precision)
        g_sampled = jnp.matmul(g_out_PxO, kernel_CxO.T, precision=precision)
        g_table, g_weights_k = weighted_gather_transpose(
            table_RxCg, rows_k, weights_k, g_sampled.reshape(num_pixels, groups, -1), g_table
        )
        return g_table, (g_weights_k, g_kernel_CxO)

    g_table, (g_weights, g_kernel) = jax.lax.scan(
        tap_step, jnp.zeros_like(table_RxCg), (rows, weights, kernel_KxCxO)
    )
    g_weights = tuple(g.astype(w.dtype) for g, w in zip(g_weights, weights, strict=True))
    return g_table, None, g_weights, g_kernel.astype(kernel_KxCxO.dtype)


_sample_and_contract.defvjp(_contract_fwd, _contract_bwd)


def deform_conv2d(
    x_NxHxWxC: Array,
    offset_NxHoxWox2GK: Array,
    kernel_HWIO: Array,
    *,
    deformable_groups: int,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    mask: Array | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> Array:
    """Deformable 2-D convolution; returns [N, Ho, Wo, O]. No bias (add it outside).

    x_NxHxWxC: input map. offset_NxHoxWox2GK: [N, Ho, Wo, 2*G*kh*kw] in torchvision's channel
    order (see module docstring). kernel_HWIO: [kh, kw, C, O]. mask: optional DCNv2 modulation
    [N, Ho, Wo, G*kh*kw], channel g*kh*kw + k, multiplying each sample. precision: for the
    matmuls (pass jax.lax.Precision.HIGHEST on GPU to avoid TF32 in parity checks).
    """
    n, height, width, channels = x_NxHxWxC.shape
    kh, kw, kernel_in, out_channels = kernel_HWIO.shape
    groups = deformable_groups
    taps = kh * kw
    if kernel_in != channels:
        raise ValueError(f"kernel expects {kernel_in} input channels, input has {channels}")
    if channels % groups:
        raise ValueError(f"{channels} channels not divisible by {groups} deformable groups")
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    expected = (n, out_h, out_w, 2 * groups * taps)
    if offset_NxHoxWox2GK.shape != expected:
        raise ValueError(f"offset shape {offset_NxHoxWox2GK.shape}, expected {expected}")
    if mask is not None and mask.shape != (n, out_h, out_w, groups * taps):
        raise ValueError(f"mask shape {mask.shape}, expected {(n, out_h, out_w, groups * taps)}")
    dtype = x_NxHxWxC.dtype
    # Coordinates in the offsets' dtype: a bfloat16 map must not round pixel positions > 256.
    coord_dtype = offset_NxHoxWox2GK.dtype
    num_pixels = n * out_h * out_w

    # torchvision's (group, tap, yx) channel order -> tap-major [K, N, Ho, Wo, G, yx], so the scan
    # over taps slices contiguous blocks.
    offset_KxNxHoxWoxGx2 = offset_NxHoxWox2GK.reshape(n, out_h, out_w, groups, taps, 2).transpose(
        4, 0, 1, 2, 3, 5
    )
    ky_K = jnp.repeat(jnp.arange(kh), kw)
    kx_K = jnp.tile(jnp.arange(kw), kh)
    base_y_KxHo = ky_K[:, None] * dilation + (jnp.arange(out_h) * stride - padding)[None, :]
    base_x_KxWo = kx_K[:, None] * dilation + (jnp.arange(out_w) * stride - padding)[None, :]
    sample_y = (
        base_y_KxHo.astype(coord_dtype)[:, None, :, None, None] + offset_KxNxHoxWoxGx2[..., 0]
    )
    sample_x = (
        base_x_KxWo.astype(coord_dtype)[:, None, None, :, None] + offset_KxNxHoxWoxGx2[..., 1]
    )

    # Row ((n*H + y)*W + x)*G + g holds channels [g*C/G, (g+1)*C/G) of pixel (n, y, x): a free
    # reshape of NHWC.
    table_RxCg = jnp.asarray(x_NxHxWxC).reshape(n * height * width * groups, channels // groups)
    batch_base = jnp.arange(n, dtype=jnp.int32).reshape(1, n, 1, 1, 1) * (height * width * groups)
    row_base = batch_base + jnp.arange(groups, dtype=jnp.int32)
    modulation = None
    if mask is not None:
        modulation = mask.reshape(n, out_h, out_w, groups, taps).transpose(4, 0, 1, 2, 3)

    rows, weights = [], []
    for row, col, weight in bilinear_corners(sample_y, sample_x, height, width):
        weight = weight.astype(dtype)
        if modulation is not None:
            weight = weight * modulation
        rows.append((row_base + (row * width + col) * groups).reshape(taps, num_pixels, groups))
        weights.append(weight.reshape(taps, num_pixels, groups))

    kernel_KxCxO = jnp.asarray(kernel_HWIO).reshape(taps, channels, out_channels)
    out = _sample_and_contract(table_RxCg, tuple(rows), tuple(weights), kernel_KxCxO, precision)
    return out.reshape(n, out_h, out_w, out_channels)
