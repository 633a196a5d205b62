"""Training-clip throughput of the input pipeline: clips/s and memory over time.

  python benchmarks/input_pipeline.py [--data ILSVRC_ROOT] [--seconds 30] [--batch 8]

The trainer's phase-2 batches (`input_pipeline.train_data.create_batches`) with the numbers of
configs/default.py (reference + train.num_supports supports from [t-K, t+K], K =
data.support_range, at data.image_size, full SSD augmentation), every frame a reference
(data.vid_frames = 'all'), from 1280x720 JPEGs: by default the real ImageNet VID slice in
tests/fixtures/ilsvrc2015_vid_mini (built into a temporary TFDS folder first); with
--synthetic, a generated 1280x720 dataset. Prints clips/s per interval, their median, and the
resident memory at each interval (flat = no leak) and the process's peak (which includes
generating the data with --synthetic). A 1024^3 float32 matmul is timed
before and after as a calibration: this machine throttles under sustained load
(shared/docs/PERF_NOTES.md), so compare runs only when the calibration agrees.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "tests/fixtures/ilsvrc2015_vid_mini"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _calibration_ms() -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024), np.float32)
    a @ a
    t = time.perf_counter()
    for _ in range(3):
        a @ a
    return (time.perf_counter() - t) / 3 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=pathlib.Path, default=FIXTURE, help="ILSVRC2015 root")
    parser.add_argument("--synthetic", action="store_true", help="generate 1280x720 data")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--intervals", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch")
    parser.add_argument("--image-size", type=int, help="default: the config's data.image_size")
    args = parser.parse_args()

    from configs import default
    from input_pipeline import builders, pipeline, synthetic, train_data

    config = default.get_config()
    config.data.vid_frames = "all"
    if args.image_size:
        config.data.image_size = args.image_size
    size, num_frames = config.data.image_size, 1 + config.train.num_supports

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_input_"))
    root = args.data
    if args.synthetic or not root.is_dir():
        root = work / "ilsvrc"
        synthetic.generate(
            root,
            width=1280,
            height=720,
            num_train_videos=3,
            num_val_videos=0,
            frames_per_video=40,
            num_det_images=0,
        )
    builders.prepare("imagenet_vid", root, work / "tfds")
    vid = pipeline.open_table("imagenet_vid", "train", work / "tfds")
    print(f"data: {root} ({vid.num_videos} videos, {vid.num_records} frames)")
    calib_before = _calibration_ms()
    it = train_data.create_batches(
        config,
        "phase2",
        str(work / "tfds"),
        start_step=0,
        batch_dims=(1, args.batch),
        host_index=0,
        num_hosts=1,
    )
    for _ in range(3):  # warm-up: thread pools, autotuning
        next(it)
    rates, rss = [], []
    interval = args.seconds / args.intervals
    for _ in range(args.intervals):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < interval:
            batch = next(it)
            n += int(batch["frames"].shape[0] * batch["frames"].shape[1])
        rates.append(n / (time.perf_counter() - t0))
        rss.append(_rss_mib())
    calib_after = _calibration_ms()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"clips of {num_frames} frames (supports from [t-{config.data.support_range}, "
        f"t+{config.data.support_range}]) at {size}x{size}, augmentation on, {os.cpu_count()} cores"
    )
    print("clips/s per interval: " + " ".join(f"{r:.1f}" for r in rates))
    print(f"clips/s median: {np.median(rates):.1f}")
    print("RSS MiB per interval: " + " ".join(f"{r:.0f}" for r in rss))
    print(f"peak RSS: {peak:.0f} MiB")
    print(f"calibration matmul: {calib_before:.0f} ms before, {calib_after:.0f} ms after")
    it.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
