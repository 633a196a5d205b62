"""Bilinear warps and nearest upsampling against torch and the release's fixtures.

`warp` must equal grid_sample(align_corners=True, padding_mode='zeros') with grid
2(pos + flow)/(size - 1) - 1 (REFERENCE_SPEC 3.5), forward and gradients w.r.t. the map and the
flow; `pwc_warp` must equal PWC-Net's Backward (3.4), written here from the spec in torch.
Maps are 5x9 so that H-1 and W-1 are powers of two: torch's grid normalisation then round-trips
integer positions exactly, and integer / zero flows test the gradient at integer sample positions
(where a ceil-based corner would give zero) rather than float noise in torch's grid.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssvd_jax.ops import sampling

N, H, W, C = 2, 5, 9, 6


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def _vjp(fn, cotangent, *args):
    return jax.grad(lambda *a: jnp.vdot(fn(*a), cotangent), argnums=tuple(range(len(args))))(*args)


warp_jit = jax.jit(sampling.warp)
warp_grads_jit = jax.jit(functools.partial(_vjp, sampling.warp))
pwc_warp_jit = jax.jit(sampling.pwc_warp_and_mask)
pwc_warp_grads_jit = jax.jit(functools.partial(_vjp, sampling.pwc_warp))


def _torch_grid(flow_t: torch.Tensor) -> torch.Tensor:
    _, height, width, _ = flow_t.shape
    gx = torch.arange(width, dtype=torch.float32)[None, None, :] + flow_t[..., 0]
    gy = torch.arange(height, dtype=torch.float32)[None, :, None] + flow_t[..., 1]
    return torch.stack([2 * gx / (width - 1) - 1, 2 * gy / (height - 1) - 1], dim=-1)


def _torch_warp(x: np.ndarray, flow: np.ndarray, cotangent: np.ndarray):
    x_t = _nchw(x).requires_grad_()
    flow_t = torch.from_numpy(flow).requires_grad_()
    out_t = F.grid_sample(x_t, _torch_grid(flow_t), align_corners=True, padding_mode="zeros")
    (out_t * _nchw(cotangent)).sum().backward()
    return _nhwc(out_t), _nhwc(x_t.grad), flow_t.grad.numpy()


def _torch_pwc_backward(x: np.ndarray, flow: np.ndarray, cotangent: np.ndarray):
    """PWC-Net's Backward as in the release (pytorch-pwc), with align_corners=True."""
    x_t = _nchw(x).requires_grad_()
    flow_t = torch.from_numpy(flow).requires_grad_()
    ones = torch.ones(x_t.shape[0], 1, *x_t.shape[2:])
    warped = F.grid_sample(
        torch.cat([x_t, ones], 1), _torch_grid(flow_t), align_corners=True, padding_mode="zeros"
    )
    mask = warped[:, -1:]
    mask = torch.where(mask > 0.999, 1.0, 0.0)
    out_t = warped[:, :-1] * mask
    (out_t * _nchw(cotangent)).sum().backward()
    return _nhwc(out_t), _nhwc(mask), _nhwc(x_t.grad), flow_t.grad.numpy()


def _flow(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "zero":
        return np.zeros((N, H, W, 2), np.float32)
    if kind == "integer":  # includes positions exactly on the border and outside
        return rng.integers(-3, 4, (N, H, W, 2)).astype(np.float32)
    # Large enough that many samples leave the map, some partially (one corner in).
    return (rng.standard_normal((N, H, W, 2)) * 3).astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "integer", "zero"])
def test_warp_matches_grid_sample(kind, rng):
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    flow = _flow(kind, rng)
    cotangent = rng.standard_normal((N, H, W, C)).astype(np.float32)
    out_ref, gx_ref, gflow_ref = _torch_warp(x, flow, cotangent)
    gx, gflow = warp_grads_jit(cotangent, x, flow)
    assert _rel_err(warp_jit(x, flow), out_ref) < 1e-4
    assert _rel_err(gx, gx_ref) < 1e-4
    assert _rel_err(gflow, gflow_ref) < 1e-4
    if kind == "zero":
        # Integer positions: the flow gradient is the forward difference, not zero.
        assert np.abs(gflow).max() > 0.1


def test_pwc_warp_matches_torch_backward(rng):
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    flow = _flow("random", rng)
    flow[0] = np.round(flow[0])  # integer flows: on-border points keep mask 1
    cotangent = rng.standard_normal((N, H, W, C)).astype(np.float32)
    out_ref, mask_ref, gx_ref, gflow_ref = _torch_pwc_backward(x, flow, cotangent)
    out, mask, _ = pwc_warp_jit(x, flow)
    gx, gflow = pwc_warp_grads_jit(cotangent, x, flow)
    assert 0 < mask_ref.mean() < 1
    np.testing.assert_array_equal(np.asarray(mask), mask_ref)
    assert _rel_err(out, out_ref) < 1e-4
    assert _rel_err(gx, gx_ref) < 1e-4
    assert _rel_err(gflow, gflow_ref) < 1e-4


def test_pwc_warp_fixture(fixtures_dir):
    ref = np.load(fixtures_dir / "ssvd_reference_parity" / "ops_pwc_backward_warp.npz")
    out, mask, warped_ones = pwc_warp_jit(ref["x"], ref["flow"])
    np.testing.assert_array_equal(np.asarray(mask), ref["mask"])
    assert _rel_err(warped_ones, ref["warped_ones"]) < 1e-4
    assert _rel_err(out, ref["out"]) < 1e-4
    assert _rel_err(jax.jit(sampling.pwc_warp)(ref["x"], ref["flow"]), ref["out"]) < 1e-4


def test_feature_warp_fixture(fixtures_dir):
    ref = np.load(fixtures_dir / "ssvd_reference_parity" / "ops_feature_warp.npz")
    assert _rel_err(warp_jit(ref["x"], ref["flow"]), ref["out"]) < 1e-4


def test_bilinear_sample_points(rng):
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    ys = np.array([[0.0, 4.0, 2.5, -1.0, 5.0, -0.25], [1.0, 3.0, 0.5, 2.0, 4.0, 4.5]], np.float32)
    xs = np.array([[0.0, 8.0, 3.0, 2.0, 1.0, 0.0], [7.0, 8.5, 8.0, -2.0, 9.0, 8.0]], np.float32)
    out = np.asarray(jax.jit(sampling.bilinear_sample)(x, ys, xs))
    assert out.shape == (N, 6, C)
    np.testing.assert_allclose(out[0, 0], x[0, 0, 0])
    np.testing.assert_allclose(out[0, 1], x[0, 4, 8])
    np.testing.assert_allclose(out[0, 2], 0.5 * (x[0, 2, 3] + x[0, 3, 3]), rtol=1e-6)
    np.testing.assert_allclose(out[0, 5], 0.75 * x[0, 0, 0], rtol=1e-6)  # corner y=-1 is zero
    np.testing.assert_allclose(out[1, 1], 0.5 * x[1, 3, 8], rtol=1e-6)  # corner x=9 is zero
    np.testing.assert_allclose(out[1, 5], 0.5 * x[1, 4, 8], rtol=1e-6)
    for n, p in ((0, 3), (0, 4), (1, 3), (1, 4)):  # on or past the outer ring: all corners out
        np.testing.assert_array_equal(out[n, p], 0.0)


@pytest.mark.parametrize("factor", [2, 4])
def test_upsample_nearest_fixture_and_torch(fixtures_dir, factor, rng):
    ref = np.load(fixtures_dir / "ssvd_reference_parity" / "ops_upsample_nearest.npz")
    np.testing.assert_array_equal(
        sampling.upsample_nearest(ref["x"], factor), ref[f"out_x{factor}"]
    )
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    expected = _nhwc(F.interpolate(_nchw(x), scale_factor=factor, mode="nearest"))
    np.testing.assert_array_equal(
        jax.jit(sampling.upsample_nearest, static_argnums=1)(x, factor), expected
    )
