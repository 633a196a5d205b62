"""Video in, video with detections out: reading mp4 files or frame folders, drawing boxes,
writing mp4 (the `--mode=demo` job).

Frames are read and drawn in BGR uint8 (cv2's order, the release's order); mp4 decoding and
encoding go through imageio-ffmpeg's bundled ffmpeg binary, so no system ffmpeg is needed.
The output is written to a temporary file next to the destination and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from input_pipeline.preprocess import preprocess
from ssvd_jax.errors import UserError
from ssvd_jax.inference import Video
from ssvd_jax.metric_logging import progress_bar
from ssvd_jax.ops.postprocess import Detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class VideoInputError(UserError, ValueError):
    """An input video or frame folder cannot be read; the message names it."""


@contextlib.contextmanager
def _ffmpeg_subprocess() -> Iterator[None]:
    """imageio-ffmpeg starts ffmpeg with fork + exec; the child runs no Python, so jax's
    warning that forking a multithreaded process may deadlock does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning
        )
        yield


def open_video(path: str) -> tuple[Iterator[np.ndarray], int, tuple[int, int], float]:
    """(BGR frame iterator, frame count, (width, height), fps) of an mp4/video file or a folder
    of frames (sorted by name)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise VideoInputError(path, f"no image files ({', '.join(IMAGE_SUFFIXES)})")
        first = cv2.imread(os.path.join(path, names[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise VideoInputError(os.path.join(path, names[0]), "not a readable image")
        size = (first.shape[1], first.shape[0])

        def frames() -> Iterator[np.ndarray]:
            for name in names:
                image = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
                if image is None:
                    raise VideoInputError(os.path.join(path, name), "not a readable image")
                if (image.shape[1], image.shape[0]) != size:
                    raise VideoInputError(os.path.join(path, name), f"size differs from {size}")
                yield image

        return frames(), len(names), size, 25.0
    if not os.path.isfile(path):
        raise VideoInputError(path, "no such file or folder")
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(path)
        with _ffmpeg_subprocess():
            meta = next(reader)
        count, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except Exception as e:  # ffmpeg's own message says what is wrong with the file
        raise VideoInputError(path, f"cannot decode video ({e})") from e
    width, height = meta["size"]
    fps = float(meta.get("fps") or 25.0)

    def frames() -> Iterator[np.ndarray]:
        for raw in reader:
            rgb = np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            yield np.ascontiguousarray(rgb[..., ::-1])

    return frames(), int(count), (width, height), fps


DRAW_OVERLAP = 0.7


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_colour(track_id: int) -> list[int]:
    """A BGR colour per track id: hues 0.618... turns apart (the golden ratio), so ids close
    in number look different."""
    hue = int((track_id * 0.6180339887 % 1.0) * 180)
    return cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()


def draw_detections(
    frame_bgr: np.ndarray,
    detections: Detections,
    class_names: tuple[str, ...],
    min_score: float,
    track_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Boxes with class names and scores drawn on a copy of the frame, the best on top. A box
    that overlaps a better-scoring drawn one by IoU > `DRAW_OVERLAP` (another class's guess at
    the same object) is left out, so every object shows one readable label. With `track_ids`
    ([K], one per detection row) boxes are coloured by track and labelled `#id class score`."""
    out = frame_bgr.copy()
    scores = np.asarray(detections.scores)
    candidates = np.flatnonzero(np.asarray(detections.valid) & (scores >= min_score))
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    boxes = np.asarray(detections.boxes, np.float64)
    chosen: list[int] = []
    for index in candidates:
        if all(_iou(boxes[index], boxes[other]) <= DRAW_OVERLAP for other in chosen):
            chosen.append(int(index))
    for index in reversed(chosen):  # the best last, on top
        box, score = detections.boxes[index], detections.scores[index]
        label = detections.labels[index]
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        hue = (int(label) * 47) % 180
        colour = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        text = f"{class_names[int(label)]} {float(score):.2f}"
        if track_ids is not None:
            colour = track_colour(int(track_ids[index]))
            text = f"#{int(track_ids[index])} {text}"
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        top = max(y1 - th - 4, 0)
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + 4), colour, -1)
        cv2.putText(out, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return out


def link_video_detections(
    per_frame: list[Detections], link: dict[str, Any]
) -> tuple[list[Detections], list[np.ndarray]]:
    """One video's detections linked into tracks (`evaluation.linking.link` with `link`'s
    settings): per frame, the detections (rescored when `link` says so, suppressed ones no
    longer valid; `stream`, `level` and `anchor` are left as they came) and the track id of
    each row (-1 for invalid rows)."""
    # Only the tracked demo needs the protocol code (a lower floor, DESIGN.md).
    from ssvd_jax.evaluation import linking, vid_ap

    rows = [np.flatnonzero(np.asarray(d.valid)) for d in per_frame]
    dets = vid_ap.Detections(
        np.concatenate([np.full(len(r), t + 1) for t, r in enumerate(rows)] + [[]]),
        np.concatenate([np.asarray(d.labels)[r] for d, r in zip(per_frame, rows, strict=True)]
                       + [[]]),
        np.concatenate([np.asarray(d.scores)[r] for d, r in zip(per_frame, rows, strict=True)]
                       + [[]]),
        np.concatenate([np.asarray(d.boxes)[r] for d, r in zip(per_frame, rows, strict=True)]
                       + [np.zeros((0, 4))]),
    )  # fmt: skip
    tracks = linking.link(dets, [np.arange(1, len(per_frame) + 1)], **link)
    out_dets, out_ids = [], []
    for t, d in enumerate(per_frame):
        mine = np.flatnonzero(tracks.dets.frame_id == t + 1)
        k = len(np.asarray(d.valid))
        n = min(len(mine), k)
        ids = np.full(k, -1, np.int64)
        ids[:n] = tracks.track_id[mine[:n]]
        boxes = np.zeros((k, 4), np.float32)
        boxes[:n] = tracks.dets.boxes[mine[:n]]
        scores = np.zeros(k, np.float32)
        scores[:n] = tracks.dets.score[mine[:n]]
        labels = np.zeros(k, np.int32)
        labels[:n] = tracks.dets.label[mine[:n]]
        valid = np.arange(k) < n
        out_dets.append(d._replace(boxes=boxes, scores=scores, labels=labels, valid=valid))
        out_ids.append(ids)
    return out_dets, out_ids


def run_demo(
    engine: Any,
    input_path: str,
    output_path: str,
    *,
    pixel_mean_bgr: tuple[float, ...],
    class_names: tuple[str, ...],
    min_score: float,
    link: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Detect every frame of a video with an `inference.OnlineEngine` and write the drawn video.

    With `link` (`evaluation.linking.link`'s settings) the whole video is detected first, its
    detections linked into tracks offline, then the video is read again and drawn with boxes
    coloured by track and labelled with the track id.

    Returns {'frames': n, 'seconds': wall time, 'fps': frames per second after the first frame
    (the first waits for the compile); reading, drawing and writing included}.
    """
    if link:
        return _run_tracked_demo(
            engine, input_path, output_path, pixel_mean_bgr=pixel_mean_bgr,
            class_names=class_names, min_score=min_score, link=link,
        )  # fmt: skip
    import imageio_ffmpeg

    frames, count, (width, height), fps = open_video(input_path)
    originals: dict[int, np.ndarray] = {}

    def normalised() -> Iterator[np.ndarray]:
        for t, frame in enumerate(frames):
            originals[t] = frame
            yield preprocess(frame, image_size=engine.image_size, mean_bgr=pixel_mean_bgr)

    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".mp4")
    os.close(fd)
    writer = imageio_ffmpeg.write_frames(
        tmp, (width, height), fps=fps, macro_block_size=1, pix_fmt_in="rgb24"
    )
    with _ffmpeg_subprocess():
        writer.send(None)
    start = time.perf_counter()
    first_done = None
    written = 0
    video = Video(normalised(), count, (width, height), key=input_path)
    try:
        with progress_bar(count, "demo", unit="frame") as bar:
            for _, t, dets in engine.run([video]):
                drawn = draw_detections(originals.pop(t), dets, class_names, min_score)
                writer.send(np.ascontiguousarray(drawn[..., ::-1]))
                written += 1
                bar.update(1)
                if first_done is None:
                    first_done = time.perf_counter()
        writer.close()
        # mkstemp's 0600 would make the video private; set after ffmpeg is done with the file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output_path)
    except BaseException:
        writer.close()
        os.unlink(tmp)
        raise
    end = time.perf_counter()
    # Steady state: from the first drawn frame (which waited for the compile) to the last.
    fps = (written - 1) / (end - first_done) if written > 1 else float("nan")
    return {"frames": written, "seconds": end - start, "fps": fps}


def _write_video(output_path: str, frames: Iterator[np.ndarray], size: tuple[int, int],
                 fps: float) -> int:  # fmt: skip
    """Write BGR frames to an mp4 atomically (a temporary file renamed when complete)."""
    import imageio_ffmpeg

    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".mp4")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    writer = imageio_ffmpeg.write_frames(tmp, size, fps=fps, macro_block_size=1, pix_fmt_in="rgb24")
    written = 0
    with _ffmpeg_subprocess():
        writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame[..., ::-1]))
            written += 1
        writer.close()
        os.replace(tmp, output_path)
    except BaseException:
        writer.close()
        os.unlink(tmp)
        raise
    return written


def _run_tracked_demo(
    engine: Any,
    input_path: str,
    output_path: str,
    *,
    pixel_mean_bgr: tuple[float, ...],
    class_names: tuple[str, ...],
    min_score: float,
    link: dict[str, Any],
) -> dict[str, float]:
    """`run_demo` with tracks: detect all frames, link, read the video again and draw."""
    frames, count, (width, height), fps = open_video(input_path)
    per_frame: dict[int, Detections] = {}
    start = time.perf_counter()
    first_done = None

    def normalised() -> Iterator[np.ndarray]:
        for frame in frames:
            yield preprocess(frame, image_size=engine.image_size, mean_bgr=pixel_mean_bgr)

    video = Video(normalised(), count, (width, height), key=input_path)
    with progress_bar(count, "demo (detect)", unit="frame") as bar:
        for _, t, dets in engine.run([video]):
            per_frame[t] = jax_free(dets)
            bar.update(1)
            if first_done is None:
                first_done = time.perf_counter()
    ordered = [per_frame[t] for t in range(len(per_frame))]
    linked, ids = link_video_detections(ordered, link)
    frames, _, _, _ = open_video(input_path)
    drawn = (draw_detections(f, linked[t], class_names, min_score, ids[t])
             for t, f in enumerate(frames))  # fmt: skip
    written = _write_video(output_path, drawn, (width, height), fps)
    end = time.perf_counter()
    rate = (written - 1) / (end - first_done) if written > 1 and first_done else float("nan")
    return {"frames": written, "seconds": end - start, "fps": rate}


def jax_free(dets: Detections) -> Detections:
    """The detections as numpy arrays (the engine may hand back device arrays)."""
    return Detections(*(np.asarray(a) for a in dets))
