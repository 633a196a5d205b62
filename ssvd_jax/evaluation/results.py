"""Result files: ILSVRC devkit detections and the JSON summary of a scoring run.

Detections file (VID_PROTOCOL §1 "result-file format", REFERENCE_SPEC §7.2): one line per
detection, `<frame_id> <class_id> <score> <x1> <y1> <x2> <y2>`, where frame_id is the global
1-based id of the frame in the evaluation list (REFERENCE_SPEC §9) and class_id is 1..30 (the
0-based labels used in code plus one). FGFA and SSVD write scores with 4 decimals and boxes with
2, so the default does the same and our files score exactly as the reference's would; pass more
decimals to keep more scores distinct (fewer ties, VID_PROTOCOL §1 "tie sensitivity").

Both writers are atomic: they write a temporary file in the destination folder and `os.replace`
it, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import vid_ap
from ssvd_jax.files import atomic_write_chunks, atomic_write_text

PathLike = str | os.PathLike
SCORE_DECIMALS = 4  # FGFA/SSVD `{:.4f}`
BOX_DECIMALS = 2  # FGFA/SSVD `{:.2f}`
_FIELDS = 7


class DetectionsFormatError(UserError, ValueError):
    """A detections file that cannot be read; `file` is the file (and line)."""


def format_detections(
    dets: vid_ap.Detections,
    *,
    score_decimals: int = SCORE_DECIMALS,
    box_decimals: int = BOX_DECIMALS,
) -> Iterator[str]:
    """Lines of the devkit file, in chunks (the file of a full val run is ~100 MB)."""
    line = f"%d %d %.{score_decimals}f" + f" %.{box_decimals}f" * 4 + "\n"
    return format_rows(line, dets.frame_id, dets.label + 1, dets.score, *dets.boxes.T)


def format_rows(line: str, *columns: np.ndarray) -> Iterator[str]:
    """`line % row` for the rows of equal-length `columns`, joined in chunks of 65536 rows."""
    chunk = 65536
    for start in range(0, len(columns[0]), chunk):
        rows = zip(*(c[start : start + chunk].tolist() for c in columns), strict=True)
        yield "".join(line % row for row in rows)


def write_detections(
    path: PathLike,
    dets: vid_ap.Detections,
    *,
    score_decimals: int = SCORE_DECIMALS,
    box_decimals: int = BOX_DECIMALS,
) -> None:
    """Write detections (0-based labels) as a devkit result file, atomically."""
    atomic_write_chunks(
        path, format_detections(dets, score_decimals=score_decimals, box_decimals=box_decimals)
    )


def _parse_line(path: PathLike, lineno: int, line: str, num_classes: int) -> list[float]:
    parts = line.split()
    if len(parts) != _FIELDS:
        raise DetectionsFormatError(
            f"{path}:{lineno}",
            f"expected 7 fields 'frame_id class_id score x1 y1 x2 y2', got {len(parts)}: "
            f"{line.strip()!r}",
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise DetectionsFormatError(
            f"{path}:{lineno}", f"not a number in {line.strip()!r}"
        ) from None
    _check_row(path, lineno, values, num_classes)
    return values


def _check_row(path: PathLike, lineno: int, values: list[float], num_classes: int) -> None:
    frame_id, class_id = values[0], values[1]
    if not all(math.isfinite(v) for v in values):
        raise DetectionsFormatError(f"{path}:{lineno}", f"non-finite value in {values}")
    if frame_id != int(frame_id) or frame_id < 1:
        raise DetectionsFormatError(f"{path}:{lineno}", f"frame_id {frame_id:g} is not an id >= 1")
    if class_id != int(class_id) or not 1 <= class_id <= num_classes:
        raise DetectionsFormatError(
            f"{path}:{lineno}", f"class_id {class_id:g} is not an integer in 1..{num_classes}"
        )


def read_detections(path: PathLike, num_classes: int = vid_ap.NUM_CLASSES) -> vid_ap.Detections:
    """Read a devkit result file into Detections (labels back to 0-based).

    Blank lines are skipped. Malformed input raises DetectionsFormatError naming the file and
    the 1-based line number.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DetectionsFormatError(path, "detections file not found")
    # numpy's C parser handles the ~2M lines of a full val run in seconds and little memory;
    # anything it rejects is re-read line by line to name the first bad line.
    table = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, dtype=np.float64, ndmin=2, comments=None)
    except (ValueError, UnicodeDecodeError):
        table = None
    if table is not None and table.size == 0:
        table = np.zeros((0, _FIELDS))
    if table is not None and table.shape[1] == _FIELDS:
        bad = (
            ~np.isfinite(table).all(axis=1)
            | (table[:, 0] != np.floor(table[:, 0]))
            | (table[:, 0] < 1)
            | (table[:, 1] != np.floor(table[:, 1]))
            | (table[:, 1] < 1)
            | (table[:, 1] > num_classes)
        )
        if not bad.any():
            return _to_detections(table)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DetectionsFormatError(path, f"cannot read detections ({e})") from e
    rows = [
        _parse_line(path, lineno, line, num_classes)
        for lineno, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]
    return _to_detections(np.asarray(rows, np.float64).reshape(-1, _FIELDS))


def _to_detections(table: np.ndarray) -> vid_ap.Detections:
    return vid_ap.Detections(
        table[:, 0].astype(np.int64), table[:, 1].astype(np.int64) - 1, table[:, 2], table[:, 3:7]
    )


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to null (not valid JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_summary(path: PathLike, summary: Mapping[str, Any]) -> None:
    """Write a scoring summary as JSON (NaN -> null), atomically."""
    atomic_write_text(path, json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n")
