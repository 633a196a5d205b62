"""Linking speed: a 1000-frame video with 100 detections per frame, linked into tracks.

  python -m benchmarks.linking [--frames 1000] [--per-frame 100] [--repeats 3] [--seed 0]

Detections: 10 objects moving smoothly (random walk of the velocity, 40-200 px boxes in a
1280x720 frame, 2 px box jitter, scores 0.5-1) plus 90 clutter boxes per frame at random places
and sizes (20-300 px, scores 0.05-0.5), drawn anew every frame. Clutter of random boxes links
into long random chains, which makes every path removal update many best paths: the hard case
for the greedy Viterbi. 'one class': all 100 in one class (one linking problem of 100 boxes per
frame, the worst case); '30 classes': the objects in classes 0-9 and the clutter spread over
all 30, as a detector's output over the VID classes. Each row: the median wall time of
`evaluation.linking.link` (grouping, links, Viterbi, ids) over the repeats, the tracks found, and
the machine's speed before/after (a 1024^3 float32 matmul, benchmarks.measure) to tell a
throttled run apart. Seq-NMS (FGFA's, `seq_nms.seq_nms_tracks`) on the same input for
comparison.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import measure  # noqa: E402
from ssvd_jax.evaluation import linking, vid_ap  # noqa: E402

OBJECTS = 10
WIDTH, HEIGHT = 1280, 720


def video(frames: int, per_frame: int, classes: int, seed: int) -> vid_ap.Detections:
    """The benchmark's detections (module docstring)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 200, (OBJECTS, 2))
    pos = rng.uniform(0, 1, (OBJECTS, 2)) * ([WIDTH, HEIGHT] - size)
    vel = rng.normal(0, 3, (OBJECTS, 2))
    clutter = per_frame - OBJECTS
    frame_id, label, score, boxes = [], [], [], []
    for t in range(frames):
        vel = vel + rng.normal(0, 0.3, vel.shape)
        pos = np.clip(pos + vel, 0, [WIDTH, HEIGHT] - size)
        obj = np.c_[pos, pos + size - 1] + rng.normal(0, 2, (OBJECTS, 4))
        wh = rng.uniform(20, 300, (clutter, 2))
        xy = rng.uniform(0, 1, (clutter, 2)) * ([WIDTH, HEIGHT] - wh)
        boxes.append(np.r_[obj, np.c_[xy, xy + wh - 1]])
        score.append(np.r_[rng.uniform(0.5, 1, OBJECTS), rng.uniform(0.05, 0.5, clutter)])
        obj_label = np.arange(OBJECTS) % classes
        label.append(np.r_[obj_label, rng.integers(0, classes, clutter)])
        frame_id.append(np.full(per_frame, t + 1))
    return vid_ap.Detections(
        np.concatenate(frame_id), np.concatenate(label), np.concatenate(score),
        np.concatenate(boxes),
    )  # fmt: skip


def time_case(dets, frames, repeats, **settings) -> tuple[float, int, float, float]:
    """(median seconds, tracks, calibration ms before, after)."""
    before = measure.calibrate() * 1000
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = linking.link(dets, [np.arange(1, frames + 1)], **settings)
        times.append(time.perf_counter() - start)
    after = measure.calibrate() * 1000
    return statistics.median(times), len(np.unique(out.track_id)), before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--per-frame", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-seq-nms", action="store_true", help="skip the Seq-NMS rows")
    args = parser.parse_args()
    cases = [
        (1, "viterbi", 0.3, 0), (1, "viterbi", 0.3, 1), (1, "viterbi", 0.3, 2),
        (1, "viterbi", 0.5, 0), (1, "viterbi", 0.5, 2),
        (30, "viterbi", 0.3, 0), (30, "viterbi", 0.3, 2),
    ]  # fmt: skip
    if not args.no_seq_nms:
        cases += [(1, "seq_nms", 0.5, 0), (30, "seq_nms", 0.5, 0)]
    clutter = args.per_frame - OBJECTS
    print(f"{args.frames} frames x {args.per_frame} detections per frame ({OBJECTS} objects + "
          f"{clutter} clutter), seed {args.seed}, median of {args.repeats}")  # fmt: skip
    print()
    print("| classes | method | min_iou | max_gap | seconds | tracks | matmul ms before/after |")
    print("|---|---|---|---|---|---|---|")
    data = {}
    for classes, method, min_iou, max_gap in cases:
        if classes not in data:
            data[classes] = video(args.frames, args.per_frame, classes, args.seed)
        seconds, num, before, after = time_case(
            data[classes], args.frames, args.repeats, method=method, iou_weight=1.0,
            min_iou=min_iou, max_gap=max_gap, rescore="none",
        )  # fmt: skip
        link = f"{min_iou} | {max_gap}" if method == "viterbi" else "0.5 (FGFA) | -"
        name = "one class" if classes == 1 else f"{classes} classes"
        print(f"| {name} | {method} | {link} | {seconds:.2f} | {num} | "
              f"{before:.0f} / {after:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
