"""`score_detections` end to end: the real annotations of the mini fixture, and a small written
annotation folder whose tracks move by known amounts (motion buckets end to end)."""

from __future__ import annotations

import collections
import json
import shutil

import numpy as np
import pytest

from input_pipeline import classes, ilsvrc
from ssvd_jax.evaluation import report, results, score, vid_ap

MINI = "ilsvrc2015_vid_mini"
LIZARD, TURTLE = classes.NAME_TO_LABEL["lizard"], classes.NAME_TO_LABEL["turtle"]


def fixture_objects(root):
    """[(global frame id, object)] in the sorted folder order: lizard video (ids 1..60), then
    turtle (61..108); one object per frame."""
    out, next_id = [], 1
    for video in ilsvrc.list_vid_videos(root, "train"):
        for ann in ilsvrc.read_video_annotations(root, video):
            out.extend((next_id, o) for o in ann.objects)
            next_id += 1
    return out


def write(path, rows):
    """rows = [(frame_id, label, score, box)]; 6 score decimals keep them distinct."""
    fid, lab, sc, box = zip(*rows, strict=True)
    dets = vid_ap.Detections(fid, lab, sc, np.asarray(box, np.float64))
    results.write_detections(path, dets, score_decimals=6)


def _iou_plus1(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_ground_truth_of_the_fixture(fixtures_dir):
    counts = collections.Counter()
    gt = score.load_ground_truth(fixtures_dir / MINI, "train", counts=counts)
    assert gt.frame_ids.tolist() == list(range(1, 109))
    assert gt.video_starts.tolist() == [0, 60]
    # Generated (interpolated) boxes are ground truth like the others (VID_PROTOCOL §1).
    assert counts["gt_boxes"] == 108 and counts["gt_generated"] == 34
    assert gt.npos()[LIZARD] == 60 and gt.npos()[TURTLE] == 48
    # Motion IoU of the first box: its mean IoU with the track's boxes in frames 1..10 (one
    # object per frame here); it moves little, so it is slow (> 0.9).
    boxes = [o.box for _, o in fixture_objects(fixtures_dir / MINI)[:11]]
    expected = np.mean([_iou_plus1(boxes[0], b) for b in boxes[1:]])
    assert gt.motion_iou[0] == pytest.approx(expected, abs=1e-12) and expected > 0.9


def test_exact_detections_score_one(fixtures_dir, tmp_path, rng):
    objs = fixture_objects(fixtures_dir / MINI)
    scores = rng.permutation(len(objs)) / len(objs) + 0.001
    det = tmp_path / "det.txt"
    write(det, [(f, o.label, s, o.box) for (f, o), s in zip(objs, scores, strict=True)])
    out = tmp_path / "summary.json"
    summary = score.score_detections(det, fixtures_dir / MINI, split="train", out_json=out)
    assert summary["mAP"] == 1.0
    assert summary["AP"]["lizard"] == 1.0 and summary["AP"]["turtle"] == 1.0
    # Every fixture box is slow (motion IoU > 0.9): medium and fast have no ground truth.
    assert summary["mAP_slow"] == 1.0
    assert np.isnan(summary["mAP_medium"]) and np.isnan(summary["mAP_fast"])
    saved = json.loads(out.read_text())
    assert {"mAP", "AP", "mAP_slow", "mAP_medium", "mAP_fast", "counts"} <= set(saved)
    assert saved["mAP"] == 1.0 and saved["mAP_fast"] is None
    assert saved["AP"]["airplane"] is None and len(saved["AP"]) == 30
    assert saved["counts"]["gt_boxes"] == 108 and saved["counts"]["detections_scored"] == 108
    table = report.score_report(summary)
    assert "lizard" in table and "turtle" in table and "domestic_cat" in table


def test_shifted_detections_give_the_derived_ap(fixtures_dir, tmp_path):
    objs = fixture_objects(fixtures_dir / MINI)
    rows = []
    for k, (fid, o) in enumerate(objs):
        w = o.x2 - o.x1 + 1
        # Lizard: every box shifted right by w // 4: IoU (w - dx) / (w + dx) ~ 0.6 >= 0.5, TP.
        # Turtle: odd frames shifted by w // 2 + 1: IoU < 1/3, a FP and a missed object.
        if o.label == LIZARD:
            dx = w // 4
        else:
            dx = (w // 2 + 1) if (fid - 61) % 2 else 0
        rows.append((fid, o.label, 0.9 - 0.001 * k, (o.x1 + dx, o.y1, o.x2 + dx, o.y2)))
    det = tmp_path / "det.txt"
    write(det, rows)
    summary = score.score_detections(det, fixtures_dir / MINI, split="train")
    assert summary["AP"]["lizard"] == 1.0
    # Turtle, by score: TP, FP, TP, FP, ... over 48 objects. After the k-th TP precision is
    # k / (2k - 1), which decreases, so the envelope keeps it: AP = 1/48 * sum k / (2k - 1).
    expected = sum(k / (2 * k - 1) for k in range(1, 25)) / 48
    assert summary["AP"]["turtle"] == pytest.approx(expected, abs=1e-12)
    assert summary["mAP"] == pytest.approx((1.0 + expected) / 2, abs=1e-12)
    assert summary["mAP_slow"] == pytest.approx(summary["mAP"], abs=1e-12)  # all boxes slow


def test_generated_boxes_are_ground_truth(fixtures_dir, tmp_path):
    # Detect only the hand-annotated boxes: recall stops at (n - generated) / n at precision 1.
    objs = fixture_objects(fixtures_dir / MINI)
    rows = [
        (f, o.label, 0.9 - 0.001 * k, o.box) for k, (f, o) in enumerate(objs) if not o.generated
    ]
    det = tmp_path / "det.txt"
    write(det, rows)
    summary = score.score_detections(det, fixtures_dir / MINI, split="train")
    for name, label in (("lizard", LIZARD), ("turtle", TURTLE)):
        n = sum(o.label == label for _, o in objs)
        gen = sum(o.label == label and o.generated for _, o in objs)
        assert summary["AP"][name] == pytest.approx((n - gen) / n, abs=1e-12)
    # All 34 generated boxes are lizard ones: AP 26/60 there, turtle untouched.
    assert summary["AP"]["lizard"] == pytest.approx(26 / 60, abs=1e-12)
    assert summary["AP"]["turtle"] == 1.0


def test_frame_list_and_annotation_only_folder(fixtures_dir, tmp_path):
    # An annotation-only copy (no Data/), scored through an explicit frame list holding the
    # turtle video only, with the devkit's split-less paths and ids 1..48.
    root = tmp_path / "ILSVRC"
    shutil.copytree(fixtures_dir / MINI / "Annotations", root / "Annotations")
    video = "ILSVRC2015_VID_train_0000/ILSVRC2015_train_00001000"
    lst = tmp_path / "frames.txt"
    lst.write_text("".join(f"{video}/{t:06d} {t + 1}\n" for t in range(48)))
    objs = fixture_objects(fixtures_dir / MINI)
    rows = [(f - 60, o.label, 0.5 + 0.001 * f, o.box) for f, o in objs if o.label == TURTLE]
    rows.append((49, TURTLE, 0.99, (0, 0, 9, 9)))  # not a listed frame: dropped
    det = tmp_path / "det.txt"
    write(det, rows)
    summary = score.score_detections(det, root, split="train", frame_list=lst)
    assert summary["AP"]["turtle"] == 1.0 and np.isnan(summary["AP"]["lizard"])
    assert summary["counts"]["frames"] == 48 and summary["counts"]["detections_off_list"] == 1
    # The same frames in VID_val_videos format: `<snippet> <first id> <start> <num>`.
    lst.write_text(f"train/{video} 1 0 48\n")
    again = score.score_detections(det, root, split="train", frame_list=lst)
    assert again["AP"]["turtle"] == 1.0 and again["counts"]["frames"] == 48
    # Without a list, the annotation folders in sorted order: the lizard video comes first.
    gt = score.load_ground_truth(root, "train")
    assert gt.num_frames == 108 and gt.label[0] == LIZARD


# ----------------------------------------------------------------------------------------------
# A written annotation folder: one video, two frames, three objects moving by known amounts.


XML = """<annotation><folder>{folder}</folder><filename>{stem}</filename>
<source><database>ILSVRC_2015</database></source><size><width>1000</width><height>500</height></size>
{objects}</annotation>
"""
OBJ = """<object><trackid>{tid}</trackid><name>{wnid}</name>
<bndbox><xmax>{x2}</xmax><xmin>{x1}</xmin><ymax>{y2}</ymax><ymin>{y1}</ymin></bndbox><occluded>0</occluded><generated>0</generated></object>
"""


def write_video(root, video, frames):
    folder = root / "Annotations" / "VID" / video
    folder.mkdir(parents=True)
    for t, objs in enumerate(frames):
        body = "".join(
            OBJ.format(tid=tid, wnid=classes.WNIDS[lab], x1=b[0], y1=b[1], x2=b[2], y2=b[3])
            for tid, lab, b in objs
        )
        (folder / f"{t:06d}.xml").write_text(
            XML.format(folder=video, stem=f"{t:06d}", objects=body)
        )


AIRPLANE, BEAR, ZEBRA = (classes.NAME_TO_LABEL[n] for n in ("airplane", "bear", "zebra"))


def test_speed_buckets_end_to_end(tmp_path):
    # Two frames, so each box's motion IoU is its IoU with the other frame's box:
    # airplane static -> 1.0 (slow); bear 100 px wide moving 10 px -> 90/110 = 0.818 (medium);
    # zebra 100 px wide moving 30 px -> 70/130 = 0.538 (fast).
    frames = [
        [
            (0, AIRPLANE, (0, 0, 99, 99)),
            (1, BEAR, (300, 0, 399, 99)),
            (2, ZEBRA, (600, 0, 699, 99)),
        ],
        [
            (0, AIRPLANE, (0, 0, 99, 99)),
            (1, BEAR, (310, 0, 409, 99)),
            (2, ZEBRA, (630, 0, 729, 99)),
        ],
    ]
    write_video(tmp_path, "val/ILSVRC2015_val_00000000", frames)
    gt = score.load_ground_truth(tmp_path, "val")
    np.testing.assert_allclose(gt.motion_iou, [1.0, 90 / 110, 70 / 130] * 2, atol=1e-15)
    rows = [
        (t + 1, lab, 0.9 - 0.1 * t - 0.01 * lab, b) for t, f in enumerate(frames) for _, lab, b in f
    ]
    # A bear-class FP above both bears, on the airplane (IoU 50/150 with it, nothing else):
    # plain AP of bear 2/3 (FP, TP, TP); in the medium bucket it overlaps only out-of-bucket
    # ground truth, so it counts 0 there and bear's medium AP stays 1.
    rows.append((1, BEAR, 0.99, (0, 50, 99, 149)))
    det = tmp_path / "det.txt"
    write(det, rows)
    s = score.score_detections(det, tmp_path, split="val")
    assert s["AP"]["airplane"] == 1.0 and s["AP"]["zebra"] == 1.0
    assert s["AP"]["bear"] == pytest.approx(2 / 3, abs=1e-12)
    assert s["AP_slow"]["airplane"] == 1.0 and np.isnan(s["AP_slow"]["bear"])
    assert s["AP_medium"]["bear"] == 1.0 and s["AP_fast"]["zebra"] == 1.0
    assert s["mAP_slow"] == s["mAP_medium"] == s["mAP_fast"] == 1.0
    assert s["num_gt_medium"]["bear"] == 2 and s["num_gt_medium"]["airplane"] == 0


def test_unknown_class_is_named(tmp_path):
    write_video(tmp_path, "val/v0", [[(0, 0, (0, 0, 9, 9))]])
    path = tmp_path / "Annotations/VID/val/v0/000000.xml"
    path.write_text(path.read_text().replace(classes.WNIDS[0], "n00000001"))
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="000000.xml.*n00000001"):
        score.load_ground_truth(tmp_path, "val")


def test_official_lists_define_order_without_images(tmp_path):
    # Annotations only, plus ImageSets/VID_val_frames.txt listing video 1 before video 0.
    box = (0, 0, 99, 99)
    write_video(tmp_path, "val/v0", [[(0, AIRPLANE, box)]] * 2)
    write_video(tmp_path, "val/v1", [[(0, ZEBRA, box)]] * 3)
    (tmp_path / "ImageSets").mkdir()
    lst = tmp_path / "ImageSets" / "VID_val_frames.txt"
    lst.write_text("val/v1/000000 1\nval/v1/000001 2\nval/v1/000002 3\nv0/000000 4\nv0/000001 5\n")
    gt = score.load_ground_truth(tmp_path, "val")
    assert gt.frame_ids.tolist() == [1, 2, 3, 4, 5] and gt.video_starts.tolist() == [0, 3]
    assert gt.label.tolist() == [ZEBRA] * 3 + [AIRPLANE] * 2
    # The list can also be named relative to ImageSets/.
    assert score.load_ground_truth(tmp_path, "val", "VID_val_frames.txt").num_frames == 5
    lst.write_text("val/v1/000000 1\nval/v1/000001 1\n")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="VID_val_frames.txt: frame id 1 listed"):
        score.load_ground_truth(tmp_path, "val")


def test_seq_nms_option_keeps_perfect_tracks_perfect(fixtures_dir, tmp_path):
    # One box per frame and class, linked frame to frame: Seq-NMS rescores each video's track
    # to its average score, and every detection stays a TP.
    objs = fixture_objects(fixtures_dir / MINI)
    det = tmp_path / "det.txt"
    write(det, [(f, o.label, 0.3 + 0.005 * k, o.box) for k, (f, o) in enumerate(objs)])
    summary = score.score_detections(det, fixtures_dir / MINI, split="train", seq_nms=True)
    assert summary["mAP"] == 1.0 and summary["seq_nms"] is True
    assert summary["counts"]["detections"] == 108
