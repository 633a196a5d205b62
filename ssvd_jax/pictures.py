"""The main job's pictures: what a newcomer looks at to see what SSVD does.

bar_chart          grouped bars (e.g. single-frame vs SSVD mAP per speed bucket and per frame
                   quality), drawn with cv2 into a PNG
side_by_side_video two models' detections on the same video, next to each other, into an mp4
sampling_figure    the paper's Fig. 5 for one frame: where the sampling stream samples each
                   support frame for one output location, and the motion stream's flow from the
                   reference to each support, colour-coded (Middlebury's colour wheel)

Pure drawing, plus `stream_geometry`, which runs a two-stream SSVD on one clip and returns its
sampling locations and flows. Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import jax
import numpy as np

from ssvd_jax.files import atomic_write_chunks
from ssvd_jax.models import params

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (150, 150, 150)
SERIES_COLOURS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148))
FONT = cv2.FONT_HERSHEY_SIMPLEX


def write_png(path: str, image_bgr: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    atomic_write_chunks(path, [data.tobytes()])


def _text(image, text, org, scale=0.5, colour=BLACK, thickness=1) -> None:
    cv2.putText(image, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def bar_chart(
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    title: str,
    *,
    intervals: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    y_label: str = "mAP (%)",
) -> np.ndarray:
    """Grouped bars: one group per entry of `groups`, one bar per series (values in %, None
    for no value), value labels on the bars, optional error bars per series, a legend."""
    width = 110 + 30 * len(series) * len(groups) + 28 * len(groups)
    width, height = max(width, 520), 420
    left, right, top, bottom = 60, 20, 70, 90
    image = np.full((height, width, 3), 255, np.uint8)
    _text(image, title, (left, 24), 0.6, thickness=1)
    plot_h = height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    top_value = max(100.0, max(values, default=0.0))
    y_of = lambda v: int(top + plot_h * (1 - v / top_value))  # noqa: E731
    for tick in range(0, int(top_value) + 1, 20):
        y = y_of(tick)
        cv2.line(image, (left, y), (width - right, y), (225, 225, 225), 1)
        _text(image, f"{tick}", (left - 32, y + 4), 0.4, GREY)
    _text(image, y_label, (6, top - 12), 0.4, GREY)
    group_w = (width - left - right) / len(groups)
    bar_w = max(8, int(group_w * 0.8 / max(len(series), 1)))
    for g, name in enumerate(groups):
        x0 = int(left + g * group_w + group_w * 0.1)
        for s, (label, vs) in enumerate(series.items()):
            v = vs[g]
            if v is None or v != v:
                continue
            x = x0 + s * bar_w
            colour = SERIES_COLOURS[s % len(SERIES_COLOURS)]
            cv2.rectangle(image, (x, y_of(v)), (x + bar_w - 2, y_of(0)), colour, -1)
            _text(image, f"{v:.0f}", (x, y_of(v) - 4), 0.35)
            span = (intervals or {}).get(label, [None] * len(groups))[g]
            if span is not None:
                cx = x + bar_w // 2 - 1
                cv2.line(image, (cx, y_of(span[0])), (cx, y_of(span[1])), BLACK, 1)
        lines = name.split("\n")
        for i, line in enumerate(lines):
            _text(image, line, (x0, height - bottom + 18 + 14 * i), 0.38)
    cv2.line(image, (left, y_of(0)), (width - right, y_of(0)), BLACK, 1)
    for s, label in enumerate(series):  # the legend, one row under the title
        x = left + 10 + s * ((width - left) // max(len(series), 1))
        cv2.rectangle(image, (x, 31), (x + 12, 41), SERIES_COLOURS[s % len(SERIES_COLOURS)], -1)
        _text(image, label, (x + 16, 40), 0.42)
    return image


# ---- the motion stream's flow, colour-coded ------------------------------------------------


def _colour_wheel() -> np.ndarray:
    """Middlebury's colour wheel (Baker et al. 2011): 55 hues, RGB in [0, 255]."""
    segments = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))  # fmt: skip
    rows = []
    for n, a, b in segments:
        t = np.arange(n)[:, None] / n
        rows.append((1 - t) * np.float64(a) + t * np.float64(b))
    return np.concatenate(rows)


def flow_to_colour(flow_HxWx2: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """A flow field as a BGR uint8 image: hue = direction, saturation = speed (white = still),
    normalised by `max_magnitude` (default: the field's largest)."""
    u, v = flow_HxWx2[..., 0], flow_HxWx2[..., 1]
    magnitude = np.hypot(u, v)
    scale = max_magnitude or max(float(magnitude.max()), 1e-6)
    wheel = _colour_wheel()
    angle = np.arctan2(-v, -u) / np.pi  # [-1, 1]
    position = (angle + 1) / 2 * (len(wheel) - 1)
    k0 = np.floor(position).astype(int)
    k1 = (k0 + 1) % len(wheel)
    f = (position - k0)[..., None]
    colour = (1 - f) * wheel[k0] + f * wheel[k1]  # RGB
    r = np.clip(magnitude / scale, 0, 1)[..., None]
    colour = 255 - r * (255 - colour)
    return np.ascontiguousarray(colour[..., ::-1]).astype(np.uint8)


# ---- the paper's Fig. 5 ----------------------------------------------------------------------


def stream_geometry(
    model: Any, variables: Any, clip_TxHxWx3: np.ndarray, point_xy: tuple[float, float]
) -> dict[str, Any]:
    """Run a two-stream SSVD on one clip (reference first) and return, for the output location
    of P3 nearest `point_xy` (input pixels): 'samples' [E, 36, 2] the (x, y) input-pixel
    positions where the sampling stream's deformable conv reads each entry (9 taps x 4 groups),
    and 'flows' [E, H/8, W/8, 2] the motion stream's P3 flow from the reference to each entry,
    in input pixels; 'stride' 8."""
    # One compiled program (op-by-op, the model's thousands of primitives cost a minute),
    # compiled for compiling fast: it runs once.
    state = params.run_once(
        lambda v, x: model.apply(v, x, mutable=["intermediates"])[1],
        variables, np.asarray(clip_TxHxWx3)[None],
    )  # fmt: skip
    inter = jax.tree.map(np.asarray, state["intermediates"])
    flow = inter["flow_P3"][0][0]  # [E, h, w, 2], P3 pixels
    pred = inter["sample_offset_pred_P3"][0][0]  # [E, h, w, 73]
    stride = clip_TxHxWx3.shape[1] // flow.shape[1]
    px = int(np.clip(round(point_xy[0] / stride - 0.5), 0, flow.shape[2] - 1))
    py = int(np.clip(round(point_xy[1] / stride - 0.5), 0, flow.shape[1] - 1))
    offsets = pred[:, py, px, :72].reshape(-1, 4, 9, 2)  # [E, group, tap, (dy, dx)]
    ky, kx = np.divmod(np.arange(9), 3)
    ys = py + (ky - 1)[None, None] + offsets[..., 0]
    xs = px + (kx - 1)[None, None] + offsets[..., 1]
    samples = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(len(pred), -1, 2)
    return {"samples": samples, "flows": flow * stride, "stride": stride,
            "location": ((px + 0.5) * stride, (py + 0.5) * stride)}  # fmt: skip


def sampling_figure(
    frames_bgr: Sequence[np.ndarray],
    offsets_from_reference: Sequence[int],
    geometry: dict[str, Any],
    *,
    input_size: int,
    scale: int,
    caption: str,
) -> np.ndarray:
    """Row 1: the reference (its output location marked) and each support frame with the
    sampling stream's sample positions for that location; row 2: the motion stream's flow from
    the reference to each frame, colour-coded on one scale. Frames are original images, shown
    at input_size x scale pixels."""
    size = input_size * scale
    tiles, flow_tiles = [], []
    flows = geometry["flows"]
    top = max(float(np.hypot(flows[..., 0], flows[..., 1]).max()), 1.0)
    lx, ly = geometry["location"]
    for e, (frame, dt) in enumerate(zip(frames_bgr, offsets_from_reference, strict=True)):
        tile = cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC)
        for x, y in geometry["samples"][e]:
            cv2.circle(tile, (int(x * scale), int(y * scale)), 3, (0, 0, 255), -1, cv2.LINE_AA)
        cv2.drawMarker(tile, (int(lx * scale), int(ly * scale)), (0, 255, 0), cv2.MARKER_CROSS,
                       14, 2)  # fmt: skip
        label = "reference" if dt == 0 else f"support t{dt:+d}"
        cv2.rectangle(tile, (0, 0), (size, 20), WHITE, -1)
        _text(tile, label, (4, 15), 0.5)
        tiles.append(tile)
        colour = cv2.resize(flow_to_colour(flows[e], top), (size, size),
                            interpolation=cv2.INTER_NEAREST)  # fmt: skip
        cv2.rectangle(colour, (0, 0), (size, 20), WHITE, -1)
        _text(colour, f"flow to t{dt:+d}" if dt else "flow to itself", (4, 15), 0.5)
        flow_tiles.append(colour)
    gap = np.full((size, 4, 3), 255, np.uint8)
    row1 = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    row2 = np.concatenate([x for t in flow_tiles for x in (t, gap)][:-1], axis=1)
    header = np.full((28, row1.shape[1], 3), 255, np.uint8)
    _text(header, caption, (6, 19), 0.5)
    footer = np.full((24, row1.shape[1], 3), 255, np.uint8)
    _text(footer, f"flow colour: direction as hue, white = still, full colour = {top:.1f} px",
          (6, 16), 0.45, GREY)  # fmt: skip
    return np.concatenate([header, row1, np.full((4, row1.shape[1], 3), 255, np.uint8), row2,
                           footer], axis=0)  # fmt: skip


# ---- side-by-side demo ---------------------------------------------------------------------


def write_video(path: str, frames_bgr: Sequence[np.ndarray], fps: float) -> None:
    """An mp4 (H.264 via imageio-ffmpeg's ffmpeg), written to a temporary file and renamed."""
    import imageio_ffmpeg

    from ssvd_jax.visualize import _ffmpeg_subprocess

    height, width = frames_bgr[0].shape[:2]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    writer = imageio_ffmpeg.write_frames(
        tmp, (width, height), fps=fps, macro_block_size=1, pix_fmt_in="rgb24"
    )
    try:
        with _ffmpeg_subprocess():
            writer.send(None)
        for frame in frames_bgr:
            writer.send(np.ascontiguousarray(frame[..., ::-1]))
        writer.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def side_by_side(panels: Mapping[str, np.ndarray], footer: str = "") -> np.ndarray:
    """Equal-sized BGR images next to each other, each titled with its key."""
    tiles = []
    for title, image in panels.items():
        head = np.full((24, image.shape[1], 3), 255, np.uint8)
        _text(head, title, (4, 17), 0.5)
        tiles.append(np.concatenate([head, image], axis=0))
        tiles.append(np.full((tiles[-1].shape[0], 6, 3), 255, np.uint8))
    out = np.concatenate(tiles[:-1], axis=1)
    if footer:
        bar = np.full((22, out.shape[1], 3), 255, np.uint8)
        _text(bar, footer, (4, 15), 0.45, GREY)
        out = np.concatenate([out, bar], axis=0)
    return out
