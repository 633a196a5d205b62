"""A user's own videos and classes (COCO-VID JSON, issue 15): the reader's checks, scoring
(ground truth as detections, the ILSVRC -> COCO-VID round trip), and the whole path on the tiny
config: check, build, both phases, evaluation by class name and speed, the demo's labels, and a
fine-tuning start from a detector of other classes."""

import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default, tiny
from input_pipeline import cocovid, convert_ilsvrc_to_cocovid, synthetic
from ssvd_jax import errors, jobs, trainer, visualize
from ssvd_jax import train as train_lib
from ssvd_jax.evaluation import results, score, vid_ap

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("drone", "kite", "buoy")  # none of them a VID class


def options(**kw):
    base = dict(checkpoint=None, input=None, output=None, checkpoint_kind=None, detections=None,
                tracks=None, split="val", frame_list=None, seq_nms=False, sweep=None,
                config_path="configs/tiny.py")  # fmt: skip
    return base | kw


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
    """A COCO-VID dataset of 3 non-VID classes from the synthetic generator."""
    out = tmp_path_factory.mktemp("cocovid") / "data"
    synthetic.generate_cocovid(
        out, class_names=NAMES, seed=3, width=64, height=64, num_train_videos=2,
        num_val_videos=2, frames_per_video=8, num_det_images=0, num_classes=3, max_objects=2,
    )  # fmt: skip
    return out


def coco_config(data: pathlib.Path, **data_keys):
    config = tiny.get_config()
    config.data.source = "cocovid"
    config.data.image_root = str(data / "images")
    config.data.train_json = str(data / "annotations" / "train.json")
    config.data.val_json = str(data / "annotations" / "val.json")
    for key, value in data_keys.items():
        config.data[key] = value
    return config


def source(data: pathlib.Path, iou_rule: str = "ilsvrc") -> cocovid.Source:
    return cocovid.Source(str(data / "images"), str(data / "annotations" / "train.json"),
                          str(data / "annotations" / "val.json"), iou_rule=iou_rule)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Reading and checking


def test_reader_gives_videos_classes_and_boxes_of_the_file(dataset):
    data = json.loads((dataset / "annotations" / "val.json").read_text())
    ds = cocovid.load(dataset / "annotations" / "val.json", dataset / "images")
    assert ds.class_names == NAMES
    assert len(ds.videos) == len(data["videos"]) == 2
    assert sum(v.num_frames for v in ds.videos) == len(data["images"])
    by_id = {a["id"]: a for a in data["annotations"]}
    assert sum(len(a.objects) for anns in ds.annotations for a in anns) == len(by_id)
    image_of = {im["id"]: im for im in data["images"]}
    for video, anns in zip(ds.videos, ds.annotations, strict=True):
        frame_ids = [image_of[i]["frame_id"] for i in video.image_ids]
        assert frame_ids == sorted(frame_ids)
        for t, ann in enumerate(anns):
            assert video.image_path(None, t).is_file()
            want = [a for a in data["annotations"] if a["image_id"] == video.image_ids[t]]
            got = [(o.label, o.box, o.track_id) for o in ann.objects]
            assert got == [
                (a["category_id"] - 1, (a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                        a["bbox"][1] + a["bbox"][3]), a["instance_id"])
                for a in want
            ]  # fmt: skip


def broken_copy(dataset: pathlib.Path, tmp_path: pathlib.Path, edit) -> pathlib.Path:
    data = json.loads((dataset / "annotations" / "val.json").read_text())
    edit(data)
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    return path


def _first_annotation(data, **changes):
    data["annotations"][0].update(changes)


@pytest.mark.parametrize(
    "edit, entry, problem",
    [
        (lambda d: _first_annotation(d, category_id=9), "annotations[0]",
         "category_id 9 is not defined in 'categories' (1, 2, 3)"),
        (lambda d: _first_annotation(d, image_id=99999), "annotations[0]",
         "image_id 99999 is not defined in 'images'"),
        (lambda d: _first_annotation(d, bbox=[3, 4, -2, 5]), "annotations[0]",
         "bbox [3, 4, -2, 5] has a negative size"),
        (lambda d: d["images"][1].update(file_name="nowhere/000000.JPEG"), "images[1]",
         "nowhere/000000.JPEG does not exist"),
        (lambda d: d["images"][2].update(video_id=77), "images[2]",
         "video_id 77 is not defined in 'videos'"),
        (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]), "annotations[1]",
         "is also the id of annotations[0]"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_one_line_naming_it(dataset, tmp_path, edit, entry, problem):
    path = broken_copy(dataset, tmp_path, edit)
    with pytest.raises(cocovid.CocoVidFormatError) as info:
        cocovid.load(path, dataset / "images")
    line, status = errors.describe(info.value)
    assert status == 2 and "\n" not in line
    assert line.startswith(f"error: {path}: {entry}")
    assert problem in line


def test_broken_files_are_one_line(dataset, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [], "images": [')
    with pytest.raises(cocovid.CocoVidFormatError, match=r"bad.json: not valid JSON \(line 1"):
        cocovid.load(bad, dataset / "images")
    bad.write_text('{"videos": [], "images": []}')
    with pytest.raises(cocovid.CocoVidFormatError, match="no 'annotations', 'categories'"):
        cocovid.load(bad, dataset / "images")
    with pytest.raises(cocovid.CocoVidFormatError, match="missing.json: no such file"):
        cocovid.load(tmp_path / "missing.json", dataset / "images")


def test_check_mode_lists_every_problem(dataset, tmp_path):
    def edit(d):
        _first_annotation(d, category_id=9)
        d["annotations"][1]["bbox"] = [1, 1, 5, -1]

    path = broken_copy(dataset, tmp_path, edit)
    config = coco_config(dataset, val_json=str(path))
    result = jobs.run_mode("check", config, str(tmp_path / "wd"), options())
    assert result.exit_code == 1
    lines = result.text.splitlines()
    assert any(ln.startswith(f"{path}: annotations[0]") and "category_id 9" in ln
               and ln.endswith("[refuse]") for ln in lines)  # fmt: skip
    assert any(ln.startswith(f"{path}: annotations[1]") and "negative size" in ln for ln in lines)
    assert "2 problems: 2 refuse" in result.text
    assert not (tmp_path / "wd").exists()  # checking writes nothing


def test_training_on_a_bad_file_stops_before_writing(dataset, tmp_path):
    path = broken_copy(dataset, tmp_path, lambda d: _first_annotation(d, image_id=424242))
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config=configs/tiny.py",
         f"--workdir={tmp_path / 'wd'}", "--config.data.source=cocovid",
         f"--config.data.image_root={dataset / 'images'}",
         f"--config.data.train_json={path}", f"--config.data.val_json={path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: annotations[0]") and "image_id 424242" in last
    assert not list((tmp_path / "wd").rglob("*.array_record*"))


# ----------------------------------------------------------------------------------------------
# Scoring


def ground_truth_as_detections(gt: vid_ap.GroundTruth) -> vid_ap.Detections:
    return vid_ap.Detections(gt.frame_ids[gt.frame], gt.label, np.linspace(1, 0.5, len(gt)),
                             gt.boxes)  # fmt: skip


@pytest.mark.parametrize("rule", ["ilsvrc", "iou50"])
def test_ground_truth_written_back_scores_one(dataset, tmp_path, rule):
    src = source(dataset, rule)
    gt = score.load_ground_truth(src, "val")
    assert gt.num_classes == 3 and len(gt) > 0
    dets = ground_truth_as_detections(gt)
    text, coco = tmp_path / "dets.txt", tmp_path / "dets.json"
    results.write_detections(text, dets)
    results.write_coco_detections(coco, dets, score.category_ids(src, "val"))
    for path in (text, coco):
        summary = score.score_detections(path, src, "val")
        assert summary["mAP"] == pytest.approx(1.0, abs=1e-12)
        assert list(summary["AP"]) == list(NAMES)
        assert summary["iou_rule"] == rule
    entries = json.loads(coco.read_text())
    assert {e["category_id"] for e in entries} <= {1, 2, 3}
    assert {e["image_id"] for e in entries} <= set(gt.frame_ids.tolist())


def test_bad_coco_results_name_the_entry(dataset, tmp_path):
    src = source(dataset)
    path = tmp_path / "res.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4],
                                 "score": 0.5}]))  # fmt: skip
    with pytest.raises(errors.UserError) as info:
        score.score_detections(path, src, "val")
    assert info.value.file.endswith("res.json: [0]") and "category_id 7" in info.value.problem


def test_ilsvrc_to_cocovid_round_trip_scores_the_same(fixtures_dir, tmp_path, rng):
    """The mini fixture scored as ILSVRC and as its COCO-VID conversion: the same mAP (1e-9),
    overall and by speed, for the ground truth and for jittered, re-labelled detections."""
    root = fixtures_dir / "ilsvrc2015_vid_mini"
    split = "train"
    coco_json = tmp_path / "train.json"
    convert_ilsvrc_to_cocovid.write(convert_ilsvrc_to_cocovid.convert(root, split), coco_json)
    src = cocovid.Source(str(root / "Data" / "VID"), str(coco_json))
    gt = score.load_ground_truth(root, split)
    dets = ground_truth_as_detections(gt)
    n = len(dets)
    jitter = rng.normal(0, 4, size=(n, 4))
    noisy = vid_ap.Detections(
        dets.frame_id, np.where(rng.random(n) < 0.2, rng.integers(0, 30, n), dets.label),
        rng.random(n), dets.boxes + jitter,
    )  # fmt: skip
    both = vid_ap.Detections.concatenate([dets, noisy])
    text = tmp_path / "dets.txt"
    results.write_detections(text, both)
    as_ilsvrc = score.score_detections(text, root, split)
    as_coco = score.score_detections(text, src, split)
    for key in ("mAP", "mAP_slow", "mAP_medium", "mAP_fast"):
        a, b = as_ilsvrc[key], as_coco[key]
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9, (key, a, b)
    assert 0.0 < as_ilsvrc["mAP"] < 1.0
    coco = tmp_path / "dets.json"
    ids = score.category_ids(src, split)
    results.write_coco_detections(coco, results.read_detections(text), ids)
    assert abs(score.score_detections(coco, src, split)["mAP"] - as_ilsvrc["mAP"]) <= 1e-9


# ----------------------------------------------------------------------------------------------
# The whole path


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cocovid_run")
    config = coco_config(dataset)
    config.eval.iou_rule = "iou50"
    config.eval.demo = True
    result = jobs.run_mode("train", config, str(workdir), options())
    return config, workdir, result


def test_both_phases_train_and_evaluate_by_class_name_and_speed(trained):
    config, workdir, result = trained
    assert config.model.num_classes == 3 and tuple(config.data.class_names) == NAMES
    summary = json.loads((workdir / "summary.json").read_text())
    for phase in ("phase1", "phase2"):
        ev = json.loads((workdir / "eval" / phase / "summary_VID_val.json").read_text())
        assert list(ev["AP"]) == list(NAMES)
        assert ev["iou_rule"] == "iou50"
        for bucket in ("slow", "medium", "fast"):
            assert f"mAP_{bucket}" in ev and list(ev[f"AP_{bucket}"]) == list(NAMES)
        assert np.isfinite(ev["mAP"])
        coco = json.loads((workdir / "eval" / phase / "det_VID_val.json").read_text())
        assert all(set(e) == {"image_id", "category_id", "bbox", "score"} for e in coco)
        assert {e["category_id"] for e in coco} <= {1, 2, 3}
    assert "phase2" in json.dumps(summary)
    table = (workdir / "eval" / "results_val.md").read_text()
    assert "IoU >= 0.5" in table and all(name in table for name in NAMES)
    # the data came from the video frames alone: no DET dataset was built
    assert not (workdir / "data" / "tfds" / "imagenet_det_vid30").exists()
    assert (workdir / "data" / "tfds" / "cocovid").is_dir()


def test_demo_draws_the_dataset_class_names(trained, tmp_path, monkeypatch):
    config, workdir, _ = trained
    drawn = []
    original = visualize.draw_detections

    def spy(image, dets, class_names, *args, **kwargs):
        drawn.append(tuple(class_names))
        return original(image, dets, class_names, *args, **kwargs)

    monkeypatch.setattr(visualize, "draw_detections", spy)
    frames = pathlib.Path(config.data.image_root)
    video = cocovid.load(config.data.val_json, frames).videos[0]
    out = tmp_path / "demo.mp4"
    result = jobs.run_mode("demo", copy.deepcopy(config), str(workdir),
                           options(input=str(video.image_path(None, 0).parent),
                                   output=str(out)))  # fmt: skip
    assert out.is_file() and result.data["frames"] == video.num_frames
    assert drawn and set(drawn) == {NAMES}


def test_fine_tuning_to_other_classes_starts_only_the_class_layers_afresh(trained, tmp_path):
    """Phase 1 of a 30-class (VID) config from the 3-class run's phase-1 checkpoint: every
    array is the checkpoint's except the class subnet's last layer."""
    _, workdir, _ = trained
    folder = str(workdir / "phase1" / "checkpoints")
    config = tiny.get_config()
    config.train.init_checkpoint = folder
    state, _ = train_lib.create_state(config, "phase1")
    fresh = train_lib.state_dict(state)
    variables = {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
    started, report = trainer.phase_variables(config, str(tmp_path), "phase1", variables)
    assert report["head"].startswith("init_checkpoint except cls_logits")
    from ssvd_jax.checkpoint import restore_model

    three = coco_config(pathlib.Path(os.path.dirname(trained[0].data.image_root)))
    three.model.num_classes = 3
    _, saved, _ = restore_model(folder, three)
    flat_new = dict(jax.tree_util.tree_leaves_with_path(started["params"]))
    flat_saved = dict(jax.tree_util.tree_leaves_with_path(saved["params"]))
    differ = [jax.tree_util.keystr(k) for k, v in flat_new.items()
              if v.shape != flat_saved[k].shape
              or not np.array_equal(v, flat_saved[k])]  # fmt: skip
    assert differ and all("cls_logits" in k for k in differ), differ
    assert flat_new[next(k for k in flat_new if "cls_logits" in jax.tree_util.keystr(k)
                         and "kernel" in jax.tree_util.keystr(k))].shape[-1] == 9 * 30  # fmt: skip


def test_converting_the_release_needs_its_classes(dataset, tmp_path):
    config = coco_config(dataset)
    config.data.class_names = NAMES
    config.model.num_classes = 3
    weights = tmp_path / "release.pth"
    weights.write_bytes(b"not read")
    from ssvd_jax import convert as convert_lib

    with pytest.raises(errors.UserError, match="detects the 30 ImageNet VID classes"):
        convert_lib.convert_file(str(weights), "ssvd", config)
    assert default.get_config().model.num_classes == 30


def test_copy_of_images_elsewhere_is_refused_as_another_source(dataset, trained, tmp_path):
    """A built dataset is reused only for the same files: the JSON changed -> refused, naming
    the folder to remove."""
    config, workdir, _ = trained
    moved = tmp_path / "val.json"
    shutil.copy(config.data.val_json, moved)
    data = json.loads(moved.read_text())
    data["annotations"] = data["annotations"][:-1]
    moved.write_text(json.dumps(data))
    other = copy.deepcopy(config)
    other.data.val_json = str(moved)
    from input_pipeline import train_data

    with pytest.raises(errors.UserError, match="COCO-VID files val differ"):
        train_data.prepare(other, str(workdir))
