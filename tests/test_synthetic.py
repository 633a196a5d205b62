"""The synthetic ILSVRC-format generator: layout, determinism, motion buckets, deteriorations."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import builders, classes, ilsvrc, synthetic

SIZE = dict(
    width=96,
    height=80,
    num_train_videos=6,
    num_val_videos=3,
    frames_per_video=30,
    num_det_images=12,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, module_rng):
    # Any seed must give a data set with these properties (40 seeds checked).
    root = tmp_path_factory.mktemp("synthetic") / "ILSVRC2015"
    seed = str(module_rng.integers(1 << 31))
    synthetic.main(
        [
            "--out", str(root), "--seed", seed, "--width", "96", "--height", "80",
            "--train-videos", "6", "--val-videos", "3", "--frames", "30", "--det-images", "12",
        ]
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def built(generated, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_synthetic")
    vid = builders.prepare("imagenet_vid", generated, data_dir)
    det = builders.prepare("imagenet_det_vid30", generated, data_dir)
    return vid, det


def _xml_layout(lines: list[str]) -> list[tuple[int, str]]:
    """(indentation in tabs, first tag) of each line."""
    return [
        (len(line) - len(line.lstrip("\t")), line.strip().split(">")[0] + ">") for line in lines
    ]


def _with_objects(lines: list[str], k: int) -> list[str]:
    """The lines of a one-object XML with its <object> block repeated k times."""
    start = next(i for i, line in enumerate(lines) if line.strip() == "<object>")
    end = next(i for i, line in enumerate(lines) if line.strip() == "</object>") + 1
    return lines[:start] + lines[start:end] * k + lines[end:]


def test_official_layout_and_xml_format(generated, fixtures_dir):
    assert (generated / "ImageSets/VID_train_15frames.txt").is_file()
    assert (generated / "ImageSets/VID_val_videos.txt").is_file()
    assert (generated / "ImageSets/VID_val_frames.txt").is_file()
    assert (generated / "ImageSets/DET_train_30classes.txt").is_file()
    train = ilsvrc.list_vid_videos(generated, "train")
    val = ilsvrc.list_vid_videos(generated, "val")
    assert len(train) == 6 and len(val) == 3
    assert train[0].video_id == "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    assert val[0].video_id == "val/ILSVRC2015_val_00000000"
    assert all(v.num_frames == 30 for v in train + val)
    # Same tag sequence, indentation and box element order as a real VID XML (which has one
    # object; its <object> block repeated as many times as ours has objects).
    real = fixtures_dir / "ilsvrc2015_vid_mini/Annotations/VID/train/ILSVRC2015_VID_train_0000"
    real_lines = (real / "ILSVRC2015_train_00000000/000000.xml").read_text().splitlines()
    for video in (train[0], val[0]):
        for t in (0, 29):
            ours = video.annotation_path(generated, t)
            k = len(ilsvrc.parse_annotation(ours).objects)
            expected = _xml_layout(_with_objects(real_lines, k))
            assert _xml_layout(ours.read_text().splitlines()) == expected, (ours, k)
    frame = cv2.imread(str(train[0].image_path(generated, 0)))
    assert frame.shape == (80, 96, 3)
    ann = ilsvrc.parse_annotation(train[0].annotation_path(generated, 0))
    assert ann.filename == "000000" and ann.folder == train[0].video_id.split("/", 1)[1]


def test_deterministic_from_the_seed(tmp_path, rng):
    small = dict(SIZE, num_train_videos=1, num_val_videos=1, frames_per_video=4, num_det_images=2)
    seed = int(rng.integers(1 << 31))
    a = synthetic.generate(tmp_path / "a", seed=seed, **small)
    b = synthetic.generate(tmp_path / "b", seed=seed, **small)
    synthetic.generate(tmp_path / "c", seed=seed + 1, **small)
    assert a == b
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    frame = "Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000/000000.JPEG"
    assert (tmp_path / "a" / frame).read_bytes() != (tmp_path / "c" / frame).read_bytes()


def test_builders_read_it_back(generated, built):
    vid, det = built
    assert vid.info.splits["train"].num_examples == 6 * 30
    assert vid.info.splits["val"].num_examples == 3 * 30
    source = vid.as_data_source("val", decoders={"image": tfds.decode.SkipDecoding()})
    record = 0
    for video in ilsvrc.list_vid_videos(generated, "val"):
        for t in range(video.num_frames):
            ex = source[record]
            ann = ilsvrc.parse_annotation(video.annotation_path(generated, t))
            raw = builders.raw_pixel_boxes(ex["objects"]["bbox"], ex["width"], ex["height"])
            assert raw.tolist() == [list(o.box) for o in ann.objects]
            assert list(ex["objects"]["track_id"]) == [o.track_id for o in ann.objects]
            assert list(ex["objects"]["generated"]) == [o.generated for o in ann.objects]
            record += 1
    manifest = json.loads((generated / "synthetic_manifest.json").read_text())
    assert det.info.splits["train"].num_examples == len(manifest["det_images"]) == 12
    # The non-VID clutter objects (in ~30% of DET images) are dropped, and nothing else.
    clutter = sum(
        o.label is None
        for image_id in manifest["det_images"]
        for o in ilsvrc.parse_annotation(ilsvrc.det_annotation_path(generated, image_id)).objects
    )
    report = det.info.metadata["build_report"]["train"]
    assert report["objects_other_classes_dropped"] == clutter
    used = set(manifest["labels"])
    assert len(used) == 6 and used <= set(range(classes.NUM_CLASSES))


def test_motion_iou_buckets_all_non_empty(generated):
    counts = {name: 0 for name in ("slow", "medium", "fast")}
    by_speed: dict[str, list[float]] = {"slow": [], "medium": [], "fast": []}
    manifest = json.loads((generated / "synthetic_manifest.json").read_text())
    for split in ("train", "val"):
        for video in ilsvrc.list_vid_videos(generated, split):
            anns = ilsvrc.read_video_annotations(generated, video)
            frames = [[(o.track_id, o.box) for o in a.objects] for a in anns]
            speeds = manifest["videos"][video.video_id]["speeds"]
            for objs, values in zip(frames, ilsvrc.motion_iou(frames), strict=True):
                for (tid, _), m in zip(objs, values, strict=True):
                    by_speed[speeds[str(tid)]].append(m)
                    for name, (lo, hi) in ilsvrc.MOTION_BUCKETS.items():
                        if name in counts and lo <= m <= hi:
                            counts[name] += 1
    assert all(n > 20 for n in counts.values()), counts
    # The intended speed of an object is the bucket most of its boxes land in.
    assert np.median(by_speed["slow"]) > 0.9
    assert 0.7 < np.median(by_speed["medium"]) < 0.9
    assert np.median(by_speed["fast"]) < 0.7


def _sharpness(path) -> float:
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def test_deteriorated_frames_exist_and_are_annotated(generated):
    manifest = json.loads((generated / "synthetic_manifest.json").read_text())
    seen = set()
    for split in ("train", "val"):
        for video in ilsvrc.list_vid_videos(generated, split):
            schedule = manifest["videos"][video.video_id]["deteriorations"]
            anns = ilsvrc.read_video_annotations(generated, video)
            clean = [t for t in range(video.num_frames) if not schedule[t]]
            clean_sharp = np.median([_sharpness(video.image_path(generated, t)) for t in clean])
            clean_light = np.median(
                [cv2.imread(str(video.image_path(generated, t))).mean() for t in clean]
            )
            for t, kinds in enumerate(schedule):
                ann = anns[t]
                for kind in kinds:
                    seen.add(kind)
                    path = video.image_path(generated, t)
                    if kind in ("motion_blur", "defocus"):
                        assert ann.objects, (video.video_id, t, kind)
                        assert _sharpness(path) < 0.6 * clean_sharp
                    elif kind == "illumination":
                        assert ann.objects
                        assert abs(cv2.imread(str(path)).mean() - clean_light) > 15
                    elif kind == "partial_occlusion":
                        assert any(o.occluded for o in ann.objects), (video.video_id, t)
                    elif kind == synthetic.FAST_BLUR:
                        # A fast object is smeared in this frame (`_smear`, tested below), and
                        # it is annotated.
                        speeds = manifest["videos"][video.video_id]["speeds"]
                        assert any(speeds[str(o.track_id)] == "fast" for o in ann.objects)
                    elif kind == "full_occlusion":
                        # The hidden object is not annotated (as in VID), but the same tracks
                        # are annotated in the clean frames around the occlusion.
                        tracks_clean = {o.track_id for u in clean for o in anns[u].objects}
                        assert len({o.track_id for o in ann.objects}) < len(tracks_clean)
    assert seen == set(synthetic.DETERIORATIONS)


def test_a_fast_object_is_smeared_along_its_motion(rng):
    """`_smear` blurs the object along its velocity only: across the motion its stripes keep
    their contrast, along it they wash out; its colour averages out; far pixels are untouched."""
    size = 128
    canvas = np.full((size, size, 3), 100.0, np.float32)
    track = synthetic._Track(
        label=0, track_id=0, speed="fast", cx=64.0, cy=64.0, w=48.0, h=48.0, vx=3.0, vy=0.0,
        scale_rate=0.0, colour_jitter=np.zeros(3), phase=0.0,
    )  # fmt: skip
    mask = np.zeros((size, size), bool)
    mask[40:88, 40:88] = True
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(3, 6))
    # Stripes along x (vary with x) and along y (vary with y), in two colour channels.
    canvas[..., 0][mask] = np.where((xx // period) % 2 == 0, 220.0, 30.0)[mask]
    canvas[..., 1][mask] = np.where((yy // period) % 2 == 0, 220.0, 30.0)[mask]
    before = canvas.copy()
    synthetic._smear(canvas, np.full_like(canvas, 100.0), mask, track, 0.6)
    inner = np.s_[56:72, 56:72]  # the smear (29 px) reads only the object here
    # Motion along x: stripes that vary with x fade, stripes that vary with y stay.
    assert canvas[inner][..., 0].std() < 0.3 * before[inner][..., 0].std(), period
    assert canvas[inner][..., 1].std() > 0.8 * before[inner][..., 1].std(), period
    # Washed out to the stripes' mean colour (over the object: a window holds part stripes).
    np.testing.assert_allclose(canvas[inner][..., 0].mean(), before[mask][:, 0].mean(), rtol=0.05)
    np.testing.assert_array_equal(canvas[:, :8], before[:, :8])  # beyond the smear's reach
