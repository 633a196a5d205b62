"""Deformable convolution (DCNv1, optional DCNv2 modulation) in pure jnp, NHWC.

Semantics are torchvision.ops.deform_conv2d's (= the release's mmdetection DCN, REFERENCE_SPEC
4.3): tap (ky, kx) of output pixel (y, x) samples the input bilinearly at
(y*stride - padding + ky*dilation + dy, x*stride - padding + kx*dilation + dx), each corner outside
the map contributing 0; offsets are laid out as channel g*2*kh*kw + 2*k + {0: dy, 1: dx} with
k = ky*kw + kx, and deformable group g reads input channels [g*C/G, (g+1)*C/G).

How (shared/docs/PERF_NOTES.md, "What made the JAX deformable conv fast"): the input becomes a
table of rows, one row = the C/G channels of one deformable group at one pixel; for each output
pixel, tap and group the 4 bilinear corner rows are fetched with 4 whole-row gathers (never one
stacked 4-corner gather: 7x slower, and its gradient crashed XLA CPU), weighted and summed, and
one matmul over (tap x group x channel) contracts them with the kernel. The output pixels go
through a scan in tiles of `TILE_PIXELS`: a tile's samples [T, K*C] (about 2 MB at 256
channels) stay in cache between their gathers and the matmul. At 7x256x56x56 on 2 CPU cores
this took the forward from 299 ms (a scan over the 9 taps, each with a [P, C] block of samples
for the whole map) to 201 ms; tiles of 112 to 1568 pixels all measured 201-221 ms.

The gradient is a custom VJP over the same tiles: it recomputes each tile's samples instead of
keeping them from the forward (PERF_NOTES: 2.9 GB kept for one layer at 8x56x56), forms the
kernel and sample gradients with two matmuls, and scatters the latter into the input's cotangent
in place (`sampling.weighted_gather_transpose`). The bilinear weights' derivatives w.r.t.
offsets and mask are derived by jax, so they follow `sampling.bilinear_corners` (torchvision's
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


# Output pixels per step of the sampling scan (module docstring).
TILE_PIXELS = 256


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sample_and_contract(
    table_RxCg: Array,
    rows: tuple[Array, ...],
    weights: tuple[Array, ...],
    kernel_KCxO: Array,
    precision: jax.lax.PrecisionLike,
) -> Array:
    """out[t, p] = (sum_i weights[i][t, p, k, g] * table[rows[i][t, p, k, g]]) @ kernel over
    (k, g, channel): [tiles, T, O].

    rows/weights: 4 corner arrays of shape [tiles, T, K, G] (tile, pixel, tap, group).
    """
    return _contract_fwd(table_RxCg, rows, weights, kernel_KCxO, precision)[0]


def _tile_samples(table_RxCg, rows_t, weights_t):
    num_pixels = rows_t[0].shape[0]
    return weighted_gather(table_RxCg, rows_t, weights_t).reshape(num_pixels, -1)


def _contract_fwd(table_RxCg, rows, weights, kernel_KCxO, precision):
    def tile_step(_, tile):
        samples = _tile_samples(table_RxCg, tile[:4], tile[4:])
        return None, jnp.matmul(samples, kernel_KCxO, precision=precision)

    _, out = jax.lax.scan(tile_step, None, (*rows, *weights))
    return out, (table_RxCg, rows, weights, kernel_KCxO)


def _contract_bwd(precision, residuals, g_out_TxPxO):
    """Per tile: recompute the samples, then the kernel gradient, the sample gradient, and its
    transpose through the bilinear gather."""
    table_RxCg, rows, weights, kernel_KCxO = residuals
    pixels, taps, groups = rows[0].shape[1:]

    def tile_step(carry, tile):
        g_table, g_kernel = carry
        rows_t, weights_t, g_out_PxO = tile[:4], tile[4:8], tile[8]
        samples = _tile_samples(table_RxCg, rows_t, weights_t)
        g_kernel = g_kernel + jnp.matmul(samples.T, g_out_PxO, precision=precision)
        g_samples = jnp.matmul(g_out_PxO, kernel_KCxO.T, precision=precision)
        g_table, g_weights_t = weighted_gather_transpose(
            table_RxCg, rows_t, weights_t, g_samples.reshape(pixels, taps, groups, -1), g_table
        )
        return (g_table, g_kernel), g_weights_t

    init = (jnp.zeros_like(table_RxCg), jnp.zeros(kernel_KCxO.shape, g_out_TxPxO.dtype))
    (g_table, g_kernel), g_weights = jax.lax.scan(tile_step, init, (*rows, *weights, g_out_TxPxO))
    g_weights = tuple(g.astype(w.dtype) for g, w in zip(g_weights, weights, strict=True))
    return g_table, None, g_weights, g_kernel.astype(kernel_KCxO.dtype)


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

    # torchvision's (group, tap, yx) channel order -> [N, Ho, Wo, K, G, yx]: pixel-major, then
    # tap and group, the order of the contraction's (k, g, channel) rows.
    off_NxHoxWoxKxGx2 = offset_NxHoxWox2GK.reshape(n, out_h, out_w, groups, taps, 2).transpose(
        0, 1, 2, 4, 3, 5
    )
    ky_K = jnp.repeat(jnp.arange(kh), kw)
    kx_K = jnp.tile(jnp.arange(kw), kh)
    base_y_HoxK = (jnp.arange(out_h) * stride - padding)[:, None] + ky_K[None, :] * dilation
    base_x_WoxK = (jnp.arange(out_w) * stride - padding)[:, None] + kx_K[None, :] * dilation
    sample_y = base_y_HoxK.astype(coord_dtype)[None, :, None, :, None] + off_NxHoxWoxKxGx2[..., 0]
    sample_x = base_x_WoxK.astype(coord_dtype)[None, None, :, :, None] + off_NxHoxWoxKxGx2[..., 1]

    # Row ((n*H + y)*W + x)*G + g holds channels [g*C/G, (g+1)*C/G) of pixel (n, y, x): a free
    # reshape of NHWC.
    table_RxCg = jnp.asarray(x_NxHxWxC).reshape(n * height * width * groups, channels // groups)
    row_base = jnp.arange(n, dtype=jnp.int32).reshape(n, 1, 1, 1, 1) * (
        height * width * groups
    ) + jnp.arange(groups, dtype=jnp.int32)
    modulation = None
    if mask is not None:
        modulation = mask.reshape(n, out_h, out_w, groups, taps).transpose(0, 1, 2, 4, 3)

    # Output pixels in tiles of TILE_PIXELS (the last padded with zero-weight samples of row 0).
    tile = min(TILE_PIXELS, num_pixels)
    num_tiles = -(-num_pixels // tile)
    pad = num_tiles * tile - num_pixels

    def tiles(a: Array) -> Array:
        a = a.reshape(num_pixels, taps, groups)
        return jnp.pad(a, ((0, pad), (0, 0), (0, 0))).reshape(num_tiles, tile, taps, groups)

    rows, weights = [], []
    for row, col, weight in bilinear_corners(sample_y, sample_x, height, width):
        weight = weight.astype(dtype)
        if modulation is not None:
            weight = weight * modulation
        rows.append(tiles(row_base + (row * width + col) * groups))
        weights.append(tiles(weight))

    kernel_KCxO = jnp.asarray(kernel_HWIO).reshape(taps * channels, out_channels)
    out = _sample_and_contract(table_RxCg, tuple(rows), tuple(weights), kernel_KCxO, precision)
    return out.reshape(num_tiles * tile, out_channels)[:num_pixels].reshape(
        n, out_h, out_w, out_channels
    )
