"""Convolution building blocks with PyTorch semantics, in NHWC.

Flax's 'SAME' padding is asymmetric for stride 2 and would shift every strided map relative
to the release, so every convolution here takes the explicit symmetric padding PyTorch uses.
Frozen batch norm keeps the four PyTorch buffers in the `batch_stats` collection (never
trained) and is applied as a per-channel scale and shift on the convolution's output, which
XLA fuses with the bias, residual add and ReLU that follow the convolution anyway. Folding the
scale into the kernel instead costs a fresh copy of every kernel per call (170 MB for
ResNet-101): the single-frame detector at 448x448 ran 6-9% slower that way on a 2-core CPU
(benchmarks/single_frame.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any

# Kaiming-normal (fan_out, ReLU gain), torchvision's ResNet conv init.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class FrozenBatchNorm(nn.Module):
    """Batch norm with fixed statistics: y = x * scale + shift.

    scale = weight / sqrt(running_var + eps), shift = bias - running_mean * scale. The release's
    FrozenBatchNorm2d has no eps (eps=0); torchvision's BatchNorm2d uses 1e-5.
    """

    features: int
    eps: float = 0.0

    @nn.compact
    def scale_shift(self) -> tuple[Array, Array]:
        weight = self.variable("batch_stats", "weight", jnp.ones, (self.features,)).value
        bias = self.variable("batch_stats", "bias", jnp.zeros, (self.features,)).value
        mean = self.variable("batch_stats", "running_mean", jnp.zeros, (self.features,)).value
        var = self.variable("batch_stats", "running_var", jnp.ones, (self.features,)).value
        scale = weight * jax.lax.rsqrt(var + self.eps)
        return scale, bias - mean * scale

    def __call__(self, x: Array) -> Array:
        scale, shift = self.scale_shift()
        return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def conv2d(
    x_NxHxWxC: Array,
    kernel_HWIO: Array,
    *,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
) -> Array:
    """2-D cross-correlation exactly as torch.nn.functional.conv2d (symmetric zero padding)."""
    return jax.lax.conv_general_dilated(
        x_NxHxWxC,
        kernel_HWIO,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def conv2d_kernel_first(
    x_NxHxWxC: Array, kernel_HWIO: Array, *, padding: int = 0, dilation: int = 1
) -> Array:
    """`conv2d` (stride 1, no groups) as one matmul to all kh*kw taps' outputs, then a
    shift-and-add of the taps.

    The same multiply-adds as the convolution, in a different order. XLA:CPU's convolution is
    slow when the output is narrow and the input wide, which is every late conv of PWC-Net's
    dense decoders (7 pairs at 56x56, 565 -> 2 channels: 57 ms as a convolution, 6.3 ms here;
    533 -> 32: 63 vs 37 ms; 469 -> 64: 86 vs 65 ms; 373 -> 96: 85 vs 76 ms; 256 -> 73: no
    gain); the matmul runs at full speed and the shifts move only kh*kw*O channels.
    """
    n, height, width, channels = x_NxHxWxC.shape
    kh, kw, _, out_channels = kernel_HWIO.shape
    z = jnp.einsum(
        "nhwc,cq->nhwq",
        x_NxHxWxC,
        kernel_HWIO.transpose(2, 0, 1, 3).reshape(channels, kh * kw * out_channels),
    ).reshape(n, height, width, kh, kw, out_channels)
    z = jnp.pad(z, ((0, 0), (padding, padding), (padding, padding), (0, 0), (0, 0), (0, 0)))
    out_h = height + 2 * padding - dilation * (kh - 1)
    out_w = width + 2 * padding - dilation * (kw - 1)
    out = None
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation, j * dilation
            tap = z[:, y0 : y0 + out_h, x0 : x0 + out_w, i, j]
            out = tap if out is None else out + tap
    return out


class Conv(nn.Module):
    """Conv2d with PyTorch padding semantics; kernel HWIO, optional bias.

    `__call__(x, out_scale, out_shift)` applies a per-output-channel affine map (frozen BN) to
    the output: y = conv(x) * out_scale + (bias * out_scale + out_shift), which is
    (conv(x) + bias) * out_scale + out_shift exactly up to float rounding.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Callable = kaiming_fan_out
    bias_init: Callable = nn.initializers.zeros
    # `conv2d_kernel_first` on CPU (stride 1, no groups): for narrow outputs of wide inputs.
    kernel_first: bool = False

    @nn.compact
    def __call__(
        self, x: Array, out_scale: Array | None = None, out_shift: Array | None = None
    ) -> Array:
        in_features = x.shape[-1]
        if in_features % self.groups:
            raise ValueError(f"{in_features} input channels not divisible by {self.groups} groups")
        k = self.kernel_size
        kernel = self.param(
            "kernel", self.kernel_init, (k, k, in_features // self.groups, self.features)
        )
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        if (
            self.kernel_first
            and self.stride == 1
            and self.groups == 1
            and jax.default_backend() == "cpu"
        ):
            y = conv2d_kernel_first(
                x.astype(self.dtype),
                kernel.astype(self.dtype),
                padding=self.padding,
                dilation=self.dilation,
            )
        else:
            y = conv2d(
                x.astype(self.dtype),
                kernel.astype(self.dtype),
                stride=self.stride,
                padding=self.padding,
                dilation=self.dilation,
                groups=self.groups,
            )
        # Scale the output, not the kernel: this multiply joins the elementwise fusion that
        # adds the bias (and, in `conv_bn`'s callers, the residual and ReLU).
        if out_scale is not None:
            y = y * out_scale.astype(self.dtype)
            bias = None if bias is None else bias * out_scale
        if out_shift is not None:
            bias = out_shift if bias is None else bias + out_shift
        if bias is not None:
            y = y + bias.astype(self.dtype)
        return y


class KernelParam(nn.Module):
    """A bare conv kernel (HWIO) parameter: the release's raw `nn.Parameter` weights."""

    shape: tuple[int, ...]
    kernel_init: Callable = kaiming_fan_out

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", self.kernel_init, self.shape)


class GroupNorm(nn.Module):
    """Trainable group normalisation (Wu & He) for bodies trained from scratch: statistics per
    sample and group of channels, so nothing depends on the batch or the device count, and
    training and inference compute the same function. `groups` is capped by the channels."""

    features: int
    groups: int
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        groups = math.gcd(self.groups, self.features)
        y = nn.GroupNorm(num_groups=groups, epsilon=self.eps, dtype=x.dtype, name="gn")(x)
        return y


NORMS = ("frozen_bn", "group_norm")


def norm_layer(kind: str, features: int, *, eps: float, groups: int, name: str) -> nn.Module:
    """The body's normalisation after a conv: 'frozen_bn' (the release; statistics are
    buffers, never trained) or 'group_norm' (trainable, for bodies trained from scratch)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm(features, eps, name=name)
    if kind == "group_norm":
        return GroupNorm(features, groups, name=name)
    raise ValueError(f"unknown normalisation {kind!r}; choose one of {NORMS}")


def conv_bn(
    parent_conv: Conv, parent_bn: FrozenBatchNorm | GroupNorm, x: Array, relu: bool = True
) -> Array:
    """Apply `parent_conv` followed by `parent_bn` (frozen BN: as one fused affine), then
    optionally ReLU."""
    if isinstance(parent_bn, FrozenBatchNorm):
        scale, shift = parent_bn.scale_shift()
        y = parent_conv(x, out_scale=scale, out_shift=shift)
    else:
        y = parent_bn(parent_conv(x))
    return nn.relu(y) if relu else y


def max_pool_3x3_s2(x: Array) -> Array:
    """torch.nn.MaxPool2d(3, stride=2, padding=1): the padding is -inf, not zeros."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def upsample_nearest_to(x_NxhxwxC: Array, height: int, width: int) -> Array:
    """Nearest upsampling by 2 (out[i, j] = in[i // 2, j // 2]), cropped to (height, width).

    The crop lets odd-sized pyramids (input not a multiple of 32) line up with the lateral,
    which is what F.interpolate(size=lateral.shape) would do for the release's 2x case.
    """
    factor_h = math.ceil(height / x_NxhxwxC.shape[1])
    factor_w = math.ceil(width / x_NxhxwxC.shape[2])
    y = jnp.repeat(jnp.repeat(x_NxhxwxC, factor_h, axis=1), factor_w, axis=2)
    return y[:, :height, :width]
