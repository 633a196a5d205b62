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

from ssvd_jax.ops.correlation import cost_volume, normalized_cost_volume

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


def test_normalized_is_the_pearson_correlation(rng):
    """normalized_cost_volume: per displacement, the correlation coefficient of the two
    pixels' feature vectors (the NumPy loop on centred, unit-length features), 0 outside."""
    shape, d = (2, 6, 7, 5), 3
    f1 = rng.standard_normal(shape).astype(np.float32) + 2.0
    f2 = rng.standard_normal(shape).astype(np.float32) * 3.0
    out = np.asarray(jax.jit(normalized_cost_volume, static_argnums=2)(f1, f2, d))

    def unit(f):
        f = f.astype(np.float64) - f.mean(-1, keepdims=True)
        return f / np.linalg.norm(f, axis=-1, keepdims=True)

    want = _numpy_loop(unit(f1), unit(f2), d) * shape[-1]
    assert _rel_err(out, want) < 1e-5
    assert np.abs(out).max() <= 1.0 + 1e-5
    assert np.all(out[:, 0, :, : 2 * d + 1] == 0)  # rows above the image: padding


def test_normalized_peaks_at_the_displacement_where_raw_does_not(rng):
    """Features that are mostly positive and vary in strength, as a fresh extractor's
    LeakyReLU features are: the raw cost volume's peak follows the strongest neighbour, the
    normalized one's the displacement that matches."""
    n, h, w, c, d = 2, 16, 16, 8, 4
    strength = rng.uniform(0.2, 3.0, (n, h + 8, w + 8, 1))
    base = (np.abs(rng.standard_normal((n, h + 8, w + 8, c))) + 0.5) * strength
    dy, dx = 2, -3  # f2 at (y + dy, x + dx) is f1 at (y, x)
    f1 = base[:, 4 : 4 + h, 4 : 4 + w].astype(np.float32)
    f2 = base[:, 4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w].astype(np.float32)
    want = (dy + d) * (2 * d + 1) + (dx + d)
    inner = np.s_[:, d : h - d, d : w - d]
    normalized = np.asarray(normalized_cost_volume(f1, f2, d))[inner].argmax(-1)
    raw = np.asarray(cost_volume(f1, f2, d))[inner].argmax(-1)
    assert (normalized == want).mean() == 1.0
    assert (raw == want).mean() < 0.5
