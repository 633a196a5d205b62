"""Advisory file locks (`fcntl.flock`): one run per workdir, one build per dataset.

The kernel releases a flock when its process ends, however it ends (SIGKILL included), so a
lock file left behind by a dead run never blocks the next one; the file itself only says who
holds (or last held) the lock. Locks are per process: a process that already holds a lock can
take it again (nested jobs, e.g. a sweep's points), and only its outermost release unlocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator

from ssvd_jax.errors import UserError

WORKDIR_LOCK = "lock"  # <workdir>/lock

_held: dict[str, list] = {}  # realpath -> [open file, depth]


class WorkdirLocked(UserError):
    """Another process is running in this workdir; the problem names it."""


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def file_lock(
    path: str, *, wait: bool, on_wait: Callable[[dict], None] | None = None
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if needed) for the block. wait=False raises
    BlockingIOError at once when another process holds it; wait=True blocks until it is free
    (calling `on_wait(holder)` first, the holder's {'pid', 'host', 'since', 'command'})."""
    key = os.path.realpath(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    os.makedirs(os.path.dirname(key), exist_ok=True)
    f = open(key, "a+")  # noqa: SIM115 (held open for the whole block)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise
            if on_wait is not None:
                on_wait(_holder(key))
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        who = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
               "command": " ".join(sys.argv)}  # fmt: skip
        f.write(json.dumps(who) + "\n")
        f.flush()
        _held[key] = [f, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        f.close()  # closing the file releases the lock


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """One run at a time in `workdir`: raises WorkdirLocked naming the holder's pid (and host
    and command) when another process holds `<workdir>/lock`."""
    path = os.path.join(workdir, WORKDIR_LOCK)
    held = contextlib.ExitStack()
    try:
        held.enter_context(file_lock(path, wait=False))
    except BlockingIOError:
        h = _holder(path)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("since", 0)))
        raise WorkdirLocked(
            path,
            f"another run holds this workdir: pid {h.get('pid', '?')} on {h.get('host', '?')} "
            f"since {since} ({h.get('command', '?')}); wait for it to finish, stop it, or use "
            "another --workdir",
        ) from None
    with held:
        yield
