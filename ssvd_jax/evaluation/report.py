"""Every evaluation table as text (markdown or aligned columns), from the summaries that the
protocol code returns; nothing here computes a metric or prints."""

from __future__ import annotations

from typing import Any

from input_pipeline.classes import CLASS_NAMES
from ssvd_jax.evaluation.motion import SPEED_BUCKETS


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; '-' for a missing or NaN value."""
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def class_names(summary: dict[str, Any], per_class_key: str) -> list[str]:
    """The classes of a summary, in order: its 'classes' list (the dataset's categories), else
    the keys of its per-class table `per_class_key`, else the 30 VID names."""
    names = summary.get("classes") or list(summary.get(per_class_key) or ())
    return [str(n) for n in names] if names else list(CLASS_NAMES)


def _name_width(names: list[str]) -> int:
    # 14 fits every VID name; a dataset's own names may be longer.
    return max([14] + [len(n) + 2 for n in names])


def class_table(summary: dict[str, Any]) -> str:
    """Per-class AP table (overall and per speed) with class names, then the means."""

    def cell(v: float | None) -> str:
        return "     -" if v is None or v != v else f"{v:6.4f}"

    names = class_names(summary, "AP")
    w = _name_width(names)
    head = f"{'class':<{w}}{'AP':>8}{'slow':>8}{'medium':>8}{'fast':>8}{'#GT':>9}"
    lines = [head, "-" * len(head)]
    for name in names:
        lines.append(
            f"{name:<{w}}  {cell(summary['AP'][name])}"
            + "".join(f"  {cell(summary[f'AP_{b}'][name])}" for b in SPEED_BUCKETS)
            + f"{summary['num_gt'][name]:>9d}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'mAP':<{w}}  {cell(summary['mAP'])}"
        + "".join(f"  {cell(summary[f'mAP_{b}'])}" for b in SPEED_BUCKETS)
        + f"{sum(summary['num_gt'].values()):>9d}"
    )
    return "\n".join(lines)


def score_report(summary: dict[str, Any]) -> str:
    """`--mode=score`'s output: the class table and a one-line headline with the counts."""
    counts = summary.get("counts", {})
    headline = (
        f"mAP {summary['mAP']:.4f}  slow {summary['mAP_slow']:.4f}  medium "
        f"{summary['mAP_medium']:.4f}  fast {summary['mAP_fast']:.4f}  "
        f"({counts.get('frames', 0)} frames, {counts.get('gt_boxes', 0)} boxes, "
        f"{counts.get('detections', 0)} detections)"
    )
    return f"{class_table(summary)}\n{headline}"


TRACK_TAUS = ("@0.25", "@0.5", "@0.75")


def track_headline(summary: dict[str, Any]) -> str:
    """One line: mAP_track, per tau, and the stability errors of the matched tracks."""
    per_tau = ", ".join(f"tau {k[1:]} {pct(summary.get(f'mAP_track{k}'))}" for k in TRACK_TAUS)
    line = f"mAP_track {pct(summary.get('mAP_track'))}% ({per_tau})"
    st = summary.get("stability")
    if st and st.get("num_tracks"):

        def num(v: float | None) -> str:
            return "-" if v is None or v != v else f"{v:.3f}"

        line += (
            f"; stability of the {st['num_tracks']} tracks matched at tau {st['tau']:g}: "
            f"fragment {num(st['fragment_error'])}, centre {num(st['center_error'])}, "
            f"scale+ratio {num(st['scale_ratio_error'])} (sum {num(st['total'])})"
        )
    return line


def track_report(summary: dict[str, Any]) -> str:
    """`--mode=score --tracks`'s output: AP_track per class at each tau, then the headline."""

    def cell(v: float | None) -> str:
        return "     -" if v is None or v != v else f"{v:6.4f}"

    taus = [k[1:] for k in TRACK_TAUS]
    names = class_names(summary, "AP_track")
    w = _name_width(names)
    head = f"{'class':<{w}}{'AP_track':>10}" + "".join(f"{t:>8}" for t in taus) + f"{'#tracks':>9}"
    lines = [head, "-" * len(head)]
    for name in names:
        lines.append(
            f"{name:<{w}}    {cell(summary['AP_track'][name])}"
            + "".join(f"  {cell(summary[f'AP_track{k}'][name])}" for k in TRACK_TAUS)
            + f"{summary['num_gt_tracks'][name]:>9d}"
        )
    lines.append("-" * len(head))
    counts = summary.get("track_counts", {})
    lines.append(
        f"{track_headline(summary)}\n({counts.get('tracks', 0)} tracks of "
        f"{counts.get('track_detections', 0)} detections, {counts.get('gt_tracks', 0)} "
        f"ground-truth tracks, {counts.get('frames', 0)} frames)"
    )
    return "\n".join(lines)


def model_label(name: str, variant: str) -> str:
    """A table row's name for an evaluated model (`name`: its phase or checkpoint folder)."""
    if variant == "single_frame":
        return f"single-frame baseline ({name})"
    return f"SSVD {variant} ({name})"


def comparison_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per evaluated model, mAP overall and by motion speed, frames/s; and
    mAP_track when a model's detections were linked into tracks."""
    tracks = any(s.get("mAP_track") is not None for s in rows.values())
    extra = (" mAP_track |", "---|") if tracks else ("", "")
    lines = [
        "| model | mAP (%) | slow | medium | fast |" + extra[0] + " frames/s |",
        "|---|---|---|---|---|" + extra[1] + "---|",
    ]
    for label, s in rows.items():
        track = f" {pct(s.get('mAP_track'))} |" if tracks else ""
        lines.append(
            f"| {label} | {pct(s.get('mAP'))} | {pct(s.get('mAP_slow'))} | "
            f"{pct(s.get('mAP_medium'))} | {pct(s.get('mAP_fast'))} |{track} "
            f"{s.get('frames_per_second', float('nan')):.1f} |"
        )
    return "\n".join(lines)


STREAM_NAMES = {"motion": "motion stream", "sample": "sampling stream"}


def _signed(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:+.1f}"


def quality_table(comparison: dict[str, Any], labels: dict[str, str]) -> str:
    """Markdown: every model of `evaluation.detect.compare_models` by motion speed and frame
    quality (clean, deteriorated, each kind); under each model but the baseline, its difference
    to the baseline with the bootstrap 95% interval over videos where there is one."""
    models = comparison["models"]
    subsets = [k for k in comparison["subsets"] if k != "all"]
    columns = [("all@all", "mAP")] + [(f"{b}@all", b) for b in SPEED_BUCKETS]
    columns += [(f"all@{k}", k.replace("_", " ")) for k in subsets]
    baseline = comparison["baseline"]
    lines = [
        f"frame quality and speed ({comparison['videos']} videos; "
        + ", ".join(f"{comparison['subsets'][k]} {k}" for k in comparison["subsets"])
        + f" frames); differences to {labels.get(baseline, baseline)} with bootstrap 95% "
        f"intervals ({comparison['samples']} resamples of the videos):",
        "",
        "| model | " + " | ".join(c for _, c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, entry in models.items():
        cells = [pct(entry.get(key, {}).get("value", {}).get("value")) for key, _ in columns]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
        if name == baseline:
            continue
        deltas = []
        for key, _ in columns:
            d = entry.get(key, {}).get("delta")
            if d is None:
                deltas.append("-")
            elif "low" in d:
                deltas.append(f"{_signed(d['value'])} [{_signed(d['low'])}, {_signed(d['high'])}]")
            else:
                deltas.append(_signed(d["value"]))
        lines.append("| &nbsp;&nbsp;difference | " + " | ".join(deltas) + " |")
    return "\n".join(lines)
