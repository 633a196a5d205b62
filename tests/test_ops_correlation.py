"""cost_volume against a direct NumPy loop, a pure-torch transcription (gradients) and the fixture.

The NumPy loop is the definition (REFERENCE_SPEC 3.3); the torch side is REFERENCE_SPEC 10's CPU
replacement for the release's CUDA correlation: zero-pad f2 by d and, for each (dy, dx) in
row-major order, take mean_c(f1 * f2_shifted).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssvd_jax.ops.correlation import cost_volume

cost_volume_jit = jax.jit(cost_volume, static_argnames="max_displacement")


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _numpy_loop(f1: np.ndarray, f2: np.ndarray, d: int) -> np.ndarray:
    n, h, w, c = f1.shape
    side = 2 * d + 1
    out = np.zeros((n, h, w, side * side), np.float64)
    for y in range(h):
        for x in range(w):
            for dy in range(-d, d + 1):
                for dx in range(-d, d + 1):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        dot = np.sum(f1[:, y, x].astype(np.float64) * f2[:, y + dy, x + dx], -1)
                        out[:, y, x, (dy + d) * side + (dx + d)] = dot / c
    return out


def _torch_cost_volume(f1_t: torch.Tensor, f2_t: torch.Tensor, d: int) -> torch.Tensor:
    """NCHW, as the spec's pure-torch replacement."""
    h, w = f1_t.shape[2:]
    f2_p = F.pad(f2_t, (d, d, d, d))
    planes = [
        (f1_t * f2_p[:, :, dy : dy + h, dx : dx + w]).mean(1)
        for dy in range(2 * d + 1)
        for dx in range(2 * d + 1)
    ]
    return torch.stack(planes, 1)


# (1, 3, 70, 4): wider than one 64-column tile, and not a multiple of it.
@pytest.mark.parametrize(
    "shape,d", [((2, 6, 7, 5), 4), ((1, 9, 4, 3), 2), ((1, 3, 3, 2), 1), ((1, 3, 70, 4), 4)]
)
def test_matches_numpy_loop(shape, d, rng):
    f1 = rng.standard_normal(shape).astype(np.float32)
    f2 = rng.standard_normal(shape).astype(np.float32)
    out = cost_volume_jit(f1, f2, max_displacement=d)
    assert out.shape == (*shape[:3], (2 * d + 1) ** 2)
    assert _rel_err(out, _numpy_loop(f1, f2, d)) < 1e-5
    # Centre channel is the plain channel mean of the product (REFERENCE_SPEC 12.2).
    centre = (2 * d + 1) ** 2 // 2
    assert _rel_err(out[..., centre], np.mean(f1 * f2, -1)) < 1e-5


@pytest.mark.parametrize("shape", [(2, 7, 6, 8), (1, 3, 70, 4)])
def test_gradients_match_torch(shape, rng):
    f1 = rng.standard_normal(shape).astype(np.float32)
    f2 = rng.standard_normal(shape).astype(np.float32)
    cotangent = rng.standard_normal((*shape[:3], 81)).astype(np.float32)
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    f1_t, f2_t = to_nchw(f1).requires_grad_(), to_nchw(f2).requires_grad_()
    (_torch_cost_volume(f1_t, f2_t, 4) * to_nchw(cotangent)).sum().backward()
    grads = jax.jit(jax.grad(lambda a, b: jnp.vdot(cost_volume(a, b), cotangent), argnums=(0, 1)))(
        f1, f2
    )
    assert _rel_err(grads[0], f1_t.grad.permute(0, 2, 3, 1).numpy()) < 1e-4
    assert _rel_err(grads[1], f2_t.grad.permute(0, 2, 3, 1).numpy()) < 1e-4


def test_fixture(fixtures_dir):
    ref = np.load(fixtures_dir / "ssvd_reference_parity" / "ops_correlation.npz")
    out = cost_volume_jit(ref["f1"], ref["f2"])
    assert _rel_err(out, ref["out"]) < 1e-4
    assert _rel_err(jax.nn.leaky_relu(out, 0.1), ref["out_leaky"]) < 1e-4
