"""The exported artifact vs the online engine: artifact size and per-frame latency.

  python -m benchmarks.export_latency                       # runs/synthetic's phase 2
  python -m benchmarks.export_latency --workdir=runs/synthetic --phase=phase1 --rounds=7

Exports the workdir's phase (`ssvd_jax.export`, as `main.py --mode=export` does) into a
temporary folder, then runs the first val video through the engine (`OnlineEngine.run`, one
video per step, as `--mode=eval` with batch_videos 1) and through tools/run_exported.py's
`Artifact.detect_video`, alternating (engine, runner, engine, runner, ...; see
shared/docs/PERF_NOTES.md), both in this process with the same XLA flags. Both are timed over
the whole video from frames already decoded in memory (preprocessing, every step, the
end-of-video drain and the boxes' host copies included; JPEG decoding excluded), so a frame's
latency is the video's time / its length. Reported: medians, the runner's time over the
engine's per pair, the first video's time (the compile: the engine traces and compiles, the
runner deserializes and compiles), and a calibration matmul before and after.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import statistics
import tempfile
import time

from ssvd_jax.runtime import configure_cpu_runtime

configure_cpu_runtime()  # first: XLA reads XLA_FLAGS once

from benchmarks.measure import calibrate  # noqa: E402
from input_pipeline.preprocess import preprocess, read_frame  # noqa: E402
from ssvd_jax import export, inference  # noqa: E402
from ssvd_jax import workdir as workdir_lib  # noqa: E402
from ssvd_jax.checkpoint import restore_model  # noqa: E402
from ssvd_jax.evaluation import score  # noqa: E402

RUNNER = pathlib.Path(__file__).resolve().parents[1] / "tools" / "run_exported.py"


def load_runner():
    spec = importlib.util.spec_from_file_location("run_exported", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/synthetic")
    parser.add_argument("--config", default="synthetic", help="a module of configs/")
    parser.add_argument("--phase", default="phase2")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = importlib.import_module(f"configs.{args.config}").get_config()
    folder = workdir_lib.checkpoint_dir(args.workdir, args.phase)
    model, variables, meta = restore_model(folder, config)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    root = workdir_lib.data_root(config, args.workdir)
    video, _ = score.evaluation_videos(root, config.eval.split)[0]
    raw = [read_frame(video.image_path(root, t)) for t in range(video.num_frames)]
    size = (raw[0].shape[1], raw[0].shape[0])
    mean = config.data.pixel_mean_bgr
    length = len(raw)

    runner = load_runner()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        exported = export.export_engine(engine, out, pixel_mean_bgr=mean,
                                        platforms=tuple(config.export.platforms),
                                        source={"checkpoint": folder})  # fmt: skip
        export_seconds = time.perf_counter() - t0
        sizes = export.artifact_bytes(out)
        t0 = time.perf_counter()
        artifact = runner.Artifact(out)
        load_seconds = time.perf_counter() - t0

        def run_engine() -> float:
            frames = (preprocess(f, image_size=engine.image_size, mean_bgr=mean) for f in raw)
            start = time.perf_counter()
            for _ in engine.run([inference.Video(frames, length, size)]):
                pass
            return time.perf_counter() - start

        def run_artifact() -> float:
            start = time.perf_counter()
            for _ in artifact.detect_video(iter(raw), length, size):
                pass
            return time.perf_counter() - start

        first = {"engine": run_engine(), "runner": run_artifact()}
        before = calibrate()
        times: dict[str, list[float]] = {"engine": [], "runner": []}
        for _ in range(args.rounds):
            times["engine"].append(run_engine() / length)
            times["runner"].append(run_artifact() / length)
        after = calibrate()

    ratios = [r / e for r, e in zip(times["runner"], times["engine"], strict=True)]
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{args.workdir} {args.phase} ({meta['checkpoint']} step {meta['step']}, "
          f"{model.variant}, {engine.image_size}x{engine.image_size}, {engine.schedule} schedule, "
          f"{engine.buffer_size}-frame buffer); video {video.video_id}, {length} frames "
          f"{size[0]}x{size[1]}; {args.rounds} alternating rounds; XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}")  # fmt: skip
    print(f"calibration matmul: {before * 1e3:.0f} ms before, {after * 1e3:.0f} ms after")
    print()
    print("| artifact file | bytes |")
    print("| --- | --- |")
    for name, n in sizes.items():
        print(f"| {exported['files'][name]} | {n:,} ({n / 2**20:.2f} MiB) |")
    print(f"| total | {sum(sizes.values()):,} ({sum(sizes.values()) / 2**20:.2f} MiB) |")
    print(f"| (platforms) | {', '.join(exported['platforms'])} |")
    print()
    print("| | per frame (median) | runner / engine (median of pairs) | first video (compile) |")
    print("| --- | --- | --- | --- |")
    print(f"| engine (OnlineEngine.run) | {ms['engine']:.1f} ms | 1 | "
          f"{first['engine']:.1f} s |")  # fmt: skip
    print(f"| runner (tools/run_exported.py) | {ms['runner']:.1f} ms | "
          f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}) | "
          f"{first['runner']:.1f} s (+{load_seconds:.1f} s to load) |")  # fmt: skip
    print(f"\nexport (lowering, no compile): {export_seconds:.1f} s")


if __name__ == "__main__":
    main()
