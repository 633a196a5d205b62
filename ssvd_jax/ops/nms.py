"""Greedy non-maximum suppression with static shapes, jit-able and vmappable.

Rule (the release's CUDA kernel and torchvision's): visit boxes in decreasing score order; keep a
box unless it overlaps an already kept box with IoU > iou_threshold (strictly greater: a pair at
exactly the threshold survives; the release's CPU kernel uses >=, which differs only at exact
ties). Equal scores are visited lower index first, which is what torchvision's stable sort does.

The loop never builds the N x N IoU matrix: each step picks the highest-scoring remaining box
(argmax), records it, and removes every remaining box that it suppresses, using N IoUs against
that one box. It stops once `max_output` boxes are kept or nothing remains, so the cost is
O(kept * N) time and O(N) memory, fine for the ~8,000 candidates of two streams' late fusion.

The per-step elementwise work runs on chunks of `CHUNK` boxes. Under the project's CPU runtime
(YNNPACK elementwise fusions, ssvd_jax/runtime.py) an elementwise fusion of 4096 or more
elements becomes a YNNPACK call with a fixed dispatch cost, paid ~10 times per step: the late
fusion of 8,000 candidates took 43 ms as one array and 6.5 ms in chunks of 2048 (2.3 ms for
4,000 candidates either way).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ssvd_jax.ops import boxes as box_ops

Array = jax.Array


CHUNK = 2048


def _greedy_nms(
    boxes_Nx4: Array,
    scores_N: Array,
    labels_N: Array | None,
    iou_threshold: float | Array,
    max_output: int | None,
    legacy: bool,
    valid_N: Array | None,
) -> tuple[Array, Array]:
    n = boxes_Nx4.shape[0]
    max_output = n if max_output is None else int(max_output)
    keep = jnp.zeros((max_output,), jnp.int32)
    if n == 0 or max_output == 0:
        return keep, jnp.zeros((max_output,), bool)
    boxes_Nx4 = boxes_Nx4.astype(jnp.float32)
    scores_N = scores_N.astype(jnp.float32)
    # -inf (and NaN) scores mark padding as well as an explicit `valid` mask does.
    alive_N = scores_N > -jnp.inf
    if valid_N is not None:
        alive_N = alive_N & valid_N.astype(bool)
    if labels_N is None:
        labels_N = jnp.zeros((n,), jnp.int32)
    # Chunks of at most CHUNK boxes (module docstring); the last one padded with dead boxes.
    size = min(n, CHUNK)
    num_chunks = -(-n // size)
    pad = num_chunks * size - n

    def chunks(x: Array) -> list[Array]:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return [x[i * size : (i + 1) * size] for i in range(num_chunks)]

    boxes_c, scores_c, labels_c = chunks(boxes_Nx4), chunks(scores_N), chunks(labels_N)
    index_c = chunks(jnp.arange(n, dtype=jnp.int32))
    alive_c = tuple(chunks(alive_N))

    def cond(state):
        count, alive, _ = state
        return (count < max_output) & jnp.any(jnp.stack([jnp.any(a) for a in alive]))

    def body(state):
        count, alive, keep = state
        # argmax returns the first maximum: lower index wins ties (chunks are in index order).
        masked = jnp.concatenate(
            [jnp.where(a, s, -jnp.inf) for a, s in zip(alive, scores_c, strict=True)]
        )
        best = jnp.argmax(masked).astype(jnp.int32)
        best_box, best_label = boxes_Nx4[best][None], labels_N[best]
        new_alive = []
        for a, b, lab, idx in zip(alive, boxes_c, labels_c, index_c, strict=True):
            suppressed = box_ops.elementwise_iou(b, best_box, legacy) > iou_threshold
            suppressed = suppressed & (lab == best_label)
            # The picked box is removed explicitly: a zero-area box has IoU 0 with itself.
            new_alive.append(a & ~suppressed & (idx != best))
        return count + 1, tuple(new_alive), keep.at[count].set(best)

    count, _, keep = lax.while_loop(cond, body, (jnp.int32(0), alive_c, keep))
    return keep, jnp.arange(max_output) < count


def nms(
    boxes_Nx4: Array,
    scores_N: Array,
    iou_threshold: float | Array,
    max_output: int | None,
    legacy: bool = False,
    valid: Array | None = None,
) -> tuple[Array, Array]:
    """Greedy NMS of one set of boxes.

    Args:
      boxes_Nx4: xyxy boxes.
      scores_N: scores; -inf (or NaN) marks a box that must never be kept.
      iou_threshold: a box is suppressed by a kept box when their IoU is > this.
      max_output: static number of output slots (None: N).
      legacy: "+1" pixel areas (the release) instead of continuous ones (torchvision).
      valid: optional [N] bool; False boxes are never kept and never suppress anything.

    Returns:
      (indices [max_output] int32, valid_mask [max_output] bool): kept indices in decreasing
      score order (ties: lower index first); slots past the kept count hold 0 and are False.
    """
    return _greedy_nms(boxes_Nx4, scores_N, None, iou_threshold, max_output, legacy, valid)


def batched_nms(
    boxes_Nx4: Array,
    scores_N: Array,
    labels_N: Array,
    iou_threshold: float | Array,
    max_output: int | None,
    legacy: bool = False,
    valid: Array | None = None,
) -> tuple[Array, Array]:
    """Class-wise NMS: boxes only suppress boxes with the same label; one pass in global order.

    Suppression is gated on label equality rather than torchvision's trick of offsetting each
    class's coordinates, which would interact with the "+1" convention and lose float32
    precision on large offsets. Because classes never interact, the global greedy pass keeps
    exactly the union of per-class NMS results, in decreasing score order; stopping at
    `max_output` therefore yields the top `max_output` survivors over all classes.

    Returns (indices [max_output] int32, valid_mask [max_output] bool), as `nms`.
    """
    return _greedy_nms(boxes_Nx4, scores_N, labels_N, iou_threshold, max_output, legacy, valid)
