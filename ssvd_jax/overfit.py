"""`main.py --mode=overfit`: fit the single-frame detector to a few generated images.

A whole-path sanity check that a user can run anywhere in a minute: generated images with
boxes -> release normalisation -> detector -> anchor matching -> focal + smooth-L1 loss ->
optimizer steps -> the release's post-processing -> per-box recovery report. It passes when the
loss falls by `min_loss_drop` and every ground-truth box is found by a detection of its class
with IoU above `min_iou`. Results go to `<workdir>/overfit_result.json` (written atomically).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from input_pipeline import toy_images
from ssvd_jax import train
from ssvd_jax.models import detector as detector_lib
from ssvd_jax.models.params import init_variables
from ssvd_jax.ops import boxes as box_ops


def normalize_bgr(images_uint8: np.ndarray, mean_bgr) -> np.ndarray:
    """The release's input normalisation: BGR pixels minus the mean, no scaling."""
    return images_uint8.astype(np.float32) - np.asarray(mean_bgr, np.float32)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def recovery_table(
    detections, gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_valid: np.ndarray, legacy: bool
) -> list[dict[str, Any]]:
    """For every ground-truth box: the best IoU of a same-class valid detection, and its score."""
    rows = []
    det_boxes = np.asarray(detections.boxes)
    det_labels = np.asarray(detections.labels)
    det_scores = np.asarray(detections.scores)
    det_valid = np.asarray(detections.valid)
    for i in range(gt_boxes.shape[0]):
        for j in np.nonzero(gt_valid[i])[0]:
            same = det_valid[i] & (det_labels[i] == gt_labels[i, j])
            best_iou, best_score = 0.0, 0.0
            if same.any():
                ious = np.asarray(
                    box_ops.iou(jnp.asarray(gt_boxes[i, j][None]), det_boxes[i][same], legacy)
                )[0]
                k = int(np.argmax(ious))
                best_iou, best_score = float(ious[k]), float(det_scores[i][same][k])
            rows.append(
                {
                    "image": i,
                    "label": int(gt_labels[i, j]),
                    "box": [round(float(v), 1) for v in gt_boxes[i, j]],
                    "best_iou": round(best_iou, 4),
                    "score": round(best_score, 4),
                }
            )
    return rows


def run(config: Any, workdir: str) -> dict[str, Any]:
    cfg = config.overfit
    size = config.data.image_size
    data = toy_images.make_toy_images(
        cfg.num_images,
        size,
        num_classes=cfg.num_classes,
        max_objects=3,
        min_size_frac=cfg.min_size_frac,
        max_size_frac=cfg.max_size_frac,
        seed=config.seed,
    )
    images = normalize_bgr(data["images"], config.data.pixel_mean_bgr)
    # Boxes in the release's inclusive-pixel convention when it is on: a shape covering pixels
    # x0..x1-1 spans x0..x1-1 inclusive.
    legacy = config.loss.legacy_boxes
    gt_boxes = data["boxes"] - (np.array([0, 0, 1, 1], np.float32) if legacy else 0.0)

    model = detector_lib.create_single_frame_detector(config.model)
    per_level_anchors = detector_lib.anchors_for(size, config.model.anchors)
    anchors = jnp.asarray(train.all_anchors(per_level_anchors))
    variables = init_variables(model, jnp.asarray(images[:1]), seed=config.seed)
    tx = optax.chain(
        optax.clip_by_global_norm(config.optimizer.grad_clip_norm),
        optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)),
    )
    state = train.create_train_state(model, variables, tx)
    settings = train.loss_settings_from_config(config)
    step_fn = jax.jit(lambda s, b: train.train_step(s, b, anchors, settings), donate_argnums=0)
    n = cfg.batch_size
    losses = []
    t0 = time.time()
    for step in range(cfg.steps):
        idx = np.arange(step * n, (step + 1) * n) % cfg.num_images
        batch = {
            "images": jnp.asarray(images[idx]),
            "boxes": jnp.asarray(gt_boxes[idx]),
            "labels": jnp.asarray(data["labels"][idx]),
            "valid": jnp.asarray(data["valid"][idx]),
        }
        state, metrics = step_fn(state, batch)
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"overfit: loss became {loss} at step {step}")
        losses.append(loss)
        if step % 25 == 0 or step == cfg.steps - 1:
            logging.info(
                "step %d/%d loss %.4f (cls %.4f box %.4f, %d fg) %.1fs",
                step + 1, cfg.steps, loss, float(metrics["single/cls"]),
                float(metrics["single/box"]),
                int(metrics["num_fg"]), time.time() - t0,
            )  # fmt: skip

    post = config.postprocess
    detect_fn = jax.jit(
        lambda v, x: detector_lib.detect(
            model.apply(v, x),
            per_level_anchors,
            size,
            config.model.num_classes,
            score_threshold=post.score_threshold,
            pre_nms_top_n=post.pre_nms_top_n,
            nms_iou=post.nms_iou,
            max_detections=post.max_detections,
            legacy=post.legacy_boxes,
        )
    )
    detections = detect_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, jnp.asarray(images)
    )
    rows = recovery_table(detections, gt_boxes, data["labels"], data["valid"], post.legacy_boxes)
    first = float(np.mean(losses[:5]))
    last = float(np.mean(losses[-5:]))
    drop = first / max(last, 1e-12)
    min_iou = min(r["best_iou"] for r in rows)
    passed = drop >= cfg.min_loss_drop and min_iou >= cfg.min_iou
    print(
        f"\noverfit: loss {first:.4f} -> {last:.4f} ({drop:.1f}x lower) in {cfg.steps} steps, "
        f"{time.time() - t0:.0f}s"
    )
    print("| image | class | ground-truth box | best same-class IoU | score |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['image']} | {r['label']} | {r['box']} | {r['best_iou']:.3f} | {r['score']:.3f} |"
        )
    verdict = "PASSED" if passed else "FAILED"
    print(f"{verdict}: need loss drop >= {cfg.min_loss_drop}x and every IoU >= {cfg.min_iou}")
    result = {
        "passed": bool(passed),
        "loss_first": first,
        "loss_last": last,
        "loss_drop": drop,
        "min_iou": min_iou,
        "boxes": rows,
        "losses": losses,
    }
    write_json_atomic(os.path.join(workdir, "overfit_result.json"), result)
    return result
