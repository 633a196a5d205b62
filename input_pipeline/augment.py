"""SSD-style augmentation of a clip (all frames transformed identically), numpy + cv2.

The SSD recipe (Liu et al. 2016, as in ssd.pytorch): photometric distortion (brightness,
contrast, saturation, hue, channel swap), expand (zoom out onto a mean-filled canvas up to 4x),
min-IoU random crop, horizontal flip, resize to the square input. Expand, crop, flip and resize
are all axis-aligned scalings and shifts, so they are composed into one affine map and applied
with a single `cv2.warpAffine` per frame straight from the decoded JPEG to the output size: no
4x canvas is ever allocated, which is what makes 448x448 clips from 720p frames cheap.

Coordinates: continuous pixel coordinates (pixel i covers [i, i+1)); the builders' inclusive
boxes [x1, x2] become [x1, x2 + 1) before transforming (`inclusive_to_continuous`). The random
parameters are drawn once per clip, from the reference frame's boxes, and applied to every frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

# SSD's min-IoU crop modes: None = keep the whole (expanded) image, 0.0 = any crop.
SSD_MIN_IOUS: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Axis-aligned map from source continuous coords to output coords: the source rectangle
    `window` (x0, y0, x1, y1), which may extend past the image (expand), is scaled onto
    [0, out_w] x [0, out_h], then mirrored horizontally if `flip`."""

    window: tuple[float, float, float, float]
    out_size: tuple[int, int]  # (out_w, out_h)
    flip: bool = False

    def _affine(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.window
        out_w, out_h = self.out_size
        sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
        tx, ty = -x0 * sx, -y0 * sy
        if self.flip:
            sx, tx = -sx, out_w - tx
        return sx, tx, sy, ty

    def reduced(self, factor: int) -> Geometry:
        """The same map for a source decoded at 1/factor size (JPEG DCT scaling)."""
        return dataclasses.replace(self, window=tuple(v / factor for v in self.window))

    def decode_reduction(self) -> int:
        """Largest JPEG DCT reduction (1, 2, 4, 8) that still leaves at least one source pixel
        per output pixel inside the window: decoding less costs less and, when zooming out
        (expand), also acts as the low-pass filter the bilinear warp lacks."""
        x0, y0, x1, y1 = self.window
        out_w, out_h = self.out_size
        limit = min((x1 - x0) / out_w, (y1 - y0) / out_h)
        factor = 1
        while factor * 2 <= min(limit, 8):
            factor *= 2
        return factor

    def map_points(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx, tx, sy, ty = self._affine()
        return sx * x + tx, sy * y + ty

    def cv2_matrix(self) -> np.ndarray:
        """2x3 matrix for cv2.warpAffine, which works in pixel-index coordinates (centres at
        integers): u' = s u + t in continuous coords is i' = s i + (t + (s - 1) / 2)."""
        sx, tx, sy, ty = self._affine()
        return np.array([[sx, 0.0, tx + (sx - 1) / 2], [0.0, sy, ty + (sy - 1) / 2]], np.float64)

    def image_rect(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Where the source image [0, W] x [0, H] lands in the output (x0, y0, x1, y1)."""
        xs, ys = self.map_points(np.array([0.0, width]), np.array([0.0, height]))
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def inclusive_to_continuous(boxes: np.ndarray) -> np.ndarray:
    """Inclusive pixel boxes (x2 is the last pixel) -> continuous extents [x1, x2 + 1)."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    out[:, 2:] += 1.0
    return out


def continuous_to_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Inverse of `inclusive_to_continuous` (the "+1" convention the release's boxes use)."""
    out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    out[:, 2:] -= 1.0
    return out


def _iou_one_to_many(rect: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(rect[2], boxes[:, 2]) - np.maximum(rect[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(rect[3], boxes[:, 3]) - np.maximum(rect[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area_r = (rect[2] - rect[0]) * (rect[3] - rect[1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_r + area_b - inter, 1e-9)


def sample_geometry(
    rng: np.random.Generator,
    width: int,
    height: int,
    boxes: np.ndarray,
    out_size: int,
    *,
    expand_prob: float = 0.5,
    max_expand: float = 4.0,
    crop: bool = True,
    min_ious: Sequence[float | None] = SSD_MIN_IOUS,
    crop_trials: int = 50,
    min_crop_scale: float = 0.3,
    flip_prob: float = 0.5,
) -> Geometry:
    """Draw SSD's expand / min-IoU crop / flip for one clip.

    boxes: the reference frame's boxes [N, 4], continuous xyxy in source pixels. A crop is
    accepted when some box overlaps it with IoU >= the drawn minimum and at least one box centre
    lies inside it (SSD); frames without boxes accept any crop. If no trial succeeds the whole
    (expanded) image is kept.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    # Expand: the image sits at a random place on a canvas `ratio` times larger.
    canvas = np.array([0.0, 0.0, width, height])
    if rng.random() < expand_prob and max_expand > 1:
        ratio = rng.uniform(1.0, max_expand)
        left = rng.uniform(0.0, width * ratio - width)
        top = rng.uniform(0.0, height * ratio - height)
        canvas = np.array([-left, -top, -left + width * ratio, -top + height * ratio])
    window = canvas
    if crop and len(min_ious):
        mode = min_ious[int(rng.integers(len(min_ious)))]
        if mode is not None:
            cw_full, ch_full = canvas[2] - canvas[0], canvas[3] - canvas[1]
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            for _ in range(crop_trials):
                w = rng.uniform(min_crop_scale * cw_full, cw_full)
                h = rng.uniform(min_crop_scale * ch_full, ch_full)
                if not 0.5 <= h / w <= 2.0:
                    continue
                x0 = canvas[0] + rng.uniform(0.0, cw_full - w)
                y0 = canvas[1] + rng.uniform(0.0, ch_full - h)
                rect = np.array([x0, y0, x0 + w, y0 + h])
                if len(boxes):
                    if _iou_one_to_many(rect, boxes).max() < mode:
                        continue
                    inside = (
                        (centres[:, 0] > rect[0])
                        & (centres[:, 0] < rect[2])
                        & (centres[:, 1] > rect[1])
                        & (centres[:, 1] < rect[3])
                    )
                    if not inside.any():
                        continue
                window = rect
                break
    flip = bool(rng.random() < flip_prob)
    return Geometry(tuple(float(v) for v in window), (out_size, out_size), flip)


def resize_geometry(width: int, height: int, out_size: int) -> Geometry:
    """The plain square resize (no augmentation)."""
    return Geometry((0.0, 0.0, float(width), float(height)), (out_size, out_size), False)


def transform_boxes(geometry: Geometry, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map continuous boxes [N, 4] into the output: keep those whose centre lies inside the
    window (SSD's rule after a crop), clip to the output. Returns (boxes [N, 4], keep [N])."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = geometry.window
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    keep = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1)
    xa, ya = geometry.map_points(boxes[:, 0], boxes[:, 1])
    xb, yb = geometry.map_points(boxes[:, 2], boxes[:, 3])
    out_w, out_h = geometry.out_size
    out = np.stack(
        [
            np.clip(np.minimum(xa, xb), 0, out_w),
            np.clip(np.minimum(ya, yb), 0, out_h),
            np.clip(np.maximum(xa, xb), 0, out_w),
            np.clip(np.maximum(ya, yb), 0, out_h),
        ],
        axis=-1,
    ).astype(np.float32)
    return out, keep


def warp_image(image: np.ndarray, geometry: Geometry, fill: Sequence[float]) -> np.ndarray:
    """Apply the geometry to a uint8 HxWx3 image (bilinear), filling outside with `fill`."""
    if geometry.window == (0.0, 0.0, float(image.shape[1]), float(image.shape[0])) and not (
        geometry.flip
    ):
        # The plain resize: use cv2.resize itself, as the release's test-time pipeline does.
        return cv2.resize(image, geometry.out_size, interpolation=cv2.INTER_LINEAR)
    return cv2.warpAffine(
        image,
        geometry.cv2_matrix(),
        geometry.out_size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=tuple(float(v) for v in fill),
    )


@dataclasses.dataclass(frozen=True)
class Photometric:
    """SSD's photometric distortion parameters, drawn once per clip (None = step skipped)."""

    brightness: float | None
    contrast: float | None
    contrast_first: bool
    saturation: float | None
    hue: float | None
    channel_order: tuple[int, int, int] | None


def sample_photometric(
    rng: np.random.Generator,
    *,
    brightness_delta: float = 32.0,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: float = 18.0,
    channel_swap_prob: float = 0.5,
) -> Photometric:
    """Each step happens with probability 1/2, as in ssd.pytorch's PhotometricDistort."""
    perms = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    brightness = rng.uniform(-brightness_delta, brightness_delta) if rng.random() < 0.5 else None
    contrast = rng.uniform(*contrast_range) if rng.random() < 0.5 else None
    contrast_first = bool(rng.random() < 0.5)
    saturation = rng.uniform(*saturation_range) if rng.random() < 0.5 else None
    hue = rng.uniform(-hue_delta, hue_delta) if rng.random() < 0.5 else None
    swap = perms[int(rng.integers(len(perms)))] if rng.random() < channel_swap_prob else None
    return Photometric(brightness, contrast, contrast_first, saturation, hue, swap)


def apply_photometric(image: np.ndarray, p: Photometric) -> np.ndarray:
    """Distort one uint8 BGR image; returns uint8.

    Brightness and contrast (each followed by clipping to 0..255) are a per-value function of a
    uint8 pixel, so they run as one 256-entry lookup table; saturation and hue act on cv2's
    uint8 HSV (H in 0..179, i.e. 2-degree steps) through per-channel tables. Working in uint8
    keeps the whole distortion at a few passes over the image.
    """
    values = np.arange(256, dtype=np.float32)

    def contrast_lut(x: np.ndarray) -> np.ndarray:
        return np.clip(x * p.contrast, 0, 255) if p.contrast is not None else x

    pre = values
    if p.brightness is not None:
        pre = np.clip(pre + p.brightness, 0, 255)
    if p.contrast_first:
        pre = contrast_lut(pre)
    img = image
    if pre is not values:
        img = cv2.LUT(img, np.rint(pre).astype(np.uint8))
    if p.saturation is not None or p.hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hue = values if p.hue is None else np.mod(np.floor(values + p.hue / 2.0 + 0.5), 180.0)
        sat = values if p.saturation is None else np.clip(values * p.saturation, 0, 255)
        lut = np.stack([hue, sat, values], -1).reshape(256, 1, 3)
        hsv = cv2.LUT(hsv, np.floor(lut + 0.5).clip(0, 255).astype(np.uint8))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not p.contrast_first and p.contrast is not None:
        img = cv2.LUT(img, np.rint(contrast_lut(values)).astype(np.uint8))
    if p.channel_order is not None:
        img = np.ascontiguousarray(img[..., list(p.channel_order)])
    return img


def fill_outside(
    image: np.ndarray, rect: tuple[float, float, float, float], fill: Sequence[float]
) -> None:
    """Set pixels whose centres lie outside `rect` (output coords) to `fill`, in place. Used
    after photometric distortion so that the expand canvas stays exactly the mean, as in SSD
    (which distorts before expanding)."""
    h, w = image.shape[:2]
    x0 = int(np.clip(np.ceil(rect[0] - 0.5), 0, w))
    x1 = int(np.clip(np.ceil(rect[2] - 0.5), 0, w))
    y0 = int(np.clip(np.ceil(rect[1] - 0.5), 0, h))
    y1 = int(np.clip(np.ceil(rect[3] - 0.5), 0, h))
    fill = np.asarray(fill, image.dtype)
    image[:y0] = fill
    image[y1:] = fill
    image[:, :x0] = fill
    image[:, x1:] = fill
