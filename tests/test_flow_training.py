"""PWC-Net pretraining (the pwcnet phase): the multi-scale end-point-error loss on hand-made
cases, and the phase end to end on the tiny config (train, evaluate on the val pairs, start
phase 2's flownet from it)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline import train_data
from ssvd_jax import jobs, objective, train, trainer
from ssvd_jax.checkpoint import Checkpointer
from ssvd_jax.errors import ConfigError
from ssvd_jax.models.pwcnet import RAW_FLOW_UNIT

LEVELS = {"L6": (1, 1), "L5": (2, 2), "L4": (4, 4), "L3": (8, 8), "L2": (16, 16)}
WEIGHTS = {"L6": 0.32, "L5": 0.08, "L4": 0.02, "L3": 0.01, "L2": 0.005}


def _pool(flow, h, w):
    n, height, width, _ = flow.shape
    return flow.reshape(n, h, height // h, w, width // w, 2).mean(axis=(2, 4))


def test_flow_loss_hand_cases(rng):
    gt = rng.normal(0, 4, (2, 64, 64, 2)).astype(np.float32)
    # Perfect raw flows (the pooled ground truth in raw units): zero loss and errors.
    perfect = {k: jnp.asarray(_pool(gt, *hw) / RAW_FLOW_UNIT) for k, hw in LEVELS.items()}
    loss, m = objective.flow_loss(perfect, jnp.asarray(gt), WEIGHTS, RAW_FLOW_UNIT)
    assert abs(float(loss)) < 1e-5
    for k in LEVELS:
        assert float(m[f"epe_{k}"]) < 1e-4
    # Zero flows: each level's error is the mean length of its pooled ground truth, and the
    # loss sums alpha * (sum over that level's pixels of the length in raw units) per image.
    zero = {k: jnp.zeros((2, *hw, 2)) for k, hw in LEVELS.items()}
    loss, m = objective.flow_loss(zero, jnp.asarray(gt), WEIGHTS, RAW_FLOW_UNIT)
    want = 0.0
    for k, hw in LEVELS.items():
        lengths = np.linalg.norm(_pool(gt, *hw), axis=-1)
        np.testing.assert_allclose(float(m[f"epe_{k}"]), lengths.mean(), rtol=1e-5)
        want += WEIGHTS[k] * lengths.sum() / RAW_FLOW_UNIT / 2
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(m["zero_epe"]), np.linalg.norm(gt, axis=-1).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["epe"]), float(m["zero_epe"]), rtol=1e-5)
    # A uniform flow is recovered at full resolution by the upsampled finest level.
    uniform = np.broadcast_to(np.float32([3.0, -1.5]), gt.shape)
    raw = {k: jnp.full((2, *hw, 2), 1.0) * jnp.asarray([3.0, -1.5]) / RAW_FLOW_UNIT
           for k, hw in LEVELS.items()}  # fmt: skip
    _, m = objective.flow_loss(raw, jnp.asarray(uniform), WEIGHTS, RAW_FLOW_UNIT)
    assert float(m["epe"]) < 1e-4


def _config(tmp_path):
    config = tiny.get_config()
    config.data.image_size = 64
    config.data.root = str(tmp_path / "ILSVRC2015")
    config.data.synthetic.create_root = True  # generated there on first use
    config.data.tfds_dir = str(tmp_path / "tfds")
    config.train.phases = ("pwcnet",)
    config.schedule.pwcnet.steps = 3
    config.eval.after_training = False
    return config


def test_pwcnet_phase_trains_evaluates_and_starts_phase2(tmp_path):
    config = _config(tmp_path)
    workdir = str(tmp_path / "run")
    data_dir = train_data.prepare(config, workdir)
    summaries = trainer.train_phases(config, workdir, data_dir)
    summary = summaries["pwcnet"]
    assert summary["steps"] == 3
    for key in ("loss", "epe", "zero_epe", "epe_L2", "epe_L6"):
        assert np.isfinite(summary["final"][key]), key
    # Run again, the phase is finished and skipped; its summary still names the same weights.
    again = trainer.train_phases(config, workdir, data_dir)["pwcnet"]
    assert again["steps"] == 3 and again["params_fingerprint"] == summary["params_fingerprint"]
    errors = jobs.evaluate_pwcnet(config, workdir)
    assert errors["pairs"] == 2  # one val video, two pairs
    assert errors["zero_epe"] > 0 and np.isfinite(errors["epe"])
    assert errors["step"] == 3
    assert np.isfinite(errors["dis_epe"]) and errors["dis_epe"] < errors["zero_epe"]
    # The translation check ran on the val pairs' first images (both of them, at 4 px).
    assert errors["translation_images"] == 2 and errors["translation_shift"] == 4
    assert np.isfinite(errors["translation_gain"]) and errors["self_flow"] >= 0
    line = jobs.format_summary({"phases": {}, "pwcnet": errors})
    assert "moved by 4 px reads as" in line and "(2 frames)" in line
    # Phase 2's flownet starts from the pretrained PWC-Net, whatever else it starts from.
    state, _ = train.create_state(config, "phase2")
    random = {"params": state.params, "batch_stats": state.batch_stats}
    variables, report = trainer.phase_variables(config, workdir, "phase2", random)
    assert report["flownet"] == "pwcnet:step3"
    restored, _ = Checkpointer(str(tmp_path / "run" / "pwcnet" / "checkpoints")).restore(
        jax.eval_shape(lambda: train.state_dict(train.create_flow_state(config)[0]))
    )
    for a, b in zip(jax.tree.leaves(variables["params"]["flownet"]),
                    jax.tree.leaves(restored["params"]), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flow_level_weights_need_five():
    config = tiny.get_config()
    config.flow.level_weights = (1.0, 2.0)
    with pytest.raises(ValueError, match="5 values"):
        train.flow_level_weights(config.flow)


def test_matching_loss_against_a_direct_computation(rng):
    """Cosine similarities with every displacement in +-d, softmax cross-entropy against the
    rounded pooled ground truth, out-of-range pixels left out: by loops in numpy."""
    n, h, w, c, d, stride, scale = 2, 5, 6, 7, 2, 4, 3.0
    f1 = rng.normal(size=(n, h, w, c)).astype(np.float32)
    f2 = rng.normal(size=(n, h, w, c)).astype(np.float32)
    # Smooth within each cell's 4x4 pixels plus noise; displacements of up to ~3 cells.
    cells = rng.normal(0, 6, (n, h, w, 2)).astype(np.float32)
    gt = np.repeat(np.repeat(cells, stride, 1), stride, 2)
    gt = gt + rng.normal(0, 0.5, gt.shape).astype(np.float32)
    got = objective.matching_loss(
        {"L2": jnp.asarray(f1)}, {"L2": jnp.asarray(f2)}, jnp.asarray(gt), {"L2": 1.0},
        {"L2": stride}, scale, d,
    )  # fmt: skip
    unit1 = f1 / np.linalg.norm(f1, axis=-1, keepdims=True)
    unit2 = f2 / np.linalg.norm(f2, axis=-1, keepdims=True)
    pooled = gt.reshape(n, h, stride, w, stride, 2).mean(axis=(2, 4)) / stride
    losses = []
    for b in range(n):
        for y in range(h):
            for x in range(w):
                cx, cy = np.round(pooled[b, y, x]).astype(int)
                if abs(cx) > d or abs(cy) > d:
                    continue
                logits = []
                for dy in range(-d, d + 1):
                    for dx in range(-d, d + 1):
                        yy, xx = y + dy, x + dx
                        inside = 0 <= yy < h and 0 <= xx < w
                        logits.append(scale * unit1[b, y, x] @ unit2[b, yy, xx] if inside else 0.0)
                logits = np.asarray(logits, np.float64)
                target = (cy + d) * (2 * d + 1) + (cx + d)
                losses.append(np.log(np.exp(logits).sum()) - logits[target])
    assert 0 < len(losses) < n * h * w  # some pixels in range, some out
    np.testing.assert_allclose(float(got), np.mean(losses), rtol=1e-4)


def test_pwcnet_pretraining_alone_needs_no_videos(tmp_path):
    """The README's FlyingChairs command: the pwcnet phase alone, its pairs at `flow.root`, no
    video dataset configured: it trains, reports the end-point errors and writes the summary
    (no detector to evaluate, and no TFDS build of videos it does not read)."""
    from input_pipeline import synthetic

    synthetic.generate(tmp_path / "gen", width=64, height=64, num_train_videos=1,
                       num_val_videos=1, frames_per_video=6, num_det_images=0, num_classes=2,
                       flow_pairs_per_video=2)  # fmt: skip
    config = tiny.get_config()
    config.data.source = "ilsvrc"
    config.data.root = ""  # the detector's data: none
    config.flow.root = str(tmp_path / "gen" / "FlyingChairs")
    config.train.phases = ("pwcnet",)
    config.schedule.pwcnet.steps = 2
    workdir = tmp_path / "run"
    result = jobs.run_mode("train", config, str(workdir), {"config_path": "configs/tiny.py"})
    assert result.data["phases"]["pwcnet"]["steps"] == 2
    assert result.data["pwcnet"]["pairs"] == 2 and "eval" not in result.data
    assert "clean" not in result.data["pwcnet"]  # user pairs: no manifest to group them by
    assert "pwcnet: end-point error" in result.text
    assert (workdir / "summary.json").is_file() and not (workdir / "tfds").exists()
    config.flow.root = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="nowhere: no such folder"):
        jobs.run_mode("train", config, str(tmp_path / "run2"), {"config_path": "configs/tiny.py"})


def test_default_flow_crops_fit_flying_chairs_and_sintel(tmp_path, rng):
    """configs/default.py's crops (PWC-Net's 384x448 for training, 384 square to evaluate) fit
    FlyingChairs' 512x384 pairs and Sintel's 1024x436 frames; a crop PWC-Net's pyramid cannot
    take is refused by the config check, naming the field."""
    import cv2

    from configs import default
    from input_pipeline import flow_data

    config = default.get_config()
    for n, (width, height) in enumerate(((512, 384), (1024, 436)), start=1):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{n:05d}_img1.ppm"), image)
        cv2.imwrite(str(tmp_path / f"{n:05d}_img2.ppm"), image)
        flow = rng.normal(0, 3, (height, width, 2)).astype(np.float32)
        flow_data.write_flo(tmp_path / f"{n:05d}_flow.flo", flow)
    pairs = flow_data.flying_chairs_pairs(tmp_path)
    assert len(pairs) == 2
    for pair in pairs:
        one, two, flow = flow_data.pair_arrays(
            pair, crop_size=config.flow.crop_size, mean_bgr=(0.0, 0.0, 0.0),
            rng=np.random.default_rng(0),
        )  # fmt: skip
        assert one.shape == two.shape == (384, 448, 3) and flow.shape == (384, 448, 2)
        one, _, _ = flow_data.pair_arrays(
            pair, crop_size=config.flow.eval_crop_size, mean_bgr=(0.0, 0.0, 0.0), rng=None
        )
        assert one.shape == (384, 384, 3)
    config.train.phases = ("pwcnet",)
    config.flow.crop_size = (384, 440)
    with pytest.raises(ConfigError, match=r"flow\.crop_size=\(384, 440\): a multiple of 64"):
        jobs.validate_config(config, "train", str(tmp_path / "run"), source="configs/default.py")


def test_crop_size_forms():
    """An int and a one-element tuple (a command line's `--config.flow.crop_size=64` on a tuple
    field) are square crops; (height, width) is itself; anything else is one clear error."""
    from input_pipeline import flow_data

    assert flow_data.crop_shape(64) == (64, 64)
    assert flow_data.crop_shape(np.int64(128)) == (128, 128)
    assert flow_data.crop_shape((64,)) == (64, 64)
    assert flow_data.crop_shape((384, 448)) == (384, 448)
    with pytest.raises(ValueError, match=r"int or \(height, width\), got \(64, 64, 64\)"):
        flow_data.crop_shape((64, 64, 64))
