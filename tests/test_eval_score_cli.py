"""`main.py --mode=score` end to end on the real mini VID annotations: ground-truth boxes as
detections score mAP 1.0 for the classes present, and a malformed file fails naming the line."""

import json
import pathlib
import subprocess
import sys

from ssvd_jax.evaluation import results, score, vid_ap

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, detections, data_root):
    cmd = [
        sys.executable, str(ROOT / "main.py"), "--mode=score", f"--detections={detections}",
        f"--config.data.root={data_root}", "--split=train", f"--workdir={tmp_path / 'out'}",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_score_mode_on_the_mini_fixture(tmp_path, fixtures_dir, rng):
    data_root = fixtures_dir / "ilsvrc2015_vid_mini"
    gt = score.load_ground_truth(data_root, "train")
    dets = vid_ap.Detections(
        frame_id=gt.frame_ids[gt.frame],
        label=gt.label,
        score=rng.permutation(len(gt.label)) / len(gt.label) + 0.001,  # distinct scores
        boxes=gt.boxes,
    )
    path = tmp_path / "det.txt"
    results.write_detections(path, dets, score_decimals=6)
    done = _run(tmp_path, path, data_root)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "score.json").read_text())
    assert summary["mAP"] == 1.0
    assert summary["AP"]["turtle"] == 1.0 and summary["AP"]["lizard"] == 1.0
    assert summary["AP"]["airplane"] is None  # no ground truth: left out of the mean
    assert {"mAP_slow", "mAP_medium", "mAP_fast"} <= set(summary)

    bad = tmp_path / "bad.txt"
    bad.write_text("1 3 0.5 0 0 10 10\n2 3 oops 0 0 10 10\n")
    done = _run(tmp_path, bad, data_root)
    assert done.returncode != 0
    assert "bad.txt:2" in done.stderr and "Traceback" not in done.stderr
