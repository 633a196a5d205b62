"""The evaluation pieces for users' own datasets (COCO-VID JSON): the 'iou50' rule, crowd regions
(COCO's iscrowd), class names in the summaries and tables, and COCO-style JSON results. Hand
worked cases; the defaults must keep the devkit's matching bit for bit."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import motion, report, results, score, subsets, track_ap, tracks, vid_ap

BIG = (0, 0, 99, 99)  # 100 x 100 inclusive pixels (99 x 99 continuous): thresholds 0.5


def ground_truth(objects, num_frames=1, num_classes=3, crowd=None, **kwargs):
    """objects: [(frame row, label, box)] in frame order; crowd: [(frame row, label, box)]."""
    kw = dict(kwargs)
    if crowd is not None:
        kw.update(
            crowd_frame=[c[0] for c in crowd],
            crowd_label=[c[1] for c in crowd],
            crowd_boxes=np.array([c[2] for c in crowd], np.float64).reshape(-1, 4),
        )
    return vid_ap.GroundTruth(
        frame_ids=np.arange(1, num_frames + 1),
        frame=[o[0] for o in objects],
        label=[o[1] for o in objects],
        boxes=np.array([o[2] for o in objects], np.float64).reshape(-1, 4),
        num_classes=num_classes,
        **kw,
    )


def detections(rows):
    """rows: [(frame id, label, score, box)]."""
    if not rows:
        return vid_ap.Detections([], [], [], np.zeros((0, 4)))
    fid, lab, sc, box = zip(*rows, strict=True)
    return vid_ap.Detections(fid, lab, sc, np.array(box, np.float64))


# --- IoU rules -----------------------------------------------------------------------------------


def test_iou_rule_is_validated_and_names_the_allowed_values():
    assert vid_ap.IOU_RULES == ("ilsvrc", "iou50")
    with pytest.raises(ValueError, match="'coco'.*ilsvrc, iou50"):
        ground_truth([(0, 0, BIG)], iou_rule="coco")


def test_continuous_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float64)
    b = np.array([[5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 5]], np.float64)
    iou, overlaps = vid_ap.pair_iou_continuous(a, b)
    # Shift 5 of a 10-wide box: 50 / 150. Touching at x=10: no overlap (the +1 rule would count
    # one column). Lower half: 50 / 100.
    np.testing.assert_allclose(iou, [50 / 150, 0.0, 0.5], rtol=0, atol=1e-15)
    assert overlaps.tolist() == [True, False, True]
    iou_ilsvrc, _ = vid_ap.pair_iou_by_rule(a, b, "ilsvrc")
    np.testing.assert_array_equal(iou_ilsvrc, vid_ap.pair_iou(a, b)[0])


def test_thresholds_per_rule():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 29, 29]], np.float64)
    np.testing.assert_allclose(vid_ap.iou_thresholds(boxes, "ilsvrc"), [0.25, 0.5], atol=1e-15)
    assert vid_ap.iou_thresholds(boxes, "iou50").tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="iou rule"):
        vid_ap.iou_thresholds(boxes, "voc")


@pytest.mark.parametrize(
    "det_box, ilsvrc_tp, iou50_tp",
    [
        # Lower half of BIG: +1 sizes 100*50 / 100*100 = 0.5 (a match); continuous 99*49 / 99*99
        # = 0.4949 (none).
        ((0, 0, 99, 49), True, False),
        # Shifted by 33.2 px: +1 IoU 66.8 / 133.2 = 0.5015; continuous 65.8 / 132.2 = 0.4977.
        ((33.2, 0, 132.2, 99), True, False),
        # Shifted by 40: below 0.5 under both.
        ((40, 0, 139, 99), False, False),
        # The box itself: 1 under both.
        (BIG, True, True),
    ],
)
def test_one_box_pair_under_both_rules(det_box, ilsvrc_tp, iou50_tp):
    dets = detections([(1, 0, 0.9, det_box)])
    for rule, tp in (("ilsvrc", ilsvrc_tp), ("iou50", iou50_tp)):
        gt = ground_truth([(0, 0, BIG)], iou_rule=rule)
        result = vid_ap.evaluate_vid(gt, dets)
        assert result.num_tp == int(tp), rule
        assert result.ap[0] == (1.0 if tp else 0.0), rule


def test_small_object_threshold_only_under_ilsvrc():
    # A 10 x 10 object (+1 sizes): the ILSVRC threshold is 100 / (20 * 20) = 0.25. A detection
    # on its top 3 rows has +1 IoU 30 / 100 = 0.3 (a match there) and continuous IoU
    # (9 * 2) / (9 * 9) = 0.222 (below the plain 0.5).
    small = (0, 0, 9, 9)
    dets = detections([(1, 0, 0.9, (0, 0, 9, 2))])
    ilsvrc = vid_ap.evaluate_vid(ground_truth([(0, 0, small)]), dets)
    iou50 = vid_ap.evaluate_vid(ground_truth([(0, 0, small)], iou_rule="iou50"), dets)
    assert (ilsvrc.num_tp, ilsvrc.ap[0]) == (1, 1.0)
    assert (iou50.num_tp, iou50.ap[0]) == (0, 0.0)


def test_track_overlaps_follow_the_rule():
    # One ground-truth track on 2 frames, a predicted track with the lower half of it on both:
    # every frame overlaps under 'ilsvrc' (IoU 0.5), none under 'iou50' (0.4949).
    def run(rule):
        gt = vid_ap.GroundTruth(
            frame_ids=[1, 2], frame=[0, 1], label=[0, 0], boxes=np.array([BIG, BIG], float),
            video_starts=[0], track_id=[7, 7], num_classes=3, iou_rule=rule,
        )  # fmt: skip
        half = (0, 0, 99, 49)
        preds = tracks.Tracks(detections([(1, 0, 0.9, half), (2, 0, 0.9, half)]), [1, 1])
        return track_ap.evaluate_tracks(gt, preds)

    assert run("ilsvrc").mAP_track == 1.0
    assert run("iou50").mAP_track == 0.0


# --- crowd regions -------------------------------------------------------------------------------

CROWD = (200, 0, 399, 199)


def crowd_case(rule="ilsvrc", with_crowd=True):
    gt = ground_truth(
        [(0, 0, BIG)], crowd=[(0, 0, CROWD)] if with_crowd else None, iou_rule=rule
    )  # fmt: skip
    dets = detections([
        (1, 0, 0.99, (250, 50, 299, 99)),  # inside the crowd region
        (1, 0, 0.95, (500, 500, 550, 550)),  # off every box: a FP
        (1, 0, 0.90, BIG),  # on the object: a TP
    ])  # fmt: skip
    return gt, dets


@pytest.mark.parametrize("rule", vid_ap.IOU_RULES)
def test_detection_on_crowd_region_is_ignored(rule):
    gt, dets = crowd_case(rule)
    matching = vid_ap.match_detections(gt, dets)
    assert matching.num_ignored == 1
    assert matching.det_index.tolist() == [1, 2]  # the crowd detection left out
    assert matching.matched_gt.tolist() == [-1, 0]
    result = vid_ap.evaluate_vid(gt, dets, matching)
    # FP then TP: precision 1/2 at recall 1, AP 0.5; npos counts the one real object only.
    assert result.ap[0] == 0.5 and result.npos.tolist() == [1.0, 0.0, 0.0]
    assert result.num_detections == 2 and result.num_tp == 1
    # The same AP as without that detection at all ...
    without = vid_ap.evaluate_vid(gt, dets.take(np.array([1, 2])))
    assert without.ap[0] == result.ap[0]
    # ... and without the region it is a FP: FP, FP, TP gives 1/3.
    gt_plain, _ = crowd_case(rule, with_crowd=False)
    plain = vid_ap.evaluate_vid(gt_plain, dets)
    assert plain.ap[0] == pytest.approx(1 / 3, abs=1e-15)
    assert vid_ap.match_detections(gt_plain, dets).num_ignored == 0


def test_crowd_gt_is_not_ground_truth():
    gt, _ = crowd_case()
    assert len(gt) == 1 and gt.num_crowd == 1
    assert gt.npos().tolist() == [1.0, 0.0, 0.0]
    assert gt.boxes_per_frame().tolist() == [1]


@pytest.mark.parametrize(
    "rule, box, ignored",
    [
        # Inclusive pixels: the crowd region starts at column 200. 150..249 has 50 of its 100
        # columns inside: cover 0.5, ignored (>=); 149..248 has 49: a FP.
        ("ilsvrc", (150, 0, 249, 99), True),
        ("ilsvrc", (149, 0, 248, 99), False),
        # Continuous: [150, 250] has 50 of its 100 width inside; [149, 249] 49.
        ("iou50", (150, 0, 250, 100), True),
        ("iou50", (149, 0, 249, 100), False),
    ],
)
def test_crowd_cover_threshold(rule, box, ignored):
    gt = ground_truth([(0, 0, BIG)], crowd=[(0, 0, CROWD)], iou_rule=rule)
    dets = detections([(1, 0, 0.9, box)])
    matching = vid_ap.match_detections(gt, dets)
    assert matching.num_ignored == int(ignored)
    assert len(matching.det_index) == int(not ignored)


def test_crowd_needs_same_frame_and_class_and_an_unmatched_detection():
    gt = ground_truth([(0, 0, BIG), (1, 0, BIG)], num_frames=2,
                      crowd=[(0, 0, CROWD), (0, 0, (0, 0, 199, 199))])  # fmt: skip
    dets = detections([
        (1, 1, 0.9, (250, 50, 299, 99)),  # other class: a FP
        (2, 0, 0.8, (250, 50, 299, 99)),  # other frame: a FP
        (1, 0, 0.7, BIG),  # matches the object although a crowd region covers it: a TP
        (1, 0, 0.6, BIG),  # a duplicate: the covering crowd region absorbs it
    ])  # fmt: skip
    matching = vid_ap.match_detections(gt, dets)
    assert matching.num_ignored == 1
    pairs = zip(matching.det_index.tolist(), matching.matched_gt.tolist(), strict=True)
    assert sorted(pairs) == [(0, -1), (1, -1), (2, 0)]


def test_crowd_fields_are_validated():
    with pytest.raises(ValueError, match="go together"):
        vid_ap.GroundTruth([1], [0], [0], [BIG], num_classes=3, crowd_frame=[0])
    with pytest.raises(ValueError, match="frame row past"):
        ground_truth([(0, 0, BIG)], crowd=[(1, 0, CROWD)])
    with pytest.raises(ValueError, match="crowd labels"):
        ground_truth([(0, 0, BIG)], crowd=[(0, 3, CROWD)])


def test_ignored_detections_leave_motion_and_subsets_alone():
    gt, dets = crowd_case()
    gt = vid_ap.GroundTruth(
        gt.frame_ids, gt.frame, gt.label, gt.boxes, motion_iou=[0.95], video_starts=[0],
        num_classes=3, crowd_frame=gt.crowd_frame, crowd_label=gt.crowd_label,
        crowd_boxes=gt.crowd_boxes,
    )  # fmt: skip
    kept = dets.take(np.array([1, 2]))
    # The motion buckets and the subset terms see exactly the run without that detection.
    got = motion.evaluate_motion(gt, dets)
    ref = motion.evaluate_motion(gt, kept)
    for name in motion.SPEED_BUCKETS:
        np.testing.assert_array_equal(got.ap[name], ref.ap[name])
        np.testing.assert_array_equal(got.npos[name], ref.npos[name])
    assert got.ap["slow"][0] == 0.5
    terms = subsets.score_terms(gt, dets)
    assert subsets.weighted_map(terms["all"], np.ones(1)) == 0.5
    assert len(terms["all"].labels) == 2
    summary = score.evaluate(gt, dets)
    assert summary["counts"]["detections_ignored_crowd"] == 1
    assert summary["counts"]["detections_scored"] == 2
    assert summary["iou_rule"] == "ilsvrc"


# --- the defaults: bit for bit -------------------------------------------------------------------


def random_case(rng):
    num_frames, num_gt, num_dets, num_classes = 6, 14, 40, 3
    rows = np.sort(rng.integers(0, num_frames, num_gt))
    xy = rng.integers(0, 40, (num_gt, 2))
    gt_boxes = np.c_[xy, xy + rng.integers(2, 30, (num_gt, 2))].astype(np.float64)
    gt_label = rng.integers(0, num_classes, num_gt)
    src = rng.integers(0, num_gt, num_dets)
    boxes = gt_boxes[src] + rng.normal(0, 3, (num_dets, 4)).round(2)
    label = np.where(rng.random(num_dets) < 0.8, gt_label[src],
                     rng.integers(0, num_classes, num_dets))  # fmt: skip
    frame_id = np.where(rng.random(num_dets) < 0.9, rows[src] + 1,
                        rng.integers(1, num_frames + 3, num_dets))  # fmt: skip
    score_ = rng.random(num_dets).round(2)
    gt = (np.arange(1, num_frames + 1), rows, gt_label, gt_boxes)
    return gt, num_classes, vid_ap.Detections(frame_id, label, score_, boxes)


def test_default_matching_is_the_devkits_bit_for_bit():
    # Expected values recorded from the matcher before iou_rule and crowd regions existed
    # (commit bbbf288), on this seeded case.
    (ids, rows, labels, boxes), num_classes, dets = random_case(np.random.default_rng(20240515))
    gt = vid_ap.GroundTruth(ids, rows, labels, boxes, num_classes=num_classes)
    m = vid_ap.match_detections(gt, dets)
    assert m.det_index.tolist() == [
        12, 29, 1, 33, 20, 2, 26, 24, 28, 19, 31, 32, 8, 4, 3, 11, 34, 23, 6, 25, 15, 27, 13, 22,
        7, 37, 30, 38, 14, 39, 16, 0, 18, 35, 36, 5, 17, 21, 9, 10,
    ]  # fmt: skip
    assert m.matched_gt.tolist() == [
        3, 1, -1, -1, -1, 0, -1, -1, 2, -1, -1, 5, 4, -1, -1, -1, -1, -1, 9, -1, 6, -1, -1, 8,
        -1, -1, -1, -1, -1, -1, -1, -1, 10, -1, -1, -1, -1, 13, -1, -1,
    ]  # fmt: skip
    assert (m.num_dropped, m.num_ignored) == (0, 0)
    result = vid_ap.evaluate_vid(gt, dets, m)
    assert [float(a).hex() for a in result.ap] == [
        "0x1.a12f684bda12fp-2", "0x1.cc48676f3121ap-2", "0x1.f49f49f49f4a0p-2"
    ]  # fmt: skip
    assert float(result.mAP).hex() == "0x1.cb5d088fe37f8p-2"


@pytest.mark.parametrize("seed", range(20))
def test_explicit_defaults_and_no_crowd_change_nothing(seed):
    (ids, rows, labels, boxes), num_classes, dets = random_case(np.random.default_rng(seed))
    plain = vid_ap.GroundTruth(ids, rows, labels, boxes, num_classes=num_classes)
    explicit = vid_ap.GroundTruth(
        ids, rows, labels, boxes, num_classes=num_classes, iou_rule="ilsvrc",
        crowd_frame=[], crowd_label=[], crowd_boxes=np.zeros((0, 4)), class_names=("a", "b", "c"),
    )  # fmt: skip
    a, b = vid_ap.match_detections(plain, dets), vid_ap.match_detections(explicit, dets)
    assert np.array_equal(a.det_index, b.det_index), f"seed {seed}"
    assert np.array_equal(a.matched_gt, b.matched_gt), f"seed {seed}"
    assert b.num_ignored == 0


# --- class names ---------------------------------------------------------------------------------


def test_class_names_default_and_validation():
    assert vid_ap.GroundTruth([1], [], [], np.zeros((0, 4))).names[0] == "airplane"
    gt = ground_truth([(0, 0, BIG)], class_names=["cat", "dog", "emu"])
    assert gt.names == ("cat", "dog", "emu")
    assert ground_truth([(0, 0, BIG)]).names == ("class_1", "class_2", "class_3")
    with pytest.raises(ValueError, match="2 class_names for 3 classes"):
        ground_truth([(0, 0, BIG)], class_names=("cat", "dog"))


NAMES = ("cat", "dog", "a_rather_long_category_name")


def test_score_summary_and_tables_use_the_dataset_names():
    gt = vid_ap.GroundTruth(
        frame_ids=[1, 2], frame=[0, 1], label=[0, 2], boxes=np.array([BIG, BIG], float),
        motion_iou=[0.95, 0.95], video_starts=[0], track_id=[1, 2], num_classes=3,
        iou_rule="iou50", class_names=NAMES,
    )  # fmt: skip
    dets = detections([(1, 0, 0.9, BIG), (2, 2, 0.8, BIG), (2, 1, 0.7, BIG)])
    summary = score.evaluate(gt, dets, collections.Counter())
    assert summary["classes"] == list(NAMES) and summary["iou_rule"] == "iou50"
    assert list(summary["AP"]) == list(NAMES) and list(summary["num_gt"]) == list(NAMES)
    assert summary["AP"]["cat"] == 1.0 and np.isnan(summary["AP"]["dog"])
    text = report.score_report(summary)
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == list(NAMES)
    assert "airplane" not in text
    # The long name gets a wider column; every row keeps the same width as the header.
    assert len({len(ln) for ln in lines[:6] if not ln.startswith("-")}) == 1
    # A summary saved before 'classes' existed: the AP table's keys, in order.
    old = {k: v for k, v in summary.items() if k != "classes"}
    assert report.class_table(old) == report.class_table(summary)

    preds = tracks.Tracks(dets, [1, 2, 3])
    track_summary = score.evaluate_tracks(gt, preds)
    assert track_summary["classes"] == list(NAMES) and list(track_summary["AP_track"]) == list(
        NAMES
    )
    track_text = report.track_report(track_summary)
    assert [ln.split()[0] for ln in track_text.splitlines()[2:5]] == list(NAMES)
    assert "airplane" not in track_text


def test_vid_tables_unchanged_without_names():
    summary = {"AP": {}, "num_gt": {}, "mAP": 0.0}
    assert report.class_names(summary, "AP")[:2] == ["airplane", "antelope"]


# --- COCO-style JSON results ---------------------------------------------------------------------


def random_detections(rng, num=200, num_classes=5):
    xy = rng.uniform(-5, 600, (num, 2))
    wh = rng.uniform(0, 300, (num, 2))
    wh[:3] = 0.0  # degenerate boxes too
    return vid_ap.Detections(
        rng.integers(1, 10_000, num), rng.integers(0, num_classes, num), rng.random(num),
        np.c_[xy, xy + wh],
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_coco_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    dets = random_detections(rng)
    category_ids = [3, 1, 90, 7, 12]
    path = tmp_path / "results.json"
    results.write_coco_detections(path, dets, category_ids)
    entries = json.loads(path.read_text())
    assert len(entries) == len(dets)
    assert entries[0]["category_id"] == category_ids[dets.label[0]]
    back = results.read_coco_detections(path, category_ids)
    msg = f"seed {seed}"
    np.testing.assert_array_equal(back.frame_id, dets.frame_id, err_msg=msg)
    np.testing.assert_array_equal(back.label, dets.label, err_msg=msg)
    # Written with 4 and 2 decimals: half a unit of the last one, plus float rounding.
    np.testing.assert_allclose(back.score, dets.score, rtol=0, atol=0.5e-4 + 1e-12, err_msg=msg)
    np.testing.assert_allclose(back.boxes, dets.boxes, rtol=0, atol=0.5e-2 + 1e-9, err_msg=msg)
    # The same rows as the devkit text file gives, up to float rounding of x + w.
    text = tmp_path / "results.txt"
    results.write_detections(text, dets)
    devkit = results.read_any_detections(text, category_ids)
    np.testing.assert_array_equal(back.score, devkit.score, err_msg=msg)
    np.testing.assert_array_equal(back.boxes[:, :2], devkit.boxes[:, :2], err_msg=msg)
    np.testing.assert_allclose(back.boxes, devkit.boxes, rtol=1e-12, atol=1e-12, err_msg=msg)
    again = results.read_any_detections(path, category_ids)
    np.testing.assert_array_equal(again.boxes, back.boxes, err_msg=msg)


def test_coco_empty_and_default_categories(tmp_path):
    path = tmp_path / "empty.json"
    results.write_coco_detections(path, detections([]), [1])
    assert json.loads(path.read_text()) == []
    assert len(results.read_coco_detections(path, [1])) == 0
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"image_id": 4, "category_id": 30, "bbox": [1, 2, 3, 4],
                                 "score": 0.5}]))  # fmt: skip
    dets = results.read_any_detections(path)  # categories 1..30
    assert dets.label.tolist() == [29] and dets.boxes.tolist() == [[1, 2, 4, 6]]
    # Integral floats are integers (pycocotools takes them as such).
    path.write_text(json.dumps([{"image_id": 4.0, "category_id": 2.0, "bbox": [1, 2, 3, 4],
                                 "score": 1}]))  # fmt: skip
    dets = results.read_coco_detections(path, [2])
    assert dets.frame_id.tolist() == [4] and dets.label.tolist() == [0]


def test_coco_writer_refuses_what_the_reader_rejects(tmp_path):
    bad = detections([(1, 0, 0.5, (10, 0, 5, 5))])
    with pytest.raises(ValueError, match="x2 < x1"):
        results.write_coco_detections(tmp_path / "r.json", bad, [1])
    with pytest.raises(ValueError, match="labels must be in 0..0"):
        results.write_coco_detections(tmp_path / "r.json", detections([(1, 1, 0.5, BIG)]), [1])
    assert not (tmp_path / "r.json").exists()


GOOD = {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5}


@pytest.mark.parametrize(
    "bad, problem",
    [
        (dict(GOOD, category_id=9), "category_id 9 is not defined in the dataset's categories"),
        (dict(GOOD, bbox=[3, 4, -2, 5]), "bbox [3, 4, -2, 5] has a negative size"),
        ({k: v for k, v in GOOD.items() if k != "score"}, "missing key 'score'"),
        (dict(GOOD, image_id="a"), "image_id 'a' is not an integer"),
        (dict(GOOD, image_id=1.5), "image_id 1.5 is not an integer"),
        (dict(GOOD, image_id=True), "image_id True is not an integer"),
        (dict(GOOD, category_id=None), "category_id None is not an integer"),
        (dict(GOOD, bbox=[1, 2, 3]), "bbox [1, 2, 3] is not a list of 4 numbers"),
        (dict(GOOD, bbox="0 0 1 1"), "bbox '0 0 1 1' is not a list of 4 numbers"),
        (dict(GOOD, bbox=[0, 0, "1", 1]), "is not a list of 4 numbers"),
        (dict(GOOD, score="high"), "score 'high' is not a finite number"),
        (dict(GOOD, score=float("nan")), "score nan is not a finite number"),
        (dict(GOOD, bbox=[0, 0, float("inf"), 1]), "has a non-finite value"),
        ([1, 2, [0, 0, 1, 1], 0.5], "not a JSON object"),
    ],
)
def test_coco_errors_name_the_first_bad_entry(tmp_path, bad, problem):
    path = tmp_path / "results.json"
    # Two bad entries: the first (index 2) is reported.
    entries = [GOOD, GOOD, bad, GOOD, bad, GOOD]
    path.write_text(json.dumps(entries))  # NaN / Infinity as JSON's common extension
    with pytest.raises(results.DetectionsFormatError) as info:
        results.read_coco_detections(path, [1, 2, 3])
    err = info.value
    assert isinstance(err, UserError)
    assert err.file == f"{path}: [2]"
    assert problem in err.problem
    assert str(err).startswith(f"{path}: [2]: ")


def test_coco_errors_of_the_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"annotations": [GOOD]}))
    with pytest.raises(results.DetectionsFormatError, match="not a JSON list of detections") as e:
        results.read_coco_detections(path, [2])
    assert e.value.file == str(path)
    path.write_text('[\n{"image_id": 1,,}\n]')
    with pytest.raises(results.DetectionsFormatError, match="invalid JSON: .* line 2 column") as e:
        results.read_coco_detections(path, [2])
    assert e.value.file == str(path)
    with pytest.raises(results.DetectionsFormatError, match="not found"):
        results.read_coco_detections(tmp_path / "missing.json", [2])


def test_coco_long_category_list_is_shortened(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([dict(GOOD, category_id=999)]))
    with pytest.raises(results.DetectionsFormatError) as info:
        results.read_coco_detections(path, list(range(1, 81)))
    assert info.value.problem.endswith("(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... 80 in all)")
    with pytest.raises(results.DetectionsFormatError) as info:
        results.read_coco_detections(path, [1, 2, 3])
    assert str(info.value) == (
        f"{path}: [0]: category_id 999 is not defined in the dataset's categories (1, 2, 3)"
    )
