"""ILSVRC VID AP (VID_PROTOCOL §1): hand-worked cases and a loop-by-loop port of FGFA's vid_eval."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from ssvd_jax.evaluation import vid_ap


def make_gt(frames, frame_ids=None, motion=None):
    """frames[t] = [(label, box), ...] in XML order; ids 1..F unless given."""
    rows = [t for t, objs in enumerate(frames) for _ in objs]
    labels = [lab for objs in frames for lab, _ in objs]
    boxes = [box for objs in frames for _, box in objs]
    ids = np.arange(1, len(frames) + 1) if frame_ids is None else frame_ids
    return vid_ap.GroundTruth(ids, rows, labels, np.reshape(boxes, (-1, 4)), motion_iou=motion)


def make_dets(rows):
    """rows = [(frame_id, label, score, box), ...]."""
    if not rows:
        return vid_ap.Detections([], [], [], np.zeros((0, 4)))
    fid, lab, score, box = zip(*rows, strict=True)
    return vid_ap.Detections(fid, lab, score, np.asarray(box, np.float64))


BIG = (0, 0, 99, 99)  # 100 x 100 (+1 sizes): threshold 0.5


def test_iou_threshold_small_objects():
    thr = vid_ap.iou_thresholds(np.array([[0, 0, 9, 9], [0, 0, 29, 29], [0, 0, 19, 9]]))
    # 10x10: 100 / (20 * 20) = 0.25; 30x30: 900 / 1600 = 0.5625 -> capped at 0.5;
    # 20x10: 200 / (30 * 20) = 1/3.
    np.testing.assert_allclose(thr, [0.25, 0.5, 1 / 3], rtol=0, atol=1e-15)


def test_pair_iou_uses_plus_one_sizes():
    a = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], np.float64)
    b = np.array([[5, 0, 14, 9], [10, 0, 19, 9], [9, 9, 20, 20]], np.float64)
    iou, overlaps = vid_ap.pair_iou(a, b)
    # Shift 5 of a 10-px box: inter 5*10 = 50, union 200 - 50 = 150. Touching at x=10: no
    # overlap. One shared pixel (9, 9): inter 1, union 100 + 144 - 1 = 243.
    np.testing.assert_allclose(iou, [50 / 150, 0.0, 1 / 243], rtol=0, atol=1e-15)
    assert overlaps.tolist() == [True, False, True]


def test_average_precision_is_all_point():
    # rec/prec of TP, FP, TP over 2 objects: the envelope gives 0.5*1 + 0.5*(2/3) = 5/6.
    assert vid_ap.average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(5 / 6)
    # One TP out of 5 objects: all-point AP 0.2 (11-point VOC07 would give 3/11).
    assert vid_ap.average_precision([0.2], [1.0]) == pytest.approx(0.2)
    assert vid_ap.average_precision([], []) == 0.0


def test_perfect_detections_give_one():
    frames = [
        [(0, BIG), (3, (200, 50, 260, 90))],
        [],
        [(3, (210, 50, 270, 95)), (3, (10, 10, 14, 14))],  # includes a 5x5 object
    ]
    gt = make_gt(frames)
    dets = make_dets(
        [
            (t + 1, lab, 0.9 - 0.01 * k - 0.1 * t, box)
            for t, objs in enumerate(frames)
            for k, (lab, box) in enumerate(objs)
        ]
    )
    res = vid_ap.evaluate_vid(gt, dets)
    assert res.ap[0] == 1.0 and res.ap[3] == 1.0
    assert np.isnan(res.ap[[1, 2, *range(4, 30)]]).all()  # classes without ground truth
    assert res.mAP == 1.0
    assert res.npos[0] == 1 and res.npos[3] == 3


def test_false_positive_above_two_true_positives():
    # Two objects in two frames; detections by score: FP (0.9), TP (0.8), TP (0.7).
    # prec = [0, 1/2, 2/3], rec = [0, 1/2, 1]; envelope 2/3 everywhere ->
    # AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    gt = make_gt([[(0, BIG)], [(0, BIG)]])
    dets = make_dets(
        [
            (1, 0, 0.9, (300, 300, 399, 399)),
            (1, 0, 0.8, BIG),
            (2, 0, 0.7, BIG),
        ]
    )
    res = vid_ap.evaluate_vid(gt, dets)
    assert res.ap[0] == pytest.approx(2 / 3, abs=1e-12)
    assert res.num_tp == 2


def test_small_object_threshold_decides_match():
    # Det covers 10x3 of a 10x10 object: IoU 30/100 = 0.3 >= thr 0.25 -> TP, AP 1.
    small = vid_ap.evaluate_vid(
        make_gt([[(0, (0, 0, 9, 9))]]), make_dets([(1, 0, 0.5, (0, 0, 9, 2))])
    )
    assert small.ap[0] == 1.0
    # The same geometry at 100x100 (100x30 inside): IoU 0.3 < 0.5 -> FP, AP 0.
    big = vid_ap.evaluate_vid(make_gt([[(0, BIG)]]), make_dets([(1, 0, 0.5, (0, 0, 99, 29))]))
    assert big.ap[0] == 0.0


def test_duplicate_detection_is_false_positive():
    # Frame 1: object A with an exact det (0.9) and a shifted duplicate (0.8, IoU 98*98/(2e4 -
    # 9604) = 0.924); frame 2: object B found at 0.7. Order TP, FP, TP: prec [1, 1/2, 2/3],
    # rec [1/2, 1/2, 1]; AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    gt = make_gt([[(0, BIG)], [(0, BIG)]])
    dets = make_dets([(1, 0, 0.9, BIG), (1, 0, 0.8, (2, 2, 101, 101)), (2, 0, 0.7, BIG)])
    res = vid_ap.evaluate_vid(gt, dets)
    assert res.ap[0] == pytest.approx(5 / 6, abs=1e-12)
    m = vid_ap.match_detections(gt, dets)
    assert m.matched_gt.tolist() == [0, -1, 1]


def test_matched_ground_truth_is_skipped_not_duplicate():
    # A = [0,0,99,99], B = [20,0,119,99]. det1 is A exactly; det2 = [5,0,104,99] overlaps A by
    # 9500/10500 = 0.905 and B by 8500/11500 = 0.739. A is taken, so det2 claims B (VID rule):
    # two TPs, AP 1 (VOC would call det2 a duplicate FP).
    gt = make_gt([[(0, BIG), (0, (20, 0, 119, 99))]])
    dets = make_dets([(1, 0, 0.9, BIG), (1, 0, 0.8, (5, 0, 104, 99))])
    assert vid_ap.match_detections(gt, dets).matched_gt.tolist() == [0, 1]
    assert vid_ap.evaluate_vid(gt, dets).ap[0] == 1.0


def test_best_candidate_and_first_on_ties():
    gt = make_gt([[(0, BIG), (0, (20, 0, 119, 99))], [(0, BIG), (0, (20, 0, 119, 99))]])
    dets = make_dets(
        [
            (1, 0, 0.9, (15, 0, 114, 99)),  # IoU A 85/115 = 0.739 < IoU B 95/105 -> B
            (2, 0, 0.9, (10, 0, 109, 99)),  # IoU 90/110 with both -> first in XML order (A)
        ]
    )
    assert vid_ap.match_detections(gt, dets).matched_gt.tolist() == [1, 2]


def test_other_class_does_not_match():
    gt = make_gt([[(0, BIG)]])
    res = vid_ap.evaluate_vid(gt, make_dets([(1, 1, 0.9, BIG), (1, 0, 0.5, BIG)]))
    assert res.ap[0] == 1.0  # the class-0 det is the first class-0 det: AP 1
    assert res.ap[1] != res.ap[1]  # no class-1 ground truth: NaN, left out of the mean
    assert res.mAP == 1.0


def test_frames_without_gt_count_and_unlisted_frames_drop():
    # Frame ids 10, 20 are listed (20 has no ground truth); id 30 is not listed.
    gt = make_gt([[(0, BIG)], []], frame_ids=np.array([10, 20]))
    dets = make_dets([(20, 0, 0.95, BIG), (30, 0, 0.99, BIG), (10, 0, 0.9, BIG)])
    res = vid_ap.evaluate_vid(gt, dets)
    # Scored order: FP (frame 20, 0.95), TP (0.9): prec [0, 1/2], rec [0, 1] -> AP 1/2.
    assert res.ap[0] == pytest.approx(0.5)
    assert res.num_dropped == 1 and res.num_detections == 2


def test_equal_scores_keep_input_order():
    gt = make_gt([[(0, BIG)]])
    dets = make_dets([(1, 0, 0.5, (1, 1, 100, 100)), (1, 0, 0.5, BIG)])
    # Stable order: the first line claims the object even though the second fits it better.
    assert vid_ap.match_detections(gt, dets).matched_gt.tolist() == [0, -1]


# ----------------------------------------------------------------------------------------------
# A literal port of FGFA's `vid_eval` loops (lib/dataset/imagenet_vid_eval.py), stable sorts.


def reference_vid_eval(frame_ids, gt_frames, det_rows, num_classes=30):
    npos = np.zeros(num_classes)
    for objs in gt_frames:
        for lab, _ in objs:
            npos[lab] += 1
    by_frame = collections.defaultdict(list)
    for row in det_rows:
        by_frame[row[0]].append(row)
    tp_all, fp_all, lab_all, conf_all = [], [], [], []
    for fid, objs in zip(frame_ids, gt_frames, strict=True):
        ds = sorted(by_frame[fid], key=lambda r: -r[2])
        detected = [False] * len(objs)
        for _, lab, conf, bb in ds:
            ovmax, kmax = -1, -1
            for k, (glab, bbgt) in enumerate(objs):
                if lab != glab or detected[k]:
                    continue
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
                    if ov >= thr and ov > ovmax:
                        ovmax, kmax = ov, k
            if kmax >= 0:
                detected[kmax] = True
            tp_all.append(float(kmax >= 0))
            fp_all.append(float(kmax < 0))
            lab_all.append(lab)
            conf_all.append(conf)
    order = np.argsort(-np.asarray(conf_all), kind="stable")
    tp_all, fp_all = np.asarray(tp_all)[order], np.asarray(fp_all)[order]
    lab_all = np.asarray(lab_all)[order]
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if npos[c] == 0:
            continue
        tp = np.cumsum(tp_all[lab_all == c])
        fp = np.cumsum(fp_all[lab_all == c])
        rec = tp / npos[c]
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap[c] = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def random_case(rng, num_frames=40, num_classes=3, extra_ids=False):
    """Objects of mixed sizes (small ones get thr < 0.5), jittered and duplicated detections,
    background detections and wrong-class ones; all scores distinct; 2-decimal boxes."""
    frames = []
    for _ in range(num_frames):
        objs = []
        for _ in range(rng.integers(0, 4)):
            w, h = rng.choice([6, 12, 25, 60, 150]) * rng.uniform(0.7, 1.3, 2)
            x, y = rng.uniform(0, 400, 2)
            objs.append((int(rng.integers(num_classes)), (int(x), int(y), int(x + w), int(y + h))))
        frames.append(objs)
    frame_ids = np.arange(1, num_frames + 1) * (3 if extra_ids else 1)
    det_rows = []
    for fid, objs in zip(frame_ids.tolist(), frames, strict=True):
        for lab, box in objs:
            for _ in range(rng.integers(0, 3)):
                size = max(box[2] - box[0], box[3] - box[1])
                jitter = rng.normal(0, 0.15 * size, 4)
                label = lab if rng.random() > 0.1 else int(rng.integers(num_classes))
                det_rows.append((fid, label, 0.0, tuple(np.round(np.add(box, jitter), 2))))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 400, 2)
            w, h = rng.uniform(5, 100, 2)
            det_rows.append((fid, int(rng.integers(num_classes)), 0.0, (x, y, x + w, y + h)))
    if extra_ids:  # detections on frames that are not listed
        det_rows.append((2, 0, 0.0, (0.0, 0.0, 50.0, 50.0)))
    scores = rng.permutation(len(det_rows)) / len(det_rows) + 1e-3
    det_rows = [(f, lab, float(s), b) for (f, lab, _, b), s in zip(det_rows, scores, strict=True)]
    perm = rng.permutation(len(det_rows))  # file order is arbitrary
    det_rows = [det_rows[i] for i in perm]
    return frame_ids, frames, det_rows


@pytest.mark.parametrize("draw", range(6))
def test_matches_fgfa_vid_eval_on_random_data(draw, rng):
    frame_ids, frames, det_rows = random_case(rng, extra_ids=draw % 2 == 1)
    expected = reference_vid_eval(frame_ids.tolist(), frames, det_rows)
    res = vid_ap.evaluate_vid(make_gt(frames, frame_ids), make_dets(det_rows))
    np.testing.assert_array_equal(np.isnan(res.ap), np.isnan(expected))
    np.testing.assert_allclose(res.ap, expected, rtol=0, atol=1e-12)
    # The data exercises both TPs and FPs (so in 3,000 draws).
    assert 0.0 < np.nanmean(expected) < 1.0
