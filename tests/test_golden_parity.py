"""Golden parity with the authors' released implementation (tests/fixtures/ssvd_reference_parity).

The release ran on CPU in float32 for one reference frame with its 7 entries under synthetic
weights that `tests/golden.py` regenerates bit for bit. We convert those weights with
`ssvd_jax.convert.ssvd_from_torch`, run our SSVD (ResNet-101, v1 sampling stream, 448x448) and
compare every recorded array with the fixture README's tolerances: features, flows, offsets
and logits within |a - ref| <= 1e-4 * max|ref| + 1e-4 * |ref|; candidate sets identical with
scores within 1e-5 and boxes within 5e-3 px; the final 100 fused detections likewise.

The whole module is a full-size check (ResNet-101 at 448, seven frames; ~50 s on two cores),
so it is marked slow: `pytest -m "not slow"` leaves it out, the full suite runs it. The fast
tier still checks each op against the release's `ops_*.npz`, the anchors and post-processing
against `anchors.npz` / `outputs.npz`, and the full-size key lists (test_convert_release).
"""

import golden
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from ssvd_jax import convert
from ssvd_jax.models import outputs as outputs_lib
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.ops import anchors as anchors_lib
from ssvd_jax.ops import postprocess

pytestmark = pytest.mark.slow

LEVELS = ("P3", "P4", "P5", "P6")
P3_CROP = (slice(40, 56), slice(0, 16))


@pytest.fixture(scope="module")
def run():
    config = default.get_config()
    model = ssvd_lib.create_model(config.model)
    mean = np.asarray(config.data.pixel_mean_bgr, np.float32)
    # [1, 7, H, W, 3]: the reference frame first, then its supports.
    frames = jnp.asarray(golden.frames().astype(np.float32) - mean)[None]
    template = jax.eval_shape(model.init, jax.random.key(0), frames)
    cells = [
        anchors_lib.cell_anchors(
            s, z, config.model.anchors.ratios, config.model.anchors.scales_per_octave
        )
        for s, z in zip(config.model.anchors.strides, config.model.anchors.sizes, strict=True)
    ]
    variables = convert.ssvd_from_torch(golden.release_state_dict(), template, cells)
    apply = jax.jit(lambda v, f: model.apply(v, f, mutable=["intermediates"]))
    outputs, state = apply(variables, frames)
    inter = {k: np.asarray(v[0]) for k, v in state["intermediates"].items()}
    per_level_anchors = outputs_lib.anchors_for(448, config.model.anchors)
    post = config.postprocess
    detect = jax.jit(
        lambda o: outputs_lib.detect(
            [o["motion"], o["sample"]],
            per_level_anchors,
            448,
            30,
            score_threshold=post.score_threshold,
            pre_nms_top_n=post.pre_nms_top_n,
            nms_iou=post.nms_iou,
            max_detections=post.max_detections,
            legacy=post.legacy_boxes,
        )
    )
    detections = detect(outputs)
    return {
        "outputs": outputs,
        "inter": inter,
        "detections": jax.tree.map(np.asarray, detections),
        "anchors": per_level_anchors,
        "ref": golden.outputs(),
        "config": config,
        "variables": variables,
        "frames": np.asarray(frames[0]),
        "detect": detect,
    }


def assert_close(name: str, got, want, rtol: float = 1e-4):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} vs {want.shape}"
    atol = 1e-4 * np.max(np.abs(want))
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    assert np.all(err <= 0), (
        f"{name}: max excess {err.max():.3g} (max|ref| {np.abs(want).max():.3g})"
    )


def _level(x, level, crop=True):
    """The fixture stores P3 maps as the crop rows 40:56, cols 0:16."""
    return x[:, P3_CROP[0], P3_CROP[1]] if (level == "P3" and crop) else x


def test_backbone_and_fpns(run):
    inter, ref = run["inter"], run["ref"]
    # Frames are computed as [reference, *supports]: entry 0 is the reference.
    assert_close("C3", _level(inter["backbone_C3"][:1], "P3"), ref["backbone_C3_crop"])
    assert_close("C4", inter["backbone_C4"][:1], ref["backbone_C4"])
    assert_close("C5", inter["backbone_C5"][:1], ref["backbone_C5"])
    for stream in ("motion", "sample"):
        for level in LEVELS:
            name = f"{stream}_fpn_{level}" + ("_crop" if level == "P3" else "")
            assert_close(name, _level(inter[f"{stream}_fpn_{level}"][:1], level), ref[name])
        assert_close(f"{stream} P6 all 7", inter[f"{stream}_fpn_P6"], ref[f"{stream}_fpn_P6_all7"])


def test_pwcnet_flows(run):
    inter, ref = run["inter"], run["ref"]
    for level in LEVELS:
        assert_close(f"flow_{level}", inter[f"flow_{level}"][0], ref[f"flow_{level}"])
    for lv in range(2, 7):
        assert_close(f"raw L{lv}", inter[f"pwc_raw_flow_L{lv}"], ref[f"pwc_raw_flow_L{lv}"])


def test_motion_stream(run):
    inter, ref = run["inter"], run["ref"]
    assert_close("motion_warped_P6", inter["motion_warped_P6"][0], ref["motion_warped_P6"])
    for level in LEVELS:
        name = f"motion_agg_{level}" + ("_crop" if level == "P3" else "")
        assert_close(name, _level(inter[f"motion_agg_{level}"], level), ref[name])


def test_sampling_stream(run):
    inter, ref = run["inter"], run["ref"]
    for level in LEVELS:
        name = f"sample_offset_pred_{level}" + ("_crop" if level == "P3" else "")
        assert_close(name, _level(inter[f"sample_offset_pred_{level}"][0], level), ref[name])
        name = f"sample_agg_{level}" + ("_crop" if level == "P3" else "")
        assert_close(name, _level(inter[f"sample_agg_{level}"], level), ref[name])
    assert_close("sample_dcn_out_P6", inter["sample_dcn_out_P6"][0], ref["sample_dcn_out_P6"])


def test_head_outputs(run):
    outputs, ref = run["outputs"], run["ref"]
    for stream in ("motion", "sample"):
        for level in LEVELS:
            name = f"{stream}_cls_logits_{level}" + ("_crop" if level == "P3" else "")
            got = _level(np.asarray(outputs[stream]["cls_logits"][level]), level)
            assert_close(name, got, ref[name])
            name = f"{stream}_box_deltas_{level}"
            assert_close(name, outputs[stream]["box_deltas"][level], ref[name])


def test_candidates_per_stream(run):
    outputs, ref = run["outputs"], run["ref"]
    for stream in ("motion", "sample"):
        logits, deltas = outputs_lib.flatten_outputs(outputs[stream], 30)
        cand = postprocess.postprocess(
            [x[0] for x in logits],
            [x[0] for x in deltas],
            [jnp.asarray(a) for a in run["anchors"]],
            448,
            level_ids=(3, 4, 5, 6),
        )
        cand = jax.tree.map(np.asarray, cand)
        v = cand.valid
        got = {
            (int(lv), int(a), int(lb) + 1): (s, b)
            for lv, a, lb, s, b in zip(
                cand.level[v], cand.anchor[v], cand.labels[v], cand.scores[v], cand.boxes[v],
                strict=True,
            )
        }  # fmt: skip
        want_keys = list(
            zip(
                ref[f"{stream}_cand_level"].tolist(),
                ref[f"{stream}_cand_anchor"].tolist(),
                ref[f"{stream}_cand_label"].tolist(),
                strict=True,
            )
        )
        assert set(got) == set(want_keys), stream
        scores = np.array([got[k][0] for k in want_keys])
        boxes = np.array([got[k][1] for k in want_keys])
        np.testing.assert_allclose(scores, ref[f"{stream}_cand_score"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(boxes, ref[f"{stream}_cand_box"], atol=5e-3, rtol=0)


def test_final_fused_detections(run):
    det, ref = run["detections"], run["ref"]
    v = det.valid[0]
    assert v.sum() == int(ref["count_final"]) == 100
    got = {
        (int(s), int(lv), int(a), int(lb) + 1): (sc, b)
        for s, lv, a, lb, sc, b in zip(
            det.stream[0][v], det.level[0][v], det.anchor[0][v], det.labels[0][v],
            det.scores[0][v], det.boxes[0][v], strict=True,
        )
    }  # fmt: skip
    want_keys = list(
        zip(
            ref["final_source_stream"].tolist(),
            ref["final_source_level"].tolist(),
            ref["final_source_anchor"].tolist(),
            ref["final_labels"].tolist(),
            strict=True,
        )
    )
    assert set(got) == set(want_keys)
    np.testing.assert_allclose(
        [got[k][0] for k in want_keys], ref["final_scores"], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        np.stack([got[k][1] for k in want_keys]), ref["final_boxes"], atol=5e-3, rtol=0
    )


def test_cached_path_equals_the_per_pair_path(run):
    """The engine's per-frame caches (PWC-Net pyramids, offset-predictor halves) on the
    golden weights and frames: head outputs within 1e-5 relative of the per-pair path (and
    within the fixture's tolerance of the release), the same 100 fused detections."""
    config, variables = run["config"], run["variables"]
    model = ssvd_lib.create_model(config.model)

    @jax.jit
    def cached(v, frames):
        def per_frame(m, x):
            feats = m.frame_features(x)
            return feats, m.frame_cache(x, feats)

        feats, cache = model.apply(v, frames, method=per_frame)
        entries = jax.tree.map(lambda a: a[None], feats)
        entry_cache = jax.tree.map(lambda a: a[None], cache)
        first = lambda tree: jax.tree.map(lambda a: a[:, 0], tree)  # noqa: E731
        aggregated = model.apply(
            v, None, None, first(entries), entries, first(entry_cache), entry_cache,
            method=model.aggregate,
        )  # fmt: skip
        return model.apply(v, aggregated, method=model.heads)

    outputs = cached(variables, jnp.asarray(run["frames"]))
    for stream in ("motion", "sample"):
        for kind in ("cls_logits", "box_deltas"):
            for level in LEVELS:
                got = np.asarray(outputs[stream][kind][level], np.float64)
                want = np.asarray(run["outputs"][stream][kind][level], np.float64)
                err = np.abs(got - want).max() / np.abs(want).max()
                assert err < 1e-5, f"{stream} {kind} {level}: relative error {err:.2e}"
        name = f"{stream}_cls_logits_P4"
        assert_close(name, outputs[stream]["cls_logits"]["P4"], run["ref"][name])
    det = jax.tree.map(np.asarray, run["detect"](outputs))
    want = run["detections"]
    np.testing.assert_array_equal(det.valid, want.valid)
    np.testing.assert_array_equal(det.labels, want.labels)
    np.testing.assert_allclose(det.scores, want.scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(det.boxes, want.boxes, atol=1e-3, rtol=0)


def test_bfloat16_detections_stay_close_to_float32(run):
    """Mixed precision (model.dtype bfloat16: float32 params, bfloat16 convolutions and
    deformable sampling, PWC-Net, offsets, softmax weights, losses and box decoding float32) on
    the golden weights. Measured here (CPU, 2026-12-01): head logits within 0.96% of
    max|logit| of float32 (the motion stream's were 7% with PWC-Net in bfloat16 too, hence
    model.flow_dtype); 89 of the 100 fused detections have a same-class bfloat16 detection
    with IoU >= 0.9, whose scores differ by at most 0.0097 (median 0.0023) and boxes by at
    most 2.4 px. The bounds asserted leave about 2x room."""
    from ssvd_jax.ops import boxes as box_ops

    config = run["config"].copy_and_resolve_references()
    config.model.dtype = "bfloat16"
    model = ssvd_lib.create_model(config.model)
    outputs = jax.jit(model.apply)(run["variables"], jnp.asarray(run["frames"])[None])
    for stream in ("motion", "sample"):
        for level in LEVELS:
            got = np.asarray(outputs[stream]["cls_logits"][level], np.float64)
            want = np.asarray(run["outputs"][stream]["cls_logits"][level], np.float64)
            assert outputs[stream]["cls_logits"][level].dtype == jnp.float32
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err < 0.02, f"{stream} {level}: bfloat16 logits off by {err:.3f}"
    d16 = jax.tree.map(lambda a: np.asarray(a)[0], run["detect"](outputs))
    d32 = jax.tree.map(lambda a: np.asarray(a)[0], run["detections"])
    b32, b16 = d32.boxes[d32.valid], d16.boxes[d16.valid]
    same_class = d32.labels[d32.valid][:, None] == d16.labels[d16.valid][None]
    iou = np.asarray(box_ops.iou(jnp.asarray(b32), jnp.asarray(b16), legacy=True)) * same_class
    best, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    matched = best_iou >= 0.9
    assert matched.sum() >= 80, f"only {matched.sum()} of 100 detections kept under bfloat16"
    score_diff = np.abs(d32.scores[d32.valid][matched] - d16.scores[d16.valid][best[matched]])
    assert score_diff.max() <= 0.02, score_diff.max()
    assert np.abs(b32[matched] - b16[best[matched]]).max() <= 5.0
