"""Plain numpy/cv2 reader of the official ILSVRC2015 layout (VID and DET), no TFDS needed.

Layout (VID_PROTOCOL §4): `Data/VID/<split>/.../<snippet>/<frame>.JPEG` with one XML per frame at
`Annotations/VID/<split>/.../<snippet>/<frame>.xml`; `Data/DET/train/<sub>/<image>.JPEG` with
`Annotations/DET/train/<sub>/<image>.xml`; optional FGFA/SSVD list files in `ImageSets/`
(`VID_train_15frames.txt`, `VID_val_videos.txt`, `VID_val_frames.txt`/`VID_val_all.txt`,
`DET_train_30classes.txt`; formats in REFERENCE_SPEC §9). The TFDS builders are built on these
functions, and evaluation code can use them directly to read ground truth.

Boxes are returned exactly as the XML holds them: inclusive integer pixels (w = x2 - x1 + 1), not
clipped. `sanitize_objects` applies the training-side clean-up (clip / drop) with counts.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from input_pipeline import classes
from ssvd_jax.errors import UserError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Where FGFA/SSVD and the devkit keep their list files, relative to the ILSVRC root.
_LIST_DIRS = ("ImageSets", "ImageSets/VID", "ImageSets/DET")
VID_TRAIN_LIST = "VID_train_15frames.txt"
VID_VAL_VIDEOS_LIST = "VID_val_videos.txt"
VID_VAL_FRAMES_LISTS = ("VID_val_frames.txt", "VID_val_all.txt")
DET_TRAIN_LIST = "DET_train_30classes.txt"
FRAMES_PER_VIDEO = 15  # FGFA/SSVD's VID_train_15frames sampling


class IlsvrcFormatError(UserError, ValueError):
    """An input file that cannot be used: `file` and `problem`."""


@dataclasses.dataclass(frozen=True)
class Object:
    """One annotated object, as the XML holds it (inclusive integer pixel box, not clipped)."""

    wnid: str
    label: int | None  # 0-based VID label; None for a WordNet id outside the 30 VID classes
    x1: int
    y1: int
    x2: int
    y2: int
    track_id: int = -1  # DET XML has no track ids
    occluded: bool = False
    generated: bool = False
    crowd: bool = False  # COCO-VID `iscrowd`: an ignore region, not an object (no XML has one)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One frame's (or DET image's) XML: declared size and objects in file order."""

    width: int
    height: int
    objects: tuple[Object, ...]
    filename: str = ""
    folder: str = ""


def _text(elem: ET.Element, tag: str, path: PathLike, required: bool = True) -> str | None:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise IlsvrcFormatError(path, f"malformed annotation, missing <{tag}>")
        return None
    return child.text.strip()


def _int(elem: ET.Element, tag: str, path: PathLike, default: int | None = None) -> int:
    text = _text(elem, tag, path, required=default is None)
    if text is None:
        return int(default)  # type: ignore[arg-type]
    try:
        # Some ILSVRC tools write coordinates as "12.0"; the value is still an integer pixel.
        value = float(text)
    except ValueError as e:
        raise IlsvrcFormatError(path, f"malformed annotation, <{tag}> is {text!r}") from e
    if value != int(value):
        raise IlsvrcFormatError(path, f"malformed annotation, <{tag}> {text!r} not integer")
    return int(value)


def parse_annotation(source: PathLike | bytes, *, name: str | None = None) -> Annotation:
    """Parse one VID or DET XML (from a path or bytes). Raises IlsvrcFormatError if malformed.

    Objects keep XML order and raw coordinates; unknown WordNet ids get `label=None`.
    """
    path = name if name is not None else (source if not isinstance(source, bytes) else "<bytes>")
    try:
        if isinstance(source, bytes):
            root = ET.fromstring(source)
        else:
            root = ET.parse(source).getroot()
    except (ET.ParseError, UnicodeDecodeError) as e:
        raise IlsvrcFormatError(path, f"malformed XML ({e})") from e
    if root.tag != "annotation":
        raise IlsvrcFormatError(path, f"malformed annotation, root is <{root.tag}>")
    size = root.find("size")
    if size is None:
        raise IlsvrcFormatError(path, "malformed annotation, missing <size>")
    width, height = _int(size, "width", path), _int(size, "height", path)
    objects = []
    for obj in root.findall("object"):
        wnid = _text(obj, "name", path)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise IlsvrcFormatError(path, "malformed annotation, <object> without <bndbox>")
        objects.append(
            Object(
                wnid=wnid,
                label=classes.label_of_wnid(wnid),
                x1=_int(bndbox, "xmin", path),
                y1=_int(bndbox, "ymin", path),
                x2=_int(bndbox, "xmax", path),
                y2=_int(bndbox, "ymax", path),
                track_id=_int(obj, "trackid", path, default=-1),
                occluded=bool(_int(obj, "occluded", path, default=0)),
                generated=bool(_int(obj, "generated", path, default=0)),
            )
        )
    return Annotation(
        width=width,
        height=height,
        objects=tuple(objects),
        filename=_text(root, "filename", path, required=False) or "",
        folder=_text(root, "folder", path, required=False) or "",
    )


def sanitize_objects(
    objects: Iterable[Object],
    width: int,
    height: int,
    counts: collections.Counter | None = None,
    on_change: Callable[[str, Object], None] | None = None,
) -> list[Object]:
    """Training-side clean-up of raw boxes, counting what it changed in `counts` (and telling
    `on_change(kind, original object)` about each box it clipped or dropped).

    Boxes inside [0, W] x [0, H] are kept exactly as written (x2 == W, one pixel past the last
    column, occurs in real files and is still representable as a normalised coordinate <= 1).
    Others are clipped to [0, W-1] x [0, H-1] as FGFA's training roidb does ('boxes_clipped');
    boxes entirely outside the image are dropped ('boxes_dropped_outside'), and so are boxes
    with x2 < x1 or y2 < y1, zero or negative size under the +1 convention
    ('boxes_dropped_empty').
    """
    counts = counts if counts is not None else collections.Counter()
    kept = []
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        change = None
        if x1 > width - 1 or y1 > height - 1 or x2 < 0 or y2 < 0:
            change = "boxes_dropped_outside"
        else:
            if not (0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height):
                x1, x2 = (min(max(v, 0), width - 1) for v in (x1, x2))
                y1, y2 = (min(max(v, 0), height - 1) for v in (y1, y2))
                change = "boxes_clipped"
            if x2 < x1 or y2 < y1:
                change = "boxes_dropped_empty"
        if change is not None:
            counts[change] += 1
            if on_change is not None:
                on_change(change, obj)
        if change is not None and change != "boxes_clipped":
            continue
        kept.append(dataclasses.replace(obj, x1=x1, y1=y1, x2=x2, y2=y2))
    return kept


# ----------------------------------------------------------------------------------------------
# Images


def _jpeg_info(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's SOF marker, or None when there is none."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = int.from_bytes(data[i + 2 : i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame header.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height, data[i + 9]
        if marker == 0xDA:  # start of scan before any SOF: broken file
            return None
        i += 2 + seg_len
    return None


def _decode_truncated(data: bytes, acceptable_fraction: float = 0.25) -> np.ndarray | None:
    """Decode what a truncated JPEG holds (the missing rows come out grey), as the official
    tools' older cv2/PIL did; cv2 5 refuses such files, TensorFlow's decoder can recover them."""
    import tensorflow as tf  # local: only broken files pay for it

    try:
        rgb = tf.io.decode_jpeg(
            data, channels=3, try_recover_truncated=True, acceptable_fraction=acceptable_fraction
        ).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


def load_image(path: PathLike, *, verify: bool = True) -> tuple[bytes, int, int, str | None]:
    """Read an image file for storage: (JPEG bytes, width, height, fix).

    Colour 3-channel JPEGs are returned byte for byte (fix None). Grayscale and CMYK JPEGs (both
    occur in ImageNet), truncated JPEGs (no end-of-image marker; what is there is decoded, as
    the official tools do, if at least a quarter of the rows survive) and non-JPEG files named
    .JPEG are decoded to 3 channels and re-encoded (quality 95); `fix` names what was done
    ('grayscale', 'cmyk', 'truncated', 'not_jpeg'). Files that cannot be decoded at all raise
    IlsvrcFormatError naming the file.
    With verify=False a well-formed colour JPEG is not decoded (faster builds).
    """
    import cv2  # local: keeps `import input_pipeline` light

    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as e:
        raise IlsvrcFormatError(path, f"cannot read image ({e.strerror or e})") from e
    if not data:
        raise IlsvrcFormatError(path, "empty image file (0 bytes)")
    info = _jpeg_info(data) if data[:2] == b"\xff\xd8" else None
    fix = None
    if info is None:
        fix = "not_jpeg" if data[:2] != b"\xff\xd8" else "corrupt_header"
    elif info[2] == 1:
        fix = "grayscale"
    elif info[2] == 4:
        fix = "cmyk"
    elif info[2] != 3:
        fix = "unusual_components"
    elif b"\xff\xd9" not in data[-1024:]:
        fix = "truncated"
    if fix is None and not verify:
        return data, info[0], info[1], None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if (image is None or image.size == 0) and fix == "truncated":
        image = _decode_truncated(data)
    if image is None or image.size == 0:
        raise IlsvrcFormatError(path, "corrupt image, cannot be decoded")
    height, width = image.shape[:2]
    if fix is None:
        return data, width, height, None
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise IlsvrcFormatError(path, "could not re-encode image")
    return encoded.tobytes(), width, height, fix


# ----------------------------------------------------------------------------------------------
# Videos and list files


@dataclasses.dataclass(frozen=True)
class Video:
    """One VID snippet: id relative to Data/VID (e.g. 'train/ILSVRC2015_VID_train_0000/
    ILSVRC2015_train_00000000'), frame stems in order, and the frames FGFA samples for training."""

    video_id: str
    frames: tuple[str, ...]
    sample_frames: tuple[int, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def image_path(self, root: PathLike, index: int) -> pathlib.Path:
        return pathlib.Path(root) / "Data" / "VID" / self.video_id / f"{self.frames[index]}.JPEG"

    def annotation_path(self, root: PathLike, index: int) -> pathlib.Path:
        return (
            pathlib.Path(root) / "Annotations" / "VID" / self.video_id / f"{self.frames[index]}.xml"
        )


def even_sample_frames(num_frames: int, count: int = FRAMES_PER_VIDEO) -> tuple[int, ...]:
    """FGFA's VID_train_15frames choice: floor((k + 0.5) * N / count), k < count, deduplicated."""
    picks = sorted({int((k + 0.5) * num_frames / count) for k in range(count)})
    return tuple(p for p in picks if p < num_frames)


def find_list_file(root: PathLike, *names: str) -> pathlib.Path | None:
    """First existing list file among `names` in ImageSets/, ImageSets/VID/, ImageSets/DET/."""
    for name in names:
        for sub in _LIST_DIRS:
            path = pathlib.Path(root) / sub / name
            if path.is_file():
                return path
    return None


def _list_lines(path: pathlib.Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def read_vid_train_list(path: PathLike) -> dict[str, tuple[tuple[int, ...], int]]:
    """VID_train_15frames.txt -> {video_id: (sampled frame indices, listed num_frames)}, in order.

    Line format `<snippet> 1 <frame_idx> <num_frames>` (REFERENCE_SPEC §9).
    """
    out: dict[str, tuple[list[int], int]] = {}
    for lineno, parts in enumerate(_list_lines(pathlib.Path(path)), 1):
        if len(parts) != 4:
            raise IlsvrcFormatError(
                f"{path}:{lineno}", "expected '<snippet> 1 <frame> <num_frames>'"
            )
        frames, n = out.setdefault(parts[0], ([], int(parts[3])))
        frames.append(int(parts[2]))
    return {k: (tuple(sorted(set(f))), n) for k, (f, n) in out.items()}


def read_vid_val_videos(path: PathLike) -> list[tuple[str, int, int, int]]:
    """VID_val_videos.txt -> [(video_id, first global id (1-based), start frame, num_frames)]."""
    rows = []
    for lineno, parts in enumerate(_list_lines(pathlib.Path(path)), 1):
        if len(parts) != 4:
            raise IlsvrcFormatError(f"{path}:{lineno}", "expected '<snippet> <id> <start> <num>'")
        rows.append((parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return rows


def read_vid_val_frames(path: PathLike) -> list[tuple[str, int]]:
    """VID_val_frames.txt / VID_val_all.txt -> [(frame path, global 1-based id)], in order."""
    rows = []
    for lineno, parts in enumerate(_list_lines(pathlib.Path(path)), 1):
        if len(parts) < 2:
            raise IlsvrcFormatError(f"{path}:{lineno}", "expected '<frame path> <global id> ...'")
        rows.append((parts[0], int(parts[1])))
    return rows


def read_det_list(path: PathLike) -> list[str]:
    """DET_train_30classes.txt -> image ids relative to Data/DET (no extension), in order."""
    return [parts[0] for parts in _list_lines(pathlib.Path(path))]


def _frames_on_disk(root: pathlib.Path, video_id: str, listed_in: PathLike) -> tuple[str, ...]:
    folder = root / "Data" / "VID" / video_id
    if not folder.is_dir():
        raise IlsvrcFormatError(folder, f"video folder listed in {listed_in} but missing")
    return tuple(sorted(p.stem for p in folder.iterdir() if p.suffix == ".JPEG"))


# A note of `list_vid_videos`: (file or folder, kind (a build report counter), problem).
Note = tuple[str, str, str]


def _with_split(split: str, name: str) -> str:
    # The devkit's val.txt omits the split prefix that FGFA's lists carry.
    return name if name.startswith(split + "/") else f"{split}/{name}"


def list_vid_videos(
    root: PathLike,
    split: str,
    *,
    use_lists: bool = True,
    counts: collections.Counter | None = None,
    notes: list[Note] | None = None,
) -> list[Video]:
    """All snippets of a VID split, in the official order.

    With list files present (and use_lists), follows them: train uses VID_train_15frames.txt
    (its snippets, in its order, and its sampled frames); val uses VID_val_frames.txt /
    VID_val_all.txt (frames in list order, which defines the evaluation's global frame ids) or
    else VID_val_videos.txt. Otherwise every snippet folder under Data/VID/<split>, sorted, with
    15 evenly spread sampled frames. An absent split folder gives [] (the caller warns).

    With `notes` (a list), what is unusual is appended to it as (path, kind, problem): a list
    length that differs from the files, frame numbering gaps, and listed video folders that
    are missing, which are then left out instead of raising IlsvrcFormatError.
    """
    root = pathlib.Path(root)
    counts = counts if counts is not None else collections.Counter()
    noted: list[Note] = notes if notes is not None else []

    def frames_on_disk(video_id: str, listed_in: PathLike) -> tuple[str, ...] | None:
        try:
            return _frames_on_disk(root, video_id, listed_in)
        except IlsvrcFormatError as e:
            if notes is None:
                raise
            counts["videos_missing"] += 1
            noted.append((e.file, "videos_missing", e.problem))
            return None

    split_dir = root / "Data" / "VID" / split
    if use_lists and split == "train" and (lst := find_list_file(root, VID_TRAIN_LIST)):
        videos = []
        for vid, (picks, listed_n) in read_vid_train_list(lst).items():
            video_id = _with_split(split, vid)
            frames = frames_on_disk(video_id, lst)
            if frames is None:
                continue
            if len(frames) != listed_n:
                counts["list_length_mismatch"] += 1
                problem = f"{len(frames)} frames on disk, {lst.name} lists {listed_n}"
                noted.append(
                    (str(root / "Data" / "VID" / video_id), "list_length_mismatch", problem)
                )
                log.warning("%s: %s", video_id, problem)
            picks = tuple(p for p in picks if p < len(frames)) or even_sample_frames(len(frames))
            videos.append(Video(video_id, frames, picks))
        return videos
    if use_lists and split == "val":
        frames_list = find_list_file(root, *VID_VAL_FRAMES_LISTS)
        if frames_list is not None:
            grouped: dict[str, list[str]] = {}
            for frame_path, _ in read_vid_val_frames(frames_list):
                video_id, stem = _with_split(split, frame_path).rsplit("/", 1)
                grouped.setdefault(video_id, []).append(stem)
            videos = []
            for video_id, stems in grouped.items():
                for stem in stems:
                    if not (root / "Data" / "VID" / video_id / f"{stem}.JPEG").is_file():
                        raise IlsvrcFormatError(
                            frames_list, f"lists {video_id}/{stem}, missing under Data/VID"
                        )
                videos.append(Video(video_id, tuple(stems), even_sample_frames(len(stems))))
            return videos
        videos_list = find_list_file(root, VID_VAL_VIDEOS_LIST)
        if videos_list is not None:
            videos = []
            for vid, _, start, listed_n in read_vid_val_videos(videos_list):
                video_id = _with_split(split, vid)
                frames = frames_on_disk(video_id, videos_list)
                if frames is None:
                    continue
                frames = frames[start:]
                if len(frames) != listed_n:
                    counts["list_length_mismatch"] += 1
                    problem = f"{len(frames)} frames on disk, {videos_list.name} lists {listed_n}"
                    folder = str(root / "Data" / "VID" / video_id)
                    noted.append((folder, "list_length_mismatch", problem))
                    log.warning("%s: %s", video_id, problem)
                videos.append(Video(video_id, frames, even_sample_frames(len(frames))))
            return videos
    if not split_dir.is_dir():
        return []
    videos = []
    for dirpath, _, filenames in sorted(os.walk(split_dir)):
        stems = sorted(f[: -len(".JPEG")] for f in filenames if f.endswith(".JPEG"))
        if not stems:
            continue
        video_id = pathlib.Path(dirpath).relative_to(root / "Data" / "VID").as_posix()
        if any(int(s) != i for i, s in enumerate(stems) if s.isdigit()):
            counts["frame_numbering_gaps"] += 1
            problem = "frame files are not numbered 0..N-1 contiguously"
            noted.append((dirpath, "frame_numbering_gaps", problem))
            log.warning("%s: %s", video_id, problem)
        videos.append(Video(video_id, tuple(stems), even_sample_frames(len(stems))))
    videos.sort(key=lambda v: v.video_id)
    return videos


def read_video_annotations(
    root: PathLike, video: Video, counts: collections.Counter | None = None
) -> list[Annotation | None]:
    """Parsed XML of every frame of `video` (None for a frame without an XML file)."""
    out: list[Annotation | None] = []
    for i in range(video.num_frames):
        path = video.annotation_path(root, i)
        if not path.is_file():
            if counts is not None:
                counts["frames_without_xml"] += 1
            out.append(None)
            continue
        out.append(parse_annotation(path))
    return out


def list_det_images(
    root: PathLike, *, use_lists: bool = True, counts: collections.Counter | None = None
) -> list[str]:
    """DET train image ids (relative to Data/DET, no extension) to consider for the 30 classes.

    With DET_train_30classes.txt present, its images in its order; otherwise every image under
    Data/DET/train, sorted (the builder then keeps those with a VID-class object).
    """
    root = pathlib.Path(root)
    if use_lists and (lst := find_list_file(root, DET_TRAIN_LIST)):
        return read_det_list(lst)
    base = root / "Data" / "DET"
    if not (base / "train").is_dir():
        return []
    ids = []
    for dirpath, _, filenames in os.walk(base / "train"):
        rel = pathlib.Path(dirpath).relative_to(base).as_posix()
        ids.extend(f"{rel}/{f[: -len('.JPEG')]}" for f in filenames if f.endswith(".JPEG"))
    return sorted(ids)


def det_image_path(root: PathLike, image_id: str) -> pathlib.Path:
    return pathlib.Path(root) / "Data" / "DET" / f"{image_id}.JPEG"


def det_annotation_path(root: PathLike, image_id: str) -> pathlib.Path:
    return pathlib.Path(root) / "Annotations" / "DET" / f"{image_id}.xml"


# ----------------------------------------------------------------------------------------------
# Motion IoU (FGFA's motion-speed buckets, VID_PROTOCOL §2)

MOTION_BUCKETS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "fast": (0.0, 0.7),
    "medium": (0.7, 0.9),
    "slow": (0.9, 1.0),
}


def iou_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of inclusive-pixel boxes [..., 4] (x1, y1, x2, y2) with the +1 convention."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def motion_iou(
    frames: Sequence[Sequence[tuple[int, Sequence[float]]]], window: int = 10
) -> list[np.ndarray]:
    """Motion IoU of every object of a video (FGFA's definition).

    frames[t] lists (track_id, box) of frame t in file order. The motion IoU of a box is the mean
    IoU(+1) with the same track's boxes in frames t-window..t+window (itself excluded, frames
    where the track is absent skipped). A box with no neighbours gets 0 (FGFA reads empty as 0).
    Returns one float array per frame, aligned with the objects.
    """
    tracks: dict[int, dict[int, np.ndarray]] = collections.defaultdict(dict)
    for t, objs in enumerate(frames):
        for tid, box in objs:
            tracks[tid][t] = np.asarray(box, np.float64)
    out = []
    for t, objs in enumerate(frames):
        values = np.zeros(len(objs))
        for j, (tid, box) in enumerate(objs):
            track = tracks[tid]
            others = [track[u] for u in range(t - window, t + window + 1) if u != t and u in track]
            if others:
                values[j] = iou_plus1(np.asarray(box, np.float64)[None], np.stack(others)).mean()
        out.append(values)
    return out
