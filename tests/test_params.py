"""models/params.init_variables: the init program compiled for compiling fast (FAST_COMPILE on
CPU) gives the plain jitted init's values, and still works under a trace (jax.eval_shape)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssvd_jax.models import params


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.GroupNorm(num_groups=4)(x)
        return nn.Dense(5)(nn.relu(x).mean(axis=(1, 2)))


def test_fast_compiled_init_matches_plain_jit():
    model, x = _Small(), jnp.ones((1, 16, 16, 3))
    for seed in (0, 7):
        got = params.init_variables(model, x, seed=seed)
        key = jax.random.key(seed, impl="rbg")
        want = jax.jit(model.init)(key, x)
        flat_got, flat_want = jax.tree.leaves(got), jax.tree.leaves(want)
        assert len(flat_got) == len(flat_want)
        for a, b in zip(flat_got, flat_want, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            scale = max(float(np.abs(b).max()), 1e-12)
            assert float(np.abs(a - b).max()) <= 1e-6 * scale, f"seed {seed}"
        # random weights, not zeros
        assert float(np.abs(np.asarray(got["params"]["Conv_0"]["kernel"])).max()) > 0


def test_init_under_a_trace_gives_shapes():
    model = _Small()

    def build():
        return params.init_variables(model, jnp.zeros((2, 16, 16, 3)), seed=3)

    shapes = jax.eval_shape(build)
    assert shapes["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 8)
    assert shapes["params"]["Dense_0"]["kernel"].shape == (8, 5)
