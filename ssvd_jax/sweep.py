"""`main.py --mode=sweep`: run every point of a config's `sweep(add)` in its own sub-workdir
and write a summary table of their final metrics.

A config file defines `def sweep(add, name)`; each `add(**{"a.b": value, ...})` call (optionally
with `name="..."`) is one point: the base config (with any command-line overrides) with those
fields replaced. Point i trains (and, with `eval.after_training`, evaluates) in
`<workdir>/<i>_<name>`; a point whose `summary.json` exists is finished and skipped (an
interrupted point resumes from its checkpoints). Points that differ from an earlier point only
in `eval.*` fields (Table V: the number of supports at inference) do not train again: they
evaluate that point's checkpoints into their own folder. The table (final training losses, mAP
overall and by motion speed) goes to `<workdir>/sweep_<sweep name>.md` and `.csv`, rewritten
atomically after every point.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from absl import logging

from ssvd_jax import jobs
from ssvd_jax.errors import UserError
from ssvd_jax.files import atomic_write_json, atomic_write_text


def load_config_module(config_path: str) -> Any:
    """The module of a config file path as given to --config (a ':variant' suffix dropped)."""
    path = config_path.split(":", 1)[0]
    name = "sweep_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise UserError(path, "cannot load this config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def collect_points(sweep_fn: Callable[..., None], sweep_name: str) -> list[dict[str, Any]]:
    """[{'name': str, 'overrides': {'a.b': value}}] in the order `sweep_fn` adds them."""
    points: list[dict[str, Any]] = []

    def add(name: str | None = None, **overrides: Any) -> None:
        if name is None:
            name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items())
        points.append({"name": name, "overrides": overrides})

    sweep_fn(add, sweep_name)
    if not points:
        raise UserError("--sweep", f"sweep {sweep_name!r} added no points")
    return points


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `config` (locked like the original) with dotted fields replaced."""
    point = config.copy_and_resolve_references()
    with point.unlocked():
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = point
            for p in parents:
                node = node[p]
            if leaf not in node:
                raise UserError("--sweep", f"override {key!r}: no such config field")
            node[leaf] = value
    return point


def _point_dir(workdir: str, index: int, name: str) -> str:
    return os.path.join(workdir, f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.=,-]', '_', name)}")


def _row(point: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point["name"]}
    row.update({k: v for k, v in point["overrides"].items()})
    for phase, s in summary.get("phases", {}).items():
        for key, value in (s.get("final") or {}).items():
            if key == "loss" or key.endswith("/cls") or key.endswith("/box"):
                row[f"{phase} {key}"] = round(value, 5)
    for phase, e in summary.get("eval", {}).items():
        for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast"):
            value = e.get(key)
            row[f"{phase} {key}"] = "" if value is None or value != value else round(value, 4)
    row["seconds"] = round(summary.get("seconds", 0.0), 1)
    return row


def write_table(rows: list[dict[str, Any]], workdir: str, sweep_name: str) -> tuple[str, str]:
    """Markdown and CSV tables of the rows (union of columns, blanks where a point lacks one)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c != "seconds"]
    columns.append("seconds")
    md_path = os.path.join(workdir, f"sweep_{sweep_name}.md")
    csv_path = os.path.join(workdir, f"sweep_{sweep_name}.csv")
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |"
           for row in rows]  # fmt: skip
    atomic_write_text(md_path, "\n".join(md) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    return md_path, csv_path


def _training_key(overrides: dict[str, Any]) -> str:
    """What a point's training depends on: its overrides outside the `eval` section."""
    return json.dumps({k: v for k, v in overrides.items() if not k.startswith("eval.")},
                      sort_keys=True, default=str)  # fmt: skip


def run(
    config: Any,
    workdir: str,
    config_path: str,
    sweep_name: str,
    train_fn: Callable[[Any, str], dict[str, Any]] | None = None,
    eval_fn: Callable[[Any, str, str], dict[str, Any]] | None = None,
) -> jobs.JobResult:
    """Train (and evaluate) every point of the sweep, skipping finished ones; write the table.

    train_fn(config, point_dir) -> summary and eval_fn(config, trained_dir, point_dir) ->
    summary default to `jobs.train_and_evaluate` and an evaluation of `trained_dir`'s phases
    into `point_dir`. Returns the table as a `JobResult` (data: {'rows', 'markdown', 'csv'}).
    """
    train_fn = train_fn or (lambda c, w: jobs.train_and_evaluate(c, w).data)
    eval_fn = eval_fn or _evaluate_trained_point
    module = load_config_module(config_path)
    if not hasattr(module, "sweep"):
        raise UserError(config_path, "defines no sweep(add, name)")
    points = collect_points(module.sweep, sweep_name)
    with jobs.workdir_lock(workdir):
        return _run(config, workdir, sweep_name, points, train_fn, eval_fn)


def _run(config, workdir, sweep_name, points, train_fn, eval_fn) -> jobs.JobResult:
    os.makedirs(workdir, exist_ok=True)
    rows = []
    trained: dict[str, str] = {}  # training key -> the point folder that trained it
    for i, point in enumerate(points):
        point_dir = _point_dir(workdir, i, point["name"])
        summary_path = os.path.join(point_dir, "summary.json")
        key = _training_key(point["overrides"])
        point_config = apply_overrides(config, point["overrides"])
        if os.path.exists(summary_path):
            logging.info("sweep point %s: finished, skipping", point["name"])
            with open(summary_path) as f:
                summary = json.load(f)
        elif key in trained:
            logging.info("sweep point %d/%d: %s (evaluating the checkpoints of %s)",
                         i + 1, len(points), point["name"], trained[key])  # fmt: skip
            summary = eval_fn(point_config, trained[key], point_dir)
        else:
            logging.info("sweep point %d/%d: %s", i + 1, len(points), point["name"])
            summary = train_fn(point_config, point_dir)
        trained.setdefault(key, summary.get("trained_in", point_dir))
        rows.append(_row(point, summary))
        write_table(rows, workdir, sweep_name)  # a partial table survives an interruption
    md_path, csv_path = write_table(rows, workdir, sweep_name)
    with open(md_path) as f:
        table = f.read()
    return jobs.JobResult(
        text=f"{table}wrote {md_path} and {csv_path}",
        data={"rows": rows, "markdown": md_path, "csv": csv_path},
    )


def _evaluate_trained_point(config: Any, trained_dir: str, point_dir: str) -> dict[str, Any]:
    """A point that shares an earlier point's training: that point's phase summaries, this
    point's evaluation of its checkpoints; written to `<point_dir>/summary.json`."""
    with open(os.path.join(trained_dir, "summary.json")) as f:
        base = json.load(f)
    start = time.time()
    summary = {"phases": base["phases"], "variant": base.get("variant"), "trained_in": trained_dir}
    os.makedirs(point_dir, exist_ok=True)
    if config.eval.after_training:
        evaluation, _ = jobs.evaluate_trained(config, trained_dir, config.train.phases, point_dir)
        summary.update(evaluation)
    summary["seconds"] = time.time() - start
    atomic_write_json(os.path.join(point_dir, "summary.json"), summary)
    return summary
