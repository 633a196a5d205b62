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
from ssvd_jax.ops import correlation, losses, matching

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


# ----------------------------------------------------------------------------------------------
# PWC-Net pretraining (the paper's FlyingChairs step): the multi-scale end-point-error loss


def flow_at_level(flow_NxHxWx2: Array, height: int, width: int) -> Array:
    """A full-resolution flow (input pixels) average-pooled to a level's (height, width) grid,
    still in input pixels (PWC-Net's raw outputs share one unit at every level)."""
    n, full_h, full_w, _ = flow_NxHxWx2.shape
    fh, fw = full_h // height, full_w // width
    cropped = flow_NxHxWx2[:, : height * fh, : width * fw]
    return cropped.reshape(n, height, fh, width, fw, 2).mean(axis=(2, 4))


def _safe_norm(x: Array) -> Array:
    """The L2 norm over the last axis with a zero (not NaN) gradient where it is 0 (a zero
    flow prediction on a zero ground truth: PWC-Net's flow layers start at zero)."""
    sq = jnp.sum(x * x, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def end_point_errors(raw_flows: dict[str, Array], gt_flow_NxHxWx2: Array, raw_unit: float):
    """Per level ('L2'..'L6'), the per-pixel end-point error [N,h,w] in input pixels of the
    raw flow against the pooled ground truth; and 'full': L2's flow upsampled bilinearly to the
    input resolution against the ground truth itself [N,H,W]."""
    errors = {}
    for name, raw in raw_flows.items():
        gt = flow_at_level(gt_flow_NxHxWx2, *raw.shape[1:3])
        errors[name] = _safe_norm(raw * raw_unit - gt)
    fine = raw_flows["L2"] * raw_unit
    n, height, width, _ = gt_flow_NxHxWx2.shape
    up = jax.image.resize(fine, (n, height, width, 2), method="bilinear")
    errors["full"] = _safe_norm(up - gt_flow_NxHxWx2)
    return errors


def flow_loss(
    raw_flows: dict[str, Array],
    gt_flow_NxHxWx2: Array,
    level_weights: dict[str, float],
    raw_unit: float,
) -> tuple[Array, dict[str, Array]]:
    """PWC-Net's training loss (Sun et al., Eq. 3 without the weight decay, which the
    optimizer adds): per level, alpha_l times the sum over pixels of the L2 distance between the
    raw flow and the ground truth pooled to that level and expressed in raw units, averaged
    over the batch. Returns (loss, {'epe_<level>', 'epe', 'zero_epe'} in input pixels: the
    per-level errors, the full-resolution error of the finest flow, and that of zero flow)."""
    n = gt_flow_NxHxWx2.shape[0]
    errors = end_point_errors(raw_flows, gt_flow_NxHxWx2, raw_unit)
    loss = sum(level_weights[name] * jnp.sum(errors[name]) / raw_unit / n for name in level_weights)
    metrics = {f"epe_{name}": jnp.mean(errors[name]) for name in raw_flows}
    metrics["epe"] = jnp.mean(errors["full"])
    metrics["zero_epe"] = jnp.mean(jnp.linalg.norm(gt_flow_NxHxWx2, axis=-1))
    return loss, metrics


def matching_loss(
    pyramid1: dict[str, Array],
    pyramid2: dict[str, Array],
    gt_flow_NxHxWx2: Array,
    level_weights: dict[str, float],
    level_strides: dict[str, int],
    scale: float,
    max_displacement: int,
) -> Array:
    """An auxiliary loss that teaches PWC-Net's extractor to match (for training from scratch):
    per level, the cosine similarities of each pixel's features in image 1 with those of the
    (2d+1)^2 pixels around it in image 2 (a cost volume of unit-length features, no warping),
    times `scale`, as the logits of a classification of the pixel's displacement, against the
    ground truth pooled to the level and rounded to its grid; pixels whose displacement is out
    of range are left out, and the mean is over the rest. Random features match poorly (the
    PWC-Net decoders then see no signal in their cost volumes and learn nothing for thousands
    of steps); this gives the features a dense, direct gradient. Unit-length features, because
    with the raw correlation (a product of the two maps) shrinking both to zero is the quickest
    way down from a confident wrong start, and zero is a saddle the loss never leaves."""
    d = max_displacement
    side = 2 * d + 1
    total = 0.0
    for name, weight in level_weights.items():
        if not weight:
            continue
        f1, f2 = (x.astype(jnp.float32) for x in (pyramid1[name], pyramid2[name]))
        f1 = f1 * jax.lax.rsqrt(jnp.sum(f1 * f1, axis=-1, keepdims=True) + 1e-12)
        f2 = f2 * jax.lax.rsqrt(jnp.sum(f2 * f2, axis=-1, keepdims=True) + 1e-12)
        # cost_volume averages over the C channels: times C, the cosine similarities.
        logits = correlation.cost_volume(f1, f2, d) * (f1.shape[-1] * scale)
        gt = flow_at_level(gt_flow_NxHxWx2, *f1.shape[1:3]) / level_strides[name]
        cell = jnp.round(gt).astype(jnp.int32)
        valid = jnp.all(jnp.abs(cell) <= d, axis=-1)
        target = (cell[..., 1] + d) * side + (cell[..., 0] + d)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        nll = -jnp.take_along_axis(log_p, jnp.clip(target, 0, side * side - 1)[..., None], -1)
        nll = jnp.where(valid, nll[..., 0], 0.0)
        total = total + weight * jnp.sum(nll) / jnp.maximum(jnp.sum(valid), 1)
    return total
