"""TFDS builders: the real VID slice reproduced exactly, list files, and broken inputs."""

from __future__ import annotations

import io
import logging
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import input_pipeline  # noqa: F401  (registers the builders)
from input_pipeline import builders, classes, ilsvrc, synthetic

MINI = "ilsvrc2015_vid_mini"


@pytest.fixture(scope="module")
def mini_built(fixtures_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_mini")
    builder = builders.prepare("imagenet_vid", fixtures_dir / MINI, data_dir)
    return builder, data_dir


def test_registered_under_tfds_names():
    assert "imagenet_vid" in tfds.list_builders(with_community_datasets=False)
    assert "imagenet_det_vid30" in tfds.list_builders(with_community_datasets=False)


def test_fixture_build_reproduces_the_xml_exactly(fixtures_dir, mini_built):
    builder, _ = mini_built
    root = fixtures_dir / MINI
    assert set(builder.info.splits) == {"train"}  # no val folder in the mini fixture
    assert builder.info.file_format.value == "array_record"
    source = tfds.data_source(
        "imagenet_vid",
        split="train",
        data_dir=builder.data_dir_root,
        builder_kwargs={},
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    videos = ilsvrc.list_vid_videos(root, "train")
    assert len(source) == sum(v.num_frames for v in videos) == 108
    meta = builder.info.metadata["splits"]["train"]
    assert meta["video_ids"] == [v.video_id for v in videos]
    assert meta["starts"] == [0, 60] and meta["num_frames"] == [60, 48]
    record = 0
    for video in videos:
        for i in range(video.num_frames):
            ex = source[record]
            ann = ilsvrc.parse_annotation(video.annotation_path(root, i))
            assert ex["video_id"].decode() == video.video_id
            assert (ex["frame_index"], ex["num_frames"]) == (i, video.num_frames)
            assert (ex["width"], ex["height"]) == (ann.width, ann.height) == (1280, 720)
            assert ex["image"] == video.image_path(root, i).read_bytes()  # stored byte for byte
            objs = ex["objects"]
            raw = builders.raw_pixel_boxes(objs["bbox"], ex["width"], ex["height"])
            assert raw.tolist() == [list(o.box) for o in ann.objects]
            assert list(objs["label"]) == [o.label for o in ann.objects]
            assert list(objs["track_id"]) == [o.track_id for o in ann.objects]
            assert list(objs["generated"]) == [o.generated for o in ann.objects]
            assert list(objs["occluded"]) == [o.occluded for o in ann.objects]
            record += 1
    report = builder.info.metadata["build_report"]["train"]
    assert report == {"frames": 108, "boxes": 108}


def test_normalized_bbox_round_trip_is_exact_for_large_images():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(1, 8000, 2))
        x1, x2 = sorted(int(v) for v in rng.integers(0, w + 1, 2))
        y1, y2 = sorted(int(v) for v in rng.integers(0, h + 1, 2))
        obj = ilsvrc.Object("n01662784", 26, x1, y1, x2, y2)
        bbox = builders.normalized_bbox(obj, w, h)
        assert builders.raw_pixel_boxes(bbox[None], w, h).tolist() == [[x1, y1, x2, y2]]


def _frame(value: int, w: int = 64, h: int = 48) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[10:30, 20:40] = (30, 200, 90)
    return img


def _vid_xml(objects: list[tuple], w: int = 64, h: int = 48) -> str:
    return synthetic.annotation_xml(
        "ILSVRC2015_VID_train_0000/v",
        "000000",
        "ILSVRC_2015",
        w,
        h,
        [
            {
                "track_id": t,
                "wnid": wnid,
                "x1": b[0],
                "y1": b[1],
                "x2": b[2],
                "y2": b[3],
                "occluded": 0,
                "generated": 0,
            }
            for t, wnid, b in objects
        ],
    )


def _write_broken_root(root):
    """One 5-frame train video with every recoverable defect, and a small DET folder."""
    video = root / "Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    ann = root / "Annotations/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    video.mkdir(parents=True)
    ann.mkdir(parents=True)
    turtle = classes.WNIDS[classes.NAME_TO_LABEL["turtle"]]
    # 0: clean; 1: grayscale JPEG; 2: CMYK JPEG; 3: no XML; 4: truncated JPEG.
    cv2.imwrite(str(video / "000000.JPEG"), _frame(100))
    cv2.imwrite(str(video / "000001.JPEG"), _frame(100)[..., 0])
    buf = io.BytesIO()
    Image.fromarray(_frame(100)[..., ::-1]).convert("CMYK").save(buf, format="JPEG")
    (video / "000002.JPEG").write_bytes(buf.getvalue())
    cv2.imwrite(str(video / "000003.JPEG"), _frame(100))
    full = cv2.imencode(".jpg", _frame(100))[1].tobytes()
    (video / "000004.JPEG").write_bytes(full[: len(full) * 9 // 10])
    (ann / "000000.xml").write_text(
        _vid_xml([(0, turtle, (20, 10, 39, 29)), (1, turtle, (50, 40, 70, 60))])  # 2nd: clipped
    )
    (ann / "000001.xml").write_text(_vid_xml([(0, turtle, (25, 10, 24, 29))]))  # zero width
    (ann / "000002.xml").write_text(_vid_xml([(0, turtle, (80, 10, 90, 20))]))  # outside
    (ann / "000004.xml").write_text(_vid_xml([(0, turtle, (20, 10, 39, 29))]))
    # DET: one good image with a VID and a non-VID object, one corrupt image, one image with
    # only a non-VID object, one without XML.
    det = root / "Data/DET/train/ILSVRC2014_train_0000"
    det_ann = root / "Annotations/DET/train/ILSVRC2014_train_0000"
    det.mkdir(parents=True)
    det_ann.mkdir(parents=True)

    def det_xml(objects):
        return synthetic.annotation_xml(
            "ILSVRC2014_train_0000",
            "x",
            "ILSVRC_2014",
            64,
            48,
            [{"wnid": w, "x1": 1, "y1": 2, "x2": 30, "y2": 40} for w in objects],
            det=True,
        )

    for name, objects in [
        ("a", [turtle, synthetic.OTHER_DET_WNID]),
        ("b", [turtle]),
        ("c", [synthetic.OTHER_DET_WNID]),
        ("d", None),
    ]:
        cv2.imwrite(str(det / f"ILSVRC2014_train_{name}.JPEG"), _frame(80))
        if objects is not None:
            (det_ann / f"ILSVRC2014_train_{name}.xml").write_text(det_xml(objects))
    (det / "ILSVRC2014_train_b.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")


def test_broken_inputs_are_repaired_and_counted(tmp_path, caplog):
    root = tmp_path / "ilsvrc"
    _write_broken_root(root)
    with caplog.at_level(logging.INFO):
        vid = builders.prepare("imagenet_vid", root, tmp_path / "tfds")
        det = builders.prepare("imagenet_det_vid30", root, tmp_path / "tfds")
    report = vid.info.metadata["build_report"]["train"]
    assert report["images_grayscale"] == 1
    assert report["images_cmyk"] == 1
    assert report["images_truncated"] == 1
    assert report["frames_without_xml"] == 1
    assert report["boxes_clipped"] == 1
    assert report["boxes_dropped_empty"] == 1
    assert report["boxes_dropped_outside"] == 1
    assert "build report" in caplog.text and "images_cmyk=1" in caplog.text
    assert "val' left empty" in caplog.text
    source = vid.as_data_source("train")  # default decoding: every image is 3-channel
    assert len(source) == 5
    boxes = [
        builders.raw_pixel_boxes(source[i]["objects"]["bbox"], 64, 48).tolist() for i in range(5)
    ]
    assert boxes == [[[20, 10, 39, 29], [50, 40, 63, 47]], [], [], [], [[20, 10, 39, 29]]]
    for i in range(5):
        assert source[i]["image"].shape == (48, 64, 3)

    det_report = det.info.metadata["build_report"]["train"]
    assert det_report["images_corrupt_dropped"] == 1
    assert det_report["images_dropped_no_vid_object"] == 2  # 'c' (other class), 'd' (no XML)
    assert det_report["images_without_xml"] == 1
    assert det_report["objects_other_classes_dropped"] == 2
    det_source = det.as_data_source("train", decoders={"image": tfds.decode.SkipDecoding()})
    assert len(det_source) == 1
    assert det_source[0]["image_id"] == b"train/ILSVRC2014_train_0000/ILSVRC2014_train_a"
    assert list(det_source[0]["objects"]["label"]) == [classes.NAME_TO_LABEL["turtle"]]
    assert det.info.metadata["splits"]["train"]["labels"] == [[classes.NAME_TO_LABEL["turtle"]]]


@pytest.mark.parametrize("defect", ["malformed_xml", "corrupt_jpeg", "unknown_class"])
def test_unrecoverable_inputs_raise_a_clear_error(tmp_path, defect):
    root = tmp_path / "ilsvrc"
    _write_broken_root(root)
    shutil.rmtree(root / "Data/DET")
    ann = root / "Annotations/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    video = root / "Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    if defect == "malformed_xml":
        (ann / "000004.xml").write_text("<annotation><size><width>64</width></annotation>")
        bad = "000004.xml"
    elif defect == "corrupt_jpeg":
        (video / "000002.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
        bad = "000002.JPEG"
    else:
        (ann / "000004.xml").write_text(_vid_xml([(0, "n00007846", (1, 1, 5, 5))]))
        bad = "000004.xml"
    with pytest.raises(ilsvrc.IlsvrcFormatError, match=bad):
        builders.prepare("imagenet_vid", root, tmp_path / "tfds")


def test_list_files_are_followed(tmp_path):
    root = tmp_path / "syn"
    synthetic.generate(
        root,
        width=48,
        height=40,
        num_train_videos=3,
        num_val_videos=2,
        frames_per_video=8,
        num_det_images=4,
    )
    # Keep only the 3rd and 1st train videos, in that order, with chosen sample frames; list
    # the val frames of the 2nd video first.
    train_ids = sorted(
        {line.split()[0] for line in open(root / "ImageSets/VID_train_15frames.txt")}
    )
    (root / "ImageSets/VID_train_15frames.txt").write_text(
        f"{train_ids[2]} 1 5 8\n{train_ids[2]} 1 1 8\n{train_ids[0]} 1 3 8\n"
    )
    lines = (root / "ImageSets/VID_val_frames.txt").read_text().splitlines()
    reordered = lines[8:] + lines[:8]
    (root / "ImageSets/VID_val_frames.txt").write_text(
        "".join(f"{line.split()[0]} {k + 1}\n" for k, line in enumerate(reordered))
    )
    (root / "ImageSets/DET_train_30classes.txt").write_text(
        (root / "ImageSets/DET_train_30classes.txt").read_text().splitlines()[2] + "\n"
    )
    data_dir = tmp_path / "tfds"
    vid = builders.prepare("imagenet_vid", root, data_dir)
    meta = vid.info.metadata["splits"]
    assert meta["train"]["video_ids"] == [train_ids[2], train_ids[0]]
    assert meta["train"]["sample_frames"] == [[1, 5], [3]]
    assert meta["val"]["video_ids"] == [
        "val/ILSVRC2015_val_00000001",
        "val/ILSVRC2015_val_00000000",
    ]
    val = vid.as_data_source("val", decoders={"image": tfds.decode.SkipDecoding()})
    assert val[0]["video_id"] == b"val/ILSVRC2015_val_00000001" and val[0]["frame_index"] == 0
    det = builders.prepare("imagenet_det_vid30", root, data_dir)
    assert det.info.splits["train"].num_examples == 1

    # Without lists (use_lists=False) the folders decide: every video, sorted.
    plain = builders.prepare("imagenet_vid", root, tmp_path / "tfds_plain", use_lists=False)
    assert len(plain.info.metadata["splits"]["train"]["video_ids"]) == 3
    assert plain.info.metadata["splits"]["val"]["video_ids"][0] == "val/ILSVRC2015_val_00000000"


def test_missing_listed_video_is_an_error(tmp_path):
    root = tmp_path / "syn"
    synthetic.generate(
        root,
        width=32,
        height=32,
        num_train_videos=1,
        num_val_videos=0,
        frames_per_video=4,
        num_det_images=0,
    )
    with open(root / "ImageSets/VID_train_15frames.txt", "a") as f:
        f.write("train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_09999000 1 0 4\n")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="ILSVRC2015_train_09999000"):
        builders.prepare("imagenet_vid", root, tmp_path / "tfds")
