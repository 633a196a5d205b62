"""Orbax checkpoints: one small wrapper around `orbax.checkpoint.CheckpointManager`.

A checkpoint step holds two items: 'state' (any pytree of arrays: model variables, or a whole
train state) and 'meta' (JSON: what the state is, the config, the data position, ...). Orbax
writes each step into a temporary folder and renames it when complete, so an interrupted save
never leaves a half-written step that a restore would pick up. `restore_model` turns a folder
of checkpoints into the model they hold and its variables.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from input_pipeline import flow_data
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
        or jax.ShapeDtypeStruct). Raises FileNotFoundError naming the folder if there is none,
        CheckpointMismatchError naming the first arrays whose shapes differ, and whatever orbax
        raises for a damaged step (`restore_intact` falls back past those)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(self.directory, "no checkpoint in it")
        self._check_shapes(step, template)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def restore_intact(
        self, template: Any, *, damaged_dir: str | None = None, config_json: str | None = None
    ) -> Restored | None:
        """The newest step that restores completely (orbax reads and checks every array, so a
        truncated data file, an empty `_METADATA` or an empty step folder fail), or None when
        there is no step. Each damaged step newer than it is listed in `Restored.damaged` and,
        with `damaged_dir`, moved there (nothing is deleted). When no step restores,
        CheckpointNotFoundError (nothing moved). A step whose arrays do not fit `template`
        raises CheckpointMismatchError (naming the arrays and, given the current
        `config_json`, the config keys that differ from the ones saved with it)."""
        failed: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, meta = self.restore(template, step)
            except CheckpointMismatchError as e:
                raise e.with_config_diff(self._saved_config(step), config_json) from None
            except Exception as e:
                if not is_damage(e):
                    raise
                failed.append((step, _first_line(e)))
                continue
            damaged = [
                Damaged(s, why, self._move_aside(s, damaged_dir) if damaged_dir else None)
                for s, why in failed
            ]
            return Restored(state, meta, step, damaged)
        if failed:
            # No step restores: more likely one cause for all (a bug, an incompatible change)
            # than damage to each; nothing is moved.
            raise CheckpointNotFoundError(
                self.directory,
                f"no checkpoint step restores (step {failed[0][0]}: {failed[0][1]}); if the "
                "files are damaged, move the step folders away to start this phase again",
            )
        return None

    def _check_shapes(self, step: int, template: Any) -> None:
        """CheckpointMismatchError when the saved arrays' shapes differ from `template`'s."""
        state_dir = epath.Path(self.directory) / str(step) / "state"
        saved = ocp.StandardCheckpointHandler().metadata(state_dir).tree
        problems = structure_mismatches(saved, template)
        if problems:
            raise CheckpointMismatchError(self.directory, step, problems)

    def _saved_config(self, step: int) -> str | None:
        try:
            return self.read_meta(step).get("config")
        except Exception as e:
            if not is_damage(e):
                raise
            return None

    def _move_aside(self, step: int, damaged_dir: str) -> str:
        """Move step folder `step` into `damaged_dir` (a fresh name if taken); returns it."""
        os.makedirs(damaged_dir, exist_ok=True)
        target = os.path.join(damaged_dir, str(step))
        k = 1
        while os.path.exists(target):
            target = os.path.join(damaged_dir, f"{step}.{k}")
            k += 1
        os.replace(os.path.join(self.directory, str(step)), target)
        self._manager.reload()
        return target

    def restore_variables(
        self, expected: dict[str, Any], step: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model variables ({'params', 'batch_stats'}) of a training-state or a converted
        checkpoint, checked against `expected` (arrays or ShapeDtypeStructs, e.g. from
        `jax.eval_shape` of the model's init); a training checkpoint's optimizer state is not
        read. Raises CheckpointMismatchError naming the folder and the first mismatching keys."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(self.directory, "no checkpoint in it")
        state_dir = os.path.join(self.directory, str(step), "state")
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(state_dir)).tree
        template = {k: v for k, v in expected.items() if k in saved or jax.tree.leaves(v)}
        problems = structure_mismatches(
            {k: saved.get(k, {}) for k in template},
            template,
        )
        if problems:
            raise CheckpointMismatchError(self.directory, step, problems)
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

    def restore_matching(
        self, expected: dict[str, Any], step: int | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
        """`expected` (nested dicts of arrays: a model's {'params', 'batch_stats'}) with every
        array that the checkpoint holds under the same path and shape restored from it (a
        fine-tuning start from another run's or a converted detector). Returns (variables,
        meta, {'restored': paths, 'shape_differs': '<path>: shape A in the checkpoint, B here'
        lines, 'not_in_checkpoint': paths}); the arrays not restored keep `expected`'s."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(self.directory, "no checkpoint in it")
        state_dir = os.path.join(self.directory, str(step), "state")
        saved = ocp.StandardCheckpointHandler().metadata(epath.Path(state_dir)).tree
        flat_saved = {array_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(saved)}
        report: dict[str, list[str]] = {"restored": [], "shape_differs": [],
                                        "not_in_checkpoint": []}  # fmt: skip

        def prune(tree: Any, prefix: str) -> Any:
            if isinstance(tree, dict):
                out = {k: prune(v, f"{prefix}/{k}" if prefix else str(k)) for k, v in tree.items()}
                return {k: v for k, v in out.items() if v is not None and v != {}}
            got = flat_saved.get(prefix)
            if got is None:
                report["not_in_checkpoint"].append(prefix)
                return None
            if tuple(got.shape) != tuple(np.shape(tree)):
                shapes = f"shape {tuple(got.shape)} in the checkpoint, {tuple(np.shape(tree))} here"
                report["shape_differs"].append(f"{prefix}: {shapes}")
                return None
            report["restored"].append(prefix)
            return ocp.utils.to_shape_dtype_struct(tree)

        template = prune(expected, "")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(item=template, partial_restore=True),
                meta=ocp.args.JsonRestore(),
            ),
        )

        def merge(base: Any, new: Any) -> Any:
            if isinstance(base, dict):
                return {k: merge(v, new.get(k) if isinstance(new, dict) else None)
                        for k, v in base.items()}  # fmt: skip
            return base if new is None else new

        return merge(expected, restored["state"]), restored["meta"], report

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointNotFoundError(self.directory, "no checkpoint in it")
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def array_path(path: tuple[Any, ...]) -> str:
    """'params/head/conv_0/kernel': a tree path by its keys, whatever the containers (orbax
    reads optimizer states' named tuples back as dicts)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def structure_mismatches(saved: Any, expected: Any) -> list[str]:
    """'missing <path>', 'unexpected <path>' and '<path>: shape A in the checkpoint, B in this
    config' lines between two trees of arrays / array metadata (anything with .shape)."""
    flat_saved = {array_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(saved)}
    flat_expected = {array_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    out = [f"missing {k}" for k in flat_expected if k not in flat_saved]
    out += [f"unexpected {k}" for k in flat_saved if k not in flat_expected]
    for k, want in flat_expected.items():
        got = flat_saved.get(k)
        if got is not None and tuple(got.shape) != tuple(want.shape):
            out.append(
                f"{k}: shape {tuple(got.shape)} in the checkpoint, {tuple(want.shape)} in this "
                "config"
            )
    return out


# What a damaged step raises from orbax/tensorstore: a truncated data file (ValueError), an
# empty or cut `_METADATA` (JSONDecodeError, a ValueError), an empty step folder (KeyError:
# no items), missing files (OSError). Anything else is not damage and propagates.
DAMAGE = (ValueError, KeyError, OSError)


def is_damage(error: BaseException) -> bool:
    """Whether `error`, raised by restoring a step, means the step's files are damaged (our
    own UserErrors, e.g. a shape mismatch, are not damage)."""
    return isinstance(error, DAMAGE) and not isinstance(error, UserError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


@dataclasses.dataclass
class Damaged:
    """A checkpoint step that did not restore: why, and where it was moved (None: left)."""

    step: int
    reason: str
    moved_to: str | None


@dataclasses.dataclass
class Restored:
    """`Checkpointer.restore_intact`'s result: the newest intact step and the damaged steps
    newer than it."""

    state: Any
    meta: dict[str, Any]
    step: int
    damaged: list[Damaged]


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint's arrays do not fit the model of the config: a different config (model
    widths, variant, ...) wrote it. The problem names the arrays and both shapes."""

    def __init__(self, folder: str, step: int, problems: list[str], config_keys: str = ""):
        # The model's parameters first: they name what the config changed.
        problems = sorted(problems, key=lambda p: "params/" not in p)
        self.folder, self.step, self.problems = folder, step, problems
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4
                                             else "")  # fmt: skip
        super().__init__(
            folder,
            f"step {step} does not fit this config's model: {shown}. The config differs from "
            f"the one that wrote this checkpoint{config_keys}: run with that config, or use "
            "another workdir",
        )

    def with_config_diff(
        self, saved_json: str | None, current_json: str | None
    ) -> CheckpointMismatchError:
        """The same error, naming the config keys that differ (when both configs are known)."""
        if not saved_json or not current_json:
            return self
        saved, current = _flatten(json.loads(saved_json)), _flatten(json.loads(current_json))
        keys = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        keys = [k for k in keys if k.startswith("model.")] or keys
        if not keys:
            return self
        diff = ", ".join(f"{k} {saved.get(k)!r} there, {current.get(k)!r} now" for k in keys[:3])
        return CheckpointMismatchError(self.folder, self.step, self.problems, f" ({diff})")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
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


class CheckpointNotFoundError(UserError):
    """No checkpoint folder, no step in it, or no step that restores."""


def _newest_intact(ckpt: Checkpointer, restore: Any, config_json: str | None) -> tuple[Any, int]:
    """(restore(step), step) for the newest step that restores; damaged newer steps are logged
    and skipped (left in place: evaluation and the demo only read a workdir)."""
    steps = sorted(ckpt.all_steps(), reverse=True)
    for step in steps:
        try:
            return restore(step), step
        except CheckpointMismatchError as e:
            raise e.with_config_diff(ckpt._saved_config(step), config_json) from None
        except Exception as e:
            if not is_damage(e):
                raise
            logging.warning(
                "%s: step %d is damaged (%s); using the previous step", ckpt.directory, step,
                _first_line(e),
            )  # fmt: skip
    problem = "every checkpoint step is damaged" if steps else "no checkpoint in it"
    raise CheckpointNotFoundError(ckpt.directory, problem)


def restore_model(folder: str, config: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(SSVD module, variables, checkpoint meta with 'checkpoint' and 'step') of the newest
    intact step in `folder`: a training phase's checkpoints (phase 1 holds the single-frame
    variant) or a converted release. The variables are checked against the config's model."""
    if not os.path.isdir(folder):
        raise CheckpointNotFoundError(folder, "no such checkpoint folder")
    ckpt = Checkpointer(folder, async_save=False)

    def restore(step: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        meta = ckpt.read_meta(step)
        variant = checkpoint_variant(meta, config.model.variant, folder)
        model = ssvd_lib.create_model(config.model, variant=variant)
        num_frames = 1 if variant == "single_frame" else 3  # any T: shapes do not depend on it
        frames = ssvd_lib.example_frames(config.data.image_size, num_frames)
        expected = abstract_variables(model, frames)
        variables, meta = ckpt.restore_variables(
            {"params": expected["params"], "batch_stats": expected.get("batch_stats", {})}, step
        )
        return model, variables, meta

    try:
        (model, variables, meta), step = _newest_intact(ckpt, restore, config.to_json())
    finally:
        ckpt.close()
    return model, variables, dict(meta, checkpoint=os.path.abspath(folder), step=step)


def restore_flownet(folder: str, config: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(PWC-Net module, {'params'}, meta with 'checkpoint' and 'step') of the newest intact
    step in `folder`: the pwcnet pretraining phase's checkpoints or a converted PWC-Net."""
    if not os.path.isdir(folder):
        raise CheckpointNotFoundError(folder, "no such checkpoint folder")
    model = ssvd_lib.create_flownet(config.model)
    image = jax.ShapeDtypeStruct((1, *flow_data.crop_shape(config.flow.crop_size), 3), jnp.float32)
    expected = abstract_variables(model, image, image)
    ckpt = Checkpointer(folder, async_save=False)
    try:
        (variables, meta), step = _newest_intact(
            ckpt, lambda step: ckpt.restore_variables({"params": expected["params"]}, step),
            config.to_json(),
        )  # fmt: skip
    finally:
        ckpt.close()
    return model, variables, dict(meta, checkpoint=os.path.abspath(folder), step=step)
