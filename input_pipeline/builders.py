"""TFDS builders for ImageNet VID (`imagenet_vid`) and DET restricted to the 30 VID classes
(`imagenet_det_vid30`), built from a local ILSVRC2015 folder (`manual_dir`); no network.

Storage: array_record, one example per frame (VID) or image (DET), written in the official order
(shuffling disabled), so `tfds.data_source` gives random access to any frame. Each split's video
table (first record, length, sampled frames per video) and the build report (counts of every
clean-up) go to the dataset's metadata.json; `input_pipeline.pipeline` reads them to find the
frames of a video without scanning the records.

Features (TFDS conventions): `image` (encoded JPEG, 3 channels), `objects/bbox` (tfds BBox,
normalised ymin, xmin, ymax, xmax: the XML's inclusive pixel coordinates divided by the image
height/width, so `raw_pixel_boxes` recovers them exactly), `objects/label` (0..29),
VID only: `objects/track_id`, `objects/occluded`, `objects/generated`, `video_id`,
`frame_index`, `num_frames`; both: `width`, `height` (original size); DET: `image_id`.

Build with `prepare(name, manual_dir, data_dir)` or `tfds.builder(name, data_dir=...)` and
`download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import classes, dataset_check, ilsvrc
from ssvd_jax import locks
from ssvd_jax.errors import UserError
from ssvd_jax.files import atomic_write_json

log = logging.getLogger(__name__)

_MANUAL = """\
Unpack the official ILSVRC2015 download (ILSVRC2015_VID.tar.gz, and ILSVRC2015_DET for DET) and
pass its root, the folder holding Data/, Annotations/ and (optionally) ImageSets/, as manual_dir:
  ROOT/Data/VID/{train,val}/...  ROOT/Annotations/VID/{train,val}/...
  ROOT/Data/DET/train/...        ROOT/Annotations/DET/train/...
  ROOT/ImageSets/VID_train_15frames.txt, VID_val_videos.txt, VID_val_frames.txt,
  DET_train_30classes.txt (optional; followed when present)
`python -m input_pipeline.synthetic --out ROOT` writes a small synthetic dataset in this layout.
"""

# Spread the integer keys over the shuffler's 128-bit key space: with shuffling disabled TFDS
# writes in key order, and well-spread keys keep its temporary buckets small (consecutive
# small keys would all land in one bucket, which is read back into memory at once).
_KEY_SPACE = 2**128 - 1


def _spread_keys(total: int) -> int:
    return _KEY_SPACE // max(total, 1)


def normalized_bbox(obj: ilsvrc.Object, width: int, height: int) -> np.ndarray:
    """tfds BBox value (ymin, xmin, ymax, xmax) of an inclusive pixel box, divided by H/W."""
    return np.array(
        [obj.y1 / height, obj.x1 / width, obj.y2 / height, obj.x2 / width], np.float64
    ).astype(np.float32)


def raw_pixel_boxes(bbox: Any, width: Any, height: Any) -> np.ndarray:
    """Original inclusive pixel boxes [N, 4] (x1, y1, x2, y2) int32 from a TFDS example.

    `bbox` is `objects/bbox` [N, 4] (normalised ymin, xmin, ymax, xmax, float32), `width` and
    `height` the example's original size. The builders store coordinate / size in float32, whose
    error (< 2**-24 relative) is far below half a pixel, so rounding recovers the integers exactly.
    """
    bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
    scale = np.array([float(height), float(width), float(height), float(width)])
    yxyx = np.rint(bbox * scale).astype(np.int32)
    return yxyx[:, [1, 0, 3, 2]]


def _log_report(name: str, split: str, counts: collections.Counter) -> None:
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing to report"
    log.info("%s/%s build report: %s", name, split, summary)


class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
    """Common set-up: array_record storage, fixed order, metadata, options."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL

    def __init__(
        self,
        *,
        use_lists: bool = True,
        verify_images: bool = True,
        file_format: str = "array_record",
        **kwargs: Any,
    ):
        # use_lists: follow ImageSets list files when present; verify_images: decode every
        # JPEG once at build time (catches corrupt files; costs ~2 ms per 720p frame).
        self._use_lists = use_lists
        self._verify_images = verify_images
        super().__init__(file_format=file_format, **kwargs)

    def _metadata(self) -> tfds.core.MetadataDict:
        return tfds.core.MetadataDict()

    def _set_split_metadata(self, split: str, **values: Any) -> None:
        self.info.metadata.setdefault("splits", {})[split] = values

    def _set_video_table(self, split: str, videos: Any) -> None:
        """A video split's table (`pipeline.open_table` reads it): each video's id, first
        record, length and the frames sampled for training."""
        starts = np.cumsum([0] + [v.num_frames for v in videos])
        self._set_split_metadata(
            split,
            video_ids=[v.video_id for v in videos],
            starts=[int(s) for s in starts[:-1]],
            num_frames=[v.num_frames for v in videos],
            sample_frames=[list(v.sample_frames) for v in videos],
        )


class ImagenetVid(_LocalBuilder):
    """ImageNet VID (ILSVRC2015), train and val: one example per frame, in video order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the local ILSVRC2015 folder; array_record."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="ImageNet VID (ILSVRC2015) frames with boxes, labels and track ids.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "video_id": tfds.features.Text(),
                    "frame_index": np.int32,
                    "num_frames": np.int32,
                    "width": np.int32,
                    "height": np.int32,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=classes.CLASS_NAMES),
                            "track_id": np.int32,
                            "occluded": np.bool_,
                            "generated": np.bool_,
                        }
                    ),
                }
            ),
            homepage="https://image-net.org/challenges/LSVRC/2015/",
            disable_shuffling=True,
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = dl_manager.manual_dir
        generators = {}
        for split in ("train", "val"):
            counts: collections.Counter = collections.Counter()
            videos = ilsvrc.list_vid_videos(root, split, use_lists=self._use_lists, counts=counts)
            if not videos:
                log.warning(
                    "imagenet_vid: no videos under %s/Data/VID/%s; split %r left empty (not "
                    "written)",
                    root,
                    split,
                    split,
                )
                continue
            self._set_video_table(split, videos)
            generators[split] = self._generate_examples(root, split, videos, counts)
        return generators

    def _generate_examples(
        self, root: os.PathLike, split: str, videos: list[ilsvrc.Video], counts: collections.Counter
    ) -> Iterator[tuple[int, dict]]:
        stride = _spread_keys(sum(v.num_frames for v in videos))
        # Every file changed or left out is named in the log; a refusal stops the build.
        findings = dataset_check.Findings(counts, log_them=True)
        index = 0
        for video in videos:
            frames = dataset_check.video_frames(
                pathlib.Path(root), video, findings, decode=self._verify_images
            )
            for frame in itertools.chain(frames, [None]):
                findings.raise_if_refused()
                if frame is None:
                    break
                i, objects = frame.index, frame.objects
                data, width, height = frame.image.data, frame.image.width, frame.image.height
                counts["frames"] += 1
                counts["boxes"] += len(objects)
                yield (
                    index * stride,
                    {
                        "image": data,
                        "video_id": video.video_id,
                        "frame_index": i,
                        "num_frames": video.num_frames,
                        "width": width,
                        "height": height,
                        "objects": {
                            "bbox": [normalized_bbox(o, width, height) for o in objects],
                            "label": [o.label for o in objects],
                            "track_id": [o.track_id for o in objects],
                            "occluded": [o.occluded for o in objects],
                            "generated": [o.generated for o in objects],
                        },
                    },
                )
                index += 1
        _log_report("imagenet_vid", split, counts)
        self.info.metadata.setdefault("build_report", {})[split] = dict(counts)


class ImagenetDetVid30(_LocalBuilder):
    """ImageNet DET train restricted to the 30 VID classes (other objects dropped)."""

    name = "imagenet_det_vid30"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from the local ILSVRC2015 folder; array_record."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="ImageNet DET train images with objects of the 30 ImageNet VID classes.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "image_id": tfds.features.Text(),
                    "width": np.int32,
                    "height": np.int32,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=classes.CLASS_NAMES),
                        }
                    ),
                }
            ),
            homepage="https://image-net.org/challenges/LSVRC/2015/",
            disable_shuffling=True,
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        root = dl_manager.manual_dir
        counts: collections.Counter = collections.Counter()
        image_ids = ilsvrc.list_det_images(root, use_lists=self._use_lists, counts=counts)
        if not image_ids:
            log.warning(
                "imagenet_det_vid30: no images under %s/Data/DET/train; split 'train' left "
                "empty (not written)",
                root,
            )
            return {}
        # The image list of the split is only known after reading the XMLs (images without a
        # VID-class object are dropped), so the scan happens here, before writing.
        findings = dataset_check.Findings(counts, log_them=True)
        entries = []
        for image_id in image_ids:
            entry = dataset_check.det_entry(pathlib.Path(root), image_id, findings)
            if entry is not None:
                entries.append((image_id, *entry))
        findings.raise_if_refused()
        return {"train": self._generate_examples(root, entries, findings)}

    def _generate_examples(
        self, root: os.PathLike, entries: list, findings: dataset_check.Findings
    ) -> Iterator[tuple[int, dict]]:
        counts = findings.counts
        stride = _spread_keys(len(entries))
        image_ids, labels_per_image = [], []
        for image_id, ann, objects in entries:
            # A still image can be left out (undecodable, no box left) without breaking
            # anything else, unlike a video frame, whose neighbours' indices depend on it.
            kept = dataset_check.det_image(
                pathlib.Path(root), image_id, ann, objects, findings, decode=self._verify_images
            )
            if kept is None:
                continue
            image, objects = kept
            data, width, height = image.data, image.width, image.height
            counts["images"] += 1
            counts["boxes"] += len(objects)
            yield (
                len(image_ids) * stride,
                {
                    "image": data,
                    "image_id": image_id,
                    "width": width,
                    "height": height,
                    "objects": {
                        "bbox": [normalized_bbox(o, width, height) for o in objects],
                        "label": [o.label for o in objects],
                    },
                },
            )
            image_ids.append(image_id)
            labels_per_image.append(sorted({o.label for o in objects}))
        # Record i of the split is image_ids[i]; labels[i] lists its classes (for the per-class
        # cap of the still-image sampler).
        self._set_split_metadata("train", image_ids=image_ids, labels=labels_per_image)
        _log_report("imagenet_det_vid30", "train", counts)
        self.info.metadata.setdefault("build_report", {})["train"] = dict(counts)


class CocoVid(_LocalBuilder):
    """A user's COCO-VID dataset (`input_pipeline.cocovid`), train and val, stored as
    `imagenet_vid` is (one example per frame, in video order; the same video table in the
    metadata), with the dataset's own classes: `objects/label` is the 0-based class (the
    categories ordered by id), the class names and category ids are in the metadata. Crowd
    boxes are no target and are left out; boxes are clipped to the image as for VID."""

    name = "cocovid"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Built from a COCO-VID JSON file per split; array_record."}

    def __init__(self, *, source: Any = None, **kwargs: Any):
        self._source = source  # a cocovid.Source; only needed to build
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Video frames with boxes, class labels and track ids from COCO-VID JSON.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "video_id": tfds.features.Text(),
                    "image_id": np.int64,
                    "frame_index": np.int32,
                    "num_frames": np.int32,
                    "width": np.int32,
                    "height": np.int32,
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": np.int32,  # the dataset's classes: names in metadata
                            "track_id": np.int64,
                            "occluded": np.bool_,
                            "generated": np.bool_,
                        }
                    ),
                }
            ),
            disable_shuffling=True,
            metadata=self._metadata(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        from input_pipeline import cocovid

        generators = {}
        for split in ("train", "val"):
            path = {"train": self._source.train_json, "val": self._source.val_json}[split]
            if not path:
                continue
            dataset = cocovid.load(path, self._source.image_root)
            self.info.metadata["class_names"] = list(dataset.class_names)
            self.info.metadata["category_ids"] = list(dataset.category_ids)
            self._set_video_table(split, dataset.videos)
            generators[split] = self._generate_examples(split, dataset)
        return generators

    def _generate_examples(self, split: str, dataset: Any) -> Iterator[tuple[int, dict]]:
        counts: collections.Counter = collections.Counter()
        findings = dataset_check.Findings(counts, log_them=True)
        stride = _spread_keys(dataset.num_frames)
        index = 0
        for video, anns in zip(dataset.videos, dataset.annotations, strict=True):
            for t, ann in enumerate(anns):
                image = dataset_check.read_image(
                    video.image_path(None, t), findings, decode=self._verify_images,
                    header_only=False, action=dataset_check.REFUSE,
                )  # fmt: skip
                findings.raise_if_refused()
                width, height = image.width, image.height
                objects = [o for o in ann.objects if not o.crowd]
                counts["boxes_crowd_left_out"] += len(ann.objects) - len(objects)
                if (width, height) != (ann.width, ann.height):
                    sx, sy = width / ann.width, height / ann.height
                    objects = [dataclasses.replace(o, x1=o.x1 * sx, x2=o.x2 * sx, y1=o.y1 * sy,
                                                   y2=o.y2 * sy) for o in objects]  # fmt: skip
                    counts["images_size_differs"] += 1
                objects = ilsvrc.sanitize_objects(objects, width, height, counts)
                counts["frames"] += 1
                counts["boxes"] += len(objects)
                yield (
                    index * stride,
                    {
                        "image": image.data,
                        "video_id": video.video_id,
                        "image_id": video.image_ids[t],
                        "frame_index": t,
                        "num_frames": video.num_frames,
                        "width": width,
                        "height": height,
                        "objects": {
                            "bbox": [normalized_bbox(o, width, height) for o in objects],
                            "label": [o.label for o in objects],
                            "track_id": [o.track_id for o in objects],
                            "occluded": [o.occluded for o in objects],
                            "generated": [o.generated for o in objects],
                        },
                    },
                )
                index += 1
        _log_report("cocovid", split, counts)
        self.info.metadata.setdefault("build_report", {})[split] = dict(counts)


BUILDERS = {"imagenet_vid": ImagenetVid, "imagenet_det_vid30": ImagenetDetVid30, "cocovid": CocoVid}


# Written into a built dataset's folder: what it was built from (`build_source`).
SOURCE_FILE = "ssvd_built_from.json"


class DatasetCacheError(UserError):
    """A built dataset in data_dir was built from another ILSVRC folder (or other lists, or
    another builder version) than the one asked for; the problem says what to remove."""


def _list_files(name: str, root: pathlib.Path, use_lists: bool) -> dict[str, str]:
    """{list file relative to root: sha256} of the list files the builder `name` follows."""
    if not use_lists:
        return {}
    names = {
        "imagenet_vid": (ilsvrc.VID_TRAIN_LIST, *ilsvrc.VID_VAL_FRAMES_LISTS,
                         ilsvrc.VID_VAL_VIDEOS_LIST),
        "imagenet_det_vid30": (ilsvrc.DET_TRAIN_LIST,),
    }[name]  # fmt: skip
    out = {}
    for list_name in names:
        path = ilsvrc.find_list_file(root, list_name)
        if path is not None:
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def build_source(
    builder: tfds.core.DatasetBuilder, manual_dir: os.PathLike | str, use_lists: bool
) -> dict[str, Any]:
    """What a build of `builder` from `manual_dir` depends on: the ILSVRC folder (absolute,
    and relative to the dataset folder, so that moving a workdir that holds both keeps the
    match), the list files it follows (by content) and the builder's version."""
    root = pathlib.Path(os.path.realpath(manual_dir))
    return {
        "root": str(root),
        "root_relative": os.path.relpath(root, os.path.realpath(builder.data_dir)),
        "lists": _list_files(builder.name, root, use_lists),
        "builder": f"{builder.name}:{builder.version}",
    }


def _source_differences(built: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    out = []
    same_root = built.get("root") == wanted["root"]
    if not same_root and built.get("root_relative") != wanted["root_relative"]:
        out.append(f"it was built from {built.get('root')}, data.root is now {wanted['root']}")
    lists = built.get("lists", {})
    changed = sorted(
        k for k in set(lists) | set(wanted["lists"]) if lists.get(k) != wanted["lists"].get(k)
    )
    if changed:
        out.append(f"the list files {', '.join(changed)} differ from the ones it was built with")
    if built.get("builder") != wanted["builder"]:
        out.append(f"it was built by {built.get('builder')}, this is {wanted['builder']}")
    return out


def prepare(
    name: str,
    manual_dir: os.PathLike | str,
    data_dir: os.PathLike | str,
    *,
    use_lists: bool = True,
    verify_images: bool = True,
) -> tfds.core.DatasetBuilder:
    """Build (or reuse) dataset `name` from the ILSVRC root `manual_dir` into `data_dir`.

    A build is reused only if it was built from the same folder, list files and builder
    version (recorded in its folder as `SOURCE_FILE`); otherwise DatasetCacheError names the
    folder to remove. Before building, the builder's checks run over the folder's image
    headers and XML (`dataset_check`), so a folder it would refuse is refused before anything
    is written, naming the file. Concurrent prepares of one data_dir wait for each other (a
    file lock). No network access: the builders only read manual_dir, and GCS lookups are
    switched off. Returns the builder, ready for `as_data_source`.
    """
    root = dataset_check.require_ilsvrc_root(manual_dir)
    lock = os.path.join(os.fspath(data_dir), f".{name}.build.lock")

    def waiting(holder: dict) -> None:
        log.info("%s: waiting for the build of pid %s to finish", name, holder.get("pid", "?"))

    with locks.file_lock(lock, wait=True, on_wait=waiting):
        builder = BUILDERS[name](
            data_dir=os.fspath(data_dir), use_lists=use_lists, verify_images=verify_images
        )
        wanted = build_source(builder, root, use_lists)
        stamp = os.path.join(builder.data_dir, SOURCE_FILE)
        if builder.is_prepared():
            if not os.path.exists(stamp):
                log.warning(
                    "%s: built before its source was recorded; taking it as built from %s",
                    builder.data_dir, root,
                )  # fmt: skip
                atomic_write_json(stamp, wanted)
            else:
                with open(stamp) as f:
                    differences = _source_differences(json.load(f), wanted)
                if differences:
                    raise DatasetCacheError(
                        builder.data_dir,
                        "; ".join(differences) + f". Remove {builder.data_dir} to build it "
                        "again from data.root (or set data.tfds_dir to another folder)",
                    )
            return builder
        datasets = ("vid",) if name == "imagenet_vid" else ("det",)
        report = dataset_check.check_root(
            root, datasets=datasets, use_lists=use_lists, decode=False, header_only=True
        )
        report.findings.raise_if_refused(
            f"; python main.py --mode=check --config.data.root={root} lists every problem"
        )
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(root),
                try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP,
            ),
        )
        atomic_write_json(stamp, wanted)
    return builder


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def prepare_cocovid(
    source: Any, data_dir: os.PathLike | str, *, verify_images: bool = True
) -> tfds.core.DatasetBuilder:
    """Build (or reuse) the `cocovid` dataset of `source` (a `cocovid.Source`) into
    `data_dir`, as `prepare` does for ILSVRC: reused only when built from the same JSON files
    (by content), image root and builder version; the files are checked first (every entry,
    every image's header), so a dataset the build would refuse is refused before anything is
    written, naming the JSON entry."""
    from input_pipeline import cocovid

    lock = os.path.join(os.fspath(data_dir), ".cocovid.build.lock")
    with locks.file_lock(lock, wait=True):
        builder = CocoVid(data_dir=os.fspath(data_dir), source=source,
                          verify_images=verify_images)  # fmt: skip
        root = os.path.realpath(source.image_root)
        wanted = {
            "root": root,
            "root_relative": os.path.relpath(root, os.path.realpath(builder.data_dir)),
            "lists": {split: _file_digest(path) for split, path in
                      (("train", source.train_json), ("val", source.val_json)) if path},
            "builder": f"{builder.name}:{builder.version}",
        }  # fmt: skip
        stamp = os.path.join(builder.data_dir, SOURCE_FILE)
        if builder.is_prepared() and os.path.exists(stamp):
            with open(stamp) as f:
                differences = _source_differences(json.load(f), wanted)
            if not differences:
                return builder
            raise DatasetCacheError(
                builder.data_dir,
                "; ".join(differences).replace("list files", "COCO-VID files")
                + f". Remove {builder.data_dir} to build it again (or set data.tfds_dir to "
                "another folder)",
            )
        findings, _ = cocovid.check(source, decode=False)
        findings.raise_if_refused("; python main.py --mode=check lists every problem")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=root,
                try_download_gcs=False,
                compute_stats=tfds.download.ComputeStatsMode.SKIP,
            ),
        )
        atomic_write_json(stamp, wanted)
    return builder
