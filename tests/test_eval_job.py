"""The evaluation job end to end on the tiny config and a tiny generated dataset.

- A training run evaluates both phases (the phase-1 single-frame baseline and phase-2 SSVD) on
  the val split with the online engine, writes devkit detections, JSON summaries and the
  side-by-side table, and draws the first val video into demo.mp4 (as many frames as the video).
- The written detections are exactly what `--mode=score` computes from that file.
- The eval job on the finished workdir reuses the identical evaluations instead of detecting
  again; with a checkpoint it evaluates one folder; the demo job draws an mp4 made here, frame
  count kept; `main.py` turns a missing input into one line naming the file.
- Checkpoints that hold no detector, or another model's variables, fail naming the folder.
- A sweep whose points differ only in `eval.*` trains once and evaluates every point.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import tiny
from input_pipeline.preprocess import read_frame
from ssvd_jax import jobs, sweep, visualize
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import CheckpointKindError, restore_model
from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import results, score

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 64


# The end-to-end job tests train a tiny two-phase model (~1.5 min of compiles): the full suite
# runs them; the quick tier (-m "not slow") relies on test_inference's engine, evaluation and
# demo checks.
pytestmark = pytest.mark.slow


def _config(data_dir):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.data.root = str(data_dir / "ILSVRC2015")
    config.data.synthetic.create_root = True  # generated there on first use
    config.data.tfds_dir = str(data_dir / "tfds")
    for phase in ("phase1", "phase2"):
        config.schedule[phase].steps = 2
    config.eval.demo = True
    config.eval.demo_min_score = 0.0
    # Two training steps leave every score near the heads' prior (0.01): keep them.
    config.postprocess.score_threshold = 0.005
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("eval_data")
    workdir = tmp_path_factory.mktemp("eval_run")
    config = _config(data_dir)
    summary = jobs.train_and_evaluate(config, str(workdir)).data
    return config, workdir, summary


def _main(*args, timeout=600):
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config=configs/tiny.py", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done


def _config_flags(config, workdir):
    return [
        f"--workdir={workdir}", f"--config.data.image_size={SIZE}",
        f"--config.data.root={config.data.root}", f"--config.data.tfds_dir={config.data.tfds_dir}",
        f"--config.postprocess.score_threshold={config.postprocess.score_threshold}",
    ]  # fmt: skip


def test_training_run_evaluates_both_phases_and_draws_a_demo(trained):
    config, workdir, summary = trained
    assert set(summary["eval"]) == {"phase1", "phase2"}
    assert summary["eval"]["phase1"]["variant"] == "single_frame"
    assert summary["eval"]["phase2"]["variant"] == "two_stream"
    for phase in ("phase1", "phase2"):
        e = summary["eval"][phase]
        assert e["frames_per_second"] > 0
        out = workdir_lib.eval_dir(str(workdir), phase)
        stored = json.loads(pathlib.Path(out, "summary_VID_val.json").read_text())
        np.testing.assert_equal(e["mAP"], stored["mAP"])
        assert stored["settings"]["step"] == 2 and stored["settings"]["split"] == "val"
        # The stored detections score to the stored summary (no model involved).
        rescored = score.score_detections(
            os.path.join(out, "det_VID_val.txt"), config.data.root, "val"
        )
        for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast"):
            # JSON stores NaN (a bucket without ground truth) as null.
            np.testing.assert_equal(rescored[key], np.nan if stored[key] is None else stored[key])
        dets = results.read_detections(os.path.join(out, "det_VID_val.txt"))
        frames = score.evaluation_videos(config.data.root, "val")[0][0].num_frames
        assert len(dets) > 0 and set(dets.frame_id.tolist()) <= set(range(1, frames + 1))
    table = (workdir / "eval" / "results_val.md").read_text()
    assert "single-frame baseline (phase1)" in table and "SSVD two_stream (phase2)" in table
    # Both phases side by side in one video, each with its coverage count.
    demo = summary["demo"]
    assert demo["output"] == str(workdir / "demo.mp4")
    assert (demo["phase1"]["step"], demo["phase2"]["step"]) == (2, 2)
    _, count, (width, _), _ = visualize.open_video(demo["output"])
    video = score.evaluation_videos(config.data.root, "val")[0][0]
    assert count == demo["frames"] == video.num_frames
    assert width > 2 * config.data.synthetic.size  # two panels
    for phase in ("phase1", "phase2"):
        assert 0 <= demo[phase]["frames_covered"] <= demo[phase]["frames_annotated"] <= count
    # Per-stream scores and the frame-quality comparison (the generator's manifest).
    assert set(summary["ssvd"]["streams"]) == {"motion", "sample"}
    for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast", "mAP_clean", "mAP_deteriorated"):
        assert key in summary["single_frame"] and key in summary["ssvd"], key
    assert {"low", "high", "value"} <= set(summary["ssvd"]["difference"]["mAP_deteriorated"])
    assert (workdir / "eval" / "comparison_val.json").is_file()
    assert [pathlib.Path(p).name for p in summary["pictures"]] == [
        "map_by_speed_and_quality.png", "fig5_sampling_and_flow.png"]  # fmt: skip


def test_demo_draws_the_evaluated_detections(trained):
    """The side-by-side demo draws each phase's detections from its evaluation's files (the
    models are not run again; the tracks file, as linking is on, for the track ids): per frame
    of the first val video, the rows equal what the phase's engine detects on that video (file
    precision: 4-decimal scores, 2-decimal boxes)."""
    from ssvd_jax import inference
    from ssvd_jax.evaluation import detect

    config, workdir, _ = trained
    root = config.data.root
    video, ids = score.evaluation_videos(root, "val")[0]
    paths = [video.image_path(root, t) for t in range(video.num_frames)]
    width, height = read_frame(paths[0]).shape[1::-1]
    for phase in ("phase1", "phase2"):
        out = workdir_lib.eval_dir(str(workdir), phase)
        stored = json.loads(pathlib.Path(out, "summary_VID_val.json").read_text())
        drawn, track_ids = jobs._frame_detections(stored, ids)  # linked: from the tracks file
        assert [len(i) for i in track_ids] == [len(d.scores) for d in drawn]
        model, variables, _ = restore_model(workdir_lib.checkpoint_dir(str(workdir), phase), config)
        engine = inference.create_engine(config, model, variables, num_videos=1)
        frames = detect.video_frames(paths, engine.image_size, config.data.pixel_mean_bgr)
        for _, t, dets in engine.run([inference.Video(frames, len(paths), (width, height))]):
            keep = np.asarray(dets.valid)
            want = _rows(np.asarray(dets.labels)[keep], np.asarray(dets.scores)[keep],
                         np.asarray(dets.boxes)[keep])  # fmt: skip
            got = _rows(drawn[t].labels, drawn[t].scores, drawn[t].boxes)
            # One unit of the file's last decimal: a value ending in 5 may round either way.
            np.testing.assert_array_equal(got[:, 0], want[:, 0])
            np.testing.assert_allclose(got[:, 1], want[:, 1], atol=1.01e-4, rtol=0)
            np.testing.assert_allclose(got[:, 2:], want[:, 2:], atol=1.01e-2, rtol=0,
                                       err_msg=f"{phase} frame {t}")  # fmt: skip


def _rows(labels, scores, boxes):
    """[label, score, x1, y1, x2, y2] rows at the file's precision, in a canonical order."""
    rows = np.concatenate(
        [labels[:, None], np.round(scores, 4)[:, None], np.round(boxes, 2)], axis=1
    ).astype(np.float64)
    return rows[np.lexsort(rows.T[::-1])]


def test_eval_job_reuses_identical_evaluations(trained):
    config, workdir, _ = trained
    det = pathlib.Path(workdir_lib.eval_dir(str(workdir), "phase2"), "det_VID_val.txt")
    before = det.stat().st_mtime_ns
    result = jobs.evaluate(config, str(workdir))
    assert "SSVD two_stream (phase2)" in result.text
    assert det.stat().st_mtime_ns == before, "an identical evaluation ran again"


def test_eval_job_on_one_checkpoint_folder(trained, tmp_path):
    config, workdir, _ = trained
    folder = workdir_lib.checkpoint_dir(str(workdir), "phase1")
    one = config.copy_and_resolve_references()
    one.eval.max_videos = 1
    result = jobs.evaluate(one, str(tmp_path / "one"), folder)
    stored = json.loads((tmp_path / "one" / "eval" / "phase1" / "summary_VID_val.json").read_text())
    assert stored["settings"]["variant"] == "single_frame"
    assert stored["settings"]["max_videos"] == 1
    assert "single-frame baseline (phase1)" in result.text


def test_eval_job_on_another_runs_workdir_with_a_larger_val_split(trained, tmp_path):
    """`--checkpoint=<a run's workdir>`: both of its phases, compared, on this workdir's data
    (generated here, with 3 val videos where the run had 1); the run's own results untouched."""
    config, workdir, _ = trained
    own = pathlib.Path(workdir) / "eval"
    before = {p: p.stat().st_mtime_ns for p in own.rglob("*") if p.is_file()}
    larger = config.copy_and_resolve_references()
    larger.data.root = ""  # the generated default inside the new workdir
    larger.data.tfds_dir = ""
    larger.data.synthetic.val_videos = 3
    out = tmp_path / "val3"
    result = jobs.evaluate(larger, str(out), str(workdir))
    assert "single-frame baseline (phase1)" in result.text
    assert "SSVD two_stream (phase2)" in result.text
    assert (out / "data" / "ILSVRC2015" / "synthetic_manifest.json").is_file()
    comparison = json.loads((out / "eval" / "comparison_val.json").read_text())
    assert comparison["videos"] == 3
    assert set(comparison["models"]) >= {"phase1", "phase2"}
    for phase in ("phase1", "phase2"):
        stored = json.loads((out / "eval" / phase / "summary_VID_val.json").read_text())
        assert stored["settings"]["step"] == 2
    assert {p: p.stat().st_mtime_ns for p in own.rglob("*") if p.is_file()} == before


def test_demo_job_on_an_mp4(trained, tmp_path, rng):
    import imageio_ffmpeg

    config, workdir, _ = trained
    src = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(src), (80, 48), fps=8, macro_block_size=1)
    writer.send(None)
    for _ in range(7):
        writer.send(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    writer.close()
    out = tmp_path / "drawn.mp4"
    result = jobs.demo(config, str(workdir), str(src), str(out))
    assert "frames/s" in result.text and result.data["frames"] == 7
    _, count, size, _ = visualize.open_video(str(out))
    assert count == 7 and size == (80, 48)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask()), "demo video not readable"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_main_reports_a_missing_input_in_one_line(trained, tmp_path):
    config, workdir, _ = trained
    missing = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config=configs/tiny.py", "--mode=demo",
         f"--input={tmp_path / 'none.mp4'}", f"--output={tmp_path / 'out.mp4'}",
         f"--workdir={workdir}", f"--config.data.image_size={SIZE}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "none.mp4: " in last, missing.stderr[-2000:]
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr


def test_checkpoints_without_this_detector_fail_naming_the_folder(trained, tmp_path):
    config, workdir, _ = trained
    other = config.copy_and_resolve_references()
    other.model.fpn_channels = 16
    folder = workdir_lib.checkpoint_dir(str(workdir), "phase2")
    with pytest.raises(ValueError, match=f"{folder}.*shape"):
        restore_model(folder, other)
    with pytest.raises(UserError, match="nowhere: no such checkpoint folder"):
        restore_model(str(tmp_path / "nowhere"), config)
    from ssvd_jax.checkpoint import Checkpointer

    pwc = Checkpointer(str(tmp_path / "pwc"), async_save=False)
    pwc.save(0, {"params": {"w": np.ones(2, np.float32)}}, {"kind": "pwcnet"}, force=True)
    pwc.close()
    with pytest.raises(CheckpointKindError, match="pwcnet"):
        restore_model(str(tmp_path / "pwc"), config)


def test_eval_only_sweep_points_share_one_training(trained, tmp_path):
    config, workdir, _ = trained
    config_file = tmp_path / "supports.py"
    config_file.write_text(
        "def sweep(add, name):\n"
        "    for k in (0, 2):\n"
        "        add(**{'eval.schedule': 'paper', 'eval.num_supports': k})\n"
    )
    base = config.copy_and_resolve_references()
    base.train.phases = ("phase2",)
    base.eval.demo = False
    trainings = []

    def train_fn(point_config, point_dir):
        # The first point "trains" by taking over the finished run's phase 2.
        trainings.append(point_dir)
        os.makedirs(point_dir)
        os.symlink(workdir / "phase2", os.path.join(point_dir, "phase2"))
        return jobs.train_and_evaluate(point_config, point_dir).data

    result = sweep.run(base, str(tmp_path / "sweep"), str(config_file), "supports", train_fn)
    rows = result.data["rows"]
    assert len(trainings) == 1
    assert [r["eval.num_supports"] for r in rows] == [0, 2]
    second = json.loads((tmp_path / "sweep" / "01_schedule=paper,num_supports=2" /
                         "summary.json").read_text())  # fmt: skip
    assert second["trained_in"] == trainings[0]
    settings = json.loads(
        (tmp_path / "sweep" / "01_schedule=paper,num_supports=2" / "eval" / "phase2" /
         "summary_VID_val.json").read_text()
    )["settings"]  # fmt: skip
    assert settings["schedule"] == "paper" and settings["num_supports"] == 2
    assert "num_supports" in result.text and result.data["markdown"].endswith(".md")
