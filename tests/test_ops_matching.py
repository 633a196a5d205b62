"""Anchor matching and targets (`ssvd_jax.ops.matching`): hand-built cases for every rule, and
random cases against a torch transcription of maskrcnn-benchmark's `Matcher`."""

import jax
import numpy as np
import pytest
import torch
import torchvision

from ssvd_jax.ops import boxes as box_ops
from ssvd_jax.ops import matching

# Ground truth (continuous coordinates) and the anchors built around it; see `hand_case`.
GT = np.array(
    [
        [0, 0, 10, 10],  # 0: plain thresholds
        [100, 100, 130, 110],  # 1: only low-quality anchors, two tied
        [200, 200, 204, 204],  # 2: its best anchor belongs to gt 3
        [200, 200, 240, 240],  # 3
        [50, 50, 60, 60],  # 4: padding (invalid), sits exactly on anchor 4
    ],
    np.float32,
)
VALID = np.array([True, True, True, True, False])
ANCHORS = np.array(
    [
        [0, 0, 10, 10],  # 0: IoU 1 with gt 0 -> fg
        [0, 0, 10, 5],  # 1: IoU 0.5 -> fg (>= 0.5)
        [0, 0, 10, 4.5],  # 2: IoU 0.45 -> ignored
        [0, 0, 10, 3.9],  # 3: IoU 0.39 -> bg
        [50, 50, 60, 60],  # 4: only the padded gt -> bg
        [95, 95, 125, 125],  # 5: IoU 250/950 with gt 1, its best -> fg (low quality)
        [105, 100, 135, 130],  # 6: the same IoU with gt 1 -> fg too (tie)
        [198, 198, 226, 226],  # 7: IoU 0.396 with gt 3 (bg) but gt 2's best anchor -> fg, gt 3
        [200, 200, 240, 240],  # 8: IoU 1 with gt 3 -> fg
        [300, 300, 340, 340],  # 9: nothing -> bg
    ],
    np.float32,
)


@pytest.fixture(scope="module")
def match_fn():
    return jax.jit(
        matching.match_anchors,
        static_argnames=("fg_iou", "bg_iou", "allow_low_quality", "legacy"),
    )


def test_hand_built_thresholds_and_low_quality(match_fn):
    idx, labels = (np.asarray(x) for x in match_fn(ANCHORS, GT, VALID))
    np.testing.assert_array_equal(labels, [1, 1, -1, 0, 0, 1, 1, 1, 1, 0])
    fg = labels == 1
    # maskrcnn-benchmark semantics: a promoted anchor keeps its own argmax gt (anchor 7 -> gt 3).
    np.testing.assert_array_equal(idx[fg], [0, 0, 1, 1, 3, 3])
    # Without low-quality matches anchors 5, 6 (IoU 0.26) are bg and 7 (0.396) is bg as well.
    _, plain = (np.asarray(x) for x in match_fn(ANCHORS, GT, VALID, allow_low_quality=False))
    np.testing.assert_array_equal(plain, [1, 1, -1, 0, 0, 0, 0, 0, 1, 0])


def test_thresholds_are_configurable(match_fn):
    _, labels = (np.asarray(x) for x in match_fn(ANCHORS, GT, VALID, fg_iou=0.6, bg_iou=0.3))
    np.testing.assert_array_equal(labels[:4], [1, -1, -1, -1])


def test_padded_gt_never_matches(match_fn):
    valid = VALID.copy()
    valid[4] = True
    idx, labels = (np.asarray(x) for x in match_fn(ANCHORS, GT, valid))
    assert labels[4] == 1 and idx[4] == 4  # a valid box on anchor 4 does match it
    idx, labels = (np.asarray(x) for x in match_fn(ANCHORS, GT, VALID))
    assert labels[4] == 0 and not np.any(idx[labels == 1] == 4)


def test_image_without_ground_truth_is_all_background(match_fn):
    _, labels = match_fn(ANCHORS, GT, np.zeros(5, bool))
    np.testing.assert_array_equal(np.asarray(labels), np.zeros(10))
    _, labels = matching.match_anchors(ANCHORS, np.zeros((0, 4), np.float32), np.zeros(0, bool))
    np.testing.assert_array_equal(np.asarray(labels), np.zeros(10))


def test_legacy_switches_iou_convention(match_fn):
    anchors = np.array([[0, 0, 9, 9]], np.float32)
    gt = np.array([[0, 0, 9, 4]], np.float32)
    # "+1": 10x10 vs 10x5 -> 0.5 (fg); continuous: 9x9 vs 9x4 -> 0.44 (ignored, no promotion).
    _, legacy = match_fn(anchors, gt, np.ones(1, bool), allow_low_quality=False, legacy=True)
    _, cont = match_fn(anchors, gt, np.ones(1, bool), allow_low_quality=False)
    assert int(legacy[0]) == 1 and int(cont[0]) == -1


def _torch_matcher(iou_GxA, high, low):
    """maskrcnn-benchmark `Matcher.__call__` with allow_low_quality_matches=True, verbatim."""
    matched_vals, matches = iou_GxA.max(dim=0)
    all_matches = matches.clone()
    matches[matched_vals < low] = -1
    matches[(matched_vals >= low) & (matched_vals < high)] = -2
    highest_quality_foreach_gt, _ = iou_GxA.max(dim=1)
    pairs = torch.nonzero(iou_GxA == highest_quality_foreach_gt[:, None])
    matches[pairs[:, 1]] = all_matches[pairs[:, 1]]
    return matches


@pytest.mark.parametrize("draw", range(3))
def test_random_cases_match_maskrcnn_benchmark_matcher(match_fn, draw, rng):
    num_gt = 7
    gxy = rng.uniform(0, 100, size=(num_gt, 2))
    gt = np.concatenate([gxy, gxy + rng.uniform(5, 40, size=(num_gt, 2))], 1).astype(np.float32)
    valid = np.array([True] * 5 + [False] * 2)
    # 300 anchors anywhere (small ground truth often gets only a low-quality match) and 24
    # jittered around the first three boxes, so that every draw has foreground and ignored
    # anchors (of 20,000 draws none had fewer than 5 foreground or no ignored anchor; 74%
    # had a low-quality promotion).
    xy = rng.uniform(0, 100, size=(300, 2))
    anywhere = np.concatenate([xy, xy + rng.uniform(8, 30, size=(300, 2))], 1)
    wh = np.repeat(gt[:3, 2:] - gt[:3, :2], 8, axis=0)
    ctr = np.repeat(gt[:3, :2], 8, axis=0) + wh / 2 + rng.normal(0, 0.2, (24, 2)) * wh
    wh = wh * np.exp(rng.normal(0, 0.25, (24, 2)))
    near = np.concatenate([ctr - wh / 2, ctr + wh / 2], 1)
    anchors = np.concatenate([anywhere, near]).astype(np.float32)
    idx, labels = (np.asarray(x) for x in match_fn(anchors, gt, valid, legacy=True))
    iou = torch.from_numpy(np.array(box_ops.iou(gt[:5], anchors, legacy=True)))
    want = _torch_matcher(iou, 0.5, 0.4).numpy()
    np.testing.assert_array_equal(labels, np.where(want >= 0, 1, np.where(want == -1, 0, -1)))
    np.testing.assert_array_equal(idx[labels == 1], want[want >= 0])
    assert (labels == 1).sum() >= 5 and (labels == -1).sum() > 0


def test_vmap_over_images(match_fn):
    gt = np.stack([GT, GT[::-1]])
    valid = np.stack([VALID, np.zeros(5, bool)])
    idx, labels = jax.vmap(matching.match_anchors, in_axes=(None, 0, 0))(ANCHORS, gt, valid)
    single_idx, single_labels = match_fn(ANCHORS, GT, VALID)
    np.testing.assert_array_equal(np.asarray(labels[0]), np.asarray(single_labels))
    np.testing.assert_array_equal(np.asarray(idx[0]), np.asarray(single_idx))
    np.testing.assert_array_equal(np.asarray(labels[1]), np.zeros(10))


@pytest.mark.parametrize("legacy", [False, True])
def test_build_targets(legacy):
    labels_G = np.array([3, 0, 7, 2, 5], np.int32)
    weights = (10.0, 10.0, 5.0, 5.0)
    build = jax.jit(
        jax.vmap(
            lambda g, lab, v: matching.build_targets(
                ANCHORS, g, lab, v, num_classes=8, weights=weights, legacy=legacy
            )
        )
    )
    t = build(np.stack([GT, GT]), np.stack([labels_G, labels_G]), np.stack([VALID, VALID & False]))
    matched, lab = matching.match_anchors(ANCHORS, GT, VALID, legacy=legacy)
    matched, lab = np.asarray(matched), np.asarray(lab)
    fg = lab == 1
    assert t.cls_targets.shape == (2, 10, 8) and t.box_targets.shape == (2, 10, 4)
    np.testing.assert_array_equal(np.asarray(t.fg_mask[0]), fg)
    np.testing.assert_array_equal(np.asarray(t.valid_mask[0]), lab != -1)
    want_cls = np.zeros((10, 8), np.float32)
    want_cls[np.flatnonzero(fg), labels_G[matched[fg]]] = 1.0
    np.testing.assert_array_equal(np.asarray(t.cls_targets[0]), want_cls)
    box_t = np.asarray(t.box_targets[0])
    assert np.all(box_t[~fg] == 0) and np.all(np.isfinite(box_t))
    back = np.asarray(box_ops.decode(ANCHORS[fg], box_t[fg], weights, legacy))
    np.testing.assert_allclose(back, GT[matched[fg]], rtol=1e-5, atol=1e-3)
    # The empty image: no foreground, every anchor background.
    assert not np.any(np.asarray(t.fg_mask[1])) and np.all(np.asarray(t.valid_mask[1]))
    assert float(np.abs(np.asarray(t.cls_targets[1])).sum()) == 0.0


def test_iou_helper_agrees_with_torchvision_on_hand_case():
    got = np.asarray(box_ops.iou(GT, ANCHORS))
    want = torchvision.ops.box_iou(torch.from_numpy(GT), torch.from_numpy(ANCHORS)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[1, 5] == got[1, 6]  # the tie the low-quality rule must keep
