"""RetinaNet losses: sigmoid focal loss, smooth L1, and their per-anchor combination.

The release ships no training code; these follow the paper's Eq. 4 (focal loss for classes,
smooth L1 for boxes, per stream) with RetinaNet's usual normalisation by the number of
foreground anchors. Targets come from `ssvd_jax.ops.matching.build_targets`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def sigmoid_focal_loss(
    logits: Array, targets: Array, alpha: float = 0.25, gamma: float = 2.0
) -> Array:
    """Elementwise focal loss, equal to `torchvision.ops.sigmoid_focal_loss(reduction='none')`.

    loss = alpha_t * (1 - p_t)^gamma * BCE(logits, targets), alpha_t = alpha for targets 1 and
    1 - alpha for targets 0 (alpha < 0 disables it, as in torchvision). Written in stable forms
    that never subtract nearly equal numbers: BCE = t * softplus(-x) + (1 - t) * softplus(x)
    (= softplus(x) - t x, also for soft targets) and 1 - p_t = t * sigmoid(-x) +
    (1 - t) * sigmoid(x) (= torchvision's p + t - 2 p t). Small losses of confident logits keep
    full relative precision, nothing overflows for large |x|, and gradients stay finite.
    """
    logits = logits.astype(jnp.float32)
    targets = targets.astype(jnp.float32)
    ce = targets * jax.nn.softplus(-logits) + (1.0 - targets) * jax.nn.softplus(logits)
    one_minus_pt = targets * jax.nn.sigmoid(-logits) + (1.0 - targets) * jax.nn.sigmoid(logits)
    # gamma = 0 is plain (alpha-weighted) BCE; skipping the factor avoids the NaN gradient of
    # x ** 0 at x = 0 for saturated logits.
    loss = ce * one_minus_pt**gamma if gamma != 0 else ce
    if alpha >= 0:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss


def smooth_l1_loss(pred: Array, target: Array, beta: float = 1.0 / 9) -> Array:
    """Elementwise smooth L1 (Huber / beta): 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta.

    beta is where the quadratic part hands over to L1. maskrcnn-benchmark's default is 1/9;
    its RetinaNet uses `BBOX_REG_BETA = 0.11` (our configs' `loss.smooth_l1_beta`). beta = 0 is
    plain L1.
    """
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    if beta <= 0:
        return diff
    return jnp.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def retinanet_loss(
    cls_logits_AxC: Array,
    box_deltas_Ax4: Array,
    cls_targets_AxC: Array,
    box_targets_Ax4: Array,
    fg_mask_A: Array,
    valid_mask_A: Array,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 0.11,
    normalizer: Array | float | None = None,
) -> dict[str, Array]:
    """Focal + smooth L1 loss of one stream's outputs against matched targets.

    Shapes may carry any leading batch dims ([B, A, C] etc.). The focal loss is summed over the
    non-ignored anchors (`valid_mask`) and all classes; smooth L1 is summed over the four
    coordinates of foreground anchors. Both are divided by max(1, number of foreground anchors
    in the whole batch), not per image, so every foreground anchor weighs the same (RetinaNet /
    Detectron2 normalisation; maskrcnn-benchmark instead divides the class loss by
    num_fg + num_images and the box loss by 4 * num_fg). Under pmap, pass `normalizer` (e.g.
    max(1, psum of num_fg)) to normalise by the global count instead.

    Returns {'cls': scalar, 'box': scalar, 'num_fg': scalar float32 (this batch's count)}.
    """
    fg = fg_mask_A.astype(jnp.float32)
    valid = valid_mask_A.astype(jnp.float32)
    num_fg = jnp.sum(fg)
    if normalizer is None:
        normalizer = jnp.maximum(num_fg, 1.0)
    focal = sigmoid_focal_loss(cls_logits_AxC, cls_targets_AxC, alpha, gamma)
    cls_sum = jnp.sum(focal * valid[..., None])
    box_sum = jnp.sum(smooth_l1_loss(box_deltas_Ax4, box_targets_Ax4, beta) * fg[..., None])
    return {"cls": cls_sum / normalizer, "box": box_sum / normalizer, "num_fg": num_fg}
