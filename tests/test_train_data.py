"""The trainer's data: `prepare` (generate + build) and `create_batches` (the batch contract of
both phases, reference targets, determinism in (seed, step), closing)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from configs import tiny
from input_pipeline import ilsvrc, pipeline, train_data

BATCH_DIMS = (2, 2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config = tiny.get_config()
    workdir = str(tmp_path_factory.mktemp("train_data"))
    data_dir = train_data.prepare(config, workdir)
    return config, workdir, data_dir


def _batches(config, phase, data_dir, start_step=0, n=1, **kwargs):
    args = dict(start_step=start_step, batch_dims=BATCH_DIMS, host_index=0, num_hosts=1)
    args.update(kwargs)
    with train_data.create_batches(config, phase, data_dir, **args) as batches:
        return [next(batches) for _ in range(n)]


def test_prepare_generates_once_and_builds(prepared, tmp_path):
    config, workdir, data_dir = prepared
    assert data_dir == os.path.join(workdir, "data", "tfds")
    manifest = os.path.join(workdir, "data", "ILSVRC2015", "synthetic_manifest.json")
    before = os.stat(manifest).st_mtime_ns
    assert train_data.prepare(config, workdir) == data_dir  # reused, not regenerated
    assert os.stat(manifest).st_mtime_ns == before
    assert not [n for n in os.listdir(os.path.join(workdir, "data")) if ".tmp-" in n]
    for name in (pipeline.VID, pipeline.DET):
        assert pipeline.open_table(name, "train", data_dir) is not None
    missing = tiny.get_config()
    missing.data.source = "ilsvrc"
    missing.data.root = str(tmp_path / "no_such_folder")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="no_such_folder: no such folder"):
        train_data.prepare(missing, str(tmp_path))


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_batches_follow_the_contract(prepared, phase):
    config, _, data_dir = prepared
    batch = _batches(config, phase, data_dir)[0]
    s, g = config.data.image_size, config.data.max_boxes
    t = 1 if phase == "phase1" else 1 + config.train.num_supports
    assert set(batch) == {"frames", "boxes", "labels", "valid"}
    assert batch["frames"].shape == (*BATCH_DIMS, t, s, s, 3)
    assert batch["frames"].dtype == np.float32
    assert batch["boxes"].shape == (*BATCH_DIMS, g, 4) and batch["boxes"].dtype == np.float32
    assert batch["labels"].shape == batch["valid"].shape == (*BATCH_DIMS, g)
    assert batch["labels"].dtype == np.int32 and batch["valid"].dtype == bool
    valid = batch["valid"]
    msg = f"seed {config.seed}, {phase}"
    assert valid.any(), msg
    assert np.all(batch["boxes"][~valid] == 0) and np.all(batch["labels"][~valid] == 0), msg
    labels = batch["labels"][valid]
    assert np.all((labels >= 0) & (labels < config.model.num_classes)), msg
    # Normalised: BGR minus the configured mean, so values lie in [-mean, 255 - mean].
    mean = np.asarray(config.data.pixel_mean_bgr, np.float32)
    assert np.all(batch["frames"] >= -mean) and np.all(batch["frames"] <= 255 - mean), msg


def test_phase2_targets_are_the_clips_reference_targets(prepared):
    config, _, data_dir = prepared
    data = config.data
    batches = _batches(config, "phase2", data_dir, n=2)
    vid = pipeline.open_table(pipeline.VID, "train", data_dir)
    pool = pipeline.reference_pool(
        vid, None, vid_frames=data.vid_frames, det_per_class=None, seed=config.seed
    )
    stream = pipeline._Stream(pool, config.seed)
    per_step = int(np.prod(BATCH_DIMS))
    for step, batch in enumerate(batches):
        for i in range(per_step):
            g = step * per_step + i
            clip = pipeline.load_clip(
                (vid, None),
                stream.reference(g),
                stream.rng(g),
                num_frames=1 + config.train.num_supports,
                support_range=data.support_range,
                image_size=data.image_size,
                max_boxes=data.max_boxes,
                mean=tuple(data.pixel_mean_bgr),
                augment_options=pipeline.AugmentOptions(),
                legacy_boxes=config.loss.legacy_boxes,
            )
            d, j = divmod(i, BATCH_DIMS[1])
            msg = f"seed {config.seed}, clip {g}"
            np.testing.assert_array_equal(batch["frames"][d, j], clip["images"], err_msg=msg)
            for key in ("boxes", "labels", "valid"):
                np.testing.assert_array_equal(batch[key][d, j], clip[key][0], err_msg=msg)


@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_resume_continues_the_same_stream(prepared, phase):
    config, _, data_dir = prepared
    fresh = _batches(config, phase, data_dir, n=4)
    again = _batches(config, phase, data_dir, n=4)
    resumed = _batches(config, phase, data_dir, start_step=2, n=2)
    for name, got, want in (("again", again, fresh), ("resumed", resumed, fresh[2:])):
        for step, (a, b) in enumerate(zip(got, want, strict=True)):
            for key in b:
                np.testing.assert_array_equal(
                    a[key], b[key], err_msg=f"seed {config.seed}, {phase}, {name} {step}: {key}"
                )
    other = tiny.get_config()
    other.seed = config.seed + 1
    different = _batches(other, phase, data_dir)[0]
    assert not np.array_equal(different["frames"], fresh[0]["frames"]), (
        f"seeds {config.seed} and {other.seed} gave the same {phase} batch"
    )


def test_close_stops_the_iterator_and_unknown_phase_fails(prepared):
    config, _, data_dir = prepared
    batches = train_data.create_batches(
        config, "phase2", data_dir, start_step=0, batch_dims=(1, 1), host_index=0, num_hosts=1
    )
    assert iter(batches) is batches
    next(batches)
    batches.close()
    with pytest.raises(StopIteration):
        next(batches)
    batches.close()  # closing twice is fine
    # The trainer's way: the tf.data iterator is destroyed on a background thread.
    background = train_data.create_batches(
        config, "phase1", data_dir, start_step=0, batch_dims=(1, 1), host_index=0, num_hosts=1
    )
    next(background)
    before = {t.ident for t in threading.enumerate()}
    background.close(wait=False)
    with pytest.raises(StopIteration):
        next(background)
    for t in threading.enumerate():
        if t.name == "close-tf.data" and t.ident not in before:
            t.join(timeout=60)
            assert not t.is_alive(), "the tf.data iterator took over 60 s to stop"
    background.close(wait=False)  # and twice
    with pytest.raises(ValueError, match="phase"):
        train_data.create_batches(
            config, "phase3", data_dir, start_step=0, batch_dims=(1, 1), host_index=0, num_hosts=1
        )
