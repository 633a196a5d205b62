"""PWC-Net's cost volume (the release's CUDA `Correlation` layer, REFERENCE_SPEC 3.3), NHWC.

corr[n, y, x, (dy+d)*(2d+1) + (dx+d)] = (1/C) * sum_c f1[n, y, x, c] * f2[n, y+dy, x+dx, c] for
dy, dx in [-d, d], f2 zero outside the map (kernel 1, stride1 = stride2 = 1, pad = d).

How: the obvious form, (2d+1)^2 static slices of the zero-padded f2 each multiplied with f1 and
reduced over C, was 2-10x slower on CPU (81 small fusions, each reducing along the minor axis).
Instead, for each dy and each tile of T output columns, one batched matmul takes every f1 pixel of
the tile against every f2 pixel of its window (T + 2d columns) and the band dx in [-d, d] is cut
out of the [T, T+2d] product with a pad/reshape/slice "skew" (no gather, so the gradient has no
scatter). The matmul does (T+2d)/(2d+1) times the needed multiply-adds, which the matmul kernel
more than pays for at PWC's widths (<= 64 columns: one tile); wider maps are cut into tiles of
64 columns so the waste stays bounded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Widest tile of output columns per matmul: wider maps are split so the wasted off-band products
# stay below (64 + 2d) / (2d + 1).
MAX_TILE = 64


def _band(full_BxTxV: Array, width: int) -> Array:
    """out[..., i, j] = full[..., i, i + j] for j < width, where V = T + width - 1.

    Flattened, element (i, i + j) sits at i * (V + 1) + j: padding the flat row by T elements and
    reshaping to [T, V + 1] puts it at column j.
    """
    *lead, tile, span = full_BxTxV.shape
    flat = full_BxTxV.reshape(*lead, tile * span)
    flat = jnp.pad(flat, [(0, 0)] * len(lead) + [(0, tile)])
    return flat.reshape(*lead, tile, span + 1)[..., :width]


def cost_volume(
    f1_NxHxWxC: Array,
    f2_NxHxWxC: Array,
    max_displacement: int = 4,
    *,
    precision: jax.lax.PrecisionLike = None,
) -> Array:
    """Returns [N, H, W, (2d+1)^2], channel (dy+d)*(2d+1) + (dx+d), row-major over (dy, dx).

    precision: for the matmuls (pass jax.lax.Precision.HIGHEST on GPU to avoid TF32 in parity
    checks).
    """
    if f1_NxHxWxC.shape != f2_NxHxWxC.shape:
        raise ValueError(f"feature shapes differ: {f1_NxHxWxC.shape} vs {f2_NxHxWxC.shape}")
    n, height, width, channels = f1_NxHxWxC.shape
    d = max_displacement
    side = 2 * d + 1
    tile = min(width, MAX_TILE)
    num_tiles = -(-width // tile)
    padded_width = num_tiles * tile

    # Scaling f1 once is the release's mean over C up to float rounding.
    f1_tiles = jnp.pad(
        f1_NxHxWxC * (1.0 / channels), ((0, 0), (0, 0), (0, padded_width - width), (0, 0))
    ).reshape(n, height, num_tiles, tile, channels)
    f2_padded = jnp.pad(f2_NxHxWxC, ((0, 0), (d, d), (d, d + padded_width - width), (0, 0)))
    # Tile j sees f2 columns [j*T - d, (j+1)*T + d) of the unpadded map.
    f2_windows = jnp.stack(
        [f2_padded[:, :, j * tile : j * tile + tile + 2 * d] for j in range(num_tiles)], axis=2
    )
    planes = []
    for dy in range(side):
        full = jnp.einsum(
            "nhjtc,nhjvc->nhjtv",
            f1_tiles,
            f2_windows[:, dy : dy + height],
            precision=precision,
        )
        planes.append(_band(full, side))
    out = jnp.concatenate(planes, axis=-1).reshape(n, height, padded_width, side * side)
    return out[:, :, :width]


def normalized_cost_volume(
    f1_NxHxWxC: Array, f2_NxHxWxC: Array, max_displacement: int = 4, *, eps: float = 1e-6
) -> Array:
    """`cost_volume` of features made zero-mean and unit-length over their channels at each
    pixel: per displacement the Pearson correlation of the two feature vectors, in [-1, 1]
    (0 where a vector is constant, and outside the image). Unlike the mean of raw products,
    its peak is where the features agree, not where they are large: a randomly initialised
    extractor's LeakyReLU features are mostly positive, and their raw cost volume peaks at the
    strongest neighbour about as often as at the true displacement."""

    def unit(f: Array) -> Array:
        f = f.astype(jnp.float32)
        f = f - jnp.mean(f, axis=-1, keepdims=True)
        return f * jax.lax.rsqrt(jnp.sum(f * f, axis=-1, keepdims=True) + eps)

    channels = f1_NxHxWxC.shape[-1]
    return cost_volume(unit(f1_NxHxWxC), unit(f2_NxHxWxC), max_displacement) * channels
