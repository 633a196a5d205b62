"""Synthetic ImageNet VID/DET in the official ILSVRC2015 layout: the embedded default dataset.

  python -m input_pipeline.synthetic --out DIR --seed 0 --size 128 \
      --train-videos 6 --val-videos 3 --frames 30 --det-images 40

writes `DIR/Data/VID/{train,val}`, `DIR/Annotations/VID/{train,val}` (one JPEG and one XML per
frame, XML exactly as the real files are laid out), `DIR/Data/DET/train` +
`DIR/Annotations/DET/train`, the FGFA list files in `DIR/ImageSets/` (unless --no-lists), and
`DIR/synthetic_manifest.json` (per object its motion speed, per frame its deteriorations; not
part of the official layout, for tests and analysis).

With `--format cocovid [--class-names drone,kite,buoy]` (`generate_cocovid`) the same videos
come as a COCO-VID dataset (mmtracking's format, see `convert_ilsvrc_to_cocovid`):
`DIR/images/<video name>/<frame>.JPEG` (the image root), `DIR/annotations/{train,val}.json` and
`DIR/images/synthetic_manifest.json`; no DET images.

Content: textured objects of several VID classes (a class is a shape + colour + texture) moving
over textured, slowly panning backgrounds. Each object moves slowly, medium or fast in the sense
of FGFA's motion-IoU buckets (mean IoU with its own box over +-10 frames above 0.9, 0.7-0.9,
below 0.7). Short segments of frames are deteriorated by motion blur, defocus, partial occlusion
(object annotated, occluded=1), full occlusion (object hidden and, as in VID, not annotated) and
illumination changes, and fast objects are smeared along their motion in bursts (as fast objects
blur in real video), so single frames are hard while their neighbours are clean: the situation
temporal aggregation is meant for. DET images are stills of the same classes, sometimes with an
object of a non-VID DET class (which the DET builder drops). Deterministic from the seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import cv2
import numpy as np

from input_pipeline import classes, convert_ilsvrc_to_cocovid, flow_data, ilsvrc
from ssvd_jax.errors import UserError

SPEEDS = ("slow", "medium", "fast")
# Displacement per frame as a fraction of the object's size, per speed bucket. Over +-10 frames
# these give mean IoUs of about 0.97 / 0.85 / 0.5 (1-D estimate: (1 - k v) / (1 + k v)).
_SPEED_RANGES = {"slow": (0.0015, 0.003), "medium": (0.012, 0.018), "fast": (0.06, 0.09)}
# Whole-frame deteriorations, scheduled per video (three kinds each, rotating over videos).
FRAME_DETERIORATIONS = (
    "motion_blur", "defocus", "partial_occlusion", "full_occlusion", "illumination"
)  # fmt: skip
# A fast object smeared along its own motion: in real video fast objects blur (FGFA's fast
# bucket is where motion blur lives); bursts of a few frames, as objects jerk and accelerate.
FAST_BLUR = "fast_motion_blur"
FAST_BLUR_BURSTS = 3  # per fast object per video, 2-5 frames each: ~1/3 of its frames
# Smear length as a fraction of the object's size, drawn per blurred frame: the exposure's sweep
# varies as the object jerks, so one frame does not tell how much of a streak is the object
# (its sharp neighbours do); a pixel sees the object for at most size / smear of the exposure
# (2/5 at 2.5x), so its colour fades into the background's.
FAST_BLUR_LENGTH = (1.0, 2.5)
DETERIORATIONS = (*FRAME_DETERIORATIONS, FAST_BLUR)
_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "cross", "hexagon", "ring", "star")
_TEXTURES = ("stripes", "checker", "dots", "waves")
# A DET class outside the 30 VID classes (person), drawn as clutter that the DET builder drops.
OTHER_DET_WNID = "n00007846"
# Owner codes of pixels that show no object (object pixels hold the object's index).
BACKGROUND, OCCLUDER = -1, -2


@dataclasses.dataclass(frozen=True)
class Style:
    shape: str
    colour: tuple[float, float, float]  # BGR
    texture: str
    frequency: float
    angle: float


def class_style(label: int) -> Style:
    """Appearance of a VID class: fixed per label, distinct across neighbouring labels."""
    rng = np.random.default_rng([4242, label])
    # 5 hue steps (of OpenCV's 180) per label: the evenly spread labels of `default_labels`
    # get well separated hues (6 classes: 0, 30, 60, 85, 115, 145), so colour tells classes
    # apart about as well as shape and texture do.
    hue = (label * 5) % 180
    hsv = np.uint8([[[hue, 200, 210]]])
    colour = tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    return Style(
        shape=_SHAPES[label % len(_SHAPES)],
        colour=colour,
        texture=_TEXTURES[(label // len(_SHAPES) + label) % len(_TEXTURES)],
        frequency=float(rng.uniform(2.0, 5.0)),
        angle=float(rng.uniform(0, np.pi)),
    )


def default_labels(num_classes: int) -> tuple[int, ...]:
    """`num_classes` VID labels spread over the 30 (e.g. 6 -> airplane, bus, fox, ...)."""
    if not 1 <= num_classes <= classes.NUM_CLASSES:
        raise ValueError(f"num_classes must be in 1..{classes.NUM_CLASSES}")
    return tuple(int(v) for v in np.linspace(0, classes.NUM_CLASSES - 1, num_classes).round())


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of a shape in its own coordinates u, v in [-1, 1]."""
    if kind == "ellipse":
        return u**2 + v**2 <= 1.0
    if kind == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if kind == "triangle":
        return (np.abs(u) <= (v + 1) / 2) & (v <= 1)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        return ((np.abs(u) <= 0.35) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.35) & (np.abs(u) <= 1))
    if kind == "hexagon":
        return (np.abs(v) <= 0.87) & (np.abs(u) + 0.58 * np.abs(v) <= 1.0)
    if kind == "ring":
        r2 = u**2 + v**2
        return (r2 <= 1.0) & (r2 >= 0.3)
    if kind == "star":
        angle = np.arctan2(v, u)
        return np.sqrt(u**2 + v**2) <= 0.55 + 0.45 * np.abs(np.cos(2.5 * angle))
    raise ValueError(kind)


def _texture(style: Style, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Pattern in [-1, 1], in object coordinates so it moves with the object."""
    c, s = np.cos(style.angle), np.sin(style.angle)
    a = (c * u + s * v) * style.frequency * np.pi + phase
    b = (-s * u + c * v) * style.frequency * np.pi
    if style.texture == "stripes":
        return np.sign(np.sin(a))
    if style.texture == "checker":
        return np.sign(np.sin(a) * np.sin(b))
    if style.texture == "dots":
        return np.where(np.sin(a) * np.sin(b) > 0.5, 1.0, -0.6)
    return np.sin(a + 0.8 * np.sin(b))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random texture (float32 BGR) from low-frequency sinusoids, blobs and noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.zeros((height, width, 3), np.float32)
    base = rng.uniform(70, 170, 3)
    for c in range(3):
        bg[..., c] = base[c]
        for _ in range(3):
            fx, fy = rng.uniform(-6, 6, 2) / max(height, width)
            bg[..., c] += rng.uniform(10, 30) * np.sin(
                2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 6.3)
            )
    noise = rng.normal(0, 1, (max(height // 8, 2), max(width // 8, 2), 3)).astype(np.float32)
    bg += 14 * cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return bg


@dataclasses.dataclass
class _Track:
    label: int
    track_id: int
    speed: str
    cx: float
    cy: float
    w: float
    h: float
    vx: float
    vy: float
    scale_rate: float
    colour_jitter: np.ndarray
    phase: float


def _new_track(
    rng: np.random.Generator, label: int, track_id: int, speed: str, width: int, height: int
) -> _Track:
    side = min(width, height)
    w = rng.uniform(0.22, 0.42) * side
    h = float(np.clip(w * rng.uniform(0.7, 1.4), 0.18 * side, 0.5 * side))
    step = rng.uniform(*_SPEED_RANGES[speed]) * (w + h) / 2
    angle = rng.uniform(0, 2 * np.pi)
    return _Track(
        label=label,
        track_id=track_id,
        speed=speed,
        cx=rng.uniform(w / 2 + 1, width - w / 2 - 1),
        cy=rng.uniform(h / 2 + 1, height - h / 2 - 1),
        w=w,
        h=h,
        vx=step * np.cos(angle),
        vy=step * np.sin(angle),
        # Slow objects barely change size, or scaling alone would pull them out of the bucket.
        scale_rate={"slow": 0.0, "medium": 0.002, "fast": 0.006}[speed] * rng.choice([-1, 1]),
        colour_jitter=rng.uniform(-20, 20, 3),
        phase=rng.uniform(0, 6.3),
    )


def _advance(track: _Track, width: int, height: int) -> None:
    track.w *= 1 + track.scale_rate
    track.h *= 1 + track.scale_rate
    side = min(width, height)
    if not 0.15 * side < min(track.w, track.h) and max(track.w, track.h) < 0.6 * side:
        track.scale_rate = -track.scale_rate
    track.cx += track.vx
    track.cy += track.vy
    # Bounce off the borders so the whole object stays in view.
    if track.cx - track.w / 2 < 0 or track.cx + track.w / 2 > width:
        track.vx = -track.vx
        track.cx = float(np.clip(track.cx, track.w / 2, width - track.w / 2))
    if track.cy - track.h / 2 < 0 or track.cy + track.h / 2 > height:
        track.vy = -track.vy
        track.cy = float(np.clip(track.cy, track.h / 2, height - track.h / 2))


def _render_object(
    canvas: np.ndarray, owner: np.ndarray, index: int, style: Style, track: _Track
) -> tuple[tuple[int, int, int, int] | None, int]:
    """Draw one object onto canvas (float32 BGR) and mark its pixels in `owner`. Returns the
    tight inclusive box of the whole object (what an annotator boxes, even where it ends up
    covered) and its pixel count."""
    height, width = canvas.shape[:2]
    x0 = max(int(np.floor(track.cx - track.w / 2)), 0)
    x1 = min(int(np.ceil(track.cx + track.w / 2)), width)
    y0 = max(int(np.floor(track.cy - track.h / 2)), 0)
    y1 = min(int(np.ceil(track.cy + track.h / 2)), height)
    if x1 <= x0 or y1 <= y0:
        return None, 0
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u = (xx + 0.5 - track.cx) / (track.w / 2)
    v = (yy + 0.5 - track.cy) / (track.h / 2)
    mask = _shape_mask(style.shape, u, v)
    colour = np.asarray(style.colour, np.float32) + track.colour_jitter
    pattern = _texture(style, u, v, track.phase)[..., None]
    pixels = colour * (0.75 + 0.25 * pattern) + 25 * pattern
    region = canvas[y0:y1, x0:x1]
    region[mask] = pixels[mask]
    owner[y0:y1, x0:x1][mask] = index
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    return (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()), y0 + int(ys.max())), len(xs)


def _occluder(
    canvas: np.ndarray, owner: np.ndarray, rect: Sequence[float], rng: np.random.Generator
) -> None:
    """Unlabelled textured clutter (a grey-brown slab) over `rect` (x0, y0, x1, y1)."""
    height, width = canvas.shape[:2]
    x0, y0 = max(int(rect[0]), 0), max(int(rect[1]), 0)
    x1, y1 = min(int(np.ceil(rect[2])), width), min(int(np.ceil(rect[3])), height)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    slab = 90 + 20 * np.sin(xx * 0.7) * np.cos(yy * 0.5)
    canvas[y0:y1, x0:x1] = np.stack([slab * 0.8, slab * 0.95, slab * 1.05], -1)
    canvas[y0:y1, x0:x1] += rng.normal(0, 4, (y1 - y0, x1 - x0, 3))
    owner[y0:y1, x0:x1] = OCCLUDER


def _smear(
    canvas: np.ndarray, backdrop: np.ndarray, mask: np.ndarray, track: _Track, fraction: float
) -> None:
    """Motion-blur one object along its velocity, in place: the object's pixels (`mask`)
    smeared over `fraction` of its size (a long exposure of a moving object) and composited
    over the scene, which shows `backdrop` (the frame before the object was drawn) where the
    object was."""
    height, width = canvas.shape[:2]
    length = max(5, int(fraction * (track.w + track.h) / 2) | 1)
    angle = float(np.arctan2(track.vy, track.vx))
    x0 = max(int(track.cx - track.w / 2) - length, 0)
    x1 = min(int(np.ceil(track.cx + track.w / 2)) + length, width)
    y0 = max(int(track.cy - track.h / 2) - length, 0)
    y1 = min(int(np.ceil(track.cy + track.h / 2)) + length, height)
    region = canvas[y0:y1, x0:x1]
    alpha = mask[y0:y1, x0:x1].astype(np.float32)
    # Premultiplied: the object's colour and its coverage smeared alike, then composited.
    colour = _motion_blur(region * alpha[..., None], length, angle)
    cover = _motion_blur(alpha, length, angle)[..., None]
    behind = np.where(alpha[..., None] > 0, backdrop[y0:y1, x0:x1], region)
    canvas[y0:y1, x0:x1] = colour + behind * (1 - cover)


def _motion_blur(image: np.ndarray, length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    for t in np.linspace(-c, c, 4 * length):
        k[int(round(c + t * np.sin(angle))), int(round(c + t * np.cos(angle)))] = 1
    return cv2.filter2D(image, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)


def _schedule(rng: np.random.Generator, num_frames: int, kinds: Sequence[str]) -> list[list[str]]:
    """Per frame, its deteriorations: each kind once, as a segment of 2-5 frames, segments
    apart so clean frames lie between them."""
    per_frame: list[list[str]] = [[] for _ in range(num_frames)]
    if num_frames < 4:
        return per_frame
    slots = np.linspace(1, num_frames - 1, len(kinds) + 1).astype(int)
    for kind, start, stop in zip(kinds, slots[:-1], slots[1:], strict=True):
        length = int(min(rng.integers(2, 6), max(stop - start - 1, 1)))
        first = int(rng.integers(start, max(stop - length, start) + 1))
        for t in range(first, min(first + length, num_frames)):
            per_frame[t].append(kind)
    return per_frame


FLOW_FOLDER = "FlyingChairs"
MANIFEST = "synthetic_manifest.json"
# generate_cocovid's layout: OUT/images (the image root), OUT/annotations/<split>.json.
COCOVID_IMAGES = "images"
COCOVID_ANNOTATIONS = "annotations"


_VID_XML_OBJECT = """\
\t<object>
\t\t<trackid>{track_id}</trackid>
\t\t<name>{wnid}</name>
\t\t<bndbox>
\t\t\t<xmax>{x2}</xmax>
\t\t\t<xmin>{x1}</xmin>
\t\t\t<ymax>{y2}</ymax>
\t\t\t<ymin>{y1}</ymin>
\t\t</bndbox>
\t\t<occluded>{occluded}</occluded>
\t\t<generated>{generated}</generated>
\t</object>
"""
_DET_XML_OBJECT = """\
\t<object>
\t\t<name>{wnid}</name>
\t\t<bndbox>
\t\t\t<xmin>{x1}</xmin>
\t\t\t<xmax>{x2}</xmax>
\t\t\t<ymin>{y1}</ymin>
\t\t\t<ymax>{y2}</ymax>
\t\t</bndbox>
\t</object>
"""


def annotation_xml(
    folder: str,
    filename: str,
    database: str,
    width: int,
    height: int,
    objects: Sequence[dict],
    *,
    det: bool = False,
) -> str:
    """An XML in the exact layout of the ILSVRC files (tabs, element order, VID's
    xmax-xmin-ymax-ymin box order; DET without track ids)."""
    template = _DET_XML_OBJECT if det else _VID_XML_OBJECT
    body = "".join(template.format(**o) for o in objects)
    return (
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<source>\n\t\t<database>{database}</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t</size>\n"
        f"{body}</annotation>\n"
    )


def _write(path: pathlib.Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def _encode(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return buf.tobytes()


@dataclasses.dataclass
class RenderedVideo:
    """One rendered snippet and the geometry that made it (for ground-truth flow).

    frames: float32 BGR [H, W, 3] per frame. objects: per frame, dicts with track_id, label,
    box (inclusive x1, y1, x2, y2), occluded, generated. deteriorations: per frame, the kinds.
    speeds: track id -> speed bucket. tracks: [T, objects, 4] each object's (cx, cy, w, h)
    when the frame was drawn. background: [T, 2] the (x, y) offset of the frame's window into
    the panning background. owners: [T, H, W] int16, per pixel the index of the object seen
    there, BACKGROUND or OCCLUDER. occluder_target: the object that occluders cover.
    """

    frames: list[np.ndarray]
    objects: list[list[dict]]
    deteriorations: list[list[str]]
    speeds: dict[int, str]
    tracks: np.ndarray
    background: np.ndarray
    owners: np.ndarray
    occluder_target: int


def ground_truth_flow(video: RenderedVideo, t: int, s: int) -> np.ndarray:
    """The flow [H, W, 2] (x, y) from frame t to frame s, in pixels: where the surface seen at
    each pixel of frame t is in frame s. Objects move and scale about their centres; the
    background moves with the camera's pan; occluders move with the object they cover. Pixels
    whose surface is hidden in frame s keep their motion (as FlyingChairs and Sintel define it)."""
    owner = video.owners[t].astype(np.int64)
    height, width = owner.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    flow = np.zeros((height, width, 2), np.float64)
    shift = video.background[t] - video.background[s]
    flow[..., 0], flow[..., 1] = shift[0], shift[1]
    track_t, track_s = video.tracks[t], video.tracks[s]
    for i in range(track_t.shape[0]):
        mask = owner == i
        if not mask.any():
            continue
        (cx, cy, w, h), (cx2, cy2, w2, h2) = track_t[i], track_s[i]
        # The object coordinate of a pixel centre, and where it is drawn in frame s.
        flow[..., 0][mask] = cx2 + (xx[mask] + 0.5 - cx) * (w2 / w) - 0.5 - xx[mask]
        flow[..., 1][mask] = cy2 + (yy[mask] + 0.5 - cy) * (h2 / h) - 0.5 - yy[mask]
    occluded = owner == OCCLUDER
    target = video.occluder_target
    flow[..., 0][occluded] = track_s[target, 0] - track_t[target, 0]
    flow[..., 1][occluded] = track_s[target, 1] - track_t[target, 1]
    return flow.astype(np.float32)


def render_video(
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    num_frames: int,
    labels: Sequence[int],
    max_objects: int,
    speeds: Sequence[str],
    deteriorations: Sequence[str],
    generated_fraction: float = 0.2,
    fast_blur_bursts: int = FAST_BLUR_BURSTS,
) -> RenderedVideo:
    """Render one snippet (see `RenderedVideo`); each fast object smeared in
    `fast_blur_bursts` bursts."""
    pan = 0.15
    big = _background(rng, int(height * (1 + pan)) + 2, int(width * (1 + pan)) + 2)
    pan_v = rng.uniform(-1, 1, 2) * pan * min(width, height) / max(num_frames, 1) * 0.5
    num_objects = int(rng.integers(1, max_objects + 1))
    tracks = [
        _new_track(rng, int(rng.choice(labels)), i, speeds[i % len(speeds)], width, height)
        for i in range(num_objects)
    ]
    styles = [class_style(t.label) for t in tracks]
    schedule = _schedule(rng, num_frames, deteriorations)
    bursts = {
        i: _schedule(rng, num_frames, [FAST_BLUR] * fast_blur_bursts)
        for i, tr in enumerate(tracks)
        if tr.speed == "fast" and fast_blur_bursts
    }
    target = int(rng.integers(num_objects))  # the object that occlusion events hide
    blur_angle = rng.uniform(0, np.pi)
    illum_gain = rng.choice([0.25, 1.9])
    frames, annotations, geometry, offsets, owners = [], [], [], [], []
    off = np.array([pan * width / 2, pan * height / 2])
    for t in range(num_frames):
        ox, oy = np.clip(off + pan_v * t, 0, [big.shape[1] - width, big.shape[0] - height])
        canvas = big[int(oy) : int(oy) + height, int(ox) : int(ox) + width].copy()
        offsets.append((int(ox), int(oy)))
        geometry.append([(tr.cx, tr.cy, tr.w, tr.h) for tr in tracks])
        owner = np.full((height, width), BACKGROUND, np.int32)
        # Draw larger objects first so smaller ones stay visible on top.
        order = sorted(range(num_objects), key=lambda i: -tracks[i].w * tracks[i].h)
        drawn, behind = {}, {}
        for i in order:
            if i in bursts and bursts[i][t]:
                behind[i] = canvas.copy()  # what the smeared object passes over
            drawn[i] = _render_object(canvas, owner, i, styles[i], tracks[i])
        kinds = schedule[t]
        tt = tracks[target]
        if "full_occlusion" in kinds:
            m = 0.08 * min(width, height)
            _occluder(
                canvas,
                owner,
                (
                    tt.cx - tt.w / 2 - m,
                    tt.cy - tt.h / 2 - m,
                    tt.cx + tt.w / 2 + m,
                    tt.cy + tt.h / 2 + m,
                ),
                rng,
            )
        if "partial_occlusion" in kinds:
            _occluder(
                canvas,
                owner,
                (
                    tt.cx - tt.w / 2 - 2,
                    tt.cy - tt.h / 2 - 2,
                    tt.cx + 0.15 * tt.w,
                    tt.cy + tt.h / 2 + 2,
                ),
                rng,
            )
        for i, burst in bursts.items():
            visible = owner == i
            if burst[t] and drawn[i][0] is not None and visible.sum() >= 0.1 * drawn[i][1]:
                fraction = rng.uniform(*FAST_BLUR_LENGTH)
                _smear(canvas, behind[i], visible, tracks[i], fraction)
                if FAST_BLUR not in kinds:
                    kinds.append(FAST_BLUR)
        objects = []
        for i, track in enumerate(tracks):
            box, area = drawn[i]
            visible = (owner == i).sum() / max(area, 1)
            if box is None or visible < 0.1:
                continue  # hidden: VID annotates only what can be seen
            objects.append(
                {
                    "track_id": track.track_id,
                    "label": track.label,
                    "box": box,
                    "occluded": int(visible < 0.9),
                    "generated": int(rng.random() < generated_fraction),
                }
            )
        canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
        # Strong enough that a single frame is hard (while its clean neighbours are not).
        if "motion_blur" in kinds:
            length = max(5, int(0.14 * min(width, height)) | 1)
            canvas = _motion_blur(canvas, length, blur_angle)
        if "defocus" in kinds:
            canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=0.05 * min(width, height))
        if "illumination" in kinds:
            grad = np.linspace(0.7, 1.3, width, dtype=np.float32)[None, :, None]
            canvas = canvas * illum_gain * grad
            canvas += rng.normal(0, 10, canvas.shape).astype(np.float32)  # sensor noise
        frames.append(canvas)
        annotations.append(objects)
        owners.append(owner.astype(np.int16))
        for track in tracks:
            _advance(track, width, height)
    return RenderedVideo(
        frames=frames,
        objects=annotations,
        deteriorations=schedule,
        speeds={t.track_id: t.speed for t in tracks},
        tracks=np.asarray(geometry, np.float64),
        background=np.asarray(offsets, np.float64),
        owners=np.stack(owners),
        occluder_target=target,
    )


# Flow pairs in the manner of FlyingChairs (Dosovitskiy et al.): each pair a scene of its own,
# the background moved as a whole and every object by its own displacement and scale, drawn
# broadly (up to these fractions of the frame's side), so that every pixel moves and the
# motions cover the range the motion stream meets between a reference and its supports. No
# deteriorations: ground truth that the images show.
FLOW_BACKGROUND_MOTION = 0.05
FLOW_OBJECT_MOTION = 0.1
FLOW_OBJECT_SCALE = 0.1  # each object's size changes by up to this fraction


def render_flow_pair(
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    labels: Sequence[int],
    max_objects: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One FlyingChairs-style pair: (image 1, image 2) float32 BGR [H, W, 3] and the ground-truth
    flow [H, W, 2] from image 1 to image 2 (`ground_truth_flow`: objects move and scale about
    their centres over a background moved by a sub-pixel translation; where an object uncovers
    or covers another surface the flow is that of the surface seen in image 1)."""
    side = min(width, height)
    reach = FLOW_BACKGROUND_MOTION * side
    margin = int(np.ceil(reach)) + 2
    big = _background(rng, height + 2 * margin, width + 2 * margin)
    shift = rng.uniform(-reach, reach, 2)
    # Image 2's background: the big texture moved by `shift` (bilinear), cropped where image
    # 1's is; a surface at x in image 1 is then at x + shift in image 2.
    moved = flow_data.translate(big, float(shift[0]), float(shift[1]))
    window = np.s_[margin : margin + height, margin : margin + width]
    num_objects = int(rng.integers(1, max_objects + 2))
    tracks = [
        _new_track(rng, int(rng.choice(labels)), i, str(rng.choice(SPEEDS)), width, height)
        for i in range(num_objects)
    ]
    styles = [class_style(t.label) for t in tracks]
    second = []
    for track in tracks:
        d = rng.uniform(-FLOW_OBJECT_MOTION, FLOW_OBJECT_MOTION, 2) * side
        k = 1.0 + rng.uniform(-FLOW_OBJECT_SCALE, FLOW_OBJECT_SCALE)
        second.append(dataclasses.replace(
            track, cx=track.cx + d[0], cy=track.cy + d[1], w=track.w * k, h=track.h * k
        ))  # fmt: skip
    order = sorted(range(num_objects), key=lambda i: -tracks[i].w * tracks[i].h)
    images, owners = [], []
    for background, geometry in ((big, tracks), (moved, second)):
        canvas = background[window].copy()
        owner = np.full((height, width), BACKGROUND, np.int32)
        for i in order:
            _render_object(canvas, owner, i, styles[i], geometry[i])
        canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
        images.append(canvas)
        owners.append(owner.astype(np.int16))
    scene = RenderedVideo(
        frames=images,
        objects=[[], []],
        deteriorations=[[], []],
        speeds={},
        tracks=np.asarray(
            [[(t.cx, t.cy, t.w, t.h) for t in geometry] for geometry in (tracks, second)],
            np.float64,
        ),
        background=np.asarray([shift, (0.0, 0.0)], np.float64),
        owners=np.stack(owners),
        occluder_target=0,
    )
    return images[0], images[1], ground_truth_flow(scene, 0, 1)


def generate(
    out: str | pathlib.Path,
    *,
    seed: int = 0,
    width: int = 128,
    height: int = 128,
    num_train_videos: int = 6,
    num_val_videos: int = 3,
    frames_per_video: int = 30,
    num_det_images: int = 40,
    num_classes: int = 6,
    max_objects: int = 2,
    write_lists: bool = True,
    jpeg_quality: int = 90,
    flow_pairs_per_video: int = 0,
) -> dict:
    """Write a complete synthetic ILSVRC2015 folder at `out`; returns the manifest (also saved
    as out/synthetic_manifest.json). With `flow_pairs_per_video`, also that many flow pairs per
    video (`render_flow_pair`: FlyingChairs-style scenes of the same classes and backgrounds,
    with their ground-truth flow) in FlyingChairs' layout under out/FlyingChairs, those drawn
    beside a train video marked 1 = train in FlyingChairs_train_val.txt, beside a val video
    2 = val."""
    out = pathlib.Path(out)
    labels = default_labels(num_classes)
    manifest: dict = {
        "seed": seed,
        "width": width,
        "height": height,
        "labels": list(labels),
        "videos": {},
        "det_images": [],
        "flow_pairs": {"train": 0, "val": 0},  # FlyingChairs/: how many pairs of each split
    }
    flow_marks: list[str] = []
    lists: dict[str, list[str]] = {
        ilsvrc.VID_TRAIN_LIST: [],
        ilsvrc.VID_VAL_VIDEOS_LIST: [],
        ilsvrc.VID_VAL_FRAMES_LISTS[0]: [],
        ilsvrc.DET_TRAIN_LIST: [],
    }
    global_id = 1
    for split, count in (("train", num_train_videos), ("val", num_val_videos)):
        for v in range(count):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, v])
            if split == "train":
                folder = f"ILSVRC2015_VID_train_0000/ILSVRC2015_train_{v:05d}000"
            else:
                folder = f"ILSVRC2015_val_{v:08d}"
            video_id = f"{split}/{folder}"
            # Rotate speeds and deteriorations so every kind occurs in every small dataset.
            speeds = [SPEEDS[(v + k) % 3] for k in range(3)]
            n = len(FRAME_DETERIORATIONS)
            kinds = [FRAME_DETERIORATIONS[(v + k) % n] for k in range(3)]
            video = render_video(
                rng,
                width=width,
                height=height,
                num_frames=frames_per_video,
                labels=labels,
                max_objects=max_objects,
                speeds=speeds,
                deteriorations=kinds,
            )
            encoded = [_encode(frame, jpeg_quality) for frame in video.frames]
            for t, (jpeg, objects) in enumerate(zip(encoded, video.objects, strict=True)):
                stem = f"{t:06d}"
                _write(out / "Data/VID" / video_id / f"{stem}.JPEG", jpeg)
                xml_objects = [
                    {
                        "track_id": o["track_id"],
                        "wnid": classes.WNIDS[o["label"]],
                        "x1": o["box"][0],
                        "y1": o["box"][1],
                        "x2": o["box"][2],
                        "y2": o["box"][3],
                        "occluded": o["occluded"],
                        "generated": o["generated"],
                    }
                    for o in objects
                ]
                _write(
                    out / "Annotations/VID" / video_id / f"{stem}.xml",
                    annotation_xml(folder, stem, "ILSVRC_2015", width, height, xml_objects),
                )
                if split == "val":
                    line = f"{video_id}/{stem} {global_id + t}"
                    lists[ilsvrc.VID_VAL_FRAMES_LISTS[0]].append(line)
            if split == "train":
                lists[ilsvrc.VID_TRAIN_LIST].extend(
                    f"{video_id} 1 {f} {frames_per_video}"
                    for f in ilsvrc.even_sample_frames(frames_per_video)
                )
            else:
                lists[ilsvrc.VID_VAL_VIDEOS_LIST].append(
                    f"{video_id} {global_id} 0 {frames_per_video}"
                )
                global_id += frames_per_video
            manifest["videos"][video_id] = {
                "speeds": {str(k): s for k, s in video.speeds.items()},
                "deteriorations": video.deteriorations,
            }
            pair_rng = np.random.default_rng([seed, 3, 0 if split == "train" else 1, v])
            for _ in range(flow_pairs_per_video):
                number = len(flow_marks) + 1
                *images, flow = render_flow_pair(
                    pair_rng, width=width, height=height, labels=labels, max_objects=max_objects
                )
                for name, image in zip(("img1", "img2"), images, strict=True):
                    # JPEG-coded first, as the videos' frames are.
                    image = cv2.imdecode(
                        np.frombuffer(_encode(image, jpeg_quality), np.uint8), cv2.IMREAD_COLOR
                    )
                    ok, ppm = cv2.imencode(".ppm", image)
                    assert ok
                    _write(out / FLOW_FOLDER / "data" / f"{number:05d}_{name}.ppm", ppm.tobytes())
                flow_data.write_flo(out / FLOW_FOLDER / "data" / f"{number:05d}_flow.flo", flow)
                flow_marks.append("1" if split == "train" else "2")
                manifest["flow_pairs"][split] += 1
    for i in range(num_det_images):
        rng = np.random.default_rng([seed, 2, i])
        main = int(labels[i % len(labels)])
        wnid = classes.WNIDS[main]
        if i % 4 == 3:
            sub, stem = "ILSVRC2014_train_0000", f"ILSVRC2014_train_{i:08d}"
        else:
            sub, stem = f"ILSVRC2013_train/{wnid}", f"{wnid}_{i}"
        image_id = f"train/{sub}/{stem}"
        canvas = _background(rng, height, width)
        owner = np.full((height, width), -1, np.int32)
        tracks = [_new_track(rng, main, 0, "slow", width, height)]
        if rng.random() < 0.5:
            tracks.append(_new_track(rng, int(rng.choice(labels)), 1, "slow", width, height))
        other = rng.random() < 0.3
        boxes = [
            _render_object(canvas, owner, k, class_style(t.label), t)[0]
            for k, t in enumerate(tracks)
        ]
        xml_objects = []
        for track, box in zip(tracks, boxes, strict=True):
            if box is not None:
                xml_objects.append(
                    {
                        "wnid": classes.WNIDS[track.label],
                        "x1": box[0],
                        "y1": box[1],
                        "x2": box[2],
                        "y2": box[3],
                    }
                )
        if other:  # clutter of a non-VID class, annotated with its own WordNet id
            x0 = int(rng.integers(0, width // 2))
            y0 = int(rng.integers(0, height // 2))
            _occluder(canvas, owner, (x0, y0, x0 + width // 5, y0 + height // 3), rng)
            xml_objects.append(
                {
                    "wnid": OTHER_DET_WNID,
                    "x1": x0,
                    "y1": y0,
                    "x2": x0 + width // 5 - 1,
                    "y2": y0 + height // 3 - 1,
                }
            )
        canvas += rng.normal(0, 3, canvas.shape).astype(np.float32)
        _write(out / "Data/DET" / f"{image_id}.JPEG", _encode(canvas, jpeg_quality))
        _write(
            out / "Annotations/DET" / f"{image_id}.xml",
            annotation_xml(
                sub.split("/")[-1], stem, "ILSVRC_2014", width, height, xml_objects, det=True
            ),
        )
        lists[ilsvrc.DET_TRAIN_LIST].append(f"{image_id} 1")
        manifest["det_images"].append(image_id)
    if flow_marks:
        _write(out / FLOW_FOLDER / "FlyingChairs_train_val.txt", "\n".join(flow_marks) + "\n")
    if write_lists:
        for name, lines in lists.items():
            if lines:
                _write(out / "ImageSets" / name, "\n".join(lines) + "\n")
    _write(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def generate_cocovid(
    out: str | pathlib.Path,
    *,
    class_names: Sequence[str] | None = None,
    **generate_kwargs,
) -> dict:
    """The synthetic videos as a COCO-VID dataset at `out`; returns the manifest.

      OUT/images/<video name>/<frame>.JPEG     the image root (the ILSVRC Data/VID tree)
      OUT/annotations/train.json, val.json     COCO-VID, converted by `convert_ilsvrc_to_cocovid`
                                               (a split with no videos gets no file)
      OUT/images/synthetic_manifest.json       `generate`'s manifest, beside the images: its
                                               video keys are the COCO video names
      OUT/FlyingChairs/                        only with flow_pairs_per_video, as in `generate`

    Categories are the generator's `num_classes` classes, ids 1..C in label order, named by
    `class_names` (one per class, in that order) or else by their VID names; they carry only
    id and name, as a user's own dataset does (no ILSVRC `encode_name`: the manifest's `labels`
    give the VID labels drawn). DET images are not part of COCO-VID: none are made.
    `generate_kwargs` are `generate`'s (seed, width, height, num_train_videos, ...).

    Everything is made in a temporary folder beside `out` and moved into place with one
    rename, so a crash never leaves a partial dataset; `out` must not exist or be empty.
    """
    if generate_kwargs.pop("num_det_images", 0):
        raise ValueError("COCO-VID output has no DET images: num_det_images must be 0")
    out = pathlib.Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(out, "exists and is not an empty folder; not overwritten")
    labels = default_labels(generate_kwargs.get("num_classes", 6))
    if class_names is None:
        class_names = [classes.CLASS_NAMES[label] for label in labels]
    class_names = [str(n) for n in class_names]
    if len(class_names) != len(labels):
        raise ValueError(
            f"class_names has {len(class_names)} names for num_classes={len(labels)} classes"
        )
    chosen = dict(zip((classes.WNIDS[label] for label in labels), class_names, strict=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        source, staged = tmp / "ilsvrc", tmp / "cocovid"
        manifest = generate(source, num_det_images=0, **generate_kwargs)
        datasets = {}
        for split in ("train", "val"):
            if (source / "Data" / "VID" / split).is_dir():
                dataset = convert_ilsvrc_to_cocovid.convert(source, split, classes=chosen)
                for category in dataset["categories"]:
                    del category["encode_name"]
                datasets[split] = dataset
        staged.mkdir()
        images = staged / COCOVID_IMAGES
        if (source / "Data" / "VID").is_dir():
            os.replace(source / "Data" / "VID", images)
        images.mkdir(exist_ok=True)
        os.replace(source / MANIFEST, images / MANIFEST)
        if (source / FLOW_FOLDER).is_dir():
            os.replace(source / FLOW_FOLDER, staged / FLOW_FOLDER)
        (staged / COCOVID_ANNOTATIONS).mkdir()
        for split, dataset in datasets.items():
            convert_ilsvrc_to_cocovid.write(dataset, staged / COCOVID_ANNOTATIONS / f"{split}.json")
        os.replace(staged, out)  # an empty folder at `out` is replaced (POSIX rename)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="root folder to write (ILSVRC or COCO-VID layout)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="frame width and height")
    parser.add_argument("--width", type=int, help="frame width (overrides --size)")
    parser.add_argument("--height", type=int, help="frame height (overrides --size)")
    parser.add_argument("--train-videos", type=int, default=6)
    parser.add_argument("--val-videos", type=int, default=3)
    parser.add_argument("--frames", type=int, default=30, help="frames per video")
    parser.add_argument(
        "--format",
        choices=("ilsvrc", "cocovid"),
        default="ilsvrc",
        help="ilsvrc: the ILSVRC2015 layout (default); cocovid: OUT/images + "
        "OUT/annotations/{train,val}.json (COCO-VID, no DET images)",
    )
    parser.add_argument(
        "--class-names",
        help="cocovid: comma-separated category names, one per class (--classes of them)",
    )
    parser.add_argument("--det-images", type=int, help="DET images (ilsvrc only; default 40)")
    parser.add_argument("--classes", type=int, default=6, help="number of VID classes used")
    parser.add_argument("--max-objects", type=int, default=2, help="objects per video, at most")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--no-lists", action="store_true", help="do not write ImageSets/ lists")
    parser.add_argument(
        "--flow-pairs", type=int, default=0,
        help="FlyingChairs-style flow pairs per video (images and ground-truth flow)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    common = dict(
        seed=args.seed,
        width=args.width or args.size,
        height=args.height or args.size,
        num_train_videos=args.train_videos,
        num_val_videos=args.val_videos,
        frames_per_video=args.frames,
        num_classes=args.classes,
        max_objects=args.max_objects,
        write_lists=not args.no_lists,
        jpeg_quality=args.jpeg_quality,
        flow_pairs_per_video=args.flow_pairs,
    )
    if args.format == "ilsvrc":
        if args.class_names is not None:
            parser.error("--class-names needs --format cocovid")
        det_images = 40 if args.det_images is None else args.det_images
        manifest = generate(args.out, num_det_images=det_images, **common)
        print(
            f"wrote {len(manifest['videos'])} videos and {len(manifest['det_images'])} DET images "
            f"to {args.out}"
        )
        return
    if args.det_images:
        parser.error("--format cocovid has no DET images (--det-images must be 0)")
    names = None
    if args.class_names is not None:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) != args.classes:
            parser.error(f"--class-names gives {len(names)} names for --classes {args.classes}")
    try:
        manifest = generate_cocovid(args.out, class_names=names, **common)
    except UserError as e:
        parser.error(str(e))
    print(
        f"wrote {len(manifest['videos'])} videos to {args.out} (COCO-VID: "
        f"{COCOVID_IMAGES}/, {COCOVID_ANNOTATIONS}/{{train,val}}.json)"
    )


if __name__ == "__main__":
    main()
