"""RetinaNet anchor matching and per-anchor training targets, with static shapes.

Ground truth comes padded to a fixed G with a validity mask, so every function here is jit-able
and vmappable over a batch of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssvd_jax.ops import boxes as box_ops

Array = jax.Array


def match_anchors(
    anchors_Ax4: Array,
    gt_boxes_Gx4: Array,
    gt_valid_G: Array,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    legacy: bool = False,
) -> tuple[Array, Array]:
    """Assigns each anchor to a ground-truth box, maskrcnn-benchmark `Matcher` semantics.

    Each anchor takes its highest-IoU valid ground truth (first one on ties). Best IoU >= fg_iou:
    foreground (1); < bg_iou: background (0); in between: ignored (-1). With
    `allow_low_quality`, every anchor whose IoU with some valid ground truth equals that ground
    truth's maximum IoU over anchors (ties: all of them) becomes foreground too, and, as in
    maskrcnn-benchmark's `set_low_quality_matches_` (also Detectron2's), keeps its *own* argmax
    ground truth, which is normally but not necessarily the one it was best for. One deviation:
    a ground truth whose best IoU is 0 (it overlaps no anchor, e.g. a zero-area box in
    continuous mode) promotes nothing, where the original would turn every anchor foreground.

    Padded ground truth (gt_valid False) never matches; with no valid ground truth every anchor
    is background.

    Returns:
      (matched_gt_idx [A] int32, meaningful where labels == 1; labels [A] int32 in {1, 0, -1}).
    """
    num_anchors = anchors_Ax4.shape[0]
    if gt_boxes_Gx4.shape[0] == 0:
        return jnp.zeros((num_anchors,), jnp.int32), jnp.zeros((num_anchors,), jnp.int32)
    gt_valid_G = gt_valid_G.astype(bool)
    # Invalid rows get IoU -1: below every real IoU (>= 0), so they never win an argmax and
    # leave an all-padded image with best IoU -1 < bg_iou, i.e. all background.
    iou_GxA = jnp.where(gt_valid_G[:, None], box_ops.iou(gt_boxes_Gx4, anchors_Ax4, legacy), -1.0)
    best_iou_A = jnp.max(iou_GxA, axis=0)
    matched_A = jnp.argmax(iou_GxA, axis=0).astype(jnp.int32)
    labels_A = jnp.where(best_iou_A >= fg_iou, 1, jnp.where(best_iou_A < bg_iou, 0, -1)).astype(
        jnp.int32
    )
    if allow_low_quality:
        best_iou_G = jnp.max(iou_GxA, axis=1)
        is_best_GxA = (iou_GxA == best_iou_G[:, None]) & (best_iou_G[:, None] > 0)
        labels_A = jnp.where(jnp.any(is_best_GxA, axis=0), 1, labels_A)
    return matched_A, labels_A


class AnchorTargets(NamedTuple):
    """Per-anchor training targets (leading batch dims when vmapped)."""

    cls_targets: Array  # [A, C] float32 one-hot of the matched class; zeros for bg / ignored
    box_targets: Array  # [A, 4] float32 encoded deltas for fg anchors; zeros elsewhere
    fg_mask: Array  # [A] bool, label == 1
    valid_mask: Array  # [A] bool, label != -1 (anchors that enter the class loss)
    matched_gt_idx: Array  # [A] int32, meaningful where fg_mask


def build_targets(
    anchors_Ax4: Array,
    gt_boxes_Gx4: Array,
    gt_labels_G: Array,
    gt_valid_G: Array,
    num_classes: int,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    legacy: bool = False,
) -> AnchorTargets:
    """RetinaNet targets of one image: `match_anchors`, then one-hot classes and encoded boxes.

    gt_labels_G are 0-based class ids 0..num_classes-1 (the release's labels 1..30 minus 1):
    there is no background class, a background anchor has an all-zero class row. vmap over the
    leading axis for a batch.
    """
    matched_A, labels_A = match_anchors(
        anchors_Ax4, gt_boxes_Gx4, gt_valid_G, fg_iou, bg_iou, allow_low_quality, legacy
    )
    fg_A = labels_A == 1
    num_anchors = anchors_Ax4.shape[0]
    if gt_boxes_Gx4.shape[0] == 0:
        zeros_Ax4 = jnp.zeros((num_anchors, 4), jnp.float32)
        return AnchorTargets(
            jnp.zeros((num_anchors, num_classes), jnp.float32),
            zeros_Ax4,
            fg_A,
            labels_A != -1,
            matched_A,
        )
    cls_A = jnp.asarray(gt_labels_G, jnp.int32)[matched_A]
    cls_targets_AxC = jax.nn.one_hot(cls_A, num_classes, dtype=jnp.float32) * fg_A[:, None]
    # Non-foreground anchors encode against themselves (deltas 0): encoding a padded or far
    # away box could give log(0) = -inf, whose NaN gradient would leak through the mask.
    target_Ax4 = jnp.where(fg_A[:, None], gt_boxes_Gx4[matched_A], anchors_Ax4)
    box_targets_Ax4 = box_ops.encode(anchors_Ax4, target_Ax4, weights, legacy)
    box_targets_Ax4 = jnp.where(fg_A[:, None], box_targets_Ax4, 0.0)
    return AnchorTargets(
        cls_targets_AxC, box_targets_Ax4.astype(jnp.float32), fg_A, labels_A != -1, matched_A
    )
