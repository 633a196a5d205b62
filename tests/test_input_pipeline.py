"""tf.data pipelines on a built synthetic dataset: shapes, sampling, determinism, evaluation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from input_pipeline import builders, ilsvrc, pipeline, synthetic

K = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "ILSVRC2015"
    synthetic.generate(
        root, seed=3, width=64, height=48, num_train_videos=3, num_val_videos=2,
        frames_per_video=16, num_det_images=9, num_classes=3,
    )  # fmt: skip
    data_dir = root.parent / "tfds"
    builders.prepare("imagenet_vid", root, data_dir)
    builders.prepare("imagenet_det_vid30", root, data_dir)
    return {
        "root": root,
        "vid": pipeline.open_table("imagenet_vid", "train", data_dir),
        "val": pipeline.open_table("imagenet_vid", "val", data_dir),
        "det": pipeline.open_table("imagenet_det_vid30", "train", data_dir),
    }


def _take(ds, n):
    it = iter(ds)
    out = [{k: v.numpy() for k, v in next(it).items()} for _ in range(n)]
    del it
    return out


def _clips(data, **kwargs):
    args = dict(
        image_size=40, max_boxes=3, batch_dims=(2, 3), seed=11, support_range=K, vid_frames="all"
    )
    args.update(kwargs)
    return pipeline.train_clips(data["vid"], data["det"], **args)


def test_clip_batches_shapes_and_sampling(data):
    batches = _take(_clips(data), 4)
    b = batches[0]
    assert b["images"].shape == (2, 3, 3, 40, 40, 3) and b["images"].dtype == np.float32
    assert b["boxes"].shape == (2, 3, 3, 3, 4) and b["boxes"].dtype == np.float32
    assert b["labels"].shape == b["valid"].shape == b["track_ids"].shape == (2, 3, 3, 3)
    assert b["labels"].dtype == np.int32 and b["valid"].dtype == bool
    assert b["frame_indices"].shape == (2, 3, 3) and b["is_video"].shape == (2, 3)
    assert b["clip_index"].tolist() == [[0, 1, 2], [3, 4, 5]]
    vid = data["vid"]
    seen_video = seen_det = False
    for batch in batches:
        flat = {k: v.reshape((6,) + v.shape[2:]) for k, v in batch.items()}
        for i in range(6):
            frames = flat["frame_indices"][i]
            if flat["is_video"][i]:
                seen_video = True
                ref = frames[0]
                # Clamping at the video ends only moves a support towards the reference.
                assert np.all(np.abs(frames[1:] - ref) <= K)
                assert np.all((frames >= 0) & (frames < vid.lengths.max()))
            else:
                seen_det = True
                assert np.all(frames == 0)
                for t in (1, 2):  # a DET image is a clip of one repeated frame
                    np.testing.assert_array_equal(flat["images"][i, t], flat["images"][i, 0])
            valid = flat["valid"][i]
            assert np.all(flat["boxes"][i][~valid] == 0)
            assert np.all(flat["boxes"][i][valid][:, 2:] >= flat["boxes"][i][valid][:, :2] - 1)
            assert np.all(flat["boxes"][i][valid] <= 40)
    assert seen_video and seen_det


def test_same_seed_same_stream_and_resume(data):
    first = _take(_clips(data), 3)
    again = _take(_clips(data), 3)
    resumed = _take(_clips(data, start_step=2), 1)[0]
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for key in resumed:
        np.testing.assert_array_equal(resumed[key], first[2][key])
    other = _take(_clips(data, seed=12), 1)[0]
    assert not np.array_equal(other["images"], first[0]["images"])


def test_hosts_take_disjoint_slices_of_the_global_batch(data):
    single = _take(_clips(data, batch_dims=(1, 4)), 2)
    hosts = [_take(_clips(data, batch_dims=(1, 2), host_index=h, num_hosts=2), 2) for h in range(2)]
    for step in range(2):
        merged = np.concatenate([hosts[h][step]["clip_index"].ravel() for h in range(2)])
        assert merged.tolist() == single[step]["clip_index"].ravel().tolist()
        images = np.concatenate([hosts[h][step]["images"].reshape(2, -1) for h in range(2)])
        np.testing.assert_array_equal(images, single[step]["images"].reshape(4, -1))


def test_every_reference_once_per_epoch(data):
    pool = pipeline.reference_pool(data["vid"], data["det"], vid_frames="sampled")
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
    pool = pipeline.reference_pool(None, det, det_per_class=1, seed=0)
    chosen = pool[:, 1]
    assert np.all(pool[:, 0] == 1)
    classes_present = {c for labels in det.labels for c in labels}
    assert len(chosen) <= len(classes_present)
    covered = {c for i in chosen for c in det.labels[i]}
    assert covered == classes_present
    assert len(pipeline.reference_pool(None, det, det_per_class=None)) == det.num_records


def test_still_images(data):
    ds = pipeline.still_images(
        data["vid"], data["det"], image_size=32, max_boxes=2, batch_dims=(4,), seed=0,
        det_per_class=2, mean=None,
    )  # fmt: skip
    b = _take(ds, 2)[1]
    assert b["images"].shape == (4, 32, 32, 3) and b["images"].dtype == np.uint8
    assert b["boxes"].shape == (4, 2, 4) and b["frame_indices"].shape == (4,)
    assert b["clip_index"].tolist() == [4, 5, 6, 7]


def test_eval_frames_in_order_with_release_preprocessing(data):
    val, root = data["val"], data["root"]
    batches = _take(
        pipeline.eval_frames(val, image_size=32, max_boxes=4, batch_dims=(1, 3)),
        -(-val.num_records // 3),
    )
    flat = {k: np.concatenate([b[k].reshape((3,) + b[k].shape[2:]) for b in batches]) for k in
            batches[0]}  # fmt: skip
    real = flat["is_real"]
    assert real.sum() == val.num_records == 32 and not real[-1]  # 32 frames, padded to 33
    assert flat["frame_id"][real].tolist() == list(range(1, 33))
    videos = ilsvrc.list_vid_videos(root, "val")
    k = 0
    for v, video in enumerate(videos):
        for t in range(video.num_frames):
            assert (flat["video_index"][k], flat["frame_index"][k]) == (v, t)
            assert flat["num_frames"][k] == video.num_frames
            assert (flat["width"][k], flat["height"][k]) == (64, 48)
            img = cv2.imread(str(video.image_path(root, t)))
            expected = cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR).astype(
                np.float32
            ) - np.float32(pipeline.RELEASE_MEAN_BGR)
            np.testing.assert_array_equal(flat["image"][k], expected)
            ann = ilsvrc.parse_annotation(video.annotation_path(root, t))
            n = len(ann.objects)
            assert flat["gt_valid"][k].sum() == n
            assert flat["gt_boxes"][k][:n].tolist() == [list(o.box) for o in ann.objects]
            assert flat["gt_labels"][k][:n].tolist() == [o.label for o in ann.objects]
            assert flat["gt_generated"][k][:n].tolist() == [o.generated for o in ann.objects]
            k += 1


def test_eval_hosts_split_whole_videos():
    assert pipeline.assign_videos([10, 5, 5, 8], 2) == [[0, 3], [1, 2]]
    assert pipeline.assign_videos([3, 3, 3], 1) == [[0, 1, 2]]


def test_eval_on_second_host(data):
    val = data["val"]
    elements = _take(pipeline.eval_frames(val, image_size=16, max_boxes=2, host_index=1,
                                          num_hosts=2), 16)  # fmt: skip
    assert {int(e["video_index"]) for e in elements} == {1}
    assert [int(e["frame_index"]) for e in elements] == list(range(16))


def test_missing_split_opens_as_none(tmp_path):
    root = tmp_path / "ILSVRC2015"
    synthetic.generate(
        root, width=32, height=32, num_train_videos=1, num_val_videos=0, frames_per_video=3,
        num_det_images=0,
    )  # fmt: skip
    builders.prepare("imagenet_vid", root, tmp_path / "tfds")
    assert pipeline.open_table("imagenet_vid", "val", tmp_path / "tfds") is None
    assert pipeline.open_table("imagenet_vid", "train", tmp_path / "tfds").num_records == 3
