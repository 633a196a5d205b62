"""Track result files and `score_tracks` / `main.py --mode=score --tracks` end to end on the
real mini VID annotations (docs/TRACK_PROTOCOL.md): the ground-truth tracks as predictions
score 1 at every tau, a track cut in two halves the derived value; malformed files and tracks
fail in one line naming the file and line (or the XML file)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import classes, ilsvrc
from ssvd_jax.evaluation import report, score, track_results, tracks, vid_ap

ROOT = pathlib.Path(__file__).resolve().parents[1]
MINI = "ilsvrc2015_vid_mini"


def gt_as_tracks(gt, score_of_video=(0.9, 0.8)):
    """Every ground-truth box as a detection of its track (the XML track id), one score per
    video."""
    video = tracks.video_of_frames(gt)[gt.frame]
    return tracks.Tracks(
        vid_ap.Detections(gt.frame_ids[gt.frame], gt.label, np.asarray(score_of_video)[video],
                          gt.boxes),
        gt.track_id,
    )  # fmt: skip


def test_round_trip_and_format(tmp_path):
    preds = tracks.Tracks(
        vid_ap.Detections([3, 1], [0, 29], [0.123456, 1.0], [[0, 1, 2, 3], [4.555, 5, 6, 7]]),
        [12, 0],
    )
    path = tmp_path / "sub" / "tracks.txt"
    track_results.write_tracks(path, preds)
    # The devkit's columns: frame, class (1-based), track, score, box.
    assert path.read_text().splitlines() == [
        "3 1 12 0.1235 0.00 1.00 2.00 3.00",
        "1 30 0 1.0000 4.55 5.00 6.00 7.00",
    ]
    back = track_results.read_tracks(path)
    assert back.track_id.tolist() == [12, 0] and back.dets.label.tolist() == [0, 29]
    np.testing.assert_allclose(back.dets.score, [0.1235, 1.0])
    (tmp_path / "blank.txt").write_text("\n1 1 0 0.5 0 0 9 9\n\n")
    assert len(track_results.read_tracks(tmp_path / "blank.txt")) == 1
    (tmp_path / "empty.txt").write_text("")
    assert len(track_results.read_tracks(tmp_path / "empty.txt")) == 0


@pytest.mark.parametrize(
    "line, message",
    [
        ("1 1 0 0.5 0 0 9", "expected 8 fields"),
        ("1 1 0 oops 0 0 9 9", "not a number"),
        ("0 1 0 0.5 0 0 9 9", "frame_id 0"),
        ("1 31 0 0.5 0 0 9 9", "class_id 31 .*frame_id class_id track_id"),
        ("1 1 -1 0.5 0 0 9 9", "track_id -1"),
        ("1 1 2.5 0.5 0 0 9 9", "track_id 2.5"),
        ("1 1 0 nan 0 0 9 9", "non-finite"),
    ],
)
def test_malformed_line_is_named(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"1 1 0 0.5 0 0 9 9\n\n{line}\n")
    with pytest.raises(track_results.TracksFormatError, match=f"bad.txt:3: {message}"):
        track_results.read_tracks(path)
    assert issubclass(track_results.TracksFormatError, ValueError)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(track_results.TracksFormatError, match="nothing.txt: tracks file"):
        track_results.read_tracks(tmp_path / "nothing.txt")


def test_ground_truth_tracks_score_one_on_the_fixture(fixtures_dir, tmp_path):
    data_root = fixtures_dir / MINI
    gt = score.load_ground_truth(data_root, "train")
    # Both snippets use <trackid> 0: two tracks, one per video.
    assert gt.track_id.tolist() == [0] * 108
    path = tmp_path / "tracks.txt"
    track_results.write_tracks(path, gt_as_tracks(gt))
    out = tmp_path / "score_tracks.json"
    summary = score.score_tracks(path, data_root, "train", out_json=out)
    saved = json.loads(out.read_text())
    for s in (summary, saved):
        assert s["mAP_track"] == 1.0
        assert s["mAP_track@0.25"] == s["mAP_track@0.5"] == s["mAP_track@0.75"] == 1.0
        assert s["num_gt_tracks"]["lizard"] == 1 and s["num_gt_tracks"]["turtle"] == 1
    assert saved["AP_track"]["airplane"] is None and saved["AP_track"]["lizard"] == 1.0
    assert saved["track_counts"]["tracks"] == 2 and saved["track_counts"]["gt_tracks"] == 2
    assert saved["stability"]["fragment_error"] == 0.0 and saved["stability"]["num_tracks"] == 2
    text = report.track_report(summary)
    assert "mAP_track 100.0%" in text and "lizard" in text


def test_lizard_track_cut_into_halves_on_the_fixture(fixtures_dir, tmp_path):
    """The lizard track (60 frames, ids 1-60) predicted as two tracks, frames 1-30 (score 0.9)
    and 31-60 (score 0.85), exact boxes; the turtle track exact (score 0.8). Lizard: ov = 30/60
    = 0.5 for each half, so AP_track = 1 at tau 0.25 and 0.5 ([TP, FP]: all of the recall at
    precision 1) and 0 at 0.75; turtle 1 everywhere. mAP_track@0.75 = (0 + 1) / 2 = 1/2,
    mAP_track = (1 + 1 + 1/2) / 3 = 5/6."""
    data_root = fixtures_dir / MINI
    gt = score.load_ground_truth(data_root, "train")
    preds = gt_as_tracks(gt, (0.9, 0.8))
    second_half = (preds.dets.frame_id > 30) & (preds.dets.frame_id <= 60)
    d = preds.dets
    cut = tracks.Tracks(
        vid_ap.Detections(d.frame_id, d.label, np.where(second_half, 0.85, d.score), d.boxes),
        np.where(second_half, 7, preds.track_id),
    )
    path = tmp_path / "tracks.txt"
    track_results.write_tracks(path, cut)
    summary = score.score_tracks(path, data_root, "train")
    assert summary["AP_track@0.25"]["lizard"] == summary["AP_track@0.5"]["lizard"] == 1.0
    assert summary["AP_track@0.75"]["lizard"] == 0.0
    assert summary["mAP_track@0.75"] == 0.5
    assert summary["mAP_track"] == pytest.approx(5 / 6)


def test_inconsistent_track_names_the_line(fixtures_dir, tmp_path):
    path = tmp_path / "tracks.txt"
    lizard = classes.NAME_TO_LABEL["lizard"] + 1
    path.write_text(f"1 {lizard} 4 0.5 0 0 9 9\n\n2 {lizard} 4 0.5 0 0 9 9\n3 1 4 0.5 0 0 9 9\n")
    with pytest.raises(track_results.TracksFormatError, match="tracks.txt:4: track 4 has two"):
        score.score_tracks(path, fixtures_dir / MINI, "train")


XML = """<annotation><folder>{folder}</folder><filename>{stem}</filename>
<size><width>1000</width><height>500</height></size>{objects}</annotation>
"""
OBJ = """<object><trackid>{tid}</trackid><name>{wnid}</name><bndbox><xmax>{x2}</xmax>
<xmin>{x1}</xmin><ymax>{y2}</ymax><ymin>{y1}</ymin></bndbox><occluded>0</occluded>
<generated>0</generated></object>"""


def test_inconsistent_ground_truth_track_names_the_xml(tmp_path):
    # Track 3 is an airplane in frame 0 and a bear in frame 1.
    folder = tmp_path / "Annotations" / "VID" / "val" / "v0"
    folder.mkdir(parents=True)
    for t, label in enumerate(["airplane", "bear"]):
        obj = OBJ.format(tid=3, wnid=classes.WNIDS[classes.NAME_TO_LABEL[label]], x1=0, y1=0,
                         x2=9, y2=9)  # fmt: skip
        (folder / f"{t:06d}.xml").write_text(XML.format(folder="v0", stem=t, objects=obj))
    path = tmp_path / "tracks.txt"
    path.write_text("1 1 0 0.5 0 0 9 9\n")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="v0/000001.xml: ground-truth track 3"):
        score.score_tracks(path, tmp_path, "val")


def _main(tmp_path, *args):
    cmd = [sys.executable, str(ROOT / "main.py"), "--mode=score", "--split=train",
           f"--workdir={tmp_path / 'out'}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_score_mode_with_tracks(fixtures_dir, tmp_path):
    data_root = fixtures_dir / MINI
    gt = score.load_ground_truth(data_root, "train")
    path = tmp_path / "tracks.txt"
    track_results.write_tracks(path, gt_as_tracks(gt))
    done = _main(tmp_path, f"--tracks={path}", f"--config.data.root={data_root}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mAP_track 100.0%" in done.stdout
    saved = json.loads((tmp_path / "out" / "score_tracks.json").read_text())
    assert saved["mAP_track"] == 1.0 and saved["mAP_track@0.5"] == 1.0
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 0 0.5 0 0 9 9\n1 1 x 0.5 0 0 9 9\n")
    done = _main(tmp_path, f"--tracks={bad}", f"--config.data.root={data_root}")
    assert done.returncode != 0
    assert "bad.txt:2" in done.stderr and "Traceback" not in done.stderr
    done = _main(tmp_path, f"--config.data.root={data_root}")
    assert done.returncode != 0 and "--detections=FILE or --tracks=FILE" in done.stderr
