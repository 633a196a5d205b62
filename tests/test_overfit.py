"""The tiny single-frame detector overfits a handful of generated images.

Acceptance for the foundation: the loss falls by more than 10x and, after `detect` (the
release's post-processing), every ground-truth box is recovered by a same-class detection with
IoU > 0.7; the path runs THE train step and the test-time preprocessing. Also checks the run's
JSON report and that generated boxes frame their shapes.
"""

import json

import numpy as np

from configs import tiny
from input_pipeline import toy_images
from ssvd_jax import overfit


def test_toy_boxes_frame_their_shapes():
    data = toy_images.make_toy_images(6, 64, seed=3)
    for i in range(6):
        for j in np.nonzero(data["valid"][i])[0]:
            x1, y1, x2, y2 = data["boxes"][i, j].astype(int)
            colour = np.asarray(toy_images.CLASS_STYLES[data["labels"][i, j]][1], float)
            near = np.linalg.norm(data["images"][i].astype(float) - colour, axis=-1) < 50
            # The shape covers the box centre and touches all four edges of its (tight) box.
            assert near[(y1 + y2) // 2, (x1 + x2) // 2]
            assert near[y1, x1:x2].any() and near[y2 - 1, x1:x2].any()
            assert near[y1:y2, x1].any() and near[y1:y2, x2 - 1].any()
    assert data["valid"].any(axis=1).all()
    again = toy_images.make_toy_images(6, 64, seed=3)
    np.testing.assert_array_equal(again["images"], data["images"])  # deterministic from the seed


def test_tiny_detector_overfits(tmp_path):
    # The config's own seed, as `main.py --mode=overfit` runs it: with seeds drawn at random,
    # 2 of 25 (3 and 944) leave one thin box at IoU 0.69 after 150 steps (the same before and
    # after the redesign, to the digit): a limit of this 150-step fit, not of the path.
    config = tiny.get_config()
    config.overfit.num_images = 4
    config.overfit.steps = 150
    job = overfit.run(config, str(tmp_path))
    result = job.data
    assert job.exit_code == 0 and "PASSED" in job.text
    assert result["loss_drop"] > 10.0, result["loss_drop"]
    assert result["boxes"], "no ground truth was generated"
    assert all(r["best_iou"] > 0.7 for r in result["boxes"]), result["boxes"]
    assert result["passed"]
    saved = json.loads((tmp_path / "overfit_result.json").read_text())
    assert saved["min_iou"] == result["min_iou"]
