"""The online engine's per-frame step as a `jax.export` artifact, for a runner without Flax.

An artifact folder (`--mode=export`) holds:
  init.bin     `init(length) -> state`: the start of a video of `length` frames (int32 scalar).
  step.bin     `step(params, state, image) -> (state, (reference, boxes, scores, labels,
               valid))`: push `image` (one normalised frame [S, S, 3]) unless all `length`
               frames are in, then detect the reference frame that became ready, if one did
               (`reference` is its 0-based index, -1 when none did). At the end of a video the
               same step drains the frames still waiting for their later supports: call it with
               any image (it is ignored, e.g. zeros) until the last frame is detected.
  params.npz   the model's variables as a flat list `p00000`, `p00001`, ... in `meta.json`'s
               'params' order.
  meta.json    what the host needs: input size, pixel mean, the state's and the parameters'
               leaves, the platforms, the format version, and where the weights came from.
Boxes come back in input-image pixels (the S x S square): multiply x by W/S and y by H/S for a
W x H frame, as the engine's host driver does.

The state is `OnlineEngine`'s ring buffers of per-frame features and caches plus three int32
counters [length, pushed, detected], flattened into a list (no pytree registry needed to call
the step). The counters move what `OnlineEngine.run_streams` does on the host for one video
(ring-buffer slots, the support schedule with its clamping, readiness) into the step itself,
with the same integer arithmetic, so a runner's loop is just "step until the last frame is
out". The step around the counters is the engine's own `pure_step`, so the exported program
computes what `--mode=eval` computes.

The parameters are an input, not baked in: the exported program is then the engine's own jit
program (constants would let XLA fold them into different arithmetic), the modules stay small
(the R-101 release's ~200 MB of weights would sit inside each of them otherwise), and the
runner puts the weights on the device once and reuses them every step.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline.classes import CLASS_NAMES
from ssvd_jax import inference
from ssvd_jax.evaluation import results
from ssvd_jax.files import atomic_write_chunks, atomic_write_json
from ssvd_jax.runtime import DEFAULT_XLA_FLAGS

FORMAT_VERSION = 1
FILES = {"init": "init.bin", "step": "step.bin", "params": "params.npz", "meta": "meta.json"}
COUNTERS = ("length", "pushed", "detected")


def schedule_constants(engine: inference.OnlineEngine) -> dict[str, Any]:
    """The numbers of the engine's support schedule: the release's offsets (multiplied by a
    spacing that depends on the video's length) or the paper's fixed offsets."""
    if engine.schedule == "release":
        offsets = np.asarray(inference.RELEASE_OFFSETS)
    else:
        offsets = np.concatenate([[0], inference.paper_offsets(engine.num_supports,
                                                               engine.half_window)])  # fmt: skip
    return {"release": engine.schedule == "release", "offsets": offsets.astype(np.int32),
            "half_window": engine.half_window, "buffer_size": engine.buffer_size}  # fmt: skip


def plan_step(
    counters: jax.Array, *, release: bool, offsets: np.ndarray, half_window: int, buffer_size: int
) -> dict[str, jax.Array]:
    """What `OnlineEngine.run_streams` decides on the host for one video at one step, from the
    counters [length, pushed, detected]: push the next frame while there is one (into slot
    pushed % buffer_size), then detect reference `detected` once its last entry is in
    (`schedules.schedule_entries`' clamped entries, as ring-buffer slots)."""
    length, pushed, detected = counters[0], counters[1], counters[2]
    do_push = pushed < length
    pushed = pushed + do_push.astype(jnp.int32)
    t = jnp.minimum(detected, length - 1)
    if release:  # schedules.release_entries: R = min(L // 2, K), D = 2R // 6
        delta = (2 * jnp.minimum(length // 2, half_window)) // 6
        entries = jnp.clip(t + jnp.asarray(offsets) * delta, 0, length - 1)
    else:  # schedules.paper_entries
        entries = jnp.clip(t + jnp.asarray(offsets), 0, length - 1)
    do_detect = (detected < length) & (jnp.max(entries) < pushed)
    return {
        "do_push": do_push,
        "push_slot": (counters[1] % buffer_size).astype(jnp.int32),
        "entry_slots": (entries % buffer_size).astype(jnp.int32),
        "do_detect": do_detect,
        "reference": jnp.where(do_detect, detected, -1).astype(jnp.int32),
        "counters": jnp.stack([length, pushed, detected + do_detect.astype(jnp.int32)]),
    }


def video_functions(engine: inference.OnlineEngine) -> tuple[Any, Any, dict[str, Any]]:
    """(init(length), step(params, state, image), layout) for one video on `engine`
    (num_videos 1): pure functions of flat lists of arrays, as exported; `layout` names the
    leaves of the parameters and of the state."""
    if engine.num_videos != 1:
        raise ValueError(f"export needs an engine of one video, got {engine.num_videos}")
    params, params_def = jax.tree.flatten(engine.variables)
    buffer_shapes = jax.eval_shape(engine.init_state)
    state_shapes = {"buffer": buffer_shapes,
                    "counters": jax.ShapeDtypeStruct((len(COUNTERS),), jnp.int32)}  # fmt: skip
    state_def = jax.tree.structure(state_shapes)
    constants = schedule_constants(engine)

    def init(length):
        buffer = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), buffer_shapes)
        counters = jnp.stack([jnp.asarray(length, jnp.int32), jnp.int32(0), jnp.int32(0)])
        return jax.tree.leaves({"buffer": buffer, "counters": counters})

    def step(params_flat, state_flat, image_SxSx3):
        variables = jax.tree.unflatten(params_def, params_flat)
        state = jax.tree.unflatten(state_def, state_flat)
        plan = plan_step(state["counters"], **constants)
        buffer, dets = engine.pure_step(
            variables, state["buffer"], image_SxSx3[None].astype(jnp.float32),
            plan["push_slot"][None], plan["do_push"][None], plan["entry_slots"][None],
            plan["do_detect"][None],
        )  # fmt: skip
        d = dets["fused"]
        state = {"buffer": buffer, "counters": plan["counters"]}
        return jax.tree.leaves(state), (plan["reference"], d.boxes[0], d.scores[0], d.labels[0],
                                        d.valid[0])  # fmt: skip

    layout = {
        "params": _leaves(engine.variables),
        "state": _leaves(state_shapes),
        "params_def": params_def,
        "state_shapes": jax.tree.leaves(state_shapes),
        "param_shapes": [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params],
    }
    return init, step, layout


def _leaves(tree: Any) -> list[dict[str, Any]]:
    """[{'name', 'shape', 'dtype'}] of a pytree's leaves in flattening order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        out.append({"name": name, "shape": list(leaf.shape), "dtype": str(leaf.dtype)})
    return out


def lower(fun: Any, args: Sequence[Any], platforms: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """`jax.export` of `fun` at `args` (ShapeDtypeStructs) for `platforms` together; when that
    fails (e.g. a CUDA lowering that needs a GPU's libraries), for each platform alone, keeping
    those that work. Returns (the Exported, {platform: why it was left out})."""
    jitted = jax.jit(fun)
    try:
        return jax.export.export(jitted, platforms=tuple(platforms))(*args), {}
    except Exception:  # one of them cannot be lowered here: find which
        pass
    kept, dropped = [], {}
    for platform in platforms:
        try:
            jax.export.export(jitted, platforms=(platform,))(*args)
            kept.append(platform)
        except Exception as e:
            dropped[platform] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not kept:
        raise RuntimeError(f"no platform of {tuple(platforms)} can be lowered: {dropped}")
    return jax.export.export(jitted, platforms=tuple(kept))(*args), dropped


def export_engine(
    engine: inference.OnlineEngine,
    out_dir: str,
    *,
    pixel_mean_bgr: Sequence[float],
    platforms: Sequence[str],
    source: dict[str, Any],
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Write `engine`'s (num_videos 1) init and step, its parameters and `meta.json` into
    `out_dir`; returns the meta. `source`: where the weights came from (checkpoint, step,
    variant, config variant), copied into the meta."""
    init, step, layout = video_functions(engine)
    s = engine.image_size
    image = jax.ShapeDtypeStruct((s, s, 3), jnp.float32)
    length = jax.ShapeDtypeStruct((), jnp.int32)
    init_exp, dropped = lower(init, (length,), platforms)
    step_exp, dropped_step = lower(step, (layout["param_shapes"], layout["state_shapes"], image),
                                   platforms)  # fmt: skip
    dropped.update(dropped_step)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_chunks(os.path.join(out_dir, FILES["init"]), [bytes(init_exp.serialize())])
    atomic_write_chunks(os.path.join(out_dir, FILES["step"]), [bytes(step_exp.serialize())])
    buffer = io.BytesIO()
    params = jax.tree.leaves(engine.variables)
    np.savez(buffer, **{f"p{i:05d}": np.asarray(p) for i, p in enumerate(params)})
    atomic_write_chunks(os.path.join(out_dir, FILES["params"]), [buffer.getvalue()])
    constants = schedule_constants(engine)
    meta = {
        "format_version": FORMAT_VERSION,
        "files": FILES,
        "image_size": s,
        "pixel_mean_bgr": [float(m) for m in pixel_mean_bgr],
        "schedule": engine.schedule,
        "num_supports": engine.num_supports,
        "half_window": engine.half_window,
        "schedule_offsets": constants["offsets"].tolist(),
        "buffer_size": engine.buffer_size,
        "num_entries": engine.num_entries,
        "cached": engine.cached,
        "max_detections": int(step_exp.out_avals[-1].shape[0]),
        "class_names": list(class_names),
        "score_decimals": results.SCORE_DECIMALS,
        "box_decimals": results.BOX_DECIMALS,
        "platforms": list(step_exp.platforms),
        "platforms_left_out": dropped,
        "jax_version": jax.__version__,
        "xla_flags": xla_cpu_flags(),
        "calling_convention_version": step_exp.calling_convention_version,
        "counters": list(COUNTERS),
        "state": layout["state"],
        "params": layout["params"],
        "source": source,
    }
    atomic_write_json(os.path.join(out_dir, FILES["meta"]), meta, indent=1)
    return meta


def xla_cpu_flags() -> list[str]:
    """Those of the project's XLA:CPU flag defaults (ssvd_jax/runtime.py) that this process
    runs with: the runner applies them too (they change float rounding, slightly)."""
    names = {f.split("=", 1)[0] for f in DEFAULT_XLA_FLAGS}
    return [f for f in os.environ.get("XLA_FLAGS", "").split() if f.split("=", 1)[0] in names]


def artifact_bytes(out_dir: str) -> dict[str, int]:
    """Size of each file of an artifact folder."""
    return {name: os.path.getsize(os.path.join(out_dir, f)) for name, f in FILES.items()}
