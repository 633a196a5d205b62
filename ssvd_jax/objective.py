"""The paper's Eq. 4: RetinaNet targets of the reference frame's boxes and the detection loss of
any variant's outputs.

Eq. 4 sums, per output stream, a sigmoid focal loss over all non-ignored anchors and a smooth-L1
box loss over foreground anchors, both normalised by the number of foreground anchors. Targets
come from RetinaNet matching of the reference frame's boxes to the anchors
(`ssvd_jax.ops.matching`) and are shared by every stream. With data parallelism the caller
passes the global normaliser (see `ssvd_jax.train.train_step`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp

from ssvd_jax.models.outputs import flatten_outputs
from ssvd_jax.ops import losses, matching

Array = jax.Array


@flax.struct.dataclass
class LossSettings:
    """Loss hyper-parameters (static under jit); `create_loss_settings` fills them from a config."""

    num_classes: int = flax.struct.field(pytree_node=False)
    fg_iou: float = flax.struct.field(pytree_node=False)
    bg_iou: float = flax.struct.field(pytree_node=False)
    allow_low_quality: bool = flax.struct.field(pytree_node=False)
    focal_alpha: float = flax.struct.field(pytree_node=False)
    focal_gamma: float = flax.struct.field(pytree_node=False)
    smooth_l1_beta: float = flax.struct.field(pytree_node=False)
    box_weights: tuple[float, ...] = flax.struct.field(pytree_node=False)
    legacy: bool = flax.struct.field(pytree_node=False)


def create_loss_settings(config: Any) -> LossSettings:
    loss = config.loss
    return LossSettings(
        num_classes=config.model.num_classes,
        fg_iou=loss.fg_iou,
        bg_iou=loss.bg_iou,
        allow_low_quality=loss.allow_low_quality,
        focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma,
        smooth_l1_beta=loss.smooth_l1_beta,
        box_weights=tuple(loss.box_weights),
        legacy=loss.legacy_boxes,
    )


def anchor_targets(
    anchors_Ax4: Array,
    gt_boxes_BxGx4: Array,
    gt_labels_BxG: Array,
    gt_valid_BxG: Array,
    settings: LossSettings,
) -> matching.AnchorTargets:
    """RetinaNet targets of a batch of reference frames (computed once, shared by every
    stream's loss)."""
    return jax.vmap(
        functools.partial(
            matching.build_targets,
            num_classes=settings.num_classes,
            fg_iou=settings.fg_iou,
            bg_iou=settings.bg_iou,
            allow_low_quality=settings.allow_low_quality,
            weights=settings.box_weights,
            legacy=settings.legacy,
        ),
        in_axes=(None, 0, 0, 0),
    )(anchors_Ax4, gt_boxes_BxGx4, gt_labels_BxG, gt_valid_BxG)


def stream_loss(
    outputs: dict[str, dict[str, Array]],
    targets: matching.AnchorTargets,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> dict[str, Array]:
    """Focal + smooth-L1 loss of one stream's raw outputs: {'cls', 'box', 'num_fg'}."""
    logits_per_level, deltas_per_level = flatten_outputs(outputs, settings.num_classes)
    logits_BxAxC = jnp.concatenate(logits_per_level, axis=1).astype(jnp.float32)
    deltas_BxAx4 = jnp.concatenate(deltas_per_level, axis=1).astype(jnp.float32)
    return losses.retinanet_loss(
        logits_BxAxC,
        deltas_BxAx4,
        targets.cls_targets,
        targets.box_targets,
        targets.fg_mask,
        targets.valid_mask,
        alpha=settings.focal_alpha,
        gamma=settings.focal_gamma,
        beta=settings.smooth_l1_beta,
        normalizer=normalizer,
    )


def detection_loss(
    outputs_by_stream: dict[str, dict[str, dict[str, Array]]],
    targets: matching.AnchorTargets,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4: the sum over the model's output streams (`model(frames)`) of focal + smooth-L1
    losses against the reference frame's targets. Returns (total, {'<stream>/cls',
    '<stream>/box', 'num_fg'}); `normalizer` defaults to this batch's foreground count."""
    total = jnp.zeros((), jnp.float32)
    terms: dict[str, Array] = {}
    for stream, outputs in outputs_by_stream.items():
        t = stream_loss(outputs, targets, settings, normalizer)
        terms[f"{stream}/cls"], terms[f"{stream}/box"] = t["cls"], t["box"]
        terms["num_fg"] = t["num_fg"]
        total = total + t["cls"] + t["box"]
    return total, terms
