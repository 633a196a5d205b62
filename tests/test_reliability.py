"""Issue 14, items 1-8: every bad input, damaged or shared workdir ends in one line naming the
file and the problem, with exit status 2 (what `main.py` prints is `errors.describe` of the
error: the in-process tests check that line; a few end-to-end runs of main.py check the
wiring), and nothing already written is lost or mixed.

1 the TFDS cache is keyed to what it was built from   5 damaged / mismatched checkpoints
2 a mistyped data.root is not filled with generated data   6 workdir lock, concurrent builds
3 data errors in train mode: one line naming the file   7 SIGINT checkpoints like SIGTERM
4 mixed frame sizes refused by the build               8 config errors early; small gaps
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
import pytest

from configs import tiny
from input_pipeline import builders, ilsvrc, train_data
from ssvd_jax import errors, jobs, locks, pictures, train, trainer
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import Checkpointer, CheckpointMismatchError

ROOT = pathlib.Path(__file__).resolve().parents[1]
MINI = "ilsvrc2015_vid_mini"
TURTLE = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00001000"
LIZARD = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"


def line_and_status(error: BaseException) -> tuple[str, int]:
    """What main.py prints for `error` and the exit status it gives."""
    described = errors.describe(error)
    assert described is not None, f"not a user-facing error: {error!r}"
    return described


def main_py(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def tree(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `folder` but lock files (each
    holder writes its pid into them)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith("lock")
    }


@pytest.fixture
def mini(fixtures_dir, tmp_path) -> pathlib.Path:
    """A writable copy of the ILSVRC2015 VID mini set (2 videos, 108 frames)."""
    root = tmp_path / "ilsvrc"
    shutil.copytree(fixtures_dir / MINI, root)
    return root


def _tiny_ilsvrc(root, tfds_dir) -> object:
    config = tiny.get_config()
    config.data.image_size = 64
    config.data.source = "ilsvrc"
    config.data.root = str(root)
    config.data.tfds_dir = str(tfds_dir)
    config.train.phases = ("phase1",)
    config.train.phase1_det = False
    return config


# ----------------------------------------------------------------------------------------------
# 1. The dataset cache is keyed to the folder, the list files and the builder version


def test_a_build_from_another_root_is_refused_naming_the_folder_to_remove(mini, tmp_path):
    tfds_dir = tmp_path / "tfds"
    builders.prepare("imagenet_vid", mini, tfds_dir)
    built = tree(tfds_dir)
    other = tmp_path / "other_ilsvrc"
    shutil.copytree(mini, other)
    with pytest.raises(builders.DatasetCacheError) as caught:
        builders.prepare("imagenet_vid", other, tfds_dir)
    line, status = line_and_status(caught.value)
    folder = tfds_dir / "imagenet_vid" / "1.0.0"
    assert status == 2
    assert line.startswith(f"error: {folder}: it was built from {mini}, data.root is now {other}")
    assert f"Remove {folder}" in line
    assert tree(tfds_dir) == built  # the earlier build is untouched

    # Changed list files are a different source too; the same root and lists reuse the build.
    (mini / "ImageSets").mkdir()
    (mini / "ImageSets" / "VID_train_15frames.txt").write_text(f"{LIZARD} 1 3 60\n")
    with pytest.raises(builders.DatasetCacheError, match="ImageSets/VID_train_15frames.txt"):
        builders.prepare("imagenet_vid", mini, tfds_dir)
    (mini / "ImageSets" / "VID_train_15frames.txt").unlink()
    assert builders.prepare("imagenet_vid", mini, tfds_dir).info.splits["train"].num_examples == 108
    assert tree(tfds_dir) == built

    # A workdir moved as a whole (root and datasets inside it) still matches.
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(mini, moved / "ilsvrc")
    shutil.move(tfds_dir, moved / "tfds")
    builders.prepare("imagenet_vid", moved / "ilsvrc", moved / "tfds")


def test_main_refuses_a_workdir_built_from_another_root(mini, tmp_path):
    workdir = tmp_path / "run"
    builders.prepare("imagenet_vid", mini, workdir / "data" / "tfds")
    other = tmp_path / "other_ilsvrc"
    shutil.copytree(mini, other)
    done = main_py(
        "--config=configs/tiny.py", "--config.data.source=ilsvrc", f"--config.data.root={other}",
        "--config.train.phase1_det=False", f"--workdir={workdir}",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    folder = workdir / "data" / "tfds" / "imagenet_vid" / "1.0.0"
    assert last_line(done).startswith(f"error: {folder}: it was built from {mini}")
    assert "Traceback" not in done.stderr
    assert not (workdir / "phase1").exists()


# ----------------------------------------------------------------------------------------------
# 2. A data root that does not exist is generated only where the user asked for it


def test_a_mistyped_data_root_is_an_error_not_a_new_dataset(tmp_path):
    typo = tmp_path / "ILSVRC2O15"
    workdir = tmp_path / "run"
    done = main_py("--config=configs/tiny.py", f"--config.data.root={typo}", f"--workdir={workdir}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert last_line(done).startswith(f"error: {typo}: no such folder; the synthetic config")
    assert "Traceback" not in done.stderr
    assert not typo.exists() and not workdir.exists()
    # In-process: the same error from the data preparation itself.
    config = tiny.get_config()
    config.data.root = str(typo)
    with pytest.raises(ilsvrc.IlsvrcFormatError) as caught:
        train_data.prepare(config, str(workdir))
    assert line_and_status(caught.value)[0].startswith(f"error: {typo}: no such folder")
    assert not typo.exists()


# ----------------------------------------------------------------------------------------------
# 3. Data errors in train mode: one line naming the file


def _frame(root, video, index):
    return root / "Data" / "VID" / video / f"{index:06d}.JPEG"


def _xml(root, video, index):
    return root / "Annotations" / "VID" / video / f"{index:06d}.xml"


def _break(root: pathlib.Path, defect: str) -> tuple[pathlib.Path, str]:
    """Plant `defect` in the mini copy; (the file the message must name, its problem)."""
    if defect == "empty_jpeg":
        path = _frame(root, TURTLE, 5)
        path.write_bytes(b"")
        return path, "empty image file (0 bytes)"
    if defect == "malformed_xml":
        path = _xml(root, LIZARD, 7)
        path.write_text("<annotation><size><width>1280</width></annotation>")
        return path, "malformed XML"
    if defect == "missing_size":
        path = _xml(root, LIZARD, 8)
        text = path.read_text()
        start, end = text.index("<size>"), text.index("</size>") + len("</size>")
        path.write_text(text[:start] + text[end:])
        return path, "malformed annotation, missing <size>"
    if defect == "unknown_wnid":
        path = _xml(root, TURTLE, 2)
        path.write_text(path.read_text().replace("n01662784", "n00007846"))
        return path, "<name> n00007846 is not one of the 30 VID classes"
    if defect == "missing_video":
        (root / "ImageSets").mkdir(exist_ok=True)
        missing = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00002000"
        (root / "ImageSets" / "VID_train_15frames.txt").write_text(
            f"{LIZARD} 1 3 60\n{TURTLE} 1 3 48\n{missing} 1 0 10\n"
        )
        return root / "Data" / "VID" / missing, "video folder listed in"
    if defect == "mixed_sizes":
        path = _frame(root, TURTLE, 30)
        cv2.imwrite(str(path), np.zeros((360, 640, 3), np.uint8))
        return path.parent, "frames differ in size: 000000.JPEG is 1280x720, 000030.JPEG is 640x360"
    raise AssertionError(defect)


DATA_DEFECTS = ["empty_jpeg", "malformed_xml", "missing_size", "unknown_wnid", "missing_video"]


@pytest.mark.parametrize("defect", DATA_DEFECTS)
def test_train_data_errors_are_one_line_naming_the_file(mini, tmp_path, defect):
    file, problem = _break(mini, defect)
    tfds_dir = tmp_path / "tfds"
    with pytest.raises(ilsvrc.IlsvrcFormatError) as caught:
        train_data.prepare(_tiny_ilsvrc(mini, tfds_dir), str(tmp_path / "run"))
    line, status = line_and_status(caught.value)
    assert status == 2
    assert line.startswith(f"error: {file}: ") and problem in line, line
    assert "\n" not in line
    assert not (tfds_dir / "imagenet_vid" / "1.0.0").exists()  # nothing half-built


def test_train_mode_prints_a_data_error_as_one_line(mini, tmp_path):
    file, problem = _break(mini, "empty_jpeg")
    done = main_py(
        "--config=configs/tiny.py", "--config.data.source=ilsvrc", f"--config.data.root={mini}",
        f"--workdir={tmp_path / 'run'}",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert last_line(done).startswith(f"error: {file}: {problem}")
    assert "Traceback" not in done.stderr and "cv2.error" not in done.stderr


def test_a_data_root_that_does_not_exist_is_one_line(tmp_path):
    config = _tiny_ilsvrc(tmp_path / "nowhere", tmp_path / "tfds")
    with pytest.raises(ilsvrc.IlsvrcFormatError) as caught:
        jobs.validate_config(config, "train", str(tmp_path / "run"), source="configs/tiny.py")
    line, status = line_and_status(caught.value)
    assert status == 2 and line.startswith(f"error: {tmp_path / 'nowhere'}: no such folder")


# ----------------------------------------------------------------------------------------------
# 4. Frames of different sizes in one video: refused by the build, naming the folder


def test_mixed_frame_sizes_are_refused_before_anything_is_built(mini, tmp_path):
    folder, problem = _break(mini, "mixed_sizes")
    tfds_dir = tmp_path / "tfds"
    with pytest.raises(ilsvrc.IlsvrcFormatError) as caught:
        train_data.prepare(_tiny_ilsvrc(mini, tfds_dir), str(tmp_path / "run"))
    line, status = line_and_status(caught.value)
    assert status == 2
    assert line.startswith(f"error: {folder}: {problem}"), line
    assert "--mode=check" in line  # where to see every problem
    assert not (tfds_dir / "imagenet_vid" / "1.0.0").exists()


def test_a_loader_error_inside_tf_data_is_one_line():
    """A dataset built before the builds refused mixed sizes: the clip loader's error, raised
    inside tf.data, reaches the trainer as the UserError it was (not TensorFlow's traceback)."""
    import tensorflow as tf

    def load(x):
        raise ilsvrc.IlsvrcFormatError("Data/VID/train/v", "frames differ in size (64x48 and 8x8)")

    dataset = tf.data.Dataset.range(8).map(
        lambda x: {"frames": tf.numpy_function(load, [x], tf.int64)}, num_parallel_calls=2
    )
    with pytest.raises(errors.UserError) as caught, train_data.Batches(dataset) as batches:
        next(batches)
    assert line_and_status(caught.value) == (
        "error: Data/VID/train/v: frames differ in size (64x48 and 8x8)",
        2,
    )


# ----------------------------------------------------------------------------------------------
# 5. Checkpoints: the newest intact step; damaged ones moved aside; shape mismatches named


def _damage(folder: pathlib.Path, how: str) -> None:
    if how == "truncated_data":
        for path in (folder / "state").rglob("*"):
            if path.is_file() and path.parent.name == "d":
                with open(path, "r+b") as f:
                    f.truncate(path.stat().st_size // 2)
    elif how == "empty_metadata":
        (folder / "state" / "_METADATA").write_bytes(b"")
    elif how == "empty_step_folder":
        shutil.rmtree(folder)
        folder.mkdir()
    else:
        raise AssertionError(how)


DAMAGES = ["truncated_data", "empty_metadata", "empty_step_folder"]


def _small_state(value: float) -> dict:
    return {"params": {"w": np.full((3, 4), value, np.float32)}, "step": np.ones((), np.int32)}


@pytest.mark.parametrize("how", DAMAGES)
def test_restore_falls_back_to_the_newest_intact_step(tmp_path, how):
    directory = tmp_path / "checkpoints"
    ckpt = Checkpointer(str(directory), max_to_keep=None, async_save=False)
    for step in (1, 2, 3):
        ckpt.save(step, _small_state(step), {"step": step}, force=True)
    ckpt.close()
    _damage(directory / "3", how)
    damaged_files = tree(directory / "3")
    ckpt = Checkpointer(str(directory), async_save=False)
    restored = ckpt.restore_intact(_small_state(0), damaged_dir=str(tmp_path / "damaged"))
    assert restored.step == 2 and restored.meta == {"step": 2}
    np.testing.assert_array_equal(restored.state["params"]["w"], np.full((3, 4), 2.0))
    [d] = restored.damaged
    assert d.step == 3 and d.moved_to == str(tmp_path / "damaged" / "3")
    assert tree(pathlib.Path(d.moved_to)) == damaged_files  # moved, not deleted
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


@pytest.fixture(scope="module")
def phase1_workdir(tmp_path_factory):
    """A workdir holding phase-1 checkpoints of steps 2 and 4 as the trainer writes them (the
    state of a fresh model: what is checked here is restoring, not training)."""
    workdir = tmp_path_factory.mktemp("phase1_run")
    config = _phase1_config()
    state, _ = train.create_state(config, "phase1")
    ckpt = Checkpointer(workdir_lib.checkpoint_dir(str(workdir), "phase1"), async_save=False)
    for step in (2, 4):
        host = train.state_dict(state.replace(step=jax.numpy.asarray(step, jax.numpy.int32)))
        meta = {"phase": "phase1", "seed": 0, "config": config.to_json(), "step": step}
        ckpt.save(step, host, dict(meta, data_position=step), force=True)
    ckpt.close()
    with open(workdir / "phase1" / "losses.jsonl", "w") as f:
        f.writelines(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 5))
    return workdir


def _phase1_config(steps: int = 4):
    config = tiny.get_config()
    config.data.image_size = 64
    config.train.phases = ("phase1",)
    config.schedule.phase1.steps = steps
    config.eval.after_training = False
    return config


def test_resume_moves_a_damaged_latest_step_aside_and_names_it(phase1_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(phase1_workdir, workdir)
    _damage(workdir / "phase1" / "checkpoints" / "4", "truncated_data")
    losses = (workdir / "phase1" / "losses.jsonl").read_text()
    # Total steps 2: the intact step 2 finishes the phase, so nothing needs to compile here.
    with trainer.StopSignals() as stop:
        summary = trainer.train_phase(_phase1_config(steps=2), str(workdir), "phase1", "", stop)
    [d] = summary["damaged_checkpoints"]
    moved = workdir / "phase1" / trainer.DAMAGED_DIR / "4"
    assert d["step"] == 4 and d["moved_to"] == str(moved) and "OUT_OF_RANGE" in d["reason"]
    assert (moved / "state").is_dir()
    assert Checkpointer(str(workdir / "phase1" / "checkpoints")).all_steps() == [2]
    assert (workdir / "phase1" / "losses.jsonl").read_text() == losses
    text = jobs.format_summary({"phases": {"phase1": summary}})
    assert "warning: phase1: checkpoint step 4 was damaged (ValueError: OUT_OF_RANGE" in text
    assert f"moved to {moved}" in text


def test_resume_with_another_model_width_names_the_parameter(phase1_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(phase1_workdir, workdir)
    before = tree(workdir)
    config = _phase1_config()
    config.model.head.width = 16
    with pytest.raises(CheckpointMismatchError) as caught, trainer.StopSignals() as stop:
        trainer.train_phase(config, str(workdir), "phase1", "", stop)
    line, status = line_and_status(caught.value)
    assert status == 2
    folder = workdir / "phase1" / "checkpoints"
    assert line.startswith(f"error: {folder}: step 4 does not fit this config's model: ")
    assert "params/head/" in line and "in the checkpoint" in line and "in this config" in line
    assert "the config differs from the one that wrote this checkpoint" in line.lower()
    assert "model.head.width 32 there, 16 now" in line
    assert tree(workdir) == before  # a mismatch is not damage: nothing moved


# ----------------------------------------------------------------------------------------------
# 6. One run per workdir; concurrent dataset builds


_HOLD = """
import sys, time
from ssvd_jax import locks
with locks.workdir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_a_workdir_is_refused_naming_the_holder(phase1_workdir, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(phase1_workdir, workdir)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(workdir)
        with pytest.raises(locks.WorkdirLocked) as caught:
            jobs.train_and_evaluate(_phase1_config(), str(workdir))
        line, status = line_and_status(caught.value)
        assert status == 2
        assert line.startswith(f"error: {workdir / 'lock'}: another run holds this workdir: ")
        assert f"pid {holder.pid} " in line
        done = main_py("--config=configs/tiny.py", f"--workdir={workdir}")
        assert done.returncode == 2, done.stderr[-3000:]
        assert last_line(done).startswith(f"error: {workdir / 'lock'}: another run holds")
        assert f"pid {holder.pid} " in last_line(done)
        assert tree(workdir) == before  # the refused runs wrote nothing, moved nothing
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The holder is gone (killed: no clean exit): the lock is free again.
    with locks.workdir_lock(str(workdir)):
        pass


_BUILD = """
import sys
from configs import tiny
from input_pipeline import train_data
config = tiny.get_config()
config.data.image_size = 64
print(train_data.prepare(config, sys.argv[1]), flush=True)
"""


def test_two_first_runs_generate_and_build_one_dataset(tmp_path):
    workdir = tmp_path / "run"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD, str(workdir)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == str(workdir / "data" / "tfds")
    data = workdir / "data"
    assert not [p for p in data.iterdir() if ".tmp-" in p.name]
    config = tiny.get_config()
    vid = builders.prepare("imagenet_vid", data / "ILSVRC2015", data / "tfds")
    assert vid.info.splits["train"].num_examples == config.data.synthetic.train_videos * 8


# ----------------------------------------------------------------------------------------------
# 7. SIGINT (Ctrl-C) checkpoints like SIGTERM


def test_stop_signals_record_sigint_and_sigterm_and_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with trainer.StopSignals() as stop:
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            assert stop.raised and stop.signum == signum
    with trainer.StopSignals() as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.slow
def test_sigint_checkpoints_the_current_step_and_stops(tmp_path):
    workdir = tmp_path / "run"
    config = _phase1_config(steps=6)
    config.data.root = str(tmp_path / "ILSVRC2015")
    config.data.synthetic.create_root = True

    def ctrl_c_at_step_3(step, batch):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return batch

    with pytest.raises(trainer.Preempted) as caught:
        jobs.train_and_evaluate(config, str(workdir), on_batch=ctrl_c_at_step_3)
    line, status = line_and_status(caught.value)
    folder = workdir / "phase1" / "checkpoints"
    assert status == 128 + signal.SIGINT == 130
    assert line == f"stopped: {folder}: phase1: SIGINT; checkpointed step 3 (run the same " + (
        "command to resume)"
    )
    ckpt = Checkpointer(str(folder))
    assert ckpt.all_steps() == [2, 3]
    state, _ = train.create_state(config, "phase1")
    restored, meta = ckpt.restore(train.state_dict(state))
    assert int(restored["step"]) == 3 and meta["data_position"] == 3
    steps = [json.loads(x)["step"] for x in open(workdir / "phase1" / "losses.jsonl")]
    assert steps == [1, 2, 3]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["params"]))


# ----------------------------------------------------------------------------------------------
# 8. Config errors before any work; the smaller gaps


def test_config_mistakes_are_one_line_before_any_work(tmp_path):
    workdir = tmp_path / "run"
    typo = main_py("--config=configs/tiny.py", "--config.data.rooot=/x", f"--workdir={workdir}")
    assert typo.returncode == 2
    assert typo.stderr.strip() == (
        "error: configs/tiny.py: no config field 'data.rooot' (did you mean 'root'?)"
    )
    missing = main_py("--config=configs/nope.py", f"--workdir={workdir}")
    assert missing.returncode == 2
    assert last_line(missing) == "error: configs/nope.py: no such config file"
    assert "Traceback" not in missing.stderr
    zero = main_py(
        "--config=configs/tiny.py", "--config.train.batch_size=0", f"--workdir={workdir}"
    )
    assert zero.returncode == 2
    assert (
        last_line(zero) == "error: configs/tiny.py: train.batch_size=0: must be a positive integer"
    )
    assert "Traceback" not in zero.stderr
    assert not workdir.exists()  # rejected before the data generation, the build, the compile
    debug = main_py(
        "--config=configs/tiny.py", "--config.train.batch_size=0", "--debug", f"--workdir={workdir}"
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # --debug: the traceback
    assert last_line(debug).startswith("ssvd_jax.errors.ConfigError: configs/tiny.py: train.")


def test_config_values_are_checked_against_the_devices_and_phases():
    config = _phase1_config()
    config.train.batch_size = 6
    with pytest.raises(
        errors.ConfigError, match=r"train.batch_size=6: must be a multiple of the 4"
    ):
        jobs.validate_config(config, "train", "/unused", source="configs/tiny.py")
    config = _phase1_config()
    config.train.phases = ("phase2", "phase1")
    with pytest.raises(errors.ConfigError, match=r"train.phases=\('phase2', 'phase1'\): .*order"):
        jobs.validate_config(config, "train", "/unused")
    config = _phase1_config()
    config.model.variant = "three_stream"
    with pytest.raises(errors.ConfigError) as caught:
        jobs.validate_config(config, "eval", "/unused", source="configs/tiny.py")
    assert line_and_status(caught.value) == (
        "error: configs/tiny.py: model.variant='three_stream': one of ('single_frame', 'motion', "
        "'sampling', 'two_stream', 'early_fusion', 'motion_guided_sampling')",
        2,
    )


def test_the_pwcnet_cost_volume_is_checked_and_fits_converted_weights():
    config = _phase1_config()
    config.model.pwc_cost_volume = "cosine"
    with pytest.raises(errors.ConfigError, match=r"model.pwc_cost_volume='cosine': one of"):
        jobs.validate_config(config, "eval", "/unused")
    # The release's converted PWC-Net compares features raw; 'normalized' would misread it.
    config = _phase1_config()
    config.model.pwc_cost_volume = "normalized"
    config.train.pwcnet_checkpoint = "/converted/pwcnet"
    with pytest.raises(errors.ConfigError, match=r"must be 'raw' with train.pwcnet_checkpoint"):
        jobs.validate_config(config, "train", "/unused")


def test_an_empty_detections_file_scores_with_a_warning(fixtures_dir, tmp_path):
    empty = tmp_path / "det.txt"
    empty.write_text("")
    config = tiny.get_config()
    config.data.root = str(fixtures_dir / MINI)
    result = jobs.score(config, str(tmp_path / "out"), str(empty), "train")
    assert result.data["mAP"] == 0.0
    assert result.text.splitlines()[-1] == f"warning: {empty}: no detections in it: every AP is 0"


def test_the_side_by_side_demo_video_is_readable_by_others(tmp_path):
    out = tmp_path / "demo.mp4"
    pictures.write_video(str(out), [np.zeros((32, 48, 3), np.uint8)] * 3, fps=5.0)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_build_names_every_dropped_box_and_frame_without_xml(mini, tmp_path, caplog):
    xml = _xml(mini, TURTLE, 4)
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>9", 1))  # a box past the image
    _xml(mini, LIZARD, 9).unlink()
    with caplog.at_level("WARNING"):
        builder = builders.prepare("imagenet_vid", mini, tmp_path / "tfds")
    report = builder.info.metadata["build_report"]["train"]
    assert report["frames_without_xml"] == 1 and report["boxes_clipped"] == 1
    assert f"{_xml(mini, LIZARD, 9)}: no XML file: a frame without objects [fix]" in caplog.text
    assert (
        f"{xml}: box [" in caplog.text
        and "reaches outside the 1280x720 image: clipped [fix]" in (caplog.text)
    )
