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

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
from absl import logging

from ssvd_jax import inference
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
) -> vid_ap.Detections:
    """Detections of every frame of the split's videos (global frame ids, 0-based labels,
    original-image pixels)."""
    videos = score.evaluation_videos(data_root, split, frame_list)
    if max_videos is not None:
        videos = videos[:max_videos]
    total = sum(v.num_frames for v, _ in videos)
    parts: list[vid_ap.Detections] = []
    done, start = 0, time.perf_counter()
    for first in range(0, len(videos), engine.num_videos):
        group = videos[first : first + engine.num_videos]
        paths = [[v.image_path(data_root, i) for i in range(v.num_frames)] for v, _ in group]
        streams = [video_frames(p, engine.image_size, pixel_mean_bgr) for p in paths]
        sizes = [_frame_size(p[0]) for p in paths]
        lengths = [v.num_frames for v, _ in group]
        for v, t, dets in engine.run(streams, lengths, sizes):
            keep = dets.valid
            parts.append(
                vid_ap.Detections(
                    frame_id=np.full(int(keep.sum()), group[v][1][t]),
                    label=dets.labels[keep],
                    score=dets.scores[keep],
                    boxes=dets.boxes[keep],
                )
            )
            done += 1
            if done % 100 == 0 or done == total:
                rate = done / (time.perf_counter() - start)
                logging.info("eval: %d/%d frames, %.1f frames/s, ETA %.0fs", done, total, rate,
                             (total - done) / rate)  # fmt: skip
    if not parts:
        return vid_ap.Detections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 4)))
    return vid_ap.Detections.concatenate(parts)


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
    dets = detect_videos(
        engine, data_root, split, pixel_mean_bgr=pixel_mean_bgr, frame_list=frame_list,
        max_videos=max_videos,
    )  # fmt: skip
    det_path = os.path.join(out_dir, f"det_VID_{split}{tag}.txt")
    results.write_detections(det_path, dets)
    frame_list_for_score = frame_list
    if max_videos is not None:
        # Score only the detected videos: their frames keep their global ids.
        frame_list_for_score = _subset_list(data_root, split, frame_list, max_videos, out_dir)
    return score.score_detections(
        det_path,
        data_root,
        split,
        frame_list=frame_list_for_score,
        out_json=os.path.join(out_dir, f"summary_VID_{split}{tag}.json"),
        seq_nms=seq_nms,
    )


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
