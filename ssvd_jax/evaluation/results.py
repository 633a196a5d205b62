"""Result files: ILSVRC devkit detections and the JSON summary of a scoring run.

Detections file (VID_PROTOCOL §1 "result-file format", REFERENCE_SPEC §7.2): one line per
detection, `<frame_id> <class_id> <score> <x1> <y1> <x2> <y2>`, where frame_id is the global
1-based id of the frame in the evaluation list (REFERENCE_SPEC §9) and class_id is 1..30 (the
0-based labels used in code plus one). FGFA and SSVD write scores with 4 decimals and boxes with
2, so the default does the same and our files score exactly as the reference's would; pass more
decimals to keep more scores distinct (fewer ties, VID_PROTOCOL §1 "tie sensitivity").

COCO-style results (for datasets in COCO-VID JSON): a JSON list of
`{"image_id": <frame id>, "category_id": <the dataset's category id>, "bbox": [x, y, w, h],
"score": s}` with continuous boxes (x2 = x + w), as pycocotools' `loadRes` reads them. The writer
rounds like the devkit file (x1, y1, x2, y2 to 2 decimals, w = x2 - x1 of the rounded values), so
reading either file back gives the same rows up to float rounding. `read_any_detections` picks
the reader by the `.json` suffix.

All writers are atomic: they write a temporary file in the destination folder and `os.replace`
it, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
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
    """A detections file that cannot be read; `file` is the file (and line, or JSON entry)."""


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


# ----------------------------------------------------------------------------------------------
# COCO-style JSON results

_COCO_KEYS = ("image_id", "category_id", "bbox", "score")
_NUMBER = (int, float)  # JSON numbers; bool is not one (type(True) is bool)
_INT64_LIMIT = 2.0**63


def _category_array(category_ids: Sequence[int]) -> np.ndarray:
    ids = np.asarray(category_ids, np.int64).reshape(-1)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"category_ids must be unique, got {list(ids)}")
    return ids


def _decimal_round(values: np.ndarray, decimals: int) -> np.ndarray:
    """`values` as the text writer's `%.<decimals>f` writes them (numpy's round can differ on
    the last digit where the binary value sits on a tie)."""
    fmt = f"%.{decimals}f"
    flat = np.asarray([fmt % v for v in values.reshape(-1).tolist()], np.float64)
    return flat.reshape(values.shape)


def format_coco_detections(
    dets: vid_ap.Detections,
    category_ids: Sequence[int],
    *,
    score_decimals: int = SCORE_DECIMALS,
    box_decimals: int = BOX_DECIMALS,
) -> Iterator[str]:
    """The COCO-style JSON text, one detection per line, in chunks. Raises ValueError for a
    label without a category id, a non-finite value or a box with x2 < x1 or y2 < y1 (no file
    should hold what `read_coco_detections` rejects)."""
    ids = _category_array(category_ids)
    if len(dets) and (dets.label.min() < 0 or dets.label.max() >= len(ids)):
        raise ValueError(f"detection labels must be in 0..{len(ids) - 1} ({len(ids)} categories)")
    finite = np.isfinite(dets.score) & np.isfinite(dets.boxes).all(axis=1)
    if not finite.all():
        raise ValueError(f"detection {int(np.argmin(finite))} has a non-finite score or box")
    boxes = _decimal_round(dets.boxes, box_decimals)
    size = boxes[:, 2:] - boxes[:, :2]
    negative = (size < 0).any(axis=1)
    if negative.any():
        i = int(np.argmax(negative))
        raise ValueError(f"detection {i} has x2 < x1 or y2 < y1: {dets.boxes[i].tolist()}")
    b = f"%.{box_decimals}f"
    line = (
        f'{{"image_id": %d, "category_id": %d, "bbox": [{b}, {b}, {b}, {b}], '
        f'"score": %.{score_decimals}f}},\n'
    )
    columns = (dets.frame_id, ids[dets.label], *boxes[:, :2].T, *size.T, dets.score)
    previous = None
    yield "[\n"
    for chunk in format_rows(line, *columns):
        if previous is not None:
            yield previous
        previous = chunk
    # The last entry takes no comma after it.
    yield "]\n" if previous is None else previous[: -len(",\n")] + "\n]\n"


def write_coco_detections(
    path: PathLike,
    dets: vid_ap.Detections,
    category_ids: Sequence[int],
    *,
    score_decimals: int = SCORE_DECIMALS,
    box_decimals: int = BOX_DECIMALS,
) -> None:
    """Write detections (label k has category_ids[k]) as COCO-style JSON results, atomically."""
    atomic_write_chunks(
        path,
        format_coco_detections(
            dets, category_ids, score_decimals=score_decimals, box_decimals=box_decimals
        ),
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_integer(value: Any) -> bool:
    return (
        type(value) in _NUMBER
        and math.isfinite(value)
        and value == int(value)
        and abs(value) < _INT64_LIMIT
    )


def _categories_text(ids: np.ndarray) -> str:
    shown = ", ".join(str(i) for i in ids[:10].tolist())
    return f"({shown}, ... {len(ids)} in all)" if len(ids) > 10 else f"({shown})"


def _entry_problem(entry: Any, ids: np.ndarray) -> str | None:
    """What is wrong with one COCO result entry, None if nothing: the one source of the
    messages (the vectorised checks of `_coco_table` only decide whether to ask)."""
    if not isinstance(entry, dict):
        return f"not a JSON object with keys {', '.join(_COCO_KEYS)}: {_short(entry)}"
    for key in _COCO_KEYS:
        if key not in entry:
            return f"missing key {key!r}"
    image_id, category_id = entry["image_id"], entry["category_id"]
    bbox, score = entry["bbox"], entry["score"]
    if not _is_integer(image_id):
        return f"image_id {_short(image_id)} is not an integer"
    if not _is_integer(category_id):
        return f"category_id {_short(category_id)} is not an integer"
    if int(category_id) not in set(ids.tolist()):
        return (
            f"category_id {int(category_id)} is not defined in the dataset's categories "
            f"{_categories_text(ids)}"
        )
    if not (type(bbox) is list and len(bbox) == 4 and all(type(v) in _NUMBER for v in bbox)):
        return f"bbox {_short(bbox)} is not a list of 4 numbers [x, y, width, height]"
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {_short(bbox)} has a non-finite value"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {_short(bbox)} has a negative size"
    if type(score) not in _NUMBER or not math.isfinite(score):
        return f"score {_short(score)} is not a finite number"
    return None


def _integer_column(values: list) -> np.ndarray | None:
    if not {type(v) for v in values} <= set(_NUMBER):
        return None
    try:
        arr = np.asarray(values)
    except OverflowError:
        return None
    if arr.dtype.kind not in "iuf":
        return None
    if arr.dtype.kind == "f":
        ok = np.isfinite(arr) & (np.abs(arr) < _INT64_LIMIT)
        if not ok.all() or np.any(arr != np.floor(arr)):
            return None
    return arr.astype(np.int64)


def _coco_table(entries: list, ids: np.ndarray) -> vid_ap.Detections | int:
    """The Detections of valid entries; else the index from which to look for the first bad
    entry (0 when a type is wrong somewhere, the first failing row of a numeric check)."""
    num = len(entries)
    if not num:
        return vid_ap.Detections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 4)))
    try:
        columns = [[e[key] for e in entries] for key in _COCO_KEYS]
    except (KeyError, TypeError, IndexError):
        return 0
    image_id, category_id = _integer_column(columns[0]), _integer_column(columns[1])
    bbox, score = columns[2], columns[3]
    if image_id is None or category_id is None:
        return 0
    if {type(b) for b in bbox} - {list} or not {type(v) for b in bbox for v in b} <= set(_NUMBER):
        return 0
    if not {type(v) for v in score} <= set(_NUMBER):
        return 0
    try:
        boxes = np.asarray(bbox, np.float64).reshape(num, -1)
    except ValueError:  # ragged
        return 0
    if boxes.shape[1] != 4:
        return 0
    score_arr = np.asarray(score, np.float64).reshape(num)
    sorter = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[sorter], category_id), max(len(ids) - 1, 0))
    known = ids[sorter][pos] == category_id if len(ids) else np.zeros(num, bool)
    bad = (
        ~known
        | ~np.isfinite(boxes).all(axis=1)
        | (boxes[:, 2] < 0)
        | (boxes[:, 3] < 0)
        | ~np.isfinite(score_arr)
    )
    if bad.any():
        return int(np.argmax(bad))
    x1y1 = boxes[:, :2]
    return vid_ap.Detections(
        image_id, sorter[pos], score_arr, np.concatenate([x1y1, x1y1 + boxes[:, 2:]], axis=1)
    )


def read_coco_detections(path: PathLike, category_ids: Sequence[int]) -> vid_ap.Detections:
    """Read COCO-style JSON results: frame_id = image_id, label = the index of category_id in
    `category_ids`, boxes x1 y1 (x + w) (y + h).

    Problems raise DetectionsFormatError naming the file, or the file and the first bad entry
    (`results.json: [12]`) with what is wrong with it.
    """
    path = pathlib.Path(path)
    ids = _category_array(category_ids)
    if not path.is_file():
        raise DetectionsFormatError(path, "detections file not found")
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DetectionsFormatError(path, f"cannot read detections ({e})") from e
    except json.JSONDecodeError as e:
        raise DetectionsFormatError(
            path, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if not isinstance(entries, list):
        raise DetectionsFormatError(
            path,
            'not a JSON list of detections ([{"image_id": ..., "category_id": ..., '
            '"bbox": [x, y, w, h], "score": ...}, ...])',
        )
    table = _coco_table(entries, ids)
    if isinstance(table, vid_ap.Detections):
        return table
    for i in range(table, len(entries)):
        problem = _entry_problem(entries[i], ids)
        if problem is not None:
            raise DetectionsFormatError(f"{path}: [{i}]", problem)
    raise DetectionsFormatError(path, "cannot read the detections")  # not reached


def read_any_detections(
    path: PathLike,
    category_ids: Sequence[int] | None = None,
    num_classes: int = vid_ap.NUM_CLASSES,
) -> vid_ap.Detections:
    """Read a detections file of either format, by its suffix: `.json` COCO-style results
    (`read_coco_detections`; without category_ids the categories are 1..num_classes), anything
    else the devkit text file (`read_detections`, class ids 1..len(category_ids) or
    1..num_classes)."""
    if category_ids is not None:
        num_classes = len(category_ids)
    if pathlib.Path(path).suffix.lower() == ".json":
        ids = list(range(1, num_classes + 1)) if category_ids is None else category_ids
        return read_coco_detections(path, ids)
    return read_detections(path, num_classes)


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
