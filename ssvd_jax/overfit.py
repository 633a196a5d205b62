"""`main.py --mode=overfit`: fit the single-frame detector to a few generated images.

A whole-path sanity check that a user can run anywhere in a minute: generated images with
boxes -> the test-time preprocessing -> the single-frame detector -> anchor matching -> focal +
smooth-L1 loss -> THE train step (the one training runs, on one device) -> the release's
post-processing -> per-box recovery report. It passes when the loss falls by `min_loss_drop` and
every ground-truth box is found by a detection of its class with IoU above `min_iou`. Results
go to `<workdir>/overfit_result.json` (written atomically).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from input_pipeline import toy_images
from input_pipeline.preprocess import preprocess
from ssvd_jax import objective, train
from ssvd_jax.files import atomic_write_json
from ssvd_jax.jobs import JobResult
from ssvd_jax.models import outputs
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables
from ssvd_jax.ops import boxes as box_ops


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


def run(config: Any, workdir: str) -> JobResult:
    """Fit, detect, report; `exit_code` 1 when the check fails."""
    cfg = config.overfit
    size = config.data.image_size
    data = toy_images.make_toy_images(
        cfg.num_images,
        size,
        num_classes=cfg.num_classes,
        max_objects=cfg.max_objects,
        min_size_frac=cfg.min_size_frac,
        max_size_frac=cfg.max_size_frac,
        seed=config.seed,
    )
    mean = config.data.pixel_mean_bgr
    images = np.stack([preprocess(x, image_size=size, mean_bgr=mean) for x in data["images"]])
    # Boxes in the release's inclusive-pixel convention when it is on: a shape covering pixels
    # x0..x1-1 spans x0..x1-1 inclusive.
    legacy = config.loss.legacy_boxes
    gt_boxes = data["boxes"] - (np.array([0, 0, 1, 1], np.float32) if legacy else 0.0)

    model = ssvd_lib.create_model(config.model, variant="single_frame")
    variables = init_variables(model, jnp.asarray(images[:1, None]), seed=config.seed)
    learning_rate = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
    tx = optax.chain(
        optax.clip_by_global_norm(config.optimizer.grad_clip_norm), optax.adam(learning_rate)
    )
    state = train.create_train_state(model, variables, tx)
    anchors = train.all_anchors(outputs.anchors_for(size, config.model.anchors))
    # THE train step, pmap-ed over one device: batches are [1, batch, ...].
    device = jax.local_devices()[:1]
    step_fn = train.make_train_step(
        anchors, objective.create_loss_settings(config), learning_rate, devices=device
    )
    rstate = train.replicate(state, device)
    n = cfg.batch_size
    losses = []
    t0 = time.time()
    for step in range(cfg.steps):
        idx = np.arange(step * n, (step + 1) * n) % cfg.num_images
        batch = {
            "frames": images[None, idx, None],
            "boxes": gt_boxes[None, idx],
            "labels": data["labels"][None, idx],
            "valid": data["valid"][None, idx],
        }
        rstate, metrics = step_fn(rstate, batch)
        metrics = train.unreplicate(metrics)
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"overfit: loss became {loss} at step {step}")
        losses.append(loss)
        if step % 25 == 0 or step == cfg.steps - 1:
            logging.info(
                "step %d/%d loss %.4f (cls %.4f box %.4f, %d fg) %.1fs",
                step + 1, cfg.steps, loss, float(metrics["single/cls"]),
                float(metrics["single/box"]), int(metrics["num_fg"]), time.time() - t0,
            )  # fmt: skip

    final = train.unreplicate(rstate)
    detect_fn = outputs.create_detect(config)
    detections = jax.jit(lambda v, x: detect_fn(model.apply(v, x)["single"]))(
        {"params": final.params, "batch_stats": final.batch_stats}, jnp.asarray(images[:, None])
    )
    rows = recovery_table(
        detections, gt_boxes, data["labels"], data["valid"], config.postprocess.legacy_boxes
    )
    first = float(np.mean(losses[:5]))
    last = float(np.mean(losses[-5:]))
    drop = first / max(last, 1e-12)
    min_iou = min(r["best_iou"] for r in rows)
    passed = drop >= cfg.min_loss_drop and min_iou >= cfg.min_iou
    result = {
        "passed": bool(passed),
        "loss_first": first,
        "loss_last": last,
        "loss_drop": drop,
        "min_iou": min_iou,
        "seconds": time.time() - t0,
        "boxes": rows,
        "losses": losses,
    }
    atomic_write_json(os.path.join(workdir, "overfit_result.json"), result, indent=2)
    return JobResult(text=format_result(result, cfg), data=result, exit_code=0 if passed else 1)


def format_result(result: dict[str, Any], cfg: Any) -> str:
    lines = [
        f"overfit: loss {result['loss_first']:.4f} -> {result['loss_last']:.4f} "
        f"({result['loss_drop']:.1f}x lower) in {cfg.steps} steps, {result['seconds']:.0f}s",
        "| image | class | ground-truth box | best same-class IoU | score |",
        "|---|---|---|---|---|",
    ]
    for r in result["boxes"]:
        lines.append(
            f"| {r['image']} | {r['label']} | {r['box']} | {r['best_iou']:.3f} | {r['score']:.3f} |"
        )
    verdict = "PASSED" if result["passed"] else "FAILED"
    need = f"need loss drop >= {cfg.min_loss_drop}x and every IoU >= {cfg.min_iou}"
    lines.append(f"{verdict}: {need}")
    return "\n".join(lines)
