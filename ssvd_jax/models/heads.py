"""RetinaNet class and box subnets (the release's `SSVDSubnets`, REFERENCE_SPEC §5.1).

One module is shared by all pyramid levels of a stream. Outputs are raw: class logits with
anchor-major channels (a * num_classes + c) and box deltas (a * 4 + j), so that flattening a
level as (y, x, a) lines up with `ssvd_jax.ops.anchors.generate_anchors_per_level`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssvd_jax.models.conv import Conv

Array = jax.Array

head_kernel_init = nn.initializers.normal(stddev=0.01)


class RetinaHead(nn.Module):
    """Class and box towers (`num_convs` 3x3 conv + ReLU each) and their predictors.

    Attributes:
      num_classes: foreground classes (30 for ImageNet VID); sigmoid, no background logit.
      num_anchors: anchors per location (9).
      num_convs: tower depth; the release uses 2 (the paper's Fig. 3), RetinaNet 4.
      width: tower channels.
      prior_prob: initial foreground probability; the class bias starts at -log((1-p)/p) so the
        focal loss is not swamped by easy negatives at the start of training.
    """

    num_classes: int
    num_anchors: int
    num_convs: int
    width: int
    prior_prob: float
    dtype: Any = jnp.float32

    def setup(self) -> None:
        def conv(features: int, name: str, bias_init: Any = nn.initializers.zeros) -> Conv:
            return Conv(
                features,
                3,
                1,
                1,
                dtype=self.dtype,
                kernel_init=head_kernel_init,
                bias_init=bias_init,
                name=name,
            )

        self.cls_tower = [conv(self.width, f"cls_tower_{i}") for i in range(self.num_convs)]
        self.bbox_tower = [conv(self.width, f"bbox_tower_{i}") for i in range(self.num_convs)]
        prior_bias = -math.log((1.0 - self.prior_prob) / self.prior_prob)
        self.cls_logits = conv(
            self.num_anchors * self.num_classes,
            "cls_logits",
            nn.initializers.constant(prior_bias),
        )
        self.bbox_pred = conv(self.num_anchors * 4, "bbox_pred")

    def __call__(self, features: dict[str, Array]) -> dict[str, dict[str, Array]]:
        """{level: [N,H,W,C]} -> {'cls_logits': {level: [N,H,W,A*K]}, 'box_deltas': {...}}."""
        logits, deltas = {}, {}
        for level, x in features.items():
            c = x
            for layer in self.cls_tower:
                c = nn.relu(layer(c))
            b = x
            for layer in self.bbox_tower:
                b = nn.relu(layer(b))
            logits[level] = self.cls_logits(c).astype(jnp.float32)
            deltas[level] = self.bbox_pred(b).astype(jnp.float32)
        return {"cls_logits": logits, "box_deltas": deltas}
