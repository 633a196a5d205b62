"""ILSVRC -> COCO-VID conversion (input_pipeline.convert_ilsvrc_to_cocovid) and the synthetic
generator's COCO-VID output (synthetic.generate_cocovid)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from input_pipeline import classes, ilsvrc, synthetic
from input_pipeline import convert_ilsvrc_to_cocovid as convert_lib
from ssvd_jax.errors import UserError
from ssvd_jax.evaluation import score

KEYS = {
    "videos": {"id", "name"},
    "images": {"id", "file_name", "video_id", "frame_id", "width", "height"},
    "annotations": {
        "id", "image_id", "category_id", "instance_id", "bbox", "area", "iscrowd", "occluded",
        "generated",
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def mini(fixtures_dir):
    return fixtures_dir / "ilsvrc2015_vid_mini"


@pytest.fixture(scope="module")
def converted(mini):
    return convert_lib.convert(mini, "train")


def _check_against_xml(dataset: dict, root, split: str) -> None:
    """Every image, box, track and id of `dataset` against the XMLs read with ilsvrc."""
    for kind, keys in KEYS.items():
        assert all(set(row) == keys for row in dataset[kind]), kind
    image_root = root / "Data" / "VID"
    evaluated = score.evaluation_videos(root, split)
    assert [v["name"] for v in dataset["videos"]] == [v.video_id for v, _ in evaluated]
    assert [v["id"] for v in dataset["videos"]] == list(range(1, len(evaluated) + 1))
    # Image ids are the devkit's global frame ids.
    assert [im["id"] for im in dataset["images"]] == np.concatenate(
        [ids for _, ids in evaluated]
    ).tolist()
    images = {im["id"]: im for im in dataset["images"]}
    by_image: dict[int, list[dict]] = {}
    for a in dataset["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    num_annotations = len(dataset["annotations"])
    assert [a["id"] for a in dataset["annotations"]] == list(range(1, num_annotations + 1))
    category_wnid = {c["id"]: c.get("encode_name") for c in dataset["categories"]}
    instance_of: dict[tuple[int, int], int] = {}
    for (video, ids), coco_video in zip(evaluated, dataset["videos"], strict=True):
        for t, (frame_id, ann) in enumerate(
            zip(ids.tolist(), ilsvrc.read_video_annotations(root, video), strict=True)
        ):
            image = images[frame_id]
            assert image["video_id"] == coco_video["id"] and image["frame_id"] == t
            assert image["file_name"] == f"{video.video_id}/{video.frames[t]}.JPEG"
            assert (image_root / image["file_name"]).is_file()
            assert (image["width"], image["height"]) == (ann.width, ann.height)
            rows = by_image.get(frame_id, [])
            assert len(rows) == len(ann.objects)
            for row, obj in zip(rows, ann.objects, strict=True):
                x, y, w, h = row["bbox"]
                assert (x, y, x + w, y + h) == obj.box  # corners recovered exactly
                assert row["area"] == w * h and row["iscrowd"] == 0
                assert (row["occluded"], row["generated"]) == (obj.occluded, obj.generated)
                assert category_wnid[row["category_id"]] in (obj.wnid, None)
                key = (coco_video["id"], obj.track_id)
                assert instance_of.setdefault(key, row["instance_id"]) == row["instance_id"]
    # One instance per (video, track), distinct over the file, numbered 1.. by first appearance.
    firsts = list(dict.fromkeys(a["instance_id"] for a in dataset["annotations"]))
    assert firsts == list(range(1, len(instance_of) + 1))


def test_converts_the_mini_tree_exactly(mini, converted):
    _check_against_xml(converted, mini, "train")
    n = convert_lib.counts(converted)
    assert n == {"videos": 2, "images": 108, "annotations": 108, "categories": 30}
    assert [im["frame_id"] for im in converted["images"][:3]] == [0, 1, 2]
    assert converted["categories"][0] == {"id": 1, "name": "airplane", "encode_name": "n02691156"}
    assert [c["id"] for c in converted["categories"]] == list(range(1, 31))
    assert [c["encode_name"] for c in converted["categories"]] == list(classes.WNIDS)
    # Two videos, one track each: two instances, the lizard (video 1) and the turtle (video 2).
    by_instance = {a["instance_id"]: a["category_id"] for a in converted["annotations"]}
    lizard, turtle = (classes.NAME_TO_LABEL[n] + 1 for n in ("lizard", "turtle"))
    assert by_instance == {1: lizard, 2: turtle}
    assert sum(a["generated"] for a in converted["annotations"]) == 34


def test_present_and_renamed_classes(mini, converted):
    present = convert_lib.convert(mini, "train", classes="present")
    assert [c["name"] for c in present["categories"]] == ["lizard", "turtle"]  # label order
    assert [c["id"] for c in present["categories"]] == [1, 2]
    renamed = convert_lib.convert(mini, "train", classes={"turtle": "shell", "n01674464": "liz"})
    assert renamed["categories"] == [
        {"id": 1, "name": "shell", "encode_name": "n01662784"},
        {"id": 2, "name": "liz", "encode_name": "n01674464"},
    ]
    assert [a["category_id"] for a in renamed["annotations"]] == [
        {"n01662784": 1, "n01674464": 2}[
            next(c["encode_name"] for c in converted["categories"] if c["id"] == a["category_id"])
        ]
        for a in converted["annotations"]
    ]
    with pytest.raises(ilsvrc.IlsvrcFormatError, match="not among the chosen classes"):
        convert_lib.convert(mini, "train", classes=["turtle"])
    with pytest.raises(UserError, match="'sloth' is not a VID class"):
        convert_lib.convert(mini, "train", classes=["sloth"])


def test_cli_writes_the_file_and_prints_counts(mini, converted, tmp_path, capsys):
    out = tmp_path / "sub" / "train.json"
    assert convert_lib.main(["--root", str(mini), "--split", "train", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"wrote {out}: 2 videos, 108 images, 108 annotations, 30 categories"
    assert json.loads(out.read_text()) == converted
    assert [p.name for p in out.parent.iterdir()] == ["train.json"]  # no temporary left
    # A split that is not there: one line, exit status 2.
    assert convert_lib.main(["--root", str(mini), "--split", "val", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Data/VID/val" in err[0]


def test_foreign_wnid_names_the_xml(mini, tmp_path, capsys):
    root = tmp_path / "ILSVRC2015"
    shutil.copytree(mini, root)
    video = ilsvrc.list_vid_videos(root, "train")[1]
    xml = video.annotation_path(root, 5)
    xml.write_text(xml.read_text().replace("n01662784", "n00007846"))
    with pytest.raises(ilsvrc.IlsvrcFormatError) as e:
        convert_lib.convert(root, "train")
    assert e.value.file == str(xml) and "'n00007846'" in e.value.problem
    out = tmp_path / "train.json"
    assert convert_lib.main(["--root", str(root), "--split", "train", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {xml}: object class 'n00007846' is not one of the 30 ImageNet VID "
                   "classes"]  # fmt: skip
    assert not out.exists()


def test_synthetic_val_follows_the_official_lists(tmp_path):
    """With ImageSets/ lists (the generator writes FGFA's), ids still are the global frame ids."""
    root = tmp_path / "ILSVRC2015"
    synthetic.generate(
        root, width=64, height=64, num_train_videos=1, num_val_videos=2, frames_per_video=5,
        num_det_images=0, num_classes=3,
    )  # fmt: skip
    assert ilsvrc.find_list_file(root, "VID_val_frames.txt") is not None
    for split in ("train", "val"):
        _check_against_xml(convert_lib.convert(root, split), root, split)


@pytest.fixture(scope="module")
def cocovid(tmp_path_factory):
    out = tmp_path_factory.mktemp("cocovid") / "synthetic"
    synthetic.main(
        [
            "--out", str(out), "--format", "cocovid", "--class-names", "drone,kite,buoy",
            "--classes", "3", "--size", "64", "--train-videos", "2", "--val-videos", "2",
            "--frames", "6", "--seed", "3",
        ]
    )  # fmt: skip
    return out


def test_generator_cocovid_layout(cocovid):
    images = cocovid / "images"
    assert sorted(p.name for p in cocovid.iterdir()) == ["annotations", "images"]
    assert sorted(p.name for p in (cocovid / "annotations").iterdir()) == [
        "train.json",
        "val.json",
    ]
    assert sorted(p.name for p in images.iterdir()) == ["synthetic_manifest.json", "train", "val"]
    assert not list(cocovid.parent.glob(".*"))  # the temporary folder is gone
    manifest = json.loads((images / "synthetic_manifest.json").read_text())
    assert manifest["det_images"] == [] and len(manifest["labels"]) == 3
    names = []
    for split in ("train", "val"):
        dataset = json.loads((cocovid / "annotations" / f"{split}.json").read_text())
        assert dataset["categories"] == [
            {"id": 1, "name": "drone"}, {"id": 2, "name": "kite"}, {"id": 3, "name": "buoy"}
        ]  # fmt: skip
        assert len(dataset["videos"]) == 2 and len(dataset["images"]) == 12
        assert [im["id"] for im in dataset["images"]] == list(range(1, 13))
        for image in dataset["images"]:
            assert (images / image["file_name"]).is_file()
            assert (image["width"], image["height"]) == (64, 64)
        assert dataset["annotations"]
        assert {a["category_id"] for a in dataset["annotations"]} <= {1, 2, 3}
        for a in dataset["annotations"]:
            x, y, w, h = a["bbox"]
            assert 0 <= x <= x + w <= 63 and 0 <= y <= y + h <= 63
        names += [v["name"] for v in dataset["videos"]]
    # The manifest's video keys are the COCO video names: per-frame deteriorations are found.
    assert sorted(manifest["videos"]) == sorted(names)
    for name in names:
        assert len(manifest["videos"][name]["deteriorations"]) == 6


def test_generator_cocovid_categories_follow_the_labels(tmp_path):
    small = dict(width=64, height=64, num_train_videos=1, num_val_videos=1, frames_per_video=4)
    manifest = synthetic.generate_cocovid(tmp_path / "a", num_classes=2, seed=1, **small)
    dataset = json.loads((tmp_path / "a/annotations/train.json").read_text())
    labels = manifest["labels"]
    assert dataset["categories"] == [
        {"id": i, "name": classes.CLASS_NAMES[label]} for i, label in enumerate(labels, 1)
    ]
    # Each box's category is its XML class: regenerate the ILSVRC tree with the same seed.
    ilsvrc_root = tmp_path / "ilsvrc"
    synthetic.generate(ilsvrc_root, num_classes=2, seed=1, num_det_images=0, **small)
    reference = convert_lib.convert(
        ilsvrc_root, "train", classes=[classes.WNIDS[x] for x in labels]
    )
    assert dataset["annotations"] == reference["annotations"]
    with pytest.raises(ValueError, match="2 names for num_classes=3"):
        synthetic.generate_cocovid(tmp_path / "b", class_names=["a", "b"], num_classes=3, **small)
    with pytest.raises(ValueError, match="no DET images"):
        synthetic.generate_cocovid(tmp_path / "b", num_det_images=4, **small)
    assert not (tmp_path / "b").exists()
    with pytest.raises(UserError, match="not an empty folder"):
        synthetic.generate_cocovid(tmp_path / "a", **small)
