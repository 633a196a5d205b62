"""`main.py --mode=sweep`: run every point of a config's `sweep(add)` in its own sub-workdir
and write a summary table of their final metrics.

A config file defines `def sweep(add, name)`; each `add(**{"a.b": value, ...})` call (optionally
with `name="..."`) is one point: the base config (with any command-line overrides) with those
fields replaced. Point i trains in `<workdir>/<i>_<name>`; a point whose `summary.json` exists is
finished and skipped (an interrupted point resumes from its checkpoints). The table goes to
`<workdir>/sweep_<sweep name>.md` and `.csv`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
from collections.abc import Callable
from typing import Any

from absl import logging


def load_config_module(config_path: str) -> Any:
    """The module of a config file path as given to --config (a ':variant' suffix dropped)."""
    path = config_path.split(":", 1)[0]
    name = "sweep_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load config file {path!r}")
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
        raise ValueError(f"sweep {sweep_name!r} added no points")
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
                raise KeyError(f"sweep override {key!r}: no such config field")
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
    with open(md_path, "w") as f:
        f.write("| " + " | ".join(columns) + " |\n")
        f.write("|" + "---|" * len(columns) + "\n")
        for row in rows:
            f.write("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path


def run(
    config: Any,
    workdir: str,
    config_path: str,
    sweep_name: str,
    train_fn: Callable[[Any, str], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train every point of the sweep (skipping finished ones) and write the table."""
    if train_fn is None:
        from ssvd_jax import train

        train_fn = train.train_and_evaluate
    module = load_config_module(config_path)
    if not hasattr(module, "sweep"):
        raise ValueError(f"{config_path} defines no sweep(add, name)")
    points = collect_points(module.sweep, sweep_name)
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for i, point in enumerate(points):
        point_dir = _point_dir(workdir, i, point["name"])
        summary_path = os.path.join(point_dir, "summary.json")
        if os.path.exists(summary_path):
            logging.info("sweep point %s: finished, skipping", point["name"])
            with open(summary_path) as f:
                summary = json.load(f)
        else:
            logging.info("sweep point %d/%d: %s", i + 1, len(points), point["name"])
            summary = train_fn(apply_overrides(config, point["overrides"]), point_dir)
        rows.append(_row(point, summary))
        write_table(rows, workdir, sweep_name)  # a partial table survives an interruption
    md_path, csv_path = write_table(rows, workdir, sweep_name)
    with open(md_path) as f:
        print(f.read())
    print(f"wrote {md_path} and {csv_path}")
    return rows
