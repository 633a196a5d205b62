"""The pmap-ed train step is exact synchronized SGD, and the optimizer pieces behave.

One step on 4 simulated CPU devices with per-device batch b equals one step on 1 device with
batch 4b (params after the step within 1e-5 relative; the updates themselves agree too), for
the single-frame detector and for an SSVD variant with supports (slow tier). Frozen stages get
no updates; the schedules (step decay, cosine) warm up linearly; AdamW matches a hand-computed
step.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import tiny
from ssvd_jax import objective, train, trainer
from ssvd_jax.models import outputs
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables

SIZE = 64
B = 1  # per device


def _batch(rng, n, num_frames):
    """The pipeline's batch contract: frames [n, T, H, W, 3] (reference first) and the
    reference's targets."""
    reference = rng.uniform(-100, 100, (n, 1, SIZE, SIZE, 3)).astype(np.float32)
    noise = rng.normal(0, 10, (n, num_frames - 1, SIZE, SIZE, 3)).astype(np.float32)
    x1 = rng.uniform(0, 30, (n, 3, 2))
    wh = rng.uniform(12, 33, (n, 3, 2))
    boxes = np.concatenate([x1, np.minimum(x1 + wh, SIZE - 1)], -1).astype(np.float32)
    batch = {
        "frames": np.concatenate([reference, reference + noise], axis=1),
        "boxes": boxes,
        "labels": rng.integers(0, 30, (n, 3)).astype(np.int32),
        # Uneven foreground counts across devices: the normaliser must be the global one.
        "valid": np.arange(3)[None] < rng.integers(0, 4, (n, 1)),
    }
    batch["valid"][0, 0] = True
    return batch


def _state(config, model, num_frames):
    frames = jnp.zeros((1, num_frames, SIZE, SIZE, 3))
    variables = init_variables(model, frames, seed=0)
    schedule = train.learning_rate_schedule(config.schedule.phase1)
    tx = train.create_optimizer(
        config.optimizer, schedule, variables["params"], train.frozen_prefixes(2)
    )
    return train.create_train_state(model, variables, tx), schedule


def _one_step(state, schedule, settings, anchors, batch, devices):
    n = len(devices)
    replicated = train.replicate(state, devices)
    sharded = jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)
    step = train.make_train_step(anchors, settings, schedule, devices=devices)
    new, metrics = step(replicated, sharded)
    return train.unreplicate(new.params), train.unreplicate(metrics)


@pytest.mark.parametrize(
    "variant",
    # The single-frame detector in the quick tier; an SSVD variant with supports (the sampling
    # stream: aggregation over [reference, support] clips, the deformable sampling) in the full
    # suite. The normaliser and pmean do not depend on the model's streams; two_stream's
    # PWC-Net would only add compile time (~1.5 min for the 4- and 1-device programs).
    ["single_frame", pytest.param("sampling", marks=pytest.mark.slow)],
)
def test_four_devices_equal_one_device_with_four_times_the_batch(variant, rng):
    assert jax.local_device_count() >= 4, "conftest sets 4 host devices"
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.model.variant = variant
    config.train.num_supports = 1
    # A large rate makes the step visible against float32 rounding of the parameters.
    config.schedule.phase1.learning_rate = 0.5 if variant == "single_frame" else 0.05
    config.optimizer.grad_clip_norm = 0.0
    num_frames = 1 if variant == "single_frame" else 2
    model = ssvd_lib.create_model(config.model)
    batch = _batch(rng, 4 * B, num_frames)
    state, schedule = _state(config, model, num_frames)
    settings = objective.create_loss_settings(config)
    anchors = train.all_anchors(outputs.anchors_for(SIZE, config.model.anchors))
    before = jax.tree.map(np.asarray, state.params)
    devices = jax.local_devices()
    p4, m4 = _one_step(state, schedule, settings, anchors, batch, devices[:4])
    p1, m1 = _one_step(state, schedule, settings, anchors, batch, devices[:1])

    streams = {"single_frame": ["single"], "sampling": ["sample"]}[variant]
    assert {f"{s}/{t}" for s in streams for t in ("cls", "box")} <= set(m1)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    assert m4["num_fg"] == m1["num_fg"] > 0
    for k in m1:
        np.testing.assert_allclose(m4[k], m1[k], rtol=1e-4, err_msg=k)
    flat4 = jax.tree_util.tree_leaves_with_path(p4)
    flat1 = jax.tree.leaves(p1)
    flat0 = jax.tree.leaves(before)
    moved, differences, norms = 0, [], []
    largest = max(float(np.abs(a1 - a0).max()) for a1, a0 in zip(flat1, flat0, strict=True))
    for (path, a4), a1, a0 in zip(flat4, flat1, flat0, strict=True):
        name = jax.tree_util.keystr(path)
        delta = np.abs(a1 - a0).max()
        if delta == 0:  # not updated on one device: not on four either
            np.testing.assert_array_equal(a4, a0, err_msg=name)
        else:
            # The update agrees to 1e-3 of the step's largest update entry in all but a few
            # entries (a missing or doubled pmean would be off by whole updates everywhere).
            # Not all: convs over a batch of 1 and of 4 may round differently, and a ReLU
            # input that sits at zero can then fall on the other side on one of them, which
            # changes that unit's kernel gradient entries outright (23 of 9216 entries of one
            # head kernel, all in one output channel, seed 3183424229).
            moved += 1
            atol = 1e-3 * largest + 4 * np.finfo(np.float32).eps * np.abs(a0).max()
            close = np.abs((a4 - a0) - (a1 - a0)) <= atol
            assert close.mean() >= 0.99, (name, float(close.mean()))
            differences.append(float(np.sum(((a4 - a0) - (a1 - a0)) ** 2)))
            norms.append(float(np.sum((a1 - a0) ** 2)))
        if "stem_" in name or "layer1_" in name:
            assert delta == 0, f"frozen parameter {name} changed"
    assert moved > 0
    assert np.sqrt(sum(differences)) <= 1e-2 * np.sqrt(sum(norms))


def test_schedule_warmup_and_decay():
    cfg = ml_collections.ConfigDict(
        dict(kind="multistep", steps=200, learning_rate=1e-3, boundaries=(100, 150),
             decay_factor=0.1, warmup_steps=10, warmup_factor=1 / 3)
    )  # fmt: skip
    lr = train.learning_rate_schedule(cfg)
    np.testing.assert_allclose(lr(0), 1e-3 / 3, rtol=1e-6)
    np.testing.assert_allclose(lr(5), 1e-3 * (1 / 3 * 0.5 + 0.5), rtol=1e-6)
    np.testing.assert_allclose(lr(10), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(lr(99), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(lr(100), 1e-4, rtol=1e-5)
    np.testing.assert_allclose(lr(150), 1e-5, rtol=1e-5)


def test_cosine_schedule_decays_to_zero_after_warmup():
    cfg = ml_collections.ConfigDict(
        dict(kind="cosine", steps=100, learning_rate=2e-3, boundaries=(), decay_factor=1.0,
             warmup_steps=10, warmup_factor=0.1)
    )  # fmt: skip
    lr = train.learning_rate_schedule(cfg)
    np.testing.assert_allclose(lr(0), 2e-3 * 0.1, rtol=1e-6)
    # At step 5: half-way through the warmup, cosine factor (1 + cos(pi * 0.05)) / 2.
    np.testing.assert_allclose(
        lr(5), 2e-3 * (1 + np.cos(np.pi * 0.05)) / 2 * (0.1 * 0.5 + 0.5), rtol=1e-6
    )
    np.testing.assert_allclose(lr(50), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(lr(100), 0.0, atol=1e-12)
    np.testing.assert_allclose(lr(150), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="kind"):
        train.learning_rate_schedule(ml_collections.ConfigDict(dict(cfg.to_dict(), kind="linear")))


def test_adamw_step_by_hand(rng):
    """One AdamW step equals the textbook update: clipped gradient, bias-corrected moments,
    decoupled weight decay on kernels only; frozen parameters do not move."""
    config = tiny.get_config()
    opt = config.optimizer
    opt.name, opt.weight_decay, opt.grad_clip_norm = "adamw", 0.05, 1.0
    params = {
        "backbone": {"stem_conv1": {"kernel": rng.normal(size=(3, 3, 2, 4))}},
        "head": {"conv": {"kernel": rng.normal(size=(3, 3, 4, 4)), "bias": rng.normal(size=4)}},
    }
    params = jax.tree.map(lambda p: p.astype(np.float32), params)
    grads = jax.tree.map(lambda p: (rng.normal(size=p.shape) * 3.0).astype(np.float32), params)
    lr = 1e-2
    tx = train.create_optimizer(opt, lambda step: lr, params, train.frozen_prefixes(1))
    updates, _ = tx.update(grads, tx.init(params), params)
    # Clipping sees the trainable gradients only (a frozen one is discarded anyway).
    norm = np.sqrt(
        sum(np.sum(np.square(g, dtype=np.float64)) for g in jax.tree.leaves(grads["head"]))
    )
    scale = min(1.0, opt.grad_clip_norm / norm)
    for name in ("kernel", "bias"):
        g = grads["head"]["conv"][name] * scale
        m, v = (1 - opt.b1) * g, (1 - opt.b2) * g**2
        step = (m / (1 - opt.b1)) / (np.sqrt(v / (1 - opt.b2)) + opt.eps)
        decay = opt.weight_decay * params["head"]["conv"][name] if name == "kernel" else 0.0
        np.testing.assert_allclose(
            updates["head"]["conv"][name], -lr * (step + decay), rtol=1e-5, err_msg=name
        )
    assert not np.any(np.asarray(updates["backbone"]["stem_conv1"]["kernel"]))
    with pytest.raises(ValueError, match="optimizer.name"):
        lamb = ml_collections.ConfigDict(dict(opt.to_dict(), name="lamb"))
        train.create_optimizer(lamb, lambda step: lr, params)


def test_frozen_prefixes_follow_freeze_conv_body_at():
    assert train.frozen_prefixes(0) == ()
    assert train.frozen_prefixes(2) == ("backbone/stem_", "backbone/layer1_")
    labels = train.param_labels(
        {"backbone": {"stem_conv1": {"kernel": 0}, "layer2_0": {"k": 0}}, "head": {"b": 0}},
        train.frozen_prefixes(2),
    )
    assert labels["backbone"]["stem_conv1"]["kernel"] == "frozen"
    assert labels["backbone"]["layer2_0"]["k"] == labels["head"]["b"] == "trainable"


def test_phase2_modules_start_from_phase1():
    z = np.zeros
    phase1 = {
        "params": {
            "backbone": {"c": z(3) + 1},
            "fpn": {"k": z((2, 2)) + 2},
            "head": {"k": z(4) + 3},
        },
        "batch_stats": {"backbone": {"mean": z(3) + 4}},
    }
    ssvd = {
        "params": {
            "backbone": {"c": z(3)}, "motion_fpn": {"k": z((2, 2))}, "sample_fpn": {"k": z((2, 2))},
            "motion_subnets": {"k": z(4)}, "fused_subnets": {"k": z(8)}, "flownet": {"w": z(5)},
        },
        "batch_stats": {"backbone": {"mean": z(3)}},
    }  # fmt: skip
    out, report = trainer.init_phase2_from_phase1(ssvd, phase1)
    assert report == {
        "backbone": "phase1:backbone", "motion_fpn": "phase1:fpn", "sample_fpn": "phase1:fpn",
        "motion_subnets": "phase1:head", "fused_subnets": "random", "flownet": "random",
    }  # fmt: skip
    assert (out["params"]["sample_fpn"]["k"] == 2).all()
    assert (out["params"]["motion_subnets"]["k"] == 3).all()
    assert (out["batch_stats"]["backbone"]["mean"] == 4).all()
    assert (out["params"]["fused_subnets"]["k"] == 0).all()  # 512-channel input: not copied
