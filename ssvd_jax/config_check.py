"""Config values checked before any data or compile work: a value that cannot work fails at
once as a `ConfigError` naming the key and the value, not after a dataset build and a
five-minute compile. Only what a job would otherwise find out late is checked; the modules
below keep their own checks (`validate` only asks them earlier).
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from input_pipeline import ilsvrc, train_data
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.errors import ConfigError
from ssvd_jax.evaluation import linking
from ssvd_jax.models import conv, pwcnet, resnet, streams
from ssvd_jax.models import ssvd as ssvd_lib

TRAINING_MODES = ("train", "sweep")
DATA_MODES = TRAINING_MODES + ("eval", "check", "score")
SCHEDULE_KINDS = ("multistep", "cosine")
OPTIMIZERS = ("sgd", "adamw")


def validate(
    config: Any, mode: str, workdir: str, *, devices: int | None = None, source: str = "config"
) -> None:
    """Raise ConfigError (its file: `source`, e.g. the config file) for the first value that
    cannot work in `mode` (main.py's modes). `devices`: the number of devices the training
    batch is split over (None: not checked, e.g. before a multi-host run has started)."""

    def need(ok: bool, key: str, problem: str) -> None:
        if not ok:
            node = config
            for part in key.split("."):
                node = node[part]
            raise ConfigError(key, _plain(node), problem, source=source)

    m = config.model
    need(m.variant in ssvd_lib.VARIANTS, "model.variant", f"one of {ssvd_lib.VARIANTS}")
    need(m.backbone.norm in conv.NORMS, "model.backbone.norm", f"one of {conv.NORMS}")
    need(
        bool(m.backbone.stage_sizes) or m.backbone.depth in resnet.RESNET_SPECS,
        "model.backbone.depth", f"one of {sorted(resnet.RESNET_SPECS)} (or set stage_sizes)",
    )  # fmt: skip
    need(m.pwc_cost_volume in pwcnet.COST_VOLUMES, "model.pwc_cost_volume",
         f"one of {pwcnet.COST_VOLUMES}")  # fmt: skip
    need(m.motion.aggregation in streams.MOTION_AGGREGATIONS, "model.motion.aggregation",
         f"one of {streams.MOTION_AGGREGATIONS}")  # fmt: skip
    need(m.motion.temperature > 0, "model.motion.temperature", "must be > 0")
    for key in ("model.dtype", "model.flow_dtype"):
        need(_is_dtype(config, key), key, "a dtype name such as 'float32' or 'bfloat16'")
    d = config.data
    need(_positive(d.image_size), "data.image_size", "must be a positive integer")
    need(_positive(d.max_boxes), "data.max_boxes", "must be a positive integer")
    need(_count(d.support_range), "data.support_range", "must be an integer >= 0")
    need(d.source in train_data.SOURCES, "data.source", f"one of {train_data.SOURCES}")
    need(config.eval.iou_rule in ("ilsvrc", "iou50"), "eval.iou_rule", "'ilsvrc' or 'iou50'")
    need(config.eval.iou_rule == "ilsvrc" or d.source == "cocovid", "eval.iou_rule",
         "'iou50' is for COCO-VID data (data.source=cocovid); ILSVRC VID is scored by its own "
         "rule")  # fmt: skip
    need(d.vid_frames in ("sampled", "all"), "data.vid_frames", "'sampled' or 'all'")
    need(config.eval.schedule in ("release", "paper"), "eval.schedule", "'release' or 'paper'")
    need(_count(config.eval.num_supports), "eval.num_supports", "must be an integer >= 0")
    need(_positive(config.eval.batch_videos), "eval.batch_videos", "must be a positive integer")
    link = config.eval.link
    if link.method:
        need(
            link.method in linking.METHODS,
            "eval.link.method",
            f"'' (off) or one of {linking.METHODS}",
        )
        need(link.rescore in linking.RESCORE, "eval.link.rescore", f"one of {linking.RESCORE}")
        need(0.0 < link.min_iou <= 1.0, "eval.link.min_iou", "must be in (0, 1]")
        need(_count(link.max_gap), "eval.link.max_gap", "must be an integer >= 0")
        need(link.iou_weight >= 0.0, "eval.link.iou_weight", "must be >= 0")
    if mode in TRAINING_MODES:
        _training(config, need, devices)
    if mode in TRAINING_MODES and train_data.pwcnet_alone(config) and config.flow.root:
        root = config.flow.root  # the flow pairs are all it reads
        need(os.path.isdir(root), "flow.root", f"{root}: no such folder")
    elif mode in DATA_MODES:
        _data_root(config, mode, workdir, need)


def _training(config: Any, need: Any, devices: int | None) -> None:
    phases = tuple(config.train.phases)
    order = workdir_lib.TRAINING_PHASES
    need(
        bool(phases) and all(p in order for p in phases) and len(set(phases)) == len(phases)
        and list(phases) == sorted(phases, key=order.index),
        "train.phases", f"a non-empty selection of {order}, in that order",
    )  # fmt: skip
    batches = []
    if set(phases) & set(workdir_lib.PHASES):
        batches.append("train.batch_size")
        need(_positive(config.train.num_supports) or "phase2" not in phases,
             "train.num_supports", "must be a positive integer for phase 2")  # fmt: skip
        need(config.optimizer.name in OPTIMIZERS, "optimizer.name", f"one of {OPTIMIZERS}")
    need(not config.train.pwcnet_checkpoint or config.model.pwc_cost_volume == "raw",
         "model.pwc_cost_volume", "must be 'raw' with train.pwcnet_checkpoint (converted "
         "weights of the release, which compares features raw)")  # fmt: skip
    if workdir_lib.FLOW_PHASE in phases:
        batches.append("flow.batch_size")
        need(config.flow.optimizer.name in OPTIMIZERS, "flow.optimizer.name",
             f"one of {OPTIMIZERS}")  # fmt: skip
        for key in ("crop_size", "eval_crop_size"):
            value = config.flow[key]
            sides = (value,) if isinstance(value, int) else tuple(value)
            need(len(sides) in (1, 2) and all(_positive(v) and v % 64 == 0 for v in sides),
                 f"flow.{key}", "a multiple of 64 (PWC-Net's pyramid), or a (height, width) "
                 "pair of them")  # fmt: skip
        for key in ("translation_shift", "translation_images"):
            value = config.flow[key]
            need(_positive(value) or value == 0, f"flow.{key}",
                 "must be a whole number >= 0 (0: no translation check)")  # fmt: skip
    for key in batches:
        size = config[key.split(".")[0]].batch_size
        need(_positive(size), key, "must be a positive integer")
        if devices:
            need(size % devices == 0, key, f"must be a multiple of the {devices} devices")
    for phase in phases:
        s = config.schedule[phase]
        key = f"schedule.{phase}"
        need(_positive(s.steps), f"{key}.steps", "must be a positive integer")
        need(s.kind in SCHEDULE_KINDS, f"{key}.kind", f"one of {SCHEDULE_KINDS}")
        need(s.learning_rate > 0, f"{key}.learning_rate", "must be positive")
        need(_count(s.warmup_steps), f"{key}.warmup_steps", "must be an integer >= 0")
        b = list(s.boundaries)
        need(b == sorted(b) and all(_positive(x) for x in b), f"{key}.boundaries",
             "must be increasing positive steps")  # fmt: skip
    need(_positive(config.checkpoint.every_steps), "checkpoint.every_steps",
         "must be a positive integer")  # fmt: skip
    keep = config.checkpoint.max_to_keep
    need(keep is None or _positive(keep), "checkpoint.max_to_keep", "a positive integer or None")
    need(_positive(config.log.every_steps), "log.every_steps", "must be a positive integer")
    need(_positive(config.log.summary_window), "log.summary_window", "must be a positive integer")


def _data_root(config: Any, mode: str, workdir: str, need: Any) -> None:
    """The data root must exist (else IlsvrcFormatError naming it), unless training or
    evaluation generates it (`train_data.generates_root`)."""
    if config.data.source == "cocovid":
        _cocovid_files(config, mode, need)
        return
    root = workdir_lib.data_root(config, workdir)
    if mode in ("check", "score"):
        need(bool(config.data.root), "data.root", f"--mode={mode} needs the ILSVRC2015 folder")
    generates = mode in TRAINING_MODES + ("eval",)  # (eval: another run on new data)
    if os.path.exists(root) or (generates and train_data.generates_root(config)):
        return
    raise ilsvrc.IlsvrcFormatError(root, train_data.missing_root_problem(config, generates))


def _cocovid_files(config: Any, mode: str, need: Any) -> None:
    """A COCO-VID source names its image root and the files its mode reads, which exist."""
    d = config.data
    need(bool(d.image_root), "data.image_root", "data.source=cocovid needs the images' folder")
    wanted = ["data.train_json"] if mode in TRAINING_MODES else []
    if mode in TRAINING_MODES and config.eval.after_training or mode in ("eval", "score"):
        wanted.append(f"data.{config.eval.split}_json")
    if mode == "check":
        need(bool(d.train_json or d.val_json), "data.train_json",
             "--mode=check needs data.train_json and/or data.val_json")  # fmt: skip
    for key in wanted:
        if key not in ("data.train_json", "data.val_json"):
            need(False, "eval.split", "'train' or 'val' for COCO-VID data")
            continue
        need(bool(d[key.split(".")[1]]), key, "data.source=cocovid needs this COCO-VID file")
    for key in ("image_root", "train_json", "val_json"):
        if d[key] and not os.path.exists(d[key]):
            raise ilsvrc.IlsvrcFormatError(
                d[key], f"no such {'folder' if key == 'image_root' else 'file'} (data.{key})"
            )


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_dtype(config: Any, key: str) -> bool:
    section, name = key.split(".")
    value = config[section][name]
    if key == "model.flow_dtype" and not value:
        return True  # empty: model.dtype
    try:
        jnp.dtype(value)
    except TypeError:
        return False
    return True


def _plain(value: Any) -> Any:
    """A config value as the user wrote it (tuples, not ConfigDict internals)."""
    return tuple(value) if isinstance(value, list | tuple) else value
