"""The machine's speed at this moment: timed before and after each case, so a figure measured
while the CPU throttled can be told apart (see shared/docs/PERF_NOTES.md)."""

from __future__ import annotations

import statistics
import time

import numpy as np


def calibrate(samples: int = 5) -> float:
    """Median seconds of a 1024^3 float32 matmul (one sample alone jitters by 10-30% here)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a  # warm the BLAS threads
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
