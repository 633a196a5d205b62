"""From the model's raw per-level outputs to boxes: anchors of an input size, flattening in the
release's order, and `detect`, the release's post-processing with late fusion (REFERENCE_SPEC
§5.4). `create_detect` binds a config's post-processing numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ssvd_jax.models.fpn import LEVELS
from ssvd_jax.ops import anchors as anchors_lib
from ssvd_jax.ops import postprocess

Array = jax.Array


def anchors_for(image_size: int | tuple[int, int], anchor_config: Any) -> list[np.ndarray]:
    """Per-level anchors [H*W*A, 4] (release order) for an input size."""
    return anchors_lib.generate_anchors_per_level(
        image_size,
        strides=tuple(anchor_config.strides),
        sizes=tuple(anchor_config.sizes),
        ratios=tuple(anchor_config.ratios),
        scales_per_octave=anchor_config.scales_per_octave,
    )


def flatten_outputs(
    outputs: dict[str, dict[str, Array]], num_classes: int
) -> tuple[list[Array], list[Array]]:
    """Per-level [N,H,W,A*K] / [N,H,W,A*4] -> lists of [N,H*W*A,K] / [N,H*W*A,4], P3..P6."""
    logits, deltas = [], []
    for level in LEVELS:
        c = outputs["cls_logits"][level]
        d = outputs["box_deltas"][level]
        logits.append(c.reshape(c.shape[0], -1, num_classes))
        deltas.append(d.reshape(d.shape[0], -1, 4))
    return logits, deltas


def detect(
    outputs: dict[str, dict[str, Array]] | list[dict[str, dict[str, Array]]],
    per_level_anchors: list[np.ndarray],
    image_size: int | tuple[int, int],
    num_classes: int,
    *,
    score_threshold: float,
    pre_nms_top_n: int,
    nms_iou: float,
    max_detections: int,
    legacy: bool,
) -> postprocess.Detections:
    """The release's post-processing (REFERENCE_SPEC §5.4) on a batch of detector outputs.

    `outputs` is one stream's {'cls_logits', 'box_deltas'} or a list of streams' (SSVD's
    motion and sampling streams, in that order: their position is the `stream` id of each
    detection). Per stream and level: sigmoid, score > threshold, top-`pre_nms_top_n`, decode,
    clip; then one class-wise NMS over all candidates of all streams (late fusion) and the best
    `max_detections`. Returns fixed-size `Detections` [N, max_detections] in input-image pixels
    with 0-based labels and a validity mask. jit-able (bind the keyword settings statically).
    """
    streams = [outputs] if isinstance(outputs, dict) else list(outputs)
    flat = [flatten_outputs(o, num_classes) for o in streams]
    return postprocess.detect_from_outputs(
        [logits for logits, _ in flat],
        [deltas for _, deltas in flat],
        per_level_anchors,
        image_size,
        score_threshold=score_threshold,
        pre_nms_top_n=pre_nms_top_n,
        nms_iou=nms_iou,
        max_detections=max_detections,
        legacy=legacy,
        level_ids=(3, 4, 5, 6),
    )


def create_detect(config: Any) -> Callable[..., postprocess.Detections]:
    """`detect` with the config's input size, anchors, class count and `postprocess` numbers
    bound: outputs (one stream's or a list of streams') -> `Detections`."""
    post = config.postprocess
    return functools.partial(
        detect,
        per_level_anchors=anchors_for(config.data.image_size, config.model.anchors),
        image_size=config.data.image_size,
        num_classes=config.model.num_classes,
        score_threshold=post.score_threshold,
        pre_nms_top_n=post.pre_nms_top_n,
        nms_iou=post.nms_iou,
        max_detections=post.max_detections,
        legacy=post.legacy_boxes,
    )
