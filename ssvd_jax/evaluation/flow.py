"""End-point error of a PWC-Net on held-out flow pairs (the pwcnet phase's evaluation).

Every pair is centre-cropped to `flow.eval_crop_size` and run through the network; the errors are
those of the training loss (`objective.end_point_errors`), in input pixels: per level (the raw
flow against the ground truth average-pooled to that level's grid), at full resolution (level
2's flow upsampled bilinearly) and, as the yardstick, of zero flow.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

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


def evaluate_flow(
    model: Any,
    variables: Any,
    pairs: Sequence[flow_data.FlowPair],
    *,
    crop_size: int,
    mean_bgr: Sequence[float],
    batch_size: int,
) -> dict[str, float]:
    """Mean errors over `pairs`: 'epe' (full resolution), 'epe_L2'..'epe_L6', 'zero_epe',
    'epe_ratio' (epe / zero_epe) and 'pairs'."""
    if not pairs:
        raise flow_data.FlowDataError("flow.root", "no flow pairs to evaluate")
    sums: dict[str, float] = {}
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
            sums[key] = sums.get(key, 0.0) + float(np.sum(np.asarray(value)[: len(items)]))
    out = {key: value / len(pairs) for key, value in sorted(sums.items())}
    out["epe_ratio"] = out["epe"] / max(out["zero_epe"], 1e-12)
    out["pairs"] = len(pairs)
    return out
