"""tf.data pipelines over the built datasets: phase-2 training clips and phase-1 still images.

Every function takes explicit numbers (sizes, K, max_boxes, seed, batch dims, mean) as required
keyword arguments; none reads a config (`input_pipeline.train_data` does). Records are read by
index from the array_record files (`tfds` data sources), decoded and augmented with cv2 inside
`tf.numpy_function` (cv2 releases the GIL, so the parallel map really runs on several cores),
then batched with static shapes. Evaluation does not come here: it reads frames from the
ILSVRC folders and applies `input_pipeline.preprocess`.

Batches, one contract for both phases (T = frames per clip: 1 for still images, 1 + supports
for clips; frame 0 is the reference; M = max_boxes; `*B` = batch_dims, e.g. (local_devices,
per_device_batch)):
  frames  float32 [*B, T, S, S, 3]  BGR minus `mean`
  boxes   float32 [*B, M, 4]        the reference frame's boxes: x1, y1, x2, y2 in input
                                    pixels; inclusive "+1" convention (w = x2 - x1 + 1) if
                                    legacy_boxes, else continuous edges; zeros where not valid
  labels  int32   [*B, M]           0..29 (0 where not valid)
  valid   bool    [*B, M]
(`load_clip` returns one clip with every frame's targets, track ids and frame indices.)

Determinism: clip g of the global stream is a pure function of (seed, g); the global batch of
step s holds clips s*G .. s*G+G-1 (G = hosts x local batch), each host taking its own slice, so
`start_step` resumes the exact stream.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import augment, builders, ilsvrc
from input_pipeline.preprocess import normalize

# The expand canvas of `load_clip(mean=None)` (uint8 frames, for tests that look at pixels)
# only; batches take the mean from the config (data.pixel_mean_bgr).
RELEASE_MEAN_BGR: tuple[float, float, float] = (103.06, 115.90, 123.15)
BATCH_KEYS = ("frames", "boxes", "labels", "valid")
VID = "imagenet_vid"
DET = "imagenet_det_vid30"
COCOVID = "cocovid"  # a user's COCO-VID dataset: stored and read as VID is
VIDEO_DATASETS = (VID, COCOVID)


# ----------------------------------------------------------------------------------------------
# Random-access tables over the built datasets


@dataclasses.dataclass
class Frame:
    """One decoded record: JPEG bytes and raw inclusive pixel boxes."""

    jpeg: bytes
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] int32 inclusive x1, y1, x2, y2 (as in the XML)
    labels: np.ndarray  # [N] int32
    track_ids: np.ndarray  # [N] int32
    generated: np.ndarray  # [N] bool
    occluded: np.ndarray  # [N] bool


class Table:
    """A built split with random access by record and its video structure.

    For VID, record `starts[v] + f` is frame f of video v. A DET split is a table of one-frame
    "videos" (one per image).
    """

    def __init__(
        self,
        source: Any,
        *,
        name: str,
        split: str,
        video_ids: Sequence[str],
        starts: np.ndarray,
        lengths: np.ndarray,
        sample_frames: Sequence[Sequence[int]],
        labels: Sequence[Sequence[int]] | None = None,
    ):
        self.source = source
        self.name = name
        self.split = split
        self.video_ids = list(video_ids)
        self.starts = np.asarray(starts, np.int64)
        self.lengths = np.asarray(lengths, np.int64)
        self.sample_frames = [np.asarray(s, np.int64) for s in sample_frames]
        self.labels = labels
        self.is_video = name in VIDEO_DATASETS
        # array_record readers are not documented as thread-safe; reads are short.
        self._lock = threading.Lock()

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_records(self) -> int:
        return int(self.lengths.sum())

    def read(self, record: int) -> Frame:
        with self._lock:
            ex = self.source[int(record)]
        objects = ex["objects"]
        bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
        n = len(bbox)

        def col(key: str, dtype: Any, default: Any) -> np.ndarray:
            if key not in objects:
                return np.full([n], default, dtype)
            return np.asarray(objects[key], dtype).reshape(n)

        return Frame(
            jpeg=ex["image"],
            width=int(ex["width"]),
            height=int(ex["height"]),
            boxes=builders.raw_pixel_boxes(bbox, ex["width"], ex["height"]),
            labels=col("label", np.int32, 0),
            track_ids=col("track_id", np.int32, -1),
            generated=col("generated", bool, False),
            occluded=col("occluded", bool, False),
        )


def open_table(name: str, split: str, data_dir: os.PathLike | str) -> Table | None:
    """Open a built split (`name` is 'imagenet_vid', 'cocovid' or 'imagenet_det_vid30'); None when
    split was left empty at build time (its folder was absent)."""
    builder = builders.BUILDERS[name](data_dir=os.fspath(data_dir))
    if split not in builder.info.splits:
        return None
    meta = builder.info.metadata["splits"][split]
    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    if name in VIDEO_DATASETS:
        table = Table(
            source,
            name=name,
            split=split,
            video_ids=meta["video_ids"],
            starts=meta["starts"],
            lengths=meta["num_frames"],
            sample_frames=meta["sample_frames"],
        )
    else:
        n = len(meta["image_ids"])
        table = Table(
            source,
            name=name,
            split=split,
            video_ids=meta["image_ids"],
            starts=np.arange(n),
            lengths=np.ones(n, np.int64),
            sample_frames=[[0]] * n,
            labels=meta["labels"],
        )
    if table.num_records != len(source):
        raise ValueError(
            f"{name}/{split}: metadata lists {table.num_records} records, "
            f"files hold {len(source)}; rebuild the dataset"
        )
    return table


# ----------------------------------------------------------------------------------------------
# Sampling


def reference_pool(
    vid: Table | None,
    det: Table | None,
    *,
    vid_frames: str,
    det_per_class: int | None,
    seed: int,
) -> np.ndarray:
    """Reference frames of an epoch, [P, 3] int64 rows (source 0=VID/1=DET, video, frame).

    vid_frames: 'sampled' = the 15 frames per video of VID_train_15frames (FGFA/SSVD), 'all'
    = every frame. det_per_class: at most this many DET images per class (images chosen
    per class with a seeded shuffle, then united), None = all.
    """
    if vid_frames not in ("sampled", "all"):
        raise ValueError(f"vid_frames must be 'sampled' or 'all', got {vid_frames!r}")
    rows = []
    if vid is not None:
        for v in range(vid.num_videos):
            frames = vid.sample_frames[v] if vid_frames == "sampled" else np.arange(vid.lengths[v])
            rows.extend((0, v, int(f)) for f in frames)
    if det is not None:
        images = np.arange(det.num_videos)
        if det_per_class is not None:
            chosen: set[int] = set()
            by_class: dict[int, list[int]] = {}
            for i, labels in enumerate(det.labels or []):
                for c in labels:
                    by_class.setdefault(int(c), []).append(i)
            for c, members in sorted(by_class.items()):
                rng = np.random.default_rng([seed, 7919, c])
                picked = rng.permutation(np.asarray(members))[:det_per_class]
                chosen.update(int(i) for i in picked)
            images = np.array(sorted(chosen), np.int64)
        rows.extend((1, int(i), 0) for i in images)
    if not rows:
        raise ValueError("no reference frames: both tables are empty")
    return np.asarray(rows, np.int64)


def support_frames(
    rng: np.random.Generator, frame: int, length: int, num_supports: int, support_range: int
) -> np.ndarray:
    """FGFA's temporal dropout: `num_supports` distinct offsets from [-K, K] (0 allowed), the
    frames clamped to the video."""
    offsets = np.arange(-support_range, support_range + 1)
    picks = rng.choice(offsets, size=num_supports, replace=num_supports > len(offsets))
    return np.clip(frame + picks, 0, length - 1)


class _Stream:
    """Global clip index -> (source, records, augmentation rng), a pure function of the seed."""

    def __init__(self, pool: np.ndarray, seed: int):
        self.pool = pool
        self.seed = seed
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._permutations.get(epoch)
        if perm is None:
            # Parallel loaders may compute the same permutation twice; the result is the same.
            perm = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.pool))
            # Keep only the epochs in flight (around an epoch boundary, two are).
            recent = {e: p for e, p in self._permutations.items() if abs(e - epoch) <= 1}
            recent[epoch] = perm
            self._permutations = recent
        return perm

    def reference(self, clip_index: int) -> np.ndarray:
        epoch, pos = divmod(int(clip_index), len(self.pool))
        return self.pool[self._permutation(epoch)[pos]]

    def rng(self, clip_index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 2, int(clip_index)])


def _global_clip_index(
    local_position: int, local_batch: int, host_index: int, num_hosts: int
) -> int:
    step, j = divmod(local_position, local_batch)
    return (step * num_hosts + host_index) * local_batch + j


# ----------------------------------------------------------------------------------------------
# Loading and augmenting


def _single_threaded_cv2() -> None:
    # tf.data's parallel map is the parallelism; cv2's own pthreads pool on top of it only
    # oversubscribes the cores, and a pool used from tf.data threads aborts the process at
    # exit ("terminate called without an active exception") while an iterator is alive.
    # This is process-wide: cv2 elsewhere in this process then runs single-threaded too.
    cv2.setNumThreads(1)


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """Which SSD steps run (all on by default) and their main numbers."""

    photometric: bool = True
    hue_delta: float = 18.0
    channel_swap_prob: float = 0.5
    expand_prob: float = 0.5
    max_expand: float = 4.0
    crop: bool = True
    flip_prob: float = 0.5

    @classmethod
    def from_config(cls, augment_config) -> AugmentOptions:
        """The `data.augment` config section."""
        return cls(**{f.name: augment_config[f.name] for f in dataclasses.fields(cls)})


_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def load_clip(
    tables: Sequence[Table | None],
    ref: np.ndarray,
    rng: np.random.Generator,
    *,
    num_frames: int,
    support_range: int,
    image_size: int,
    max_boxes: int,
    mean: Sequence[float] | None,
    augment_options: AugmentOptions | None,
    legacy_boxes: bool,
) -> dict[str, np.ndarray]:
    """One training clip (numpy), reference first. `ref` is a `reference_pool` row."""
    source, video, frame = (int(v) for v in ref)
    table = tables[source]
    length = int(table.lengths[video])
    if table.is_video and num_frames > 1:
        frame_ids = np.concatenate(
            [[frame], support_frames(rng, frame, length, num_frames - 1, support_range)]
        )
    else:
        frame_ids = np.full([num_frames], frame)
    start = int(table.starts[video])
    # A DET clip (or a support equal to another frame) reads and decodes its record once.
    records = {int(f): table.read(start + int(f)) for f in dict.fromkeys(frame_ids.tolist())}
    ref_rec = records[int(frame_ids[0])]
    width, height = ref_rec.width, ref_rec.height
    fill = np.asarray(mean if mean is not None else RELEASE_MEAN_BGR, np.float64)
    if augment_options is not None:
        geometry = augment.sample_geometry(
            rng,
            width,
            height,
            augment.inclusive_to_continuous(ref_rec.boxes),
            image_size,
            expand_prob=augment_options.expand_prob,
            max_expand=augment_options.max_expand,
            crop=augment_options.crop,
            flip_prob=augment_options.flip_prob,
        )
        photometric = None
        if augment_options.photometric:
            photometric = augment.sample_photometric(
                rng,
                hue_delta=augment_options.hue_delta,
                channel_swap_prob=augment_options.channel_swap_prob,
            )
        reduction = geometry.decode_reduction()
    else:
        geometry, photometric = augment.resize_geometry(width, height, image_size), None
        reduction = 1  # the release's exact test-time preprocessing: full decode, cv2.resize
    pixel_geometry = geometry.reduced(reduction) if reduction > 1 else geometry
    image_rect = geometry.image_rect(width, height)
    images: dict[int, np.ndarray] = {}
    for f, rec in records.items():
        if (rec.width, rec.height) != (width, height):
            # Builds refuse such videos now (dataset_check); one built before can hold them.
            raise ilsvrc.IlsvrcFormatError(
                f"Data/VID/{table.video_ids[video]}",
                f"frames differ in size ({width}x{height} and {rec.width}x{rec.height}); "
                f"rebuild {table.name} (the build now refuses such a video)",
            )
        img = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), _REDUCED_FLAGS[reduction])
        if img is None:
            raise ValueError(f"cannot decode the JPEG of {table.name} record {start + f}")
        out = augment.warp_image(img, pixel_geometry, np.round(fill))
        if photometric is not None:
            out = augment.apply_photometric(out, photometric)
            augment.fill_outside(out, image_rect, np.round(fill))
        images[f] = out
    s = image_size
    if mean is not None:
        image_stack = np.empty([num_frames, s, s, 3], np.float32)
        for k, f in enumerate(frame_ids.tolist()):
            normalize(images[f], mean, out=image_stack[k])
    else:
        image_stack = np.stack([images[f] for f in frame_ids.tolist()])
    boxes_out = np.zeros([num_frames, max_boxes, 4], np.float32)
    labels_out = np.zeros([num_frames, max_boxes], np.int32)
    tracks_out = np.full([num_frames, max_boxes], -1, np.int32)
    valid_out = np.zeros([num_frames, max_boxes], bool)
    for k, f in enumerate(frame_ids.tolist()):
        rec = records[f]
        boxes, keep = augment.transform_boxes(geometry, augment.inclusive_to_continuous(rec.boxes))
        if legacy_boxes:
            boxes = augment.continuous_to_inclusive(boxes)
        # Objects beyond max_boxes are dropped (file order): pick max_boxes above the data's.
        boxes, labels, tracks = boxes[keep], rec.labels[keep], rec.track_ids[keep]
        n = min(len(boxes), max_boxes)
        boxes_out[k, :n], labels_out[k, :n], tracks_out[k, :n] = boxes[:n], labels[:n], tracks[:n]
        valid_out[k, :n] = True
    return {
        "images": image_stack,
        "boxes": boxes_out,
        "labels": labels_out,
        "valid": valid_out,
        "track_ids": tracks_out,
        "frame_indices": (frame_ids if table.is_video else np.zeros([num_frames])).astype(np.int32),
        "is_video": np.asarray(table.is_video),
    }


def _clip_dataset(
    vid: Table | None,
    det: Table | None,
    pool: np.ndarray,
    *,
    num_frames: int,
    support_range: int,
    image_size: int,
    max_boxes: int,
    seed: int,
    start_step: int,
    batch_dims: Sequence[int],
    host_index: int,
    num_hosts: int,
    mean: Sequence[float],
    augment_options: AugmentOptions | None,
    legacy_boxes: bool,
    num_parallel_calls: int,
    prefetch: int,
) -> tf.data.Dataset:
    if not 0 <= host_index < num_hosts:
        raise ValueError(f"host_index {host_index} not in [0, {num_hosts})")
    if mean is None:
        raise ValueError("mean is required: batches hold normalised frames")
    _single_threaded_cv2()
    local_batch = math.prod(batch_dims)
    stream = _Stream(pool, seed)
    tables = (vid, det)

    def load(position: np.int64) -> tuple[np.ndarray, ...]:
        g = _global_clip_index(int(position), local_batch, host_index, num_hosts)
        clip = load_clip(
            tables,
            stream.reference(g),
            stream.rng(g),
            num_frames=num_frames,
            support_range=support_range,
            image_size=image_size,
            max_boxes=max_boxes,
            mean=mean,
            augment_options=augment_options,
            legacy_boxes=legacy_boxes,
        )
        # The reference frame's targets only: supports' boxes are not a training target.
        return clip["images"], clip["boxes"][0], clip["labels"][0], clip["valid"][0]

    t, s, m = num_frames, image_size, max_boxes
    shapes = ([t, s, s, 3], [m, 4], [m], [m])
    dtypes = (tf.float32, tf.float32, tf.int32, tf.bool)

    def to_dict(position: tf.Tensor) -> dict[str, tf.Tensor]:
        values = tf.numpy_function(load, [position], dtypes, stateful=False)
        return {
            key: tf.ensure_shape(value, shape)
            for key, value, shape in zip(BATCH_KEYS, values, shapes, strict=True)
        }

    # An unbounded stream of local positions; a resumed run starts at its step's first clip.
    ds = tf.data.Dataset.range(start_step * local_batch, np.iinfo(np.int64).max)
    ds = ds.map(to_dict, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
    ds = ds.map(
        lambda b: tf.nest.map_structure(
            lambda x: tf.reshape(x, list(batch_dims) + x.shape[1:].as_list()), b
        )
    )
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_optimization.map_parallelization = True
    return ds.with_options(options).prefetch(prefetch)


def train_clips(
    vid: Table | None,
    det: Table | None = None,
    *,
    image_size: int,
    max_boxes: int,
    batch_dims: Sequence[int],
    seed: int,
    num_frames: int,
    support_range: int,
    vid_frames: str,
    det_per_class: int | None,
    mean: Sequence[float],
    legacy_boxes: bool,
    start_step: int = 0,
    host_index: int = 0,
    num_hosts: int = 1,
    augment_options: AugmentOptions | None = AugmentOptions(),
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Training clips (phase 2): a reference frame and num_frames-1 supports from [t-K, t+K]
    (K = support_range), SSD augmentation applied identically to all frames; DET images become
    clips of one repeated frame. References come from `reference_pool(vid, det, vid_frames,
    det_per_class)`, reshuffled every epoch. Batches as in the module docstring (T =
    num_frames)."""
    pool = reference_pool(vid, det, vid_frames=vid_frames, det_per_class=det_per_class, seed=seed)
    return _clip_dataset(
        vid,
        det,
        pool,
        num_frames=num_frames,
        support_range=support_range,
        image_size=image_size,
        max_boxes=max_boxes,
        seed=seed,
        start_step=start_step,
        batch_dims=batch_dims,
        host_index=host_index,
        num_hosts=num_hosts,
        mean=mean,
        augment_options=augment_options,
        legacy_boxes=legacy_boxes,
        num_parallel_calls=num_parallel_calls,
        prefetch=prefetch,
    )


def still_images(
    vid: Table | None,
    det: Table | None = None,
    *,
    image_size: int,
    max_boxes: int,
    batch_dims: Sequence[int],
    seed: int,
    vid_frames: str,
    det_per_class: int | None,
    mean: Sequence[float],
    legacy_boxes: bool,
    start_step: int = 0,
    host_index: int = 0,
    num_hosts: int = 1,
    augment_options: AugmentOptions | None = AugmentOptions(),
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Phase-1 still images: VID frames and DET images (at most det_per_class per class),
    SSD-augmented. Batches as in the module docstring with T = 1."""
    pool = reference_pool(vid, det, vid_frames=vid_frames, det_per_class=det_per_class, seed=seed)
    return _clip_dataset(
        vid,
        det,
        pool,
        num_frames=1,
        support_range=0,
        image_size=image_size,
        max_boxes=max_boxes,
        seed=seed,
        start_step=start_step,
        batch_dims=batch_dims,
        host_index=host_index,
        num_hosts=num_hosts,
        mean=mean,
        augment_options=augment_options,
        legacy_boxes=legacy_boxes,
        num_parallel_calls=num_parallel_calls,
        prefetch=prefetch,
    )
