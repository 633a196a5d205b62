"""Training pieces: the detection loss of one stream (the paper's Eq. 4 term) and a
single-device train step for the single-frame detector.

Eq. 4 sums, per stream, a sigmoid focal loss over all non-ignored anchors and a smooth-L1 box
loss over foreground anchors, both normalised by the number of foreground anchors. Targets come
from RetinaNet matching of the reference frame's boxes to the anchors (`ssvd_jax.ops.matching`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssvd_jax.models import detector as detector_lib
from ssvd_jax.ops import losses, matching

Array = jax.Array


@flax.struct.dataclass
class LossSettings:
    """Loss hyper-parameters (static under jit)."""

    num_classes: int = flax.struct.field(pytree_node=False)
    fg_iou: float = flax.struct.field(pytree_node=False, default=0.5)
    bg_iou: float = flax.struct.field(pytree_node=False, default=0.4)
    allow_low_quality: bool = flax.struct.field(pytree_node=False, default=True)
    focal_alpha: float = flax.struct.field(pytree_node=False, default=0.25)
    focal_gamma: float = flax.struct.field(pytree_node=False, default=2.0)
    smooth_l1_beta: float = flax.struct.field(pytree_node=False, default=0.11)
    box_weights: tuple[float, ...] = flax.struct.field(
        pytree_node=False, default=(1.0, 1.0, 1.0, 1.0)
    )
    legacy: bool = flax.struct.field(pytree_node=False, default=True)


def loss_settings_from_config(config: Any) -> LossSettings:
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
    """RetinaNet targets of a batch (computed once, shared by every stream's loss)."""
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
    logits_per_level, deltas_per_level = detector_lib.flatten_outputs(outputs, settings.num_classes)
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
    anchors_Ax4: Array,
    gt_boxes_BxGx4: Array,
    gt_labels_BxG: Array,
    gt_valid_BxG: Array,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4: the sum over streams of focal + smooth-L1 losses against the reference frame's
    boxes. Returns (total, {'<stream>/cls', '<stream>/box', 'num_fg'})."""
    targets = anchor_targets(anchors_Ax4, gt_boxes_BxGx4, gt_labels_BxG, gt_valid_BxG, settings)
    total = jnp.zeros((), jnp.float32)
    terms: dict[str, Array] = {}
    for stream, outputs in outputs_by_stream.items():
        t = stream_loss(outputs, targets, settings, normalizer)
        terms[f"{stream}/cls"], terms[f"{stream}/box"] = t["cls"], t["box"]
        terms["num_fg"] = t["num_fg"]
        total = total + t["cls"] + t["box"]
    return total, terms


@flax.struct.dataclass
class TrainState:
    step: Array
    params: Any
    batch_stats: Any  # frozen BN statistics: carried, never updated
    opt_state: Any
    apply_fn: Any = flax.struct.field(pytree_node=False)
    tx: Any = flax.struct.field(pytree_node=False)


def create_train_state(model, variables: dict[str, Any], tx: optax.GradientTransformation):
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )


def batch_loss(
    params: Any,
    batch_stats: Any,
    apply_fn: Any,
    batch: dict[str, Array],
    anchors_Ax4: Array,
    settings: LossSettings,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4 on a batch, for the single-frame detector or SSVD.

    batch: 'images' [B,H,W,3] normalised reference frames, 'supports' [B,S,H,W,3] (SSVD only),
    'boxes' [B,G,4], 'labels' [B,G] (0-based), 'valid' [B,G].
    """
    variables = {"params": params, "batch_stats": batch_stats}
    if "supports" in batch:
        outputs = apply_fn(variables, batch["images"], batch["supports"])
    else:
        outputs = {"single": apply_fn(variables, batch["images"])}
    return detection_loss(
        outputs, anchors_Ax4, batch["boxes"], batch["labels"], batch["valid"], settings
    )


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    anchors_Ax4: Array,
    settings: LossSettings,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on one device (the pmap-ed step builds on `batch_loss` too)."""
    (loss, terms), grads = jax.value_and_grad(batch_loss, has_aux=True)(
        state.params, state.batch_stats, state.apply_fn, batch, anchors_Ax4, settings
    )
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, loss=loss, grad_norm=optax.global_norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def all_anchors(per_level_anchors: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(per_level_anchors), axis=0)
