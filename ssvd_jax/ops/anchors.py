"""RetinaNet anchors exactly as the release's (maskrcnn-benchmark) generator (REFERENCE_SPEC §5.2).

Anchors depend only on the input size, so they are built once in NumPy (float64 cell anchors,
cast to float32 like the release's buffers) and passed to jitted code as constants.

Order: levels P3..P6 concatenated; within a level, index (y * W + x) * A + a; within a location,
ratio-major and scale-minor (a = 3 * r + k for ratios (0.5, 1, 2), ratio = h / w, and scales
2^(k/3)). This is the flattening order of the heads' outputs (NHWC, anchor-major channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def level_grid_sizes(
    image_size: int | Sequence[int], strides: Sequence[int]
) -> list[tuple[int, int]]:
    """Feature-map (height, width) of each level: ceil(size / stride) (448 -> 56, 28, 14, 7).

    Every stride-2 layer of the network (7x7/2 stem conv, 3x3/2 max pool, 1x1/2 convs, the 3x3/2
    P6 conv, all with PyTorch's symmetric padding) maps n to ceil(n / 2), and nested ceilings of
    halvings equal one ceiling of the product.
    """
    height, width = _as_hw(image_size)
    return [(-(-height // s), -(-width // s)) for s in strides]


def _whctrs(anchor: np.ndarray) -> tuple[float, float, float, float]:
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr: float, y_ctr: float) -> np.ndarray:
    ws = ws[:, None]
    hs = hs[:, None]
    return np.hstack(
        (
            x_ctr - 0.5 * (ws - 1),
            y_ctr - 0.5 * (hs - 1),
            x_ctr + 0.5 * (ws - 1),
            y_ctr + 0.5 * (hs - 1),
        )
    )


def cell_anchors(
    stride: int,
    size: float,
    ratios: Sequence[float],
    scales_per_octave: int,
    octave: float = 2.0,
) -> np.ndarray:
    """The A = len(ratios) * scales_per_octave anchors [A, 4] float32 of the cell at (0, 0).

    maskrcnn-benchmark's `generate_anchors`, step by step and in the same float64 operation order
    (so the float32 result is bit-identical to the release's `cell_anchors` buffers): the ratio
    enumeration rounds (half to even) at *stride* scale, w = round(sqrt(stride^2 / r)),
    h = round(w * r); then each ratio box is scaled by size * octave^(k / scales_per_octave) /
    stride about the base box's centre ((stride - 1) / 2, (stride - 1) / 2).
    """
    sizes = [octave ** (k / float(scales_per_octave)) * size for k in range(scales_per_octave)]
    scales = np.array(sizes, dtype=np.float64) / stride
    base = np.array([1, 1, stride, stride], dtype=np.float64) - 1
    w, h, x_ctr, y_ctr = _whctrs(base)
    size_ratios = (w * h) / np.array(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(size_ratios))
    hs = np.round(ws * np.array(ratios, dtype=np.float64))
    ratio_anchors = _mkanchors(ws, hs, x_ctr, y_ctr)
    out = []
    for anchor in ratio_anchors:
        aw, ah, ax, ay = _whctrs(anchor)
        out.append(_mkanchors(aw * scales, ah * scales, ax, ay))
    return np.vstack(out).astype(np.float32)


def grid_anchors(cell_Ax4: np.ndarray, grid_hw: tuple[int, int], stride: int) -> np.ndarray:
    """Shifts a cell's anchors over a grid: [H * W * A, 4] in order (y * W + x) * A + a.

    The sum is taken in float32, as the release adds its float32 buffer to float32 shifts.
    """
    grid_h, grid_w = grid_hw
    shift_x = np.arange(grid_w, dtype=np.float32) * np.float32(stride)
    shift_y = np.arange(grid_h, dtype=np.float32) * np.float32(stride)
    sy, sx = np.meshgrid(shift_y, shift_x, indexing="ij")
    shifts_Sx4 = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4)
    return (shifts_Sx4 + cell_Ax4.astype(np.float32)[None]).reshape(-1, 4)


def generate_anchors_per_level(
    image_size: int | Sequence[int],
    *,
    strides: Sequence[int],
    sizes: Sequence[float],
    ratios: Sequence[float],
    scales_per_octave: int,
) -> list[np.ndarray]:
    """Per-level anchors: [H_l * W_l * A, 4] float32 arrays, one per stride (P3..P6 in configs)."""
    if len(strides) != len(sizes):
        raise ValueError(f"strides {strides} and sizes {sizes} differ in length")
    grids = level_grid_sizes(image_size, strides)
    return [
        grid_anchors(cell_anchors(stride, size, ratios, scales_per_octave), grid, stride)
        for stride, size, grid in zip(strides, sizes, grids, strict=True)
    ]
