"""End-point error of a PWC-Net on held-out flow pairs (the pwcnet phase's evaluation).

Every pair is centre-cropped to `flow.eval_crop_size` and run through the network; the errors are
those of the training loss (`objective.end_point_errors`), in input pixels: per level (the raw
flow against the ground truth average-pooled to that level's grid), at full resolution (level
2's flow upsampled bilinearly) and, as yardsticks, of zero flow and of a classical dense flow
(OpenCV's DIS, medium preset, on the grey full-resolution crops: no learning, so it shows what
the pairs allow). Optional groups of pairs (e.g. kinds of scene) get the same means apart.

`translation_response` asks the network the simplest question a flow network answers: a frame
against itself moved by a known number of pixels. A network that matches reads the translation
at its size (gain 1) and a frame against itself as still; one that has learnt a prior of the
first image instead of matching (gain near 0) is visible here at once, whatever the pairs' EPE.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import flow_data
from ssvd_jax import objective
from ssvd_jax.models.pwcnet import RAW_FLOW_UNIT


@functools.partial(jax.jit, static_argnums=0)
def _errors(model: Any, variables: Any, image1, image2, flow):
    """Per pair the errors against `flow`, and 'finest': PWC-Net's finest output (level 2,
    P3) in input pixels [N, H/8, W/8, 2] (one program for `translation_response` too)."""
    out = model.apply(variables, image1, image2)
    errors = objective.end_point_errors(out["raw"], flow, RAW_FLOW_UNIT)
    result = {
        f"epe_{k}" if k != "full" else "epe": jnp.mean(v, axis=(1, 2)) for k, v in errors.items()
    }
    result["zero_epe"] = jnp.mean(jnp.linalg.norm(flow, axis=-1), axis=(1, 2))
    result["finest"] = out["P3"] * (image1.shape[1] / out["P3"].shape[1])
    return result


def translation_response(
    model: Any,
    variables: Any,
    images_NxHxWx3: np.ndarray,
    *,
    shift: int,
    batch_size: int,
) -> dict[str, float]:
    """How the network reads known translations of its own inputs.

    Each (normalised) image against itself moved by `shift` pixels right, down, left and up:
    'translation_gain' is the mean over images and directions of the predicted flow projected
    on the true one, over the true length (1: read at its size; 0: not seen), measured on the
    interior cells of the finest output (borders, where the reflection is not a translation,
    left out); 'translation_error' the mean distance of the predicted interior flow from the
    true one (px). 'self_flow' is the mean length of the flow of each image against itself
    (0 for a network that matches). 'translation_images': how many images."""
    images = np.asarray(images_NxHxWx3, np.float32)
    if not len(images) or shift <= 0:
        raise ValueError(f"translation_response needs images and a shift > 0, got {shift}")
    directions = ((shift, 0), (0, shift), (-shift, 0), (0, -shift))
    pairs = [(im, im, (0, 0)) for im in images]
    pairs += [(im, flow_data.translate(im, dx, dy), (dx, dy))
              for im in images for dx, dy in directions]  # fmt: skip
    flows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pad = batch_size - len(chunk)  # one compiled shape, as `evaluate_flow`
        first = np.stack([p[0] for p in chunk] + [chunk[-1][0]] * pad)
        second = np.stack([p[1] for p in chunk] + [chunk[-1][1]] * pad)
        still = np.zeros((*first.shape[:3], 2), np.float32)  # no errors wanted: any flow
        finest = _errors(model, variables, first, second, still)["finest"]
        flows.append(np.asarray(finest)[: len(chunk)])
    flow = np.concatenate(flows)  # [P, h, w, 2]
    stride = images.shape[1] / flow.shape[1]
    margin = int(np.ceil((2 * shift + 8) / stride))  # cells the reflected border reaches
    if 2 * margin >= min(flow.shape[1:3]):
        margin = 0
    inner = flow[:, margin : flow.shape[1] - margin, margin : flow.shape[2] - margin]
    true = np.float32([p[2] for p in pairs])[:, None, None, :]
    moved = np.arange(len(pairs)) >= len(images)
    projected = np.sum(inner * true, axis=-1) / float(shift) ** 2
    return {
        "translation_gain": float(np.mean(projected[moved])),
        "translation_error": float(np.mean(np.linalg.norm(inner - true, axis=-1)[moved])),
        "self_flow": float(np.mean(np.linalg.norm(flow[~moved], axis=-1))),
        "translation_shift": int(shift),
        "translation_images": len(images),
    }


def classical_flow(image1_bgr: np.ndarray, image2_bgr: np.ndarray) -> np.ndarray:
    """OpenCV's DIS optical flow (medium preset) from image 1 to image 2, [H, W, 2] in pixels;
    the images uint8 BGR [H, W, 3]."""
    grey1, grey2 = (cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in (image1_bgr, image2_bgr))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(grey1, grey2, None)


def _means(per_pair: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    out = {key: float(np.mean(values[rows])) for key, values in sorted(per_pair.items())}
    out["epe_ratio"] = out["epe"] / max(out["zero_epe"], 1e-12)
    out["dis_ratio"] = out["dis_epe"] / max(out["zero_epe"], 1e-12)
    out["pairs"] = int(np.sum(rows))
    return out


def evaluate_flow(
    model: Any,
    variables: Any,
    pairs: Sequence[flow_data.FlowPair],
    *,
    crop_size: int | Sequence[int],
    mean_bgr: Sequence[float],
    batch_size: int,
    groups: Mapping[str, Sequence[bool]] | None = None,
    translation_shift: int = 0,
    translation_images: int = 0,
) -> dict[str, Any]:
    """Mean errors over `pairs`: 'epe' (full resolution), 'epe_L2'..'epe_L6', 'zero_epe',
    'dis_epe' (the classical flow's), 'epe_ratio' and 'dis_ratio' (each over zero_epe) and
    'pairs'; and for each of `groups` (name -> a mask over `pairs`) with any pair, the same
    under that name. With `translation_shift` and `translation_images`, also
    `translation_response` on the first images of that many pairs."""
    if not pairs:
        raise flow_data.FlowDataError("flow.root", "no flow pairs to evaluate")
    per_pair: dict[str, list[np.ndarray]] = {}
    firsts: list[np.ndarray] = []
    mean = np.float32(mean_bgr)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        items = [
            flow_data.pair_arrays(p, crop_size=crop_size, mean_bgr=tuple(mean_bgr), rng=None)
            for p in chunk
        ]
        firsts += [it[0] for it in items][: max(translation_images - len(firsts), 0)]
        pad = batch_size - len(items)  # one compiled shape: pad the last batch, drop its rows
        arrays = [np.stack([it[k] for it in items] + [items[-1][k]] * pad) for k in range(3)]
        errors = _errors(model, variables, *arrays)
        del errors["finest"]
        for key, value in errors.items():
            per_pair.setdefault(key, []).append(np.asarray(value, np.float64)[: len(items)])
        dis = []
        for image1, image2, flow in items:
            one, two = (
                np.clip(np.rint(im + mean), 0, 255).astype(np.uint8) for im in (image1, image2)
            )
            dis.append(np.mean(np.linalg.norm(classical_flow(one, two) - flow, axis=-1)))
        per_pair.setdefault("dis_epe", []).append(np.asarray(dis, np.float64))
    values = {key: np.concatenate(chunks) for key, chunks in per_pair.items()}
    out: dict[str, Any] = _means(values, np.ones(len(pairs), bool))
    for name, mask in (groups or {}).items():
        rows = np.asarray(mask, bool).reshape(-1)
        if rows.shape != (len(pairs),):
            raise ValueError(
                f"flow pair group {name!r}: {rows.shape[0]} masks for {len(pairs)} pairs"
            )
        if rows.any():
            out[name] = _means(values, rows)
    if translation_shift and firsts:
        out.update(
            translation_response(
                model, variables, np.stack(firsts), shift=translation_shift,
                batch_size=batch_size,
            )
        )  # fmt: skip
    return out
