"""The two feature-aggregation streams of SSVD (REFERENCE_SPEC §3.5, §4).

Shapes: the reference frame's features are [B,H,W,C]; the aggregated entries' are [B,E,H,W,C]
(E = 7 in the release's inference, reference included as entry 0; E = 3 in training).

* Motion stream: each entry's motion-FPN features are warped to the reference along the PWC-Net
  flow of that level (pixels of its own grid), then averaged over the entries (paper, release)
  or weighted by their cosine similarity to the reference (FGFA's adaptive weights, an option).
* Sampling stream: one `SamplingBlock` shared by all levels predicts, from [reference, entry],
  deformable-conv offsets (72 channels) and an aggregation-weight logit (1 channel); a 3x3
  deformable conv with 4 offset groups samples each entry's sampling-FPN features, and the
  results are combined per pixel by a softmax over entries of ReLU(logit) (release) or a plain
  mean (paper).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.conv import Conv, KernelParam, conv2d
from ssvd_jax.ops import deform, sampling

Array = jax.Array

LEVEL_INDEX = {"P3": 0, "P4": 1, "P5": 2, "P6": 3}
NUM_OFFSET_CHANNELS = 72  # 4 groups x 9 taps x (dy, dx)


def _merge(x_BxExHxWxC: Array) -> Array:
    return x_BxExHxWxC.reshape(-1, *x_BxExHxWxC.shape[2:])


def _split(x_NxHxWxC: Array, batch: int) -> Array:
    return x_NxHxWxC.reshape(batch, -1, *x_NxHxWxC.shape[1:])


MOTION_AGGREGATIONS = ("mean", "cosine")


def motion_aggregate(
    entries_BxExHxWxC: Array,
    flows_BxExHxWx2: Array,
    reference_BxHxWxC: Array | None = None,
    mode: str = "mean",
    temperature: float = 1.0,
) -> tuple[Array, Array]:
    """Warp every entry along its flow and combine: ([B,H,W,C] aggregate, [B,E,H,W,C] warped).

    'mean': the plain mean over the entries (paper, release). 'cosine': FGFA's adaptive weights
    (Zhu et al. 2017, Eq. 5-6) on the stream's own features: per pixel, a softmax over the
    entries of `temperature` x the cosine similarity of the warped entry to the reference, so
    that entries that do not look like the reference there (misaligned, or deteriorated where
    the reference is sharp) count less.
    """
    b = entries_BxExHxWxC.shape[0]
    warped = _split(sampling.warp(_merge(entries_BxExHxWxC), _merge(flows_BxExHxWx2)), b)
    if mode == "mean":
        return jnp.mean(warped, axis=1), warped
    if mode != "cosine":
        raise ValueError(f"motion aggregation must be one of {MOTION_AGGREGATIONS}, got {mode!r}")
    ref = reference_BxHxWxC.astype(jnp.float32)[:, None]
    w32 = warped.astype(jnp.float32)

    def norm(x: Array) -> Array:
        # eps inside the root: a warp that leaves the map gives exactly-zero features, where
        # the gradient of a plain norm is 0/0.
        return jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-12)

    cosine = jnp.sum(w32 * ref, axis=-1, keepdims=True) / (norm(w32) * norm(ref))
    weights = jax.nn.softmax(temperature * cosine, axis=1)
    return jnp.sum(weights * w32, axis=1).astype(warped.dtype), warped


def _crop(x: Array, height: int, width: int) -> Array:
    return x[:, :height, :width]


def identity_center_init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """A [kh, kw, C, C] kernel that copies its input: identity at the centre tap."""
    del key
    kh, kw, c_in, c_out = shape
    return jnp.zeros(shape, dtype).at[kh // 2, kw // 2].set(jnp.eye(c_in, c_out, dtype=dtype))


class SamplingBlock(nn.Module):
    """Offset predictor + deformable sampling, shared across P3..P6.

    version '1' (release default, the paper's U-Net-like predictor): conv1 (512->256) ->
      conv2 (256->128) -> conv3 (128->128), no bias and no nonlinearity in between; at P3/P4
      conv2/conv3 have stride 2 and are upsampled back x2 / x4, at P5/P6 they have stride 1 and
      dilation 2; then ReLU(cat[c1, c2, c3]) -> offset_lateral (3x3, 512->256) -> ReLU ->
      offset_pred (3x3, 256->73).
    version '2': multi-dilation convs on the entry only, ReLU(cat[cur, d1, d2, d3]) -> lateral ->
      pred.
    Channels [0:72] of the prediction are offsets, [72] the aggregation-weight logit.
    """

    version: str = "1"
    channels: int = 256
    deformable_groups: int = 4
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.channels
        if self.version == "1":
            self.off_conv1 = KernelParam((3, 3, 2 * c, c))
            self.off_conv2 = KernelParam((3, 3, c, c // 2))
            self.off_conv3 = KernelParam((3, 3, c // 2, c // 2))
        elif self.version == "2":
            self.sup_conv_d1 = Conv(c // 2, 3, 1, 1, 1, dtype=self.dtype)
            self.sup_conv_d2 = Conv(c // 4, 3, 1, 2, 2, dtype=self.dtype)
            self.sup_conv_d3 = Conv(c // 4, 3, 1, 3, 3, dtype=self.dtype)
        else:
            raise ValueError(f"sampling stream version must be '1' or '2', got {self.version!r}")
        self.offset_lateral = Conv(c, 3, 1, 1, dtype=self.dtype)
        # Near-zero offsets at the start (a regular 3x3 grid), as DCN offset branches are
        # initialised; but not an exactly-zero kernel, which would block every gradient to the
        # predictor's earlier convs. The weight logit's bias starts positive: at logit 0 the
        # ReLU's gradient is 0 and the aggregation weights could never start learning.
        self.offset_pred = Conv(
            NUM_OFFSET_CHANNELS + 1,
            3,
            1,
            1,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(1e-3),
            bias_init=lambda key, shape, dtype=jnp.float32: (
                jnp.zeros(shape, dtype).at[NUM_OFFSET_CHANNELS].set(1.0)
            ),
        )
        # Identity at the centre tap, zero elsewhere: with the near-zero initial offsets the
        # stream starts as a weighted mean of the entries' own features, which the heads
        # copied from phase 1 already read, instead of a random projection of them.
        self.sample_conv = KernelParam((3, 3, c, c), kernel_init=identity_center_init)

    def _v1_linear(self, x: Array, kernel1: Array, level: str) -> tuple[Array, Array, Array]:
        """conv1 (with `kernel1`) -> conv2 -> conv3, each at its own resolution: the linear
        chain of the v1 predictor (no bias, no nonlinearity)."""
        low_level = LEVEL_INDEX[level] < 2
        stride, pad, dil = (2, 1, 1) if low_level else (1, 2, 2)
        dt = self.dtype
        c1 = conv2d(x.astype(dt), kernel1.astype(dt), padding=1)
        c2 = conv2d(c1, self.off_conv2().astype(dt), stride=stride, padding=pad, dilation=dil)
        c3 = conv2d(c2, self.off_conv3().astype(dt), stride=stride, padding=pad, dilation=dil)
        return c1, c2, c3

    def _v1_fuse(self, c1: Array, c2: Array, c3: Array, level: str) -> Array:
        """ReLU(cat[c1, c2, c3]) with c2, c3 upsampled back to c1's size at P3/P4."""
        height, width = c1.shape[1:3]
        if LEVEL_INDEX[level] < 2:
            c2 = _crop(sampling.upsample_nearest(c2, 2), height, width)
            c3 = _crop(sampling.upsample_nearest(c3, 4), height, width)
        return nn.relu(jnp.concatenate([c1, c2, c3], axis=-1))

    def _lateral_halves(self) -> tuple[Array, Array, Array]:
        """v2: offset_lateral's kernel split into its [cur | d1 d2 d3] input halves, and bias."""
        lateral = self.offset_lateral.variables["params"]
        c = self.channels
        return lateral["kernel"][:, :, :c], lateral["kernel"][:, :, c:], lateral["bias"]

    def _v2_entry_branches(self, entry_NxHxWxC: Array) -> Array:
        return nn.relu(
            jnp.concatenate(
                [
                    self.sup_conv_d1(entry_NxHxWxC),
                    self.sup_conv_d2(entry_NxHxWxC),
                    self.sup_conv_d3(entry_NxHxWxC),
                ],
                axis=-1,
            )
        )

    def _head(self, fused: Array) -> Array:
        return self.offset_pred(nn.relu(self.offset_lateral(fused))).astype(jnp.float32)

    def predict(self, cur_NxHxWxC: Array, entry_NxHxWxC: Array, level: str) -> Array:
        """Offsets and weight logit [N,H,W,73] for (reference, entry) pairs."""
        if self.version == "1":
            x = jnp.concatenate([cur_NxHxWxC, entry_NxHxWxC], axis=-1)
            fused = self._v1_fuse(*self._v1_linear(x, self.off_conv1(), level), level)
        else:
            fused = jnp.concatenate(
                [nn.relu(cur_NxHxWxC.astype(self.dtype)), self._v2_entry_branches(entry_NxHxWxC)],
                axis=-1,
            )
        return self._head(fused)

    # ---- the same prediction in two halves (an inference engine's per-frame caches) --------
    # v1: conv1 over [cur, entry] is conv1_cur(cur) + conv1_entry(entry), and conv2, conv3 and
    # the upsampling are linear, so the whole chain splits into a reference half and an entry
    # half that are added before the ReLU. v2: the lateral conv's input [ReLU(cur), ReLU(d*)]
    # splits the same way, so even the lateral conv runs once per frame. Each half depends on
    # one frame only: computed once per frame instead of once per (reference, entry) pair.
    def reference_half(self, cur_NxHxWxC: Array, level: str) -> tuple[Array, ...]:
        c = self.channels
        if self.version == "1":
            return self._v1_linear(cur_NxHxWxC, self.off_conv1()[:, :, :c], level)
        kernel_cur, _, bias = self._lateral_halves()
        dt = self.dtype
        x = nn.relu(cur_NxHxWxC.astype(dt))
        return (conv2d(x, kernel_cur.astype(dt), padding=1) + bias.astype(dt),)

    def entry_half(self, entry_NxHxWxC: Array, level: str) -> tuple[Array, ...]:
        c = self.channels
        if self.version == "1":
            return self._v1_linear(entry_NxHxWxC, self.off_conv1()[:, :, c:], level)
        _, kernel_entry, _ = self._lateral_halves()
        dt = self.dtype
        x = self._v2_entry_branches(entry_NxHxWxC)
        return (conv2d(x, kernel_entry.astype(dt), padding=1),)

    def frame_halves(
        self, x_NxHxWxC: Array, level: str
    ) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
        """(`reference_half`, `entry_half`) of the same frames. Every frame of a video is the
        reference once and an entry of others, so an engine computes both when the frame
        arrives; v1 does it as one conv1 with both halves' output channels and one conv2 and
        conv3 over the two halves stacked."""
        if self.version != "1":
            return self.reference_half(x_NxHxWxC, level), self.entry_half(x_NxHxWxC, level)
        c, n = self.channels, x_NxHxWxC.shape[0]
        kernel = self.off_conv1()
        both = jnp.concatenate([kernel[:, :, :c], kernel[:, :, c:]], axis=-1)  # [3,3,C,2C']
        dt = self.dtype
        c1 = conv2d(x_NxHxWxC.astype(dt), both.astype(dt), padding=1)
        c1 = jnp.concatenate(jnp.split(c1, 2, axis=-1), axis=0)  # [2N, ...]: reference, entry
        low_level = LEVEL_INDEX[level] < 2
        stride, pad, dil = (2, 1, 1) if low_level else (1, 2, 2)
        c2 = conv2d(c1, self.off_conv2().astype(dt), stride=stride, padding=pad, dilation=dil)
        c3 = conv2d(c2, self.off_conv3().astype(dt), stride=stride, padding=pad, dilation=dil)
        return (c1[:n], c2[:n], c3[:n]), (c1[n:], c2[n:], c3[n:])

    def predict_from_halves(
        self, reference_half: tuple[Array, ...], entry_half: tuple[Array, ...], level: str
    ) -> Array:
        """`predict` from the two halves ([N, ...] each, pairs aligned)."""
        summed = [a + b for a, b in zip(reference_half, entry_half, strict=True)]
        if self.version == "1":
            return self._head(self._v1_fuse(*summed, level))
        return self.offset_pred(nn.relu(summed[0])).astype(jnp.float32)

    def sample(self, entry_NxHxWxC: Array, offsets_NxHxWx72: Array) -> Array:
        """The deformable 3x3 conv (4 offset groups, no bias) on the entries' features."""
        # Offsets stay float32 whatever the compute dtype: sample positions are computed in the
        # offsets' dtype, and bfloat16 would round a position near 50 px to 0.25 px.
        return deform.deform_conv2d(
            entry_NxHxWxC.astype(self.dtype),
            offsets_NxHxWx72.astype(jnp.float32),
            self.sample_conv().astype(self.dtype),
            deformable_groups=self.deformable_groups,
        )

    def __call__(
        self,
        cur_BxHxWxC: Array,
        entries_BxExHxWxC: Array,
        level: str,
        offset_base_BxExHxWx72: Array | None = None,
        entry_halves: tuple[Array, ...] | None = None,
        reference_half: tuple[Array, ...] | None = None,
    ) -> dict[str, Array]:
        """Per-entry prediction and sampling. `offset_base` is added to the predicted offsets
        (the motion-guided variant passes the flow there, so the predictor learns a residual).
        `entry_halves` ([B,E,...] each, from `entry_half` of every entry) switch to the split
        prediction, with the reference's `reference_half` ([B,...] each; computed here, once
        per reference, when not given)."""
        b, e = entries_BxExHxWxC.shape[:2]
        if entry_halves is None:
            cur = jnp.broadcast_to(cur_BxHxWxC[:, None], entries_BxExHxWxC.shape)
            pred = self.predict(_merge(cur), _merge(entries_BxExHxWxC), level)
        else:
            if reference_half is None:
                reference_half = self.reference_half(cur_BxHxWxC, level)
            ref_half = [
                _merge(jnp.broadcast_to(r[:, None], (b, e, *r.shape[1:]))) for r in reference_half
            ]
            pred = self.predict_from_halves(ref_half, [_merge(h) for h in entry_halves], level)
        offsets = pred[..., :NUM_OFFSET_CHANNELS]
        if offset_base_BxExHxWx72 is not None:
            offsets = offsets + _merge(offset_base_BxExHxWx72)
        sampled = self.sample(_merge(entries_BxExHxWxC), offsets)
        return {
            "pred": _split(pred, b),
            "offsets": _split(offsets, b),
            "weight_logit": _split(pred[..., NUM_OFFSET_CHANNELS:], b),
            "sampled": _split(sampled, b).astype(jnp.float32),
        }


def sampling_aggregate(sampled_BxExHxWxC: Array, weight_logit_BxExHxWx1: Array, mode: str) -> Array:
    """Combine the entries: 'softmax' of ReLU(logit) over entries per pixel (release), or 'mean'
    (paper)."""
    if mode == "softmax":
        weights = jax.nn.softmax(nn.relu(weight_logit_BxExHxWx1.astype(jnp.float32)), axis=1)
        return jnp.sum(weights * sampled_BxExHxWxC, axis=1)
    if mode == "mean":
        return jnp.mean(sampled_BxExHxWxC, axis=1)
    raise ValueError(f"sampling aggregation must be 'softmax' or 'mean', got {mode!r}")


def flow_to_offsets(flow_NxHxWx2: Array, deformable_groups: int = 4, taps: int = 9) -> Array:
    """A flow (x, y) as deformable-conv offsets: every group and tap shifted by the flow, in
    torchvision's (dy, dx) channel order [N,H,W,2*G*taps]."""
    dy_dx = jnp.stack([flow_NxHxWx2[..., 1], flow_NxHxWx2[..., 0]], axis=-1)
    reps = deformable_groups * taps
    return jnp.tile(dy_dx, (1,) * (dy_dx.ndim - 1) + (reps,))
