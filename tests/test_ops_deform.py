"""deform_conv2d against torchvision.ops.deform_conv2d and the release's DCN fixture.

Forward and gradients (w.r.t. input, offsets, kernel and, for DCNv2, the mask) are compared on
fresh random inputs with offsets large enough that many taps leave the map, plus integer and zero
offsets, whose sample points sit exactly on pixels and on the padding ring (y or x == -1): there the
offset gradient must be the per-corner one of torchvision's backward kernel, not zero.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from ssvd_jax.ops.deform import deform_conv2d

STATIC = ("deformable_groups", "stride", "padding", "dilation")


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _loss(x, offset, kernel, mask, cotangent, **conv_args):
    return jnp.vdot(deform_conv2d(x, offset, kernel, mask=mask, **conv_args), cotangent)


forward_jit = jax.jit(deform_conv2d, static_argnames=STATIC)
grads_jit = jax.jit(jax.grad(_loss, argnums=(0, 1, 2, 3)), static_argnames=STATIC)
grads_no_mask_jit = jax.jit(
    jax.grad(functools.partial(_loss, mask=None), argnums=(0, 1, 2)), static_argnames=STATIC
)


def _torchvision(x, offset, kernel, mask, cotangent, stride, padding, dilation):
    """torchvision forward and grads, all converted back to NHWC / HWIO."""
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    to_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()
    x_t = to_nchw(x).requires_grad_()
    offset_t = to_nchw(offset).requires_grad_()
    kernel_t = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).requires_grad_()
    mask_t = None if mask is None else to_nchw(mask).requires_grad_()
    out_t = torchvision.ops.deform_conv2d(
        x_t, offset_t, kernel_t, stride=stride, padding=padding, dilation=dilation, mask=mask_t
    )
    (out_t * to_nchw(cotangent)).sum().backward()
    grads = [to_nhwc(x_t.grad), to_nhwc(offset_t.grad), kernel_t.grad.numpy().transpose(2, 3, 1, 0)]
    if mask is not None:
        grads.append(to_nhwc(mask_t.grad))
    return to_nhwc(out_t), grads


# (N, H, W, C, O, groups, kernel (kh, kw), stride, padding, dilation, with mask)
CASES = {
    "groups4": (2, 7, 9, 16, 8, 4, (3, 3), 1, 1, 1, False),
    "stride2": (1, 9, 8, 8, 6, 4, (3, 3), 2, 1, 1, False),
    "dilation2": (1, 8, 9, 8, 5, 4, (3, 3), 1, 2, 2, False),
    "mask": (2, 6, 7, 8, 4, 2, (3, 3), 1, 1, 1, True),
    "mask_stride2_1group": (1, 7, 6, 4, 3, 1, (3, 3), 2, 1, 1, True),
    "kernel2x3_nopad": (1, 6, 7, 8, 3, 2, (2, 3), 1, 0, 1, False),
    # 2 x 13 x 11 = 286 output pixels: two tiles of deform.TILE_PIXELS, the second padded.
    "two_tiles": (2, 13, 11, 8, 5, 4, (3, 3), 1, 1, 1, True),
}


@pytest.mark.parametrize("offsets", ["large", "integer"])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torchvision(case, offsets, rng):
    n, h, w, c, o, groups, (kh, kw), stride, padding, dilation, with_mask = CASES[case]
    out_h = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    offset = (rng.standard_normal((n, out_h, out_w, 2 * groups * kh * kw)) * 3).astype(np.float32)
    if offsets == "integer":
        offset = np.round(offset)
        offset[0, : out_h // 2] = 0.0  # zero offsets: taps on pixels and on the padding ring
    kernel = rng.standard_normal((kh, kw, c, o)).astype(np.float32)
    mask = None
    if with_mask:
        mask = rng.uniform(0, 1, (n, out_h, out_w, groups * kh * kw)).astype(np.float32)
    cotangent = rng.standard_normal((n, out_h, out_w, o)).astype(np.float32)
    conv_args = dict(deformable_groups=groups, stride=stride, padding=padding, dilation=dilation)

    out_ref, grads_ref = _torchvision(x, offset, kernel, mask, cotangent, stride, padding, dilation)
    out = forward_jit(x, offset, kernel, mask=mask, **conv_args)
    if with_mask:
        grads = grads_jit(x, offset, kernel, mask, cotangent, **conv_args)
    else:
        grads = grads_no_mask_jit(x, offset, kernel, cotangent=cotangent, **conv_args)
    assert out.shape == out_ref.shape
    assert _rel_err(out, out_ref) < 1e-4
    names = ("x", "offset", "kernel", "mask")[: len(grads_ref)]
    for name, got, want in zip(names, grads, grads_ref, strict=True):
        assert _rel_err(got, want) < 1e-4, name


def test_release_fixture(fixtures_dir):
    ref = np.load(fixtures_dir / "ssvd_reference_parity" / "ops_deform_conv.npz")
    kernel = ref["weight_oihw"].transpose(2, 3, 1, 0)
    out = forward_jit(ref["x"], ref["offset"], kernel, deformable_groups=4)
    assert _rel_err(out, ref["out"]) < 1e-4


def test_zero_offsets_is_plain_conv(rng):
    x = rng.standard_normal((1, 6, 5, 8)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 8, 4)).astype(np.float32)
    offset = np.zeros((1, 6, 5, 2 * 4 * 9), np.float32)
    out = forward_jit(x, offset, kernel, deformable_groups=4)
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert _rel_err(out, expected) < 1e-5


def test_rejects_bad_shapes():
    x = jnp.zeros((1, 5, 5, 8))
    kernel = jnp.zeros((3, 3, 8, 4))
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(x, jnp.zeros((1, 5, 5, 18)), kernel, deformable_groups=4)
    with pytest.raises(ValueError, match="not divisible"):
        deform_conv2d(x, jnp.zeros((1, 5, 5, 54)), kernel, deformable_groups=3)
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(
            x, jnp.zeros((1, 5, 5, 72)), kernel, deformable_groups=4, mask=jnp.zeros((1, 5, 5, 9))
        )
