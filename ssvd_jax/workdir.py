"""Where things live in a workdir (`main.py --workdir`), in one place for every job.

<workdir>/data/ILSVRC2015      the generated synthetic dataset (when `data.root` is empty)
<workdir>/data/tfds            the built TFDS datasets (when `data.tfds_dir` is empty)
<workdir>/<phase>/             a training phase: checkpoints/, losses.jsonl, summary.json
                               (phase1, pwcnet, phase2)
<workdir>/eval/<phase>/        its evaluation: det_VID_<split>.txt, summary_VID_<split>.json
<workdir>/eval/results_<split>.md   the side-by-side table of the evaluated phases
<workdir>/summary.json         the run's summary (training and evaluation)
"""

from __future__ import annotations

import os
from typing import Any

PHASES = ("phase1", "phase2")  # the detector's phases (each evaluated on video)
FLOW_PHASE = "pwcnet"  # PWC-Net pretraining on ground-truth flow (before phase 2)
TRAINING_PHASES = ("phase1", FLOW_PHASE, "phase2")


def data_root(config: Any, workdir: str) -> str:
    """The ILSVRC2015 folder: `data.root`, else the generated one inside the workdir."""
    return config.data.root or os.path.join(workdir, "data", "ILSVRC2015")


def tfds_dir(config: Any, workdir: str) -> str:
    return config.data.tfds_dir or os.path.join(workdir, "data", "tfds")


def phase_dir(workdir: str, phase: str) -> str:
    return os.path.join(workdir, phase)


def checkpoint_dir(workdir: str, phase: str) -> str:
    return os.path.join(workdir, phase, "checkpoints")


def eval_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "eval", name)
