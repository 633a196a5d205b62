"""Clip augmentation: boxes stay on the pixels they frame, and all frames move together."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from input_pipeline import augment, builders, ilsvrc, pipeline


def _record(image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> dict:
    """A record as the TFDS data source returns it (image left encoded)."""
    h, w = image.shape[:2]
    objs = [ilsvrc.Object("n01662784", 26, *b) for b in boxes]
    return {
        "image": cv2.imencode(".png", image)[1].tobytes(),  # lossless: exact pixels
        "width": w,
        "height": h,
        "objects": {
            "bbox": [builders.normalized_bbox(o, w, h) for o in objs],
            "label": [26] * len(objs),
            "track_id": list(range(len(objs))),
            "generated": [False] * len(objs),
            "occluded": [False] * len(objs),
        },
    }


def _video_table(records: list[dict]) -> pipeline.Table:
    return pipeline.Table(
        records,
        name=pipeline.VID,
        split="train",
        video_ids=["v"],
        starts=[0],
        lengths=[len(records)],
        sample_frames=[[0]],
    )


def _scene(box: tuple[int, int, int, int], w: int = 160, h: int = 96) -> np.ndarray:
    # Black, a pure green object: green minus the other channels tells the object apart from
    # both the background and the grey expand canvas (the mean, G - (B + R) / 2 = 3).
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    img[y1 : y2 + 1, x1 : x2 + 1] = (0, 250, 0)
    return img


def _object_mask(image: np.ndarray) -> np.ndarray:
    img = image.astype(np.float32)
    greenness = img[..., 1] - (img[..., 0] + img[..., 2]) / 2
    mask = np.clip((greenness - 3) / 247, 0, 1)
    return np.where(mask > 0.02, mask, 0)


def _edges(profile: np.ndarray) -> tuple[float, float]:
    """Continuous [start, end) of a 1-D coverage profile: a plateau, and at each side the ramp
    a bilinear warp draws from a hard edge. The ramp spans one source pixel (several output
    pixels when zoomed in) centred on the edge, so the edge lies the ramp's area away from the
    plateau (the last partial pixel alone is ~scale / 2 off at zoom `scale`)."""
    p = profile / profile.max()
    plateau = np.flatnonzero(p > 0.99)
    first, last = plateau[0], plateau[-1] + 1
    return first - p[:first].sum(), last + p[last:].sum()


def _object_extent(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Continuous extent (x1, y1, x2, y2) of the object's pixels."""
    (x1, x2), (y1, y2) = _edges(mask.mean(axis=0)), _edges(mask.mean(axis=1))
    return x1, y1, x2, y2


@pytest.mark.parametrize("draw", range(12))
def test_boxes_frame_the_object_after_augmentation(draw, rng):
    # One object per frame, moving between frames; every frame's box must frame its object.
    boxes = [(30, 20, 89, 59), (40, 24, 99, 63), (22, 30, 81, 69)]
    table = _video_table([_record(_scene(b), [b]) for b in boxes])
    options = pipeline.AugmentOptions(photometric=False)
    clip = pipeline.load_clip(
        (table, None),
        np.array([0, 0, 1]),
        rng,
        num_frames=3,
        support_range=1,
        image_size=128,
        max_boxes=4,
        mean=None,
        augment_options=options,
        legacy_boxes=False,
    )
    for k in range(3):
        image, frame_index = clip["images"][k], int(clip["frame_indices"][k])
        mask = _object_mask(image)
        assert 0 <= frame_index < 3
        if not clip["valid"][k, 0]:
            # Dropped only when the crop cut the object's centre off: what is left of it
            # (if anything) is cut by the image border.
            if mask.any():
                x1, y1, x2, y2 = _object_extent(mask)
                assert min(x1, y1) < 1 or max(x2, y2) > 127
            continue
        got = np.asarray(_object_extent(mask))
        np.testing.assert_allclose(clip["boxes"][k, 0], got, atol=1.0)


def test_legacy_boxes_use_the_plus_one_convention():
    box = (30, 20, 89, 59)
    table = _video_table([_record(_scene(box), [box])])
    kwargs = dict(
        num_frames=1, support_range=0, image_size=80, max_boxes=2, mean=None, augment_options=None
    )
    ref = np.array([0, 0, 0])
    legacy = pipeline.load_clip((table, None), ref, None, legacy_boxes=True, **kwargs)
    edges = pipeline.load_clip((table, None), ref, None, legacy_boxes=False, **kwargs)
    sx, sy = 80 / 160, 80 / 96
    np.testing.assert_allclose(edges["boxes"][0, 0], [30 * sx, 20 * sy, 90 * sx, 60 * sy], 1e-5)
    np.testing.assert_allclose(legacy["boxes"][0, 0], edges["boxes"][0, 0] - [0, 0, 1, 1], 1e-5)


def test_identical_frames_stay_identical_with_full_augmentation(rng):
    image = cv2.resize(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8), (160, 96))
    boxes = [(10, 10, 60, 50), (70, 30, 150, 90)]
    table = _video_table([_record(image, boxes)] * 5)
    for _ in range(8):
        clip = pipeline.load_clip(
            (table, None),
            np.array([0, 0, 2]),
            rng,
            num_frames=3,
            support_range=2,
            image_size=64,
            max_boxes=4,
            mean=pipeline.RELEASE_MEAN_BGR,
            augment_options=pipeline.AugmentOptions(),
            legacy_boxes=True,
        )
        assert clip["images"].dtype == np.float32 and clip["images"].shape == (3, 64, 64, 3)
        for k in (1, 2):
            np.testing.assert_array_equal(clip["images"][k], clip["images"][0])
            np.testing.assert_array_equal(clip["boxes"][k], clip["boxes"][0])
            np.testing.assert_array_equal(clip["valid"][k], clip["valid"][0])


def test_no_augmentation_is_the_release_preprocessing(rng):
    image = rng.integers(0, 255, (72, 128, 3), dtype=np.uint8)
    table = _video_table([_record(image, [(1, 2, 30, 40)])])
    clip = pipeline.load_clip(
        (table, None),
        np.array([0, 0, 0]),
        None,
        num_frames=1,
        support_range=0,
        image_size=48,
        max_boxes=1,
        mean=pipeline.RELEASE_MEAN_BGR,
        augment_options=None,
        legacy_boxes=True,
    )
    expected = cv2.resize(image, (48, 48), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected -= np.float32(pipeline.RELEASE_MEAN_BGR)
    np.testing.assert_array_equal(clip["images"][0], expected)


def test_expand_canvas_is_exactly_the_mean(rng):
    image = np.full((50, 50, 3), 200, np.uint8)
    table = _video_table([_record(image, [(10, 10, 40, 40)])])
    options = pipeline.AugmentOptions(expand_prob=1.0, crop=False, flip_prob=0.0)
    corners_on_canvas = 0
    for _ in range(4):
        clip = pipeline.load_clip(
            (table, None),
            np.array([0, 0, 0]),
            rng,
            num_frames=1,
            support_range=0,
            image_size=64,
            max_boxes=1,
            mean=pipeline.RELEASE_MEAN_BGR,
            augment_options=options,
            legacy_boxes=True,
        )
        img = clip["images"][0]
        # Corners lie on the canvas, which is mean - mean, unless the expansion was tiny (the
        # image then touches all four corners: 0.2% of 3,000 draws, hence the count over all).
        corners = np.stack([img[0, 0], img[-1, -1], img[0, -1], img[-1, 0]])
        corners_on_canvas += int(np.all(np.abs(corners) < 0.51, axis=1).sum())
        assert (np.abs(img) > 0.51).mean() > 0.01  # the (distorted) image is still there
    assert corners_on_canvas > 0


def test_geometry_matrix_matches_point_map():
    g = augment.Geometry((-10.0, 5.0, 90.0, 65.0), (50, 30), flip=True)
    m = g.cv2_matrix()
    # A pixel index i has its centre at i + 0.5 in continuous coordinates.
    for x, y in [(0.5, 5.5), (40.5, 20.5), (89.5, 64.5)]:
        px = m @ np.array([x - 0.5, y - 0.5, 1.0])
        mx, my = g.map_points(np.array(x), np.array(y))
        np.testing.assert_allclose(px + 0.5, [mx, my], atol=1e-9)


def test_decode_reduction_never_leaves_fewer_pixels_than_the_output():
    assert augment.resize_geometry(1280, 720, 448).decode_reduction() == 1
    assert augment.Geometry((0, 0, 2560, 1440), (448, 448)).decode_reduction() == 2
    assert augment.Geometry((0, 0, 5000, 4000), (448, 448)).decode_reduction() == 8
    g = augment.Geometry((-400.0, -300.0, 2200.0, 1500.0), (448, 448), flip=True)
    r = g.decode_reduction()
    x0, y0, x1, y1 = g.reduced(r).window
    assert (x1 - x0) >= 448 and (y1 - y0) >= 448 and r == 4


def test_min_iou_crop_respects_the_constraint(rng):
    boxes = np.array([[100.0, 80.0, 220.0, 200.0]])
    for _ in range(30):
        g = augment.sample_geometry(
            rng,
            320,
            240,
            boxes,
            100,
            expand_prob=0.0,
            min_ious=(0.5,),
            flip_prob=0.0,
        )
        win = np.asarray(g.window)
        if tuple(win) != (0.0, 0.0, 320.0, 240.0):
            assert augment._iou_one_to_many(win, boxes).max() >= 0.5
            ratio = (win[3] - win[1]) / (win[2] - win[0])
            assert 0.5 <= ratio <= 2.0


def test_photometric_is_uint8_and_deterministic(rng):
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for _ in range(10):
        p = augment.sample_photometric(rng)
        a, b = augment.apply_photometric(img, p), augment.apply_photometric(img.copy(), p)
        assert a.dtype == np.uint8 and a.shape == img.shape
        np.testing.assert_array_equal(a, b)
    neutral = augment.Photometric(None, None, True, None, None, None)
    np.testing.assert_array_equal(augment.apply_photometric(img, neutral), img)
