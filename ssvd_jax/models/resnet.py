"""ResNet / ResNeXt bodies (C2..C5) with frozen batch norm, NHWC.

Module names mirror PyTorch's (`stem/conv1`, `layer3_5/bn2`, `layer1_0/downsample_conv`) so that
`ssvd_jax.convert` maps checkpoints by renaming only. The release (maskrcnn-benchmark
"R-101-FPN") puts the stride of each stage's first bottleneck in the 1x1 conv1
(`stride_in_1x1=True`, MSRA style); torchvision puts it in the 3x3 conv2.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.conv import (
    Conv,
    FrozenBatchNorm,
    KernelParam,
    conv_bn,
    max_pool_3x3_s2,
    norm_layer,
)
from ssvd_jax.ops import deform

Array = jax.Array

# depth -> (block type, blocks per stage)
RESNET_SPECS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3x3 -> 3x3, identity or 1x1 projection shortcut."""

    planes: int
    stride: int = 1
    bn_eps: float = 0.0
    norm: str = "frozen_bn"
    norm_groups: int = 32
    dtype: Any = jnp.float32
    expansion = 1

    def _norm(self, features: int, name: str) -> nn.Module:
        return norm_layer(self.norm, features, eps=self.bn_eps, groups=self.norm_groups,
                          name=name)  # fmt: skip

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(use_bias=False, dtype=self.dtype)
        y = conv_bn(
            Conv(self.planes, 3, self.stride, 1, name="conv1", **kw),
            self._norm(self.planes, "bn1"),
            x,
        )
        y = conv_bn(
            Conv(self.planes, 3, 1, 1, name="conv2", **kw),
            self._norm(self.planes, "bn2"),
            y,
            relu=False,
        )
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = conv_bn(
                Conv(self.planes, 1, self.stride, 0, name="downsample_conv", **kw),
                self._norm(self.planes, "downsample_bn"),
                x,
                relu=False,
            )
        return nn.relu(y + shortcut.astype(y.dtype))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 bottleneck with 4x expansion."""

    planes: int
    stride: int = 1
    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    bn_eps: float = 0.0
    dcn: bool = False
    deformable_groups: int = 1
    norm: str = "frozen_bn"
    norm_groups: int = 32
    dtype: Any = jnp.float32
    expansion = 4

    def _norm(self, features: int, name: str) -> nn.Module:
        return norm_layer(self.norm, features, eps=self.bn_eps, groups=self.norm_groups,
                          name=name)  # fmt: skip

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = self.planes * self.width_per_group // 64 * self.groups
        out = self.planes * self.expansion
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        kw = dict(use_bias=False, dtype=self.dtype)
        y = conv_bn(
            Conv(width, 1, s1, 0, name="conv1", **kw),
            self._norm(width, "bn1"),
            x,
        )
        if self.dcn:
            y = self._deformable_conv2(y, width, s3)
        else:
            y = conv_bn(
                Conv(width, 3, s3, 1, groups=self.groups, name="conv2", **kw),
                self._norm(width, "bn2"),
                y,
            )
        y = conv_bn(
            Conv(out, 1, 1, 0, name="conv3", **kw),
            self._norm(out, "bn3"),
            y,
            relu=False,
        )
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out:
            shortcut = conv_bn(
                Conv(out, 1, self.stride, 0, name="downsample_conv", **kw),
                self._norm(out, "downsample_bn"),
                x,
                relu=False,
            )
        return nn.relu(y + shortcut.astype(y.dtype))

    def _deformable_conv2(self, y: Array, width: int, stride: int) -> Array:
        """DCNv1 3x3 (Dai et al.), the Table III "R-101 (DCN)" backbone's last-stage conv2.

        A zero-initialised 3x3 conv predicts the offsets (so training starts from the regular
        grid); the sampling is the gather-based `deform_conv2d`, then the norm and ReLU (frozen
        BN folded into the kernel).
        """
        if self.groups != 1:
            raise ValueError("deformable conv2 is implemented for groups=1 bodies")
        offsets = Conv(
            2 * 9 * self.deformable_groups, 3, stride, 1, dtype=self.dtype,
            kernel_init=nn.initializers.zeros, name="conv2_offset",
        )(y)  # fmt: skip
        kernel = KernelParam((3, 3, y.shape[-1], width), name="conv2")()
        norm = self._norm(width, "bn2")
        frozen = isinstance(norm, FrozenBatchNorm)
        scale, shift = norm.scale_shift() if frozen else (1.0, None)
        sampled = deform.deform_conv2d(
            y.astype(self.dtype), offsets.astype(self.dtype),
            (kernel * scale).astype(self.dtype),
            deformable_groups=self.deformable_groups, stride=stride, padding=1,
        )  # fmt: skip
        if frozen:
            return nn.relu(sampled + shift.astype(self.dtype))
        return nn.relu(norm(sampled))


class ResNet(nn.Module):
    """ResNet body returning {'C2': stride 4, 'C3': 8, 'C4': 16, 'C5': 32} feature maps.

    Attributes:
      stage_sizes: blocks per stage (layer1..layer4).
      block: 'bottleneck' or 'basic'.
      stem_width: channels of the 7x7 stem.
      base_planes: bottleneck planes of layer1 (doubles every stage): 64 for the paper's nets.
      groups, width_per_group: ResNeXt cardinality and group width (1, 64 = plain ResNet;
        32, 4 = ResNeXt-101 32x4d).
      stride_in_1x1: stage stride in the first 1x1 conv (release) instead of the 3x3 (torchvision).
      bn_eps: frozen BN epsilon; the release's FrozenBatchNorm2d has none.
      norm: 'frozen_bn' (release) or 'group_norm' (trainable; for bodies trained from scratch,
        where frozen BN with untrained statistics would be no normalisation at all).
      norm_groups: GroupNorm's groups (capped by each layer's channels).
      dcn_stages: per stage, whether the bottlenecks' 3x3 conv is deformable (DCNv1); the
        paper's Table III "ResNet-101 (DCN)" uses (False, False, False, True).
    """

    stage_sizes: tuple[int, ...] = (3, 4, 23, 3)
    block: str = "bottleneck"
    stem_width: int = 64
    base_planes: int = 64
    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    bn_eps: float = 0.0
    dcn_stages: tuple[bool, ...] = ()
    norm: str = "frozen_bn"
    norm_groups: int = 32
    dtype: Any = jnp.float32

    def _norm(self, features: int, name: str) -> nn.Module:
        return norm_layer(self.norm, features, eps=self.bn_eps, groups=self.norm_groups,
                          name=name)  # fmt: skip

    @nn.compact
    def __call__(self, x_NxHxWx3: Array) -> dict[str, Array]:
        x = conv_bn(
            Conv(self.stem_width, 7, 2, 3, use_bias=False, dtype=self.dtype, name="stem_conv1"),
            self._norm(self.stem_width, "stem_bn1"),
            x_NxHxWx3,
        )
        x = max_pool_3x3_s2(x)
        features = {}
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = self.base_planes * 2**stage
            for b in range(num_blocks):
                stride = 2 if (b == 0 and stage > 0) else 1
                name = f"layer{stage + 1}_{b}"
                if self.block == "bottleneck":
                    x = Bottleneck(
                        planes,
                        stride,
                        groups=self.groups,
                        width_per_group=self.width_per_group,
                        stride_in_1x1=self.stride_in_1x1,
                        bn_eps=self.bn_eps,
                        dcn=bool(self.dcn_stages) and bool(self.dcn_stages[stage]),
                        norm=self.norm,
                        norm_groups=self.norm_groups,
                        dtype=self.dtype,
                        name=name,
                    )(x)
                elif self.block == "basic":
                    if self.dcn_stages and any(self.dcn_stages):
                        raise ValueError("deformable stages need bottleneck blocks")
                    x = BasicBlock(
                        planes, stride, bn_eps=self.bn_eps, norm=self.norm,
                        norm_groups=self.norm_groups, dtype=self.dtype, name=name,
                    )(x)  # fmt: skip
                else:
                    raise ValueError(f"unknown ResNet block type {self.block!r}")
            features[f"C{stage + 2}"] = x
        return features


def resnet(depth: int, **kwargs: Any) -> ResNet:
    """ResNet-{18,34,50,101,152} body; kwargs override ResNet attributes."""
    if depth not in RESNET_SPECS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
    block, stages = RESNET_SPECS[depth]
    return ResNet(stage_sizes=stages, block=block, **kwargs)


def resnet_out_channels(block: str, base_planes: int, num_stages: int = 4) -> list[int]:
    """Channels of C2..C5 for a body: used to size FPN laterals and converters' checks."""
    expansion = 4 if block == "bottleneck" else 1
    return [base_planes * 2**s * expansion for s in range(num_stages)]
