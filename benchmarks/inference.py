"""Online-engine latency per frame vs the number of supports (the paper's Table V).

  python -m benchmarks.inference            # R-101 SSVD at 448: 0, 2, 4, 6, 12, 24 supports
  python -m benchmarks.inference --quick    # 2 repeats, 0/2/6 supports

For each support count N (paper schedule, K = 12, reference included as an entry) an engine is
compiled, its ring buffer filled, and the steady-state step (one new frame through the body and
both FPNs + one reference frame's aggregation, heads, post-processing and late fusion) is timed.
All engines are compiled first, then timed interleaved (N = 0, 2, ..., 0, 2, ...) so that the
machine's throttling hits every configuration alike; medians and ratios to N = 0 are printed,
with the step's multiply-accumulate count from XLA's cost analysis (flops / 2).
The paper reports 38, 66, 74, 85, 114, 183 ms on a Titan X Pascal (ratios 1, 1.7, 1.9, 2.2, 3.0,
4.8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import default as default_config  # noqa: E402
from ssvd_jax import inference  # noqa: E402
from ssvd_jax.models import ssvd as ssvd_lib  # noqa: E402
from ssvd_jax.models.params import init_variables  # noqa: E402

PAPER_MS = {0: 38, 2: 66, 4: 74, 6: 85, 12: 114, 24: 183}


def build(config, model, variables, num_supports: int):
    post = config.postprocess
    engine = inference.OnlineEngine(
        model, variables, image_size=config.data.image_size, anchor_config=config.model.anchors,
        num_classes=config.model.num_classes, schedule="paper", num_supports=num_supports,
        half_window=12, num_videos=1, score_threshold=post.score_threshold,
        pre_nms_top_n=post.pre_nms_top_n, nms_iou=post.nms_iou,
        max_detections=post.max_detections, legacy_boxes=post.legacy_boxes,
    )  # fmt: skip
    s = config.data.image_size
    rng = np.random.default_rng(0)
    frame = rng.uniform(-100, 100, (1, s, s, 3)).astype(np.float32)
    entries = inference.paper_entries(100, num_supports, 12)[50]
    args = (
        np.zeros(1, np.int64), np.ones(1, bool),
        (entries % engine.buffer_size)[None], np.ones(1, bool),
    )  # fmt: skip
    state = engine.init_state()
    t0 = time.perf_counter()
    lowered = engine._step.lower(
        engine.variables, state, jnp.asarray(frame), *map(jnp.asarray, args)
    )
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    gmac = float(cost.get("flops", float("nan"))) / 2e9
    for slot in range(engine.buffer_size):  # fill the buffer: every entry holds a real frame
        state, _ = engine.step(state, frame, [slot], [True], args[2], [False])

    def run():
        nonlocal state
        state, dets = engine.step(state, frame, *args)
        jax.block_until_ready(dets)

    run()
    return run, compile_s, gmac


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--supports", type=int, nargs="+", default=[0, 2, 4, 6, 12, 24])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 0/2/6 supports")
    parser.add_argument("--config", default="", help="default.py variant ('' = R-101)")
    args = parser.parse_args()
    supports = [0, 2, 6] if args.quick else args.supports
    repeats = 2 if args.quick else args.repeats
    config = default_config.get_config(args.config)
    config.data.image_size = args.size
    model = ssvd_lib.create_ssvd(config.model)
    s = args.size
    variables = init_variables(model, jnp.zeros((1, s, s, 3)), jnp.zeros((1, 2, s, s, 3)), seed=0)
    print(
        f"jax {jax.__version__} ({jax.devices()[0].device_kind}), SSVD two_stream, {s}x{s}, "
        f"paper schedule K=12, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    runs = {}
    for n in supports:
        runs[n] = build(config, model, variables, n)
        print(f"  compiled N={n}: {runs[n][1]:.1f}s, {runs[n][2]:.1f} GMAC/step", flush=True)
    times = {n: [] for n in supports}
    for _ in range(repeats):
        for n in supports:
            t0 = time.perf_counter()
            runs[n][0]()
            times[n].append(time.perf_counter() - t0)
    base = statistics.median(times[supports[0]])
    base_mac = runs[supports[0]][2]
    print(
        f"\n| supports | ms/frame (median of {repeats}) | ratio to N={supports[0]} | GMAC/frame "
        "| MAC ratio | compile s | paper ms (Titan X) | paper ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in supports:
        med = statistics.median(times[n])
        paper = PAPER_MS.get(n)
        paper_ratio = f"{paper / PAPER_MS[0]:.2f}" if paper else "-"
        print(
            f"| {n} | {1e3 * med:.0f} | {med / base:.2f} | {runs[n][2]:.1f} | "
            f"{runs[n][2] / base_mac:.2f} | {runs[n][1]:.1f} | {paper or '-'} | {paper_ratio} |"
        )


if __name__ == "__main__":
    main()
