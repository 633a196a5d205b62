"""PWC-Net without the refiner, as the release uses it for the motion stream (REFERENCE_SPEC §3).

sniklaus/pytorch-pwc's architecture with the context network removed and decoding stopped at
level 2: a 6-level feature pyramid extractor shared by both images; per level, a cost volume
against the second image's features warped by the upsampled coarser flow, then a densely
connected decoder. Module names mirror the release's (`moduleExtractor/moduleTwo_2`,
`moduleFiv/moduleUpfeat`, ...) so that conversion is a rename.

Inputs are the release's normalised BGR images divided by 255 (so roughly [-0.48, 0.6]),
average-pooled 2x2 before the extractor. Outputs are flows from the first (reference) image to
the second (support) image in pixels of each level's own grid, for P3..P6 (PWC levels 2..5).

The release hard-codes a crop of the level-5 upsampling (8 -> 7 rows/cols) that is right only at
448 input. Here every level crops the leading rows/cols by which the 2x transposed-conv output
exceeds that level's size, which is the release's crop at 448 and the same rule elsewhere.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.conv import Conv
from ssvd_jax.ops import correlation, sampling

Array = jax.Array

LEVEL_NAMES = ("One", "Two", "Thr", "Fou", "Fiv", "Six")  # pyramid levels 1..6
EXTRACTOR_CHANNELS = (16, 32, 64, 96, 128, 196)
DENSE_CHANNELS = (128, 128, 96, 64, 32)
# Each decoder's upsampled flow is scaled into pixels of its level before warping: 20 / 2^l.
FLOW_SCALES = {5: 0.625, 4: 1.25, 3: 2.5, 2: 5.0}
# The raw flows of every level share one unit: 20 pixels of the 2x-pooled input, i.e. 40
# pixels of the input image (level l's grid is the input's / 2^(l+1)).
RAW_FLOW_UNIT = 40.0
OUTPUT_LEVELS = {"P3": 2, "P4": 3, "P5": 4, "P6": 5}

# He initialisation for LeakyReLU(0.1) (gain^2 = 2 / (1 + 0.1^2)): activations keep their
# scale through the 18 extractor convs. With a plain fan-in variance they shrink about 2x per
# layer, so a freshly initialised net's level-6 cost volume is ~1e-14 and PWC-Net trained from
# scratch (the pwcnet phase) saw no matching signal for its first thousands of steps. Converted
# weights replace all of this.
pwc_kernel_init = nn.initializers.variance_scaling(2.0 / 1.01, "fan_in", "truncated_normal")
# Each decoder's flow prediction starts at zero: a fresh net then predicts zero flow (the
# zero-flow error, where training from scratch starts) instead of He-scaled noise of tens of
# pixels (a raw unit is 40) that the loss must first undo at every level.
flow_kernel_init = nn.initializers.zeros


def leaky_relu(x: Array) -> Array:
    return nn.leaky_relu(x, negative_slope=0.1)


# How a decoder compares the two images' features: 'raw', the release's mean of their products
# (what the authors' and converted weights expect); 'normalized', their Pearson correlation
# (`correlation.normalized_cost_volume`), for PWC-Net trained from scratch: a fresh extractor's
# raw cost volume peaks where features are large rather than where they agree, so the decoders
# see no displacement to read (measured: 300 steps on pure translations of synthetic frames
# left a fresh net's flow at zero with 'raw' and read 4-px shifts at 0.96 of their size with
# 'normalized', the same loss and optimizer).
COST_VOLUMES = ("raw", "normalized")


def _cost(kind: str, f1: Array, f2: Array) -> Array:
    if kind == "raw":
        return correlation.cost_volume(f1, f2, 4)
    return correlation.normalized_cost_volume(f1, f2, 4).astype(f1.dtype)


class ConvTranspose4x4(nn.Module):
    """torch.nn.ConvTranspose2d(C, features, 4, stride=2, padding=1), as an input-dilated conv.

    The kernel is stored as the HWIO kernel of the equivalent correlation (the PyTorch weight
    flipped spatially), see `ssvd_jax.convert.conv_transpose_kernel_from_torch`.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NxHxWxC: Array) -> Array:
        kernel = self.param("kernel", pwc_kernel_init, (4, 4, x_NxHxWxC.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_general_dilated(
            x_NxHxWxC.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(1, 1),
            padding=((2, 2), (2, 2)),  # k - 1 - p
            lhs_dilation=(2, 2),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias.astype(self.dtype)


def crop_to(x_NxHxWxC: Array, height: int, width: int) -> Array:
    """Drop leading rows/cols so the map is (height, width): the release's `[:, :, 1:, 1:]`."""
    dh, dw = x_NxHxWxC.shape[1] - height, x_NxHxWxC.shape[2] - width
    if dh < 0 or dw < 0:
        raise ValueError(
            f"PWC-Net pyramid is inconsistent: upsampled {x_NxHxWxC.shape[1:3]} is smaller than "
            f"the level's ({height}, {width}); use an input size divisible by 64"
        )
    return x_NxHxWxC[:, dh:, dw:]


def scaled(channels: int, scale: float) -> int:
    return max(2, round(channels * scale))


class Extractor(nn.Module):
    """Six 3-conv modules (first conv stride 2, LeakyReLU 0.1 after each): levels 1..6."""

    channel_scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_NxHxWx3: Array) -> list[Array]:
        pyramid = []
        x = x_NxHxWx3
        for name, channels in zip(LEVEL_NAMES, EXTRACTOR_CHANNELS, strict=True):
            width = scaled(channels, self.channel_scale)
            for i, stride in ((0, 2), (2, 1), (4, 1)):
                conv = Conv(width, 3, stride, 1, dtype=self.dtype, kernel_init=pwc_kernel_init,
                            name=f"module{name}_{i}")  # fmt: skip
                x = leaky_relu(conv(x))
            pyramid.append(x)
        return pyramid


class Decoder(nn.Module):
    """One PWC-Net decoder level: cost volume, dense convs (newest first), flow prediction."""

    level: int
    channel_scale: float = 1.0
    dtype: Any = jnp.float32
    cost_volume: str = "raw"  # one of COST_VOLUMES

    @nn.compact
    def __call__(
        self, f1: Array, f2: Array, previous: tuple[Array, Array] | None
    ) -> tuple[Array, Array]:
        height, width = f1.shape[1:3]
        if previous is None:
            feat = leaky_relu(_cost(self.cost_volume, f1, f2))
        else:
            prev_flow, prev_feat = previous
            flow_up = crop_to(ConvTranspose4x4(2, self.dtype, name="moduleUpflow")(prev_flow),
                              height, width)  # fmt: skip
            feat_up = crop_to(ConvTranspose4x4(2, self.dtype, name="moduleUpfeat")(prev_feat),
                              height, width)  # fmt: skip
            warped = sampling.pwc_warp(f2, flow_up * FLOW_SCALES[self.level])
            corr = leaky_relu(_cost(self.cost_volume, f1, warped))
            feat = jnp.concatenate([corr, f1, flow_up, feat_up], axis=-1)
        for name, channels in zip(LEVEL_NAMES[:5], DENSE_CHANNELS, strict=True):
            width = scaled(channels, self.channel_scale)
            conv = Conv(width, 3, 1, 1, dtype=self.dtype, kernel_init=pwc_kernel_init,
                        kernel_first=channels <= 96, name=f"module{name}_0")  # fmt: skip
            new = leaky_relu(conv(feat))
            feat = jnp.concatenate([new, feat], axis=-1)
        flow = Conv(2, 3, 1, 1, dtype=self.dtype, kernel_init=flow_kernel_init, kernel_first=True,
                    name="moduleSix_0")(feat)  # fmt: skip
        return flow, feat


class PWCNet(nn.Module):
    """(first, second) normalised images [N,H,W,3] -> {'P3'..'P6': flow [N,h,w,2]} (+ raw flows).

    `__call__` takes the images. `extract` and `from_pyramids` split it into the per-image part
    (the extractor pyramid, levels 2..6: all the decoders read) and the per-pair part (the cost
    volumes and decoders), so that an inference engine can extract each frame's pyramid once
    and reuse it for every pair the frame is in.
    """

    channel_scale: float = 1.0  # < 1 only for tiny test models; the release is 1.0
    dtype: Any = jnp.float32
    cost_volume: str = "raw"  # the release's; 'normalized' for training from scratch

    def setup(self) -> None:
        if self.cost_volume not in COST_VOLUMES:
            raise ValueError(f"cost_volume must be one of {COST_VOLUMES}, got {self.cost_volume!r}")
        cs, dt, cv = self.channel_scale, self.dtype, self.cost_volume
        self.moduleExtractor = Extractor(cs, dt)
        self.moduleSix = Decoder(6, cs, dt, cv)
        self.moduleFiv = Decoder(5, cs, dt, cv)
        self.moduleFou = Decoder(4, cs, dt, cv)
        self.moduleThr = Decoder(3, cs, dt, cv)
        self.moduleTwo = Decoder(2, cs, dt, cv)

    def extract(self, images_NxHxWx3: Array) -> dict[str, Array]:
        """The release's input (normalised image / 255), 2x2 average-pooled, through the
        extractor: {'L2'..'L6': features} (level 1 feeds level 2 only and is not kept)."""
        x = images_NxHxWx3.astype(jnp.float32) / 255.0
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        pyramid = self.moduleExtractor(x)
        return {f"L{level}": pyramid[level - 1] for level in range(2, 7)}

    def from_pyramids(
        self, pyramid1: dict[str, Array], pyramid2: dict[str, Array]
    ) -> dict[str, Array]:
        """Flows from the first to the second image of each pair, given their pyramids."""
        previous = None
        raw = {}
        for level in (6, 5, 4, 3, 2):
            decoder = getattr(self, f"module{LEVEL_NAMES[level - 1]}")
            previous = decoder(pyramid1[f"L{level}"], pyramid2[f"L{level}"], previous)
            raw[f"L{level}"] = previous[0].astype(jnp.float32)
        flows = {p: raw[f"L{level}"] * FLOW_SCALES[level] for p, level in OUTPUT_LEVELS.items()}
        flows["raw"] = raw
        return flows

    def __call__(self, first_NxHxWx3: Array, second_NxHxWx3: Array) -> dict[str, Array]:
        return self.from_pyramids(self.extract(first_NxHxWx3), self.extract(second_NxHxWx3))
