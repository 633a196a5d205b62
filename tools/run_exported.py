"""Run an exported SSVD artifact (`main.py --mode=export`) on a video file or a frame folder and
write its detections in the ILSVRC devkit format. Needs only jax, numpy and cv2: no Flax, no
ssvd_jax (this file is the whole runner; copy it next to the artifact).

  python tools/run_exported.py --artifact runs/synthetic/export/phase2 \\
      --input runs/synthetic/data/ILSVRC2015/Data/VID/val/ILSVRC2015_val_00000000 \\
      --output dets.txt [--first-frame-id 1]
  (several --input paths: one process, one compile; frame ids go on from one to the next)

Output lines: `frame_id class_id score x1 y1 x2 y2` (frame ids from --first-frame-id, class ids
1-based, scores with 4 decimals, boxes with 2, in the frame's own pixels), as `--mode=eval`
writes them. A frame folder is read in name order (.jpg .jpeg .png .bmp); a video file is
decoded by cv2 (its own ffmpeg, so its pixels may differ slightly from the demo's reader).

The artifact (ssvd_jax/export.py): `init(length) -> state` starts a video, `step(params, state,
image) -> (state, (reference, boxes, scores, labels, valid))` pushes a frame and detects the
reference frame that became ready (-1: none yet). The support schedule, the ring buffer and
their counters live in the state, so the loop here only feeds frames, then keeps stepping (with
a zero image, ignored) until the last frame is out. Each frame is preprocessed as the
evaluation does (input_pipeline/preprocess.py): cv2.resize to S x S (INTER_LINEAR), then
float32 BGR minus the mean; boxes are scaled by W/S and H/S as the engine does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import cv2
import jax
import numpy as np

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class RunnerError(Exception):
    """A problem with what the user gave (artifact, input, output): printed as one line."""

    def __init__(self, file: str, problem: str):
        self.file, self.problem = file, problem
        super().__init__(f"{file}: {problem}")


def read_meta(folder: str) -> dict:
    path = os.path.join(folder, "meta.json")
    if not os.path.isfile(path):
        raise RunnerError(
            folder, "not an exported artifact (no meta.json): see main.py --mode=export"
        )
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunnerError(
            path, f"format {meta.get('format_version')}, this runner reads {FORMAT_VERSION}"
        )
    return meta


def use_xla_flags(meta: dict) -> None:
    """The XLA:CPU flags the exporting process ran with (ssvd_jax/runtime.py), so that the
    runner computes what `--mode=eval` computes; only under the same jax version (another one
    may not know a flag and would refuse to start) and unless XLA_FLAGS already names them.
    Must run before jax's first computation."""
    if jax.__version__ != meta.get("jax_version"):
        return
    current = os.environ.get("XLA_FLAGS", "")
    named = {token.split("=", 1)[0] for token in current.split()}
    added = [f for f in meta.get("xla_flags", []) if f.split("=", 1)[0] not in named]
    os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()


def preprocess(frame_bgr: np.ndarray, size: int, mean_bgr) -> np.ndarray:
    """input_pipeline/preprocess.py, transcribed: uint8 BGR [H, W, 3] -> cv2.resize to
    size x size (INTER_LINEAR), then float32 BGR minus the mean (cv2.subtract: the same
    float32 values as numpy's subtraction)."""
    resized = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    scalar = tuple(float(m) for m in mean_bgr) + (0.0,)
    return cv2.subtract(resized, scalar, dtype=cv2.CV_32F)


class Artifact:
    """An exported artifact, loaded: `detect_video` runs one video through it."""

    def __init__(self, folder: str):
        self.folder = folder
        self.meta = meta = read_meta(folder)
        files = meta["files"]
        try:
            with open(os.path.join(folder, files["init"]), "rb") as f:
                init = jax.export.deserialize(bytearray(f.read()))
            with open(os.path.join(folder, files["step"]), "rb") as f:
                step = jax.export.deserialize(bytearray(f.read()))
            with np.load(os.path.join(folder, files["params"])) as f:
                params = [f[f"p{i:05d}"] for i in range(len(meta["params"]))]
        except (OSError, KeyError, ValueError) as e:
            raise RunnerError(folder, f"cannot load the artifact ({type(e).__name__}: {e})") from e
        self.size = int(meta["image_size"])
        self.mean = tuple(float(m) for m in meta["pixel_mean_bgr"])
        self.params = jax.device_put(params)  # once; every step reuses them
        self._init = jax.jit(init.call)
        # The exported step cannot donate; its caller can: the state is updated in place.
        self._step = jax.jit(step.call, donate_argnums=(1,))
        self._zeros = np.zeros((self.size, self.size, 3), np.float32)

    def detect_video(self, frames: Iterator, length: int, size: tuple[int, int]) -> Iterator:
        """(frame index, boxes [N, 4] in frame pixels, scores [N], 0-based labels [N]) of every
        frame of a video of `length` uint8 BGR frames of `size` (W, H), in frame order."""
        if length < 1:
            raise RunnerError("input", "the video has no frames")
        w, h = size
        s = self.size
        scale = np.array([w / s, h / s, w / s, h / s], np.float32)
        state = self._init(np.int32(length))
        frames, pushed, done = iter(frames), 0, 0
        while done < length:
            image = self._zeros
            if pushed < length:
                frame = next(frames, None)
                if frame is None:
                    raise RunnerError("input", f"ended after {pushed} of {length} frames")
                image = preprocess(frame, self.size, self.mean)
                pushed += 1
            state, (reference, boxes, scores, labels, valid) = self._step(self.params, state, image)
            reference = int(reference)
            if reference < 0:
                continue
            if reference != done:
                raise RuntimeError(f"the artifact detected frame {reference}, expected {done}")
            keep = np.asarray(valid)
            yield (
                reference,
                (np.asarray(boxes) * scale)[keep],
                np.asarray(scores)[keep],
                np.asarray(labels)[keep],
            )
            done += 1


def open_input(path: str) -> tuple[Iterator, int, tuple[int, int]]:
    """(uint8 BGR frames, frame count, (W, H)) of a frame folder or a video file."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise RunnerError(path, f"no image files ({', '.join(IMAGE_SUFFIXES)})")

        def read(name: str):
            image = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
            if image is None:
                raise RunnerError(os.path.join(path, name), "not a readable image")
            return image

        first = read(names[0])
        size = (first.shape[1], first.shape[0])

        def frames():
            yield first
            for name in names[1:]:
                image = read(name)
                if (image.shape[1], image.shape[0]) != size:
                    raise RunnerError(os.path.join(path, name), f"size differs from {size}")
                yield image

        return frames(), len(names), size
    if not os.path.isfile(path):
        raise RunnerError(path, "no such file or folder")
    # The schedule needs the length first: one pass to count (grab decodes without converting).
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    if count == 0:
        raise RunnerError(path, "cannot decode any frame of it")
    capture = cv2.VideoCapture(path)
    ok, first = capture.read()
    size = (first.shape[1], first.shape[0])

    def video_frames():
        yield first
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield image
        capture.release()

    return video_frames(), count, size


def format_rows(frame_id: int, boxes, scores, labels, meta: dict) -> str:
    """The devkit lines of one frame (as ssvd_jax/evaluation/results.py writes them)."""
    line = f"%d %d %.{meta['score_decimals']}f" + f" %.{meta['box_decimals']}f" * 4 + "\n"
    rows = zip(labels.tolist(), scores.tolist(), *boxes.T.tolist(), strict=True)
    return "".join(line % (frame_id, label + 1, score, *box) for label, score, *box in rows)


def run(artifact_dir: str, inputs: list[str], output: str, first_frame_id: int = 1) -> dict:
    """Detect every frame of each input (videos or frame folders, in order; frame ids go on
    from one to the next, as the evaluation lists number them) with the artifact, loaded and
    compiled once; write `output`. Returns counts and the steady-state frames per second of
    the last input (from its first result to its last)."""
    use_xla_flags(read_meta(artifact_dir))
    artifact = Artifact(artifact_dir)
    chunks, detections, frame_id, total = [], 0, first_frame_id, 0
    start = time.perf_counter()
    for path in inputs:
        frames, length, size = open_input(path)
        first = None
        for t, boxes, scores, labels in artifact.detect_video(frames, length, size):
            first = first or time.perf_counter()
            chunks.append(format_rows(frame_id + t, boxes, scores, labels, artifact.meta))
            detections += len(scores)
        end = time.perf_counter()
        frame_id += length
        total += length
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".dets.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("".join(chunks))
    os.replace(tmp, output)
    fps = (length - 1) / (end - first) if length > 1 and end > first else float("nan")
    return {"frames": total, "videos": len(inputs), "detections": detections,
            "seconds": end - start, "frames_per_second": fps,
            "platform": jax.default_backend()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True, help="the folder main.py --mode=export wrote")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="video files or frame folders (frame ids continue across them)",
    )
    parser.add_argument("--output", required=True, help="the detections file to write")
    parser.add_argument("--first-frame-id", type=int, default=1, help="id of the first frame")
    args = parser.parse_args(argv)
    try:
        stats = run(args.artifact, args.input, args.output, args.first_frame_id)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{stats['frames']} frames of {stats['videos']} video(s) -> {args.output}: "
        f"{stats['detections']} detections, {stats['frames_per_second']:.1f} frames/s (the last "
        f"video, steady state) on {stats['platform']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
