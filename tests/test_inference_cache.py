"""The per-frame caches equal the release's per-pair schedule of work (random weights).

`SSVD.aggregate` with the cached PWC-Net pyramids and offset-predictor halves (`frame_cache`)
must give what it gives when everything runs per (reference, entry) pair, for the v1 and v2
offset predictors and the variant that routes the flow into the sampling stream (early fusion
only concatenates the two streams' results afterwards): relative error, max |cached - uncached|
/ max |uncached|, below 1e-5 in float32 on every sown intermediate (flows, warped features,
offset predictions, sampled features) and every aggregated map. The offset predictor's offset
outputs are rescaled to the golden fixture's size (mean |offset| ~1 px): a random network's
offsets are tens of pixels, and their float rounding then moves samples by more than the
tolerance allows. The golden fixture's version of this check is in test_golden_parity.py; the
engine-level one in test_inference.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables

SIZE = 64
BATCH, ENTRIES = 2, 4


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@pytest.mark.parametrize(
    "variant,version",
    [
        ("two_stream", "1"),
        pytest.param("two_stream", "2", marks=pytest.mark.slow),
        pytest.param("motion_guided_sampling", "1", marks=pytest.mark.slow),
    ],
)
def test_cached_aggregation_equals_per_pair(variant, version, rng):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.model.variant = variant
    config.model.sampling.version = version
    model = ssvd_lib.create_model(config.model)
    frames = jnp.asarray(rng.uniform(-100, 100, (BATCH, ENTRIES, SIZE, SIZE, 3)), jnp.float32)
    variables = init_variables(model, frames, seed=int(rng.integers(1 << 30)))

    def features(variables, images):
        merged = images.reshape(-1, SIZE, SIZE, 3)

        def per_frame(m, x):
            f = m.frame_features(x)
            return f, m.frame_cache(x, f)

        feats, cache = model.apply(variables, merged, method=per_frame)
        split = lambda a: a.reshape(BATCH, ENTRIES, *a.shape[1:])  # noqa: E731
        return jax.tree.map(split, feats), jax.tree.map(split, cache)

    @functools.partial(jax.jit, static_argnums=2)
    def aggregate(variables, images, use_cache):
        feats, cache = features(variables, images)
        ref_feats = jax.tree.map(lambda a: a[:, 0], feats)
        if use_cache:
            ref_cache = jax.tree.map(lambda a: a[:, 0], cache)
            args = (None, None, ref_feats, feats, ref_cache, cache)
        else:
            args = (images[:, 0], images, ref_feats, feats)
        out, state = model.apply(
            variables, *args, method=model.aggregate, mutable=["intermediates"]
        )
        return out, {k: v[0] for k, v in state["intermediates"].items()}

    # Offsets of the golden fixture's size (mean |offset| ~1 px, up to several px): rescale
    # the predictor's offset outputs (the weight logit, channel 72, keeps its scale).
    _, inter = aggregate(variables, frames, False)
    scale = 1.0 / np.mean(np.abs(np.asarray(inter["sample_offset_pred_P3"])[..., :72]))
    pred = variables["params"]["sample_block"]["offset_pred"]
    pred["kernel"] = pred["kernel"].at[..., :72].multiply(scale)
    pred["bias"] = pred["bias"].at[:72].multiply(scale)

    uncached, inter_uncached = aggregate(variables, frames, False)
    cached, inter_cached = aggregate(variables, frames, True)
    assert set(inter_cached) == set(inter_uncached)
    offsets = np.asarray(inter_uncached["sample_offset_pred_P3"])[..., :72]
    assert np.abs(offsets).max() > 2.0, "offsets too small to exercise the sampling"
    for name in sorted(inter_uncached):
        err = _relative_error(inter_cached[name], inter_uncached[name])
        assert err < 1e-5, f"{name}: relative error {err:.2e}"
    for stream, levels in uncached.items():
        for level, want in levels.items():
            err = _relative_error(cached[stream][level], want)
            assert err < 1e-5, f"{stream} {level}: relative error {err:.2e}"
