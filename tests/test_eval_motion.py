"""FGFA's motion-speed evaluation (VID_PROTOCOL §2): motion IoU, buckets, FP attribution, and a
loop-by-loop port of FGFA's vid_eval_motion on random data."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from test_eval_vid_ap import BIG, make_dets, make_gt, random_case

from ssvd_jax.evaluation import motion, vid_ap


def test_motion_iou_of_known_tracks():
    # Track 0: a 10x10 box moving +1 px per frame. IoU at 1 px: 90 / 110 = 9/11; at 2 px:
    # 80 / 120 = 2/3. Track 1 is static (1.0). Track 2 exists in frame 1 only (no neighbour: 0).
    frames = [
        [(0, (0, 0, 9, 9)), (1, (50, 50, 80, 80))],
        [(2, (200, 200, 210, 210)), (0, (1, 0, 10, 9)), (1, (50, 50, 80, 80))],
        [(0, (2, 0, 11, 9)), (1, (50, 50, 80, 80))],
    ]
    got = motion.video_motion_iou(frames)
    np.testing.assert_allclose(got[0], [(9 / 11 + 2 / 3) / 2, 1.0], atol=1e-15)
    np.testing.assert_allclose(got[1], [0.0, 9 / 11, 1.0], atol=1e-15)
    np.testing.assert_allclose(got[2], [(9 / 11 + 2 / 3) / 2, 1.0], atol=1e-15)


def test_motion_iou_window_is_ten_frames():
    # Static for frames 0..10, then far away in frame 11. Frame 0 sees frames 1..10 (all 1.0);
    # frame 1 sees 0, 2..11: ten at 1.0 and one at 0 -> 10/11; frame 11 sees 1..10, all 0.
    box, far = (0, 0, 19, 19), (100, 100, 119, 119)
    frames = [[(7, box)] for _ in range(11)] + [[(7, far)]]
    got = np.concatenate(motion.video_motion_iou(frames))
    assert got[0] == 1.0 and got[10] == pytest.approx(10 / 11) and got[11] == 0.0
    assert got[1] == pytest.approx(10 / 11)


def test_bucket_bounds_are_inclusive():
    m = np.array([0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
    assert motion.in_bucket(m, *motion.MOTION_BUCKETS["fast"]).tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert motion.in_bucket(m, *motion.MOTION_BUCKETS["medium"]).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert motion.in_bucket(m, *motion.MOTION_BUCKETS["slow"]).tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_exact_detections_give_one_in_every_bucket():
    # One object per speed; each bucket's own object is a TP, the others are ignored.
    far = [(300, 0, 399, 99), (600, 0, 699, 99)]
    gt = make_gt([[(0, BIG), (0, far[0]), (0, far[1])]], motion=[0.95, 0.8, 0.5])
    dets = make_dets([(1, 0, 0.9, BIG), (1, 0, 0.8, far[0]), (1, 0, 0.7, far[1])])
    res = motion.evaluate_motion(gt, dets)
    assert {b: res.ap[b][0] for b in res.ap} == {"slow": 1.0, "medium": 1.0, "fast": 1.0}
    assert {b: res.npos[b][0] for b in res.npos} == {"slow": 1, "medium": 1, "fast": 1}


def fp_case():
    """Frame 1: slow S = BIG (0.95) and fast F = [300,0,399,99] (0.5), class 0.
    Frame 2: no ground truth. Frame 3: slow S2 (0.92) and fast F2 (0.3) of class 0.
    Detections (class 0), in score order:
      a 0.95 frame 1 [0,50,99,149]: IoU 1/3 with S (< 0.5), none with F -> unmatched
      b 0.90 frame 1 S exactly       -> matches S
      c 0.85 frame 2 anywhere        -> unmatched, frame without ground truth
      d 0.80 frame 1 F exactly       -> matches F
      e 0.75 frame 3 far from both   -> unmatched, overlaps nothing while both kinds exist
      f 0.70 frame 3 [-5,0,-10,99]   -> x2 < x1: +1 area (-4)(100) < 0, unmatched
    """
    gt = make_gt(
        [[(0, BIG), (0, (300, 0, 399, 99))], [], [(0, BIG), (0, (300, 0, 399, 99))]],
        motion=[0.95, 0.5, 0.92, 0.3],
    )
    dets = make_dets(
        [
            (1, 0, 0.95, (0, 50, 99, 149)),
            (1, 0, 0.90, BIG),
            (2, 0, 0.85, (0, 0, 50, 50)),
            (1, 0, 0.80, (300, 0, 399, 99)),
            (3, 0, 0.75, (600, 600, 650, 650)),
            (3, 0, 0.70, (-5, 0, -10, 99)),
        ]
    )
    return gt, dets


def test_unmatched_detection_goes_to_the_bucket_it_overlaps():
    gt, dets = fp_case()
    matching = vid_ap.match_detections(gt, dets)
    # Evaluation order is frame-list order: frame 1 (a, b, d), frame 2 (c), frame 3 (e, f).
    assert matching.det_index.tolist() == [0, 1, 3, 2, 4, 5]
    assert matching.matched_gt.tolist() == [-1, 0, 1, -1, -1, -1]
    # empty_weight: entries 0.95, 0.5, 0.92, 0.3 and one 0 for frame 2.
    # slow [0.9, 1]: 2 of 5 = 0.4; fast [0, 0.7]: 3 of 5 = 0.6; medium: 0.
    assert motion.empty_weight(gt, *motion.MOTION_BUCKETS["slow"]) == pytest.approx(0.4)
    assert motion.empty_weight(gt, *motion.MOTION_BUCKETS["fast"]) == pytest.approx(0.6)
    assert motion.empty_weight(gt, *motion.MOTION_BUCKETS["medium"]) == 0.0

    tp, fp, npos = motion.bucket_tp_fp(gt, dets, matching, *motion.MOTION_BUCKETS["slow"])
    # a: o_in 1/3 > o_out 0 -> FP 1. b: TP. d: matched to an ignored (fast) box -> 0, 0.
    # c: no ground truth -> empty_weight 0.4. e: tie 0 = 0 with 2 boxes, 1 ignored -> 1/2.
    # f: negative area -> ignored.
    np.testing.assert_allclose(tp, [0, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(fp, [1, 0, 0, 0.4, 0.5, 0])
    assert npos[0] == 2

    tp, fp, npos = motion.bucket_tp_fp(gt, dets, matching, *motion.MOTION_BUCKETS["fast"])
    # a: o_in 0 (F) < o_out 1/3 (S) -> 0. d: TP. c: 0.6. e: 1/2.
    np.testing.assert_allclose(tp, [0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(fp, [0, 0, 0, 0.6, 0.5, 0])

    tp, fp, npos = motion.bucket_tp_fp(gt, dets, matching, *motion.MOTION_BUCKETS["medium"])
    # No medium boxes: o_in = -1 < o_out (>= 0) wherever a frame has boxes -> 0; c: 0.0.
    np.testing.assert_allclose(fp, np.zeros(6))
    assert npos.sum() == 0


def test_bucket_ap_values_of_the_fp_case():
    gt, dets = fp_case()
    res = motion.evaluate_motion(gt, dets)
    # Slow, by score: a FP 1, b TP, c FP 0.4, d -, e FP 0.5, f -; npos 2.
    # tp 0,1,1,1,1,1; fp 1,1,1.4,1.4,1.9,1.9 -> recall reaches 1/2 at precision 1/2 and never
    # 1: AP = 1/2 * 1/2 = 1/4.
    assert res.ap["slow"][0] == pytest.approx(0.25)
    # Fast: a 0, b -, c FP 0.6, d TP, e FP 0.5, f -; npos 2. At d: tp 1, fp 0.6 ->
    # precision 1/1.6 = 0.625, recall 1/2: AP = 0.5 * 0.625 = 0.3125.
    assert res.ap["fast"][0] == pytest.approx(0.3125)
    assert np.isnan(res.ap["medium"]).all() and np.isnan(res.mAP["medium"])
    assert res.mAP["slow"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------
# A literal port of FGFA's `vid_eval_motion` (lib/dataset/imagenet_vid_eval_motion.py) for one
# motion range and its fixed area range [0, 1e10], with stable sorts.


def reference_vid_eval_motion(frame_ids, gt_frames, gt_motion, det_rows, lo, hi, num_classes=30):
    area_lo, area_hi = 0, 1e10
    all_motion = np.concatenate([m if len(m) else [0.0] for m in gt_motion])
    empty_weight = np.sum((all_motion >= lo) & (all_motion <= hi)) / float(len(all_motion))
    npos = np.zeros(num_classes)
    by_frame = collections.defaultdict(list)
    for row in det_rows:
        by_frame[row[0]].append(row)
    tp_all, fp_all, lab_all, conf_all = [], [], [], []
    for fid, objs, mots in zip(frame_ids, gt_frames, gt_motion, strict=True):
        ds = sorted(by_frame[fid], key=lambda r: -r[2])
        num_gt = len(objs)
        detected = np.zeros(num_gt)
        ig_motion = [(m < lo) | (m > hi) for m in mots]
        gt_area = [(b[3] - b[1] + 1) * (b[2] - b[0] + 1) for _, b in objs]
        ig_area = [(a < area_lo) | (a > area_hi) for a in gt_area]
        for _, lab, conf, bb in ds:
            ovmax, kmax, ovmax_ig, ovmax_nig = -1, -1, -1, -1
            for k, (glab, bbgt) in enumerate(objs):
                ov = 0
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (
                        (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                        + (bbgt[2] - bbgt[0] + 1.0) * (bbgt[3] - bbgt[1] + 1.0)
                        - iw * ih
                    )
                    ov = iw * ih / ua
                w, h = bbgt[2] - bbgt[0] + 1, bbgt[3] - bbgt[1] + 1
                thr = min(w * h / ((w + 10.0) * (h + 10.0)), 0.5)
                if ov >= thr and ov > ovmax and not detected[k] and lab == glab:
                    ovmax, kmax = ov, k
                if ig_motion[k] and ov > ovmax_ig:
                    ovmax_ig = ov
                if not ig_motion[k] and ov > ovmax_nig:
                    ovmax_nig = ov
            tp = fp = 0.0
            if kmax >= 0:
                detected[kmax] = 1
                if not ig_motion[kmax] and not ig_area[kmax]:
                    tp = 1.0
            else:
                bb_area = (bb[3] - bb[1] + 1) * (bb[2] - bb[0] + 1)
                if bb_area < area_lo or bb_area > area_hi:
                    fp = 0.0
                elif ovmax_nig > ovmax_ig:
                    fp = 1.0
                elif ovmax_ig > ovmax_nig:
                    fp = 0.0
                elif num_gt == 0:
                    fp = empty_weight
                else:
                    fp = sum(1 if i else 0 for i in ig_motion) / float(num_gt)
            tp_all.append(tp)
            fp_all.append(fp)
            lab_all.append(lab)
            conf_all.append(conf)
        for k, (glab, _) in enumerate(objs):
            if not (ig_motion[k] or ig_area[k]):
                npos[glab] += 1
    order = np.argsort(-np.asarray(conf_all), kind="stable")
    tp_all, fp_all = np.asarray(tp_all)[order], np.asarray(fp_all)[order]
    lab_all = np.asarray(lab_all)[order]
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if npos[c] <= 0:
            continue
        tp = np.cumsum(tp_all[lab_all == c])
        fp = np.cumsum(fp_all[lab_all == c])
        rec = tp / npos[c]
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        ap[c] = vid_ap.average_precision(rec, prec)
    return ap


@pytest.mark.parametrize("draw", range(4))
def test_matches_fgfa_vid_eval_motion_on_random_data(draw, rng):
    frame_ids, frames, plain_rows = random_case(rng, extra_ids=draw % 2 == 1)
    # Random motion IoUs with the bucket edges 0.7 and 0.9 present exactly.
    gt_motion = [rng.choice([0.3, 0.65, 0.7, 0.8, 0.9, 0.95, 1.0], len(objs)) for objs in frames]
    # Degenerate detections (negative +1 area) exercise the area-range rule.
    det_rows = plain_rows + [(int(frame_ids[0]), 0, 0.5123, (50.0, 50.0, 40.0, 80.0))]
    gt = make_gt(frames, frame_ids, motion=np.concatenate(gt_motion))
    dets = make_dets(det_rows)
    res = motion.evaluate_motion(gt, dets, buckets=("all", "slow", "medium", "fast"))
    for name in ("all", "slow", "medium", "fast"):
        lo, hi = motion.MOTION_BUCKETS[name]
        expected = reference_vid_eval_motion(
            frame_ids.tolist(), frames, gt_motion, det_rows, lo, hi
        )
        np.testing.assert_array_equal(np.isnan(res.ap[name]), np.isnan(expected))
        np.testing.assert_allclose(res.ap[name], expected, rtol=0, atol=1e-12, err_msg=name)
    # Without degenerate boxes, 'all' equals the plain evaluation (§2). (A jittered box may
    # come out degenerate by chance: it is ignored by 'all' but a FP of the plain evaluation.)
    proper = [r for r in plain_rows if (r[3][2] - r[3][0] + 1) * (r[3][3] - r[3][1] + 1) >= 0]
    gt = make_gt(frames, frame_ids, motion=np.ones(sum(len(f) for f in frames)))
    dets = make_dets(proper)
    np.testing.assert_allclose(
        motion.evaluate_motion(gt, dets, buckets=("all",)).ap["all"],
        vid_ap.evaluate_vid(gt, dets).ap,
        rtol=0,
        atol=1e-15,
    )
