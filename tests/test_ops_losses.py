"""Losses (`ssvd_jax.ops.losses`) against torchvision / torch: focal loss (values and gradients,
including large |logits|), smooth L1, and the normalised per-anchor RetinaNet loss against a
NumPy transcription."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from ssvd_jax.ops import losses


def _close(got, want, rtol=1e-4, atol=1e-12) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.all(np.abs(got - want) <= atol + rtol * np.abs(want)), np.max(np.abs(got - want))


@pytest.fixture(scope="module")
def focal_fn():
    return jax.jit(losses.sigmoid_focal_loss, static_argnames=("alpha", "gamma"))


def _torchvision_focal(logits, targets, dtype, **kwargs) -> np.ndarray:
    x = torch.from_numpy(logits).to(dtype)
    t = torch.from_numpy(targets).to(dtype)
    return torchvision.ops.sigmoid_focal_loss(x, t, **kwargs).double().numpy()


def _check_focal(got, logits, targets, **kwargs) -> None:
    # Elementwise rel err < 1e-4 against torchvision in float64 (the exact value). torchvision in
    # float32 computes log(1 + exp(-|x|)) without log1p, which loses digits when the loss is
    # small (confident, correct logits), so against it the check is relative to the largest
    # loss instead.
    _close(got, _torchvision_focal(logits, targets, torch.float64, **kwargs), atol=1e-30)
    want32 = _torchvision_focal(logits, targets, torch.float32, **kwargs)
    _close(got, want32, rtol=1e-4, atol=1e-6 * np.max(want32))


@pytest.mark.parametrize("draw", range(3))
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.5), (-1.0, 0.0)])
def test_focal_matches_torchvision(focal_fn, draw, alpha, gamma, rng):
    logits = rng.normal(0, 4, size=(64, 30)).astype(np.float32)
    logits[0, :8] = [-80, -30, -15, 15, 30, 80, -100, 100]  # saturated sigmoids
    targets = (rng.uniform(size=(64, 30)) < 0.2).astype(np.float32)
    targets[0, :8] = [0, 1, 0, 1, 0, 1, 1, 0]
    got = focal_fn(logits, targets, alpha=alpha, gamma=gamma)
    _check_focal(got, logits, targets, alpha=alpha, gamma=gamma)
    assert float(np.max(np.asarray(got))) > 1.0


def test_focal_soft_targets_match_torchvision(focal_fn, rng):
    logits = rng.normal(0, 3, size=(200,)).astype(np.float32)
    targets = rng.uniform(size=(200,)).astype(np.float32)
    got = focal_fn(logits, targets, alpha=0.25, gamma=2.0)
    _check_focal(got, logits, targets)


def test_focal_gradient_finite_and_matches_torch(rng):
    logits = rng.normal(0, 3, size=(100,)).astype(np.float32)
    logits[:6] = [-200, -60, 60, 200, -1e4, 1e4]
    targets = (rng.uniform(size=(100,)) < 0.5).astype(np.float32)
    targets[:6] = [1, 0, 1, 0, 1, 1]
    grad = np.asarray(jax.grad(lambda x: jnp.sum(losses.sigmoid_focal_loss(x, targets)))(logits))
    assert np.all(np.isfinite(grad))
    # Wrong-sign saturated logits: the loss is ~alpha_t * |x| with slope ~alpha_t.
    assert grad[0] == pytest.approx(-0.25, rel=1e-3) and grad[3] == pytest.approx(0.75, rel=1e-3)
    x = torch.from_numpy(logits[6:]).requires_grad_(True)
    torchvision.ops.sigmoid_focal_loss(x, torch.from_numpy(targets[6:]), reduction="sum").backward()
    _close(grad[6:], x.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [1.0 / 9, 0.11, 1.0])
def test_smooth_l1_matches_torch(beta, rng):
    pred = rng.normal(0, 0.3, size=(300, 4)).astype(np.float32)
    target = rng.normal(0, 0.3, size=(300, 4)).astype(np.float32)
    got = losses.smooth_l1_loss(pred, target, beta)
    want = F.smooth_l1_loss(
        torch.from_numpy(pred), torch.from_numpy(target), reduction="none", beta=beta
    )
    _close(got, want.numpy(), rtol=1e-5, atol=1e-7)


def test_smooth_l1_beta_zero_is_l1(rng):
    pred, target = rng.normal(size=(2, 50)).astype(np.float32)
    _close(losses.smooth_l1_loss(pred, target, 0.0), np.abs(pred - target), rtol=1e-6)


def _numpy_retinanet_loss(logits, deltas, cls_t, box_t, fg, valid, alpha, gamma, beta):
    x = logits.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * cls_t + np.log1p(np.exp(-np.abs(x)))
    p_t = p * cls_t + (1 - p) * (1 - cls_t)
    focal = (alpha * cls_t + (1 - alpha) * (1 - cls_t)) * ce * (1 - p_t) ** gamma
    d = np.abs(deltas.astype(np.float64) - box_t)
    sl1 = np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    num_fg = fg.sum()
    norm = max(1.0, num_fg)
    cls = (focal * valid[..., None]).sum() / norm
    box = (sl1 * fg[..., None]).sum() / norm
    return cls, box, num_fg


@pytest.mark.parametrize("draw", range(2))
def test_retinanet_loss_batch_normalisation(draw, rng):
    b, a, c = 2, 120, 5
    logits = rng.normal(-2, 2, size=(b, a, c)).astype(np.float32)
    deltas = rng.normal(0, 0.5, size=(b, a, 4)).astype(np.float32)
    labels = rng.choice([1, 0, -1], p=[0.1, 0.8, 0.1], size=(b, a))
    labels[1] = np.where(labels[1] == 1, 0, labels[1])  # image 1 has no foreground at all
    fg = labels == 1
    valid = labels != -1
    cls_t = np.eye(c, dtype=np.float32)[rng.integers(0, c, size=(b, a))] * fg[..., None]
    box_t = (rng.normal(0, 0.5, size=(b, a, 4)) * fg[..., None]).astype(np.float32)
    out = jax.jit(losses.retinanet_loss)(logits, deltas, cls_t, box_t, fg, valid)
    cls, box, num_fg = _numpy_retinanet_loss(
        logits, deltas, cls_t, box_t, fg, valid, 0.25, 2.0, 0.11
    )
    assert float(out["num_fg"]) == num_fg > 0
    _close(out["cls"], cls, rtol=1e-5)
    _close(out["box"], box, rtol=1e-5)
    # An explicit normaliser (e.g. a psum over devices) replaces max(1, num_fg).
    scaled = losses.retinanet_loss(logits, deltas, cls_t, box_t, fg, valid, normalizer=2 * num_fg)
    _close(scaled["cls"], cls / 2, rtol=1e-5)


def test_retinanet_loss_without_foreground_divides_by_one(rng):
    logits = rng.normal(-3, 1, size=(50, 4)).astype(np.float32)
    deltas = rng.normal(size=(50, 4)).astype(np.float32)
    zeros = np.zeros((50, 4), np.float32)
    fg = np.zeros(50, bool)
    valid = np.ones(50, bool)
    out = losses.retinanet_loss(logits, deltas, zeros, zeros, fg, valid)
    want = torchvision.ops.sigmoid_focal_loss(torch.from_numpy(logits), torch.from_numpy(zeros))
    _close(out["cls"], want.sum().item(), rtol=1e-5)
    assert float(out["box"]) == 0.0 and float(out["num_fg"]) == 0.0
