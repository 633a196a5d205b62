"""Track result files: the ILSVRC VID "detection with tracking" format (docs/TRACK_PROTOCOL.md §1).

One line per detection, `<frame_id> <class_id> <track_id> <score> <x1> <y1> <x2> <y2>`:
frame_id and class_id (1..30) exactly as in the detection files (`results.py`), track_id an
integer >= 0 naming the detection's track within its video. This is the order the devkit's
`eval_vid_tracking.m` reads (`%d %d %d %f %f %f %f %f`: frame, class, track, confidence, box)
and D&T writes; the first two columns mean what they mean in a detection file. Scores are
written with 4 decimals and boxes with 2, like the detection files.

The writer is atomic (`files.atomic_write_chunks`); the reader names the file and line of the
first malformed line in one TracksFormatError.
"""

from __future__ import annotations

import math
import os
import pathlib
import warnings
from collections.abc import Iterator

import numpy as np

from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import results, tracks, vid_ap
from ssvd_jax.files import atomic_write_chunks

PathLike = str | os.PathLike
_FIELDS = 8
_FORMAT = "frame_id class_id track_id score x1 y1 x2 y2"


class TracksFormatError(UserError, ValueError):
    """A track result file that cannot be used; `file` is the file (and line)."""


def format_tracks(
    preds: tracks.Tracks,
    *,
    score_decimals: int = results.SCORE_DECIMALS,
    box_decimals: int = results.BOX_DECIMALS,
) -> Iterator[str]:
    """Lines of the track file, in chunks."""
    line = f"%d %d %d %.{score_decimals}f" + f" %.{box_decimals}f" * 4 + "\n"
    d = preds.dets
    return results.format_rows(line, d.frame_id, d.label + 1, preds.track_id, d.score, *d.boxes.T)


def write_tracks(
    path: PathLike,
    preds: tracks.Tracks,
    *,
    score_decimals: int = results.SCORE_DECIMALS,
    box_decimals: int = results.BOX_DECIMALS,
) -> None:
    """Write tracks (0-based labels) as a track result file, atomically."""
    atomic_write_chunks(
        path, format_tracks(preds, score_decimals=score_decimals, box_decimals=box_decimals)
    )


def _row_problem(values: list[float], num_classes: int) -> str | None:
    frame_id, class_id, track_id = values[0], values[1], values[2]
    if not all(math.isfinite(v) for v in values):
        return f"non-finite value in {values}"
    if frame_id != int(frame_id) or frame_id < 1:
        return f"frame_id {frame_id:g} is not an id >= 1"
    if class_id != int(class_id) or not 1 <= class_id <= num_classes:
        return (f"class_id {class_id:g} is not an integer in 1..{num_classes} (columns: "
                f"{_FORMAT})")  # fmt: skip
    if track_id != int(track_id) or track_id < 0:
        return f"track_id {track_id:g} is not an integer >= 0"
    return None


def _lines(path: pathlib.Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TracksFormatError(path, f"cannot read tracks ({e})") from e
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_tracks(path: PathLike, num_classes: int = vid_ap.NUM_CLASSES) -> tracks.Tracks:
    """Read a track result file into Tracks (labels back to 0-based). Blank lines are skipped;
    a malformed line raises TracksFormatError naming the file and its line number."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TracksFormatError(path, "tracks file not found")
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
        ints = table[:, :3]
        good = (
            np.isfinite(table).all(axis=1)
            & (ints == np.floor(ints)).all(axis=1)
            & (table[:, 0] >= 1)
            & (table[:, 1] >= 1)
            & (table[:, 1] <= num_classes)
            & (table[:, 2] >= 0)
        )
        if good.all():
            return _to_tracks(table)
    rows = []
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != _FIELDS:
            raise TracksFormatError(
                f"{path}:{lineno}",
                f"expected 8 fields '{_FORMAT}', got {len(parts)}: {line.strip()!r}",
            )
        try:
            values = [float(p) for p in parts]
        except ValueError:
            problem = f"not a number in {line.strip()!r}"
            raise TracksFormatError(f"{path}:{lineno}", problem) from None
        problem = _row_problem(values, num_classes)
        if problem is not None:
            raise TracksFormatError(f"{path}:{lineno}", problem)
        rows.append(values)
    return _to_tracks(np.asarray(rows, np.float64).reshape(-1, _FIELDS))


def _to_tracks(table: np.ndarray) -> tracks.Tracks:
    dets = vid_ap.Detections(
        table[:, 0].astype(np.int64), table[:, 1].astype(np.int64) - 1, table[:, 3], table[:, 4:8]
    )
    return tracks.Tracks(dets, table[:, 2].astype(np.int64))


def line_of_row(path: PathLike, row: int) -> int:
    """The 1-based line number of the `row`-th detection (0-based) of a track file."""
    return _lines(pathlib.Path(path))[row][0]
