"""Bilinear sampling at pixel coordinates (gather-based), the two SSVD warps, nearest upsampling.

All maps are NHWC. Coordinates are in pixels of the sampled map with align_corners=True
semantics: (y, x) = (0, 0) is the centre of the top-left pixel and (H-1, W-1) the centre of the
bottom-right one, which is what the release's `grid_sample` calls meant on PyTorch 1.0/1.1
(REFERENCE_SPEC B5, 3.4, 3.5).

Sampling flattens the map into a table of rows (one row = the C channels of one pixel) and gathers
the 4 bilinear corner rows with whole-row gathers, one gather per corner: on CPU this beats
per-element gathers and `map_coordinates`, and a single stacked 4-corner gather was measured 7x
slower (shared/docs/PERF_NOTES.md). A corner outside the map gets weight 0 and a clamped (valid)
row index, so the gathers need no bounds handling ("per-corner zero padding", exactly
`grid_sample(padding_mode='zeros')`).

Corners are floor(p) and floor(p)+1, never ceil(p): at an integer position ceil(p) == floor(p),
which would make the two corners coincide and the gradient w.r.t. the position vanish, whereas
grid_sample's (and the maths') one-sided derivative there is x[p+1] - x[p].

Gradients are reverse-mode only (jax.grad/vjp, not jax.jvp): `weighted_gather` has a custom VJP
that accumulates the map's cotangent with in-place scatter-adds, one corner at a time, instead of
jax's derived transpose (a zero-filled table per corner, then a sum). The bilinear weights'
derivatives w.r.t. the coordinates are still derived by jax from `bilinear_corners`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# PWC-Net's Backward: a sample counts as inside when the warped ones channel exceeds this.
PWC_MASK_THRESHOLD = 0.999


def bilinear_corners(
    y: Array, x: Array, height: int, width: int
) -> list[tuple[Array, Array, Array]]:
    """The 4 bilinear corners of the sample points (y, x): a list of (row, col, weight).

    Rows and cols are int32, clamped into the map; the weight of a corner outside the map is 0,
    so gathering the clamped corner and multiplying by its weight is per-corner zero padding.
    The gradient w.r.t. (y, x) is the per-corner one of grid_sample's and torchvision's
    deform_conv2d backward kernels, including at integer positions and at y == -1 or x == -1.
    """
    y0f = jnp.floor(y)
    x0f = jnp.floor(x)
    # Fractional parts carry the gradient w.r.t. the coordinates; the floors are constants.
    wy1 = y - y0f
    wx1 = x - x0f
    wy0 = 1.0 - wy1
    wx0 = 1.0 - wx1
    y0 = y0f.astype(jnp.int32)
    x0 = x0f.astype(jnp.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    valid_y0 = (y0 >= 0) & (y0 < height)
    valid_x0 = (x0 >= 0) & (x0 < width)
    valid_y1 = (y1 >= 0) & (y1 < height)
    valid_x1 = (x1 >= 0) & (x1 < width)
    y0c = jnp.clip(y0, 0, height - 1)
    y1c = jnp.clip(y1, 0, height - 1)
    x0c = jnp.clip(x0, 0, width - 1)
    x1c = jnp.clip(x1, 0, width - 1)
    wy0 = jnp.where(valid_y0, wy0, 0.0)
    wy1 = jnp.where(valid_y1, wy1, 0.0)
    wx0 = jnp.where(valid_x0, wx0, 0.0)
    wx1 = jnp.where(valid_x1, wx1, 0.0)
    return [
        (y0c, x0c, wy0 * wx0),
        (y0c, x1c, wy0 * wx1),
        (y1c, x0c, wy1 * wx0),
        (y1c, x1c, wy1 * wx1),
    ]


def gather_rows(table_RxC: Array, index: Array) -> Array:
    """table[index] for an int index array of any shape: whole rows, indices known in range."""
    # promise_in_bounds: the callers clamp, so XLA need not clamp again.
    return jnp.asarray(table_RxC).at[index].get(mode="promise_in_bounds")


def _weighted_sum(table_RxC: Array, rows: Sequence[Array], weights: Sequence[Array]) -> Array:
    out = None
    for row, weight in zip(rows, weights, strict=True):
        term = gather_rows(table_RxC, row) * weight[..., None]
        out = term if out is None else out + term
    return out


def weighted_gather_transpose(
    table_RxC: Array,
    rows: Sequence[Array],
    weights: Sequence[Array],
    g_out: Array,
    g_table_RxC: Array,
) -> tuple[Array, tuple[Array, ...]]:
    """The VJP of `weighted_gather`: (g_table_RxC + the table cotangent, weight cotangents).

    The table cotangent is accumulated by scatter-adds into the one given buffer, which XLA
    updates in place (jax's own transpose of 4 gathers scatters each corner into a zero-filled
    table of its own and adds them up). The corners go through a scan, so only one corner's
    [*S, C] temporaries are alive at a time: XLA:CPU allocates a call's temporaries afresh, and
    on this machine page-faulting them in cost more than the arithmetic (2-4x slower unrolled).
    """

    def corner_step(g_table, corner):
        row, weight = corner
        update = (g_out * weight[..., None]).astype(g_table.dtype)
        g_table = g_table.at[row].add(update, mode="promise_in_bounds")
        return g_table, jnp.sum(gather_rows(table_RxC, row) * g_out, axis=-1)

    g_table_RxC, g_weights = jax.lax.scan(
        corner_step, g_table_RxC, (jnp.stack(rows), jnp.stack(weights))
    )
    return g_table_RxC, tuple(g_weights)


@jax.custom_vjp
def weighted_gather(table_RxC: Array, rows: Sequence[Array], weights: Sequence[Array]) -> Array:
    """sum_i weights[i][..., None] * table[rows[i]]: [*S, C] for rows/weights of shape S.

    One whole-row gather per term, fused with the weighting by XLA. Differentiable w.r.t. the
    table and the weights (not forward-mode: the gradient is a custom VJP, see
    `weighted_gather_transpose`); rows must be in range (callers clamp them).
    """
    return _weighted_sum(table_RxC, rows, weights)


def _weighted_gather_fwd(table_RxC, rows, weights):
    return _weighted_sum(table_RxC, rows, weights), (table_RxC, rows, weights)


def _weighted_gather_bwd(residuals, g_out):
    table_RxC, rows, weights = residuals
    g_table, g_weights = weighted_gather_transpose(
        table_RxC, rows, weights, g_out, jnp.zeros_like(table_RxC)
    )
    return g_table, None, tuple(g.astype(w.dtype) for g, w in zip(g_weights, weights, strict=True))


weighted_gather.defvjp(_weighted_gather_fwd, _weighted_gather_bwd)


def _sample_with_coverage(x_NxHxWxC: Array, y_NxS: Array, x_NxS: Array) -> tuple[Array, Array]:
    """Bilinear samples [N, *S, C] and the summed in-map corner weight [N, *S] ("coverage").

    The coverage stays in the coordinates' dtype: PWC's 0.999 threshold needs float32 even when
    the map is bfloat16.
    """
    n, height, width, channels = x_NxHxWxC.shape
    if y_NxS.shape != x_NxS.shape or y_NxS.shape[0] != n:
        raise ValueError(f"coordinates {y_NxS.shape} / {x_NxS.shape} do not match batch {n}")
    table_RxC = jnp.asarray(x_NxHxWxC).reshape(n * height * width, channels)
    batch_base = (jnp.arange(n, dtype=jnp.int32) * (height * width)).reshape(
        (n,) + (1,) * (y_NxS.ndim - 1)
    )
    corners = bilinear_corners(y_NxS, x_NxS, height, width)
    rows = tuple(batch_base + row * width + col for row, col, _ in corners)
    weights = tuple(weight.astype(table_RxC.dtype) for _, _, weight in corners)
    return weighted_gather(table_RxC, rows, weights), sum(weight for _, _, weight in corners)


def bilinear_sample(x_NxHxWxC: Array, y_NxS: Array, x_NxS: Array) -> Array:
    """Sample x at pixel positions (y, x) of any shape [N, *S]: returns [N, *S, C].

    Bilinear, align_corners=True pixel coordinates, each out-of-map corner contributing 0.
    Differentiable (reverse-mode) w.r.t. the map and the coordinates, with grid_sample's
    gradients, also at integer positions.
    """
    return _sample_with_coverage(x_NxHxWxC, y_NxS, x_NxS)[0]


def _flow_coords(flow_NxHxWx2: Array) -> tuple[Array, Array]:
    n, height, width, _ = flow_NxHxWx2.shape
    grid_y = jnp.arange(height, dtype=flow_NxHxWx2.dtype)[None, :, None]
    grid_x = jnp.arange(width, dtype=flow_NxHxWx2.dtype)[None, None, :]
    return grid_y + flow_NxHxWx2[..., 1], grid_x + flow_NxHxWx2[..., 0]


def warp(x_NxHxWxC: Array, flow_NxHxWx2: Array) -> Array:
    """Backward warp: out[n, y, x] = x[n] sampled at (x + flow[..., 0], y + flow[..., 1]).

    The motion stream's feature warp (REFERENCE_SPEC 3.5): flow in pixels of x's own grid
    (channel 0 horizontal, channel 1 vertical), per-corner zero padding, no validity mask. Equals
    grid_sample(x, 2 * (pos + flow) / (size - 1) - 1, align_corners=True, padding_mode='zeros').
    """
    if flow_NxHxWx2.shape != (*x_NxHxWxC.shape[:3], 2):
        raise ValueError(f"flow {flow_NxHxWx2.shape} does not match map {x_NxHxWxC.shape}")
    sample_y, sample_x = _flow_coords(flow_NxHxWx2)
    return bilinear_sample(x_NxHxWxC, sample_y, sample_x)


def pwc_warp_and_mask(x_NxHxWxC: Array, flow_NxHxWx2: Array) -> tuple[Array, Array, Array]:
    """PWC-Net's internal warp (REFERENCE_SPEC 3.4): (out, mask, warped_ones), all NHWC.

    warped_ones is a ones channel warped like x, i.e. the sum of the in-map corner weights;
    mask = warped_ones > 0.999 as 0/1 in x's dtype, [N, H, W, 1]; out = warp(x, flow) * mask. The
    mask is a step function and carries no gradient (the release overwrites it in place with
    constants).
    """
    if flow_NxHxWx2.shape != (*x_NxHxWxC.shape[:3], 2):
        raise ValueError(f"flow {flow_NxHxWx2.shape} does not match map {x_NxHxWxC.shape}")
    sample_y, sample_x = _flow_coords(flow_NxHxWx2)
    warped, coverage = _sample_with_coverage(x_NxHxWxC, sample_y, sample_x)
    warped_ones = coverage[..., None]
    mask = jax.lax.stop_gradient((warped_ones > PWC_MASK_THRESHOLD).astype(warped.dtype))
    return warped * mask, mask, warped_ones


def pwc_warp(x_NxHxWxC: Array, flow_NxHxWx2: Array) -> Array:
    """PWC-Net's Backward(x, flow): warp(x, flow) zeroed where the sample point leaves the map."""
    return pwc_warp_and_mask(x_NxHxWxC, flow_NxHxWx2)[0]


def upsample_nearest(x_NxHxWxC: Array, factor: int) -> Array:
    """Nearest upsampling by an integer factor: out[i, j] = in[i // factor, j // factor]."""
    n, height, width, channels = x_NxHxWxC.shape
    # A broadcast + reshape is a single copy; two jnp.repeat calls would be two.
    out = jnp.broadcast_to(
        x_NxHxWxC[:, :, None, :, None, :], (n, height, factor, width, factor, channels)
    )
    return out.reshape(n, height * factor, width * factor, channels)
