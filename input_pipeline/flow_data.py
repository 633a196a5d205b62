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
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from input_pipeline import preprocess
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.errors import UserError

FLO_MAGIC = 202021.25  # b"PIEH" read as a little-endian float32
_CHAIRS_FLOW = re.compile(r"^(\d+)_flow\.flo$")


class FlowDataError(UserError, ValueError):
    """A flow file or dataset folder that cannot be read; `file` names it."""


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
        raise FlowDataError(path, f"cannot read ({e.strerror})") from e
    if len(data) < 12:
        raise FlowDataError(path, f"{len(data)} bytes, too short for a .flo header")
    magic = np.frombuffer(data[:4], "<f4")[0]
    if magic != np.float32(FLO_MAGIC):
        raise FlowDataError(path, f"not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if width <= 0 or height <= 0 or width * height > 1 << 28:
        raise FlowDataError(path, f"implausible size {width}x{height}")
    expected = 12 + width * height * 2 * 4
    if len(data) != expected:
        raise FlowDataError(
            path, f"{len(data)} bytes, a {width}x{height} flow needs {expected} (truncated?)"
        )
    return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).astype(np.float32)


def flying_chairs_pairs(root: os.PathLike | str, split: str | None = None) -> list[FlowPair]:
    """The pairs of a FlyingChairs folder in numeric order; `split` 'train' or 'val' selects by
    FlyingChairs_train_val.txt (searched in the root and beside its 'data' folder)."""
    root = pathlib.Path(root)
    data = root / "data" if (root / "data").is_dir() else root
    if not data.is_dir():
        raise FlowDataError(root, "no such FlyingChairs folder")
    numbers = sorted(
        (int(m.group(1)), m.group(1))
        for m in (_CHAIRS_FLOW.match(n) for n in os.listdir(data))
        if m
    )
    if not numbers:
        raise FlowDataError(data, "no NNNNN_flow.flo files (is this FlyingChairs' data/?)")
    pairs = []
    for _, stem in numbers:
        pair = FlowPair(
            data / f"{stem}_img1.ppm", data / f"{stem}_img2.ppm", data / f"{stem}_flow.flo"
        )
        for image in (pair.image1, pair.image2):
            if not image.is_file():
                raise FlowDataError(image, f"missing (its flow {pair.flow.name} exists)")
        pairs.append(pair)
    if split is None:
        return pairs
    if split not in ("train", "val"):
        raise ValueError(f"FlyingChairs split {split!r}: 'train' or 'val'")
    candidates = [root / "FlyingChairs_train_val.txt", data.parent / "FlyingChairs_train_val.txt"]
    list_file = next((p for p in candidates if p.is_file()), None)
    if list_file is None:
        raise FlowDataError(root, f"split {split!r} needs FlyingChairs_train_val.txt")
    marks = list_file.read_text().split()
    if len(marks) != len(pairs) or set(marks) - {"1", "2"}:
        raise FlowDataError(
            list_file, f"{len(marks)} marks (1 = train, 2 = val) for {len(pairs)} pairs"
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
            raise FlowDataError(folder, "missing (expected MPI-Sintel's training/ layout)")
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
                    raise FlowDataError(image, f"missing (its flow {flow} exists)")
            pairs.append(pair)
    if not pairs:
        raise FlowDataError(flows, "no <scene>/frame_NNNN.flo files")
    return pairs


# ----------------------------------------------------------------------------------------------
# Batches for PWC-Net pretraining


def _read_image(path: pathlib.Path) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FlowDataError(path, "missing or not a readable image")
    return image


def load_pair(pair: FlowPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image1, image2) uint8 BGR and the flow float32 [H, W, 2]; sizes must agree."""
    image1, image2, flow = _read_image(pair.image1), _read_image(pair.image2), read_flo(pair.flow)
    if image1.shape != image2.shape or image1.shape[:2] != flow.shape[:2]:
        raise FlowDataError(
            pair.flow,
            f"sizes disagree: {pair.image1.name} {image1.shape[:2]}, "
            f"{pair.image2.name} {image2.shape[:2]}, flow {flow.shape[:2]}",
        )
    return image1, image2, flow


def crop_shape(crop_size: int | Sequence[int]) -> tuple[int, int]:
    """A crop size as (height, width): an int, or a one-element sequence (what a command line's
    `--config.flow.crop_size=64` makes of a tuple field), is a square crop."""
    if isinstance(crop_size, int | np.integer):
        return int(crop_size), int(crop_size)
    sides = tuple(int(v) for v in crop_size)
    if len(sides) == 1:
        return sides[0], sides[0]
    if len(sides) != 2:
        raise ValueError(f"a crop size is an int or (height, width), got {tuple(crop_size)}")
    return sides


def translate(image_HxWxC: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The image moved by (dx, dy) pixels (sub-pixel: bilinear), its borders reflected."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    height, width = image_HxWxC.shape[:2]
    return cv2.warpAffine(image_HxWxC, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip


def _window(height: int, width: int, crop: tuple[int, int], pair: FlowPair) -> None:
    if height < crop[0] or width < crop[1]:
        raise FlowDataError(
            pair.image1, f"{width}x{height} is smaller than the {crop[1]}x{crop[0]} crop"
        )


def pair_arrays(
    pair: FlowPair,
    *,
    crop_size: int | Sequence[int],
    mean_bgr: tuple[float, ...],
    rng: np.random.Generator | None,
    max_shift: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pair as the model's inputs: two normalised BGR crops [h, w, 3] and the flow between
    them [h, w, 2] (`crop_size`: (h, w), or an int for a square). Without `rng` (evaluation):
    the centre crop of the pair as it is. With `rng` (training): half the time, image 2
    translated by up to `max_shift` pixels in x and y (sub-pixel, bilinear; its borders
    reflected) and the flow by the same (dense motion everywhere, as FlyingChairs' relative
    affine transforms give), a random crop of all three, and a left-right mirror half the
    time."""
    image1, image2, flow = load_pair(pair)
    height, width = image1.shape[:2]
    crop_h, crop_w = crop_shape(crop_size)
    _window(height, width, (crop_h, crop_w), pair)
    if rng is None:
        y0, x0 = (height - crop_h) // 2, (width - crop_w) // 2
        shift = np.zeros(2, np.float32)
    else:
        y0, x0 = int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1))
        # Half the pairs as they are; the others moved by a sub-pixel amount (flows as small
        # and as fractional as the videos' own are learnt too, not only whole-pixel shifts).
        shift = np.zeros(2, np.float32)
        if max_shift and rng.random() < 0.5:
            shift = rng.uniform(-max_shift, max_shift, size=2).astype(np.float32)
            image2 = translate(image2, float(shift[0]), float(shift[1]))
    window = np.s_[y0 : y0 + crop_h, x0 : x0 + crop_w]
    crop1, crop2, flow = image1[window], image2[window], flow[window] + shift
    if rng is not None and rng.random() < 0.5:
        crop1, crop2 = crop1[:, ::-1], crop2[:, ::-1]
        flow = flow[:, ::-1] * np.float32([-1.0, 1.0])
    return (
        preprocess.normalize(np.ascontiguousarray(crop1), mean_bgr),
        preprocess.normalize(np.ascontiguousarray(crop2), mean_bgr),
        np.ascontiguousarray(flow, np.float32),
    )


class FlowBatches(Iterator[dict[str, np.ndarray]]):
    """Endless training batches {'image1', 'image2': [*batch_dims, h, w, 3] normalised BGR,
    'flow': [*batch_dims, h, w, 2]} drawn from `pairs`. Batch i is a pure function of
    (seed, i), so a resumed run continues the same stream; this host reads its slice of the
    global batch."""

    def __init__(
        self,
        pairs: list[FlowPair],
        *,
        crop_size: int | Sequence[int],
        mean_bgr: tuple[float, ...],
        batch_dims: tuple[int, int],
        seed: int,
        start_step: int,
        max_shift: int = 0,
        host_index: int = 0,
        num_hosts: int = 1,
    ):
        if not pairs:
            raise FlowDataError("flow.root", "no flow pairs to train on")
        self._max_shift = max_shift
        self._pairs, self._size, self._mean = pairs, crop_size, tuple(mean_bgr)
        self._dims, self._seed, self._step = tuple(batch_dims), seed, start_step
        self._host, self._hosts = host_index, num_hosts

    def __next__(self) -> dict[str, np.ndarray]:
        local = int(np.prod(self._dims))
        rng = np.random.default_rng([self._seed, 7, self._step])
        chosen = rng.integers(len(self._pairs), size=local * self._hosts)
        mine = chosen[self._host * local : (self._host + 1) * local]
        rngs = [np.random.default_rng([self._seed, 8, self._step, int(k)]) for k in range(local)]
        items = [
            pair_arrays(
                self._pairs[i],
                crop_size=self._size,
                mean_bgr=self._mean,
                rng=r,
                max_shift=self._max_shift,
            )  # fmt: skip
            for i, r in zip(mine, rngs, strict=True)
        ]
        self._step += 1
        shape = self._dims
        return {
            name: np.stack([item[k] for item in items]).reshape(*shape, *items[0][k].shape)
            for k, name in enumerate(("image1", "image2", "flow"))
        }

    def close(self, wait: bool = True) -> None:
        """Nothing to stop (the pairs are read on the caller's thread); as `Batches.close`."""


def dataset_pairs(source: str, root: str, split: str) -> list[FlowPair]:
    """The pairs of a flow dataset: 'flying_chairs' (FlyingChairs layout, the synthetic
    generator's included) by its train/val list; 'sintel_clean' / 'sintel_final' (MPI-Sintel's
    training set: its last scene is held out as 'val', the others are 'train')."""
    if source == "flying_chairs":
        return flying_chairs_pairs(root, split)
    if source in ("sintel_clean", "sintel_final"):
        pairs = sintel_pairs(root, source.split("_")[1])
        last = pairs[-1].flow.parent
        return [p for p in pairs if (p.flow.parent == last) == (split == "val")]
    raise ValueError(
        f"flow data source {source!r}: 'flying_chairs', 'sintel_clean', 'sintel_final'"
    )


def configured_pairs(config: Any, workdir: str, split: str) -> list[FlowPair]:
    """The pairs of `split` for the pwcnet phase: `flow.source` at `flow.root`, else the
    synthetic generator's FlyingChairs folder inside the data root."""
    root = config.flow.root or os.path.join(workdir_lib.data_root(config, workdir), "FlyingChairs")
    return dataset_pairs(config.flow.source, root, split)
