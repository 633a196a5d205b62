"""FPN and RetinaNet heads against a direct PyTorch transcription of REFERENCE_SPEC §2.2 / §5.1.

The torch side is written from the spec with torch.nn.functional (nearest x2 upsampling, P6 from
C5 with a stride-2 3x3 conv, no ReLU in the FPN; 2-conv towers with anchor-major outputs), so the
test pins both the maths and the weight naming used by `ssvd_jax.convert`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from ssvd_jax import convert
from ssvd_jax.models.fpn import FPN
from ssvd_jax.models.heads import RetinaHead


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def _random_torch_state(template, name_fn, rng) -> dict[str, np.ndarray]:
    from flax import traverse_util

    sd = {}
    for collection, tree in template.items():
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            shape = leaf.shape
            if path[-1] == "kernel":
                shape = (shape[3], shape[2], shape[0], shape[1])
            sd[name_fn(collection, path)] = rng.standard_normal(shape).astype(np.float32) * 0.2
    return sd


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.permute(0, 2, 3, 1).numpy()


def test_fpn_matches_spec_transcription(rng):
    ch = 16
    feats = {
        "C3": rng.standard_normal((2, 16, 16, 24)).astype(np.float32),
        "C4": rng.standard_normal((2, 8, 8, 40)).astype(np.float32),
        "C5": rng.standard_normal((2, 4, 4, 56)).astype(np.float32),
    }
    model = FPN(ch)
    template = jax.eval_shape(model.init, jax.random.key(0), feats)
    sd = _random_torch_state(template, convert.fpn_torch_name, rng)
    variables, _ = convert.convert(sd, template, convert.fpn_torch_name)
    got = model.apply(variables, feats)

    w = {k: torch.from_numpy(v) for k, v in sd.items()}
    c3, c4, c5 = (_nchw(feats[k]) for k in ("C3", "C4", "C5"))

    def conv(x, name, stride=1, pad=1):
        return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], stride=stride, padding=pad)

    lat5 = conv(c5, "fpn_p5_1x1", pad=0)
    p4 = F.interpolate(lat5, scale_factor=2, mode="nearest") + conv(c4, "fpn_p4_1x1", pad=0)
    p3 = F.interpolate(p4, scale_factor=2, mode="nearest") + conv(c3, "fpn_p3_1x1", pad=0)
    expected = {
        "P3": conv(p3, "fpn_p3"),
        "P4": conv(p4, "fpn_p4"),
        "P5": conv(lat5, "fpn_p5"),
        "P6": conv(c5, "fpn_p6", stride=2),
    }
    for level, t in expected.items():
        assert got[level].shape == _nhwc(t).shape
        assert _rel_err(got[level], _nhwc(t)) < 1e-5, level
    assert got["P6"].shape[1:3] == (2, 2)


def test_head_matches_spec_transcription(rng):
    num_classes, num_anchors, width = 7, 9, 16
    levels = {
        "P3": rng.standard_normal((2, 8, 8, width)).astype(np.float32),
        "P4": rng.standard_normal((2, 4, 4, width)).astype(np.float32),
    }
    head = RetinaHead(
        num_classes=num_classes, num_anchors=num_anchors, num_convs=2, width=width, prior_prob=0.01
    )
    template = jax.eval_shape(head.init, jax.random.key(0), levels)
    sd = _random_torch_state(template, convert.head_torch_name, rng)
    assert "cls_tower.2.weight" in sd and "bbox_pred.bias" in sd
    variables, _ = convert.convert(sd, template, convert.head_torch_name)
    got = head.apply(variables, levels)
    w = {k: torch.from_numpy(v) for k, v in sd.items()}

    def conv(x, name):
        return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], padding=1)

    for level, x in levels.items():
        t = _nchw(x)
        c = F.relu(conv(F.relu(conv(t, "cls_tower.0")), "cls_tower.2"))
        b = F.relu(conv(F.relu(conv(t, "bbox_tower.0")), "bbox_tower.2"))
        assert _rel_err(got["cls_logits"][level], _nhwc(conv(c, "cls_logits"))) < 1e-5
        assert _rel_err(got["box_deltas"][level], _nhwc(conv(b, "bbox_pred"))) < 1e-5


def test_head_init_prior_and_layout(rng):
    head = RetinaHead(num_classes=3, num_anchors=2, num_convs=1, width=8, prior_prob=0.01)
    x = {"P3": jnp.asarray(rng.standard_normal((1, 4, 4, 8)), jnp.float32)}
    variables = jax.jit(head.init)(jax.random.key(int(rng.integers(2**31))), x)
    bias = variables["params"]["cls_logits"]["bias"]
    np.testing.assert_allclose(bias, -np.log(99.0), rtol=1e-6)
    out = jax.jit(head.apply)(variables, x)
    assert out["cls_logits"]["P3"].shape == (1, 4, 4, 6)
    assert out["box_deltas"]["P3"].shape == (1, 4, 4, 8)
    # With std-0.01 weights, the initial scores sit near the prior for every anchor and class.
    probs = jax.nn.sigmoid(out["cls_logits"]["P3"])
    assert np.all(np.abs(np.asarray(probs) - 0.01) < 0.005)
