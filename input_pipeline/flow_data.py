"""Optical-flow data for PWC-Net pretraining (the paper's FlyingChairs step): the Middlebury
`.flo` format and the file layouts of the standard flow datasets.

`.flo` (Middlebury; also FlyingChairs' and MPI-Sintel's ground truth): float32 magic 202021.25
(the bytes 'PIEH'), int32 width, int32 height, then height x width x 2 float32 (u, v) in row-major
order, little-endian. u is the horizontal displacement in pixels from image 1 to image 2.

Layouts (paths relative to the dataset root the user passes):
  FlyingChairs   data/NNNNN_img1.ppm, data/NNNNN_img2.ppm, data/NNNNN_flow.flo (the 'data'
                 folder may also be the root itself); optional FlyingChairs_train_val.txt with
                 one line per pair, 1 = train, 2 = val.
  MPI-Sintel     training/{clean,final}/<scene>/frame_NNNN.png with training/flow/<scene>/
                 frame_NNNN.flo the flow from frame NNNN to the next one.
Every problem names the file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import numpy as np

FLO_MAGIC = 202021.25  # b"PIEH" read as a little-endian float32
_CHAIRS_FLOW = re.compile(r"^(\d+)_flow\.flo$")


class FlowDataError(ValueError):
    """A flow file or dataset folder that cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class FlowPair:
    """Two images and the ground-truth flow from the first to the second."""

    image1: pathlib.Path
    image2: pathlib.Path
    flow: pathlib.Path


def write_flo(path: os.PathLike | str, flow_HxWx2: np.ndarray) -> None:
    """Write a flow field [H, W, 2] (u, v) as a `.flo` file (atomically: temp + rename)."""
    flow = np.asarray(flow_HxWx2, np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"{path}: a flow field is [H, W, 2], got shape {flow.shape}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(np.float32(FLO_MAGIC).astype("<f4").tobytes())
            f.write(np.array([flow.shape[1], flow.shape[0]], "<i4").tobytes())
            f.write(flow.astype("<f4").tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_flo(path: os.PathLike | str) -> np.ndarray:
    """A `.flo` file as float32 [H, W, 2]; a bad magic, size or length raises FlowDataError."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlowDataError(f"{path}: cannot read ({e.strerror})") from e
    if len(data) < 12:
        raise FlowDataError(f"{path}: {len(data)} bytes, too short for a .flo header")
    magic = np.frombuffer(data[:4], "<f4")[0]
    if magic != np.float32(FLO_MAGIC):
        raise FlowDataError(f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if width <= 0 or height <= 0 or width * height > 1 << 28:
        raise FlowDataError(f"{path}: implausible size {width}x{height}")
    expected = 12 + width * height * 2 * 4
    if len(data) != expected:
        raise FlowDataError(
            f"{path}: {len(data)} bytes, a {width}x{height} flow needs {expected} (truncated?)"
        )
    return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).astype(np.float32)


def flying_chairs_pairs(root: os.PathLike | str, split: str | None = None) -> list[FlowPair]:
    """The pairs of a FlyingChairs folder in numeric order; `split` 'train' or 'val' selects by
    FlyingChairs_train_val.txt (searched in the root and beside its 'data' folder)."""
    root = pathlib.Path(root)
    data = root / "data" if (root / "data").is_dir() else root
    if not data.is_dir():
        raise FlowDataError(f"{root}: no such FlyingChairs folder")
    numbers = sorted(
        (int(m.group(1)), m.group(1))
        for m in (_CHAIRS_FLOW.match(n) for n in os.listdir(data))
        if m
    )
    if not numbers:
        raise FlowDataError(f"{data}: no NNNNN_flow.flo files (is this FlyingChairs' data/?)")
    pairs = []
    for _, stem in numbers:
        pair = FlowPair(
            data / f"{stem}_img1.ppm", data / f"{stem}_img2.ppm", data / f"{stem}_flow.flo"
        )
        for image in (pair.image1, pair.image2):
            if not image.is_file():
                raise FlowDataError(f"{image}: missing (its flow {pair.flow.name} exists)")
        pairs.append(pair)
    if split is None:
        return pairs
    if split not in ("train", "val"):
        raise ValueError(f"FlyingChairs split {split!r}: 'train' or 'val'")
    candidates = [root / "FlyingChairs_train_val.txt", data.parent / "FlyingChairs_train_val.txt"]
    list_file = next((p for p in candidates if p.is_file()), None)
    if list_file is None:
        raise FlowDataError(f"{root}: split {split!r} needs FlyingChairs_train_val.txt")
    marks = list_file.read_text().split()
    if len(marks) != len(pairs) or set(marks) - {"1", "2"}:
        raise FlowDataError(
            f"{list_file}: {len(marks)} marks (1 = train, 2 = val) for {len(pairs)} pairs"
        )
    want = "1" if split == "train" else "2"
    return [p for p, mark in zip(pairs, marks, strict=True) if mark == want]


def sintel_pairs(root: os.PathLike | str, render_pass: str = "clean") -> list[FlowPair]:
    """The training pairs of an MPI-Sintel folder (`render_pass` 'clean' or 'final'), by scene
    and frame: frame_i, frame_i+1 and flow/<scene>/frame_i.flo."""
    if render_pass not in ("clean", "final"):
        raise ValueError(f"Sintel pass {render_pass!r}: 'clean' or 'final'")
    root = pathlib.Path(root)
    images, flows = root / "training" / render_pass, root / "training" / "flow"
    for folder in (images, flows):
        if not folder.is_dir():
            raise FlowDataError(f"{folder}: missing (expected MPI-Sintel's training/ layout)")
    pairs = []
    for scene in sorted(p.name for p in flows.iterdir() if p.is_dir()):
        for flow in sorted((flows / scene).glob("frame_*.flo")):
            number = int(flow.stem.split("_")[1])
            pair = FlowPair(
                images / scene / f"frame_{number:04d}.png",
                images / scene / f"frame_{number + 1:04d}.png",
                flow,
            )
            for image in (pair.image1, pair.image2):
                if not image.is_file():
                    raise FlowDataError(f"{image}: missing (its flow {flow} exists)")
            pairs.append(pair)
    if not pairs:
        raise FlowDataError(f"{flows}: no <scene>/frame_NNNN.flo files")
    return pairs
