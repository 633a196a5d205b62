"""The single-frame one-stage detector: ResNet body -> FPN P3-P6 -> RetinaNet heads.

This is SSVD's phase-1 model and its `single_frame` variant. `SingleFrameDetector` returns raw
per-level outputs; `detect` turns them into boxes with the release's post-processing
(REFERENCE_SPEC §5.4). `create_single_frame_detector` is the one place a model config becomes
constructor arguments.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssvd_jax.models.fpn import FPN, LEVELS
from ssvd_jax.models.heads import RetinaHead
from ssvd_jax.models.resnet import RESNET_SPECS, ResNet
from ssvd_jax.ops import anchors as anchors_lib
from ssvd_jax.ops import postprocess

Array = jax.Array


class SingleFrameDetector(nn.Module):
    """images [N,H,W,3] (normalised BGR) -> {'cls_logits': {level: ...}, 'box_deltas': {...}}."""

    backbone: ResNet
    fpn_channels: int = 256
    num_classes: int = 30
    num_anchors: int = 9
    head_num_convs: int = 2
    head_width: int = 256
    prior_prob: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images_NxHxWx3: Array) -> dict[str, dict[str, Array]]:
        features = self.backbone(images_NxHxWx3)
        pyramid = FPN(self.fpn_channels, dtype=self.dtype, name="fpn")(features)
        head = RetinaHead(
            num_classes=self.num_classes,
            num_anchors=self.num_anchors,
            num_convs=self.head_num_convs,
            width=self.head_width,
            prior_prob=self.prior_prob,
            dtype=self.dtype,
            name="head",
        )
        return head(pyramid)


def create_backbone(backbone_config: Any, dtype: Any = jnp.float32, name: str = "backbone"):
    """A ResNet body from the `model.backbone` config section."""
    block, stages = RESNET_SPECS[backbone_config.depth]
    return ResNet(
        stage_sizes=tuple(backbone_config.stage_sizes) or stages,
        block=backbone_config.block or block,
        stem_width=backbone_config.stem_width,
        base_planes=backbone_config.base_planes,
        groups=backbone_config.groups,
        width_per_group=backbone_config.width_per_group,
        stride_in_1x1=backbone_config.stride_in_1x1,
        bn_eps=backbone_config.bn_eps,
        dcn_stages=tuple(backbone_config.dcn_stages),
        dtype=dtype,
        name=name,
    )


def create_single_frame_detector(model_config: Any) -> SingleFrameDetector:
    """The detector described by a `config.model` section."""
    dtype = jnp.dtype(model_config.dtype)
    a = model_config.anchors
    return SingleFrameDetector(
        backbone=create_backbone(model_config.backbone, dtype),
        fpn_channels=model_config.fpn_channels,
        num_classes=model_config.num_classes,
        num_anchors=len(a.ratios) * a.scales_per_octave,
        head_num_convs=model_config.head.num_convs,
        head_width=model_config.head.width,
        prior_prob=model_config.head.prior_prob,
        dtype=dtype,
    )


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
    score_threshold: float = 0.1,
    pre_nms_top_n: int = 1000,
    nms_iou: float = 0.45,
    max_detections: int = 100,
    legacy: bool = True,
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
