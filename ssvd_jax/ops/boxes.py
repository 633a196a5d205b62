"""Axis-aligned boxes in xyxy form: areas, IoU, the RetinaNet box coder and clipping.

Two pixel conventions are supported everywhere, selected by `legacy`:

* `legacy=False` (default): continuous coordinates, as torchvision and Detectron2. A box
  [x1, y1, x2, y2] has width x2 - x1; decoding puts x2 at pcx + 0.5 * pw.
* `legacy=True`: the release's (maskrcnn-benchmark's) "+1" pixel convention (REFERENCE_SPEC
  §5.3): a box covers the integer pixels x1..x2 inclusive, so its width is x2 - x1 + 1 and
  decoding puts x2 at pcx + 0.5 * pw - 1. The released weights were trained with it, so parity
  with the release needs it.

All functions are pure jnp, broadcast over leading batch dimensions and are jit-able.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# maskrcnn-benchmark's BoxCoder default `bbox_xform_clip`: exp(dw) is capped at 1000/16 so a
# wild regression output cannot make a box 1000x wider than its 16 px anchor (or overflow).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _one(legacy: bool) -> float:
    return 1.0 if legacy else 0.0


def area(boxes: Array, legacy: bool = False) -> Array:
    """Areas [...] of boxes [..., 4].

    Not clamped at zero, like torchvision's `box_area` and the release's `BoxList.area`: a box
    with x2 < x1 has a negative area. `iou` clamps its intersections, not the areas.
    """
    one = _one(legacy)
    return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def elementwise_iou(boxes1: Array, boxes2: Array, legacy: bool = False) -> Array:
    """IoU of corresponding boxes: boxes1 [..., 4] and boxes2 [..., 4] broadcast -> [...].

    A pair whose union is not positive (two zero-area boxes) gets IoU 0 rather than 0/0 = NaN;
    the division is guarded on both branches so gradients stay finite too.
    """
    one = _one(legacy)
    iw = jnp.minimum(boxes1[..., 2], boxes2[..., 2]) - jnp.maximum(boxes1[..., 0], boxes2[..., 0])
    ih = jnp.minimum(boxes1[..., 3], boxes2[..., 3]) - jnp.maximum(boxes1[..., 1], boxes2[..., 1])
    inter = jnp.maximum(iw + one, 0.0) * jnp.maximum(ih + one, 0.0)
    union = area(boxes1, legacy) + area(boxes2, legacy) - inter
    positive = union > 0
    return jnp.where(positive, inter / jnp.where(positive, union, 1.0), 0.0)


def iou(boxes1_Nx4: Array, boxes2_Mx4: Array, legacy: bool = False) -> Array:
    """Pairwise IoU [..., N, M] of boxes1 [..., N, 4] and boxes2 [..., M, 4].

    `legacy=False` equals `torchvision.ops.box_iou` (except that a 0/0 pair gives 0, not NaN);
    `legacy=True` equals the release's `boxlist_iou` / NMS kernel IoU with "+1" widths.
    Leading dimensions broadcast, e.g. [B, N, 4] x [B, M, 4] -> [B, N, M].
    """
    return elementwise_iou(boxes1_Nx4[..., :, None, :], boxes2_Mx4[..., None, :, :], legacy)


def _centre_size(boxes: Array, legacy: bool) -> tuple[Array, Array, Array, Array]:
    # The release's order of operations (w first, then cx = x1 + 0.5 w), kept so float32
    # results match it bit for bit where XLA does not reassociate.
    one = _one(legacy)
    w = boxes[..., 2] - boxes[..., 0] + one
    h = boxes[..., 3] - boxes[..., 1] + one
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(
    anchors: Array,
    boxes: Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    legacy: bool = False,
) -> Array:
    """Regression targets (dx, dy, dw, dh) [..., 4] that turn `anchors` into `boxes`.

    dx = wx * (gcx - cx) / w, dw = ww * log(gw / w), likewise for y; anchors and boxes
    broadcast. The inverse of `decode` (up to its dw/dh clamp).
    """
    wx, wy, ww, wh = weights
    cx, cy, w, h = _centre_size(anchors, legacy)
    gcx, gcy, gw, gh = _centre_size(boxes, legacy)
    return jnp.stack(
        [
            wx * (gcx - cx) / w,
            wy * (gcy - cy) / h,
            ww * jnp.log(gw / w),
            wh * jnp.log(gh / h),
        ],
        axis=-1,
    )


def decode(
    anchors: Array,
    deltas: Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    legacy: bool = False,
    clamp: float = DEFAULT_SCALE_CLAMP,
) -> Array:
    """Boxes [..., 4] from anchors [..., 4] and deltas (dx, dy, dw, dh) [..., 4] (broadcast).

    pcx = dx / wx * w + cx, pw = exp(min(dw / ww, clamp)) * w; x1 = pcx - 0.5 pw and
    x2 = pcx + 0.5 pw (- 1 when legacy), exactly as the release's `BoxCoder.decode` (legacy) or
    torchvision's `BoxCoder.decode_single` (continuous).
    """
    wx, wy, ww, wh = weights
    one = _one(legacy)
    cx, cy, w, h = _centre_size(anchors, legacy)
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, clamp)
    dh = jnp.minimum(deltas[..., 3] / wh, clamp)
    pcx = dx * w + cx
    pcy = dy * h + cy
    pw = jnp.exp(dw) * w
    ph = jnp.exp(dh) * h
    return jnp.stack(
        [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - one, pcy + 0.5 * ph - one], axis=-1
    )


def clip(boxes: Array, height: float | Array, width: float | Array, legacy: bool = False) -> Array:
    """Clamps boxes [..., 4] to the image: [0, W-1] x [0, H-1] when legacy (the release's
    `clip_to_image`, whose last pixel index is W-1), else [0, W] x [0, H] like torchvision."""
    one = _one(legacy)
    x_max = width - one
    y_max = height - one
    return jnp.stack(
        [
            jnp.clip(boxes[..., 0], 0.0, x_max),
            jnp.clip(boxes[..., 1], 0.0, y_max),
            jnp.clip(boxes[..., 2], 0.0, x_max),
            jnp.clip(boxes[..., 3], 0.0, y_max),
        ],
        axis=-1,
    )
