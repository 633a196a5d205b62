"""Orbax checkpoints: one small wrapper around `orbax.checkpoint.CheckpointManager`.

A checkpoint step holds two items: 'state' (any pytree of arrays: model variables, or a whole
train state) and 'meta' (JSON: what the state is, the config, the data position, ...). Orbax
writes each step into a temporary folder and renames it when complete, so an interrupted save
never leaves a half-written step that a restore would pick up. `restore_model` turns a folder
of checkpoints into the model they hold and its variables.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from ssvd_jax.errors import UserError
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import abstract_variables


class Checkpointer:
    """Save/restore numbered steps under `directory` (created if needed)."""

    def __init__(
        self,
        directory: str,
        *,
        max_to_keep: int | None = 3,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep,
                save_interval_steps=save_interval_steps,
                enable_async_checkpointing=async_save,
                create=True,
            ),
            item_names=("state", "meta"),
        )

    def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Start saving `state` and `meta` as `step` (async unless disabled); returns whether a
        save was started (False when `save_interval_steps` skips this step)."""
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore `step` (default: the latest) into the structure/dtypes of `template` (arrays
        or jax.ShapeDtypeStruct). Raises FileNotFoundError naming the folder if there is none."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def restore_variables(
        self, expected: dict[str, Any], step: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model variables ({'params', 'batch_stats'}) of a training-state or a converted
        checkpoint, checked against `expected` (arrays or ShapeDtypeStructs, e.g. from
        `jax.eval_shape` of the model's init); a training checkpoint's optimizer state is not
        read. Raises ValueError naming the folder and the first mismatching keys."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        state_dir = os.path.join(self.directory, str(step), "state")
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(state_dir)).tree
        template = {k: v for k, v in expected.items() if k in saved or jax.tree.leaves(v)}
        problems = structure_mismatches(
            {k: saved.get(k, {}) for k in template},
            template,
        )
        if problems:
            raise UserError(
                self.directory,
                f"step {step} does not hold this model's variables: "
                + "; ".join(problems[:6])
                + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""),
            )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=jax.tree.map(ocp.utils.to_shape_dtype_struct, template),
                    partial_restore=True,
                ),
                meta=ocp.args.JsonRestore(),
            ),
        )
        variables = {k: restored["state"].get(k, v) for k, v in expected.items()}
        return variables, restored["meta"]

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def structure_mismatches(saved: Any, expected: Any) -> list[str]:
    """'missing <key>', 'unexpected <key>' and '<key>: shape A, expected B' lines between two
    trees of arrays / array metadata (anything with .shape and .dtype)."""
    flat_saved = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(saved)}
    flat_expected = {
        jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(expected)
    }
    out = [f"missing {k}" for k in flat_expected if k not in flat_saved]
    out += [f"unexpected {k}" for k in flat_saved if k not in flat_expected]
    for k, want in flat_expected.items():
        got = flat_saved.get(k)
        if got is not None and tuple(got.shape) != tuple(want.shape):
            out.append(f"{k}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    return out


class CheckpointKindError(UserError, ValueError):
    """The checkpoint holds no detector (e.g. a converted PWC-Net or ResNet)."""


def checkpoint_variant(meta: dict[str, Any], config_variant: str, folder: str) -> str:
    """The SSVD variant a checkpoint holds: phase 1's single-frame detector, else the config's
    model (a phase-2 training run or a converted release checkpoint)."""
    kind = meta.get("phase") or meta.get("kind")
    if kind == "phase1":
        return "single_frame"
    if kind in ("phase2", "ssvd"):
        return config_variant
    raise CheckpointKindError(
        folder,
        f"a {kind!r} checkpoint holds no detector; evaluate a training phase's checkpoints or a "
        "converted release (--checkpoint_kind=ssvd)",
    )


def restore_model(folder: str, config: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(SSVD module, variables, checkpoint meta with 'checkpoint' and 'step') of the latest step
    in `folder`: a training phase's checkpoints (phase 1 holds the single-frame variant) or a
    converted release. The variables are checked against the config's model."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    ckpt = Checkpointer(folder, async_save=False)
    try:
        meta = ckpt.read_meta()
        variant = checkpoint_variant(meta, config.model.variant, folder)
        model = ssvd_lib.create_model(config.model, variant=variant)
        num_frames = 1 if variant == "single_frame" else 3  # any T: shapes do not depend on it
        frames = ssvd_lib.example_frames(config.data.image_size, num_frames)
        expected = abstract_variables(model, frames)
        step = ckpt.latest_step()
        variables, meta = ckpt.restore_variables(
            {"params": expected["params"], "batch_stats": expected.get("batch_stats", {})}, step
        )
    finally:
        ckpt.close()
    return model, variables, dict(meta, checkpoint=os.path.abspath(folder), step=step)


def restore_flownet(folder: str, config: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(PWC-Net module, {'params'}, meta with 'checkpoint' and 'step') of the latest step in
    `folder`: the pwcnet pretraining phase's checkpoints or a converted PWC-Net."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    model = ssvd_lib.create_flownet(config.model)
    size = config.flow.crop_size
    image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    expected = abstract_variables(model, image, image)
    ckpt = Checkpointer(folder, async_save=False)
    try:
        step = ckpt.latest_step()
        variables, meta = ckpt.restore_variables({"params": expected["params"]}, step)
    finally:
        ckpt.close()
    return model, variables, dict(meta, checkpoint=os.path.abspath(folder), step=step)
