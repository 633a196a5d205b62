"""A handful of generated still images with boxes, for sanity-checking a detector end to end.

Each image is a textured background with a few filled, textured shapes; a shape's class decides
its form and colour (rectangle, ellipse, triangle, ...), so a detector can tell the classes apart
from pixels alone. Boxes are continuous xyxy pixel coordinates of the shapes' extents. This is not
the ILSVRC-format video generator (`input_pipeline/synthetic.py`); it is the smallest data that
lets `main.py --mode=overfit` and the tests show a detector can learn boxes and classes.
"""

from __future__ import annotations

import numpy as np

# class id -> (shape, base BGR colour)
CLASS_STYLES = (
    ("rectangle", (40, 60, 220)),
    ("ellipse", (220, 80, 40)),
    ("triangle", (60, 200, 60)),
    ("diamond", (30, 200, 230)),
    ("cross", (200, 60, 200)),
)
NUM_TOY_CLASSES = len(CLASS_STYLES)


def _shape_mask(kind: str, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx + 0.5) / w * 2 - 1  # [-1, 1] inside the box
    v = (yy + 0.5) / h * 2 - 1
    if kind == "rectangle":
        return np.ones((h, w), bool)
    if kind == "ellipse":
        return u**2 + v**2 <= 1.0
    if kind == "triangle":
        return np.abs(u) <= (v + 1) / 2
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        return (np.abs(u) <= 0.35) | (np.abs(v) <= 0.35)
    raise ValueError(kind)


def make_toy_images(
    num_images: int,
    image_size: int,
    *,
    num_classes: int = NUM_TOY_CLASSES,
    max_objects: int = 3,
    min_size_frac: float = 0.2,
    max_size_frac: float = 0.5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Generate images and padded ground truth.

    Returns a dict with 'images' [N,S,S,3] uint8 BGR, 'boxes' [N,M,4] float32 xyxy (continuous
    pixel coordinates: a shape covering pixels x0..x1-1 has x1 as its right edge), 'labels'
    [N,M] int32 (0-based class ids), 'valid' [N,M] bool, with M = max_objects.
    """
    if not 1 <= num_classes <= NUM_TOY_CLASSES:
        raise ValueError(f"num_classes must be in 1..{NUM_TOY_CLASSES}, got {num_classes}")
    rng = np.random.default_rng(seed)
    s = image_size
    images = np.zeros((num_images, s, s, 3), np.uint8)
    boxes = np.zeros((num_images, max_objects, 4), np.float32)
    labels = np.zeros((num_images, max_objects), np.int32)
    valid = np.zeros((num_images, max_objects), bool)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    for i in range(num_images):
        # Smooth random texture as background: low-frequency sinusoids plus noise.
        bg = np.zeros((s, s, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
            bg[..., c] = 110 + 40 * np.sin(2 * np.pi * (fx * xx + fy * yy) / s + ph)
        bg += rng.normal(0, 8, bg.shape)
        img = bg
        n_obj = int(rng.integers(1, max_objects + 1))
        for j in range(n_obj):
            cls = int(rng.integers(0, num_classes))
            kind, colour = CLASS_STYLES[cls]
            # Objects never overlap, so every box frames a fully visible shape.
            for _ in range(50):
                w = int(rng.uniform(min_size_frac, max_size_frac) * s)
                h = int(rng.uniform(min_size_frac, max_size_frac) * s)
                x0 = int(rng.integers(0, s - w + 1))
                y0 = int(rng.integers(0, s - h + 1))
                placed = boxes[i, :j][valid[i, :j]]
                if not np.any(
                    (placed[:, 0] < x0 + w)
                    & (x0 < placed[:, 2])
                    & (placed[:, 1] < y0 + h)
                    & (y0 < placed[:, 3])
                ):
                    break
            else:
                continue
            mask = _shape_mask(kind, h, w)
            texture = np.asarray(colour, np.float32) + rng.normal(0, 12, (h, w, 3))
            patch = img[y0 : y0 + h, x0 : x0 + w]
            patch[mask] = texture[mask]
            rows, cols = np.nonzero(mask)
            boxes[i, j] = (
                x0 + cols.min(),
                y0 + rows.min(),
                x0 + cols.max() + 1,
                y0 + rows.max() + 1,
            )
            labels[i, j] = cls
            valid[i, j] = True
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return {"images": images, "boxes": boxes, "labels": labels, "valid": valid}
