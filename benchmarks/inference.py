"""Online-engine latency per frame vs the number of supports (the paper's Table V), with and
without the per-frame caches, beside the arithmetic each configuration needs.

  python -m benchmarks                       # the suite (= python -m benchmarks.inference)
  python -m benchmarks.inference             # R-101 at 448: 0, 2, 4, 6, 12, 24 supports (paper
                                             # schedule, K=12) and the release's schedule (6
                                             # supports, 7 entries), caches on and off; the
                                             # release's cached engine with 8 videos per step
                                             # and in bfloat16
  python -m benchmarks.inference --quick     # 0, 6 and the release's schedule, 2 repeats
  python -m benchmarks.inference --size 128  # the same cases at another input size

Each case is an `inference.OnlineEngine` compiled for its schedule; its steady-state step (one
new frame through the body and both FPNs, plus one reference frame's aggregation over its
entries, heads, post-processing and late fusion) is timed with a full ring buffer. 0 supports
is the single-frame detector (phase 1), as in the paper ("0 sampled support frames, i.e. our
single-frame baseline"). All cases are compiled first and then timed interleaved (A B C ... A B
C ...), so that this machine's throttling (shared/docs/PERF_NOTES.md) hits every case alike;
medians and ratios to 0 supports are printed with each step's multiply-accumulate count (of its
convolutions and matmuls, counted from the jaxpr by `benchmarks.arithmetic`) and the ratio of
the two ratios ("latency / MAC": how much
slower per multiply-accumulate a case runs than the single-frame detector). Peak memory:
XLA's buffer assignment of the compiled step (temporaries) and the engine's ring buffers.
The paper's Table V: 38, 66, 74, 85, 114, 183 ms on a Titan X Pascal.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from typing import Any

from ssvd_jax.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before jax starts (XLA_FLAGS, malloc): what main.py runs with

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.arithmetic import count_macs  # noqa: E402
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
    model = ssvd_lib.create_ssvd(config.model)
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
    args = [jnp.asarray(a) for a in (np.zeros(case.batch, np.int32), on, slots, on)]
    args[2] = args[2].astype(jnp.int32)
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


def calibrate() -> float:
    """Median of 5 float32 1024^3 matmuls (the machine's speed at this moment)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_interleaved(built: list[Built], repeats: int) -> dict[Case, float]:
    """Median seconds per frame of each case, timed A B C ... A B C ...."""
    times: dict[Case, list[float]] = {b.case: [] for b in built}
    for _ in range(repeats):
        for b in built:
            t0 = time.perf_counter()
            b.run()
            times[b.case].append((time.perf_counter() - t0) / b.case.batch)
    return {case: statistics.median(t) for case, t in times.items()}


def make_config(size: int, variant: str = "") -> Any:
    config = default_config.get_config(variant)
    config.data.image_size = size
    return config


def make_variables(config: Any) -> dict[str, Any]:
    model = ssvd_lib.create_ssvd(config.model)
    s = config.data.image_size
    return init_variables(model, jnp.zeros((1, s, s, 3)), jnp.zeros((1, 2, s, s, 3)), seed=0)


def table(built: list[Built], seconds: dict[Case, float], baseline: Case) -> str:
    base_t = seconds[baseline]
    base_mac = next(b.gmac_per_frame for b in built if b.case == baseline)
    lines = [
        "| case | ms/frame | ratio to 0 | GMAC/frame | MAC ratio | latency / MAC | frames/s | "
        "compile s | XLA temp MiB | buffer MiB | paper ms (Titan X) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in built:
        t = seconds[b.case]
        mac_ratio = b.gmac_per_frame / base_mac
        paper = PAPER_MS.get(b.case.supports) if b.case.schedule in ("single", "paper") else None
        lines.append(
            f"| {b.case.name} | {1e3 * t:.0f} | {t / base_t:.2f} | {b.gmac_per_frame:.1f} | "
            f"{mac_ratio:.2f} | {t / base_t / mac_ratio:.2f} | {1 / t:.2f} | {b.compile_s:.0f} | "
            f"{b.temp_mib:.0f} | {b.buffer_mib:.0f} | {paper or '-'} |"
        )
    return "\n".join(lines)


def cases_for(supports: tuple[int, ...], batches: tuple[int, ...] = (), dtypes=()) -> list[Case]:
    """The single-frame baseline, the paper's schedule with and without caches for each
    support count, the release's schedule both ways, and the release's cached engine with more
    videos per step and other compute dtypes."""
    cases = [Case("single", 0)]
    for n in supports:
        cases += [Case("paper", n, True), Case("paper", n, False)]
    cases += [Case("release", 6, True), Case("release", 6, False)]
    cases += [Case("release", 6, True, batch=b) for b in batches if b != 1]
    cases += [Case("release", 6, True, dtype=d) for d in dtypes if d != "float32"]
    return cases


def run_suite(args: argparse.Namespace) -> None:
    config = make_config(args.size, args.config)
    variables = make_variables(config)
    supports = (6,) if args.quick else tuple(args.supports)
    batches = () if args.quick else tuple(args.batches)
    dtypes = () if args.quick else tuple(args.dtypes)
    repeats = 2 if args.quick else args.repeats
    print(
        f"jax {jax.__version__} ({jax.devices()[0].device_kind}), SSVD two_stream "
        f"{args.config or 'R-101'}, {args.size}x{args.size}, model.flow_dtype float32, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    built = []
    for case in cases_for(supports, batches, dtypes):
        built.append(build(config, variables, case))
        b = built[-1]
        print(f"  compiled {case.name}: {b.compile_s:.0f} s, {b.gmac_per_frame:.1f} GMAC/frame",
              flush=True)  # fmt: skip
    cal0 = calibrate()
    seconds = time_interleaved(built, repeats)
    cal1 = calibrate()
    print(f"\nmedian of {repeats} interleaved steps; calibration matmul {1e3 * cal0:.0f} -> "
          f"{1e3 * cal1:.0f} ms; peak RSS {vm_hwm_mib():.0f} MiB\n")  # fmt: skip
    print(table(built, seconds, Case("single", 0)))
    print(acceptance(built, seconds))


def vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--supports", type=int, nargs="+", default=[2, 4, 6, 12, 24])
    parser.add_argument(
        "--batches",
        type=int,
        nargs="*",
        default=[8],
        help="videos per step of the release's cached engine, besides 1",
    )
    parser.add_argument(
        "--dtypes",
        nargs="*",
        default=["bfloat16"],
        help="compute dtypes of the release's cached engine, besides float32",
    )
    parser.add_argument(
        "--quick", action="store_true", help="0, 6 and the release's schedule; 2 repeats"
    )
    parser.add_argument("--config", default="", help="default.py variant ('' = R-101)")
    return parser.parse_args(argv)


def main() -> None:
    run_suite(parse_args())


def acceptance(built: list[Built], seconds: dict[Case, float]) -> str:
    """The release schedule's cached engine against its arithmetic, the per-pair engine, more
    videos per step and bfloat16."""
    by_case = {b.case: b for b in built}
    single, cached, per_pair = Case("single", 0), Case("release", 6), Case("release", 6, False)
    if not all(c in by_case for c in (single, cached, per_pair)):
        return ""
    mac = {c: by_case[c].gmac_per_frame for c in (single, cached, per_pair)}
    latency_ratio = seconds[cached] / seconds[single]
    mac_ratio = mac[cached] / mac[single]
    speedup = seconds[per_pair] / seconds[cached]
    saved = mac[per_pair] / mac[cached]
    lines = [
        f"\nrelease schedule, cached: latency {latency_ratio:.2f}x the single-frame detector's "
        f"for {mac_ratio:.2f}x its arithmetic (ratio {latency_ratio / mac_ratio:.2f}, target "
        f"<= 1.15); caches: {speedup:.2f}x faster than per-pair for {saved:.2f}x less "
        f"arithmetic (target: speedup >= arithmetic saved)"
    ]
    for case in by_case:
        if case.schedule == "release" and case.cached and case.batch > 1:
            lines.append(f"{case.batch} videos per step: {seconds[cached] / seconds[case]:.2f}x "
                         "the frames/s of 1")  # fmt: skip
        if case.schedule == "release" and case.cached and case.dtype != "float32":
            lines.append(f"{case.dtype}: {seconds[cached] / seconds[case]:.2f}x the speed of "
                         "float32")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
