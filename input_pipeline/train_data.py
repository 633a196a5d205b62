"""Training data for the trainer: prepare the datasets, then this host's batches of a phase.

The batch contract, one for both phases (`*B` = batch_dims = (local_devices, per_device)):
  frames  float32 [*B, T, S, S, 3]  BGR minus data.pixel_mean_bgr; frame 0 is the reference.
                                    T = 1 for phase 1 (still images), 1 + train.num_supports
                                    for phase 2 (clips, supports from [t-K, t+K])
  boxes   float32 [*B, G, 4]        the reference frame's boxes in input pixels (G =
                                    data.max_boxes; "+1" inclusive convention when
                                    loss.legacy_boxes); zeros where not valid
  labels  int32   [*B, G]           0-based class (0..29), 0 where not valid
  valid   bool    [*B, G]
The data order is a pure function of (config.seed, step): batches from `start_step` = k are
the k-th and later batches of a fresh stream (see `input_pipeline.pipeline`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging

from ssvd_jax import locks
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.errors import UserError

PHASES = ("phase1", "phase2")
SOURCES = ("ilsvrc", "synthetic", "cocovid")


def data_source(config: Any, workdir: str) -> Any:
    """The evaluated dataset: the ILSVRC2015 folder (`data.root`, or the generated one in the
    workdir), or for `data.source=cocovid` a `cocovid.Source` (image root, JSON files, the
    evaluation's IoU rule), which `evaluation.score` and the demo take in its place."""
    data = config.data
    if data.source == "cocovid":
        from input_pipeline import cocovid

        return cocovid.Source(data.image_root, data.train_json, data.val_json,
                              iou_rule=config.eval.iou_rule)  # fmt: skip
    return workdir_lib.data_root(config, workdir)


def class_names(config: Any) -> tuple[str, ...]:
    """The class names the config holds (`resolve_classes` sets them for COCO-VID)."""
    from input_pipeline import classes

    return tuple(config.data.class_names) or classes.CLASS_NAMES


def resolve_classes(config: Any) -> tuple[str, ...]:
    """The dataset's class names, set into the config: for COCO-VID the files' categories
    (`data.class_names`, and `model.num_classes` follows them); else the 30 VID classes."""
    from input_pipeline import classes, cocovid

    if config.data.source != "cocovid":
        return tuple(config.data.class_names) or classes.CLASS_NAMES
    source = data_source(config, "")
    names = cocovid.class_names(source)
    if config.model.num_classes != len(names):
        logging.info("model.num_classes: %d, the classes of %s", len(names), source)
    config.data.class_names = tuple(names)
    config.model.num_classes = len(names)
    return names


def generates_root(config: Any) -> bool:
    """Whether a `data.root` that does not exist is generated (synthetic data): the default
    root inside the workdir (`data.root` empty) always, a given `data.root` only with
    `data.synthetic.create_root` (else a mistyped path would be filled with generated data)."""
    data = config.data
    return data.source == "synthetic" and (not data.root or bool(data.synthetic.create_root))


def missing_root_problem(config: Any, training: bool = True) -> str:
    """Why a data root that does not exist is an error, and what to do."""
    if config.data.source == "synthetic" and training:
        return (
            "no such folder; the synthetic config generates its data into "
            "<workdir>/data/ILSVRC2015 when data.root is empty, or into a new data.root with "
            "--config.data.synthetic.create_root=True"
        )
    return "no such folder (data.root: the ILSVRC2015 folder, holding Data/ and Annotations/)"


def pwcnet_alone(config: Any) -> bool:
    """Whether the configured phases train no detector (PWC-Net pretraining alone)."""
    return not set(config.train.phases) & set(workdir_lib.PHASES)


def prepare(config: Any, workdir: str) -> str:
    """Generate the synthetic ILSVRC folder if configured and absent (`generates_root`), build
    the TFDS datasets (reused when built from the same folder), and return the TFDS data_dir
    (nothing to read or build for the pwcnet phase alone on a flow dataset at `flow.root`).
    A data root that is not there (and not generated) raises IlsvrcFormatError naming it."""
    from input_pipeline import builders, ilsvrc

    tfds_dir = workdir_lib.tfds_dir(config, workdir)
    if pwcnet_alone(config) and config.flow.root:
        return tfds_dir  # PWC-Net pretraining alone on a flow dataset reads no videos
    if config.data.source == "cocovid":
        builders.prepare_cocovid(data_source(config, workdir), tfds_dir)
        return tfds_dir
    root = workdir_lib.data_root(config, workdir)
    if not generate_if_absent(config, workdir):
        raise ilsvrc.IlsvrcFormatError(root, missing_root_problem(config))
    names = ["imagenet_vid"]
    if config.train.phase1_det and "phase1" in config.train.phases:
        names.append("imagenet_det_vid30")
    for name in names:
        builders.prepare(name, root, tfds_dir)
    return tfds_dir


def generate_if_absent(config: Any, workdir: str) -> bool:
    """Generate the synthetic ILSVRC folder where configured (`generates_root`) and absent;
    whether the data root is there now (always true for COCO-VID, whose files are checked
    where they are read)."""
    if config.data.source == "cocovid":
        return True
    root = workdir_lib.data_root(config, workdir)
    if not os.path.exists(root):
        if not generates_root(config):
            return False
        # Two runs generating into one folder: the second waits, then finds it there.
        with locks.file_lock(f"{root}.lock", wait=True):
            if not os.path.exists(root):
                _generate(config, root)
    return True


def _generate(config: Any, root: str) -> None:
    from input_pipeline import synthetic

    data = config.data
    s = data.synthetic
    logging.info("generating the synthetic dataset into %s", root)
    tmp = f"{root}.tmp-{os.getpid()}"
    synthetic.generate(
        tmp,
        seed=s.seed,
        width=s.size,
        height=s.size,
        num_train_videos=s.train_videos,
        num_val_videos=s.val_videos,
        frames_per_video=s.frames,
        num_det_images=s.det_images,
        num_classes=s.num_classes,
        max_objects=s.max_objects,
        flow_pairs_per_video=s.flow_pairs,
    )
    os.replace(tmp, root)  # a crash mid-generation never leaves a partial dataset


_LOADER_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+Error): (.+?): (.+)$", re.MULTILINE)


def loader_error(error: Exception) -> UserError | None:
    """The UserError that a tf.data loader function raised, recovered from the text of the
    TensorFlow error that wraps it (which also holds the Python traceback); None if none."""
    names = {c.__name__ for c in _subclasses(UserError)} | {UserError.__name__}
    found = [m for m in _LOADER_ERROR.finditer(str(error)) if m.group(1) in names]
    return UserError(found[-1].group(2), found[-1].group(3)) if found else None


def _subclasses(cls: type) -> list[type]:
    return [c for s in cls.__subclasses__() for c in (s, *_subclasses(s))]


class Batches(Iterator[dict[str, np.ndarray]]):
    """An endless iterator of numpy batches over a tf.data pipeline. `close()` drops the
    tf.data iterator, which stops its loader threads; next() after close raises StopIteration.
    Also a context manager."""

    def __init__(self, dataset: Any):
        self._iterator: Any = iter(dataset)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            raise StopIteration
        try:
            element = next(self._iterator)
        except StopIteration:
            raise
        except Exception as e:  # tf.errors.OpError: a loader function raised
            user = loader_error(e)
            if user is None:
                raise
            raise user from e
        return {key: value.numpy() for key, value in element.items()}

    def close(self, wait: bool = True) -> None:
        """Drop the tf.data iterator. With `wait=False` its destruction (which waits for the
        loader threads to stop) runs on a daemon thread: at the end of a long phase it took
        0 to 35 s here, intermittently, time in which the next phase can already start."""
        held = [self._iterator]
        self._iterator = None
        if wait or held[0] is None:
            return
        threading.Thread(target=held.clear, name="close-tf.data", daemon=True).start()

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_batches(
    config: Any,
    phase: str,
    data_dir: str,
    *,
    start_step: int,
    batch_dims: tuple[int, int],
    host_index: int,
    num_hosts: int,
) -> Batches:
    """This host's batches of `phase` ('phase1': still images of VID, plus DET when
    train.phase1_det; 'phase2': VID clips) from `start_step` on, per the module's contract.
    `data_dir` is the TFDS folder of `prepare`."""
    from input_pipeline import pipeline

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    data = config.data
    coco = data.source == "cocovid"
    vid = pipeline.open_table(pipeline.COCOVID if coco else pipeline.VID, "train", data_dir)
    if vid is None:
        raise UserError(data_dir, "no train split was built (no training videos found)")
    common = dict(
        image_size=data.image_size,
        max_boxes=data.max_boxes,
        batch_dims=tuple(batch_dims),
        seed=config.seed,
        start_step=start_step,
        host_index=host_index,
        num_hosts=num_hosts,
        vid_frames=data.vid_frames,
        mean=tuple(data.pixel_mean_bgr),
        legacy_boxes=config.loss.legacy_boxes,
        augment_options=pipeline.AugmentOptions.from_config(data.augment),
        # Clips decoded in parallel: one per core (0). tf.data's AUTOTUNE queued so many that
        # closing the iterator at the end of a phase waited 36-42 s for them on 2 cores.
        num_parallel_calls=data.loader_threads or os.cpu_count() or 1,
    )
    if phase == "phase1":
        det = (
            pipeline.open_table(pipeline.DET, "train", data_dir)
            if config.train.phase1_det and not coco  # COCO-VID: the video frames alone
            else None
        )
        dataset = pipeline.still_images(
            vid, det, det_per_class=data.det_per_class or None, **common
        )
    else:
        dataset = pipeline.train_clips(
            vid,
            None,
            num_frames=1 + config.train.num_supports,
            support_range=data.support_range,
            det_per_class=None,
            **common,
        )
    return Batches(dataset)
