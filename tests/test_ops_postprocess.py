"""Post-processing and late fusion (`ssvd_jax.ops.postprocess`) on the release's golden run.

`outputs.npz` holds both streams' head outputs, their pre-NMS candidates (keyed by level, anchor,
label) and the final 100 detections; `ops_late_fusion.npz` a labelled list with the release's
class-wise NMS + cap result. P3 class logits are stored only as a 16x16 crop, so the full P3 map
is rebuilt from the crop plus the logits of the fixture's own P3 candidates (the crop holds none
of them); everything else is the release's data as stored.
"""

import functools

import jax
import numpy as np
import pytest

from configs import default
from ssvd_jax.models.outputs import anchors_for
from ssvd_jax.ops import postprocess

PARITY = "ssvd_reference_parity"
STREAMS = ("motion", "sample")
LEVELS = (3, 4, 5, 6)
NUM_CLASSES = 30
SCORE_ATOL = 1e-5  # fixture README §7
BOX_ATOL = 5e-3


@pytest.fixture(scope="module")
def outputs(fixtures_dir):
    return dict(np.load(fixtures_dir / PARITY / "outputs.npz"))


@pytest.fixture(scope="module")
def anchors_per_level():
    return anchors_for(448, default.get_config().model.anchors)


@pytest.fixture(scope="module")
def level_fn():
    return jax.jit(
        functools.partial(postprocess.level_candidates, image_size=448, legacy=True),
        static_argnames=("level", "stream", "pre_nms_top_n"),
    )


def _p3_logits(outputs, stream) -> np.ndarray:
    """Full P3 logits [56*56*9, 30]: the stored crop, the fixture's P3 candidates' logits
    (inverse sigmoid of their float32 scores) and a clearly-below-threshold fill elsewhere."""
    full = np.full((56, 56, 270), -20.0, np.float32)
    r0, r1 = outputs["p3_crop_rows"]
    c0, c1 = outputs["p3_crop_cols"]
    full[r0:r1, c0:c1] = outputs[f"{stream}_cls_logits_P3_crop"][0]
    full = full.reshape(-1, NUM_CLASSES)
    p3 = outputs[f"{stream}_cand_level"] == 3
    score = outputs[f"{stream}_cand_score"][p3].astype(np.float64)
    full[outputs[f"{stream}_cand_anchor"][p3], outputs[f"{stream}_cand_label"][p3] - 1] = np.log(
        score / (1 - score)
    )
    return full


def _stream_inputs(outputs, stream):
    logits = [_p3_logits(outputs, stream)] + [
        outputs[f"{stream}_cls_logits_P{lv}"].reshape(-1, NUM_CLASSES) for lv in LEVELS[1:]
    ]
    deltas = [outputs[f"{stream}_box_deltas_P{lv}"].reshape(-1, 4) for lv in LEVELS]
    return logits, deltas


def _rows(det) -> dict:
    """{(stream, level, anchor, release label): (score, box)} of the valid rows."""
    valid = np.asarray(det.valid)
    out = {}
    for i in np.flatnonzero(valid):
        key = (
            int(det.stream[i]),
            int(det.level[i]),
            int(det.anchor[i]),
            int(det.labels[i]) + 1,
        )
        assert key not in out
        out[key] = (float(det.scores[i]), np.asarray(det.boxes[i]))
    return out


def _fixture_candidates(outputs, stream_index, level=None) -> dict:
    s = STREAMS[stream_index]
    rows = {}
    for i in range(len(outputs[f"{s}_cand_level"])):
        lv = int(outputs[f"{s}_cand_level"][i])
        if level is not None and lv != level:
            continue
        key = (
            stream_index,
            lv,
            int(outputs[f"{s}_cand_anchor"][i]),
            int(outputs[f"{s}_cand_label"][i]),
        )
        rows[key] = (float(outputs[f"{s}_cand_score"][i]), outputs[f"{s}_cand_box"][i])
    return rows


def _assert_same_rows(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    keys = sorted(want)
    got_scores = np.array([got[k][0] for k in keys])
    want_scores = np.array([want[k][0] for k in keys])
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=SCORE_ATOL)
    got_boxes = np.stack([got[k][1] for k in keys])
    want_boxes = np.stack([want[k][1] for k in keys])
    np.testing.assert_allclose(got_boxes, want_boxes, rtol=0, atol=BOX_ATOL)


@pytest.mark.parametrize("stream_index", [0, 1])
@pytest.mark.parametrize("level", [4, 5, 6])
def test_level_candidates_match_fixture(outputs, anchors_per_level, level_fn, stream_index, level):
    s = STREAMS[stream_index]
    det = level_fn(
        outputs[f"{s}_cls_logits_P{level}"].reshape(-1, NUM_CLASSES),
        outputs[f"{s}_box_deltas_P{level}"].reshape(-1, 4),
        anchors_per_level[level - 3],
        level=level,
        stream=stream_index,
    )
    want = _fixture_candidates(outputs, stream_index, level)
    assert len(want) > 0
    _assert_same_rows(_rows(det), want)
    scores = np.asarray(det.scores)[np.asarray(det.valid)]
    assert np.all(scores > 0.1) and np.all(np.diff(scores) <= 0)  # valid rows first, by score


@pytest.mark.parametrize("stream_index", [0, 1])
def test_p3_crop_and_decoding_match_fixture(outputs, anchors_per_level, level_fn, stream_index):
    s = STREAMS[stream_index]
    crop_only = np.full((56, 56, 270), -20.0, np.float32)
    r0, r1 = outputs["p3_crop_rows"]
    c0, c1 = outputs["p3_crop_cols"]
    crop_only[r0:r1, c0:c1] = outputs[f"{s}_cls_logits_P3_crop"][0]
    deltas = outputs[f"{s}_box_deltas_P3"].reshape(-1, 4)
    # The stored crop holds real logits but, as in the fixture, no candidate.
    det = level_fn(crop_only.reshape(-1, NUM_CLASSES), deltas, anchors_per_level[0], level=3)
    assert not np.any(np.asarray(det.valid))
    # Its best scores sit just below 0.1: a lower threshold finds them, all inside the crop.
    det = level_fn(
        crop_only.reshape(-1, NUM_CLASSES), deltas, anchors_per_level[0], score_threshold=0.03
    )
    cell = np.asarray(det.anchor)[np.asarray(det.valid)] // 9
    assert len(cell) > 0
    assert np.all((cell // 56 >= r0) & (cell // 56 < r1) & (cell % 56 >= c0) & (cell % 56 < c1))
    # With the candidates' logits in place, P3 (the full stored deltas) reproduces the fixture.
    det = level_fn(
        _p3_logits(outputs, s), deltas, anchors_per_level[0], level=3, stream=stream_index
    )
    _assert_same_rows(_rows(det), _fixture_candidates(outputs, stream_index, 3))


def test_pre_nms_top_n_keeps_the_highest_scores(anchors_per_level, level_fn, rng):
    n = anchors_per_level[3].shape[0]
    # Distinct logits 9e-4 apart, in random order: the float32 scores of the top 50 differ by
    # ~37 ulps, so the expected order is unique (normal logits give a float32 tie among the
    # top 50 in about 1 of 200 draws).
    logits = rng.permutation(np.linspace(-6.0, 6.0, n * NUM_CLASSES)).reshape(n, NUM_CLASSES)
    logits = logits.astype(np.float32)
    deltas = rng.normal(0, 0.3, size=(n, 4)).astype(np.float32)
    det = level_fn(logits, deltas, anchors_per_level[3], pre_nms_top_n=50)
    assert det.scores.shape == (50,) and np.all(np.asarray(det.valid))
    scores = 1 / (1 + np.exp(-logits.astype(np.float64).reshape(-1)))
    assert (scores > 0.1).sum() > 50
    top = np.argsort(-scores, kind="stable")[:50]
    got = np.asarray(det.anchor) * NUM_CLASSES + np.asarray(det.labels)
    np.testing.assert_array_equal(got, top)
    np.testing.assert_allclose(np.asarray(det.scores), scores[top], rtol=1e-6)


def test_below_threshold_gives_padding_only(anchors_per_level, level_fn, rng):
    n = anchors_per_level[3].shape[0]
    logits = rng.uniform(-9, -2.3, size=(n, NUM_CLASSES)).astype(np.float32)  # sigmoid < 0.1
    det = level_fn(logits, np.zeros((n, 4), np.float32), anchors_per_level[3])
    assert not np.any(np.asarray(det.valid))
    assert float(np.abs(np.asarray(det.boxes)).sum()) == 0.0


def _sorted_by_label_then_score(boxes, scores, labels):
    order = np.lexsort((-scores, labels))
    return boxes[order], scores[order], labels[order]


def test_fuse_and_select_matches_release_late_fusion(fixtures_dir):
    f = np.load(fixtures_dir / PARITY / "ops_late_fusion.npz")
    fuse = jax.jit(postprocess.fuse_and_select, static_argnames=("max_detections", "legacy"))
    valid = np.ones(len(f["scores"]), bool)
    keep, ok = (np.asarray(x) for x in fuse(f["boxes"], f["scores"], f["labels"], valid))
    assert ok.all() and keep.shape == (100,)
    got = _sorted_by_label_then_score(f["boxes"][keep], f["scores"][keep], f["labels"][keep])
    np.testing.assert_array_equal(got[2], f["out_labels"])
    np.testing.assert_array_equal(got[1], f["out_scores"])
    np.testing.assert_array_equal(got[0], f["out_boxes"])
    _, ok = fuse(f["boxes"], f["scores"], f["labels"], valid, max_detections=420)
    assert int(np.asarray(ok).sum()) == 324  # survivors of the class-wise NMS before the cap


def test_fusing_fixture_candidates_reproduces_final_detections(outputs):
    parts = [_fixture_candidates(outputs, i) for i in (0, 1)]
    keys = [k for part in parts for k in sorted(part)]
    assert len(keys) == int(outputs["count_pre_nms"]) == 1011
    merged = {**parts[0], **parts[1]}
    boxes = np.stack([merged[k][1] for k in keys]).astype(np.float32)
    scores = np.array([merged[k][0] for k in keys], np.float32)
    labels = np.array([k[3] for k in keys], np.int32)
    valid = np.ones(len(keys), bool)
    fuse = jax.jit(postprocess.fuse_and_select, static_argnames=("max_detections", "legacy"))
    _, ok = fuse(boxes, scores, labels, valid, max_detections=len(keys))
    assert int(np.asarray(ok).sum()) == int(outputs["count_post_nms_before_cap"]) == 341
    keep, ok = (np.asarray(x) for x in fuse(boxes, scores, labels, valid))
    assert ok.sum() == int(outputs["count_final"]) == 100
    got = {keys[i]: (scores[i], boxes[i]) for i in keep}
    want_keys = zip(
        outputs["final_source_stream"],
        outputs["final_source_level"],
        outputs["final_source_anchor"],
        outputs["final_labels"],
        strict=True,
    )
    want = {
        tuple(int(v) for v in k): (outputs["final_scores"][i], outputs["final_boxes"][i])
        for i, k in enumerate(want_keys)
    }
    _assert_same_rows(got, want)


def test_detect_from_outputs_end_to_end(outputs, anchors_per_level):
    """Raw head outputs of both streams -> final detections, for a batch of two images: the
    fixture frame, and the same frame with the two streams' order swapped."""
    per_stream = [_stream_inputs(outputs, s) for s in STREAMS]
    # logits[s][l] is [B, HWA, C]: image 0 has streams (motion, sample), image 1 (sample, motion).
    logits = [
        [np.stack([per_stream[s][0][lv], per_stream[1 - s][0][lv]]) for lv in range(4)]
        for s in (0, 1)
    ]
    deltas = [
        [np.stack([per_stream[s][1][lv], per_stream[1 - s][1][lv]]) for lv in range(4)]
        for s in (0, 1)
    ]
    detect = jax.jit(
        functools.partial(
            postprocess.detect_from_outputs,
            per_level_anchors=anchors_per_level,
            image_size=448,
            level_ids=LEVELS,
        )
    )
    det = detect(logits, deltas)
    assert det.boxes.shape == (2, 100, 4) and np.asarray(det.valid).all()
    want_keys = zip(
        outputs["final_source_stream"],
        outputs["final_source_level"],
        outputs["final_source_anchor"],
        outputs["final_labels"],
        strict=True,
    )
    want = {
        tuple(int(v) for v in k): (outputs["final_scores"][i], outputs["final_boxes"][i])
        for i, k in enumerate(want_keys)
    }
    image0 = jax.tree.map(lambda x: x[0], det)
    _assert_same_rows(_rows(image0), want)
    image1 = jax.tree.map(lambda x: x[1], det)
    swapped = {(1 - k[0],) + k[1:]: v for k, v in want.items()}
    _assert_same_rows(_rows(image1), swapped)
    assert np.all(np.diff(np.asarray(det.scores), axis=1) <= 0)  # decreasing score order
