"""End-point error of a PWC-Net on held-out flow pairs (the pwcnet phase's evaluation).

Every pair is centre-cropped to `flow.eval_crop_size` and run through the network; the errors are
those of the training loss (`objective.end_point_errors`), in input pixels: per level (the raw
flow against the ground truth average-pooled to that level's grid), at full resolution (level
2's flow upsampled bilinearly) and, as yardsticks, of zero flow and of a classical dense flow
(OpenCV's DIS, medium preset, on the grey full-resolution crops: no learning, so it shows what
the pairs allow). Optional groups of pairs (the synthetic manifest's clean and deteriorated
pairs) get the same means: a whole-frame occlusion, defocus or flash leaves flow that no image
evidence shows, and the EPE over all pairs mixes the two.
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
    raw = model.apply(variables, image1, image2)["raw"]
    errors = objective.end_point_errors(raw, flow, RAW_FLOW_UNIT)
    out = {
        f"epe_{k}" if k != "full" else "epe": jnp.mean(v, axis=(1, 2)) for k, v in errors.items()
    }
    out["zero_epe"] = jnp.mean(jnp.linalg.norm(flow, axis=-1), axis=(1, 2))
    return out


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
) -> dict[str, Any]:
    """Mean errors over `pairs`: 'epe' (full resolution), 'epe_L2'..'epe_L6', 'zero_epe',
    'dis_epe' (the classical flow's), 'epe_ratio' and 'dis_ratio' (each over zero_epe) and
    'pairs'; and for each of `groups` (name -> a mask over `pairs`) with any pair, the same
    under that name."""
    if not pairs:
        raise flow_data.FlowDataError("flow.root", "no flow pairs to evaluate")
    per_pair: dict[str, list[np.ndarray]] = {}
    mean = np.float32(mean_bgr)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        items = [
            flow_data.pair_arrays(p, crop_size=crop_size, mean_bgr=tuple(mean_bgr), rng=None)
            for p in chunk
        ]
        pad = batch_size - len(items)  # one compiled shape: pad the last batch, drop its rows
        arrays = [np.stack([it[k] for it in items] + [items[-1][k]] * pad) for k in range(3)]
        errors = _errors(model, variables, *arrays)
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
    return out
