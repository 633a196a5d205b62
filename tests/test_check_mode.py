"""`main.py --mode=check`: a broken copy of the ILSVRC2015 VID mini set, with one of each problem
the builders know planted in it, is checked without building anything; every planted problem
is listed with its file and what the build does about it (fix, drop, refuse), with counts, and
the exit status says whether the build would refuse the folder. The builders run the same
checks: the refused ones stop a build before anything is written."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from configs import tiny
from input_pipeline import builders, classes, dataset_check, ilsvrc, synthetic
from ssvd_jax import jobs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TURTLE = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00001000"  # 48 frames
LIZARD = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"  # 60 frames
MISSING = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00002000"


def _frame(root, video, i):
    return root / "Data" / "VID" / video / f"{i:06d}.JPEG"


def _xml(root, video, i):
    return root / "Annotations" / "VID" / video / f"{i:06d}.xml"


def _set_box(path: pathlib.Path, **values: int) -> None:
    text = path.read_text()
    for tag, value in values.items():
        start = text.index(f"<{tag}>") + len(f"<{tag}>")
        text = text[:start] + str(value) + text[text.index(f"</{tag}>", start) :]
    path.write_text(text)


def plant(root: pathlib.Path) -> list[tuple[pathlib.Path, str, str]]:
    """One of each problem; [(file, a piece of its problem, action)]."""
    planted = []
    # Video frames.
    _frame(root, TURTLE, 5).write_bytes(b"")
    planted.append((_frame(root, TURTLE, 5), "empty image file (0 bytes)", "refuse"))
    data = _frame(root, TURTLE, 10).read_bytes()
    _frame(root, TURTLE, 10).write_bytes(data[: len(data) * 9 // 10])
    planted.append((_frame(root, TURTLE, 10), "truncated JPEG", "fix"))
    gray = cv2.imread(str(_frame(root, TURTLE, 11)), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(_frame(root, TURTLE, 11)), gray)
    planted.append((_frame(root, TURTLE, 11), "grayscale JPEG", "fix"))
    png = cv2.imencode(".png", cv2.imread(str(_frame(root, LIZARD, 20))))[1].tobytes()
    _frame(root, LIZARD, 20).write_bytes(png)
    planted.append((_frame(root, LIZARD, 20), "not a JPEG", "fix"))
    cv2.imwrite(str(_frame(root, TURTLE, 30)), np.zeros((360, 640, 3), np.uint8))
    planted.append((_frame(root, TURTLE, 30).parent, "frames differ in size", "refuse"))
    # Annotations.
    _xml(root, LIZARD, 7).write_text("<annotation><size><width>1280</width></annotation>")
    planted.append((_xml(root, LIZARD, 7), "malformed XML", "refuse"))
    text = _xml(root, LIZARD, 8).read_text()
    start, end = text.index("<size>"), text.index("</size>") + len("</size>")
    _xml(root, LIZARD, 8).write_text(text[:start] + text[end:])
    planted.append((_xml(root, LIZARD, 8), "missing <size>", "refuse"))
    path = _xml(root, TURTLE, 2)
    path.write_text(path.read_text().replace("n01662784", "n00007846"))
    planted.append((path, "n00007846 is not one of the 30 VID classes", "refuse"))
    _xml(root, LIZARD, 9).unlink()
    planted.append((_xml(root, LIZARD, 9), "no XML file: a frame without objects", "fix"))
    _set_box(_xml(root, LIZARD, 12), xmin=2000, xmax=2100)
    planted.append((_xml(root, LIZARD, 12), "lies outside the 1280x720 image", "drop"))
    _set_box(_xml(root, LIZARD, 13), xmin=600, xmax=500)
    planted.append((_xml(root, LIZARD, 13), "has zero or negative size", "drop"))
    _set_box(_xml(root, TURTLE, 4), xmax=1500)
    planted.append((_xml(root, TURTLE, 4), "reaches outside the 1280x720 image: clipped", "fix"))
    _set_box(_xml(root, LIZARD, 14), width=1000)
    planted.append((_xml(root, LIZARD, 14), "<size> 1000x720, the image is 1280x720", "fix"))
    # A list file naming a video folder that is not there.
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "VID_train_15frames.txt").write_text(
        f"{LIZARD} 1 3 60\n{TURTLE} 1 3 48\n{MISSING} 1 0 10\n"
    )
    planted.append((root / "Data" / "VID" / MISSING, "video folder listed in", "refuse"))
    # DET: an image without XML, and one that cannot be decoded.
    det = root / "Data" / "DET" / "train" / "ILSVRC2014_train_0000"
    det_ann = root / "Annotations" / "DET" / "train" / "ILSVRC2014_train_0000"
    det.mkdir(parents=True)
    det_ann.mkdir(parents=True)
    shutil.copy(_frame(root, LIZARD, 0), det / "ILSVRC2014_train_a.JPEG")
    planted.append((det_ann / "ILSVRC2014_train_a.xml", "no XML file: image left out", "drop"))
    (det / "ILSVRC2014_train_b.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    turtle = classes.WNIDS[classes.NAME_TO_LABEL["turtle"]]
    (det_ann / "ILSVRC2014_train_b.xml").write_text(
        synthetic.annotation_xml(
            "ILSVRC2014_train_0000",
            "ILSVRC2014_train_b",
            "ILSVRC_2014",
            1280,
            720,
            [{"wnid": turtle, "x1": 1, "y1": 2, "x2": 30, "y2": 40}],
            det=True,
        )  # fmt: skip
    )
    planted.append((det / "ILSVRC2014_train_b.JPEG", "corrupt image, cannot be decoded", "drop"))
    return planted


@pytest.fixture(scope="module")
def broken(fixtures_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("check") / "ilsvrc"
    shutil.copytree(fixtures_dir / "ilsvrc2015_vid_mini", root)
    return root, plant(root)


def _config(root):
    config = tiny.get_config()
    config.data.source = "ilsvrc"
    config.data.root = str(root)
    return config


def _assert_lists_every_planted_problem(text: str, planted) -> None:
    lines = text.splitlines()
    for file, problem, action in planted:
        hits = [ln for ln in lines if ln.startswith(f"{file}: ") and problem in ln]
        assert hits, f"{file}: {problem} not listed in:\n{text}"
        assert all(ln.endswith(f"[{action}]") for ln in hits), hits


def test_check_lists_every_planted_problem_with_counts(broken, tmp_path):
    root, planted = broken
    result = jobs.check(_config(root), str(tmp_path / "unused"))
    _assert_lists_every_planted_problem(result.text, planted)
    problems = result.data["problems"]
    refused = sorted({p["file"] for p in problems if p["action"] == "refuse"})
    assert refused == sorted(str(f) for f, _, a in planted if a == "refuse")
    lines = result.text.splitlines()
    assert lines[0] == (
        f"checked {root}: VID train 2 videos, 108 frames; VID val none; DET train 2 images"
    )
    counts = {a: sum(p["action"] == a for p in problems) for a in ("refuse", "drop", "fix")}
    assert lines[-2].startswith(
        f"{len(problems)} problems: {counts['refuse']} refuse, {counts['drop']} drop, "
        f"{counts['fix']} fix ("
    )
    assert counts["refuse"] == 6
    assert lines[-1].startswith("the build refuses this folder: fix the 6 'refuse' problems")
    assert result.exit_code == 1
    assert not (tmp_path / "unused").exists()  # the check writes nothing


def test_the_build_refuses_the_same_folder_before_writing(broken, tmp_path):
    root, planted = broken
    refused = [f for f, _, a in planted if a == "refuse"]
    with pytest.raises(ilsvrc.IlsvrcFormatError) as caught:
        builders.prepare("imagenet_vid", root, tmp_path / "tfds")
    assert pathlib.Path(caught.value.file) in refused
    assert "(and 5 more that the build refuses)" in caught.value.problem
    assert f"--mode=check --config.data.root={root}" in caught.value.problem
    assert not (tmp_path / "tfds" / "imagenet_vid" / "1.0.0").exists()


def test_the_builder_and_the_check_agree_on_a_repairable_folder(fixtures_dir, tmp_path):
    """Only fix/drop problems: the build goes through, and its report counts what the check
    listed."""
    root = tmp_path / "ilsvrc"
    shutil.copytree(fixtures_dir / "ilsvrc2015_vid_mini", root)
    gray = cv2.imread(str(_frame(root, TURTLE, 11)), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(_frame(root, TURTLE, 11)), gray)
    _xml(root, LIZARD, 9).unlink()
    _set_box(_xml(root, LIZARD, 12), xmin=2000, xmax=2100)
    report = dataset_check.check_root(root, datasets=("vid",))
    assert not report.refusals
    assert {(f.kind, f.action) for f in report.findings.items} == {
        ("images_grayscale", "fix"), ("frames_without_xml", "fix"),
        ("boxes_dropped_outside", "drop"),
    }  # fmt: skip
    built = builders.prepare("imagenet_vid", root, tmp_path / "tfds")
    build_report = built.info.metadata["build_report"]["train"]
    for kind, n in report.findings.counts.items():
        assert build_report[kind] == n, kind
    assert build_report["frames"] == 108


def test_main_check_mode_lists_them_and_exits_1(broken):
    root, planted = broken
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode=check", "--config=configs/tiny.py",
         "--config.data.source=ilsvrc", f"--config.data.root={root}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    _assert_lists_every_planted_problem(done.stdout, planted)
    assert "Traceback" not in done.stderr
    clean = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode=check", "--config=configs/tiny.py",
         f"--config.data.root={ROOT / 'tests' / 'fixtures' / 'ilsvrc2015_vid_mini'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert clean.stdout.strip().splitlines()[-2:] == [
        "0 problems: 0 refuse, 0 drop, 0 fix",
        "the build accepts this folder",
    ]
