"""Run a model over a split's videos with the online engine, write devkit results, score them.

Frames are read straight from the ILSVRC folder (`Data/VID/<split>/...JPEG`) in the
evaluation's frame order (`evaluation.score.evaluation_videos`: the official lists when present,
which define the global 1-based frame ids), preprocessed by THE test-time transform
(`input_pipeline.preprocess`), and detected by `inference.OnlineEngine` with several videos in
lockstep (throughput mode). Detections are rescaled to each frame's original size, written as
`frame_id class score x1 y1 x2 y2` lines (atomically) and scored with the ILSVRC VID protocol,
overall and by motion speed. An evaluation whose settings (weights, schedule, post-processing,
...) equal a stored summary's is reused, not run again.

This is the layer above the engine and the protocol code (DESIGN.md: evaluation/detect.py);
the protocol modules of this package never import it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from input_pipeline import train_data
from input_pipeline.preprocess import preprocess, read_frame
from ssvd_jax import inference, metric_logging
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import restore_model
from ssvd_jax.evaluation import linking, report, results, score, subsets, track_results, vid_ap
from ssvd_jax.files import atomic_write_text


def video_frames(
    paths: Sequence[os.PathLike | str], image_size: int, mean_bgr: Sequence[float]
) -> Iterator[np.ndarray]:
    """Preprocessed [S, S, 3] frames of one video, in order."""
    for path in paths:
        yield preprocess(read_frame(path), image_size=image_size, mean_bgr=mean_bgr)


def detect_videos(
    engine: inference.OnlineEngine,
    data_root: os.PathLike | str,
    split: str,
    *,
    pixel_mean_bgr: Sequence[float],
    frame_list: os.PathLike | str | None,
    max_videos: int | None,
) -> tuple[dict[str, vid_ap.Detections], dict[str, float]]:
    """Detections of every frame of the split's videos (global frame ids, 0-based labels,
    original-image pixels), `engine.num_videos` videos at a time: {'fused': the model's} and,
    from a `per_stream` engine, each stream's own; and timing stats."""
    videos = score.evaluation_videos(data_root, split, frame_list)
    if max_videos:
        videos = videos[:max_videos]
    total = sum(v.num_frames for v, _ in videos)

    def inputs() -> Iterator[inference.Video]:
        for index, (video, _) in enumerate(videos):
            paths = [video.image_path(data_root, i) for i in range(video.num_frames)]
            height, width = read_frame(paths[0]).shape[:2]
            yield inference.Video(
                frames=video_frames(paths, engine.image_size, pixel_mean_bgr),
                length=video.num_frames,
                size=(width, height),
                key=index,
            )

    parts: dict[str, list[vid_ap.Detections]] = {}
    start, first_done = time.perf_counter(), None
    with metric_logging.progress_bar(total, f"eval {split}", unit="frame") as bar:
        for index, t, by_name in engine.run_streams(inputs()):
            if first_done is None:
                first_done = time.perf_counter()
            for name, dets in by_name.items():
                keep = dets.valid
                parts.setdefault(name, []).append(
                    vid_ap.Detections(
                        frame_id=np.full(int(keep.sum()), videos[index][1][t]),
                        label=dets.labels[keep],
                        score=dets.scores[keep],
                        boxes=dets.boxes[keep],
                    )
                )
            bar.update(1)
    end = time.perf_counter()
    stats = {
        "frames": total,
        "detect_seconds": end - start,
        # Steady state: from the first result (which waited for the compile) to the last.
        "frames_per_second": (total - 1) / (end - first_done) if total > 1 else float("nan"),
    }
    if not parts:
        return {"fused": vid_ap.Detections.concatenate([])}, stats
    return {name: vid_ap.Detections.concatenate(p) for name, p in parts.items()}, stats


def evaluate_engine(
    engine: inference.OnlineEngine,
    data_root: os.PathLike | str,
    split: str,
    out_dir: os.PathLike | str,
    *,
    pixel_mean_bgr: Sequence[float],
    frame_list: os.PathLike | str | None,
    seq_nms: bool,
    max_videos: int | None,
    link: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Detect, write `<out_dir>/det_VID_<split>.txt`, score, write the JSON summary. With a
    `per_stream` engine, each stream's own detections go to `det_VID_<split>_<stream>.txt`,
    and their scores into the summary's 'streams'. With `link` (`linking.link`'s settings,
    `method` non-empty), the detections linked into tracks go to `tracks_VID_<split>.txt`, their
    scores into the summary's 'tracks' and its mAP_track* keys (`link_and_score`)."""
    os.makedirs(out_dir, exist_ok=True)
    by_name, stats = detect_videos(
        engine, data_root, split, pixel_mean_bgr=pixel_mean_bgr, frame_list=frame_list,
        max_videos=max_videos,
    )  # fmt: skip
    frame_list_for_score = frame_list
    if max_videos:
        # Score only the detected videos: their frames keep their global ids.
        frame_list_for_score = _subset_list(data_root, split, frame_list, max_videos, out_dir)
    scored = {}
    for name, dets in by_name.items():
        suffix = "" if name == "fused" else f"_{name}"
        det_path = os.path.join(out_dir, f"det_VID_{split}{suffix}.txt")
        results.write_detections(det_path, dets)
        if name == "fused":  # the same rows for COCO tools: image_id, category_id, bbox, score
            results.write_coco_detections(
                os.path.join(out_dir, f"det_VID_{split}.json"), dets,
                score.category_ids(data_root, split),
            )  # fmt: skip
        scored[name] = score.score_detections(
            det_path, data_root, split, frame_list=frame_list_for_score, seq_nms=seq_nms
        )
    summary = scored.pop("fused")
    if scored:
        summary["streams"] = scored
    if link and link.get("method"):
        link_and_score(summary, by_name["fused"], data_root, split, frame_list_for_score,
                       out_dir, link)  # fmt: skip
    # Detection throughput, reading and preprocessing the JPEGs included.
    summary.update(detect_seconds=stats["detect_seconds"],
                   frames_per_second=stats["frames_per_second"])  # fmt: skip
    results.write_summary(os.path.join(out_dir, f"summary_VID_{split}.json"), summary)
    return summary


def link_and_score(
    summary: dict[str, Any],
    dets: vid_ap.Detections,
    data_root: os.PathLike | str,
    split: str,
    frame_list: os.PathLike | str | None,
    out_dir: os.PathLike | str,
    link: dict[str, Any],
) -> None:
    """Link `dets` into tracks per video and class, write `<out_dir>/tracks_VID_<split>.txt`,
    score it (docs/TRACK_PROTOCOL.md) into `summary['tracks']` and copy the headline keys
    (mAP_track, mAP_track@<tau>) to the summary's top level."""
    video_ids = [ids for _, ids in score.evaluation_videos(data_root, split, frame_list)]
    start = time.perf_counter()
    tracks = linking.link(dets, video_ids, **link)
    seconds = time.perf_counter() - start
    path = os.path.join(out_dir, f"tracks_VID_{split}.txt")
    track_results.write_tracks(path, tracks)
    scored = score.score_tracks(path, data_root, split, frame_list=frame_list)
    scored.update(link=dict(link), link_seconds=seconds)
    summary["tracks"] = scored
    summary.update({k: v for k, v in scored.items() if k.startswith("mAP_track")})


def _subset_list(
    data_root: os.PathLike | str,
    split: str,
    frame_list: os.PathLike | str | None,
    max_videos: int,
    out_dir: os.PathLike | str,
) -> str:
    """A VID_val_frames-style list (`path frame_id`) of the first `max_videos` videos."""
    lines = []
    for video, ids in score.evaluation_videos(data_root, split, frame_list)[:max_videos]:
        for stem, frame_id in zip(video.frames, ids, strict=True):
            lines.append(f"{video.video_id}/{stem} {int(frame_id)}\n")
    path = os.path.join(out_dir, f"frames_{split}_first{max_videos}.txt")
    atomic_write_text(path, "".join(lines))
    return path


# ----------------------------------------------------------------------------------------------
# Checkpoints -> evaluations

# What an evaluation's result depends on besides the weights; a stored summary with the same
# values (and checkpoint step) is reused instead of detecting again.
_EVAL_FIELDS = ("schedule", "num_supports", "split", "frame_list", "max_videos", "seq_nms",
                "cached")  # fmt: skip


def eval_settings(config: Any, variant: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything an evaluation's numbers depend on (weights by folder and step)."""
    settings = {k: config.eval[k] for k in _EVAL_FIELDS}
    settings["link"] = config.eval.link.to_dict()
    settings.update(
        checkpoint=meta["checkpoint"],
        step=meta["step"],
        variant=variant,
        half_window=config.data.support_range,
        image_size=config.data.image_size,
        dtype=config.model.dtype,
        postprocess=config.postprocess.to_dict(),
    )
    return settings


def evaluate_checkpoint(
    config: Any, folder: str, out_dir: str, data_root: str, *, reuse: bool = True
) -> dict[str, Any]:
    """Evaluate the latest checkpoint in `folder` on `config.eval.split` into `out_dir`
    (devkit detections + JSON summary with its 'settings'); an earlier identical evaluation
    there is reused."""
    ev = config.eval
    link = link_settings(config)  # bad settings fail here, before any restoring or detecting
    summary_path = os.path.join(out_dir, f"summary_VID_{ev.split}.json")
    model, variables, meta = restore_model(folder, config)
    settings = eval_settings(config, model.variant, meta)
    if reuse and os.path.isfile(summary_path):
        with open(summary_path) as f:
            previous = json.load(f)
        if previous.get("settings") == json.loads(json.dumps(settings)):
            logging.info("eval: %s step %s already evaluated in %s", folder, meta["step"], out_dir)
            return previous
    engine = inference.create_engine(config, model, variables, per_stream=True)
    logging.info(
        "eval: %s (%s, step %s) on %s/%s, schedule %s, %d video(s) per step",
        folder, model.variant, meta["step"], data_root, ev.split, engine.schedule,
        engine.num_videos,
    )  # fmt: skip
    summary = evaluate_engine(
        engine, data_root, ev.split, out_dir,
        pixel_mean_bgr=config.data.pixel_mean_bgr, frame_list=ev.frame_list or None,
        seq_nms=ev.seq_nms, max_videos=ev.max_videos or None, link=link,
    )  # fmt: skip
    summary["settings"] = settings
    results.write_summary(summary_path, summary)
    return summary


def link_settings(config: Any) -> dict[str, Any] | None:
    """`linking.link`'s keyword arguments from `eval.link` (checked), None when it is off."""
    settings = config.eval.link.to_dict()
    if not settings["method"]:
        return None
    linking.check_settings(**settings)
    return settings


def trained_phases(workdir: str, phases: Sequence[str] = workdir_lib.PHASES) -> list[str]:
    """The phases of `phases` that have checkpoints in `workdir`, in order."""
    out = []
    for phase in phases:
        folder = workdir_lib.checkpoint_dir(workdir, phase)
        if os.path.isdir(folder) and os.listdir(folder):
            out.append(phase)
    return out


def evaluate_phases(
    config: Any,
    workdir: str,
    phases: Sequence[str],
    out_workdir: str,
    data_workdir: str | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """Evaluate the latest checkpoint of each trained phase of `workdir` (phase 1: the
    single-frame baseline, phase 2: SSVD) on the data of `data_workdir` (default: `workdir`)
    into `<out_workdir>/eval/<phase>/`; write the side-by-side table to
    `<out_workdir>/eval/results_<split>.md`. Returns ({phase: summary}, the table)."""
    root = train_data.data_source(config, data_workdir or workdir)
    summaries, rows = {}, {}
    phases = [p for p in phases if p in workdir_lib.PHASES]  # the detectors (not pwcnet)
    for phase in trained_phases(workdir, phases):
        folder = workdir_lib.checkpoint_dir(workdir, phase)
        summary = evaluate_checkpoint(
            config, folder, workdir_lib.eval_dir(out_workdir, phase), root
        )
        summaries[phase] = summary
        rows[report.model_label(phase, summary["settings"]["variant"])] = summary
    if not summaries:
        raise FileNotFoundError(f"{workdir}: no trained phase to evaluate ({', '.join(phases)})")
    split = config.eval.split
    table = report.comparison_table(rows)
    if len(summaries) > 1 or any("streams" in x for x in summaries.values()):
        comparison = compare_models(config, root, summaries)
        results.write_summary(
            os.path.join(out_workdir, "eval", f"comparison_{split}.json"), comparison
        )
        labels = {}
        for phase, summary in summaries.items():
            summary["quality"] = comparison["models"][phase]
            labels[phase] = report.model_label(phase, summary["settings"]["variant"])
            for stream, stream_summary in summary.get("streams", {}).items():
                stream_summary["quality"] = comparison["models"][f"{phase}:{stream}"]
                labels[f"{phase}:{stream}"] = f"  {report.STREAM_NAMES[stream]} alone"
        table += "\n\n" + report.quality_table(comparison, labels)
    per_class = "".join(f"\n{label}, AP per class:\n\n```\n{report.class_table(s)}\n```\n"
                        for label, s in rows.items())  # fmt: skip
    atomic_write_text(
        os.path.join(out_workdir, "eval", f"results_{split}.md"),
        f"{_protocol(config)} on {root} ({split}); motion speed buckets as FGFA.\n\n{table}\n"
        + per_class,
    )
    tracks = [f"{label}: {report.track_headline(s['tracks'])}" for label, s in rows.items()
              if "tracks" in s]  # fmt: skip
    text = "\n".join([f"evaluation on {split} ({root}):\n{table}", *tracks])
    return summaries, text


def _protocol(config: Any) -> str:
    if config.eval.iou_rule == "iou50":
        return "ImageNet VID's AP protocol with plain IoU >= 0.5"
    return "ImageNet VID protocol"


def compare_models(
    config: Any, data_root: str, summaries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Every evaluated model (and each stream of a two-stream SSVD) on the same frames, by
    frame quality where the dataset records it, with bootstrap intervals over videos.

    Returns {'baseline', 'models': {name: {'<metric>@<subset>': {'value', 'low', 'high'} and,
    but for the baseline, 'delta' likewise}}, 'subsets': {name: frames}, 'videos',
    'samples'}: metrics all/slow/medium/fast, subsets 'all' frames, 'clean', 'deteriorated'
    and each deterioration kind (intervals on the headline ones only; `eval.bootstrap_samples`
    resamples). Model names: the phase, '<phase>:motion' / '<phase>:sample' for streams."""
    first = next(iter(summaries.values()))
    gt = score.load_ground_truth(
        data_root, config.eval.split, first.get("frame_list"), collections.Counter()
    )
    videos = score.evaluation_videos(data_root, config.eval.split, first.get("frame_list"))
    qualities = subsets.frame_qualities(
        score.files_root(data_root), [v.video_id for v, _ in videos], [v.frames for v, _ in videos]
    )
    masks = {"all": np.ones(gt.num_frames, bool)}
    if qualities is not None:
        masks.update(subsets.quality_masks(qualities))
    models = {}
    for phase, summary in summaries.items():
        models[phase] = subsets.score_terms(gt, results.read_detections(summary["detections_file"]))
        for stream, stream_summary in summary.get("streams", {}).items():
            dets = results.read_detections(stream_summary["detections_file"])
            models[f"{phase}:{stream}"] = subsets.score_terms(gt, dets)
    baseline = next(iter(summaries))
    video_index = subsets.video_of_frame(gt.video_starts, gt.num_frames)
    headline = {k: masks[k] for k in ("all", "clean", "deteriorated") if k in masks}
    intervals = subsets.bootstrap(
        models, headline, video_index, baseline=baseline,
        num_samples=config.eval.bootstrap_samples, seed=config.eval.bootstrap_seed,
    )  # fmt: skip
    out_models: dict[str, dict[str, Any]] = {}
    for name, terms in models.items():
        entry = {key: {k: dataclasses.asdict(v) for k, v in d.items()}
                 for key, d in intervals[name].items()}  # fmt: skip
        for subset, mask in masks.items():
            if subset in headline:
                continue
            value = subsets.weighted_map(terms["all"], mask.astype(np.float64))
            entry[f"all@{subset}"] = {"value": {"value": value}}
            if name != baseline:
                base = subsets.weighted_map(models[baseline]["all"], mask.astype(np.float64))
                entry[f"all@{subset}"]["delta"] = {"value": value - base}
        out_models[name] = entry
    return {
        "baseline": baseline,
        "models": out_models,
        "subsets": {k: int(m.sum()) for k, m in masks.items()},
        "videos": len(videos),
        "samples": config.eval.bootstrap_samples,
    }


def first_video_folder(config: Any, workdir: str) -> str:
    """The frame folder of the first video of the evaluation split (the main job's demo)."""
    root = train_data.data_source(config, workdir)
    video, _ = score.evaluation_videos(root, config.eval.split, config.eval.frame_list or None)[0]
    return os.path.dirname(os.fspath(video.image_path(root, 0)))
