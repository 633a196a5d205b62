"""mAP on subsets of frames and bootstrap intervals over videos (evaluation/subsets.py): a
subset's weighted mAP is the protocol's mAP of that subset evaluated on its own; weights of 2
are a frame counted twice; intervals are paired across models."""

import numpy as np
from test_eval_vid_ap import make_dets, make_gt, random_case

from ssvd_jax.evaluation import motion, subsets, vid_ap


def _case(rng, num_frames=40):
    frame_ids, frames, det_rows = random_case(rng, num_frames=num_frames)
    motion_iou = rng.uniform(0.3, 1.0, sum(len(f) for f in frames))
    return make_gt(frames, frame_ids, motion_iou), make_dets(det_rows), frames, det_rows, frame_ids


def test_subset_map_is_the_map_of_the_subset_alone(rng):
    gt, dets, frames, det_rows, frame_ids = _case(rng)
    terms = subsets.score_terms(gt, dets)
    # Frames with ground truth: a false positive on a frame without any takes the bucket
    # weight of the whole evaluation (the protocol's empty-frame weight), not of the subset.
    mask = (rng.random(gt.num_frames) < 0.5) & (gt.boxes_per_frame() > 0)
    kept_ids = set(frame_ids[mask].tolist())
    sub_frames = [f for f, m in zip(frames, mask, strict=True) if m]
    sub_motion = gt.motion_iou[mask[gt.frame]]
    sub_gt = make_gt(sub_frames, frame_ids[mask], sub_motion)
    sub_dets = make_dets([r for r in det_rows if r[0] in kept_ids])
    want = vid_ap.evaluate_vid(sub_gt, sub_dets).mAP
    np.testing.assert_allclose(subsets.weighted_map(terms["all"], mask.astype(float)), want,
                               rtol=0, atol=1e-12)  # fmt: skip
    buckets = motion.evaluate_motion(sub_gt, sub_dets)
    for name in motion.SPEED_BUCKETS:
        got = subsets.weighted_map(terms[name], mask.astype(float))
        np.testing.assert_allclose(got, buckets.mAP[name], rtol=0, atol=1e-12)
    # All frames at weight 1: the plain mAP.
    full = vid_ap.evaluate_vid(gt, dets).mAP
    np.testing.assert_allclose(subsets.weighted_map(terms["all"], np.ones(gt.num_frames)), full,
                               rtol=0, atol=1e-12)  # fmt: skip


def test_weight_two_is_the_frames_counted_twice(rng):
    gt, dets, frames, det_rows, frame_ids = _case(rng, num_frames=12)
    weight = rng.integers(0, 3, gt.num_frames).astype(float)
    # The same evaluation with every frame copied `weight` times under fresh ids.
    copies, copy_ids, copy_dets, next_id = [], [], [], 1000
    for objs, fid, w in zip(frames, frame_ids, weight, strict=True):
        for _ in range(int(w)):
            copies.append(objs)
            copy_ids.append(next_id)
            copy_dets += [(next_id, *r[1:]) for r in det_rows if r[0] == fid]
            next_id += 1
    want = vid_ap.evaluate_vid(make_gt(copies, np.asarray(copy_ids)), make_dets(copy_dets)).mAP
    got = subsets.weighted_map(subsets.score_terms(gt, dets)["all"], weight)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_batched_maps_equal_one_row_at_a_time(rng, monkeypatch):
    gt, dets, *_ = _case(rng, num_frames=50)
    terms = subsets.score_terms(gt, dets)
    # Resample-like rows (counts 0..3), one with a frame subset, one all zero (no positives).
    weights = rng.integers(0, 4, (9, gt.num_frames)).astype(float)
    weights[1] *= rng.random(gt.num_frames) < 0.3
    weights[2] = 0.0
    monkeypatch.setattr(subsets, "MAPS_BLOCK", 4)  # several blocks
    for name, t in terms.items():
        want = np.array([subsets.weighted_map(t, w) for w in weights])
        got = subsets.weighted_maps(t, weights)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        assert np.isnan(got[2])
        assert np.isfinite(got[0])


def test_bootstrap_intervals_are_paired_and_contain_the_value(rng):
    gt, dets, *_ = _case(rng, num_frames=60)
    gt = vid_ap.GroundTruth(gt.frame_ids, gt.frame, gt.label, gt.boxes, gt.motion_iou,
                            video_starts=np.arange(0, 60, 6))  # fmt: skip
    terms = subsets.score_terms(gt, dets)
    masks = {"all": np.ones(60, bool), "half": np.arange(60) % 2 == 0}
    video_index = subsets.video_of_frame(gt.video_starts, 60)
    assert video_index.tolist() == np.repeat(np.arange(10), 6).tolist()
    out = subsets.bootstrap({"a": terms, "b": terms}, masks, video_index, baseline="a",
                            num_samples=200, seed=1)  # fmt: skip
    entry = out["b"]["all@all"]
    assert entry["value"].low <= entry["value"].value <= entry["value"].high
    assert entry["value"].high > entry["value"].low  # the resamples vary
    # A model against itself: every paired difference is exactly 0.
    assert (entry["delta"].value, entry["delta"].low, entry["delta"].high) == (0.0, 0.0, 0.0)
    assert "delta" not in out["a"]["all@half"]
    again = subsets.bootstrap({"a": terms, "b": terms}, masks, video_index, baseline="a",
                              num_samples=200, seed=1)  # fmt: skip
    assert again["b"]["fast@half"] == out["b"]["fast@half"]


def test_frame_qualities_from_the_manifest(tmp_path):
    import json

    (tmp_path / subsets.MANIFEST).write_text(json.dumps(
        {"videos": {"val/v0": {"deteriorations": [[], ["defocus"], ["defocus", "illumination"]]}}}
    ))  # fmt: skip
    q = subsets.frame_qualities(tmp_path, ["val/v0", "val/v1"], [["000000", "000002"], ["000000"]])
    assert q == [(), ("defocus", "illumination"), ()]
    masks = subsets.quality_masks(q)
    assert masks["clean"].tolist() == [True, False, True]
    assert masks["deteriorated"].tolist() == [False, True, False]
    assert masks["illumination"].tolist() == [False, True, False]
    assert subsets.frame_qualities(tmp_path / "none", ["x"], [["000000"]]) is None
