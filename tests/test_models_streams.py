"""The motion stream's combination of its warped entries: the paper's plain mean and FGFA's
cosine-similarity weights (`model.motion.aggregation`), against numpy written from the
definitions. Integer flows make the warp an exact shift, so the check is about the weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssvd_jax.models import streams

B, E, H, W, C = 2, 4, 5, 7, 6


def _shift(x, dx):
    """x [H,W,C] sampled at (x + dx, y), zero outside (the warp along a constant flow)."""
    out = np.zeros_like(x)
    if dx >= 0:
        out[:, : W - dx] = x[:, dx:]
    else:
        out[:, -dx:] = x[:, : W + dx]
    return out


def _cosine_reference(entries, shifts, reference, temperature):
    warped = np.stack(
        [np.stack([_shift(entries[b, e], shifts[e]) for e in range(E)]) for b in range(B)]
    )
    dot = np.sum(warped * reference[:, None], axis=-1)
    # Where a shift leaves the map the warped features are 0: cosine 0 (the norms' eps).
    norm_w = np.sqrt(np.sum(warped**2, -1) + 1e-12)
    norm_r = np.sqrt(np.sum(reference**2, -1) + 1e-12)[:, None]
    logits = temperature * dot / (norm_w * norm_r)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.sum(weights[..., None] * warped, axis=1), warped


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_cosine_weights_follow_fgfa(rng, temperature):
    entries = rng.normal(0, 1, (B, E, H, W, C)).astype(np.float32)
    reference = rng.normal(0, 1, (B, H, W, C)).astype(np.float32)
    shifts = [0, 1, -2, 3]
    flows = np.zeros((B, E, H, W, 2), np.float32)
    for e, dx in enumerate(shifts):
        flows[:, e, ..., 0] = dx
    expected, expected_warped = _cosine_reference(entries, shifts, reference, temperature)
    got, warped = streams.motion_aggregate(
        jnp.asarray(entries), jnp.asarray(flows), jnp.asarray(reference), "cosine", temperature
    )
    np.testing.assert_allclose(np.asarray(warped), expected_warped, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
    mean, _ = streams.motion_aggregate(jnp.asarray(entries), jnp.asarray(flows))
    np.testing.assert_allclose(np.asarray(mean), expected_warped.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_cosine_weights_favour_entries_like_the_reference(rng):
    """An entry equal to the reference outweighs one orthogonal to it by exp(temperature):
    with two such entries the aggregate is (e^T ref + other) / (e^T + 1)."""
    reference = rng.normal(0, 1, (1, H, W, C)).astype(np.float32)
    other = rng.normal(0, 1, (1, H, W, C)).astype(np.float32)
    # Remove `other`'s component along the reference, per pixel: cosine 0.
    other -= (
        np.sum(other * reference, -1, keepdims=True) / np.sum(reference**2, -1, keepdims=True)
    ) * reference
    entries = np.stack([reference, other], axis=1)
    flows = np.zeros((1, 2, H, W, 2), np.float32)
    temperature = 3.0
    got, _ = streams.motion_aggregate(
        jnp.asarray(entries), jnp.asarray(flows), jnp.asarray(reference), "cosine", temperature
    )
    w = np.exp(temperature)
    np.testing.assert_allclose(
        np.asarray(got), (w * reference + other) / (w + 1), rtol=1e-4, atol=1e-5
    )


def test_cosine_weights_have_finite_gradients_where_a_warp_leaves_the_map(rng):
    """A flow that points outside the map warps in exact zeros (zero padding); their cosine is
    0 and the gradient through it finite (a plain norm's is 0/0 there: NaN in training)."""
    entries = jnp.asarray(rng.normal(0, 1, (1, 2, H, W, C)), jnp.float32)
    reference = jnp.asarray(rng.normal(0, 1, (1, H, W, C)), jnp.float32)
    flows = jnp.zeros((1, 2, H, W, 2)).at[:, 1, ..., 0].set(2 * W)  # entry 1: all outside

    def loss(entries, reference):
        out, _ = streams.motion_aggregate(entries, flows, reference, "cosine", 3.0)
        return jnp.sum(out**2)

    _, warped = streams.motion_aggregate(entries, flows, reference, "cosine", 3.0)
    assert not np.any(np.asarray(warped[:, 1]))

    grads = jax.grad(loss, argnums=(0, 1))(entries, reference)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    assert float(jnp.abs(grads[0][:, 0]).sum()) > 0


def test_unknown_motion_aggregation_is_refused():
    x = jnp.zeros((1, 1, H, W, C))
    with pytest.raises(ValueError, match="motion aggregation"):
        streams.motion_aggregate(x, jnp.zeros((1, 1, H, W, 2)), x[:, 0], "median")
