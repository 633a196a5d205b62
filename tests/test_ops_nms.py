"""Jit NMS (`ssvd_jax.ops.nms`) against torchvision (continuous boxes) and the release's "+1"
NMS (`ops_nms.npz`), plus padding, early stop, tie order and vmap behaviour."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from ssvd_jax.ops import nms as nms_ops

PARITY = "ssvd_reference_parity"


# The IoU thresholds the tests use: no drawn pair sits within TIE of one of them, where float32
# rounding (ours vs torchvision's arithmetic) decides whether a box is suppressed (seen: seed
# 1749936786, a pair at IoU 0.450001 that torchvision kept).
THRESHOLDS = (0.3, 0.4, 0.45, 0.49, 0.5)
TIE = 1e-4


def _pairwise_iou(boxes: np.ndarray, plus_one: float) -> np.ndarray:
    b = boxes.astype(np.float64)
    area = (b[:, 2] - b[:, 0] + plus_one) * (b[:, 3] - b[:, 1] + plus_one)
    w = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    h = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    inter = np.clip(w + plus_one, 0, None) * np.clip(h + plus_one, 0, None)
    return inter / (area[:, None] + area[None, :] - inter)


def _clustered_boxes(rng, n, num_clusters=12, extent=200.0):
    """Boxes jittered around a few centres, so that most of them overlap heavily; a box whose
    IoU with another (with or without the release's "+1") is a near-tie with one of
    `THRESHOLDS` is drawn again (up to 1000 boxes: the larger draws check memory, not
    equality with torchvision)."""
    centres = rng.uniform(20, extent - 20, size=(num_clusters, 2))
    which = rng.integers(0, num_clusters, size=n)

    def draw(count, where):
        ctr = centres[where] + rng.normal(0, 4, size=(count, 2))
        wh = rng.uniform(10, 40, size=(count, 2))
        return np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=1).astype(np.float32)

    boxes = draw(n, which)
    for _ in range(100 if n <= 1000 else 0):
        near = np.zeros((n, n), bool)
        for plus_one in (0.0, 1.0):
            iou = _pairwise_iou(boxes, plus_one)
            near |= np.any(np.abs(iou[..., None] - np.asarray(THRESHOLDS)) < TIE, axis=-1)
        np.fill_diagonal(near, False)
        bad = np.flatnonzero(np.triu(near).any(axis=0))  # the later box of each near pair
        if not len(bad):
            break
        boxes[bad] = draw(len(bad), which[bad])
    scores = rng.permutation(n).astype(np.float32) / n + 0.1  # distinct scores
    return boxes, scores


def _kept(result) -> np.ndarray:
    idx, valid = (np.asarray(x) for x in result)
    assert np.all(valid[: valid.sum()]) and not np.any(valid[valid.sum() :])
    return idx[valid]


@pytest.fixture(scope="module")
def nms_fn():
    return jax.jit(nms_ops.nms, static_argnames=("max_output", "legacy"))


@pytest.fixture(scope="module")
def batched_fn():
    return jax.jit(nms_ops.batched_nms, static_argnames=("max_output", "legacy"))


@pytest.mark.parametrize("draw", range(3))
@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_nms_matches_torchvision(nms_fn, draw, threshold, rng):
    boxes, scores = _clustered_boxes(rng, 500)
    want = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    got = _kept(nms_fn(boxes, scores, threshold, max_output=500))
    # Heavy suppression actually happened (500 draws kept 39..178 boxes).
    assert 12 <= len(want) < 250
    np.testing.assert_array_equal(got, want.numpy())  # same set, same (score) order


def test_nms_legacy_matches_release_fixture(nms_fn, fixtures_dir):
    f = np.load(fixtures_dir / PARITY / "ops_nms.npz")
    thr = float(f["iou_threshold"])
    got = _kept(nms_fn(f["boxes"], f["scores"], thr, max_output=102, legacy=True))
    np.testing.assert_array_equal(np.sort(got), f["keep"])  # the release lists ascending indices
    # In score order.
    assert np.all(np.diff(f["scores"][got]) <= 0)
    # Without +1 the crafted pair (100, 101) is not suppressed, as torchvision does.
    cont = _kept(nms_fn(f["boxes"], f["scores"], thr, max_output=102, legacy=False))
    np.testing.assert_array_equal(np.sort(cont), f["keep_torchvision_no_plus1"])
    assert 101 in cont and 101 not in got
    tv = torchvision.ops.nms(torch.from_numpy(f["boxes"]), torch.from_numpy(f["scores"]), thr)
    np.testing.assert_array_equal(np.sort(tv.numpy()), f["keep_torchvision_no_plus1"])


@pytest.mark.parametrize("draw", range(2))
def test_batched_nms_matches_torchvision(batched_fn, draw, rng):
    boxes, scores = _clustered_boxes(rng, 400, num_clusters=6)
    labels = rng.integers(0, 5, size=400).astype(np.int32)
    want = torchvision.ops.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.45
    )
    got = _kept(batched_fn(boxes, scores, labels, 0.45, max_output=400))
    np.testing.assert_array_equal(got, want.numpy())
    # Class-wise: more survive than with one class-agnostic NMS.
    plain = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.45)
    assert len(got) > len(plain)


def test_batched_nms_legacy_equals_per_class_legacy_nms(nms_fn, batched_fn, fixtures_dir):
    f = np.load(fixtures_dir / PARITY / "ops_late_fusion.npz")
    boxes, scores, labels = f["boxes"], f["scores"], f["labels"]
    got = _kept(batched_fn(boxes, scores, labels, 0.45, max_output=420, legacy=True))
    want = []
    for label in np.unique(labels):
        # One compiled shape for all classes: the other classes are masked out.
        members = labels == label
        want.extend(_kept(nms_fn(boxes, scores, 0.45, max_output=420, legacy=True, valid=members)))
    want = np.array(want)
    want = want[np.argsort(-scores[want], kind="stable")]
    np.testing.assert_array_equal(got, want)
    assert len(got) == 324  # the fixture README's survivor count


def test_invalid_and_minus_inf_never_kept(nms_fn, rng):
    boxes, scores = _clustered_boxes(rng, 60)
    valid = rng.uniform(size=60) < 0.7
    scores_inf = scores.copy()
    scores_inf[~valid] = -np.inf
    by_mask = _kept(nms_fn(boxes, scores, 0.5, max_output=60, valid=valid))
    by_inf = _kept(nms_fn(boxes, scores_inf, 0.5, max_output=60))
    want = np.flatnonzero(valid)[
        torchvision.ops.nms(torch.from_numpy(boxes[valid]), torch.from_numpy(scores[valid]), 0.5)
    ]
    np.testing.assert_array_equal(by_mask, want)
    np.testing.assert_array_equal(by_inf, want)
    # Nothing valid: nothing kept.
    idx, ok = nms_fn(boxes, scores, 0.5, max_output=8, valid=np.zeros(60, bool))
    assert not np.any(np.asarray(ok)) and np.all(np.asarray(idx) == 0)


def test_max_output_truncates_and_pads(nms_fn, rng):
    boxes, scores = _clustered_boxes(rng, 300)
    full = _kept(nms_fn(boxes, scores, 0.5, max_output=300))
    short_idx, short_ok = (np.asarray(x) for x in nms_fn(boxes, scores, 0.5, max_output=5))
    assert short_ok.all() and short_idx.shape == (5,)
    np.testing.assert_array_equal(short_idx, full[:5])
    long_idx, long_ok = (np.asarray(x) for x in nms_fn(boxes, scores, 0.5, max_output=400))
    assert long_ok.sum() == len(full) and np.all(long_idx[len(full) :] == 0)


def test_ties_lower_index_first_and_threshold_is_strict(nms_fn):
    boxes = np.array(
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60]],
        np.float32,
    )
    scores = np.array([0.5, 0.9, 0.9, 0.2, 0.5], np.float32)
    # 1 and 2 tie at 0.9: 1 (lower index) is visited first and removes its duplicate 4; 2 then
    # removes its duplicate 0; 3 has IoU exactly 100 / 200 = 0.5 with 2, which is not > 0.5.
    got = _kept(nms_fn(boxes, scores, 0.5, max_output=5))
    np.testing.assert_array_equal(got, [1, 2, 3])
    got = _kept(nms_fn(boxes, scores, 0.49, max_output=5))
    np.testing.assert_array_equal(got, [1, 2])


def test_zero_area_boxes_are_kept_once(nms_fn):
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # Continuous IoU of a point with anything is 0: nothing suppresses, each is kept once.
    np.testing.assert_array_equal(_kept(nms_fn(boxes, scores, 0.5, max_output=3)), [0, 1, 2])
    # "+1": the two points are the same pixel (IoU 1).
    got = _kept(nms_fn(boxes, scores, 0.5, max_output=3, legacy=True))
    np.testing.assert_array_equal(got, [0, 2])


def test_vmap_over_batch(rng):
    data = [_clustered_boxes(rng, 120) for _ in range(3)]
    boxes = np.stack([d[0] for d in data])
    scores = np.stack([d[1] for d in data])
    fn = jax.jit(jax.vmap(functools.partial(nms_ops.nms, iou_threshold=0.4, max_output=50)))
    idx, ok = fn(boxes, scores)
    for b in range(3):
        want = torchvision.ops.nms(torch.from_numpy(boxes[b]), torch.from_numpy(scores[b]), 0.4)
        np.testing.assert_array_equal(_kept((idx[b], ok[b])), want.numpy()[:50])


def _largest_intermediate(jaxpr) -> int:
    """Largest array size produced anywhere in a jaxpr, sub-jaxprs (loop bodies) included."""
    largest = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            largest = max(largest, int(np.prod(v.aval.shape)))
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_intermediate(inner))
    return largest


def test_large_input_does_not_need_pairwise_matrix(rng):
    # 8,000 boxes (two streams x four levels x 1,000): only O(N) memory per step; the jaxpr
    # must hold no N x N array.
    n = 8000
    boxes, scores = _clustered_boxes(rng, n, num_clusters=300, extent=2000.0)
    fn = functools.partial(nms_ops.nms, iou_threshold=0.5, max_output=100)
    jaxpr = jax.make_jaxpr(fn)(jnp.asarray(boxes), jnp.asarray(scores))
    assert _largest_intermediate(jaxpr.jaxpr) < n * 10
    got = _kept(jax.jit(fn)(boxes, scores))
    want = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5)
    np.testing.assert_array_equal(got, want.numpy()[:100])
