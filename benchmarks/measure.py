"""What every benchmark reads off the machine besides its own timings: the machine's speed at
this moment, timed before and after each case so that a figure measured while the CPU throttled
can be told apart (see shared/docs/PERF_NOTES.md), and the process's peak memory."""

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


def vm_hwm_mib() -> float:
    """This process's peak RSS (VmHWM) in MiB.

    Not getrusage's ru_maxrss: Linux carries that over from the parent across fork + exec, so a
    child started by this (large) process would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
