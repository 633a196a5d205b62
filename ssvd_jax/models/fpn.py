"""Feature pyramid P3-P6 exactly as the release's `FeaturePyramid` (REFERENCE_SPEC §2.2).

Laterals are 1x1 convs on C3..C5; the top-down path adds nearest-x2-upsampled maps; 3x3 output
convs give P3..P5 and a 3x3 stride-2 conv on C5 (not on P5) gives P6. There is no P7 and no ReLU.
Names (`fpn_p3_1x1`, `fpn_p6`, ...) are the release's, so conversion is a rename.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.conv import Conv, upsample_nearest_to

Array = jax.Array

# maskrcnn-benchmark's FPN init: kaiming_uniform(a=1) weights, zero bias.
fpn_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

LEVELS = ("P3", "P4", "P5", "P6")


class FPN(nn.Module):
    """C3, C4, C5 -> {'P3', 'P4', 'P5', 'P6'}, each with `channels` channels."""

    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[str, Array]) -> dict[str, Array]:
        def conv(k: int, stride: int, name: str) -> Conv:
            return Conv(
                self.channels,
                k,
                stride,
                k // 2,
                dtype=self.dtype,
                kernel_init=fpn_kernel_init,
                name=name,
            )

        c3, c4, c5 = features["C3"], features["C4"], features["C5"]
        lat5 = conv(1, 1, "fpn_p5_1x1")(c5)
        lat4 = conv(1, 1, "fpn_p4_1x1")(c4)
        lat3 = conv(1, 1, "fpn_p3_1x1")(c3)
        p4_sum = upsample_nearest_to(lat5, *lat4.shape[1:3]) + lat4
        p3_sum = upsample_nearest_to(p4_sum, *lat3.shape[1:3]) + lat3
        return {
            "P3": conv(3, 1, "fpn_p3")(p3_sum),
            "P4": conv(3, 1, "fpn_p4")(p4_sum),
            "P5": conv(3, 1, "fpn_p5")(lat5),
            "P6": conv(3, 2, "fpn_p6")(c5),
        }
