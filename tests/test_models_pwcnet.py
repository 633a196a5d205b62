"""PWC-Net pieces: the transposed-conv conversion and sizes other than the release's 448.

The flows themselves are pinned at 448 by the golden parity test. Here: our input-dilated
convolution with the converted kernel equals torch.nn.ConvTranspose2d(4, 2, 1) (random weights
and the fixture's `ops_conv_transpose.npz`), and the generalised level crop gives flows on
exactly the P3..P6 grids of the ResNet/FPN for other consistent input sizes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ssvd_jax import convert
from ssvd_jax.models import pwcnet
from ssvd_jax.models.params import init_variables


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _apply_transposed(x_nhwc, w_iohw, bias):
    layer = pwcnet.ConvTranspose4x4(w_iohw.shape[1])
    variables = {
        "params": {
            "kernel": jnp.asarray(convert.conv_transpose_kernel_from_torch(w_iohw)),
            "bias": jnp.asarray(bias),
        }
    }
    return layer.apply(variables, jnp.asarray(x_nhwc))


def test_conv_transpose_matches_torch(rng):
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3, 4, 4)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    layer = torch.nn.ConvTranspose2d(6, 3, 4, stride=2, padding=1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
        want = layer(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    got = _apply_transposed(x, w, b)
    assert got.shape == want.shape == (2, 10, 14, 3)
    assert _rel_err(got, want) < 1e-5


def test_conv_transpose_fixture(fixtures_dir):
    f = np.load(fixtures_dir / "ssvd_reference_parity/ops_conv_transpose.npz")
    got = _apply_transposed(f["x"], f["weight_iohw"], f["bias"])
    assert _rel_err(got, f["out"]) < 1e-5


# 320: P5 10 -> P6 5 (the ceil), and odd PWC-Net levels to crop; 256 (all levels even) adds
# nothing to that at the same cost.
@pytest.mark.parametrize("size", [pytest.param(256, marks=pytest.mark.slow), 320])
def test_flows_on_pyramid_grids(size, rng):
    net = pwcnet.PWCNet(channel_scale=0.125)
    a = jnp.asarray(rng.uniform(-100, 100, (1, size, size, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(-100, 100, (1, size, size, 3)), jnp.float32)
    variables = init_variables(net, a, b)
    flows = jax.jit(net.apply)(variables, a, b)
    p5 = -(-size // 32)
    expected = {"P3": size // 8, "P4": size // 16, "P5": p5, "P6": -(-p5 // 2)}
    for level, side in expected.items():
        assert flows[level].shape == (1, side, side, 2), level
        assert np.all(np.isfinite(np.asarray(flows[level])))
    np.testing.assert_allclose(flows["P3"], 5.0 * flows["raw"]["L2"], rtol=1e-6)


def test_crop_rejects_an_inconsistent_pyramid():
    with pytest.raises(ValueError, match="inconsistent"):
        pwcnet.crop_to(jnp.zeros((1, 6, 6, 2)), 7, 7)


@pytest.mark.parametrize("padding,dilation", [(1, 1), (2, 2), (0, 1)])
def test_kernel_first_conv_equals_torch(padding, dilation, rng):
    """`conv2d_kernel_first` (one matmul to every tap's outputs, then shift-and-add) is
    torch's conv2d, for narrow outputs of wide inputs as PWC-Net's decoders use it."""
    from ssvd_jax.models.conv import conv2d_kernel_first

    x = rng.standard_normal((2, 9, 11, 40)).astype(np.float32)
    k = rng.standard_normal((3, 3, 40, 5)).astype(np.float32)
    got = np.asarray(conv2d_kernel_first(jnp.asarray(x), jnp.asarray(k), padding=padding,
                                         dilation=dilation))  # fmt: skip
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(k).permute(3, 2, 0, 1),
        padding=padding, dilation=dilation,
    ).permute(0, 2, 3, 1).numpy()  # fmt: skip
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _learn_translations(cost_volume: str, seed: int, steps: int = 120, size: int = 64):
    """A fresh 1/4-width PWC-Net trained with its own multi-scale loss on textures moved by up
    to 8 px (Adam); returns the gain with which it then reads held-out 4-px moves (the
    predicted flow projected on the true one, over its length: 1 = read at its size)."""
    import optax

    from input_pipeline import flow_data, synthetic
    from ssvd_jax import objective

    rng = np.random.default_rng(seed)
    pool = np.stack([synthetic._background(rng, size, size) - 128.0 for _ in range(40)])

    def textures(k):
        return pool[rng.integers(len(pool) - 8, size=k)]

    net = pwcnet.PWCNet(channel_scale=0.25, cost_volume=cost_volume)
    first = jnp.asarray(textures(1), jnp.float32)
    params = init_variables(net, first, first, seed=seed)["params"]
    weights = {"L6": 0.32, "L5": 0.08, "L4": 0.02, "L3": 0.01, "L2": 0.005}
    tx = optax.adam(2e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, a, b, flow):
        def loss(p):
            out = net.apply({"params": p}, a, b)
            return objective.flow_loss(out["raw"], flow, weights, pwcnet.RAW_FLOW_UNIT)[0]

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    for _ in range(steps):
        a = textures(8).astype(np.float32)
        shifts = rng.uniform(-8, 8, (8, 2)).astype(np.float32)
        b = np.stack([flow_data.translate(x, *s) for x, s in zip(a, shifts, strict=True)])
        flow = np.broadcast_to(shifts[:, None, None], (8, size, size, 2))
        params, opt = step(params, opt, a, b, np.ascontiguousarray(flow))
    held_out = pool[-8:].astype(np.float32)  # textures it never saw
    gains = []
    for dx, dy in ((4, 0), (0, 4), (-4, 0), (0, -4)):
        moved = np.stack([flow_data.translate(x, dx, dy) for x in held_out])
        p3 = np.asarray(jax.jit(net.apply)({"params": params}, held_out, moved)["P3"]) * 8
        inner = p3[:, 1:-1, 1:-1]
        gains.append(float(((inner[..., 0] * dx + inner[..., 1] * dy) / 16).mean()))
    return float(np.mean(gains))


@pytest.mark.slow  # two PWC-Nets trained for 120 steps: ~80 s
def test_a_fresh_pwcnet_learns_to_match_with_the_normalized_cost_volume(rng):
    """Why `cost_volume='normalized'` exists: trained from scratch on the simplest flow there
    is, a PWC-Net with the release's raw cost volume still reads nothing after as many steps
    as one with the normalized one needs to read translations at most of their size."""
    seed = int(rng.integers(2**31))
    normalized = _learn_translations("normalized", seed)
    raw = _learn_translations("raw", seed)
    assert normalized > 0.6, (seed, normalized, raw)
    assert raw < 0.2, (seed, normalized, raw)
