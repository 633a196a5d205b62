"""The release's test-time post-processing and late fusion (REFERENCE_SPEC §5.4), static shapes.

Per stream and per level: sigmoid; candidates are (anchor, class) pairs with score > 0.1; keep the
top min(count, 1000) by score; decode them against their anchors ("+1" coder) and clip to the
image. Levels are concatenated (no per-stream NMS). Late fusion concatenates the streams' candidates
and runs one class-wise NMS (IoU 0.45, "+1" areas), then caps at 100 detections.

Every stage has a fixed output size with a `valid` mask instead of the release's variable-length
lists, so the whole chain jits and vmaps over images.

Conventions:
* labels are 0-based class ids 0..C-1; the release's labels 1..30 are these + 1.
* the cap: greedy class-wise NMS in global score order keeps survivors in decreasing score
  order, so stopping after `max_detections` keeps the same set as the release's "score >= the
  100th-largest score", except when several survivors tie at that score (the release then keeps
  them all, we keep the lower-index ones).
* outputs are in decreasing score order (the release's order is class-major, which carries no
  meaning).
* bookkeeping: every candidate and detection carries its stream id, level id and anchor index
  within its level ((y * W + x) * A + a), the keys the golden fixture uses.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssvd_jax.ops import boxes as box_ops
from ssvd_jax.ops import nms as nms_ops

Array = jax.Array


class Detections(NamedTuple):
    """A fixed-size list of boxes; rows where `valid` is False are padding (all fields 0).

    Used both for pre-NMS candidates and final detections; fields get leading batch dims under
    vmap.
    """

    boxes: Array  # [K, 4] float32 xyxy in input-image pixels
    scores: Array  # [K] float32 sigmoid scores
    labels: Array  # [K] int32, 0-based class ids
    valid: Array  # [K] bool
    stream: Array  # [K] int32 stream id (e.g. 0 = motion, 1 = sampling)
    level: Array  # [K] int32 level id (as given: e.g. 3..6 for P3..P6)
    anchor: Array  # [K] int32 anchor index within the level


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def level_candidates(
    cls_logits_HWAxC: Array,
    box_deltas_HWAx4: Array,
    anchors_HWAx4: Array,
    image_size: int | Sequence[int],
    score_threshold: float = 0.1,
    pre_nms_top_n: int = 1000,
    legacy: bool = True,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = box_ops.DEFAULT_SCALE_CLAMP,
    level: int = 0,
    stream: int = 0,
) -> Detections:
    """Candidates of one level of one image (the release's `forward_for_single_feature_map`).

    Args:
      cls_logits_HWAxC: logits [H*W*A, C], rows in anchor order (y, x, a).
      box_deltas_HWAx4: deltas (dx, dy, dw, dh) [H*W*A, 4].
      anchors_HWAx4: that level's anchors.
      image_size: int or (height, width), for clipping.
      score_threshold: a (anchor, class) pair is a candidate when sigmoid(logit) > this.
      pre_nms_top_n: at most this many candidates (highest scores) are kept.
      legacy, weights, clamp: box coder settings (`boxes.decode`).
      level, stream: ids written into the bookkeeping fields.

    Returns:
      Detections with K = min(pre_nms_top_n, H*W*A*C) rows, in decreasing score order; the
      valid ones are exactly the top min(count, pre_nms_top_n) pairs above the threshold.
    """
    num_anchors, num_classes = cls_logits_HWAxC.shape
    height, width = _image_hw(image_size)
    scores_flat = jax.nn.sigmoid(cls_logits_HWAxC.astype(jnp.float32)).reshape(-1)
    k = min(pre_nms_top_n, num_anchors * num_classes)
    # Pairs at or below the threshold rank below every candidate, so top_k over the masked
    # scores returns the release's top min(count, k) candidates first, then padding.
    masked = jnp.where(scores_flat > score_threshold, scores_flat, -jnp.inf)
    top_scores, flat_idx = jax.lax.top_k(masked, k)
    valid = top_scores > -jnp.inf
    anchor_idx = (flat_idx // num_classes).astype(jnp.int32)
    labels = (flat_idx % num_classes).astype(jnp.int32)
    decoded = box_ops.decode(
        anchors_HWAx4[anchor_idx], box_deltas_HWAx4[anchor_idx], weights, legacy, clamp
    )
    # Boxes are clipped to the image; `remove_small_boxes(min_size=0)` in the release removes
    # nothing (a clipped box never has a negative "+1" width), so it has no counterpart here.
    boxes = box_ops.clip(decoded, height, width, legacy)
    zero = jnp.zeros_like(anchor_idx)
    return Detections(
        boxes=jnp.where(valid[:, None], boxes, 0.0),
        scores=jnp.where(valid, top_scores, 0.0),
        labels=jnp.where(valid, labels, 0),
        valid=valid,
        stream=jnp.where(valid, zero + stream, 0),
        level=jnp.where(valid, zero + level, 0),
        anchor=jnp.where(valid, anchor_idx, 0),
    )


def concat_detections(parts: Sequence[Detections]) -> Detections:
    """Concatenates Detections along the box axis (the last axis of every field but boxes)."""
    return Detections(
        *(
            jnp.concatenate([getattr(p, f) for p in parts], axis=-2 if f == "boxes" else -1)
            for f in Detections._fields
        )
    )


def postprocess(
    per_level_logits: Sequence[Array],
    per_level_deltas: Sequence[Array],
    per_level_anchors: Sequence[Array],
    image_size: int | Sequence[int],
    score_threshold: float = 0.1,
    pre_nms_top_n: int = 1000,
    legacy: bool = True,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = box_ops.DEFAULT_SCALE_CLAMP,
    level_ids: Sequence[int] | None = None,
    stream: int = 0,
) -> Detections:
    """One stream's candidates for one image: `level_candidates` per level, concatenated.

    per_level_logits [H*W*A, C], per_level_deltas [H*W*A, 4] and per_level_anchors [H*W*A, 4]
    are lists over levels (P3..P6). `level_ids` name the levels in the bookkeeping (default
    0, 1, ...; pass (3, 4, 5, 6) for the fixture's P3..P6 numbering).
    """
    if level_ids is None:
        level_ids = range(len(per_level_logits))
    parts = [
        level_candidates(
            logits,
            deltas,
            anchors,
            image_size,
            score_threshold,
            pre_nms_top_n,
            legacy,
            weights,
            clamp,
            level=lid,
            stream=stream,
        )
        for logits, deltas, anchors, lid in zip(
            per_level_logits, per_level_deltas, per_level_anchors, level_ids, strict=True
        )
    ]
    return concat_detections(parts)


def fuse_and_select(
    boxes_Nx4: Array,
    scores_N: Array,
    labels_N: Array,
    valid_N: Array,
    nms_iou: float = 0.45,
    max_detections: int = 100,
    legacy: bool = True,
) -> tuple[Array, Array]:
    """Late fusion of one image: class-wise NMS over all candidates, then the detection cap.

    The candidates may come from several streams concatenated. Returns (indices
    [max_detections] int32 into the candidate list, valid [max_detections] bool), in decreasing
    score order; see the module docstring for how the cap relates to the release's.
    """
    return nms_ops.batched_nms(
        boxes_Nx4, scores_N, labels_N, nms_iou, max_detections, legacy=legacy, valid=valid_N
    )


def select_detections(candidates: Detections, keep: Array, keep_valid: Array) -> Detections:
    """Gathers the rows `keep` of `candidates` (one image); rows with keep_valid False are 0."""

    def take(x: Array) -> Array:
        picked = x[keep]
        mask = keep_valid.reshape(keep_valid.shape + (1,) * (picked.ndim - 1))
        return jnp.where(mask, picked, jnp.zeros_like(picked))

    picked = Detections(*(take(x) for x in candidates))
    return picked._replace(valid=keep_valid)


def fuse_candidates(
    candidates: Detections, nms_iou: float = 0.45, max_detections: int = 100, legacy: bool = True
) -> Detections:
    """`fuse_and_select` on a Detections list of one image, returning the detections."""
    keep, keep_valid = fuse_and_select(
        candidates.boxes,
        candidates.scores,
        candidates.labels,
        candidates.valid,
        nms_iou,
        max_detections,
        legacy,
    )
    return select_detections(candidates, keep, keep_valid)


def detect_from_outputs(
    per_stream_logits: Sequence[Sequence[Array]],
    per_stream_deltas: Sequence[Sequence[Array]],
    per_level_anchors: Sequence[Array],
    image_size: int | Sequence[int],
    score_threshold: float = 0.1,
    pre_nms_top_n: int = 1000,
    nms_iou: float = 0.45,
    max_detections: int = 100,
    legacy: bool = True,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = box_ops.DEFAULT_SCALE_CLAMP,
    level_ids: Sequence[int] | None = None,
) -> Detections:
    """Raw head outputs of a batch of images -> final detections [B, max_detections].

    per_stream_logits[s][l] is stream s, level l: [B, H*W*A, C]; per_stream_deltas likewise
    [B, H*W*A, 4] (a single-frame detector passes one stream: `[logits_per_level]`). Stream ids
    in the bookkeeping are the positions in these lists. Each image is post-processed per stream
    and level, all candidates are fused by one class-wise NMS, and the top `max_detections` are
    kept; the per-image function is vmapped over the batch. Wrap in jax.jit with the keyword
    settings bound (they are static).
    """
    if len(per_stream_logits) != len(per_stream_deltas):
        raise ValueError("per_stream_logits and per_stream_deltas differ in stream count")
    anchors = [jnp.asarray(a, jnp.float32) for a in per_level_anchors]
    per_level = functools.partial(
        postprocess,
        per_level_anchors=anchors,
        image_size=image_size,
        score_threshold=score_threshold,
        pre_nms_top_n=pre_nms_top_n,
        legacy=legacy,
        weights=weights,
        clamp=clamp,
        level_ids=level_ids,
    )

    def one_image(logits_SxL, deltas_SxL):
        candidates = concat_detections(
            [
                per_level(list(logits), list(deltas), stream=s)
                for s, (logits, deltas) in enumerate(zip(logits_SxL, deltas_SxL, strict=True))
            ]
        )
        return fuse_candidates(candidates, nms_iou, max_detections, legacy)

    logits = [list(levels) for levels in per_stream_logits]
    deltas = [list(levels) for levels in per_stream_deltas]
    return jax.vmap(one_image)(logits, deltas)
