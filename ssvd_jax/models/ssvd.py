"""The SSVD model: one shared ResNet body, per-stream FPNs, the two aggregation streams, heads.

Variants (paper Table II and Fig. 6), selected by `variant`:
  single_frame            body -> `fpn` -> `head` on the reference only (the phase-1 detector).
  motion                  motion stream only.
  sampling                sampling stream only.
  two_stream              both streams, each with its own heads; late fusion of their boxes by
                          class-wise NMS (the release; default).
  early_fusion            both streams' aggregated features concatenated (512 channels) into
                          one shared set of heads (Fig. 6(2)).
  motion_guided_sampling  two_stream, but the sampling offsets are the motion stream's flow plus
                          the predicted residual (Fig. 6(1)).

Inputs are release-normalised BGR clips [B,T,H,W,3] with the reference frame at index 0 (the
batch contract of the input pipeline; T = 1 for the single-frame variant). `__call__(frames)`
aggregates over [reference, *supports] when
`include_reference` (the release's inference makes the reference entry 0 of its 7; the paper's
sums over tau = -K..K include it too), so training (2 supports) and inference (6 supports) see
the same kind of aggregation. Per-frame work (`frame_features`, `frame_cache`) and
per-reference work (`aggregate`, `heads`) are separate methods so that an online engine can
compute each frame's features, PWC-Net pyramid and offset-predictor half once. Intermediates
are sown into the 'intermediates' collection for parity checks.

Parameter names mirror the release's modules (`backbone`, `motion_fpn`, `flownet`,
`motion_subnets`, `sample_fpn`, `sample_block`, `sample_subnets`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.fpn import FPN, LEVELS
from ssvd_jax.models.heads import RetinaHead
from ssvd_jax.models.pwcnet import PWCNet
from ssvd_jax.models.resnet import RESNET_SPECS, ResNet
from ssvd_jax.models.streams import (
    SamplingBlock,
    flow_to_offsets,
    motion_aggregate,
    sampling_aggregate,
)

Array = jax.Array


def _merge(x_BxEx: Array) -> Array:
    return x_BxEx.reshape(-1, *x_BxEx.shape[2:])


VARIANTS = (
    "single_frame",
    "motion",
    "sampling",
    "two_stream",
    "early_fusion",
    "motion_guided_sampling",
)


def variant_streams(variant: str) -> tuple[bool, bool]:
    """(uses the motion stream, uses the sampling stream) of a variant."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown SSVD variant {variant!r}; choose one of {VARIANTS}")
    return (
        variant in ("motion", "two_stream", "early_fusion", "motion_guided_sampling"),
        variant in ("sampling", "two_stream", "early_fusion", "motion_guided_sampling"),
    )


def head_outputs_streams(variant: str) -> tuple[str, ...]:
    """Names of the output streams (each with its own heads and post-processing)."""
    return {
        "single_frame": ("single",),
        "motion": ("motion",),
        "sampling": ("sample",),
        "two_stream": ("motion", "sample"),
        "early_fusion": ("fused",),
        "motion_guided_sampling": ("motion", "sample"),
    }[variant]


class SSVD(nn.Module):
    """The SSVD family; every field comes from `create_model` (the config is the only home of
    its numbers)."""

    backbone: ResNet
    variant: str
    fpn_channels: int
    num_classes: int
    num_anchors: int
    head_num_convs: int
    head_width: int
    prior_prob: float
    sampling_version: str
    sampling_aggregation: str
    motion_aggregation: str  # streams.MOTION_AGGREGATIONS
    motion_temperature: float
    deformable_groups: int
    include_reference: bool
    pwc_channel_scale: float
    pwc_cost_volume: str  # pwcnet.COST_VOLUMES
    dtype: Any
    flow_dtype: Any  # PWC-Net's compute dtype (see create_model)

    def setup(self) -> None:
        use_motion, use_sampling = variant_streams(self.variant)

        def head() -> RetinaHead:
            return RetinaHead(
                num_classes=self.num_classes,
                num_anchors=self.num_anchors,
                num_convs=self.head_num_convs,
                width=self.head_width,
                prior_prob=self.prior_prob,
                dtype=self.dtype,
            )

        if self.variant == "single_frame":
            self.fpn = FPN(self.fpn_channels, self.dtype)
            self.head = head()
            return
        if use_motion:
            self.motion_fpn = FPN(self.fpn_channels, self.dtype)
            self.flownet = PWCNet(self.pwc_channel_scale, self.flow_dtype, self.pwc_cost_volume)
        if use_sampling:
            self.sample_fpn = FPN(self.fpn_channels, self.dtype)
            self.sample_block = SamplingBlock(
                self.sampling_version, self.fpn_channels, self.deformable_groups, self.dtype
            )
        if self.variant == "early_fusion":
            self.fused_subnets = head()
        else:
            if use_motion:
                self.motion_subnets = head()
            if use_sampling:
                self.sample_subnets = head()

    # ---- per frame -------------------------------------------------------------------------
    def frame_features(self, images_NxHxWx3: Array) -> dict[str, dict[str, Array]]:
        """The shared body once, then each stream's FPN: {'motion'|'sample'|'single': {P3..P6}}."""
        body = self.backbone(images_NxHxWx3)
        for level in ("C3", "C4", "C5"):
            self.sow("intermediates", f"backbone_{level}", body[level])
        if self.variant == "single_frame":
            out = {"single": self.fpn(body)}
        else:
            use_motion, use_sampling = variant_streams(self.variant)
            out = {}
            if use_motion:
                out["motion"] = self.motion_fpn(body)
            if use_sampling:
                out["sample"] = self.sample_fpn(body)
        for stream, levels in out.items():
            for level, x in levels.items():
                self.sow("intermediates", f"{stream}_fpn_{level}", x)
        return out

    def frame_cache(
        self, images_NxHxWx3: Array, features: dict[str, dict[str, Array]]
    ) -> dict[str, Any]:
        """The aggregation's per-frame work, for an engine to compute once per frame: the
        PWC-Net extractor pyramid {'pwc': {'L2'..'L6'}} and both halves of the offset
        predictor, {'offset_entry' | 'offset_reference': {level: (...)}}
        (`SamplingBlock.frame_halves`)."""
        if self.variant == "single_frame":
            return {}
        use_motion, use_sampling = variant_streams(self.variant)
        out: dict[str, Any] = {}
        if use_motion:
            out["pwc"] = self.flownet.extract(images_NxHxWx3)
        if use_sampling:
            halves = {lv: self.sample_block.frame_halves(features["sample"][lv], lv)
                      for lv in LEVELS}  # fmt: skip
            out["offset_reference"] = {lv: h[0] for lv, h in halves.items()}
            out["offset_entry"] = {lv: h[1] for lv, h in halves.items()}
        return out

    # ---- per reference frame ---------------------------------------------------------------
    def aggregate(
        self,
        reference_images_BxHxWx3: Array | None,
        entry_images_BxExHxWx3: Array | None,
        reference_features: dict[str, dict[str, Array]],
        entry_features: dict[str, dict[str, Array]],
        reference_cache: dict[str, Any] | None = None,
        entry_cache: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Array]]:
        """Aggregate the entries' features into the reference frame, per stream and level.

        reference_features[s][level] is [B,h,w,C]; entry_features[s][level] is [B,E,h,w,C].
        With `reference_cache` / `entry_cache` (`frame_cache` of the reference [B, ...] and of
        each entry [B,E,...]) the per-frame work is taken from them and the images are not
        needed; without, everything is computed per (reference, entry) pair, as the release
        does (the reference implementation of the cached path).
        """
        if self.variant == "single_frame":
            return {"single": reference_features["single"]}
        use_motion, use_sampling = variant_streams(self.variant)
        cached = entry_cache is not None
        level_features = next(iter(entry_features.values()))["P3"]
        b, e = level_features.shape[:2]
        out: dict[str, dict[str, Array]] = {}
        flows = None
        if use_motion:
            if cached:
                ref_pyr = {
                    k: _merge(jnp.broadcast_to(x[:, None], (b, e, *x.shape[1:])))
                    for k, x in reference_cache["pwc"].items()
                }
                pwc = self.flownet.from_pyramids(
                    ref_pyr, {k: _merge(x) for k, x in entry_cache["pwc"].items()}
                )
            else:
                ref = jnp.broadcast_to(
                    reference_images_BxHxWx3[:, None], entry_images_BxExHxWx3.shape
                )
                pwc = self.flownet(_merge(ref), _merge(entry_images_BxExHxWx3))
            flows = {lv: pwc[lv].reshape(b, e, *pwc[lv].shape[1:]) for lv in LEVELS}
            for name, raw in pwc["raw"].items():
                self.sow("intermediates", f"pwc_raw_flow_{name}", raw)
            out["motion"] = {}
            for level in LEVELS:
                self.sow("intermediates", f"flow_{level}", flows[level])
                aggregated, warped = motion_aggregate(
                    entry_features["motion"][level],
                    flows[level],
                    reference_features["motion"][level],
                    self.motion_aggregation,
                    self.motion_temperature,
                )
                self.sow("intermediates", f"motion_warped_{level}", warped)
                out["motion"][level] = aggregated
        if use_sampling:
            out["sample"] = {}
            for level in LEVELS:
                base = None
                if self.variant == "motion_guided_sampling":
                    base = flow_to_offsets(flows[level], self.deformable_groups)
                res = self.sample_block(
                    reference_features["sample"][level],
                    entry_features["sample"][level],
                    level,
                    base,
                    entry_cache["offset_entry"][level] if cached else None,
                    reference_cache["offset_reference"][level] if cached else None,
                )
                self.sow("intermediates", f"sample_offset_pred_{level}", res["pred"])
                self.sow("intermediates", f"sample_dcn_out_{level}", res["sampled"])
                out["sample"][level] = sampling_aggregate(
                    res["sampled"], res["weight_logit"], self.sampling_aggregation
                )
        if self.variant == "early_fusion":
            out = {
                "fused": {
                    lv: jnp.concatenate([out["motion"][lv], out["sample"][lv]], axis=-1)
                    for lv in LEVELS
                }
            }
        for stream, levels in out.items():
            for level, x in levels.items():
                self.sow("intermediates", f"{stream}_agg_{level}", x)
        return out

    def heads(self, aggregated: dict[str, dict[str, Array]]) -> dict[str, dict[str, Any]]:
        """{stream: {'cls_logits': {level}, 'box_deltas': {level}}} (raw, float32)."""
        modules = {
            "single": "head",
            "motion": "motion_subnets",
            "sample": "sample_subnets",
            "fused": "fused_subnets",
        }
        return {s: getattr(self, modules[s])(feats) for s, feats in aggregated.items()}

    def __call__(self, frames_BxTxHxWx3: Array) -> dict[str, dict[str, Any]]:
        """Training / direct inference on clips: `frames[:, 0]` is the reference frame,
        `frames[:, 1:]` its supports (the batch contract of the input pipeline). Features of
        every frame, aggregation, heads; the single-frame variant reads the reference only."""
        if self.variant == "single_frame":
            return self.heads(self.frame_features(frames_BxTxHxWx3[:, 0]))
        b, t = frames_BxTxHxWx3.shape[:2]
        feats = self.frame_features(frames_BxTxHxWx3.reshape(b * t, *frames_BxTxHxWx3.shape[2:]))
        first = 0 if self.include_reference else 1
        ref_feats, entry_feats = {}, {}
        for stream, levels in feats.items():
            ref_feats[stream], entry_feats[stream] = {}, {}
            for level, x in levels.items():
                x = x.reshape(b, t, *x.shape[1:])
                ref_feats[stream][level] = x[:, 0]
                entry_feats[stream][level] = x[:, first:]
        aggregated = self.aggregate(
            frames_BxTxHxWx3[:, 0], frames_BxTxHxWx3[:, first:], ref_feats, entry_feats
        )
        return self.heads(aggregated)


def create_backbone(backbone_config: Any, dtype: Any, name: str = "backbone") -> ResNet:
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
        norm=backbone_config.norm,
        norm_groups=backbone_config.norm_groups,
        dcn_stages=tuple(backbone_config.dcn_stages),
        dtype=dtype,
        name=name,
    )


def create_model(model_config: Any, *, variant: str | None = None) -> SSVD:
    """The one model factory: the SSVD family member described by a `config.model` section
    (`variant` overrides `model_config.variant`; phase 1 is `variant='single_frame'`)."""
    dtype = jnp.dtype(model_config.dtype)
    a = model_config.anchors
    return SSVD(
        backbone=create_backbone(model_config.backbone, dtype),
        variant=variant or model_config.variant,
        fpn_channels=model_config.fpn_channels,
        num_classes=model_config.num_classes,
        num_anchors=len(a.ratios) * a.scales_per_octave,
        head_num_convs=model_config.head.num_convs,
        head_width=model_config.head.width,
        prior_prob=model_config.head.prior_prob,
        sampling_version=model_config.sampling.version,
        sampling_aggregation=model_config.sampling.aggregation,
        motion_aggregation=model_config.motion.aggregation,
        motion_temperature=model_config.motion.temperature,
        deformable_groups=model_config.sampling.deformable_groups,
        include_reference=model_config.include_reference,
        pwc_channel_scale=model_config.pwc_channel_scale,
        pwc_cost_volume=model_config.pwc_cost_volume,
        dtype=dtype,
        flow_dtype=jnp.dtype(model_config.flow_dtype or model_config.dtype),
    )


def create_flownet(model_config: Any) -> PWCNet:
    """The motion stream's PWC-Net on its own (the SSVD's `flownet` parameters), for
    pretraining on ground-truth flow."""
    dtype = jnp.dtype(model_config.flow_dtype or model_config.dtype)
    return PWCNet(model_config.pwc_channel_scale, dtype, model_config.pwc_cost_volume)


def example_frames(image_size: int, num_frames: int) -> jax.ShapeDtypeStruct:
    """The shape of a one-clip batch, for initialising or abstracting a model's variables."""
    return jax.ShapeDtypeStruct((1, num_frames, image_size, image_size, 3), jnp.float32)
