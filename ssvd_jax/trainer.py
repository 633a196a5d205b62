"""The phase loop: train one phase of the paper's recipe (Sec. III-D, Algorithm 1) in a workdir.

Phase 1 trains the single-frame detector (SSVD's `single_frame` variant) on still images;
phase 2 builds SSVD, initialises the body, both FPNs and both streams' heads from phase 1 (and
PWC-Net from a converted checkpoint when configured) and trains the whole model on VID clips.
Each phase has its own folder `<workdir>/<phase>/` holding orbax checkpoints, `losses.jsonl`
(one line per step), `init_report.json` and `summary.json`.

The loop: initialise or resume (the data stream is a pure function of (seed, step), so the
checkpointed step is the data position; resume takes the newest step that restores completely
and moves damaged newer ones to `<phase>/damaged_checkpoints/`), run THE train step
(`ssvd_jax.train`) on the input pipeline's batches, stop on a non-finite metric without saving
the bad state, checkpoint every `checkpoint.every_steps` and on SIGTERM or SIGINT (Ctrl-C), log
through CLU writers. Nothing here evaluates, draws or prints; `ssvd_jax.jobs` wires training to
evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from input_pipeline import flow_data, train_data
from ssvd_jax import metric_logging, objective, train
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import (
    Checkpointer,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    restore_flownet,
)
from ssvd_jax.errors import UserError
from ssvd_jax.files import atomic_write_json
from ssvd_jax.models.outputs import anchors_for

# Damaged checkpoint steps found on resume are moved here (inside the phase's folder).
DAMAGED_DIR = "damaged_checkpoints"

# A test or a user hook that sees (and may replace) every batch before its step, e.g. to inject
# a NaN or to slow the loop down: on_batch(step_about_to_run (1-based), batch) -> batch.
BatchHook = Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]]


class TrainingDiverged(UserError, RuntimeError):
    """A non-finite loss or gradient: `file` is the phase's checkpoints, the problem names the
    step, the bad terms and the last good checkpoint."""


class Preempted(UserError, RuntimeError):
    """SIGTERM or SIGINT arrived; the current step was checkpointed before stopping. Exits
    with 128 + the signal's number, as a process killed by it would."""

    label = "stopped"

    def __init__(self, file: str, problem: str, signum: int):
        super().__init__(file, problem)
        self.signum = signum
        self.exit_code = 128 + signum


# Phase-2 modules initialised from phase-1 modules (the FPN and heads are copied into both
# streams; early fusion's heads take 512 channels, so they cannot be).
PHASE2_INIT = {
    "backbone": "backbone",
    "fpn": "fpn",
    "head": "head",
    "motion_fpn": "fpn",
    "sample_fpn": "fpn",
    "motion_subnets": "head",
    "sample_subnets": "head",
    "fused_subnets": "head",
}


def initialize_distributed(dist_config: Any) -> None:
    """`jax.distributed.initialize` when the config names more than one process (before any
    other jax call); on CPU hosts the cross-process collectives need gloo."""
    if dist_config.num_processes <= 1:
        return
    if dist_config.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", dist_config.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=dist_config.coordinator_address,
        num_processes=dist_config.num_processes,
        process_id=dist_config.process_id,
    )


class StopSignals:
    """Records SIGTERM (pre-emption) and SIGINT (Ctrl-C) so the loop can checkpoint and stop
    between steps. A second SIGINT stops at once (KeyboardInterrupt), without the checkpoint:
    the way out of a step that takes too long."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        logging.warning(
            "%s: checkpointing after the current step, then stopping (Ctrl-C again: stop now)",
            signal.Signals(signum).name,
        )
        self.signum = signum

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}


SigtermFlag = StopSignals  # the name before SIGINT was handled too


# ----------------------------------------------------------------------------------------------
# Phase initialisation


def _restore_subtree(folder: str, template: dict[str, Any], what: str) -> dict[str, Any]:
    """Variables {'params', 'batch_stats'} of a converted checkpoint (`--mode=convert`)."""
    restored, meta = Checkpointer(folder, async_save=False).restore(template)
    logging.info("initialised %s from %s (kind %s)", what, folder, meta.get("kind"))
    return restored


def _with_subtree(variables: dict[str, Any], module: str, sub: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in variables.items()}
    for collection, tree in sub.items():
        if tree:
            out[collection][module] = tree
    return out


def _same_structure(a: Any, b: Any) -> bool:
    sa = jax.tree.map(lambda x: tuple(np.shape(x)), a)
    sb = jax.tree.map(lambda x: tuple(np.shape(x)), b)
    return jax.tree.structure(a) == jax.tree.structure(b) and sa == sb


def init_phase2_from_phase1(
    variables: dict[str, Any], phase1: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Copy phase-1 modules into SSVD's variables per `PHASE2_INIT`; returns the new variables
    and, per SSVD module, where it came from ('phase1:<module>' or 'random')."""
    out = {k: dict(v) for k, v in variables.items()}
    report = {}
    for module in variables["params"]:
        source = PHASE2_INIT.get(module)
        copied = False
        if source is not None and source in phase1["params"]:
            ok = _same_structure(variables["params"][module], phase1["params"][source])
            stats = variables.get("batch_stats", {}).get(module)
            if stats is not None:
                ok = ok and _same_structure(stats, phase1["batch_stats"].get(source))
            if ok:
                out["params"][module] = phase1["params"][source]
                if stats is not None:
                    out["batch_stats"][module] = phase1["batch_stats"][source]
                copied = True
        report[module] = f"phase1:{source}" if copied else "random"
    return out, report


def phase_variables(
    config: Any, workdir: str, phase: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Initial variables of a phase: `variables` (random) with the configured/previous-phase
    initialisations applied; also returns where each module came from."""
    variables = {k: dict(v) for k, v in variables.items()}
    report = {m: "random" for m in variables["params"]}
    if phase == "phase1" and config.train.resnet_checkpoint:
        template = {
            "params": variables["params"]["backbone"],
            "batch_stats": variables["batch_stats"].get("backbone", {}),
        }
        sub = _restore_subtree(config.train.resnet_checkpoint, template, "backbone")
        variables = _with_subtree(variables, "backbone", sub)
        report["backbone"] = "resnet_checkpoint"
    if phase == "phase2":
        # Phase 1 may have run in this command or an earlier one with the same workdir.
        ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir, "phase1"), async_save=False)
        try:
            if ckpt.latest_step() is not None:
                template = jax.eval_shape(
                    lambda: train.state_dict(train.create_state(config, "phase1")[0])
                )
                phase1_dir = workdir_lib.phase_dir(workdir, "phase1")
                restored = ckpt.restore_intact(
                    template, damaged_dir=os.path.join(phase1_dir, DAMAGED_DIR),
                    config_json=config.to_json(),
                )  # fmt: skip
                variables, report = init_phase2_from_phase1(variables, restored.state)
            else:
                logging.warning("phase2: no phase-1 checkpoint in %s", ckpt.directory)
        finally:
            ckpt.close()
        flow_dir = workdir_lib.checkpoint_dir(workdir, workdir_lib.FLOW_PHASE)
        if "flownet" in variables["params"] and os.path.isdir(flow_dir):
            _, flownet, meta = restore_flownet(flow_dir, config)
            variables = _with_subtree(variables, "flownet", flownet)
            report["flownet"] = f"{workdir_lib.FLOW_PHASE}:step{meta['step']}"
        if config.train.pwcnet_checkpoint and report.get("flownet") == "random":
            template = {"params": variables["params"]["flownet"]}
            sub = _restore_subtree(config.train.pwcnet_checkpoint, template, "flownet")
            variables = _with_subtree(variables, "flownet", sub)
            report["flownet"] = "pwcnet_checkpoint"
    first = next((p for p in config.train.phases if p in workdir_lib.PHASES), None)
    if config.train.init_checkpoint and phase == first:
        variables, changed = init_from_checkpoint(variables, config.train.init_checkpoint)
        report.update(changed)
    return variables, report


# The class subnets' last layers: their shapes follow the class count, so a fine-tuning start
# from a detector of other classes draws them afresh (the prior-probability init).
CLASS_LAYERS = ("cls_logits",)


def init_from_checkpoint(
    variables: dict[str, Any], folder: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """`variables` with every array of the detector checkpoint `folder` (a run's phase or a
    converted release) that fits by path and shape; the class subnets' last layers stay as
    initialised when the checkpoint's class count differs. Any other array that differs in
    shape is a CheckpointMismatchError (another model); arrays the checkpoint lacks (e.g. the
    streams, from a single-frame checkpoint) stay as initialised. Returns the variables and,
    per module, where it came from ('init_checkpoint', or '... except <layers>')."""
    if not os.path.isdir(folder):
        raise CheckpointNotFoundError(folder, "no such checkpoint folder (train.init_checkpoint)")
    ckpt = Checkpointer(folder, async_save=False)
    try:
        step = ckpt.latest_step()
        expected = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
        restored, meta, found = ckpt.restore_matching(expected, step)
    finally:
        ckpt.close()
    wrong = [line for line in found["shape_differs"]
             if not any(f"/{layer}/" in line for layer in CLASS_LAYERS)]  # fmt: skip
    if wrong:
        raise CheckpointMismatchError(folder, step, wrong)
    out = dict(variables, **restored)
    report = {}
    for module in variables["params"]:
        took = [p for p in found["restored"] if p.split("/")[1] == module]
        fresh = sorted({line.split(":")[0].split("/")[-2] for line in found["shape_differs"]
                        if line.split("/")[1] == module})  # fmt: skip
        if took:
            report[module] = "init_checkpoint" + (f" except {', '.join(fresh)} (other classes)"
                                                  if fresh else "")  # fmt: skip
    logging.info("initialised %s from %s (step %s, %s): %d arrays; class layers drawn afresh: %d",
                 ", ".join(report), folder, step, meta.get("kind", "a run"),
                 len(found["restored"]), len(found["shape_differs"]))  # fmt: skip
    return out, report


# ----------------------------------------------------------------------------------------------
# Metrics files


def _read_losses(path: str) -> dict[int, dict[str, float]]:
    """Per-step metrics of `losses.jsonl`; a step logged twice (re-run after a restart from an
    earlier checkpoint) keeps its last line."""
    rows: dict[int, dict[str, float]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[int(row["step"])] = row
    return rows


def losses_path(phase_dir: str) -> str:
    """Per-step metrics file: `losses.jsonl` of process 0; other processes log the same global
    metrics to their own file (a cross-host consistency check)."""
    i = jax.process_index()
    return os.path.join(phase_dir, "losses.jsonl" if i == 0 else f"losses.process{i}.jsonl")


def phase_summary(phase_dir: str, window: int) -> dict[str, Any]:
    """{'steps', 'first', 'final'}: the mean metrics of the first and last `window` steps."""
    rows = _read_losses(losses_path(phase_dir))
    steps = sorted(rows)
    if not steps:
        return {}
    keys = [k for k in rows[steps[-1]] if k != "step"]

    def mean(sel):
        return {k: float(np.mean([rows[s][k] for s in sel])) for k in keys}

    return {"steps": steps[-1], "first": mean(steps[:window]), "final": mean(steps[-window:])}


# ----------------------------------------------------------------------------------------------
# The loop


def train_phase(
    config: Any,
    workdir: str,
    phase: str,
    data_dir: str,
    sigterm: StopSignals,
    *,
    on_batch: BatchHook | None = None,
) -> dict[str, Any]:
    """Train one phase to `config.schedule.<phase>.steps`, resuming from the latest checkpoint
    in `<workdir>/<phase>/checkpoints`; returns the phase summary (first/final metrics)."""
    if phase not in workdir_lib.TRAINING_PHASES:
        raise ValueError(f"unknown phase {phase!r}: one of {workdir_lib.TRAINING_PHASES}")
    phase_dir = workdir_lib.phase_dir(workdir, phase)
    os.makedirs(phase_dir, exist_ok=True)
    total = int(config.schedule[phase].steps)
    ckpt = Checkpointer(
        workdir_lib.checkpoint_dir(workdir, phase),
        max_to_keep=config.checkpoint.max_to_keep,
        async_save=config.checkpoint.async_save,
    )
    try:
        if phase == workdir_lib.FLOW_PHASE:
            state, schedule = train.create_flow_state(config)
        else:
            state, schedule = train.create_state(config, phase)
        init_report = None
        start, damaged = 0, []
        # The newest step that restores completely; damaged newer ones are moved aside, named.
        restored = ckpt.restore_intact(
            train.state_dict(state), damaged_dir=os.path.join(phase_dir, DAMAGED_DIR),
            config_json=config.to_json(),
        )  # fmt: skip
        if restored is not None:
            damaged = [dataclasses.asdict(d) for d in restored.damaged]
            for d in restored.damaged:
                logging.warning(
                    "%s: checkpoint step %d is damaged (%s); moved to %s", phase, d.step,
                    d.reason, d.moved_to,
                )  # fmt: skip
            start = restored.step
            state = state.replace(**restored.state)
            logging.info(
                "%s: resumed at step %d (data position %d)", phase, start, restored.meta["step"]
            )
        if start >= total:
            logging.info("%s: finished (checkpoint at step %d); skipping", phase, start)
            summary = phase_summary(phase_dir, config.log.summary_window)
            summary["params_fingerprint"] = train.params_fingerprint(state.params)
            return dict(summary, **_named(damaged))
        if not start:
            random = {"params": state.params, "batch_stats": state.batch_stats}
            variables, init_report = phase_variables(config, workdir, phase, random)
            state = state.replace(
                params=variables["params"],
                batch_stats=variables.get("batch_stats", {}),
                opt_state=state.tx.init(variables["params"]),
            )
            logging.info("%s: initialisation per module: %s", phase, init_report)
        summary = _loop(config, workdir, phase, phase_dir, data_dir, state, schedule, ckpt,
                        start, total, sigterm, init_report, on_batch)  # fmt: skip
        return dict(summary, **_named(damaged))
    finally:
        ckpt.close()


def _named(damaged: list[dict[str, Any]]) -> dict[str, Any]:
    return {"damaged_checkpoints": damaged} if damaged else {}


def _step_and_batches(config, workdir, phase, data_dir, schedule, start, batch_dims):
    """The phase's pmapped step and this host's batches from `start` on."""
    hosts = dict(host_index=jax.process_index(), num_hosts=jax.process_count())
    if phase == workdir_lib.FLOW_PHASE:
        p_step = train.make_flow_step(
            train.flow_level_weights(config.flow), schedule, train.flow_matching(config.flow)
        )
        batches = flow_data.FlowBatches(
            flow_data.configured_pairs(config, workdir, "train"), crop_size=config.flow.crop_size,
            mean_bgr=tuple(config.data.pixel_mean_bgr), batch_dims=batch_dims, seed=config.seed,
            start_step=start, max_shift=config.flow.max_shift, **hosts,
        )  # fmt: skip
        return p_step, batches
    anchors = train.all_anchors(anchors_for(config.data.image_size, config.model.anchors))
    p_step = train.make_train_step(anchors, objective.create_loss_settings(config), schedule)
    batches = train_data.create_batches(
        config, phase, data_dir, start_step=start, batch_dims=batch_dims, **hosts
    )
    return p_step, batches


def _loop(
    config, workdir, phase, phase_dir, data_dir, state, schedule, ckpt, start, total, sigterm,
    init_report, on_batch,
) -> dict[str, Any]:  # fmt: skip
    is_chief = jax.process_index() == 0
    global_batch = (
        config.flow.batch_size if phase == workdir_lib.FLOW_PHASE else config.train.batch_size
    )
    devices = jax.local_devices()
    num_devices = jax.device_count()
    if global_batch % num_devices:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by {num_devices}")
    per_device = global_batch // num_devices
    p_step, batches = _step_and_batches(
        config, workdir, phase, data_dir, schedule, start, (len(devices), per_device)
    )
    writer = metric_logging.create_writer(phase_dir, just_logging=not is_chief)
    if start == 0:
        hparams = metric_logging.flat_hparams(config.to_dict())
        writer.write_hparams(dict(hparams, phase=phase))
        if is_chief and init_report is not None:
            atomic_write_json(os.path.join(phase_dir, "init_report.json"), init_report)
    meta_base = {"phase": phase, "seed": config.seed, "config": config.to_json()}

    def save(step: int, host_state: dict[str, Any]) -> None:
        # The data stream is a pure function of (seed, step): the step is the data position.
        ckpt.save(step, host_state, dict(meta_base, step=step, data_position=step), force=True)

    rstate = train.replicate(state, devices)
    del state
    progress = metric_logging.Progress(start, total)
    window: list[dict[str, float]] = []
    every = config.checkpoint.every_steps
    step = start
    log_file = open(losses_path(phase_dir), "a")
    try:
        while step < total:
            batch = next(batches)
            if on_batch is not None:
                batch = on_batch(step + 1, batch)
            rstate, metrics = p_step(rstate, batch)
            metrics = {k: float(v) for k, v in train.unreplicate(metrics).items()}
            step += 1
            bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
            if bad:
                ckpt.wait()
                raise TrainingDiverged(
                    ckpt.directory,
                    f"{phase}: non-finite values at step {step}: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
                    + f". Stopped; the last good checkpoint is step {ckpt.latest_step()}",
                )
            log_file.write(json.dumps({"step": step, **metrics}) + "\n")
            log_file.flush()
            window.append(metrics)
            if step % config.log.every_steps == 0 or step == total:
                rate, eta = progress.update(step)
                means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                writer.write_scalars(step, dict(means, steps_per_sec=rate))
                logging.info(
                    "%s step %d/%d loss %.4f lr %.2e %.2f steps/s ETA %s",
                    phase, step, total, means["loss"], metrics["lr"], rate,
                    metric_logging.format_eta(eta),
                )  # fmt: skip
                window = []
            if step % every == 0 or step == total or sigterm.raised:
                save(step, train.state_dict(train.unreplicate(rstate)))
            if sigterm.raised:
                ckpt.wait()
                raise Preempted(
                    ckpt.directory,
                    f"{phase}: {sigterm.name}; checkpointed step {step} (run the same command "
                    "to resume)",
                    sigterm.signum,
                )
        t_end = time.perf_counter()
        ckpt.wait()
        logging.info("%s: last checkpoint written in %.1fs", phase, time.perf_counter() - t_end)
    finally:
        log_file.close()
        # Stops the tf.data iterator and its loader threads now, not at gc, on a background
        # thread: the next phase does not wait for it.
        batches.close(wait=False)
        writer.flush()
    summary = phase_summary(phase_dir, config.log.summary_window)
    summary["params_fingerprint"] = train.params_fingerprint(train.unreplicate(rstate.params))
    logging.info(
        "%s done: process %d params fingerprint %s",
        phase, jax.process_index(), summary["params_fingerprint"],
    )  # fmt: skip
    if is_chief:
        atomic_write_json(os.path.join(phase_dir, "summary.json"), summary)
    return summary


def train_phases(
    config: Any, workdir: str, data_dir: str, *, on_batch: BatchHook | None = None
) -> dict[str, dict[str, Any]]:
    """Run `config.train.phases` in order (finished ones skipped, an interrupted one resumed)
    with SIGTERM/SIGINT checkpointing; returns {phase: summary}."""
    summaries: dict[str, dict[str, Any]] = {}
    with StopSignals() as sigterm:
        for phase in config.train.phases:
            summaries[phase] = train_phase(
                config, workdir, phase, data_dir, sigterm, on_batch=on_batch
            )
    return summaries
