"""tf.data pipelines over the built datasets: training clips, still images, ordered evaluation.

Every function takes explicit numbers (sizes, K, max_boxes, seed, batch dims, mean); none reads
a config. Records are read by index from the array_record files (`tfds` data sources), decoded
and augmented with cv2 inside `tf.numpy_function` (cv2 releases the GIL, so the parallel map
really runs on several cores), then batched with static shapes.

Batches (training clips; T = frames per clip, frame 0 is the reference, M = max_boxes,
`*B` = batch_dims, e.g. (local_devices, per_device_batch)):
  images        float32 [*B, T, S, S, 3]  BGR minus `mean` (uint8 BGR if mean is None)
  boxes         float32 [*B, T, M, 4]     x1, y1, x2, y2 in input pixels; inclusive "+1"
                                          convention (w = x2 - x1 + 1) if legacy_boxes, else
                                          continuous edges; zeros where not valid
  labels        int32   [*B, T, M]        0..29 (0 where not valid)
  valid         bool    [*B, T, M]
  track_ids     int32   [*B, T, M]        -1 for DET and padding
  frame_indices int32   [*B, T]           index within the video (0 for DET)
  is_video      bool    [*B]              False for a DET image repeated T times
  clip_index    int64   [*B]              position in the global stream (seed, index) -> clip
Still images: the same keys without the T axis. Evaluation: see `eval_frames`.

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

from input_pipeline import augment, builders

RELEASE_MEAN_BGR: tuple[float, float, float] = (103.06, 115.90, 123.15)
VID = "imagenet_vid"
DET = "imagenet_det_vid30"


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
        self.is_video = name == VID
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
    """Open a built split (`name` is 'imagenet_vid' or 'imagenet_det_vid30'); None when the
    split was left empty at build time (its folder was absent)."""
    builder = builders.BUILDERS[name](data_dir=os.fspath(data_dir))
    if split not in builder.info.splits:
        return None
    meta = builder.info.metadata["splits"][split]
    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    if name == VID:
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
    vid_frames: str = "sampled",
    det_per_class: int | None = None,
    seed: int = 0,
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


def _normalize(
    image: np.ndarray, mean: Sequence[float], out: np.ndarray | None = None
) -> np.ndarray:
    """float32(image) - mean (BGR), the release's normalisation. cv2.subtract gives the same
    float32 values as numpy and is ~8x faster (one pass, no temporary)."""
    scalar = tuple(float(m) for m in mean) + (0.0,)
    if out is None:
        return cv2.subtract(image, scalar, dtype=cv2.CV_32F)
    cv2.subtract(image, scalar, dst=out, dtype=cv2.CV_32F)
    return out


def _decode(jpeg: bytes, name: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode the JPEG of record {name}")
    return image


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """Which SSD steps run (all on by default) and their main numbers."""

    photometric: bool = True
    expand_prob: float = 0.5
    max_expand: float = 4.0
    crop: bool = True
    flip_prob: float = 0.5


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
        photometric = augment.sample_photometric(rng) if augment_options.photometric else None
        reduction = geometry.decode_reduction()
    else:
        geometry, photometric = augment.resize_geometry(width, height, image_size), None
        reduction = 1  # the release's exact test-time preprocessing: full decode, cv2.resize
    pixel_geometry = geometry.reduced(reduction) if reduction > 1 else geometry
    image_rect = geometry.image_rect(width, height)
    images: dict[int, np.ndarray] = {}
    for f, rec in records.items():
        if (rec.width, rec.height) != (width, height):
            raise ValueError(f"{table.name}: frames of video {video} differ in size")
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
            _normalize(images[f], mean, out=image_stack[k])
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


_CLIP_KEYS = ("images", "boxes", "labels", "valid", "track_ids", "frame_indices", "is_video")


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
    mean: Sequence[float] | None,
    augment_options: AugmentOptions | None,
    legacy_boxes: bool,
    squeeze_time: bool,
    num_parallel_calls: int,
    prefetch: int,
) -> tf.data.Dataset:
    if not 0 <= host_index < num_hosts:
        raise ValueError(f"host_index {host_index} not in [0, {num_hosts})")
    _single_threaded_cv2()
    local_batch = math.prod(batch_dims)
    stream = _Stream(pool, seed)
    tables = (vid, det)
    image_dtype = tf.float32 if mean is not None else tf.uint8

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
        return tuple(clip[k] for k in _CLIP_KEYS) + (np.asarray(g, np.int64),)

    t, s, m = num_frames, image_size, max_boxes
    shapes = {
        "images": [t, s, s, 3],
        "boxes": [t, m, 4],
        "labels": [t, m],
        "valid": [t, m],
        "track_ids": [t, m],
        "frame_indices": [t],
        "is_video": [],
        "clip_index": [],
    }
    dtypes = (image_dtype, tf.float32, tf.int32, tf.bool, tf.int32, tf.int32, tf.bool, tf.int64)

    def to_dict(position: tf.Tensor) -> dict[str, tf.Tensor]:
        values = tf.numpy_function(load, [position], dtypes, stateful=False)
        out = {}
        for key, value in zip(_CLIP_KEYS + ("clip_index",), values, strict=True):
            shape = shapes[key]
            if squeeze_time and shape and shape[0] == t and key != "clip_index":
                value = tf.ensure_shape(value, shape)[0]
            else:
                value = tf.ensure_shape(value, shape)
            out[key] = value
        return out

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
    num_frames: int = 3,
    support_range: int = 12,
    start_step: int = 0,
    host_index: int = 0,
    num_hosts: int = 1,
    vid_frames: str = "sampled",
    det_per_class: int | None = None,
    mean: Sequence[float] | None = RELEASE_MEAN_BGR,
    augment_options: AugmentOptions | None = AugmentOptions(),
    legacy_boxes: bool = True,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Training clips: a reference frame and num_frames-1 supports from [t-K, t+K] (K =
    support_range), SSD augmentation applied identically to all frames; DET images become
    clips of one repeated frame. References come from `reference_pool(vid, det, vid_frames,
    det_per_class)`, reshuffled every epoch. Batches as in the module docstring."""
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
        squeeze_time=False,
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
    det_per_class: int | None = 2000,
    vid_frames: str = "sampled",
    start_step: int = 0,
    host_index: int = 0,
    num_hosts: int = 1,
    mean: Sequence[float] | None = RELEASE_MEAN_BGR,
    augment_options: AugmentOptions | None = AugmentOptions(),
    legacy_boxes: bool = True,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Phase-1 still images: VID frames (15 per video) and DET images (at most det_per_class per
    class), SSD-augmented. Same keys as `train_clips` without the T axis."""
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
        squeeze_time=True,
        num_parallel_calls=num_parallel_calls,
        prefetch=prefetch,
    )


# ----------------------------------------------------------------------------------------------
# Evaluation


def assign_videos(lengths: Sequence[int], num_hosts: int) -> list[list[int]]:
    """Whole videos per host, each to the currently least-loaded host (by frames), in list order
    (the release's test sampler). Returns the video indices of each host, in order."""
    load = [0] * num_hosts
    out: list[list[int]] = [[] for _ in range(num_hosts)]
    for v, n in enumerate(lengths):
        h = min(range(num_hosts), key=lambda i: (load[i], i))
        out[h].append(v)
        load[h] += int(n)
    return out


_EVAL_KEYS = (
    "image",
    "video_index",
    "frame_index",
    "num_frames",
    "frame_id",
    "width",
    "height",
    "gt_boxes",
    "gt_labels",
    "gt_valid",
    "gt_track_ids",
    "gt_generated",
    "is_real",
)


def load_eval_frame(
    table: Table,
    video: int,
    frame: int,
    image_size: int,
    max_boxes: int,
    mean: Sequence[float] | None,
) -> dict[str, np.ndarray]:
    """One evaluation frame: cv2 decode (BGR), cv2.resize INTER_LINEAR to the square size,
    minus the mean (REFERENCE_SPEC §6), plus ids and raw ground truth."""
    record = int(table.starts[video]) + frame
    rec = table.read(record)
    img = cv2.resize(
        _decode(rec.jpeg, f"{table.name}/{record}"),
        (image_size, image_size),
        interpolation=cv2.INTER_LINEAR,
    )
    image = _normalize(img, mean) if mean is not None else img
    n = min(len(rec.boxes), max_boxes)
    gt = np.zeros([max_boxes, 4], np.int32)
    gt[:n] = rec.boxes[:n]

    def padded(x: np.ndarray, dtype: Any, fill: Any) -> np.ndarray:
        out = np.full([max_boxes], fill, dtype)
        out[:n] = x[:n]
        return out

    return {
        "image": image,
        "video_index": np.int32(video),
        "frame_index": np.int32(frame),
        "num_frames": np.int32(table.lengths[video]),
        "frame_id": np.int64(record + 1),
        "width": np.int32(rec.width),
        "height": np.int32(rec.height),
        "gt_boxes": gt,
        "gt_labels": padded(rec.labels, np.int32, 0),
        "gt_valid": padded(np.ones(n, bool), bool, False),
        "gt_track_ids": padded(rec.track_ids, np.int32, -1),
        "gt_generated": padded(rec.generated, bool, False),
        "is_real": np.bool_(True),
    }


def eval_frames(
    table: Table,
    *,
    image_size: int,
    max_boxes: int,
    batch_dims: Sequence[int] = (),
    host_index: int = 0,
    num_hosts: int = 1,
    mean: Sequence[float] | None = RELEASE_MEAN_BGR,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Every frame of every video of this host, in order (videos in list order, frames 0..L-1).

    Elements: image float32 [S, S, 3] (BGR - mean, cv2.resize as the release), video_index,
    frame_index, num_frames, frame_id (the evaluation's global 1-based id = record + 1), width,
    height (original size), gt_boxes int32 [M, 4] (raw inclusive XML boxes), gt_labels,
    gt_valid, gt_track_ids, gt_generated [M], is_real. With batch_dims, elements are batched to
    [*batch_dims, ...]; the last batch is padded with is_real=False frames.
    """
    _single_threaded_cv2()
    videos = assign_videos(table.lengths, num_hosts)[host_index]
    index = np.array(
        [(v, f) for v in videos for f in range(int(table.lengths[v]))], np.int64
    ).reshape(-1, 2)
    local_batch = math.prod(batch_dims)
    num_real = len(index)
    total = -(-num_real // local_batch) * local_batch if batch_dims else num_real
    image_dtype = tf.float32 if mean is not None else tf.uint8

    def load(i: np.int64) -> tuple[np.ndarray, ...]:
        i = int(i)
        v, f = index[min(i, num_real - 1)]
        out = load_eval_frame(table, int(v), int(f), image_size, max_boxes, mean)
        if i >= num_real:  # padding of the last batch: a copy of the last frame, marked
            out["is_real"] = np.bool_(False)
        return tuple(out[k] for k in _EVAL_KEYS)

    m, s = max_boxes, image_size
    shapes = [[s, s, 3], [], [], [], [], [], [], [m, 4], [m], [m], [m], [m], []]
    dtypes = (
        image_dtype,
        tf.int32,
        tf.int32,
        tf.int32,
        tf.int64,
        tf.int32,
        tf.int32,
        tf.int32,
        tf.int32,
        tf.bool,
        tf.int32,
        tf.bool,
        tf.bool,
    )

    def to_dict(i: tf.Tensor) -> dict[str, tf.Tensor]:
        values = tf.numpy_function(load, [i], dtypes, stateful=False)
        return {
            k: tf.ensure_shape(v, sh) for k, v, sh in zip(_EVAL_KEYS, values, shapes, strict=True)
        }

    ds = tf.data.Dataset.range(total).map(
        to_dict, num_parallel_calls=num_parallel_calls, deterministic=True
    )
    if batch_dims:
        ds = ds.batch(local_batch, drop_remainder=True)
        ds = ds.map(
            lambda b: tf.nest.map_structure(
                lambda x: tf.reshape(x, list(batch_dims) + x.shape[1:].as_list()), b
            )
        )
    return ds.prefetch(prefetch)
