"""tf.data pipelines on a built synthetic dataset: the batch contract, sampling, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from configs import default
from input_pipeline import builders, ilsvrc, pipeline, synthetic

K = 4
SEED = 11
MEAN = tuple(default.get_config().data.pixel_mean_bgr)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "ILSVRC2015"
    synthetic.generate(
        root, seed=3, width=64, height=48, num_train_videos=3, num_val_videos=0,
        frames_per_video=16, num_det_images=9, num_classes=3,
    )  # fmt: skip
    data_dir = root.parent / "tfds"
    builders.prepare("imagenet_vid", root, data_dir)
    builders.prepare("imagenet_det_vid30", root, data_dir)
    return {
        "vid": pipeline.open_table("imagenet_vid", "train", data_dir),
        "det": pipeline.open_table("imagenet_det_vid30", "train", data_dir),
    }


def _take(ds, n):
    it = iter(ds)
    out = [{k: v.numpy() for k, v in next(it).items()} for _ in range(n)]
    del it
    return out


CLIP_ARGS = dict(
    image_size=40, max_boxes=3, num_frames=3, support_range=K, vid_frames="all",
    det_per_class=None, mean=MEAN, legacy_boxes=True,
)  # fmt: skip


def _clips(data, **kwargs):
    args = dict(CLIP_ARGS, batch_dims=(2, 3), seed=SEED)
    args.update(kwargs)
    return pipeline.train_clips(data["vid"], data["det"], **args)


def _stream(data, seed, det_per_class=None):
    pool = pipeline.reference_pool(
        data["vid"], data["det"], vid_frames="all", det_per_class=det_per_class, seed=seed
    )
    return pipeline._Stream(pool, seed)


def _load(data, stream, g, **kwargs):
    """Clip g of the stream as `load_clip` makes it (every frame's targets)."""
    args = {k: CLIP_ARGS[k] for k in ("image_size", "max_boxes", "mean", "legacy_boxes")}
    args.update(num_frames=3, support_range=K, augment_options=pipeline.AugmentOptions())
    args.update(kwargs)
    return pipeline.load_clip(
        (data["vid"], data["det"]), stream.reference(g), stream.rng(g), **args
    )


def test_clip_batches_follow_the_contract(data):
    b = _take(_clips(data), 1)[0]
    assert set(b) == set(pipeline.BATCH_KEYS) == {"frames", "boxes", "labels", "valid"}
    assert b["frames"].shape == (2, 3, 3, 40, 40, 3) and b["frames"].dtype == np.float32
    assert b["boxes"].shape == (2, 3, 3, 4) and b["boxes"].dtype == np.float32
    assert b["labels"].shape == b["valid"].shape == (2, 3, 3)
    assert b["labels"].dtype == np.int32 and b["valid"].dtype == bool
    valid = b["valid"]
    assert valid.any(), f"seed {SEED}: no valid box in the first batch"
    assert np.all(b["boxes"][~valid] == 0) and np.all(b["labels"][~valid] == 0)
    boxes = b["boxes"][valid]
    assert np.all(boxes[:, 2:] >= boxes[:, :2] - 1) and np.all((boxes >= 0) & (boxes <= 40))
    assert np.all((b["labels"][valid] >= 0) & (b["labels"][valid] < 30))


def test_batches_hold_the_streams_clips_with_reference_targets(data):
    batches = _take(_clips(data), 2)
    stream = _stream(data, SEED)
    for s, batch in enumerate(batches):
        for i in range(6):
            g = s * 6 + i
            clip = _load(data, stream, g)
            d, j = divmod(i, 3)
            msg = f"seed {SEED}, clip {g}"
            np.testing.assert_array_equal(batch["frames"][d, j], clip["images"], err_msg=msg)
            for key in ("boxes", "labels", "valid"):  # the reference frame's targets
                np.testing.assert_array_equal(batch[key][d, j], clip[key][0], err_msg=msg)


def test_supports_come_from_the_window_and_det_repeats_its_image(data):
    stream = _stream(data, SEED)
    vid = data["vid"]
    seen_video = seen_det = False
    for g in range(len(stream.pool)):
        clip = _load(data, stream, g, image_size=24)
        frames = clip["frame_indices"]
        msg = f"seed {SEED}, clip {g}: frames {frames.tolist()}"
        if clip["is_video"]:
            seen_video = True
            # Clamping at the video ends only moves a support towards the reference.
            assert np.all(np.abs(frames[1:] - frames[0]) <= K), msg
            assert np.all((frames >= 0) & (frames < vid.lengths.max())), msg
        else:
            seen_det = True
            assert np.all(frames == 0), msg
            for t in (1, 2):  # a DET image is a clip of one repeated frame
                np.testing.assert_array_equal(clip["images"][t], clip["images"][0], err_msg=msg)
    assert seen_video and seen_det


def test_same_seed_same_stream_and_resume(data):
    first = _take(_clips(data), 3)
    again = _take(_clips(data), 3)
    resumed = _take(_clips(data, start_step=2), 1)[0]
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"seed {SEED}: {key}")
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], first[2][key], err_msg=f"seed {SEED}: {key}")
    other = _take(_clips(data, seed=SEED + 1), 1)[0]
    assert not np.array_equal(other["frames"], first[0]["frames"]), f"seeds {SEED}, {SEED + 1}"


def test_hosts_take_disjoint_slices_of_the_global_batch(data):
    single = _take(_clips(data, batch_dims=(1, 4)), 2)
    hosts = [_take(_clips(data, batch_dims=(1, 2), host_index=h, num_hosts=2), 2) for h in range(2)]
    for step in range(2):
        for key in ("frames", "boxes", "valid"):
            merged = np.concatenate([hosts[h][step][key][0] for h in range(2)])
            np.testing.assert_array_equal(
                merged, single[step][key][0], err_msg=f"seed {SEED}, step {step}: {key}"
            )
    with pytest.raises(ValueError, match="host_index"):
        _clips(data, host_index=2, num_hosts=2)


def test_every_reference_once_per_epoch(data):
    pool = pipeline.reference_pool(
        data["vid"], data["det"], vid_frames="sampled", det_per_class=None, seed=0
    )
    assert len(pool) == 3 * len(ilsvrc.even_sample_frames(16)) + data["det"].num_records
    stream = pipeline._Stream(pool, seed=0)
    for epoch in range(2):
        rows = {tuple(stream.reference(epoch * len(pool) + i)) for i in range(len(pool))}
        assert rows == {tuple(r) for r in pool}
    order0 = [tuple(stream.reference(i)) for i in range(len(pool))]
    order1 = [tuple(stream.reference(len(pool) + i)) for i in range(len(pool))]
    assert order0 != order1  # reshuffled every epoch


def test_det_per_class_cap(data):
    det = data["det"]
    pool = pipeline.reference_pool(None, det, vid_frames="sampled", det_per_class=1, seed=0)
    chosen = pool[:, 1]
    assert np.all(pool[:, 0] == 1)
    classes_present = {c for labels in det.labels for c in labels}
    assert len(chosen) <= len(classes_present)
    covered = {c for i in chosen for c in det.labels[i]}
    assert covered == classes_present
    everything = pipeline.reference_pool(
        None, det, vid_frames="sampled", det_per_class=None, seed=0
    )
    assert len(everything) == det.num_records


def test_still_images_are_clips_of_one_frame(data):
    ds = pipeline.still_images(
        data["vid"], data["det"], image_size=32, max_boxes=2, batch_dims=(4,), seed=0,
        vid_frames="all", det_per_class=2, mean=MEAN, legacy_boxes=True,
    )  # fmt: skip
    b = _take(ds, 2)[1]
    assert set(b) == set(pipeline.BATCH_KEYS)
    assert b["frames"].shape == (4, 1, 32, 32, 3) and b["frames"].dtype == np.float32
    assert b["boxes"].shape == (4, 2, 4) and b["valid"].shape == b["labels"].shape == (4, 2)
    stream = _stream(data, 0, det_per_class=2)
    for i in range(4):  # batch 1 holds clips 4..7
        clip = _load(data, stream, 4 + i, num_frames=1, support_range=0, image_size=32, max_boxes=2)
        np.testing.assert_array_equal(b["frames"][i], clip["images"], err_msg=f"seed 0, clip {i}")
        np.testing.assert_array_equal(b["boxes"][i], clip["boxes"][0], err_msg=f"seed 0, clip {i}")


def test_missing_split_opens_as_none(tmp_path):
    root = tmp_path / "ILSVRC2015"
    synthetic.generate(
        root, width=32, height=32, num_train_videos=1, num_val_videos=0, frames_per_video=3,
        num_det_images=0,
    )  # fmt: skip
    builders.prepare("imagenet_vid", root, tmp_path / "tfds")
    assert pipeline.open_table("imagenet_vid", "val", tmp_path / "tfds") is None
    assert pipeline.open_table("imagenet_vid", "train", tmp_path / "tfds").num_records == 3
