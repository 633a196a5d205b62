"""The jobs: what `main.py`'s modes run, wired from the layers below. Each job takes the config
and paths, does its work and returns a `JobResult` (the text for the user and the summary);
`main.py` prints it. Below this layer nothing prints or reads flags.

train_and_evaluate  data -> training phases -> evaluation of each phase -> demo -> summary.json
evaluate            a workdir's trained phases, or one checkpoint folder, on `eval.split`
demo                a model's detections drawn on a video or frame folder, mp4 out
score               a devkit or COCO-style detections file against the dataset's annotations
convert             a PyTorch checkpoint -> an orbax checkpoint folder
check               an ILSVRC folder or COCO-VID files checked as the builders check them
export              a checkpoint's online engine step as a jax.export artifact (ssvd_jax/export.py)
(`sweep.py` and `overfit.py`, beside this module, are jobs too.) With `data.source=cocovid`
every job takes its class list from the dataset's files first (`train_data.resolve_classes`).

Problems the user can fix are raised as `ssvd_jax.errors.UserError` (file and problem);
`main.py` prints them as one line. Every job validates the config first (`validate_config`),
and the jobs that write into a workdir hold its lock (`ssvd_jax.locks`): a second run on the
same workdir is refused, naming the first one's pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import cv2
import jax
import numpy as np

from input_pipeline import dataset_check, flow_data, train_data
from input_pipeline.preprocess import read_frame
from input_pipeline.synthetic import DETERIORATIONS
from ssvd_jax import config_check, inference, locks, pictures, runtime, trainer, visualize
from ssvd_jax import export as export_lib
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import restore_flownet, restore_model
from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import detect, report, results, subsets, track_results, vid_ap
from ssvd_jax.evaluation import flow as flow_eval
from ssvd_jax.evaluation import score as score_lib
from ssvd_jax.files import atomic_write_json
from ssvd_jax.ops import postprocess


@dataclasses.dataclass
class JobResult:
    """What a job gives back: `text` for the user, `data` (the job's summary), and the process
    exit code (non-zero: the job ran but its check failed)."""

    text: str
    data: dict[str, Any]
    exit_code: int = 0


def validate_config(config: Any, mode: str, workdir: str, *, source: str = "config") -> None:
    """`config_check.validate` for `mode`, before any data or compile work; the training batch
    is checked against this process's device count when it runs alone (a multi-host run is
    checked by `train_and_evaluate` once its processes have joined)."""
    single = config.distributed.num_processes <= 1
    devices = jax.device_count() if single and mode in config_check.TRAINING_MODES else None
    config_check.validate(config, mode, workdir, devices=devices, source=source)


def workdir_lock(workdir: str) -> contextlib.AbstractContextManager:
    """The workdir's lock for a job that writes into it; process 0 holds it for a multi-host
    run (the other processes share the workdir with it)."""
    if jax.process_index() == 0:
        return locks.workdir_lock(workdir)
    return contextlib.nullcontext()


def run_mode(mode: str, config: Any, workdir: str, options: dict[str, Any]) -> JobResult:
    """The job of `main.py --mode=<mode>`; `options` holds the command line's flag values by
    flag name (checkpoint, input, output, checkpoint_kind, detections, split, frame_list,
    seq_nms, sweep, config_path). The config is validated first, before anything is
    written."""
    from ssvd_jax import overfit, sweep

    validate_config(config, mode, workdir, source=options["config_path"])
    if mode != "check":  # (the check reports a bad class list as one of its findings)
        train_data.resolve_classes(config)  # COCO-VID: the model's classes are the dataset's
    if mode != "check":  # (the check reads a dataset folder and writes nothing)
        # Compiled programs persist in the workdir: re-runs, evaluation and the demo reuse them.
        runtime.enable_compilation_cache(os.path.join(workdir, "jax_cache"))
    o = options
    if mode == "train":
        return train_and_evaluate(config, workdir)
    if mode == "eval":
        return evaluate(config, workdir, o["checkpoint"])
    if mode == "demo":
        return demo(config, workdir, o["input"], o["output"], o["checkpoint"])
    if mode == "score":
        return score(config, workdir, o["detections"], o["split"], o["frame_list"], o["seq_nms"],
                     tracks=o["tracks"])  # fmt: skip
    if mode == "convert":
        return convert(config, workdir, o["input"], o["checkpoint_kind"])
    if mode == "sweep":
        return sweep.run(config, workdir, o["config_path"], o["sweep"])
    if mode == "overfit":
        return overfit.run(config, workdir)
    if mode == "check":
        return check(config, workdir)
    if mode == "export":
        return export(config, workdir, o["checkpoint"], o["output"])
    raise UserError("--mode", f"unknown mode {mode!r}")


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
    config_check.validate(config, "train", workdir, devices=jax.device_count())
    train_data.resolve_classes(config)
    with workdir_lock(workdir):
        return _train_and_evaluate(config, workdir, on_batch)


def _train_and_evaluate(config: Any, workdir: str, on_batch: trainer.BatchHook | None) -> JobResult:
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
            if workdir_lib.FLOW_PHASE in config.train.phases:
                summary["pwcnet"] = evaluate_pwcnet(config, workdir)
            if not train_data.pwcnet_alone(config):  # a detector to evaluate
                evaluation, table = evaluate_trained(config, workdir, config.train.phases)
                summary.update(evaluation)
                summary["pictures"] = draw_pictures(config, workdir, summary)
        summary["seconds"] = time.time() - t0
        atomic_write_json(os.path.join(workdir, "summary.json"), summary)
    text = "\n".join(t for t in (table, format_summary(summary)) if t)
    return JobResult(text=text, data=summary)


def evaluate_pwcnet(config: Any, workdir: str) -> dict[str, Any]:
    """End-point errors of the pwcnet phase's PWC-Net on the flow data's val pairs (beside zero
    flow's and a classical flow's) and its translation check; written to
    `<workdir>/eval/pwcnet/summary_flow_val.json`."""
    folder = workdir_lib.checkpoint_dir(workdir, workdir_lib.FLOW_PHASE)
    model, variables, meta = restore_flownet(folder, config)
    pairs = flow_data.configured_pairs(config, workdir, "val")
    errors = flow_eval.evaluate_flow(
        model, variables, pairs, crop_size=config.flow.eval_crop_size,
        mean_bgr=config.data.pixel_mean_bgr, batch_size=config.flow.batch_size,
        translation_shift=config.flow.translation_shift,
        translation_images=config.flow.translation_images,
    )  # fmt: skip
    errors.update(checkpoint=meta["checkpoint"], step=meta["step"])
    path = os.path.join(
        workdir_lib.eval_dir(workdir, workdir_lib.FLOW_PHASE), "summary_flow_val.json"
    )
    atomic_write_json(path, errors)
    return errors


def evaluate_trained(
    config: Any, workdir: str, phases: Sequence[str], out_workdir: str | None = None
) -> tuple[dict[str, Any], str]:
    """The evaluation part of a run's summary, {'eval': {phase: headline metrics}} and, with
    `eval.demo`, {'demo': stats} of the last phase's model on the first evaluated video; and
    the side-by-side table. Results go to `out_workdir` (default: `workdir`)."""
    out_workdir = out_workdir or workdir
    summaries, table = detect.evaluate_phases(config, workdir, phases, out_workdir)
    out: dict[str, Any] = {"eval": {}}
    for phase, s in summaries.items():
        entry = dict(headline_metrics(s), variant=s["settings"]["variant"])
        entry["frames_per_second"] = s.get("frames_per_second")
        if "streams" in s:
            entry["streams"] = {k: headline_metrics(v) for k, v in s["streams"].items()}
        out["eval"][phase] = entry
        out["single_frame" if entry["variant"] == "single_frame" else "ssvd"] = entry
    if config.eval.demo:
        output = os.path.join(out_workdir, "demo.mp4")
        if len(summaries) > 1:
            out["demo"] = demo_side_by_side(config, workdir, summaries, output)
        else:
            folder = workdir_lib.checkpoint_dir(workdir, list(summaries)[-1])
            out["demo"] = _draw(config, folder, detect.first_video_folder(config, workdir), output)
    return out, table


def draw_pictures(config: Any, workdir: str, summary: dict[str, Any]) -> list[str]:
    """`<workdir>/pictures/`: the single-frame vs SSVD bar chart by speed and frame quality,
    and the paper's Fig. 5 for one deteriorated frame; returns the files written."""
    folder = os.path.join(workdir, "pictures")
    written = []
    evaluated = summary.get("eval", {})
    if len(evaluated) > 1:
        path = os.path.join(folder, "map_by_speed_and_quality.png")
        pictures.write_png(path, _comparison_chart(evaluated))
        written.append(path)
    if "phase2" in evaluated:
        path = os.path.join(folder, "fig5_sampling_and_flow.png")
        if _fig5(config, workdir, path):
            written.append(path)
    return written


def _comparison_chart(evaluated: dict[str, dict[str, Any]]) -> np.ndarray:
    first = next(iter(evaluated.values()))
    kinds = [k for k in DETERIORATIONS if f"mAP_{k}" in first]
    keys = ["mAP", "mAP_slow", "mAP_medium", "mAP_fast", "mAP_clean", "mAP_deteriorated"]
    keys += [f"mAP_{k}" for k in kinds]
    groups = [("all" if k == "mAP" else k[4:]).replace("_", "\n") for k in keys]
    series, intervals = {}, {}
    rows = dict(evaluated)
    for phase, e in evaluated.items():
        for stream, values in e.get("streams", {}).items():
            rows[f"{phase}:{stream}"] = values
    for name, e in rows.items():
        phase, _, stream = name.partition(":")
        label = (report.STREAM_NAMES[stream] + " alone" if stream else
                 report.model_label(phase, e["variant"]))  # fmt: skip
        series[label] = [None if e.get(k) is None else 100 * e[k] for k in keys]
        diff = e.get("difference", {})
        intervals[label] = [
            (100 * (e[k] - diff[k]["value"] + diff[k]["low"]),
             100 * (e[k] - diff[k]["value"] + diff[k]["high"]))
            if k in diff and "low" in diff[k] else None
            for k in keys
        ]  # fmt: skip
    title = (
        "val mAP (%) by motion speed and frame quality (bars: baseline + 95% interval of the gain)"
    )
    return pictures.bar_chart(groups, series, title, intervals=intervals)


def _fig5(config: Any, workdir: str, path: str) -> bool:
    """Fig. 5 on the first deteriorated, annotated frame of the first val video whose support
    window lies inside the video (by the synthetic manifest; else its middle annotated frame),
    at the first object's centre."""
    root = train_data.data_source(config, workdir)
    split = config.eval.split
    video, _ = score_lib.evaluation_videos(root, split, config.eval.frame_list or None)[0]
    annotations = score_lib.video_annotations(root, split, video)
    qualities = (
        subsets.frame_qualities(score_lib.files_root(root), [video.video_id], [video.frames]) or []
    )
    annotated = [t for t, a in enumerate(annotations) if a is not None and a.objects]
    if not annotated:
        return False
    k = config.data.support_range
    inside = [t for t in annotated if k <= t < video.num_frames - k] or annotated
    bad = [t for t in inside if t < len(qualities) and qualities[t]]
    t = bad[0] if bad else inside[len(inside) // 2]
    model, variables, meta = restore_model(workdir_lib.checkpoint_dir(workdir, "phase2"), config)
    if model.variant not in ("two_stream", "motion_guided_sampling"):
        return False
    entries = inference.release_entries(video.num_frames, config.data.support_range)[t]
    paths = [video.image_path(root, i) for i in entries]
    clip = np.stack(list(detect.video_frames(paths, config.data.image_size,
                                             config.data.pixel_mean_bgr)))  # fmt: skip
    originals = [read_frame(p) for p in paths]
    box = annotations[t].objects[0].box
    sx = config.data.image_size / originals[0].shape[1]
    sy = config.data.image_size / originals[0].shape[0]
    centre = ((box[0] + box[2] + 1) / 2 * sx, (box[1] + box[3] + 1) / 2 * sy)
    geometry = pictures.stream_geometry(model, variables, clip, centre)
    order = np.argsort(entries - t, kind="stable")  # time order, the reference in its place
    kinds = ", ".join(qualities[t]) if bad else "clean"
    caption = (
        f"{video.video_id} frame {t} ({kinds}): red dots = where the sampling stream "
        "samples each frame for the green location; below: the motion stream's flow"
    )
    figure = pictures.sampling_figure(
        [originals[i] for i in order], [int(entries[i] - t) for i in order],
        {**geometry, "samples": geometry["samples"][order], "flows": geometry["flows"][order]},
        input_size=config.data.image_size, scale=config.eval.demo_scale, caption=caption,
    )  # fmt: skip
    pictures.write_png(path, figure)
    return True


def demo_side_by_side(
    config: Any, workdir: str, summaries: dict[str, dict[str, Any]], output: str
) -> dict[str, Any]:
    """The first evaluated video with each evaluated phase's detections side by side (boxes
    drawn from `eval.demo_min_score`), frames enlarged `eval.demo_scale` times; and, per phase,
    in how many annotated frames its boxes (score >= `eval.demo_cover_score`, right class,
    IoU >= 0.5) cover every annotated object. `summaries`: phase -> its evaluation summary;
    the boxes are the ones its detections file holds (the models are not run again), coloured
    and numbered by track where the evaluation linked them (`eval.link`)."""
    root = train_data.data_source(config, workdir)
    video, frame_ids = score_lib.evaluation_videos(
        root, config.eval.split, config.eval.frame_list or None
    )[0]
    paths = [video.image_path(root, t) for t in range(video.num_frames)]
    originals = [read_frame(p) for p in paths]
    annotations = score_lib.video_annotations(root, config.eval.split, video)
    scale = config.eval.demo_scale
    height, width = originals[0].shape[:2]
    big = [cv2.resize(f, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
           for f in originals]  # fmt: skip
    panels: dict[str, list[np.ndarray]] = {}
    names = train_data.class_names(config)
    stats: dict[str, Any] = {"input": os.path.dirname(os.fspath(paths[0])), "output": output}
    for phase, summary in summaries.items():
        per_frame, track_ids = _frame_detections(summary, frame_ids)
        variant = summary["settings"]["variant"]
        label = report.model_label(phase, variant)
        panels[label] = [
            visualize.draw_detections(
                big[t], per_frame[t]._replace(boxes=per_frame[t].boxes * scale),
                names, config.eval.demo_min_score,
                track_ids=None if track_ids is None else track_ids[t],
            )
            for t in range(len(paths))
        ]  # fmt: skip
        covered, annotated = _coverage(per_frame, annotations, config.eval.demo_cover_score)
        stats[phase] = {"variant": variant, "step": summary["settings"].get("step"),
                        "frames_covered": covered, "frames_annotated": annotated}  # fmt: skip
    qualities = subsets.frame_qualities(
        score_lib.files_root(root), [video.video_id], [video.frames]
    )
    footer = f"boxes from score {config.eval.demo_min_score}; {video.video_id}"

    def caption(t: int) -> str:
        kinds = ", ".join(qualities[t]).replace("_", " ") if qualities and qualities[t] else ""
        return f"{footer}, frame {t}" + (f": {kinds}" if kinds else "")

    composed = [pictures.side_by_side({k: v[t] for k, v in panels.items()}, caption(t))
                for t in range(len(paths))]  # fmt: skip
    pictures.write_video(output, composed, fps=config.eval.demo_fps)
    stats["frames"] = len(composed)
    return stats


def _frame_detections(
    summary: dict[str, Any], frame_ids: np.ndarray
) -> tuple[list[postprocess.Detections], list[np.ndarray] | None]:
    """Per frame of one video (its global ids), an evaluation's rows as the engine's Detections
    (original-image pixels): from its tracks file when it linked (with each row's track id),
    else from its detections file (track ids None)."""
    tracks_file = summary.get("tracks", {}).get("tracks_file")
    if tracks_file:
        linked = track_results.read_tracks(tracks_file)
        dets, ids = linked.dets, linked.track_id
    else:
        dets, ids = results.read_detections(summary["detections_file"]), None
    out, out_ids = [], []
    for frame_id in frame_ids:
        rows = np.flatnonzero(dets.frame_id == frame_id)
        zeros = np.zeros(len(rows), np.int32)  # stream, level, anchor: not in the file
        out.append(
            postprocess.Detections(
                dets.boxes[rows].astype(np.float32),
                dets.score[rows],
                dets.label[rows],
                np.ones(len(rows), bool),
                zeros,
                zeros,
                zeros,
            )  # fmt: skip
        )
        if ids is not None:
            out_ids.append(ids[rows])
    return out, (out_ids if ids is not None else None)


def _coverage(per_frame, annotations, min_score: float) -> tuple[int, int]:
    """(frames where every annotated object has a detection of its class with IoU >= 0.5 and
    score >= min_score, frames with annotated objects)."""
    covered = annotated = 0
    for t, ann in enumerate(annotations):
        objects = ann.objects if ann is not None else ()
        if not objects:
            continue
        annotated += 1
        dets = per_frame[t]
        keep = np.asarray(dets.valid) & (np.asarray(dets.scores) >= min_score)
        boxes, labels = np.asarray(dets.boxes)[keep], np.asarray(dets.labels)[keep]
        ok = True
        for obj in objects:
            same = boxes[labels == obj.label]
            if not len(same):
                ok = False
                break
            gt = np.repeat(np.asarray(obj.box, np.float64)[None], len(same), 0)
            iou, _ = vid_ap.pair_iou(same.astype(np.float64), gt)
            ok = ok and bool((iou >= 0.5).any())
        covered += ok
    return covered, annotated


def headline_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """mAP, mAP_slow/medium/fast and, where the frames' quality is known, mAP_clean,
    mAP_deteriorated and mAP_<kind>; with 'difference' to the baseline of the comparison
    ({'mAP': {'value', 'low', 'high'}, ...}, bootstrap intervals where computed)."""
    out = {k: summary.get(k) for k in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast")}
    out.update({k: v for k, v in summary.items() if k.startswith("mAP_track")})
    difference = {}
    for key, entry in summary.get("quality", {}).items():
        metric, subset = key.split("@")
        name = "mAP" if metric == "all" else f"mAP_{metric}"
        if subset != "all":
            name = f"{name}_{subset}" if metric != "all" else f"mAP_{subset}"
        out[name] = entry["value"]["value"]
        if "delta" in entry:
            difference[name] = entry["delta"]
    if difference:
        out["difference"] = difference
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A run's summary as the lines a user reads at the end of training."""
    seconds = summary.get("seconds", summary.get("train_seconds", 0.0))
    lines = [f"finished in {seconds:.0f}s (training {summary.get('train_seconds', 0.0):.0f}s)"]
    for phase, s in summary["phases"].items():
        for d in (s or {}).get("damaged_checkpoints", []):
            lines.append(
                f"warning: {phase}: checkpoint step {d['step']} was damaged ({d['reason']}); "
                f"moved to {d['moved_to']}"
            )
        if not s or "final" not in s:
            continue
        terms = ", ".join(
            f"{k} {s['first'][k]:.4f} -> {s['final'][k]:.4f}"
            for k in s["final"]
            if k == "loss" or k.endswith("/cls") or k.endswith("/box")
        )
        lines.append(f"{phase} ({s['steps']} steps): {terms}")
    if "pwcnet" in summary:
        f = summary["pwcnet"]
        levels = ", ".join(f"L{k} {f[f'epe_L{k}']:.2f}" for k in (6, 5, 4, 3, 2))
        lines.append(
            f"pwcnet: end-point error {f['epe']:.2f} px on {f['pairs']} val pairs, zero flow "
            f"{f['zero_epe']:.2f} px (ratio {f['epe_ratio']:.2f}; per level {levels}); "
            f"classical DIS flow {f['dis_epe']:.2f} px"
        )
        if "translation_gain" in f:
            lines.append(
                f"  a val frame against itself moved by {f['translation_shift']} px reads as "
                f"{f['translation_gain'] * f['translation_shift']:.2f} px (gain "
                f"{f['translation_gain']:.2f}; 1 = matched), against itself unmoved as "
                f"{f['self_flow']:.2f} px ({f['translation_images']} frames)"
            )
    for phase, e in summary.get("eval", {}).items():
        quality = ""
        if e.get("mAP_deteriorated") is not None:
            quality = (f", clean {report.pct(e['mAP_clean'])}, deteriorated "
                       f"{report.pct(e['mAP_deteriorated'])}")  # fmt: skip
        lines.append(
            f"{phase} {e['variant']} mAP {report.pct(e['mAP'])}% (slow {report.pct(e['mAP_slow'])},"
            f" medium {report.pct(e['mAP_medium'])}, fast {report.pct(e['mAP_fast'])}{quality})"
            + _track_text(e)
        )
        for key, d in e.get("difference", {}).items():
            if "low" in d and key in ("mAP", "mAP_fast", "mAP_deteriorated"):
                lines.append(
                    f"  {key} difference to the baseline {report.pct(d['value'])} "
                    f"(95% interval {report.pct(d['low'])} to {report.pct(d['high'])})"
                )
    if "demo" in summary:
        lines.append(f"demo video: {summary['demo']['output']}")
        for phase, d in summary["demo"].items():
            if isinstance(d, dict) and "frames_covered" in d:
                lines.append(
                    f"  {phase} ({d['variant']}): boxes of the right class cover the annotated "
                    f"objects in {d['frames_covered']} of {d['frames_annotated']} frames"
                )
    for path in summary.get("pictures", []):
        lines.append(f"picture: {path}")
    return "\n".join(lines)


def _track_text(entry: dict[str, Any]) -> str:
    """', mAP_track X% (tau 0.25 a, 0.5 b, 0.75 c)' when the evaluation linked tracks."""
    if entry.get("mAP_track") is None:
        return ""
    taus = ", ".join(f"{k[1:]} {report.pct(entry.get(f'mAP_track{k}'))}" for k in report.TRACK_TAUS)
    return f", mAP_track {report.pct(entry['mAP_track'])}% (tau {taus})"


# ----------------------------------------------------------------------------------------------
# Evaluation, demo, scoring, conversion


def evaluate(config: Any, workdir: str, checkpoint: str | None = None) -> JobResult:
    """Evaluate `checkpoint` into `<workdir>/eval/`: a folder of orbax checkpoints (into
    `eval/<its parent folder's name>/`), or another run's workdir (each of its trained phases,
    compared as at the end of training, on this workdir's data: e.g. a larger generated val
    split); without one, every trained phase of `workdir`. The table as text. Generated
    (synthetic) data that is not there yet is generated first."""
    validate_config(config, "eval", workdir)
    train_data.resolve_classes(config)
    with workdir_lock(workdir):
        train_data.generate_if_absent(config, workdir)
        return _evaluate(config, workdir, checkpoint)


def _evaluate(config: Any, workdir: str, checkpoint: str | None) -> JobResult:
    if not checkpoint:
        summaries, table = detect.evaluate_phases(config, workdir, workdir_lib.PHASES, workdir)
        return JobResult(text=table, data=summaries)
    if detect.trained_phases(checkpoint):  # another run's workdir
        summaries, table = detect.evaluate_phases(
            config, checkpoint, workdir_lib.PHASES, workdir, data_workdir=workdir
        )
        return JobResult(text=table, data=summaries)
    name = os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))
    root = train_data.data_source(config, workdir)
    summary = detect.evaluate_checkpoint(
        config, checkpoint, workdir_lib.eval_dir(workdir, name), root
    )
    label = report.model_label(name, summary["settings"]["variant"])
    table = f"evaluation on {config.eval.split} ({root}):\n"
    table += report.comparison_table({label: summary})
    if "tracks" in summary:
        table += f"\n{label}: {report.track_headline(summary['tracks'])}"
    return JobResult(text=table, data=summary)


def latest_checkpoint_dir(workdir: str) -> str:
    """The checkpoints of the last trained phase in `workdir` (phase 2, else phase 1)."""
    phases = detect.trained_phases(workdir)
    if not phases:
        raise UserError(workdir, "no trained phase; pass --checkpoint=FOLDER")
    return workdir_lib.checkpoint_dir(workdir, phases[-1])


def _draw(config: Any, folder: str, input_path: str, output_path: str) -> dict[str, Any]:
    model, variables, meta = restore_model(folder, config)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    stats = visualize.run_demo(
        engine, input_path, output_path, pixel_mean_bgr=config.data.pixel_mean_bgr,
        class_names=train_data.class_names(config), min_score=config.eval.demo_min_score,
        link=detect.link_settings(config),
    )  # fmt: skip
    return dict(stats, variant=model.variant, checkpoint=meta["checkpoint"], step=meta["step"],
                input=input_path, output=output_path)  # fmt: skip


def demo(
    config: Any, workdir: str, input_path: str, output_path: str, checkpoint: str | None = None
) -> JobResult:
    """Draw the detections of `checkpoint` (default: the workdir's last trained phase) on a
    video file or frame folder into an mp4."""
    validate_config(config, "demo", workdir)
    train_data.resolve_classes(config)
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
    detections: str | None,
    split: str,
    frame_list: str | None = None,
    seq_nms: bool = False,
    tracks: str | None = None,
) -> JobResult:
    """Score a devkit detections file against the annotations under `data.root`; writes
    `<workdir>/score.json`. A file without detections scores 0 and says so. With `tracks` (a
    track result file), also or instead score its tracks (docs/TRACK_PROTOCOL.md):
    `<workdir>/score_tracks.json`."""
    validate_config(config, "score", workdir)
    if tracks:
        return _score_tracks(config, workdir, detections, split, frame_list, seq_nms, tracks)
    if not detections:
        raise UserError("--mode=score", "needs --detections=FILE or --tracks=FILE")
    out_json = os.path.join(workdir, "score.json")
    summary = score_lib.score_detections(
        detections, train_data.data_source(config, workdir), split, frame_list=frame_list,
        out_json=out_json, seq_nms=seq_nms,
    )  # fmt: skip
    text = f"{report.score_report(summary)}\nwrote {out_json}"
    if not summary.get("counts", {}).get("detections"):
        text += f"\nwarning: {detections}: no detections in it: every AP is 0"
    return JobResult(text=text, data=summary)


def _score_tracks(
    config: Any,
    workdir: str,
    detections: str | None,
    split: str,
    frame_list: str | None,
    seq_nms: bool,
    tracks: str,
) -> JobResult:
    """`score` of a track file (and of a detections file given beside it)."""
    out_json = os.path.join(workdir, "score_tracks.json")
    summary = score_lib.score_tracks(
        tracks,
        train_data.data_source(config, workdir),
        split,
        frame_list=frame_list,
        out_json=out_json,
    )
    text = f"{report.track_report(summary)}\nwrote {out_json}"
    if detections:
        both = score(config, workdir, detections, split, frame_list, seq_nms)
        text = f"{both.text}\n{text}"
        summary = dict(both.data, tracks=summary)
    return JobResult(text=text, data=summary)


def convert(config: Any, workdir: str, source: str, kind: str) -> JobResult:
    """Convert a PyTorch checkpoint file (`kind`: ssvd | pwcnet | resnet) into an orbax
    checkpoint under `<workdir>/checkpoints`."""
    from ssvd_jax import convert as convert_lib

    validate_config(config, "convert", workdir)
    with workdir_lock(workdir):
        folder = convert_lib.run(config, workdir, source, kind)
    return JobResult(text=f"wrote {kind} variables to {folder}", data={"folder": folder})


def check(config: Any, workdir: str) -> JobResult:
    """Check the ILSVRC folder `data.root` as the dataset builders do (every JPEG decoded,
    every XML read), without building: every problem with what the build does about it (fix,
    drop, refuse) and the counts. `exit_code` 1 when the build would refuse the folder."""
    validate_config(config, "check", workdir)
    if config.data.source == "cocovid":
        return _check_cocovid(config)
    det = config.train.phase1_det
    result = dataset_check.check_root(
        config.data.root, datasets=("vid", "det") if det else ("vid",), decode=True
    )
    counts = dict(result.findings.counts)
    data = {"root": result.root, "scanned": result.scanned, "counts": counts,
            "problems": [dataclasses.asdict(f) for f in result.findings.items]}  # fmt: skip
    return JobResult(text=result.text(), data=data, exit_code=1 if result.refusals else 0)


def _check_cocovid(config: Any) -> JobResult:
    """`check` of a COCO-VID dataset: every JSON entry and image, as the build reads them."""
    from input_pipeline import cocovid

    source = train_data.data_source(config, "")
    findings, scanned = cocovid.check(source, decode=True)
    result = dataset_check.Report(str(source), findings, scanned)
    data = {"root": result.root, "scanned": result.scanned, "counts": dict(findings.counts),
            "problems": [dataclasses.asdict(f) for f in findings.items]}  # fmt: skip
    return JobResult(text=result.text(), data=data, exit_code=1 if result.refusals else 0)


def export(
    config: Any, workdir: str, checkpoint: str | None = None, output: str | None = None
) -> JobResult:
    """Export the online engine of `checkpoint` (default: the workdir's last trained phase) for
    one video at a time, with `jax.export`, into `output` (default:
    `<workdir>/export/<the checkpoint folder's parent name>`): the artifact that
    `tools/run_exported.py` runs without Flax or ssvd_jax (ssvd_jax/export.py says what is in
    it). A single-frame checkpoint (phase 1) exports the single-frame detector the same way."""
    validate_config(config, "export", workdir)
    train_data.resolve_classes(config)
    folder = checkpoint or latest_checkpoint_dir(workdir)
    name = os.path.basename(os.path.dirname(os.path.abspath(folder)))
    out = output or os.path.join(workdir, "export", name)
    model, variables, meta = restore_model(folder, config)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    source = {"checkpoint": meta["checkpoint"], "step": meta["step"], "variant": model.variant,
              "config": _model_settings(config)}  # fmt: skip
    exported = export_lib.export_engine(
        engine, out, pixel_mean_bgr=config.data.pixel_mean_bgr,
        platforms=tuple(config.export.platforms), source=source,
        class_names=train_data.class_names(config),
    )  # fmt: skip
    sizes = export_lib.artifact_bytes(out)
    left_out = "".join(f"; {p} left out ({why})" for p, why in
                       exported["platforms_left_out"].items())  # fmt: skip
    text = (
        f"exported {model.variant} ({meta['checkpoint']} step {meta['step']}) to {out}: "
        f"step {sizes['step'] / 2**10:.0f} KiB, init {sizes['init'] / 2**10:.0f} KiB, params "
        f"{sizes['params'] / 2**20:.1f} MiB; input {engine.image_size}x{engine.image_size}, "
        f"{engine.schedule} schedule, {engine.buffer_size}-frame buffer; platforms "
        f"{', '.join(exported['platforms'])}{left_out}\n"
        f"run it: python tools/run_exported.py --artifact {out} --input VIDEO_OR_FOLDER "
        f"--output detections.txt"
    )
    return JobResult(text=text, data=dict(exported, folder=out, bytes=sizes))


def _model_settings(config: Any) -> dict[str, Any]:
    """What identifies the model's configuration in an artifact's meta: its model section
    and the input size."""
    return {"model": config.model.to_dict(), "image_size": config.data.image_size}
