"""Run a model over ILSVRC VID videos with the online engine, write devkit results, score them.

Frames are read straight from the user's ILSVRC folder (`Data/VID/<split>/...JPEG`) in the
evaluation's frame order (`evaluation.score.evaluation_videos`: the official lists when present,
which define the global 1-based frame ids), preprocessed exactly as the release does (cv2
INTER_LINEAR resize to the square input, BGR minus the mean), and detected by
`inference.OnlineEngine` with several videos in lockstep (throughput mode). Detections are
rescaled to each frame's original size, written as `frame_id class score x1 y1 x2 y2` lines
(atomically) and scored with the ILSVRC VID protocol, overall and by motion speed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ssvd_jax import inference, metric_logging
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.evaluation import results, score, vid_ap


class FrameReadError(ValueError):
    """A listed frame cannot be read; the message names the file."""


def video_frames(
    paths: Sequence[os.PathLike | str], image_size: int, mean_bgr: Sequence[float]
) -> Iterator[np.ndarray]:
    """Normalised [S, S, 3] frames of one video, as the release preprocesses them."""
    mean = np.asarray(mean_bgr, np.float32)
    for path in paths:
        image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameReadError(f"{path}: missing or not a readable image")
        resized = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        yield resized.astype(np.float32) - mean


def _frame_size(path: os.PathLike | str) -> tuple[int, int]:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameReadError(f"{path}: missing or not a readable image")
    return image.shape[1], image.shape[0]


def detect_videos(
    engine: inference.OnlineEngine,
    data_root: os.PathLike | str,
    split: str,
    *,
    pixel_mean_bgr: Sequence[float],
    frame_list: os.PathLike | str | None = None,
    max_videos: int | None = None,
) -> tuple[vid_ap.Detections, dict[str, float]]:
    """Detections of every frame of the split's videos (global frame ids, 0-based labels,
    original-image pixels), `engine.num_videos` videos at a time, and timing stats."""
    videos = score.evaluation_videos(data_root, split, frame_list)
    if max_videos:
        videos = videos[:max_videos]
    total = sum(v.num_frames for v, _ in videos)

    def inputs() -> Iterator[inference.Video]:
        for index, (video, _) in enumerate(videos):
            paths = [video.image_path(data_root, i) for i in range(video.num_frames)]
            yield inference.Video(
                frames=video_frames(paths, engine.image_size, pixel_mean_bgr),
                length=video.num_frames,
                size=_frame_size(paths[0]),
                key=index,
            )

    parts: list[vid_ap.Detections] = []
    start, first_done = time.perf_counter(), None
    with metric_logging.progress_bar(total, f"eval {split}", unit="frame") as bar:
        for index, t, dets in engine.run(inputs()):
            if first_done is None:
                first_done = time.perf_counter()
            keep = dets.valid
            parts.append(
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
        empty = vid_ap.Detections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 4)))
        return empty, stats
    return vid_ap.Detections.concatenate(parts), stats


def evaluate(
    engine: inference.OnlineEngine,
    data_root: os.PathLike | str,
    split: str,
    out_dir: os.PathLike | str,
    *,
    pixel_mean_bgr: Sequence[float],
    frame_list: os.PathLike | str | None = None,
    seq_nms: bool = False,
    max_videos: int | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """Detect, write `<out_dir>/det_VID_<split><tag>.txt`, score, write the JSON summary."""
    os.makedirs(out_dir, exist_ok=True)
    dets, stats = detect_videos(
        engine, data_root, split, pixel_mean_bgr=pixel_mean_bgr, frame_list=frame_list,
        max_videos=max_videos,
    )  # fmt: skip
    det_path = os.path.join(out_dir, f"det_VID_{split}{tag}.txt")
    results.write_detections(det_path, dets)
    frame_list_for_score = frame_list
    if max_videos:
        # Score only the detected videos: their frames keep their global ids.
        frame_list_for_score = _subset_list(data_root, split, frame_list, max_videos, out_dir)
    summary_path = os.path.join(out_dir, f"summary_VID_{split}{tag}.json")
    summary = score.score_detections(
        det_path,
        data_root,
        split,
        frame_list=frame_list_for_score,
        seq_nms=seq_nms,
    )
    # Detection throughput, reading and preprocessing the JPEGs included.
    summary.update(detect_seconds=stats["detect_seconds"],
                   frames_per_second=stats["frames_per_second"])  # fmt: skip
    results.write_summary(summary_path, summary)
    return summary


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
    results.atomic_write_text(path, "".join(lines))
    return path


# ----------------------------------------------------------------------------------------------
# Checkpoints -> models -> evaluations (`main.py --mode=eval`, `--mode=demo`, the end of training)

# What an evaluation's result depends on besides the weights; a stored summary with the same
# values (and checkpoint step) is reused instead of detecting again.
_EVAL_FIELDS = ("schedule", "num_supports", "release_half_window", "paper_half_window", "split",
                "frame_list", "max_videos", "seq_nms", "cached")  # fmt: skip


class CheckpointKindError(ValueError):
    """The checkpoint holds no detector (e.g. a converted PWC-Net or ResNet)."""


def model_config_for(config: Any, variant: str) -> Any:
    """`config.model` with `variant` replaced (phase 1 is SSVD's single_frame variant)."""
    model_config = config.model.copy_and_resolve_references()
    with model_config.unlocked():
        model_config.variant = variant
    return model_config


def checkpoint_variant(config: Any, meta: dict[str, Any], folder: str) -> str:
    """The SSVD variant a checkpoint holds: phase 1's single-frame detector, else the config's
    model (a phase-2 training run or a converted release checkpoint)."""
    kind = meta.get("phase") or meta.get("kind")
    if kind == "phase1":
        return "single_frame"
    if kind in ("phase2", "ssvd"):
        return config.model.variant
    raise CheckpointKindError(
        f"{folder}: a {kind!r} checkpoint holds no detector; evaluate a training phase's "
        "checkpoints or a converted release (--checkpoint_kind=ssvd)"
    )


def load_model(config: Any, folder: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(SSVD module, variables, checkpoint meta) of the latest step in `folder`."""
    from ssvd_jax.checkpoint import Checkpointer
    from ssvd_jax.models import ssvd as ssvd_lib
    from ssvd_jax.models.params import abstract_variables

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    ckpt = Checkpointer(folder, async_save=False)
    try:
        meta = ckpt.read_meta()
        variant = checkpoint_variant(config, meta, folder)
        model = ssvd_lib.create_ssvd(model_config_for(config, variant))
        s = config.data.image_size
        expected = abstract_variables(
            model,
            jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32),
            jax.ShapeDtypeStruct((1, 2, s, s, 3), jnp.float32),
        )
        step = ckpt.latest_step()
        variables, meta = ckpt.restore_variables(
            {"params": expected["params"], "batch_stats": expected.get("batch_stats", {})}, step
        )
    finally:
        ckpt.close()
    meta = dict(meta, checkpoint=os.path.abspath(folder), step=step)
    return model, variables, meta


def eval_settings(config: Any, variant: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything an evaluation's numbers depend on (weights by folder and step)."""
    settings = {k: config.eval[k] for k in _EVAL_FIELDS}
    settings.update(
        checkpoint=meta["checkpoint"],
        step=meta["step"],
        variant=variant,
        image_size=config.data.image_size,
        dtype=config.model.dtype,
        postprocess=config.postprocess.to_dict(),
    )
    return settings


def evaluate_checkpoint(
    config: Any, folder: str, out_dir: str, data_root: str, *, reuse: bool = True
) -> dict[str, Any]:
    """Evaluate the latest checkpoint in `folder` on `config.eval.split` into `out_dir`
    (devkit detections + JSON summary); an earlier identical evaluation there is reused."""
    ev = config.eval
    summary_path = os.path.join(out_dir, f"summary_VID_{ev.split}.json")
    model, variables, meta = load_model(config, folder)
    settings = eval_settings(config, model.variant, meta)
    if reuse and os.path.isfile(summary_path):
        with open(summary_path) as f:
            previous = json.load(f)
        if previous.get("settings") == json.loads(json.dumps(settings)):
            logging.info("eval: %s step %s already evaluated in %s", folder, meta["step"], out_dir)
            return previous
    engine = inference.create_engine(config, model, variables)
    logging.info(
        "eval: %s (%s, step %s) on %s/%s, schedule %s, %d video(s) per step",
        folder, model.variant, meta["step"], data_root, ev.split, engine.schedule,
        engine.num_videos,
    )  # fmt: skip
    summary = evaluate(
        engine, data_root, ev.split, out_dir,
        pixel_mean_bgr=config.data.pixel_mean_bgr, frame_list=ev.frame_list or None,
        seq_nms=ev.seq_nms, max_videos=ev.max_videos or None,
    )  # fmt: skip
    summary["settings"] = settings
    results.write_summary(summary_path, summary)
    return summary


def phase_label(phase: str, variant: str) -> str:
    if variant == "single_frame":
        return f"single-frame baseline ({phase})"
    return f"SSVD {variant} ({phase})"


def comparison_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per evaluated model, mAP overall and by motion speed, frames/s."""

    def cell(v: Any) -> str:
        return "-" if v is None or v != v else f"{100 * v:.1f}"

    lines = [
        "| model | mAP (%) | slow | medium | fast | frames/s |",
        "|---|---|---|---|---|---|",
    ]
    for label, s in rows.items():
        lines.append(
            f"| {label} | {cell(s.get('mAP'))} | {cell(s.get('mAP_slow'))} | "
            f"{cell(s.get('mAP_medium'))} | {cell(s.get('mAP_fast'))} | "
            f"{s.get('frames_per_second', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def evaluate_workdir(
    config: Any,
    workdir: str,
    phases: Sequence[str] = workdir_lib.PHASES,
    *,
    out_workdir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate the latest checkpoint of each trained phase of `workdir` (phase 1: the
    single-frame baseline, phase 2: SSVD), print and write the side-by-side table.

    Results go to `<out_workdir>/eval/<phase>/` (default: the workdir itself). Returns
    {phase: summary} for the phases that have checkpoints.
    """
    out_workdir = out_workdir or workdir
    root = workdir_lib.data_root(config, workdir)
    summaries, rows = {}, {}
    for phase in phases:
        folder = workdir_lib.checkpoint_dir(workdir, phase)
        if not os.path.isdir(folder) or not os.listdir(folder):
            continue
        summary = evaluate_checkpoint(
            config, folder, workdir_lib.eval_dir(out_workdir, phase), root
        )
        summaries[phase] = summary
        rows[phase_label(phase, summary["settings"]["variant"])] = summary
    if not summaries:
        raise FileNotFoundError(f"{workdir}: no trained phase to evaluate ({', '.join(phases)})")
    table = comparison_table(rows)
    split = config.eval.split
    results.atomic_write_text(
        os.path.join(out_workdir, "eval", f"results_{split}.md"),
        f"ImageNet VID protocol on {root} ({split}); motion speed buckets as FGFA.\n\n{table}\n",
    )
    print(f"\nevaluation on {split} ({root}):\n{table}")
    return summaries


def latest_checkpoint_dir(workdir: str) -> str:
    """The checkpoints of the last trained phase in `workdir` (phase 2, else phase 1)."""
    for phase in reversed(workdir_lib.PHASES):
        folder = workdir_lib.checkpoint_dir(workdir, phase)
        if os.path.isdir(folder) and os.listdir(folder):
            return folder
    raise FileNotFoundError(f"{workdir}: no trained phase; pass --checkpoint=FOLDER")


def demo(config: Any, folder: str, input_path: str, output_path: str) -> dict[str, float]:
    """Draw the detections of the checkpoint in `folder` on a video or frame folder."""
    from input_pipeline.classes import CLASS_NAMES
    from ssvd_jax import visualize

    model, variables, meta = load_model(config, folder)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    stats = visualize.run_demo(
        engine, input_path, output_path, pixel_mean_bgr=config.data.pixel_mean_bgr,
        class_names=CLASS_NAMES, min_score=config.eval.demo_min_score,
    )  # fmt: skip
    print(
        f"demo: {stats['frames']} frames of {input_path} -> {output_path}, "
        f"{stats['fps']:.1f} frames/s ({model.variant}, {folder} step {meta['step']})"
    )
    return dict(stats, checkpoint=meta["checkpoint"], step=meta["step"], output=output_path)


def first_video_folder(config: Any, workdir: str) -> str:
    """The frame folder of the first video of the evaluation split (the main job's demo)."""
    root = workdir_lib.data_root(config, workdir)
    video, _ = score.evaluation_videos(root, config.eval.split, config.eval.frame_list or None)[0]
    return os.path.dirname(os.fspath(video.image_path(root, 0)))
