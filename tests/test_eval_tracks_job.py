"""Tracks wired into the jobs, without compiling a model: an engine stand-in that 'detects' the
mini fixture's annotated boxes drives the evaluation (`--mode=eval` with `eval.link` on: track
file, mAP_track in the summary, the table and the main job's printout) and the tracked demo
(boxes coloured and labelled by track id)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from configs import tiny
from input_pipeline import ilsvrc
from ssvd_jax import jobs, visualize
from ssvd_jax.errors import ConfigError
from ssvd_jax.evaluation import detect, report, score, track_results
from ssvd_jax.ops.postprocess import Detections

MINI = "ilsvrc2015_vid_mini"
ROWS = 4  # detection rows per frame, the unused ones padding


def padded(boxes, labels, scores) -> Detections:
    n = len(boxes)
    out = Detections(
        boxes=np.zeros((ROWS, 4), np.float32), scores=np.zeros(ROWS, np.float32),
        labels=np.zeros(ROWS, np.int32), valid=np.arange(ROWS) < n,
        stream=np.zeros(ROWS, np.int32), level=np.zeros(ROWS, np.int32),
        anchor=np.zeros(ROWS, np.int32),
    )  # fmt: skip
    out.boxes[:n], out.scores[:n], out.labels[:n] = boxes, scores, labels
    return out


class AnnotationEngine:
    """Stands in for `inference.OnlineEngine`: consumes each video's frames and returns its
    annotated boxes (from the XMLs) as detections, plus a box of another class that jumps
    around (never linked)."""

    image_size = 32
    num_videos = 1
    schedule = "release"

    def __init__(self, root, split):
        self.videos = []
        for video, _ in score.evaluation_videos(root, split):
            frames = []
            for t, ann in enumerate(ilsvrc.read_video_annotations(root, video)):
                objs = ann.objects if ann is not None else ()
                boxes = [o.box for o in objs] + [(100 * (t % 5), 600, 100 * (t % 5) + 39, 639)]
                labels = [o.label for o in objs] + [0]
                scores = [0.9 - 0.001 * t] * len(objs) + [0.2]
                frames.append(padded(boxes, labels, scores))
            self.videos.append(frames)

    def run_streams(self, videos):
        for v in videos:
            for t, _ in enumerate(v.frames):
                yield v.key, t, {"fused": self.videos[v.key][t]}


LINK = dict(method="viterbi", iou_weight=1.0, min_iou=0.3, max_gap=0, rescore="none")


def test_evaluation_with_linking_writes_and_scores_tracks(fixtures_dir, tmp_path):
    root = fixtures_dir / MINI
    summary = detect.evaluate_engine(
        AnnotationEngine(root, "train"), root, "train", tmp_path, pixel_mean_bgr=(0, 0, 0),
        frame_list=None, seq_nms=False, max_videos=None, link=LINK,
    )  # fmt: skip
    # The airplane class has no ground truth: its jumping boxes leave both mAPs at 1.
    assert summary["mAP"] == 1.0 and summary["mAP_track"] == 1.0
    assert summary["mAP_track@0.25"] == summary["mAP_track@0.75"] == 1.0
    tracks = track_results.read_tracks(tmp_path / "tracks_VID_train.txt")
    lizard = tracks.dets.label == 16
    assert len(np.unique(tracks.track_id[lizard])) == 1  # one id over the 60 frames
    assert len(np.unique(tracks.track_id[tracks.dets.label == 0])) == 108  # never linked
    assert summary["tracks"]["stability"]["num_tracks"] == 2
    assert summary["tracks"]["link"] == LINK
    # Linking off: no tracks.
    off = detect.evaluate_engine(
        AnnotationEngine(root, "train"), root, "train", tmp_path / "off",
        pixel_mean_bgr=(0, 0, 0), frame_list=None, seq_nms=False, max_videos=None,
    )  # fmt: skip
    assert "mAP_track" not in off and not (tmp_path / "off" / "tracks_VID_train.txt").exists()


@pytest.fixture
def fake_checkpoint(monkeypatch, fixtures_dir):
    """`detect.evaluate_checkpoint` with the engine stand-in instead of a restored model."""
    root = fixtures_dir / MINI
    model = types.SimpleNamespace(variant="two_stream")
    monkeypatch.setattr(
        detect,
        "restore_model",
        lambda folder, config: (model, None, {"checkpoint": folder, "step": 3}),
    )
    monkeypatch.setattr(detect.inference, "create_engine",
                        lambda *args, **kwargs: AnnotationEngine(root, "train"))  # fmt: skip
    config = tiny.get_config()
    config.data.root = str(root)
    config.eval.split = "train"
    return config


def test_eval_job_prints_and_stores_mAP_track(fake_checkpoint, tmp_path):
    config = fake_checkpoint
    folder = tmp_path / "release" / "checkpoints"
    result = jobs.evaluate(config, str(tmp_path / "work"), str(folder))
    assert "| mAP_track |" in result.text and "mAP_track 100.0%" in result.text
    assert result.data["mAP_track"] == 1.0
    assert result.data["settings"]["link"] == LINK  # part of what a reuse compares
    assert (tmp_path / "work" / "eval" / "release" / "tracks_VID_train.txt").is_file()
    # The main job's summary lines carry mAP_track beside mAP.
    entry = dict(jobs.headline_metrics(result.data), variant="two_stream")
    text = jobs.format_summary({"phases": {}, "eval": {"phase2": entry}})
    assert "phase2 two_stream mAP" in text and "mAP_track 100.0% (tau 0.25 100.0" in text
    # With linking off the job runs as before.
    config.eval.link.method = ""
    plain = jobs.evaluate(config, str(tmp_path / "plain"), str(folder))
    assert "mAP_track" not in plain.text and "mAP_track" not in plain.data


def test_bad_link_settings_fail_before_restoring(fake_checkpoint, tmp_path, monkeypatch):
    config = fake_checkpoint
    config.eval.link.rescore = "median"

    def restore(*args):
        raise AssertionError("restored before the settings were checked")

    monkeypatch.setattr(detect, "restore_model", restore)
    # Checked with the config, before any work: one line naming the key and its choices.
    with pytest.raises(ConfigError, match=r"eval\.link\.rescore='median': one of") as caught:
        jobs.evaluate(config, str(tmp_path / "work"), str(tmp_path / "ckpt"))
    assert caught.value.line().startswith("error: config: eval.link.rescore='median'")


def test_comparison_table_has_a_mAP_track_column_only_with_tracks():
    row = {"mAP": 0.5, "mAP_slow": 0.5, "mAP_medium": 0.5, "mAP_fast": 0.5,
           "frames_per_second": 2.0}  # fmt: skip
    assert "mAP_track" not in report.comparison_table({"a": row})
    table = report.comparison_table({"a": dict(row, mAP_track=0.25), "b": row})
    assert table.splitlines()[2] == "| a | 50.0 | 50.0 | 50.0 | 50.0 | 25.0 | 2.0 |"
    assert table.splitlines()[3] == "| b | 50.0 | 50.0 | 50.0 | 50.0 | - | 2.0 |"


class MovingBoxEngine:
    """Detects one box moving 4 px a frame (class 2) and a still one (class 5) in any video."""

    image_size = 32

    def run(self, videos):
        for v in videos:
            for t, _ in enumerate(v.frames):
                boxes = [(4 * t + 2, 10, 4 * t + 31, 39), (60, 40, 89, 69)]
                yield v.key, t, padded(boxes, [2, 5], [0.9, 0.6])


def test_tracked_demo_colours_and_labels_boxes_by_track(tmp_path):
    import cv2

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for t in range(6):
        cv2.imwrite(str(frames_dir / f"{t:03d}.png"), np.full((80, 96, 3), 255, np.uint8))
    out = tmp_path / "demo.mp4"
    stats = visualize.run_demo(
        MovingBoxEngine(), str(frames_dir), str(out), pixel_mean_bgr=(0, 0, 0),
        class_names=tuple(f"c{i}" for i in range(30)), min_score=0.0, link=LINK,
    )  # fmt: skip
    assert stats["frames"] == 6
    frames, count, size, _ = visualize.open_video(str(out))
    assert count == 6 and size == (96, 80) and len(list(frames)) == 6
    # The linking behind it: one id per object over the six frames.
    per_frame = [padded([(4 * t + 2, 10, 4 * t + 31, 39), (60, 40, 89, 69)], [2, 5], [0.9, 0.6])
                 for t in range(6)]  # fmt: skip
    dets, ids = visualize.link_video_detections(per_frame, LINK)
    assert {int(i[0]) for i in ids} == {0} and {int(i[1]) for i in ids} == {1}
    assert all(i[2:].tolist() == [-1, -1] for i in ids)
    # Drawn in the track's colour (not the class's), the id in the label.
    white = np.full((80, 96, 3), 255, np.uint8)
    drawn = visualize.draw_detections(white, dets[0], tuple(f"c{i}" for i in range(30)), 0.0,
                                      ids[0])  # fmt: skip
    assert drawn[39, 2].tolist() == visualize.track_colour(0)  # the box's bottom-left corner
    assert drawn[69, 60].tolist() == visualize.track_colour(1)
    assert visualize.track_colour(0) != visualize.track_colour(1)
