"""The plain ILSVRC reader: classes, XML parsing, list files, images, box clean-up, motion IoU."""

from __future__ import annotations

import collections
import io
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from input_pipeline import classes, ilsvrc

MINI = "ilsvrc2015_vid_mini"


def test_class_list_is_the_standard_vid_map():
    assert classes.NUM_CLASSES == 30
    assert classes.CLASS_NAMES[0] == "airplane" and classes.CLASS_NAMES[-1] == "zebra"
    assert list(classes.CLASS_NAMES) == sorted(classes.CLASS_NAMES)  # alphabetical by name
    assert classes.WNID_TO_LABEL["n01662784"] == classes.NAME_TO_LABEL["turtle"] == 26
    assert classes.WNID_TO_LABEL["n01674464"] == classes.NAME_TO_LABEL["lizard"] == 16
    assert classes.WNIDS[classes.NAME_TO_LABEL["watercraft"]] == "n04530566"
    assert len(set(classes.WNIDS)) == 30
    assert classes.label_of_wnid("n00007846") is None


def test_fixture_videos_and_annotations(fixtures_dir):
    root = fixtures_dir / MINI
    videos = ilsvrc.list_vid_videos(root, "train")
    assert [v.video_id.rsplit("/", 1)[1] for v in videos] == [
        "ILSVRC2015_train_00000000",
        "ILSVRC2015_train_00001000",
    ]
    assert [v.num_frames for v in videos] == [60, 48]
    assert ilsvrc.list_vid_videos(root, "val") == []
    objects = [
        o
        for v in videos
        for ann in ilsvrc.read_video_annotations(root, v)
        for o in (ann.objects if ann else ())
    ]
    assert len(objects) == 108
    assert sum(o.generated for o in objects) == 34
    assert all(o.occluded for o in objects)
    first = ilsvrc.parse_annotation(videos[0].annotation_path(root, 0))
    assert (first.width, first.height) == (1280, 720)
    assert first.objects[0].box == (323, 216, 1050, 428)
    assert first.objects[0].label == classes.NAME_TO_LABEL["lizard"]
    assert first.objects[0].track_id == 0


def test_even_sample_frames_matches_fgfa_list():
    assert ilsvrc.even_sample_frames(300) == tuple(range(10, 300, 20))
    assert len(ilsvrc.even_sample_frames(6)) == 6  # short snippets: every frame, no repeats
    assert ilsvrc.even_sample_frames(1) == (0,)


def test_list_file_readers(tmp_path):
    (tmp_path / "a.txt").write_text(
        "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1 10 300\n"
        "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000 1 30 300\n"
        "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00001000 1 2 48\n"
    )
    got = ilsvrc.read_vid_train_list(tmp_path / "a.txt")
    assert list(got) == [
        "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000",
        "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00001000",
    ]
    assert got["train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"] == ((10, 30), 300)
    (tmp_path / "b.txt").write_text("val/ILSVRC2015_val_00000000 1 0 464\n")
    assert ilsvrc.read_vid_val_videos(tmp_path / "b.txt") == [
        ("val/ILSVRC2015_val_00000000", 1, 0, 464)
    ]
    (tmp_path / "c.txt").write_text("val/ILSVRC2015_val_00000000/000000 1 464 0 0\n")
    assert ilsvrc.read_vid_val_frames(tmp_path / "c.txt") == [
        ("val/ILSVRC2015_val_00000000/000000", 1)
    ]
    (tmp_path / "d.txt").write_text("train/ILSVRC2013_train/n02391049/n02391049_9965 1\n")
    assert ilsvrc.read_det_list(tmp_path / "d.txt") == [
        "train/ILSVRC2013_train/n02391049/n02391049_9965"
    ]
    (tmp_path / "e.txt").write_text("only_two columns\n")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="e.txt:1"):
        ilsvrc.read_vid_train_list(tmp_path / "e.txt")


@pytest.mark.parametrize(
    "text, match",
    [
        ("<annotation><size><width>10</width>", "malformed XML"),
        ("<annotation><filename>x</filename></annotation>", "missing <size>"),
        (
            "<annotation><size><width>10</width><height>8</height></size><object>"
            "<name>n01662784</name><bndbox><xmin>a</xmin><xmax>3</xmax><ymin>1</ymin>"
            "<ymax>2</ymax></bndbox></object></annotation>",
            "<xmin> is 'a'",
        ),
    ],
)
def test_malformed_xml_raises_naming_the_file(tmp_path, text, match):
    path = tmp_path / "broken.xml"
    path.write_text(text)
    with pytest.raises(ilsvrc.IlsvrcFormatError, match=match) as err:
        ilsvrc.parse_annotation(path)
    assert "broken.xml" in str(err.value)


def _obj(x1, y1, x2, y2):
    return ilsvrc.Object("n01662784", 26, x1, y1, x2, y2)


def test_sanitize_clips_out_of_image_and_drops_empty_boxes():
    counts = collections.Counter()
    kept = ilsvrc.sanitize_objects(
        [
            _obj(0, 0, 99, 49),  # whole image: kept as written
            _obj(10, 10, 100, 50),  # x2 == W: one past the last pixel, still kept exactly
            _obj(-5, 3, 120, 60),  # outside: clipped to [0, W-1] x [0, H-1]
            _obj(30, 10, 29, 20),  # x2 < x1: zero width under +1, dropped
            _obj(150, 10, 160, 20),  # entirely right of the image: dropped
            _obj(7, 7, 7, 7),  # a 1x1 box is a real box (+1 convention)
        ],
        width=100,
        height=50,
        counts=counts,
    )
    assert [o.box for o in kept] == [
        (0, 0, 99, 49),
        (10, 10, 100, 50),
        (0, 3, 99, 49),
        (7, 7, 7, 7),
    ]
    assert counts == {"boxes_clipped": 1, "boxes_dropped_empty": 1, "boxes_dropped_outside": 1}


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_load_image_normalises_odd_files(tmp_path, rng):
    # Smooth content, so that JPEG loss stays small next to a wrong colour conversion.
    colour = cv2.resize(rng.integers(0, 255, (3, 4, 3), dtype=np.uint8), (32, 24))
    (tmp_path / "rgb.JPEG").write_bytes(_jpeg(colour))
    data, w, h, fix = ilsvrc.load_image(tmp_path / "rgb.JPEG")
    assert (w, h, fix) == (32, 24, None) and data == (tmp_path / "rgb.JPEG").read_bytes()

    (tmp_path / "gray.JPEG").write_bytes(_jpeg(colour[..., 0]))
    buf = io.BytesIO()
    Image.fromarray(colour[..., ::-1]).convert("CMYK").save(buf, format="JPEG")
    (tmp_path / "cmyk.JPEG").write_bytes(buf.getvalue())
    full = _jpeg(colour)
    (tmp_path / "trunc.JPEG").write_bytes(full[: len(full) * 9 // 10])
    (tmp_path / "png.JPEG").write_bytes(cv2.imencode(".png", colour)[1].tobytes())
    for name, expected in [
        ("gray", "grayscale"),
        ("cmyk", "cmyk"),
        ("trunc", "truncated"),
        ("png", "not_jpeg"),
    ]:
        data, w, h, fix = ilsvrc.load_image(tmp_path / f"{name}.JPEG")
        assert fix == expected, name
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape == (24, 32, 3) and (w, h) == (32, 24)
        assert ilsvrc._jpeg_info(data)[2] == 3
    # CMYK converted to colours close to the original (JPEG loss aside).
    cmyk = cv2.imdecode(
        np.frombuffer(ilsvrc.load_image(tmp_path / "cmyk.JPEG")[0], np.uint8), cv2.IMREAD_COLOR
    )
    assert np.abs(cmyk.astype(int) - colour).mean() < 25

    (tmp_path / "garbage.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 300)))
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="garbage.JPEG"):
        ilsvrc.load_image(tmp_path / "garbage.JPEG")
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="missing.JPEG"):
        ilsvrc.load_image(tmp_path / "missing.JPEG")


def test_motion_iou_definition():
    # A 10-px-wide box moving 1 px per frame along x: IoU with the box k frames away is
    # (10 - k) / (10 + k) under the +1 convention (width 10 = x2 - x1 + 1).
    frames = [[(0, (t, 0, t + 9, 9))] for t in range(30)]
    values = ilsvrc.motion_iou(frames)
    expected = np.mean([(10 - k) / (10 + k) for k in range(1, 10)] * 2 + [0.0, 0.0])
    assert values[15][0] == pytest.approx(expected)
    # At the video start only the following frames count.
    assert values[0][0] == pytest.approx(np.mean([max(10 - k, 0) / (10 + k) for k in range(1, 11)]))
    # A lone box has no neighbours: 0, like FGFA's empty entries.
    assert ilsvrc.motion_iou([[(3, (0, 0, 5, 5))]])[0][0] == 0.0


def test_iou_plus1():
    a = np.array([0, 0, 9, 9], float)
    assert ilsvrc.iou_plus1(a, a) == 1.0
    assert ilsvrc.iou_plus1(a, np.array([10, 0, 19, 9], float)) == 0.0
    assert ilsvrc.iou_plus1(a, np.array([5, 0, 14, 9], float)) == pytest.approx(50 / 150)


def test_det_listing_without_lists(tmp_path):
    base = tmp_path / "Data" / "DET" / "train" / "ILSVRC2013_train" / "n01662784"
    base.mkdir(parents=True)
    (base / "n01662784_2.JPEG").write_bytes(b"")
    (base / "n01662784_1.JPEG").write_bytes(b"")
    assert ilsvrc.list_det_images(tmp_path) == [
        "train/ILSVRC2013_train/n01662784/n01662784_1",
        "train/ILSVRC2013_train/n01662784/n01662784_2",
    ]
    assert ilsvrc.list_det_images(pathlib.Path(tmp_path / "nothing")) == []
