"""Temporal ops speed: our jitted deform_conv2d / warp vs torchvision / torch grid_sample on CPU.

  python -m benchmarks.temporal_ops            # 256 channels at 56, 28, 14, 7; batch 1 and 7
  python -m benchmarks.temporal_ops --quick    # 28 and 7 only, 2 repeats (a smoke run)

Shapes are SSVD's: the sampling stream's DeformConv (256 -> 256, 3x3, pad 1, 4 deformable
groups, no bias) and the motion stream's feature warp, on P3-P6 (56, 28, 14, 7 at 448 input),
for one frame and for the 7 entries aggregated per reference frame. "fwd+bwd" is one forward
and the gradients w.r.t. every input (x, offset, kernel / x, flow), as in training. Offsets and
flows are N(0, 2^2) pixels, so some taps leave the map.

Per shared/docs/PERF_NOTES.md the machine throttles sustained load, so per shape the four
variants run interleaved (JAX fwd, torch fwd, JAX fwd+bwd, torch fwd+bwd, repeated), medians are
reported with the same-run ratio torch/JAX, compilation and a warm-up call happen outside the
timed region, and a 1024^3 float32 matmul (median of 3) is timed before and after each shape: a
row whose calibration moved by more than 10% is flagged. torch runs with 2 threads. The load
average is printed too: on a shared machine other processes skew both sides.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

# torch before jax and anything that may import tensorflow (PERF_NOTES, environment traps).
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

# isort: split
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.measure import calibrate  # noqa: E402
from ssvd_jax.ops import deform, sampling  # noqa: E402

CHANNELS, GROUPS, KSIZE = 256, 4, 3
# Keep each shape's timed loop around this many seconds (the slowest torch variant dominates).
ROW_BUDGET_S = 8.0
MIN_SAMPLE_S = 0.05


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def deform_variants(batch: int, size: int, rng: np.random.Generator):
    """(jax fwd, jax fwd+bwd, torch fwd, torch fwd+bwd) thunks, plus JAX compile seconds."""
    x = rng.standard_normal((batch, size, size, CHANNELS)).astype(np.float32)
    offset = (rng.standard_normal((batch, size, size, 2 * GROUPS * KSIZE**2)) * 2).astype(
        np.float32
    )
    kernel = (rng.standard_normal((KSIZE, KSIZE, CHANNELS, CHANNELS)) * 0.02).astype(np.float32)
    cotangent = rng.standard_normal((batch, size, size, CHANNELS)).astype(np.float32)
    conv = lambda x_, o_, k_: deform.deform_conv2d(x_, o_, k_, deformable_groups=GROUPS)
    loss = lambda x_, o_, k_, ct: jnp.vdot(conv(x_, o_, k_), ct)
    args = tuple(jnp.asarray(a) for a in (x, offset, kernel))
    ct_j = jnp.asarray(cotangent)
    jax_fwd, compile_fwd = _compile(jax.jit(conv), *args)
    jax_grad, compile_grad = _compile(jax.jit(jax.grad(loss, argnums=(0, 1, 2))), *args, ct_j)

    x_t, offset_t = _nchw(x), _nchw(offset)
    kernel_t = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    ct_t = _nchw(cotangent)
    leaves = [t.clone().requires_grad_() for t in (x_t, offset_t, kernel_t)]

    def torch_fwd():
        with torch.no_grad():
            return torchvision.ops.deform_conv2d(x_t, offset_t, kernel_t, padding=1)

    def torch_grad():
        out = torchvision.ops.deform_conv2d(*leaves, padding=1)
        return torch.autograd.grad(out, leaves, grad_outputs=ct_t)

    return (jax_fwd, jax_grad, torch_fwd, torch_grad), (compile_fwd, compile_grad)


def warp_variants(batch: int, size: int, rng: np.random.Generator):
    x = rng.standard_normal((batch, size, size, CHANNELS)).astype(np.float32)
    flow = (rng.standard_normal((batch, size, size, 2)) * 2).astype(np.float32)
    cotangent = rng.standard_normal((batch, size, size, CHANNELS)).astype(np.float32)
    loss = lambda x_, f_, ct: jnp.vdot(sampling.warp(x_, f_), ct)
    args = (jnp.asarray(x), jnp.asarray(flow))
    jax_fwd, compile_fwd = _compile(jax.jit(sampling.warp), *args)
    jax_grad, compile_grad = _compile(
        jax.jit(jax.grad(loss, argnums=(0, 1))), *args, jnp.asarray(cotangent)
    )

    x_t, flow_t, ct_t = _nchw(x), torch.from_numpy(flow), _nchw(cotangent)
    leaves = [x_t.clone().requires_grad_(), flow_t.clone().requires_grad_()]
    pos = torch.arange(size, dtype=torch.float32)

    def grid_sample(x_, flow_):
        # The release's grid: 2 (pos + flow) / (size - 1) - 1, align_corners=True semantics.
        gx = 2 * (pos[None, None, :] + flow_[..., 0]) / (size - 1) - 1
        gy = 2 * (pos[None, :, None] + flow_[..., 1]) / (size - 1) - 1
        grid = torch.stack([gx, gy], dim=-1)
        return F.grid_sample(x_, grid, align_corners=True, padding_mode="zeros")

    def torch_fwd():
        with torch.no_grad():
            return grid_sample(x_t, flow_t)

    def torch_grad():
        return torch.autograd.grad(grid_sample(*leaves), leaves, grad_outputs=ct_t)

    return (jax_fwd, jax_grad, torch_fwd, torch_grad), (compile_fwd, compile_grad)


def _compile(jitted, *args):
    """AOT-compile (timed), and return a thunk that runs it to completion."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    return (lambda: jax.block_until_ready(compiled(*args))), seconds


def time_interleaved(thunks, min_repeats: int, max_repeats: int) -> tuple[list[float], int]:
    """Median seconds per call of each thunk, timed A B C D A B C D ...; and the repeat count.

    A sample runs a fast thunk several times in a row (>= MIN_SAMPLE_S) so that sub-millisecond
    ops are not lost in timer and scheduler noise; the per-call time is the sample / count.
    """
    estimates = []
    for thunk in thunks:  # warm-up outside the timed region, then a timed call to size samples
        thunk()
        t0 = time.perf_counter()
        thunk()
        estimates.append(time.perf_counter() - t0)
    inner = [max(1, min(1000, math.ceil(MIN_SAMPLE_S / max(e, 1e-6)))) for e in estimates]
    row_s = sum(k * e for k, e in zip(inner, estimates, strict=True))
    repeats = max(min_repeats, min(max_repeats, int(ROW_BUDGET_S / row_s)))
    times = [[] for _ in thunks]
    for _ in range(repeats):
        for i, thunk in enumerate(thunks):
            t0 = time.perf_counter()
            for _ in range(inner[i]):
                thunk()
            times[i].append((time.perf_counter() - t0) / inner[i])
    return [statistics.median(t) for t in times], repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[56, 28, 14, 7])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 7])
    parser.add_argument("--ops", nargs="+", default=["deform", "warp"], choices=["deform", "warp"])
    parser.add_argument(
        "--repeats", type=int, default=7, help="at most (3 or more for slow shapes)"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 28 and 7, 2 repeats")
    args = parser.parse_args()
    sizes, (min_repeats, max_repeats) = (
        ([28, 7], (2, 2)) if args.quick else (args.sizes, (3, max(3, args.repeats)))
    )
    torch.set_num_threads(2)
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, torch threads {torch.get_num_threads()}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, load average {os.getloadavg()[0]:.2f}"
    )
    builders = {"deform": deform_variants, "warp": warp_variants}
    rng = np.random.default_rng(0)
    print(
        "\n| op | batch x size | fwd JAX ms | fwd torch ms | fwd torch/JAX | fwd+bwd JAX ms "
        "| fwd+bwd torch ms | fwd+bwd torch/JAX | JAX compile s fwd / fwd+bwd | repeats "
        "| calib. ms before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for op in args.ops:
        for batch in args.batches:
            for size in sizes:
                thunks, (compile_fwd, compile_grad) = builders[op](batch, size, rng)
                cal0 = calibrate()
                (jf, jg, tf, tg), n = time_interleaved(thunks, min_repeats, max_repeats)
                cal1 = calibrate()
                flag = (
                    " (throttled: calibration moved >10%)" if abs(cal1 - cal0) > 0.1 * cal0 else ""
                )
                print(
                    f"| {op} | {batch}x{size}x{size}x{CHANNELS} | {1e3 * jf:.2f} | {1e3 * tf:.2f} "
                    f"| {tf / jf:.2f}x | {1e3 * jg:.2f} | {1e3 * tg:.2f} | {tg / jg:.2f}x "
                    f"| {compile_fwd:.2f} / {compile_grad:.2f} | {n} "
                    f"| {1e3 * cal0:.0f}/{1e3 * cal1:.0f}{flag} |",
                    flush=True,
                )
                del thunks
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
