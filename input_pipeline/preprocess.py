"""THE test-time transform of a video frame, one definition, used by evaluation, demo, export
and tests; the training augmentation normalises with the same `normalize`.

The release's test-time preprocessing (REFERENCE_SPEC §6): `cv2.imread` (uint8 BGR), cv2.resize
to the square input size with INTER_LINEAR (uint8, rounded), then float32 minus the BGR mean
(no scaling). Every number (size, mean) comes from the caller, i.e. the config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from ssvd_jax.errors import UserError


class FrameReadError(UserError, ValueError):
    """A frame file is missing or not a readable image; the message names the file."""


def read_frame(path: os.PathLike | str) -> np.ndarray:
    """A frame file as uint8 BGR [H, W, 3] (`cv2.imread`, as the release reads it)."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameReadError(path, "missing or not a readable image")
    return image


def normalize(
    image: np.ndarray, mean_bgr: Sequence[float], out: np.ndarray | None = None
) -> np.ndarray:
    """float32(image) - mean_bgr per channel, for any shape [..., 3] (uint8 BGR in).

    Exactly numpy's `image.astype(np.float32) - np.float32(mean_bgr)`; cv2.subtract does it in
    one pass without a temporary (~8x faster). `out` (float32, C-contiguous, the image's shape)
    receives the result in place.
    """
    image = np.asarray(image)
    if image.ndim < 2 or image.shape[-1] != 3:
        raise ValueError(f"normalize expects [..., 3] BGR pixels, got shape {image.shape}")
    if len(mean_bgr) != 3:
        raise ValueError(f"mean_bgr must have 3 values (B, G, R), got {tuple(mean_bgr)}")
    # cv2 reads an array of more than 3 dims as something else: hand it [rows, W, 3].
    src = image.reshape(-1, image.shape[-2], 3)
    scalar = tuple(float(m) for m in mean_bgr) + (0.0,)
    if out is None:
        return cv2.subtract(src, scalar, dtype=cv2.CV_32F).reshape(image.shape)
    if out.shape != image.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be C-contiguous float32 of shape {image.shape}, got {out.dtype} {out.shape}"
        )
    cv2.subtract(src, scalar, dst=out.reshape(src.shape), dtype=cv2.CV_32F)
    return out


def preprocess(
    image_bgr_uint8: np.ndarray, *, image_size: int, mean_bgr: Sequence[float]
) -> np.ndarray:
    """A uint8 BGR frame [H, W, 3] -> the model's input, float32 [image_size, image_size, 3]:
    cv2.resize (INTER_LINEAR, aspect ratio ignored), then BGR minus `mean_bgr`."""
    image = np.asarray(image_bgr_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"preprocess expects a uint8 BGR image [H, W, 3], got {image.dtype} {image.shape}"
        )
    resized = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
    return normalize(resized, mean_bgr)
