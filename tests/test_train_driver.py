"""The training driver end to end on the tiny config and a tiny generated dataset.

- Resume is exact: a run killed with SIGKILL after its step-4 checkpoint is on disk, then
  restarted in the same workdir, logs the same per-step losses as an uninterrupted run.
- A NaN injected into the batch of step 3 (by a batch hook) stops training with a message
  naming the step and the non-finite terms; the last good checkpoint (step 2) restores with
  finite parameters.
- A sweep (two of Table II's streams; phase 2 only) runs end to end, evaluates every point,
  and writes its markdown and CSV tables; a second invocation skips the finished points. The
  Table II sweep's points are the paper's four.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from input_pipeline import train_data
from ssvd_jax import jobs, sweep, train, trainer
from ssvd_jax.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def _config(data_dir, steps=8):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.data.root = str(data_dir / "ILSVRC2015")
    config.data.synthetic.create_root = True  # generated there on first use
    config.data.tfds_dir = str(data_dir / "tfds")
    config.train.phases = ("phase1",)
    config.schedule.phase1.steps = steps
    config.eval.after_training = False  # evaluation is checked where it is the subject
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_data")
    train_data.prepare(_config(folder), str(folder))
    return folder


def _losses(workdir):
    rows = {}
    with open(os.path.join(workdir, "phase1", "losses.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            rows[row["step"]] = row["loss"]  # a re-run step keeps its last value
    return rows


# The killed run: a separate process (SIGKILL must hit a real process), slowed by a batch hook
# so that the test can kill it between its step-4 checkpoint and the end.
_SLOW_RUN = """
import sys, time
from configs import tiny
from ssvd_jax import jobs
sys.path.insert(0, {tests!r})
from test_train_driver import _config
import pathlib

def slow(step, batch):
    time.sleep(1.5)
    return batch

jobs.train_and_evaluate(_config(pathlib.Path({data!r})), {workdir!r}, on_batch=slow)
"""


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(data_dir, tmp_path):
    reference = jobs.train_and_evaluate(_config(data_dir), str(tmp_path / "uninterrupted")).data
    assert reference["phases"]["phase1"]["steps"] == 8
    expected = _losses(tmp_path / "uninterrupted")

    workdir = tmp_path / "killed"
    ckpt4 = workdir / "phase1" / "checkpoints" / "4"
    script = _SLOW_RUN.format(
        tests=os.path.join(ROOT, "tests"), data=str(data_dir), workdir=str(workdir)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while not ckpt4.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert ckpt4.exists(), f"the step-4 checkpoint never appeared: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)  # no clean exit: no final save, no flushes
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(_losses(workdir))
    assert killed_at < 8, "the run finished before it was killed"

    jobs.train_and_evaluate(_config(data_dir), str(workdir))  # resumes in this process
    resumed = _losses(workdir)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(1, 9):
        np.testing.assert_allclose(resumed[step], expected[step], rtol=1e-6, err_msg=step)
    assert Checkpointer(str(workdir / "phase1" / "checkpoints")).latest_step() == 8


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = _config(data_dir, steps=6)

    def nan_at_step_3(step, batch):
        return dict(batch, frames=np.full_like(batch["frames"], np.nan)) if step == 3 else batch

    with pytest.raises(trainer.TrainingDiverged, match=r"step 3: .*loss=nan.*checkpoint is step 2"):
        jobs.train_and_evaluate(config, str(tmp_path), on_batch=nan_at_step_3)
    ckpt = Checkpointer(str(tmp_path / "phase1" / "checkpoints"))
    assert ckpt.all_steps() == [2]
    state, _ = train.create_state(config, "phase1")
    restored, meta = ckpt.restore(train.state_dict(state))
    assert meta["step"] == 2 and int(restored["step"]) == 2
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored["params"]))


def test_table2_sweep_points_are_the_papers_streams():
    points = sweep.collect_points(tiny.sweep, "table2")
    assert [p["overrides"] for p in points] == [
        {"model.variant": v} for v in ("single_frame", "motion", "sampling", "two_stream")
    ]


@pytest.mark.slow
def test_sweep_trains_evaluates_and_writes_its_table(data_dir, tmp_path):
    """Two of Table II's points end to end (the other variants' training is covered by
    test_ssvd_variants; here the sweep machinery is the subject)."""
    config = _config(data_dir, steps=1)
    # Phase 1 does not depend on the swept variant (and is covered above): phase 2 alone.
    config.train.phases = ("phase2",)
    config.schedule.phase2.steps = 1
    config.eval.after_training = True
    config_file = tmp_path / "streams.py"
    config_file.write_text(
        "def sweep(add, name):\n"
        "    for variant in ('single_frame', 'sampling'):\n"
        "        add(**{'model.variant': variant})\n"
    )
    out = tmp_path / "sweep"
    result = sweep.run(config, str(out), str(config_file), "streams")
    rows = result.data["rows"]
    assert [r["model.variant"] for r in rows] == ["single_frame", "sampling"]
    with open(out / "sweep_streams.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2
    assert float(table[0]["phase2 single/cls"]) > 0
    assert float(table[1]["phase2 sample/cls"]) > 0 and float(table[1]["phase2 sample/box"]) > 0
    # Each point's model was evaluated on the val split with the online engine, and the table
    # shows that evaluation's mAP.
    for i, (row, variant) in enumerate(zip(table, ("single_frame", "sampling"), strict=True)):
        point = out / f"{i:02d}_variant={variant}"
        scored = json.loads((point / "eval" / "phase2" / "summary_VID_val.json").read_text())
        assert scored["settings"]["variant"] == variant
        assert (point / "eval" / "phase2" / "det_VID_val.txt").is_file()
        mAP = scored["mAP"]
        assert row["phase2 mAP"] == ("" if mAP is None else str(round(mAP, 4)))
    summary = json.loads((out / "01_variant=sampling" / "summary.json").read_text())
    assert summary["eval"]["phase2"]["variant"] == "sampling"
    md = (out / "sweep_streams.md").read_text()
    assert md.count("\n") == 4 and "sampling" in md and md in result.text

    def fail(config, workdir):
        raise AssertionError(f"finished point {workdir} trained again")

    again = sweep.run(config, str(out), str(config_file), "streams", train_fn=fail)
    assert again.data["rows"] == rows
