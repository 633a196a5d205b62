"""Support schedules of the online engine: which frames are a reference frame's entries.

Entry 0 is always the reference itself, as in the release:
  release  R = min(L // 2, K), D = 2R // 6, entries clamp(t + kD, 0, L-1) for k in
           (0, -1, 1, -2, 2, -3, 3): REFERENCE_SPEC §1.3's closed form (the release's K = 15).
  paper    N supports at offsets spread evenly over [-K, -1] u [1, K], clamped; any N including
           0 (the reference alone); the paper's K = 12.
Clamping is the release's edge replication: near the ends the first / last frame stands in.
"""

from __future__ import annotations

import numpy as np

RELEASE_OFFSETS = (0, -1, 1, -2, 2, -3, 3)


def release_entries(length: int, max_half_window: int) -> np.ndarray:
    """[L, 7] frame indices of every frame's entries under the release's schedule."""
    half = min(length // 2, max_half_window)
    delta = (2 * half) // 6
    t = np.arange(length)[:, None]
    return np.clip(t + np.asarray(RELEASE_OFFSETS)[None] * delta, 0, length - 1)


def paper_offsets(num_supports: int, half_window: int) -> np.ndarray:
    """N offsets spread evenly over the 2K candidates [-K, -1] u [1, K] (symmetric for even N)."""
    candidates = np.concatenate([np.arange(-half_window, 0), np.arange(1, half_window + 1)])
    if num_supports > len(candidates):
        raise ValueError(f"at most {len(candidates)} supports with K={half_window}")
    if num_supports == 0:
        return np.zeros((0,), np.int64)
    picks = np.round(np.linspace(0, len(candidates) - 1, num_supports)).astype(int)
    return candidates[picks]


def paper_entries(length: int, num_supports: int, half_window: int) -> np.ndarray:
    """[L, 1 + N] frame indices: the reference, then N evenly spread supports (clamped)."""
    offsets = np.concatenate([[0], paper_offsets(num_supports, half_window)])
    return np.clip(np.arange(length)[:, None] + offsets[None], 0, length - 1)


def schedule_entries(length: int, schedule: str, num_supports: int, half_window: int) -> np.ndarray:
    if schedule == "release":
        return release_entries(length, half_window)
    if schedule == "paper":
        return paper_entries(length, num_supports, half_window)
    raise ValueError(f"support schedule must be 'release' or 'paper', got {schedule!r}")


def buffer_slots_needed(schedule: str, num_supports: int, half_window: int) -> int:
    """Ring-buffer size that holds every entry a ready reference can need (2K + 1)."""
    if schedule == "release":
        return 2 * 3 * ((2 * half_window) // 6) + 1
    span = int(np.max(np.abs(paper_offsets(num_supports, half_window)), initial=0))
    return 2 * span + 1
