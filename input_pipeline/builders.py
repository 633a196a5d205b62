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
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import classes, ilsvrc

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


def _image_for_storage(
    path: os.PathLike, counts: collections.Counter, verify: bool
) -> tuple[bytes, int, int]:
    data, width, height, fix = ilsvrc.load_image(path, verify=verify)
    if fix is not None:
        counts[f"images_{fix}"] += 1
        log.warning("%s: %s image converted to a 3-channel JPEG", path, fix)
    return data, width, height


def _check_size(
    ann: ilsvrc.Annotation, width: int, height: int, path: os.PathLike, counts: collections.Counter
) -> None:
    if (ann.width, ann.height) != (width, height):
        # Boxes are normalised by the real image size, which is what the pixels are in.
        counts["xml_size_mismatch"] += 1
        log.warning("%s: XML size %dx%d, image %dx%d", path, ann.width, ann.height, width, height)


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
            starts = np.cumsum([0] + [v.num_frames for v in videos])
            self._set_split_metadata(
                split,
                video_ids=[v.video_id for v in videos],
                starts=[int(s) for s in starts[:-1]],
                num_frames=[v.num_frames for v in videos],
                sample_frames=[list(v.sample_frames) for v in videos],
            )
            generators[split] = self._generate_examples(root, split, videos, counts)
        return generators

    def _generate_examples(
        self, root: os.PathLike, split: str, videos: list[ilsvrc.Video], counts: collections.Counter
    ) -> Iterator[tuple[int, dict]]:
        stride = _spread_keys(sum(v.num_frames for v in videos))
        index = 0
        for video in videos:
            for i in range(video.num_frames):
                image_path = video.image_path(root, i)
                data, width, height = _image_for_storage(image_path, counts, self._verify_images)
                xml_path = video.annotation_path(root, i)
                if xml_path.is_file():
                    ann = ilsvrc.parse_annotation(xml_path)
                    _check_size(ann, width, height, xml_path, counts)
                    objects = ann.objects
                else:
                    # Official tools treat a frame without XML as a frame without objects.
                    counts["frames_without_xml"] += 1
                    objects = ()
                for obj in objects:
                    if obj.label is None:
                        raise ilsvrc.IlsvrcFormatError(
                            xml_path, f"<name> {obj.wnid} is not one of the 30 VID classes"
                        )
                objects = ilsvrc.sanitize_objects(objects, width, height, counts)
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
        entries = []
        for image_id in image_ids:
            xml_path = ilsvrc.det_annotation_path(root, image_id)
            if not xml_path.is_file():
                counts["images_without_xml"] += 1
                counts["images_dropped_no_vid_object"] += 1
                continue
            ann = ilsvrc.parse_annotation(xml_path)
            kept = [o for o in ann.objects if o.label is not None]
            counts["objects_other_classes_dropped"] += len(ann.objects) - len(kept)
            if not kept:
                counts["images_dropped_no_vid_object"] += 1
                continue
            entries.append((image_id, ann, kept))
        return {"train": self._generate_examples(root, entries, counts)}

    def _generate_examples(
        self, root: os.PathLike, entries: list, counts: collections.Counter
    ) -> Iterator[tuple[int, dict]]:
        stride = _spread_keys(len(entries))
        image_ids, labels_per_image = [], []
        for image_id, ann, objects in entries:
            image_path = ilsvrc.det_image_path(root, image_id)
            try:
                data, width, height = _image_for_storage(image_path, counts, self._verify_images)
            except ilsvrc.IlsvrcFormatError as e:
                # A still image can be left out without breaking anything else (unlike a video
                # frame, whose neighbours' indices depend on it).
                counts["images_corrupt_dropped"] += 1
                log.warning("%s; image dropped", e)
                continue
            _check_size(ann, width, height, image_path, counts)
            objects = ilsvrc.sanitize_objects(objects, width, height, counts)
            if not objects:
                counts["images_dropped_no_vid_object"] += 1
                continue
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


BUILDERS = {"imagenet_vid": ImagenetVid, "imagenet_det_vid30": ImagenetDetVid30}


def prepare(
    name: str,
    manual_dir: os.PathLike | str,
    data_dir: os.PathLike | str,
    *,
    use_lists: bool = True,
    verify_images: bool = True,
) -> tfds.core.DatasetBuilder:
    """Build (or reuse) dataset `name` from the ILSVRC root `manual_dir` into `data_dir`.

    No network access: the builders only read manual_dir, and GCS lookups are switched off.
    Returns the builder, ready for `as_data_source`.
    """
    builder = BUILDERS[name](
        data_dir=os.fspath(data_dir), use_lists=use_lists, verify_images=verify_images
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(manual_dir),
            try_download_gcs=False,
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
        ),
    )
    return builder
