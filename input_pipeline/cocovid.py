"""COCO-VID datasets: a user's own videos and classes, in the JSON format mmtracking and most
video-detection converters use.

One JSON file per split, images under one image root:
  {"videos":      [{"id", "name"}],
   "images":      [{"id", "file_name", "video_id", "frame_id", "width", "height"}],
   "annotations": [{"id", "image_id", "category_id", "instance_id", "bbox": [x, y, w, h],
                    "iscrowd" (optional), "occluded" (optional), "generated" (optional)}],
   "categories":  [{"id", "name"}]}
`file_name` is relative to the image root. A video's frames are its images ordered by
`frame_id`; frames without annotations are negatives. The class list is the file's
`categories` ordered by id: label k (0-based) is the k-th category, whatever its id; any number
of classes. Boxes are read as corners (x, y, x + w, y + h), not clipped; which IoU and box
convention they are scored with is the evaluation's rule (`eval.iou_rule`: the ILSVRC rule with
its "+1" pixels, which the ILSVRC converter's files need to score as the XML do, or plain IoU
0.5 with continuous boxes). `iscrowd` boxes are no target: training leaves them out and
evaluation ignores detections on them (as COCO does). `instance_id` tracks an object through its
video (the speed buckets and the track evaluation need it; an annotation without one is its own
track).

Every problem is a `dataset_check.Finding` naming the JSON entry (`val.json: annotations[12]
(id 57)`), what is wrong and what happens: `refuse` for anything that cannot be used as given
(an undefined image, category or video, a box of negative size, an image that does not exist, a
repeated id), `fix` for what is repaired. `load` raises the first refusal as one line;
`check` (`main.py --mode=check`) lists them all.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
from typing import Any

from input_pipeline import dataset_check, ilsvrc
from ssvd_jax.errors import UserError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
SOURCE = "cocovid"
_KEYS = ("videos", "images", "annotations", "categories")


class CocoVidFormatError(UserError, ValueError):
    """A COCO-VID file or entry that cannot be used: `file` names the JSON entry."""


@dataclasses.dataclass(frozen=True)
class Video:
    """One video of a COCO-VID file, with the interface of `ilsvrc.Video`.

    video_id: the JSON's video name; frames: `%06d` of each frame's `frame_id` (the frame
    stems that the synthetic manifest and frame lists use); files: the images' file names
    (relative to the image root); image_ids: their JSON ids, which are also the frames' global
    ids in detection files; sample_frames: the frames phase 1 and phase 2 draw references from
    (15 per video, evenly spread, as FGFA's VID_train_15frames)."""

    video_id: str
    frames: tuple[str, ...]
    files: tuple[str, ...]
    image_ids: tuple[int, ...]
    image_root: str
    json_path: str
    entries: tuple[int, ...]  # index of each frame's entry in the file's `images`
    sample_frames: tuple[int, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def image_path(self, root: PathLike | None = None, index: int = 0) -> pathlib.Path:
        """The frame's image (`root` is ignored: a COCO-VID video knows its image root)."""
        return pathlib.Path(self.image_root) / self.files[index]

    def annotation_path(self, root: PathLike | None = None, index: int = 0) -> str:
        """Where the frame's annotation lives, for messages: the file and the image entry."""
        return f"{self.json_path}: images[{self.entries[index]}] (id {self.image_ids[index]})"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A COCO-VID split: its classes, videos in file order, and each frame's annotation as
    `ilsvrc.Annotation` (objects: label = 0-based class, wnid = the class name, corners as
    floats; `crowd` ones are ignore regions)."""

    json_path: str
    image_root: str
    category_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    videos: tuple[Video, ...]
    annotations: tuple[tuple[ilsvrc.Annotation, ...], ...]  # [video][frame]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)

    @functools.cached_property
    def annotation_of_image(self) -> dict[int, ilsvrc.Annotation]:
        """{image id: its frame's annotation}, built once per dataset."""
        return {i: ann for v, anns in zip(self.videos, self.annotations, strict=True)
                for i, ann in zip(v.image_ids, anns, strict=True)}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Source:
    """A COCO-VID dataset as the config names it: the image root and the split files."""

    image_root: str
    train_json: str = ""
    val_json: str = ""
    iou_rule: str = "ilsvrc"  # how its detections are scored: 'ilsvrc' | 'iou50' (eval.iou_rule)

    def json_for(self, split: str) -> str:
        path = {"train": self.train_json, "val": self.val_json}.get(split, "")
        if not path:
            raise CocoVidFormatError(
                f"data.{split}_json",
                f"no COCO-VID file for split {split!r} (set data.{split}_json)",
            )
        return path

    def __str__(self) -> str:
        return f"COCO-VID {self.val_json or self.train_json} (images {self.image_root})"


# ----------------------------------------------------------------------------------------------
# Reading and checking


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    if not path.is_file():
        raise CocoVidFormatError(path, "no such file (a COCO-VID JSON file)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CocoVidFormatError(
            path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except UnicodeDecodeError as e:
        raise CocoVidFormatError(path, f"not a UTF-8 text file ({e.reason})") from None
    if not isinstance(data, dict):
        raise CocoVidFormatError(path, "not a COCO-VID file: the top level is not a JSON object")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise CocoVidFormatError(
            path, f"not a COCO-VID file: no {', '.join(repr(k) for k in missing)} "
            f"(expected the keys {', '.join(_KEYS)})",
        )  # fmt: skip
    for key in _KEYS:
        if not isinstance(data[key], list):
            raise CocoVidFormatError(path, f"{key!r} is not a list")
    return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))  # fmt: skip


class _Entries:
    """Checks of one list of entries, each problem a refusal naming `<file>: <key>[i] (id x)`."""

    def __init__(self, path: pathlib.Path, key: str, findings: dataset_check.Findings):
        self.path, self.key, self.findings = path, key, findings

    def where(self, i: int, entry: Any) -> str:
        ident = entry.get("id") if isinstance(entry, dict) else None
        suffix = f" (id {ident})" if _is_int(ident) else ""
        return f"{self.path}: {self.key}[{i}]{suffix}"

    def refuse(self, i: int, entry: Any, problem: str) -> None:
        self.findings.add(self.where(i, entry), f"{self.key}_invalid", problem,
                          dataset_check.REFUSE)  # fmt: skip

    def fields(self, i: int, entry: Any, required: dict[str, Any]) -> bool:
        """Whether entry is an object whose required keys have the right types."""
        if not isinstance(entry, dict):
            self.refuse(i, entry, "not a JSON object")
            return False
        for key, check in required.items():
            if key not in entry:
                self.refuse(i, entry, f"missing key {key!r}")
                return False
            if not check(entry[key]):
                kind = {_is_int: "an integer", _is_number: "a number", _is_str: "a string"}[check]
                self.refuse(i, entry, f"{key} {entry[key]!r} is not {kind}")
                return False
        return True

    def unique_ids(self, entries: list[Any], ok: list[bool]) -> dict[int, int]:
        """{id: entry index} of the well-formed entries; a repeated id is refused."""
        seen: dict[int, int] = {}
        for i, entry in enumerate(entries):
            if not ok[i]:
                continue
            ident = entry["id"]
            if ident in seen:
                self.refuse(i, entry, f"id {ident} is also the id of {self.key}[{seen[ident]}]")
                ok[i] = False
            else:
                seen[ident] = i
        return seen


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def read(
    json_path: PathLike,
    image_root: PathLike,
    findings: dataset_check.Findings | None = None,
    *,
    check_images: bool = True,
) -> Dataset:
    """Read and check a COCO-VID file; every problem goes to `findings` (module docstring).
    Entries refused are left out of the returned dataset (its frames, boxes and classes are
    the usable ones); `load` is the strict form. check_images: every image file must exist."""
    path = pathlib.Path(json_path)
    findings = findings if findings is not None else dataset_check.Findings()
    data = _read_json(path)
    root = pathlib.Path(image_root)
    if check_images and not root.is_dir():
        raise CocoVidFormatError(root, "no such folder (data.image_root: the images' root)")

    checks = _Entries(path, "categories", findings)
    cats = data["categories"]
    ok = [checks.fields(i, c, {"id": _is_int, "name": _is_str}) for i, c in enumerate(cats)]
    cat_index = checks.unique_ids(cats, ok)
    names_seen: dict[str, int] = {}
    for ident in sorted(cat_index):
        i = cat_index[ident]
        name = cats[i]["name"]
        if name in names_seen:
            checks.refuse(i, cats[i], f"name {name!r} is also the name of categories"
                                      f"[{names_seen[name]}]")  # fmt: skip
        names_seen.setdefault(name, i)
    category_ids = tuple(sorted(cat_index))
    label_of = {c: k for k, c in enumerate(category_ids)}
    class_names = tuple(cats[cat_index[c]]["name"] for c in category_ids)
    if not cats:
        findings.add(path, "categories_invalid", "no categories: nothing to detect",
                     dataset_check.REFUSE)  # fmt: skip

    checks = _Entries(path, "videos", findings)
    vids = data["videos"]
    ok = [checks.fields(i, v, {"id": _is_int, "name": _is_str}) for i, v in enumerate(vids)]
    video_index = checks.unique_ids(vids, ok)

    checks = image_checks = _Entries(path, "images", findings)
    imgs = data["images"]
    required = {"id": _is_int, "file_name": _is_str, "video_id": _is_int, "frame_id": _is_int,
                "width": _is_int, "height": _is_int}  # fmt: skip
    ok = [checks.fields(i, im, required) for i, im in enumerate(imgs)]
    for i, im in enumerate(imgs):
        if not ok[i]:
            continue
        if im["video_id"] not in video_index:
            checks.refuse(i, im, f"video_id {im['video_id']} is not defined in 'videos'")
            ok[i] = False
        elif im["width"] <= 0 or im["height"] <= 0:
            checks.refuse(i, im, f"size {im['width']}x{im['height']} is not positive")
            ok[i] = False
        elif im["frame_id"] < 0:
            checks.refuse(i, im, f"frame_id {im['frame_id']} is negative")
            ok[i] = False
        elif check_images and not (root / im["file_name"]).is_file():
            checks.refuse(i, im, f"image {root / im['file_name']} does not exist")
            ok[i] = False
    image_index = checks.unique_ids(imgs, ok)
    frames_of: dict[int, list[int]] = collections.defaultdict(list)
    by_frame: dict[tuple[int, int], int] = {}
    for i in image_index.values():
        im = imgs[i]
        key = (im["video_id"], im["frame_id"])
        if key in by_frame:
            checks.refuse(i, im, f"frame_id {im['frame_id']} of video {im['video_id']} is also "
                                 f"images[{by_frame[key]}]")  # fmt: skip
            continue
        by_frame[key] = i
        frames_of[im["video_id"]].append(i)

    checks = _Entries(path, "annotations", findings)
    anns = data["annotations"]
    required = {"id": _is_int, "image_id": _is_int, "category_id": _is_int, "bbox": _is_box}
    ok = [checks.fields(i, a, required) for i, a in enumerate(anns)]
    checks.unique_ids(anns, ok)
    objects_of: dict[int, list[ilsvrc.Object]] = collections.defaultdict(list)
    for i, a in enumerate(anns):
        if not ok[i]:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        if a["image_id"] not in image_index:
            checks.refuse(i, a, f"image_id {a['image_id']} is not defined in 'images'")
        elif a["category_id"] not in label_of:
            defined = ", ".join(str(c) for c in category_ids)
            checks.refuse(i, a, f"category_id {a['category_id']} is not defined in "
                                f"'categories' ({defined})")  # fmt: skip
        elif w < 0 or h < 0:
            checks.refuse(i, a, f"bbox {a['bbox']} has a negative size (bbox is [x, y, w, h])")
        elif "instance_id" in a and not _is_int(a["instance_id"]):
            checks.refuse(i, a, f"instance_id {a['instance_id']!r} is not an integer")
        else:
            instance = a.get("instance_id")
            objects_of[a["image_id"]].append(
                ilsvrc.Object(
                    wnid=class_names[label_of[a["category_id"]]],
                    label=label_of[a["category_id"]],
                    x1=x,
                    y1=y,
                    x2=x + w,
                    y2=y + h,  # fmt: skip
                    # An annotation without an instance id is a track of its own.
                    track_id=int(instance) if instance is not None else -1 - i,
                    occluded=bool(a.get("occluded", False)),
                    generated=bool(a.get("generated", False)),
                    crowd=bool(a.get("iscrowd", 0)),
                )
            )

    videos, annotations = [], []
    for vid_ident in sorted(video_index, key=video_index.get):
        entries = sorted(frames_of.get(vid_ident, []), key=lambda i: imgs[i]["frame_id"])
        if not entries:
            continue  # a video without images has nothing to evaluate or train on
        video = Video(
            video_id=vids[video_index[vid_ident]]["name"],
            frames=tuple(f"{imgs[i]['frame_id']:06d}" for i in entries),
            files=tuple(imgs[i]["file_name"] for i in entries),
            image_ids=tuple(imgs[i]["id"] for i in entries),
            image_root=os.fspath(root),
            json_path=os.fspath(path),
            entries=tuple(entries),
            sample_frames=ilsvrc.even_sample_frames(len(entries)),
        )
        sizes = [(imgs[i]["width"], imgs[i]["height"]) for i in entries]
        odd = next((k for k, size in enumerate(sizes) if size != sizes[0]), None)
        if odd is not None:
            (w0, h0), (w, h) = sizes[0], sizes[odd]
            image_checks.refuse(
                entries[odd], imgs[entries[odd]],
                f"its size {w}x{h} differs from the first frame's of video {vid_ident} "
                f"({w0}x{h0}); the frames of a video must have one size",
            )  # fmt: skip
        videos.append(video)
        annotations.append(tuple(
            ilsvrc.Annotation(imgs[i]["width"], imgs[i]["height"],
                              tuple(objects_of.get(imgs[i]["id"], ())), imgs[i]["file_name"])
            for i in entries
        ))  # fmt: skip
    names = [v.video_id for v in videos]
    if len(set(names)) != len(names):
        first = next(n for n in names if names.count(n) > 1)
        findings.add(
            path, "videos_invalid", f"two videos are named {first!r}", dataset_check.REFUSE
        )
    return Dataset(
        json_path=os.fspath(path),
        image_root=os.fspath(root),
        category_ids=category_ids,
        class_names=class_names,
        videos=tuple(videos),
        annotations=tuple(annotations),
    )


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def load(json_path: PathLike, image_root: PathLike, *, check_images: bool = True) -> Dataset:
    """`read`, strict: the first problem raises CocoVidFormatError naming its JSON entry (and
    how many more there are)."""
    findings = dataset_check.Findings()
    dataset = read(json_path, image_root, findings, check_images=check_images)
    refused = findings.refusals()
    if refused:
        more = f" (and {len(refused) - 1} more problems)" if len(refused) > 1 else ""
        raise CocoVidFormatError(refused[0].file, refused[0].problem + more)
    return dataset


_CACHE: dict[tuple[str, str, float, int], Dataset] = {}


def load_cached(json_path: PathLike, image_root: PathLike) -> Dataset:
    """`load`, remembered per (file, root, modification time, size): evaluation reads the same
    split's file several times per job."""
    path = os.path.abspath(os.fspath(json_path))
    try:
        stat = os.stat(path)
        key = (path, os.path.abspath(os.fspath(image_root)), stat.st_mtime, stat.st_size)
    except OSError:
        return load(json_path, image_root)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = load(json_path, image_root)
    return _CACHE[key]


def split_dataset(source: Source, split: str) -> Dataset:
    """The split's dataset of a configured source (strict, cached)."""
    return load_cached(source.json_for(split), source.image_root)


def class_names(source: Source) -> tuple[str, ...]:
    """The dataset's classes: the train file's categories; the val file must list the same
    ones (a model's class count and the scored classes are one list)."""
    names = None
    for split in ("train", "val"):
        path = {"train": source.train_json, "val": source.val_json}[split]
        if not path:
            continue
        data = _read_json(pathlib.Path(path))
        cats = {}
        for c in data["categories"]:
            if isinstance(c, dict) and _is_int(c.get("id")) and _is_str(c.get("name")):
                cats.setdefault(c["id"], c["name"])
        these = (tuple(sorted(cats)), tuple(cats[k] for k in sorted(cats)))
        if names is None:
            names = these
        elif these != names:
            raise CocoVidFormatError(
                path, f"its categories {list(these[1])} differ from the train file's "
                f"{list(names[1])} (ids {list(names[0])}); both splits need one class list",
            )  # fmt: skip
    if names is None:
        raise CocoVidFormatError("data.train_json", "no COCO-VID file configured")
    return names[1]


def check(
    source: Source, *, findings: dataset_check.Findings | None = None, decode: bool = True
) -> tuple[dataset_check.Findings, dict[str, str]]:
    """Every problem of the configured splits' files and images (`main.py --mode=check`):
    the JSON entries, then each frame's image as the builder reads it (decode: decode every
    JPEG) and its size against the entry's width / height. Returns (findings, what was
    scanned)."""
    findings = findings if findings is not None else dataset_check.Findings()
    scanned: dict[str, str] = {}
    for split, path in (("train", source.train_json), ("val", source.val_json)):
        if not path:
            continue
        try:
            dataset = read(path, source.image_root, findings)
        except CocoVidFormatError as e:
            findings.add(e.file, "json_invalid", e.problem, dataset_check.REFUSE)
            scanned[split] = "not read"
            continue
        for video, anns in zip(dataset.videos, dataset.annotations, strict=True):
            for t in range(video.num_frames):
                image = dataset_check.read_image(
                    video.image_path(None, t), findings, decode=decode, header_only=not decode,
                    action=dataset_check.REFUSE,
                )  # fmt: skip
                if image is not None and (image.width, image.height) != (
                    anns[t].width,
                    anns[t].height,
                ):
                    findings.add(
                        video.annotation_path(None, t), "images_size_differs",
                        f"width x height {anns[t].width}x{anns[t].height} differs from the "
                        f"image's {image.width}x{image.height}; boxes are scaled to the image",
                        dataset_check.FIX,
                    )  # fmt: skip
        scanned[split] = (f"{len(dataset.videos)} videos, {dataset.num_frames} frames, "
                          f"{dataset.num_classes} classes")  # fmt: skip
    try:
        class_names(source)
    except CocoVidFormatError as e:
        findings.add(e.file, "categories_differ", e.problem, dataset_check.REFUSE)
    return findings, scanned
