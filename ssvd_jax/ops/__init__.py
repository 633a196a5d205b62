"""Pure-jnp operators (no Flax): boxes, anchors, matching, losses, NMS, post-processing,
and the temporal ops (bilinear warps, deformable convolution, correlation)."""
