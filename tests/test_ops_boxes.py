"""Box ops (`ssvd_jax.ops.boxes`) against torchvision, numpy loops and the release's fixtures.

Continuous mode must equal torchvision (`box_iou`, detection `BoxCoder`); legacy ("+1") mode must
equal the release: `ops_nms.npz` holds its pairwise IoU, `ops_box_decode.npz` its decoded and
clipped boxes (rows 0..11 exercise the dw/dh clamp).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

from ssvd_jax.ops import boxes as box_ops

PARITY = "ssvd_reference_parity"


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _random_boxes(rng, n, extent=100.0, min_size=1.0, max_size=40.0) -> np.ndarray:
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def iou_fns():
    return {
        legacy: jax.jit(lambda a, b, legacy=legacy: box_ops.iou(a, b, legacy))
        for legacy in (False, True)
    }


@pytest.mark.parametrize("draw", range(3))
def test_iou_matches_torchvision(iou_fns, draw, rng):
    b1 = _random_boxes(rng, 37)
    b2 = _random_boxes(rng, 53)
    got = np.asarray(iou_fns[False](b1, b2))
    want = torchvision.ops.box_iou(torch.from_numpy(b1), torch.from_numpy(b2)).numpy()
    assert got.shape == (37, 53)
    assert (want > 0.1).sum() > 20  # the random layout really overlaps
    assert _rel_err(got, want) < 1e-4


def test_iou_broadcasts_over_batch(iou_fns, rng):
    b1 = np.stack([_random_boxes(rng, 6) for _ in range(3)])
    b2 = np.stack([_random_boxes(rng, 5) for _ in range(3)])
    got = np.asarray(iou_fns[False](b1, b2))
    assert got.shape == (3, 6, 5)
    for b in range(3):
        want = torchvision.ops.box_iou(torch.from_numpy(b1[b]), torch.from_numpy(b2[b])).numpy()
        assert _rel_err(got[b], want) < 1e-4


@pytest.mark.parametrize("draw", range(2))
def test_iou_legacy_matches_numpy_plus_one_loop(iou_fns, draw, rng):
    # Integer-ish corners with small sizes, where the +1 matters most. Crowded enough that
    # some 26 or more pairs overlap (the least of 20,000 draws).
    b1 = np.round(_random_boxes(rng, 19, extent=20, min_size=0, max_size=8))
    b2 = np.round(_random_boxes(rng, 23, extent=20, min_size=0, max_size=8))
    want = np.zeros((19, 23))
    for i, p in enumerate(b1.astype(np.float64)):
        for j, q in enumerate(b2.astype(np.float64)):
            iw = max(min(p[2], q[2]) - max(p[0], q[0]) + 1, 0)
            ih = max(min(p[3], q[3]) - max(p[1], q[1]) + 1, 0)
            inter = iw * ih
            ap = (p[2] - p[0] + 1) * (p[3] - p[1] + 1)
            aq = (q[2] - q[0] + 1) * (q[3] - q[1] + 1)
            want[i, j] = inter / (ap + aq - inter)
    got = np.asarray(iou_fns[True](b1, b2))
    assert (want > 0).sum() > 10
    assert _rel_err(got, want) < 1e-5


def test_iou_legacy_matches_release_fixture(iou_fns, fixtures_dir):
    f = np.load(fixtures_dir / PARITY / "ops_nms.npz")
    got = np.asarray(iou_fns[True](f["boxes"], f["boxes"]))
    np.testing.assert_allclose(got, f["iou_plus1"], rtol=1e-5, atol=1e-6)
    # The crafted last pair: 0.4706 with +1 areas, 0.4286 without.
    assert got[100, 101] == pytest.approx(0.4706, abs=1e-4)
    assert np.asarray(iou_fns[False](f["boxes"], f["boxes"]))[100, 101] == pytest.approx(
        0.4286, abs=1e-4
    )


def test_iou_zero_area_boxes_give_no_nan():
    boxes = jnp.array([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 9.0], [0.0, 0.0, 10.0, 10.0]])
    for legacy in (False, True):
        got = np.asarray(box_ops.iou(boxes, boxes, legacy))
        assert np.all(np.isfinite(got))
    cont = np.asarray(box_ops.iou(boxes, boxes))
    assert cont[0, 0] == 0.0 and cont[0, 2] == 0.0
    # Legacy: a zero-width box is one pixel wide, so it has IoU 1 with itself.
    assert np.asarray(box_ops.iou(boxes, boxes, True))[0, 0] == pytest.approx(1.0)
    grad = jax.grad(lambda b: jnp.sum(box_ops.iou(b, b)))(boxes)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_area_both_conventions():
    boxes = np.array([[0.0, 0.0, 9.0, 4.0], [2.5, 1.0, 3.5, 7.0]], np.float32)
    np.testing.assert_allclose(np.asarray(box_ops.area(boxes)), [36.0, 6.0])
    np.testing.assert_allclose(np.asarray(box_ops.area(boxes, legacy=True)), [50.0, 14.0])


def test_decode_legacy_matches_release_fixture(fixtures_dir):
    f = np.load(fixtures_dir / PARITY / "ops_box_decode.npz")
    decode = jax.jit(lambda a, d: box_ops.decode(a, d, legacy=True))
    got = np.asarray(decode(f["anchors"], f["deltas"]))
    # XLA's exp differs from torch's by an ulp: 1e-6 relative of boxes up to ~1e4 px.
    np.testing.assert_allclose(got, f["boxes_decoded"], rtol=1e-6, atol=1e-4)
    clipped = np.asarray(box_ops.clip(got, 448, 448, legacy=True))
    np.testing.assert_allclose(clipped, f["boxes_clipped"], rtol=1e-6, atol=1e-4)
    assert clipped.max() == 447.0 and clipped.min() == 0.0


@pytest.mark.parametrize("draw", range(2))
def test_encode_decode_match_torchvision_box_coder(draw, rng):
    weights = (10.0, 10.0, 5.0, 5.0)
    anchors = _random_boxes(rng, 64, min_size=4)
    gt = _random_boxes(rng, 64, min_size=4)
    deltas = rng.normal(0, 1.0, size=(64, 4)).astype(np.float32)
    deltas[:4, 2:] = 60.0  # beyond the clamp after dividing by the weight 5
    coder = BoxCoder(weights, bbox_xform_clip=math.log(1000.0 / 16))
    want_dec = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors)).numpy()
    want_enc = coder.encode_single(torch.from_numpy(gt), torch.from_numpy(anchors)).numpy()
    got_dec = np.asarray(box_ops.decode(anchors, deltas, weights))
    got_enc = np.asarray(box_ops.encode(anchors, gt, weights))
    assert _rel_err(got_dec, want_dec) < 1e-5
    assert _rel_err(got_enc, want_enc) < 1e-5


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(legacy, weights, rng):
    anchors = _random_boxes(rng, 3 * 50, min_size=4).reshape(3, 50, 4)
    gt = _random_boxes(rng, 3 * 50, min_size=4).reshape(3, 50, 4)
    deltas = box_ops.encode(anchors, gt, weights, legacy)
    assert deltas.shape == (3, 50, 4)
    back = np.asarray(box_ops.decode(anchors, deltas, weights, legacy))
    np.testing.assert_allclose(back, gt, rtol=1e-5, atol=1e-3)


def test_clip_conventions():
    boxes = np.array([[-5.0, -1.0, 500.0, 300.0], [10.0, 20.0, 30.0, 40.0]], np.float32)
    legacy = np.asarray(box_ops.clip(boxes, 240, 320, legacy=True))
    cont = np.asarray(box_ops.clip(boxes, 240, 320))
    np.testing.assert_array_equal(legacy[0], [0, 0, 319, 239])
    np.testing.assert_array_equal(cont[0], [0, 0, 320, 240])
    np.testing.assert_array_equal(legacy[1], boxes[1])
