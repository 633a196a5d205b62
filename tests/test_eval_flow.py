"""PWC-Net's evaluation on flow pairs (`evaluation.flow`): the classical yardstick (OpenCV's DIS)
finds a known translation, and a group's errors are the means over its pairs alone."""

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline import flow_data
from ssvd_jax.evaluation import flow as flow_eval
from ssvd_jax.models import params
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.pwcnet import RAW_FLOW_UNIT

SIZE = 64


def _texture(rng, size):
    """A smooth random BGR texture, periodic so that np.roll is an exact translation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) * (2 * np.pi / size)
    out = np.full((size, size, 3), 128.0, np.float32)
    for c in range(3):
        for _ in range(4):
            fx, fy = rng.integers(-4, 5, 2)
            out[..., c] += rng.uniform(10, 25) * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    return np.clip(out, 0, 255).astype(np.uint8)


def _pairs(tmp_path, rng, shifts):
    """FlyingChairs-layout pairs: image 2 is image 1 moved by (dx, dy), the flow (dx, dy)."""
    for n, (dx, dy) in enumerate(shifts, start=1):
        image = _texture(rng, SIZE)
        cv2.imwrite(str(tmp_path / f"{n:05d}_img1.ppm"), image)
        cv2.imwrite(str(tmp_path / f"{n:05d}_img2.ppm"), np.roll(image, (dy, dx), axis=(0, 1)))
        flow = np.broadcast_to(np.float32([dx, dy]), (SIZE, SIZE, 2))
        flow_data.write_flo(tmp_path / f"{n:05d}_flow.flo", flow)
    return flow_data.flying_chairs_pairs(tmp_path)


@pytest.fixture(scope="module")
def flownet():
    model = ssvd_lib.create_flownet(tiny.get_config().model)
    images = jnp.zeros((1, SIZE, SIZE, 3))
    return model, params.init_variables(model, images, images, seed=0)


def test_classical_flow_finds_a_translation(rng):
    image = _texture(rng, SIZE)
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))
    flow = flow_eval.classical_flow(image, np.roll(image, (dy, dx), axis=(0, 1)))
    inner = flow[8:-8, 8:-8]  # the periodic wrap is not a translation at the borders
    np.testing.assert_allclose(np.median(inner.reshape(-1, 2), axis=0), [dx, dy], atol=0.25)


def test_group_means_are_the_means_over_their_pairs(tmp_path, rng, flownet):
    model, variables = flownet
    pairs = _pairs(tmp_path, rng, [(2, 0), (0, -3), (-1, 2)])
    kwargs = dict(crop_size=SIZE, mean_bgr=(104.0, 117.0, 123.0), batch_size=2)
    groups = {"first_last": [True, False, True], "middle": [False, True, False],
              "none": [False, False, False]}  # fmt: skip
    out = flow_eval.evaluate_flow(model, variables, pairs, groups=groups, **kwargs)
    single = [flow_eval.evaluate_flow(model, variables, [p], **kwargs) for p in pairs]
    assert out["pairs"] == 3 and out["first_last"]["pairs"] == 2 and out["middle"]["pairs"] == 1
    assert "none" not in out  # no pair: no entry
    np.testing.assert_allclose(out["zero_epe"], np.mean([2.0, 3.0, np.hypot(1, 2)]), rtol=1e-6)
    for key in ("epe", "epe_L2", "epe_L6", "zero_epe", "dis_epe"):
        np.testing.assert_allclose(
            out["first_last"][key], (single[0][key] + single[2][key]) / 2, rtol=1e-5, err_msg=key
        )
        np.testing.assert_allclose(out["middle"][key], single[1][key], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(
            out[key], np.mean([s[key] for s in single]), rtol=1e-5, err_msg=key
        )
    # The classical flow sees the translations: far below zero flow (borders wrap).
    assert out["dis_ratio"] < 0.35, out["dis_ratio"]
    np.testing.assert_allclose(out["epe_ratio"], out["epe"] / out["zero_epe"], rtol=1e-12)
    with pytest.raises(ValueError, match="'middle': 2 masks for 3 pairs"):
        flow_eval.evaluate_flow(model, variables, pairs, groups={"middle": [True, False]}, **kwargs)


def _outputs(flow_Nx2, height, width):
    """PWC-Net's outputs for one flow per image (input pixels): P3 in its own 1/8 grid's
    pixels, the raw level-2 flow in RAW_FLOW_UNIT."""
    field = jnp.broadcast_to(flow_Nx2[:, None, None], (len(flow_Nx2), height // 8, width // 8, 2))
    return {"P3": field / 8, "raw": {"L2": field / RAW_FLOW_UNIT}}


class _GlobalShift:
    """A 'network' that matches: the whole-image translation from image 1 to image 2 by phase
    correlation, as a constant field at PWC-Net's finest output (1/8, in its own pixels)."""

    def apply(self, variables, image1, image2):
        del variables
        grey1, grey2 = image1.mean(-1), image2.mean(-1)
        cross = jnp.fft.ifft2(jnp.conj(jnp.fft.fft2(grey1)) * jnp.fft.fft2(grey2)).real
        n, h, w = cross.shape
        peak = jnp.argmax(cross.reshape(n, -1), axis=1)
        dy, dx = peak // w, peak % w
        dy, dx = jnp.where(dy > h // 2, dy - h, dy), jnp.where(dx > w // 2, dx - w, dx)
        return _outputs(jnp.stack([dx, dy], -1).astype(jnp.float32), h, w)


class _Constant:
    """A 'network' that has learnt a prior of nothing: the same flow whatever it is shown."""

    def apply(self, variables, image1, image2):
        del variables, image2
        n, h, w = image1.shape[:3]
        return _outputs(jnp.tile(jnp.float32([[2.4, -1.6]]), (n, 1)), h, w)


def test_translation_response_tells_matching_from_a_prior(rng):
    images = np.stack([_texture(rng, SIZE).astype(np.float32) / 255 - 0.45 for _ in range(3)])
    shift = int(rng.integers(2, 5))
    matched = flow_eval.translation_response(_GlobalShift(), {}, images, shift=shift,
                                             batch_size=4)  # fmt: skip
    assert matched["translation_images"] == 3 and matched["translation_shift"] == shift
    np.testing.assert_allclose(matched["translation_gain"], 1.0, atol=1e-6)
    np.testing.assert_allclose(matched["translation_error"], 0.0, atol=1e-6)
    np.testing.assert_allclose(matched["self_flow"], 0.0, atol=1e-6)
    prior = flow_eval.translation_response(_Constant(), {}, images, shift=shift, batch_size=4)
    # The same flow for all four directions: their projections cancel.
    np.testing.assert_allclose(prior["translation_gain"], 0.0, atol=1e-6)
    np.testing.assert_allclose(prior["self_flow"], np.hypot(2.4, 1.6), rtol=1e-6)
    assert prior["translation_error"] > 0.8 * shift


def test_evaluate_flow_reports_the_translation_response(tmp_path, rng, flownet):
    model, variables = flownet
    pairs = _pairs(tmp_path, rng, [(1, 0), (0, 2), (-2, 1)])
    out = flow_eval.evaluate_flow(
        model, variables, pairs, crop_size=SIZE, mean_bgr=(104.0, 117.0, 123.0), batch_size=2,
        translation_shift=3, translation_images=2,
    )  # fmt: skip
    assert out["translation_images"] == 2 and out["translation_shift"] == 3
    # A fresh PWC-Net predicts zero flow (its flow layers start at zero): gain 0, self 0.
    np.testing.assert_allclose(out["translation_gain"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["self_flow"], 0.0, atol=1e-6)
    assert "translation_gain" not in flow_eval.evaluate_flow(
        model, variables, pairs, crop_size=SIZE, mean_bgr=(104.0, 117.0, 123.0), batch_size=2
    )
