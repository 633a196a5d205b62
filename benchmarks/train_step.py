"""Train-step speed and memory: the pmap-ed synchronized-SGD step of `ssvd_jax.train`.

  python -m benchmarks.train_step                       # default SSVD at 448 (per-device batch
                                                        # 1 and 2) and the synthetic config
  python -m benchmarks.train_step --cases=synthetic     # one case
  python -m benchmarks.train_step --steps=3             # fewer timed steps

Cases: 'default_b1', 'default_b2' (configs/default.py: ResNet-101, two-stream SSVD, phase 2, 2
supports per reference, 448x448, per-device batch 1 / 2), 'default_p1_b1', 'default_p1_b2' (the
same body's phase-1 single-frame detector) and 'synthetic' (configs/synthetic.py's phase-2 SSVD,
its training batch). Each case runs in a fresh process on all local devices with a random batch
(the step, not the input pipeline, is measured): compile time, the median step time over
`--steps` timed steps after one warm-up step, images per second, and peak memory: on GPU the
device allocator's peak; on CPU XLA's buffer assignment of the compiled step (arguments +
outputs + temporaries, aliased donations counted once) and the process's peak RSS.
Per shared/docs/PERF_NOTES.md this CPU throttles sustained load: compare cases only within one
run and one device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import default as default_config  # noqa: E402
from configs import synthetic as synthetic_config  # noqa: E402
from ssvd_jax import objective, train  # noqa: E402
from ssvd_jax.models.outputs import anchors_for  # noqa: E402

CASES = ("default_b1", "default_b2", "default_p1_b1", "default_p1_b2", "synthetic")


def _case_config(case: str):
    if case == "synthetic":
        config = synthetic_config.get_config()
        per_device = max(1, config.train.batch_size // jax.device_count())
        return config, "phase2", per_device
    config = default_config.get_config()
    if jax.default_backend() == "gpu":
        config.model.dtype = "bfloat16"
    phase = "phase1" if "_p1_" in case else "phase2"
    return config, phase, int(case[-1])


def _batch(config, phase: str, per_device: int, rng: np.random.Generator) -> dict:
    n, size, g = jax.local_device_count(), config.data.image_size, config.data.max_boxes
    images = rng.uniform(-100, 100, (n, per_device, 1, size, size, 3)).astype(np.float32)
    x1 = rng.uniform(0, size * 0.6, (n, per_device, g, 2))
    wh = rng.uniform(size * 0.1, size * 0.4, (n, per_device, g, 2))
    batch = {
        "frames": images,
        "boxes": np.concatenate([x1, x1 + wh], -1).astype(np.float32),
        "labels": rng.integers(0, 30, (n, per_device, g)).astype(np.int32),
        "valid": np.arange(g)[None, None] < 4,
    }
    batch["valid"] = np.broadcast_to(batch["valid"], (n, per_device, g))
    if phase == "phase2":
        t = 1 + config.train.num_supports
        batch["frames"] = np.broadcast_to(images, (n, per_device, t, size, size, 3))
    return batch


def run_case(case: str, steps: int) -> dict:
    config, phase, per_device = _case_config(case)
    state, schedule = train.create_state(config, phase)
    size = config.data.image_size
    anchors = train.all_anchors(anchors_for(size, config.model.anchors))
    p_step = train.make_train_step(anchors, objective.create_loss_settings(config), schedule)
    rstate = train.replicate(state, jax.local_devices())
    batch = _batch(config, phase, per_device, np.random.default_rng(0))
    t0 = time.perf_counter()
    compiled = p_step.lower(rstate, batch).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    xla_bytes = None
    if memory is not None:
        xla_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
    rstate, metrics = p_step(rstate, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        rstate, metrics = p_step(rstate, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    device_peak = None
    stats = jax.local_devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        device_peak = stats["peak_bytes_in_use"]
    global_batch = per_device * jax.device_count()
    return {
        "case": case,
        "phase": phase,
        "variant": config.model.variant if phase == "phase2" else "single_frame",
        "size": size,
        "per_device_batch": per_device,
        "devices": jax.device_count(),
        "device": jax.devices()[0].device_kind,
        "dtype": config.model.dtype,
        "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 4),
        "images_per_s": round(global_batch / step_s, 2),
        "device_peak_gib": None if device_peak is None else round(device_peak / 2**30, 2),
        "xla_buffers_gib": None if xla_bytes is None else round(xla_bytes / 2**30, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loss": float(np.asarray(metrics["loss"])[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="default_b1,default_b2,synthetic")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_case(args.one, args.steps)), flush=True)
        return
    rows = []
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; choose from {CASES}")
        # A fresh process per case: its peak RSS and allocator peak are the case's own.
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", f"--one={case}",
             f"--steps={args.steps}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            print(f"{case}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(lines[-1][7:]))
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        cols = list(rows[0])
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for r in rows:
            print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
