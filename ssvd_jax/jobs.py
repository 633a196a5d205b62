"""The jobs: what `main.py`'s modes run, wired from the layers below. Each job takes the config
and paths, does its work and returns a `JobResult` (the text for the user and the summary);
`main.py` prints it. Below this layer nothing prints or reads flags.

train_and_evaluate  data -> training phases -> evaluation of each phase -> demo -> summary.json
evaluate            a workdir's trained phases, or one checkpoint folder, on `eval.split`
demo                a model's detections drawn on a video or frame folder, mp4 out
score               a devkit detections file against ILSVRC annotations, no model
convert             a PyTorch checkpoint -> an orbax checkpoint folder
(`sweep.py` and `overfit.py`, beside this module, are jobs too.)
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax

from input_pipeline import train_data
from input_pipeline.classes import CLASS_NAMES
from ssvd_jax import inference, trainer, visualize
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import restore_model
from ssvd_jax.evaluation import detect, report
from ssvd_jax.evaluation import score as score_lib
from ssvd_jax.files import atomic_write_json


@dataclasses.dataclass
class JobResult:
    """What a job gives back: `text` for the user, `data` (the job's summary), and the process
    exit code (non-zero: the job ran but its check failed)."""

    text: str
    data: dict[str, Any]
    exit_code: int = 0


# ----------------------------------------------------------------------------------------------
# Training


def prepare_data(config: Any, workdir: str) -> str:
    """The TFDS data_dir, generated/built once: process 0 first, the others reuse its build."""
    if jax.process_index() == 0:
        data_dir = train_data.prepare(config, workdir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("data prepared")
        if jax.process_index() > 0:
            data_dir = train_data.prepare(config, workdir)
    return data_dir


def train_and_evaluate(
    config: Any, workdir: str, *, on_batch: trainer.BatchHook | None = None
) -> JobResult:
    """Run the configured phases (skipping finished ones, resuming an interrupted one), then
    (`eval.after_training`) evaluate each trained phase on `eval.split` and (`eval.demo`) draw
    the first evaluated video; write `<workdir>/summary.json`: per phase the first and final
    (windowed) training metrics and the evaluation's mAP overall and by motion speed."""
    trainer.initialize_distributed(config.distributed)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    data_dir = prepare_data(config, workdir)
    summary: dict[str, Any] = {
        "phases": trainer.train_phases(config, workdir, data_dir, on_batch=on_batch),
        "train_seconds": time.time() - t0,
        "variant": config.model.variant,
    }
    table = ""
    if jax.process_index() == 0:
        if config.eval.after_training:
            evaluation, table = evaluate_trained(config, workdir, config.train.phases)
            summary.update(evaluation)
        summary["seconds"] = time.time() - t0
        atomic_write_json(os.path.join(workdir, "summary.json"), summary)
    text = "\n".join(t for t in (table, format_summary(summary)) if t)
    return JobResult(text=text, data=summary)


def evaluate_trained(
    config: Any, workdir: str, phases: Sequence[str], out_workdir: str | None = None
) -> tuple[dict[str, Any], str]:
    """The evaluation part of a run's summary, {'eval': {phase: headline metrics}} and, with
    `eval.demo`, {'demo': stats} of the last phase's model on the first evaluated video; and
    the side-by-side table. Results go to `out_workdir` (default: `workdir`)."""
    out_workdir = out_workdir or workdir
    summaries, table = detect.evaluate_phases(config, workdir, phases, out_workdir)
    keys = ("mAP", "mAP_slow", "mAP_medium", "mAP_fast", "frames_per_second")
    out: dict[str, Any] = {
        "eval": {
            phase: dict({k: s.get(k) for k in keys}, variant=s["settings"]["variant"])
            for phase, s in summaries.items()
        }
    }
    if config.eval.demo:
        folder = workdir_lib.checkpoint_dir(workdir, list(summaries)[-1])
        output = os.path.join(out_workdir, "demo.mp4")
        out["demo"] = _draw(config, folder, detect.first_video_folder(config, workdir), output)
    return out, table


def format_summary(summary: dict[str, Any]) -> str:
    """A run's summary as the lines a user reads at the end of training."""
    seconds = summary.get("seconds", summary.get("train_seconds", 0.0))
    lines = [f"finished in {seconds:.0f}s (training {summary.get('train_seconds', 0.0):.0f}s)"]
    for phase, s in summary["phases"].items():
        if not s:
            continue
        terms = ", ".join(
            f"{k} {s['first'][k]:.4f} -> {s['final'][k]:.4f}"
            for k in s["final"]
            if k == "loss" or k.endswith("/cls") or k.endswith("/box")
        )
        lines.append(f"{phase} ({s['steps']} steps): {terms}")
    for phase, e in summary.get("eval", {}).items():
        lines.append(
            f"{phase} {e['variant']} mAP {report.pct(e['mAP'])}% (slow {report.pct(e['mAP_slow'])},"
            f" medium {report.pct(e['mAP_medium'])}, fast {report.pct(e['mAP_fast'])})"
        )
    if "demo" in summary:
        lines.append(f"demo video: {summary['demo']['output']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Evaluation, demo, scoring, conversion


def evaluate(config: Any, workdir: str, checkpoint: str | None = None) -> JobResult:
    """Evaluate `checkpoint` (a folder of orbax checkpoints) into `<workdir>/eval/<its parent
    folder's name>/`, or every trained phase of `workdir`; the table as text."""
    if not checkpoint:
        summaries, table = detect.evaluate_phases(config, workdir, workdir_lib.PHASES, workdir)
        return JobResult(text=table, data=summaries)
    name = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
    root = workdir_lib.data_root(config, workdir)
    summary = detect.evaluate_checkpoint(
        config, checkpoint, workdir_lib.eval_dir(workdir, name), root
    )
    label = report.model_label(name, summary["settings"]["variant"])
    table = f"evaluation on {config.eval.split} ({root}):\n"
    return JobResult(text=table + report.comparison_table({label: summary}), data=summary)


def latest_checkpoint_dir(workdir: str) -> str:
    """The checkpoints of the last trained phase in `workdir` (phase 2, else phase 1)."""
    phases = detect.trained_phases(workdir)
    if not phases:
        raise FileNotFoundError(f"{workdir}: no trained phase; pass --checkpoint=FOLDER")
    return workdir_lib.checkpoint_dir(workdir, phases[-1])


def _draw(config: Any, folder: str, input_path: str, output_path: str) -> dict[str, Any]:
    model, variables, meta = restore_model(folder, config)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    stats = visualize.run_demo(
        engine, input_path, output_path, pixel_mean_bgr=config.data.pixel_mean_bgr,
        class_names=CLASS_NAMES, min_score=config.eval.demo_min_score,
    )  # fmt: skip
    return dict(stats, variant=model.variant, checkpoint=meta["checkpoint"], step=meta["step"],
                input=input_path, output=output_path)  # fmt: skip


def demo(
    config: Any, workdir: str, input_path: str, output_path: str, checkpoint: str | None = None
) -> JobResult:
    """Draw the detections of `checkpoint` (default: the workdir's last trained phase) on a
    video file or frame folder into an mp4."""
    stats = _draw(config, checkpoint or latest_checkpoint_dir(workdir), input_path, output_path)
    text = (
        f"demo: {stats['frames']} frames of {input_path} -> {output_path}, "
        f"{stats['fps']:.1f} frames/s ({stats['variant']}, {stats['checkpoint']} step "
        f"{stats['step']})"
    )
    return JobResult(text=text, data=stats)


def score(
    config: Any,
    workdir: str,
    detections: str,
    split: str,
    frame_list: str | None = None,
    seq_nms: bool = False,
) -> JobResult:
    """Score a devkit detections file against the annotations under `data.root`; writes
    `<workdir>/score.json`."""
    if not config.data.root:
        raise ValueError("--mode=score needs --config.data.root=DIR (the ILSVRC2015 folder)")
    out_json = os.path.join(workdir, "score.json")
    summary = score_lib.score_detections(
        detections, config.data.root, split, frame_list=frame_list, out_json=out_json,
        seq_nms=seq_nms,
    )  # fmt: skip
    return JobResult(text=f"{report.score_report(summary)}\nwrote {out_json}", data=summary)


def convert(config: Any, workdir: str, source: str, kind: str) -> JobResult:
    """Convert a PyTorch checkpoint file (`kind`: ssvd | pwcnet | resnet) into an orbax
    checkpoint under `<workdir>/checkpoints`."""
    from ssvd_jax import convert as convert_lib

    folder = convert_lib.run(config, workdir, source, kind)
    return JobResult(text=f"wrote {kind} variables to {folder}", data={"folder": folder})
