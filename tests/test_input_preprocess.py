"""THE test-time transform: cv2.resize (INTER_LINEAR) then BGR minus the mean, exactly as the
release (REFERENCE_SPEC §6), and the normalisation the training augmentation shares."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from configs import default
from input_pipeline import preprocess

MEAN = tuple(default.get_config().data.pixel_mean_bgr)


def _reference(image: np.ndarray, size: int, mean) -> np.ndarray:
    """The release's steps, written out with cv2 and numpy."""
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized.astype(np.float32) - np.asarray(mean, np.float32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape, size", [((72, 128), 48), ((30, 20), 64), ((48, 48), 48)])
def test_preprocess_is_the_release_transform(seed, shape, size):
    image = np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)
    out = preprocess.preprocess(image, image_size=size, mean_bgr=MEAN)
    assert out.dtype == np.float32 and out.shape == (size, size, 3)
    np.testing.assert_array_equal(out, _reference(image, size, MEAN), err_msg=f"seed {seed}")
    if shape == (size, size):  # at the input size the resize is an identity
        expected = image.astype(np.float32) - np.float32(MEAN)
        np.testing.assert_array_equal(out, expected, err_msg=f"seed {seed}")


def test_read_frame_then_preprocess_matches_cv2_on_a_jpeg(tmp_path):
    seed = 4
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (80, 60), interpolation=cv2.INTER_CUBIC)  # JPEG-friendly
    path = tmp_path / "000000.JPEG"
    assert cv2.imwrite(str(path), image)
    frame = preprocess.read_frame(path)
    assert frame.dtype == np.uint8 and frame.shape == (60, 80, 3)
    np.testing.assert_array_equal(frame, cv2.imread(str(path), cv2.IMREAD_COLOR))
    out = preprocess.preprocess(frame, image_size=32, mean_bgr=MEAN)
    np.testing.assert_array_equal(out, _reference(frame, 32, MEAN), err_msg=f"seed {seed}")


def test_read_frame_names_a_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "missing.JPEG"
    with pytest.raises(preprocess.FrameReadError, match="missing.JPEG"):
        preprocess.read_frame(missing)
    broken = tmp_path / "broken.JPEG"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.JPEG"):
        preprocess.read_frame(str(broken))


@pytest.mark.parametrize("seed", range(3))
def test_normalize_equals_numpy_float32_arithmetic(seed):
    rng = np.random.default_rng(seed)
    means = [MEAN, tuple(rng.uniform(0, 255, 3))]
    every_value = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (2, 256, 3))
    for mean in means:
        for image in (
            every_value,
            rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
            rng.integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8),  # leading dims
        ):
            expected = image.astype(np.float32) - np.asarray(mean, np.float32)
            got = preprocess.normalize(image, mean)
            assert got.dtype == np.float32 and got.shape == image.shape
            np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed}, mean {mean}")


def test_normalize_in_place():
    seed = 5
    images = np.random.default_rng(seed).integers(0, 256, (3, 9, 11, 3), dtype=np.uint8)
    stack = np.full(images.shape, np.nan, np.float32)
    for k in range(3):  # as the training pipeline fills a clip's frames
        view = stack[k]
        assert preprocess.normalize(images[k], MEAN, out=view) is view
    expected = images.astype(np.float32) - np.float32(MEAN)
    np.testing.assert_array_equal(stack, expected, err_msg=f"seed {seed}")
    with pytest.raises(ValueError, match="out must be"):
        preprocess.normalize(images[0], MEAN, out=np.empty((9, 11, 3), np.float64))


def test_preprocess_rejects_what_is_not_a_uint8_bgr_image():
    with pytest.raises(ValueError, match="uint8 BGR"):
        preprocess.preprocess(np.zeros((8, 8, 3), np.float32), image_size=4, mean_bgr=MEAN)
    with pytest.raises(ValueError, match="uint8 BGR"):
        preprocess.preprocess(np.zeros((8, 8), np.uint8), image_size=4, mean_bgr=MEAN)
