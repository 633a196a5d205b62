"""Online-engine latency per frame vs the number of supports (the paper's Table V), with and
without the per-frame caches, beside the arithmetic each configuration needs.

  python -m benchmarks                       # the suite (= python -m benchmarks.inference)
  python -m benchmarks.inference             # R-101 at 448: 0, 2, 4, 6, 12, 24 supports (paper
                                             # schedule, K=12) and the release's schedule (6
                                             # supports, 7 entries), caches on and off; the
                                             # release's cached engine with 8 videos per step
                                             # and in bfloat16
  python -m benchmarks.inference --quick     # the 'release' group only, 3 repeats
  python -m benchmarks.inference --groups release table5 --repeats 9
  python -m benchmarks.inference --size 128  # the same cases at another input size

Each case is an `inference.OnlineEngine` compiled for its schedule; its steady-state step (one
new frame through the body and both FPNs, plus one reference frame's aggregation over its
entries, heads, post-processing and late fusion) is timed with a full ring buffer. 0 supports
is the single-frame detector (phase 1), as in the paper ("0 sampled support frames, i.e. our
single-frame baseline"). The suite runs in groups ('release': the release's schedule with and
without caches; 'table5': the paper's schedule for each support count, both ways; 'batch':
videos per step; 'dtype': float32 vs bfloat16), each in a fresh process with its own
single-frame baseline: its cases are compiled first and then timed interleaved, the order
reversed every round, so that this machine's throttling (shared/docs/PERF_NOTES.md) hits every
case alike. Medians and ratios to 0 supports are printed with each step's multiply-accumulate
count (its convolutions and matmuls, counted from the jaxpr by `benchmarks.arithmetic`) and the
ratio of the two ratios ("latency / MAC": how much slower per multiply-accumulate a case runs
than the single-frame detector). Memory: XLA's buffer assignment of the compiled step
(temporaries), the engine's ring buffers, and each run's peak RSS.
The paper's Table V: 38, 66, 74, 85, 114, 183 ms on a Titan X Pascal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from ssvd_jax.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before jax starts (XLA_FLAGS, malloc): what main.py runs with

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.arithmetic import count_macs  # noqa: E402
from benchmarks.measure import calibrate, vm_hwm_mib  # noqa: E402
from configs import default as default_config  # noqa: E402
from ssvd_jax import inference  # noqa: E402
from ssvd_jax.models import ssvd as ssvd_lib  # noqa: E402
from ssvd_jax.models.params import init_variables  # noqa: E402

PAPER_MS = {0: 38, 2: 66, 4: 74, 6: 85, 12: 114, 24: 183}


@dataclasses.dataclass(frozen=True)
class Case:
    schedule: str  # 'single' (the single-frame detector), 'paper' or 'release'
    supports: int
    cached: bool = True
    batch: int = 1  # videos per step (throughput mode)
    dtype: str = "float32"

    @property
    def name(self) -> str:
        if self.schedule == "single":
            what = "single-frame"
        else:
            what = f"{self.schedule} N={self.supports} " + ("cached" if self.cached else "per-pair")
        extra = "" if self.batch == 1 else f" x{self.batch}"
        return what + extra + ("" if self.dtype == "float32" else f" {self.dtype}")


@dataclasses.dataclass
class Built:
    case: Case
    run: Any  # () -> None, one steady-state step
    compile_s: float
    gmac_per_frame: float
    temp_mib: float
    buffer_mib: float


def single_frame_variables(two_stream: dict[str, Any]) -> dict[str, Any]:
    """The phase-1 detector's variables inside a two-stream SSVD's (its body, the motion FPN
    and heads), so that every case shares one set of weights."""
    rename = {"backbone": "backbone", "fpn": "motion_fpn", "head": "motion_subnets"}
    return {
        col: {new: tree[old] for new, old in rename.items() if old in tree}
        for col, tree in two_stream.items()
    }


def build(config: Any, variables: dict[str, Any], case: Case) -> Built:
    config = config.copy_and_resolve_references()
    config.model.dtype = case.dtype
    if case.schedule == "single":
        config.model.variant = "single_frame"
        variables = single_frame_variables(variables)
    else:
        config.eval.schedule = case.schedule
        config.eval.num_supports = case.supports
    config.eval.cached = case.cached
    model = ssvd_lib.create_model(config.model)
    engine = inference.create_engine(config, model, variables, num_videos=case.batch)
    s = config.data.image_size
    rng = np.random.default_rng(0)
    frames = jnp.asarray(rng.uniform(-100, 100, (case.batch, s, s, 3)), jnp.float32)
    # A reference in the middle of a long video: every entry a distinct buffered frame.
    entries = inference.schedule_entries(100, engine.schedule, engine.num_supports,
                                         engine.half_window)[50]  # fmt: skip
    slots = np.broadcast_to(entries % engine.buffer_size, (case.batch, len(entries)))
    on = np.ones(case.batch, bool)
    state = engine.init_state()
    args = [
        jnp.asarray(a) for a in (np.zeros(case.batch, np.int32), on, slots.astype(np.int32), on)
    ]
    t0 = time.perf_counter()
    compiled = engine._step.lower(engine.variables, state, frames, *args).compile()
    compile_s = time.perf_counter() - t0
    gmac = count_macs(engine._step_impl, engine.variables, state, frames, *args) / 1e9 / case.batch
    memory = compiled.memory_analysis()
    temp_mib = getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20
    # Fill the buffer so that every entry holds a computed frame, then one warm-up step.
    for slot in range(engine.buffer_size):
        push = jnp.full((case.batch,), slot, jnp.int32)
        state, _ = compiled(engine.variables, state, frames, push, args[1], args[2], ~args[3])
    holder = {"state": state}

    def run() -> None:
        holder["state"], dets = compiled(engine.variables, holder["state"], frames, *args)
        jax.block_until_ready(dets)

    run()
    return Built(case, run, compile_s, gmac, temp_mib, engine.buffer_bytes() / 2**20)


def time_interleaved(built: list[Built], repeats: int) -> dict[Case, float]:
    """Median seconds per frame of each case, timed A B C, C B A, A B C, ...: the order turns
    every round, so that no case always follows the heaviest one into a throttled machine."""
    times: dict[Case, list[float]] = {b.case: [] for b in built}
    for i in range(repeats):
        for b in built if i % 2 == 0 else built[::-1]:
            t0 = time.perf_counter()
            b.run()
            times[b.case].append((time.perf_counter() - t0) / b.case.batch)
    return {case: statistics.median(t) for case, t in times.items()}


def make_config(size: int, variant: str = "") -> Any:
    config = default_config.get_config(variant)
    config.data.image_size = size
    return config


def make_variables(config: Any) -> dict[str, Any]:
    model = ssvd_lib.create_model(config.model)
    s = config.data.image_size
    return init_variables(model, jnp.zeros((1, 3, s, s, 3)), seed=0)


# The suite: groups of cases, each timed in a fresh process against its own single-frame
# baseline (a dozen compiled R-101 engines in one process held 15 GB and slowed the ones with
# the largest buffers); ratios are only ever taken within a group.
GROUPS = {
    "release": lambda a: [Case("release", 6, True), Case("release", 6, False)],
    "table5": lambda a: [Case("paper", n, c) for n in a.supports for c in (True, False)],
    "batch": lambda a: (
        [Case("release", 6, True)] + [Case("release", 6, True, batch=b) for b in a.batches]
    ),
    "dtype": lambda a: (
        [Case("release", 6, True)] + [Case("release", 6, True, dtype=d) for d in a.dtypes]
    ),
}


def run_group(args: argparse.Namespace, group: str) -> list[dict[str, Any]]:
    """Build and time one group (plus the single-frame baseline) in this process."""
    config = make_config(args.size, args.config)
    variables = make_variables(config)
    cases = [Case("single", 0)] + GROUPS[group](args)
    built = []
    for case in cases:
        built.append(build(config, variables, case))
        b = built[-1]
        print(f"  [{group}] compiled {case.name}: {b.compile_s:.0f} s, "
              f"{b.gmac_per_frame:.1f} GMAC/frame", flush=True)  # fmt: skip
    cal0 = calibrate()
    seconds = time_interleaved(built, args.repeats)
    cal1 = calibrate()
    return [
        dict(
            dataclasses.asdict(b.case),
            group=group,
            name=b.case.name,
            seconds=seconds[b.case],
            gmac=b.gmac_per_frame,
            compile_s=b.compile_s,
            temp_mib=b.temp_mib,
            buffer_mib=b.buffer_mib,
            calibration_ms=(1e3 * cal0, 1e3 * cal1),
            peak_rss_mib=vm_hwm_mib(),
        )  # fmt: skip
        for b in built
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: every row with its ratios to the single-frame baseline of its own group."""
    lines = [
        "| run | case | ms/frame | ratio to 0 | GMAC/frame | MAC ratio | latency / MAC | "
        "frames/s | compile s | XLA temp MiB | buffer MiB | paper ms (Titan X) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = next(b for b in rows if b["group"] == r["group"] and b["schedule"] == "single")
        ratio, mac_ratio = r["seconds"] / base["seconds"], r["gmac"] / base["gmac"]
        paper = PAPER_MS.get(r["supports"]) if r["schedule"] in ("single", "paper") else None
        lines.append(
            f"| {r['group']} | {r['name']} | {1e3 * r['seconds']:.0f} | {ratio:.2f} | "
            f"{r['gmac']:.1f} | {mac_ratio:.2f} | {ratio / mac_ratio:.2f} | "
            f"{1 / r['seconds']:.2f} | {r['compile_s']:.0f} | {r['temp_mib']:.0f} | "
            f"{r['buffer_mib']:.0f} | {paper or '-'} |"
        )
    return "\n".join(lines)


def acceptance(rows: list[dict[str, Any]]) -> str:
    """The release schedule's cached engine against its arithmetic and the per-pair engine
    (run 'release'), more videos per step ('batch') and bfloat16 ('dtype')."""

    def find(group: str, **fields: Any) -> dict[str, Any] | None:
        for r in rows:
            if r["group"] == group and all(r[k] == v for k, v in fields.items()):
                return r
        return None

    lines = []
    single = find("release", schedule="single")
    cached = find("release", schedule="release", cached=True)
    per_pair = find("release", schedule="release", cached=False)
    if single and cached and per_pair:
        latency = cached["seconds"] / single["seconds"]
        arithmetic = cached["gmac"] / single["gmac"]
        speedup = per_pair["seconds"] / cached["seconds"]
        saved = per_pair["gmac"] / cached["gmac"]
        lines.append(
            f"release schedule, cached: latency {latency:.2f}x the single-frame detector's for "
            f"{arithmetic:.2f}x its arithmetic (ratio {latency / arithmetic:.2f}, target <= "
            f"1.15); caches: {speedup:.3f}x faster than per-pair for {saved:.3f}x less "
            "arithmetic (target: speedup >= arithmetic saved)"
        )
    one = find("batch", schedule="release", batch=1)
    for r in rows:
        if r["group"] == "batch" and r["batch"] > 1 and one:
            lines.append(f"{r['batch']} videos per step: {one['seconds'] / r['seconds']:.2f}x "
                         "the frames/s of 1 video per step")  # fmt: skip
    fp32 = find("dtype", schedule="release", dtype="float32")
    for r in rows:
        if r["group"] == "dtype" and r["dtype"] != "float32" and fp32:
            lines.append(f"{r['dtype']}: {fp32['seconds'] / r['seconds']:.2f}x the speed of "
                         "float32")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--supports", type=int, nargs="+", default=[2, 4, 6, 12, 24])
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[8],
        help="videos per step of the release's cached engine, besides 1",
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["bfloat16"],
        help="compute dtypes of the release's cached engine, besides float32",
    )
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--quick", action="store_true", help="the 'release' group only, 3 repeats")
    parser.add_argument("--config", default="", help="default.py variant ('' = R-101)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="(internal) run --groups here and print their rows as JSON",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.groups, args.repeats = ["release"], 3
    if args.in_process:
        rows = [row for group in args.groups for row in run_group(args, group)]
        print("ROWS " + json.dumps(rows))
        return
    print(
        f"jax {jax.__version__} ({jax.devices()[0].device_kind}), SSVD two_stream "
        f"{args.config or 'R-101'}, {args.size}x{args.size}, model.flow_dtype float32, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; each run a fresh process, median of "
        f"{args.repeats} interleaved steps per case",
        flush=True,
    )
    rows = []
    for group in args.groups:
        cmd = [sys.executable, "-m", "benchmarks.inference", "--in-process", "--groups", group,
               "--size", str(args.size), "--repeats", str(args.repeats), "--supports",
               *map(str, args.supports), "--batches", *map(str, args.batches), "--dtypes",
               *args.dtypes, "--config", args.config]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        for line in done.stdout.splitlines():
            if line.startswith("  ["):
                print(line, flush=True)
        found = [ln for ln in done.stdout.splitlines() if ln.startswith("ROWS ")]
        if done.returncode != 0 or not found:
            raise SystemExit(f"run {group} failed:\n{done.stderr[-3000:]}")
        group_rows = json.loads(found[-1][5:])
        cal = group_rows[0]["calibration_ms"]
        print(f"  [{group}] calibration matmul {cal[0]:.0f} -> {cal[1]:.0f} ms, peak RSS "
              f"{group_rows[0]['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        rows += group_rows
    print("\n" + table(rows) + "\n")
    print(acceptance(rows))


if __name__ == "__main__":
    main()
