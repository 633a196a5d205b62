"""Convert an ImageNet VID (ILSVRC2015) split to one COCO-VID JSON file (mmtracking's format).

  python -m input_pipeline.convert_ilsvrc_to_cocovid --root ROOT --split val --out val.json

The file (one JSON object, written atomically):

  videos:      [{id, name}]                         one per ILSVRC snippet; name = the ILSVRC
                                                    video id ('val/ILSVRC2015_val_00000000')
  images:      [{id, file_name, video_id, frame_id, width, height}]
  annotations: [{id, image_id, category_id, instance_id, bbox, area, iscrowd, occluded,
                 generated}]
  categories:  [{id, name, encode_name}]            encode_name = the WordNet id

Image paths: `file_name` is `<video name>/<frame stem>.JPEG`, relative to the image root
ROOT/Data/VID (the reader is given that folder, not ROOT).

Numbering (the choices that keep the file interchangeable with the ILSVRC tools):
* Videos follow `ilsvrc.list_vid_videos(root, split, use_lists=True)`: the official list files
  under ROOT/ImageSets when present (VID_val_frames.txt / VID_val_all.txt / VID_val_videos.txt
  for val, VID_train_15frames.txt for train), else the sorted snippet folders. Video ids are
  1..V in that order. This is the order `ssvd_jax.evaluation.score.evaluation_videos` uses
  when ROOT/Data/VID/<split> exists, so
* image ids are the global 1-based frame ids of the split (1..N over the videos in order, frames
  in order): the frame ids of a devkit result file (`<frame id> <class> <score> x1 y1 x2 y2`)
  ARE the image ids. `frame_id` is the 0-based index of the frame within its video (its position
  among the listed frames: a VID_val_videos.txt start offset is not added).
* width / height are the XML's <size>; a frame without an XML file gets the JPEG's own size.
* bbox is [x1, y1, x2 - x1, y2 - y1] of the XML's inclusive integer corners, so x + w and y + h
  give back the XML's x2, y2 exactly; area = w * h. The ILSVRC "+1" pixel convention belongs to
  the evaluation rule, not to the file (mmtracking's converter does the same).
* instance_id: one per (video, XML <trackid>), unique over the file, numbered from 1 in order of
  first appearance (an object without a <trackid> gets an instance of its own).
* annotation ids are 1..A in file order (videos, frames, the XML's object order).
* categories: by default all 30 VID classes, id = the 1-based VID label (1 = airplane), as in
  the devkit's result files. `classes` chooses and renames them instead (see `convert`).

An object whose WordNet id is not one of the chosen classes (by default: not a VID class) stops
the conversion with IlsvrcFormatError naming its XML file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from input_pipeline import classes as vid_classes
from input_pipeline import ilsvrc
from ssvd_jax import files
from ssvd_jax.errors import UserError

PathLike = str | os.PathLike

PRESENT = "present"  # `classes=PRESENT`: only the VID classes that occur in the split


def _wnid_of(name: str) -> str:
    """A VID class given by WordNet id or by name -> its WordNet id."""
    if name in vid_classes.WNID_TO_LABEL:
        return name
    if name in vid_classes.NAME_TO_LABEL:
        return vid_classes.WNIDS[vid_classes.NAME_TO_LABEL[name]]
    raise UserError("classes", f"{name!r} is not a VID class name or WordNet id")


def category_table(
    classes: Sequence[str] | Mapping[str, str] | None, present: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The `categories` list for a `classes` choice (see `convert`); `present` are the WordNet
    ids that occur, used by `classes=PRESENT`."""
    if classes is None:
        return [
            {"id": label + 1, "name": name, "encode_name": wnid}
            for label, (name, wnid) in enumerate(
                zip(vid_classes.CLASS_NAMES, vid_classes.WNIDS, strict=True)
            )
        ]
    if isinstance(classes, str):
        if classes != PRESENT:
            raise UserError("classes", f"{classes!r}: expected {PRESENT!r}, a list or a mapping")
        chosen = sorted(set(present), key=vid_classes.WNID_TO_LABEL.__getitem__)
        renamed = {w: vid_classes.CLASS_NAMES[vid_classes.WNID_TO_LABEL[w]] for w in chosen}
    elif isinstance(classes, Mapping):
        renamed = {_wnid_of(k): str(v) for k, v in classes.items()}
        if len(renamed) != len(classes):
            raise UserError("classes", "a VID class is given twice (by name and WordNet id)")
    else:
        renamed = {}
        for name in classes:
            wnid = _wnid_of(name)
            if wnid in renamed:
                raise UserError("classes", f"{name!r} is given twice")
            renamed[wnid] = vid_classes.CLASS_NAMES[vid_classes.WNID_TO_LABEL[wnid]]
    names = list(renamed.values())
    if any(not n.strip() for n in names):
        raise UserError("classes", "a category name is empty")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError("classes", f"category name {dup!r} is given twice")
    return [
        {"id": i, "name": name, "encode_name": wnid}
        for i, (wnid, name) in enumerate(renamed.items(), 1)
    ]


def _frame_size(root: pathlib.Path, video: ilsvrc.Video, index: int) -> tuple[int, int]:
    _, width, height, _ = ilsvrc.load_image(video.image_path(root, index), verify=False)
    return width, height


def convert(
    root: PathLike,
    split: str,
    *,
    classes: Sequence[str] | Mapping[str, str] | str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The COCO-VID dataset (a dict, see the module docstring) of ROOT's VID `split`.

    `classes`:
    * None: all 30 VID classes, category id = 1-based VID label, VID names.
    * "present": only the VID classes that occur in the split, ids 1..C in VID label order.
    * a sequence of VID class names or WordNet ids: those, ids 1..C in that order.
    * a mapping {VID class name or WordNet id: new name}: those, renamed, ids 1..C in the
      mapping's order (how the synthetic generator names its classes 'drone', 'kite', ...).
    In all cases `encode_name` is the class's WordNet id.

    Raises IlsvrcFormatError when the split has no videos, or naming the XML file of an object
    whose WordNet id is not among the classes (or that is malformed).
    """
    root = pathlib.Path(root)
    videos = ilsvrc.list_vid_videos(root, split, use_lists=True)
    if not videos:
        raise ilsvrc.IlsvrcFormatError(
            root / "Data" / "VID" / split, f"no {split} videos (no JPEG frames under it)"
        )
    out_videos: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    # (image id, XML path, object) of every object; categories are fixed after reading them all
    # (classes="present" needs the classes that occur).
    objects: list[tuple[int, pathlib.Path, int, ilsvrc.Object]] = []
    instances: dict[tuple[int, int], int] = {}
    next_instance = 1
    image_id = 0
    for video_index, video in enumerate(videos, 1):
        out_videos.append({"id": video_index, "name": video.video_id})
        annotations = ilsvrc.read_video_annotations(root, video)
        for t, (stem, ann) in enumerate(zip(video.frames, annotations, strict=True)):
            image_id += 1
            if ann is None:
                width, height = _frame_size(root, video, t)
            else:
                width, height = ann.width, ann.height
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{video.video_id}/{stem}.JPEG",
                    "video_id": video_index,
                    "frame_id": t,
                    "width": width,
                    "height": height,
                }
            )
            for obj in ann.objects if ann is not None else ():
                if obj.track_id < 0:  # no <trackid>: an instance of its own
                    instance = next_instance
                    next_instance += 1
                else:
                    instance = instances.get((video_index, obj.track_id), 0)
                    if not instance:
                        instance = instances[(video_index, obj.track_id)] = next_instance
                        next_instance += 1
                objects.append((image_id, video.annotation_path(root, t), instance, obj))
    for _, path, _, obj in objects:
        if obj.label is None:
            raise ilsvrc.IlsvrcFormatError(
                path, f"object class {obj.wnid!r} is not one of the 30 ImageNet VID classes"
            )
    categories = category_table(classes, present=[obj.wnid for _, _, _, obj in objects])
    category_of = {c["encode_name"]: c["id"] for c in categories}
    out_annotations = []
    for ann_id, (img, path, instance, obj) in enumerate(objects, 1):
        category = category_of.get(obj.wnid)
        if category is None:
            name = vid_classes.CLASS_NAMES[obj.label]
            raise ilsvrc.IlsvrcFormatError(
                path, f"object class {obj.wnid!r} ({name}) is not among the chosen classes"
            )
        w, h = obj.x2 - obj.x1, obj.y2 - obj.y1
        out_annotations.append(
            {
                "id": ann_id,
                "image_id": img,
                "category_id": category,
                "instance_id": instance,
                "bbox": [obj.x1, obj.y1, w, h],
                "area": w * h,
                "iscrowd": 0,
                "occluded": obj.occluded,
                "generated": obj.generated,
            }
        )
    return {
        "videos": out_videos,
        "images": images,
        "annotations": out_annotations,
        "categories": categories,
    }


def write(dataset: Mapping[str, Any], out: PathLike) -> None:
    """Write a COCO-VID dataset to `out` atomically (compact JSON, streamed: the full VID train
    split is hundreds of MB of text)."""
    encoder = json.JSONEncoder(separators=(",", ":"))
    files.atomic_write_chunks(out, (*encoder.iterencode(dataset), "\n"))


def counts(dataset: Mapping[str, Any]) -> dict[str, int]:
    """{videos, images, annotations, categories}: how many of each the dataset holds."""
    keys = ("videos", "images", "annotations", "categories")
    return {k: len(dataset[k]) for k in keys}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="ILSVRC2015 root (holding Data/VID)")
    parser.add_argument("--split", default="val", help="VID split: train or val (default val)")
    parser.add_argument("--out", required=True, help="COCO-VID JSON file to write")
    parser.add_argument(
        "--classes",
        default=None,
        help="categories: all 30 VID classes (default), 'present' (those that occur), or a "
        "comma-separated list of VID class names / WordNet ids",
    )
    parser.add_argument(
        "--class-names",
        default=None,
        help="comma-separated new names for the --classes list, in its order",
    )
    args = parser.parse_args(argv)
    chosen: Sequence[str] | Mapping[str, str] | str | None = args.classes
    if args.classes not in (None, PRESENT):
        chosen = [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.class_names is not None:
        names = [c.strip() for c in args.class_names.split(",")]
        if not isinstance(chosen, list):
            parser.error("--class-names needs --classes as a list of VID classes")
        if len(names) != len(chosen):
            parser.error(f"--class-names gives {len(names)} names for {len(chosen)} classes")
        chosen = dict(zip(chosen, names, strict=True))
    try:
        dataset = convert(args.root, args.split, classes=chosen)
        write(dataset, args.out)
    except UserError as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
    n = counts(dataset)
    print(
        f"wrote {args.out}: {n['videos']} videos, {n['images']} images, "
        f"{n['annotations']} annotations, {n['categories']} categories"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
