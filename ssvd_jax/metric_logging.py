"""Metric writers for training: CLU's default writer (TensorBoard + stdout) when it imports,
progress lines with steps/s and ETA, and progress bars for the other long loops (evaluation,
demo, data generation).

`clu.metric_writers` imports `tensorboard` at module level; where that package is missing the
whole of `clu.metric_writers` (and `clu.periodic_actions`, which imports it) fails to import. So
that training still runs and logs there, `create_writer` falls back to a writer with the same
methods that logs to stdout and appends every scalar to `<logdir>/metrics.jsonl`, and says once
that TensorBoard files need the `tensorboard` package.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from absl import logging


class JsonlWriter:
    """A CLU-compatible writer (write_scalars / write_hparams / flush / close) that logs to
    stdout and to `<logdir>/metrics.jsonl`."""

    def __init__(self, logdir: str, just_logging: bool = False):
        self._path = None if just_logging else os.path.join(logdir, "metrics.jsonl")
        if self._path:
            os.makedirs(logdir, exist_ok=True)

    def _append(self, record: dict[str, Any]) -> None:
        if self._path:
            with open(self._path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: float(v) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items())))
        self._append({"step": int(step), **values})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        logging.info("hparams: %s", dict(hparams))
        self._append({"hparams": {k: _jsonable(v) for k, v in hparams.items()}})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _jsonable(value: Any) -> Any:
    # TensorBoard hparams take bool, int, float and str only.
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def create_writer(logdir: str, just_logging: bool = False) -> Any:
    """CLU's default writer (TensorBoard event files under `logdir` + stdout), or the
    JSONL + stdout fallback when `clu.metric_writers` cannot import."""
    try:
        from clu import metric_writers
    except ImportError as e:
        logging.warning(
            "clu.metric_writers unavailable (%s): metrics go to stdout and %s/metrics.jsonl; "
            "install `tensorboard` for TensorBoard event files",
            e,
            logdir,
        )
        return JsonlWriter(logdir, just_logging)
    return metric_writers.create_default_writer(
        logdir, just_logging=just_logging, asynchronous=False
    )


def flat_hparams(config_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict flattened to {'a.b': scalar}; sequences become strings."""
    out: dict[str, Any] = {}
    for key, value in config_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, name + "."))
        else:
            out[name] = _jsonable(value)
    return out


class Progress:
    """Steps/s over the last interval and an ETA for the remaining steps of a phase."""

    def __init__(self, start_step: int, total_steps: int):
        self._total = total_steps
        self._last_step = start_step
        self._last_time = time.monotonic()

    def update(self, step: int) -> tuple[float, float]:
        """(steps per second since the last update, estimated seconds to `total_steps`)."""
        now = time.monotonic()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self._total - step) / rate if rate > 0 else float("inf")
        return rate, eta


class _LoggedProgress:
    """A progress bar's interface for non-interactive output (logs, CI): one log line at most
    every `interval` seconds and one at the end, with the rate and an ETA."""

    def __init__(self, total: int, desc: str, unit: str, interval: float = 10.0):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval or self.n == self.total:
            self._last = now
            rate = self.n / max(now - self._start, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            logging.info("%s: %d/%d %ss, %.2f %ss/s, ETA %s", self.desc, self.n, self.total,
                         self.unit, rate, self.unit, format_eta(eta))  # fmt: skip

    def __enter__(self) -> _LoggedProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str = "it") -> Any:
    """A tqdm bar on a terminal, periodic log lines otherwise; use as a context manager and
    call `.update(n)`."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
    return _LoggedProgress(total, desc, unit)


def format_eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _DropLibraryInfo(pylogging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self._fragments = fragments

    def filter(self, record: pylogging.LogRecord) -> bool:
        if record.levelno > pylogging.INFO:
            return True
        return not any(f in record.pathname for f in self._fragments)


def quiet_library_info(fragments: tuple[str, ...] = ("/orbax/", "/xla_bridge.py")) -> None:
    """Drop INFO lines logged from files whose path contains one of `fragments` (orbax logs
    ~30 INFO lines per checkpoint, drowning the progress lines; jax's backend set-up says it
    found no TPU in every run); warnings still show."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
        handler.addFilter(_DropLibraryInfo(fragments))
