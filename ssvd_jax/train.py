"""Training: the detection loss (the paper's Eq. 4), the optimizer and schedule, the pmap-ed
synchronized-SGD step, and `train_and_evaluate(config, workdir)`, the two-phase driver.

Eq. 4 sums, per stream, a sigmoid focal loss over all non-ignored anchors and a smooth-L1 box
loss over foreground anchors, both normalised by the number of foreground anchors. Targets come
from RetinaNet matching of the reference frame's boxes to the anchors (`ssvd_jax.ops.matching`).

Synchronized SGD (`pmap_train_step`): every device computes its loss with the *global* number of
foreground anchors, normalizer = max(1, psum(num_fg)) / num_devices, so that the mean over devices
of the per-device gradients (`lax.pmean`) is exactly the gradient of one device holding the whole
global batch. Metrics leave the step as global values (pmean of the per-device shares of the
global loss, psum of the foreground counts).

Phases (paper Sec. III-D, Algorithm 1): phase 1 trains the single-frame detector on still images
(DET + VID); phase 2 builds SSVD, initialises the body, both FPNs and both streams' heads from
phase 1 (and the PWC-Net from a converted checkpoint when configured) and trains the whole model
on VID clips. Each phase has its own folder `<workdir>/<phase>/` holding orbax checkpoints,
`losses.jsonl` (one line per step) and `summary.json`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax import lax

from ssvd_jax import metric_logging
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import Checkpointer
from ssvd_jax.evaluation import results
from ssvd_jax.models import detector as detector_lib
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables
from ssvd_jax.ops import losses, matching

Array = jax.Array


@flax.struct.dataclass
class LossSettings:
    """Loss hyper-parameters (static under jit)."""

    num_classes: int = flax.struct.field(pytree_node=False)
    fg_iou: float = flax.struct.field(pytree_node=False, default=0.5)
    bg_iou: float = flax.struct.field(pytree_node=False, default=0.4)
    allow_low_quality: bool = flax.struct.field(pytree_node=False, default=True)
    focal_alpha: float = flax.struct.field(pytree_node=False, default=0.25)
    focal_gamma: float = flax.struct.field(pytree_node=False, default=2.0)
    smooth_l1_beta: float = flax.struct.field(pytree_node=False, default=0.11)
    box_weights: tuple[float, ...] = flax.struct.field(
        pytree_node=False, default=(1.0, 1.0, 1.0, 1.0)
    )
    legacy: bool = flax.struct.field(pytree_node=False, default=True)


def loss_settings_from_config(config: Any) -> LossSettings:
    loss = config.loss
    return LossSettings(
        num_classes=config.model.num_classes,
        fg_iou=loss.fg_iou,
        bg_iou=loss.bg_iou,
        allow_low_quality=loss.allow_low_quality,
        focal_alpha=loss.focal_alpha,
        focal_gamma=loss.focal_gamma,
        smooth_l1_beta=loss.smooth_l1_beta,
        box_weights=tuple(loss.box_weights),
        legacy=loss.legacy_boxes,
    )


def anchor_targets(
    anchors_Ax4: Array,
    gt_boxes_BxGx4: Array,
    gt_labels_BxG: Array,
    gt_valid_BxG: Array,
    settings: LossSettings,
) -> matching.AnchorTargets:
    """RetinaNet targets of a batch (computed once, shared by every stream's loss)."""
    return jax.vmap(
        functools.partial(
            matching.build_targets,
            num_classes=settings.num_classes,
            fg_iou=settings.fg_iou,
            bg_iou=settings.bg_iou,
            allow_low_quality=settings.allow_low_quality,
            weights=settings.box_weights,
            legacy=settings.legacy,
        ),
        in_axes=(None, 0, 0, 0),
    )(anchors_Ax4, gt_boxes_BxGx4, gt_labels_BxG, gt_valid_BxG)


def stream_loss(
    outputs: dict[str, dict[str, Array]],
    targets: matching.AnchorTargets,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> dict[str, Array]:
    """Focal + smooth-L1 loss of one stream's raw outputs: {'cls', 'box', 'num_fg'}."""
    logits_per_level, deltas_per_level = detector_lib.flatten_outputs(outputs, settings.num_classes)
    logits_BxAxC = jnp.concatenate(logits_per_level, axis=1).astype(jnp.float32)
    deltas_BxAx4 = jnp.concatenate(deltas_per_level, axis=1).astype(jnp.float32)
    return losses.retinanet_loss(
        logits_BxAxC,
        deltas_BxAx4,
        targets.cls_targets,
        targets.box_targets,
        targets.fg_mask,
        targets.valid_mask,
        alpha=settings.focal_alpha,
        gamma=settings.focal_gamma,
        beta=settings.smooth_l1_beta,
        normalizer=normalizer,
    )


def detection_loss(
    outputs_by_stream: dict[str, dict[str, dict[str, Array]]],
    anchors_Ax4: Array,
    gt_boxes_BxGx4: Array,
    gt_labels_BxG: Array,
    gt_valid_BxG: Array,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4: the sum over streams of focal + smooth-L1 losses against the reference frame's
    boxes. Returns (total, {'<stream>/cls', '<stream>/box', 'num_fg'})."""
    targets = anchor_targets(anchors_Ax4, gt_boxes_BxGx4, gt_labels_BxG, gt_valid_BxG, settings)
    return losses_for_targets(outputs_by_stream, targets, settings, normalizer)


def losses_for_targets(
    outputs_by_stream: dict[str, dict[str, dict[str, Array]]],
    targets: matching.AnchorTargets,
    settings: LossSettings,
    normalizer: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4 from precomputed anchor targets (see `detection_loss`)."""
    total = jnp.zeros((), jnp.float32)
    terms: dict[str, Array] = {}
    for stream, outputs in outputs_by_stream.items():
        t = stream_loss(outputs, targets, settings, normalizer)
        terms[f"{stream}/cls"], terms[f"{stream}/box"] = t["cls"], t["box"]
        terms["num_fg"] = t["num_fg"]
        total = total + t["cls"] + t["box"]
    return total, terms


@flax.struct.dataclass
class TrainState:
    step: Array
    params: Any
    batch_stats: Any  # frozen BN statistics: carried, never updated
    opt_state: Any
    apply_fn: Any = flax.struct.field(pytree_node=False)
    tx: Any = flax.struct.field(pytree_node=False)


def create_train_state(model, variables: dict[str, Any], tx: optax.GradientTransformation):
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )


def batch_loss(
    params: Any,
    batch_stats: Any,
    apply_fn: Any,
    batch: dict[str, Array],
    anchors_Ax4: Array,
    settings: LossSettings,
) -> tuple[Array, dict[str, Array]]:
    """Eq. 4 on a batch, for the single-frame detector or SSVD.

    batch: 'images' [B,H,W,3] normalised reference frames, 'supports' [B,S,H,W,3] (SSVD only),
    'boxes' [B,G,4], 'labels' [B,G] (0-based), 'valid' [B,G].
    """
    variables = {"params": params, "batch_stats": batch_stats}
    if "supports" in batch:
        outputs = apply_fn(variables, batch["images"], batch["supports"])
    else:
        outputs = {"single": apply_fn(variables, batch["images"])}
    return detection_loss(
        outputs, anchors_Ax4, batch["boxes"], batch["labels"], batch["valid"], settings
    )


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    anchors_Ax4: Array,
    settings: LossSettings,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on one device (the pmap-ed step builds on `batch_loss` too)."""
    (loss, terms), grads = jax.value_and_grad(batch_loss, has_aux=True)(
        state.params, state.batch_stats, state.apply_fn, batch, anchors_Ax4, settings
    )
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, loss=loss, grad_norm=optax.global_norm(grads))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def all_anchors(per_level_anchors: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(per_level_anchors), axis=0)


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule


def learning_rate_schedule(phase_schedule: Any) -> optax.Schedule:
    """maskrcnn-benchmark's WarmupMultiStepLR: lr = base * decay^(number of boundaries passed),
    times a linear warmup factor from `warmup_factor` to 1 over `warmup_steps`."""
    base = float(phase_schedule.learning_rate)
    boundaries = jnp.asarray(tuple(phase_schedule.boundaries) or (2**31 - 1,), jnp.int32)
    decay = float(phase_schedule.decay_factor)
    warmup_steps = int(phase_schedule.warmup_steps)
    warmup_factor = float(phase_schedule.warmup_factor)

    def schedule(step: Array) -> Array:
        step = jnp.asarray(step, jnp.int32)
        passed = jnp.sum(step >= boundaries)
        lr = base * decay ** passed.astype(jnp.float32)
        if warmup_steps > 0:
            alpha = jnp.minimum(step.astype(jnp.float32) / warmup_steps, 1.0)
            lr = lr * (warmup_factor * (1.0 - alpha) + alpha)
        return lr

    return schedule


def frozen_prefixes(freeze_at: int) -> tuple[str, ...]:
    """Parameter path prefixes frozen by maskrcnn-benchmark's FREEZE_CONV_BODY_AT: 1 freezes
    the stem, k > 1 the stem and layers 1..k-1; 0 freezes nothing."""
    if freeze_at <= 0:
        return ()
    return ("backbone/stem_",) + tuple(f"backbone/layer{i}_" for i in range(1, freeze_at))


def param_labels(params: Any, frozen: Sequence[str]) -> Any:
    """'frozen' for every parameter whose path starts with one of `frozen`, else 'trainable'."""
    flat = traverse_util.flatten_dict(params, sep="/")
    labels = {k: "frozen" if any(k.startswith(p) for p in frozen) else "trainable" for k in flat}
    return traverse_util.unflatten_dict(labels, sep="/")


def create_optimizer(
    optimizer_config: Any, schedule: optax.Schedule, params: Any, frozen: Sequence[str] = ()
) -> optax.GradientTransformation:
    """SGD with momentum and weight decay on kernels (biases undecayed, as maskrcnn-benchmark's
    WEIGHT_DECAY_BIAS = 0), optional global-norm clipping; frozen parameters get zero updates
    and keep no optimizer state."""
    parts = []
    if optimizer_config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optimizer_config.grad_clip_norm))
    parts += [
        optax.add_decayed_weights(
            optimizer_config.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
        ),
        optax.sgd(schedule, momentum=optimizer_config.momentum),
    ]
    return optax.multi_transform(
        {"trainable": optax.chain(*parts), "frozen": optax.set_to_zero()},
        param_labels(params, frozen),
    )


# ----------------------------------------------------------------------------------------------
# The synchronized-SGD step


def _forward(apply_fn: Any, variables: dict[str, Any], batch: dict[str, Array]) -> dict[str, Any]:
    if "supports" in batch:
        return apply_fn(variables, batch["images"], batch["supports"])
    return {"single": apply_fn(variables, batch["images"])}


def pmap_train_step(
    state: TrainState,
    batch: dict[str, Array],
    anchors_Ax4: Array,
    settings: LossSettings,
    learning_rate_fn: optax.Schedule,
    axis_name: str = "batch",
) -> tuple[TrainState, dict[str, Array]]:
    """One synchronized-SGD step; run under `jax.pmap(..., axis_name=axis_name)`.

    Returns the new state and metrics identical on every device: 'loss', '<stream>/cls',
    '<stream>/box' (global values), 'num_fg' (global count), 'grad_norm' (of the averaged
    gradient), 'param_norm', 'lr' (the rate used by this step).
    """
    targets = anchor_targets(anchors_Ax4, batch["boxes"], batch["labels"], batch["valid"], settings)
    local_fg = jnp.sum(targets.fg_mask.astype(jnp.float32))
    num_devices = lax.psum(1, axis_name)
    # Each device's loss is its share of the global loss; pmean of the gradients (sum / D) is
    # then the gradient of the global loss when every device divides by global_fg / D.
    global_fg = lax.psum(local_fg, axis_name)
    normalizer = jnp.maximum(global_fg, 1.0) / num_devices

    def loss_fn(params):
        outputs = _forward(
            state.apply_fn, {"params": params, "batch_stats": state.batch_stats}, batch
        )
        return losses_for_targets(outputs, targets, settings, normalizer)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, axis_name)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # loss_i = local_sum_i * D / global_fg, so the mean over devices is the global loss, exact
    # for any split of the batch (a padded device contributes its zero sums).
    terms = {k: v for k, v in terms.items() if k != "num_fg"}
    metrics = lax.pmean(dict(terms, loss=loss), axis_name)
    metrics.update(
        num_fg=global_fg,
        grad_norm=optax.global_norm(grads),
        param_norm=optax.global_norm(params),
        lr=learning_rate_fn(state.step),
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def make_pmap_train_step(
    anchors_Ax4: Array, settings: LossSettings, learning_rate_fn: optax.Schedule
) -> Callable[[TrainState, dict[str, Array]], tuple[TrainState, dict[str, Array]]]:
    """`pmap_train_step` with its constants bound, pmap-ed over local devices; the state
    (argument 0) is donated."""
    return jax.pmap(
        functools.partial(
            pmap_train_step,
            anchors_Ax4=jnp.asarray(anchors_Ax4),
            settings=settings,
            learning_rate_fn=learning_rate_fn,
        ),
        axis_name="batch",
        donate_argnums=(0,),
    )


def replicate(tree: Any, devices: Sequence[Any]) -> Any:
    """Stack `tree` once per device along a new leading axis, sharded over `devices` (the
    input layout `jax.pmap` expects; `jax.device_put_replicated` is gone in jax 0.10)."""
    sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(devices), ("batch",)), jax.sharding.PartitionSpec("batch")
    )
    return jax.tree.map(
        lambda x: jax.device_put(
            np.broadcast_to(np.asarray(x)[None], (len(devices),) + np.shape(x)), sharding
        ),
        tree,
    )


def unreplicate(tree: Any) -> Any:
    """The first local device's copy of a replicated tree, as host numpy arrays (with several
    processes a pmap output is not fully addressable, so read a local shard)."""

    def first(x):
        if isinstance(x, jax.Array):
            return np.asarray(x.addressable_shards[0].data)[0]
        return np.asarray(x)[0]

    return jax.tree.map(first, tree)


def params_fingerprint(params: Any) -> str:
    """SHA-256 of the parameters' bytes: equal fingerprints across processes mean identical
    parameters (logged at the end of a phase)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# The driver


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the phase, step and bad terms."""


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint of the current step was written before stopping."""


# Phase-2 modules initialised from phase-1 modules (the FPN and heads are copied into both
# streams; early fusion's heads take 512 channels, so they cannot be).
PHASE2_INIT = {
    "backbone": "backbone",
    "fpn": "fpn",
    "head": "head",
    "motion_fpn": "fpn",
    "sample_fpn": "fpn",
    "motion_subnets": "head",
    "sample_subnets": "head",
    "fused_subnets": "head",
}


def initialize_distributed(dist_config: Any) -> None:
    """`jax.distributed.initialize` when the config names more than one process (before any
    other jax call); on CPU hosts the cross-process collectives need gloo."""
    if dist_config.num_processes <= 1:
        return
    if dist_config.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", dist_config.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=dist_config.coordinator_address,
        num_processes=dist_config.num_processes,
        process_id=dist_config.process_id,
    )


def prepare_data(config: Any, workdir: str) -> str:
    """Generate the synthetic ILSVRC folder if configured and absent, build the TFDS datasets
    (reused when built), and return the TFDS data_dir."""
    from input_pipeline import builders, synthetic

    data = config.data
    root = workdir_lib.data_root(config, workdir)
    tfds_dir = workdir_lib.tfds_dir(config, workdir)
    if data.source == "synthetic" and not os.path.exists(root):
        s = data.synthetic
        logging.info("generating the synthetic dataset into %s", root)
        tmp = f"{root}.tmp-{os.getpid()}"
        synthetic.generate(
            tmp,
            seed=s.seed,
            width=s.size,
            height=s.size,
            num_train_videos=s.train_videos,
            num_val_videos=s.val_videos,
            frames_per_video=s.frames,
            num_det_images=s.det_images,
            num_classes=s.num_classes,
            max_objects=s.max_objects,
        )
        os.replace(tmp, root)  # a crash mid-generation never leaves a partial dataset
    elif not os.path.isdir(root):
        raise FileNotFoundError(f"data.root {root!r} is not an ILSVRC2015 folder")
    names = ["imagenet_vid"]
    if config.train.phase1_det and "phase1" in config.train.phases:
        names.append("imagenet_det_vid30")
    for name in names:
        builders.prepare(name, root, tfds_dir)
    return tfds_dir


def _phase_model(config: Any, phase: str) -> Any:
    if phase == "phase1":
        return detector_lib.create_single_frame_detector(config.model)
    return ssvd_lib.create_ssvd(config.model)


def _example_inputs(config: Any, phase: str) -> tuple[Array, ...]:
    size = config.data.image_size
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    if phase == "phase1":
        return (image,)
    return image, jnp.zeros((1, config.train.num_supports, size, size, 3), jnp.float32)


def _state_dict(state: TrainState) -> dict[str, Any]:
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def _new_state(config: Any, phase: str) -> tuple[TrainState, optax.Schedule]:
    model = _phase_model(config, phase)
    variables = init_variables(model, *_example_inputs(config, phase), seed=config.seed)
    schedule = learning_rate_schedule(config.schedule[phase])
    tx = create_optimizer(
        config.optimizer, schedule, variables["params"], frozen_prefixes(config.train.freeze_at)
    )
    return create_train_state(model, variables, tx), schedule


def _restore_subtree(folder: str, template: dict[str, Any], what: str) -> dict[str, Any]:
    """Variables {'params', 'batch_stats'} of a converted checkpoint (`--mode=convert`)."""
    restored, meta = Checkpointer(folder, async_save=False).restore(template)
    logging.info("initialised %s from %s (kind %s)", what, folder, meta.get("kind"))
    return restored


def _with_subtree(variables: dict[str, Any], module: str, sub: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in variables.items()}
    for collection, tree in sub.items():
        if tree:
            out[collection][module] = tree
    return out


def _same_structure(a: Any, b: Any) -> bool:
    sa = jax.tree.map(lambda x: tuple(np.shape(x)), a)
    sb = jax.tree.map(lambda x: tuple(np.shape(x)), b)
    return jax.tree.structure(a) == jax.tree.structure(b) and sa == sb


def init_phase2_from_phase1(
    variables: dict[str, Any], phase1: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Copy phase-1 modules into SSVD's variables per `PHASE2_INIT`; returns the new variables
    and, per SSVD module, where it came from ('phase1:<module>' or 'random')."""
    out = {k: dict(v) for k, v in variables.items()}
    report = {}
    for module in variables["params"]:
        source = PHASE2_INIT.get(module)
        copied = False
        if source is not None and source in phase1["params"]:
            ok = _same_structure(variables["params"][module], phase1["params"][source])
            stats = variables.get("batch_stats", {}).get(module)
            if stats is not None:
                ok = ok and _same_structure(stats, phase1["batch_stats"].get(source))
            if ok:
                out["params"][module] = phase1["params"][source]
                if stats is not None:
                    out["batch_stats"][module] = phase1["batch_stats"][source]
                copied = True
        report[module] = f"phase1:{source}" if copied else "random"
    return out, report


def _phase_variables(
    config: Any, workdir: str, phase: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], dict]:
    """Initial variables of a phase: `variables` (random) with the configured/previous-phase
    initialisations applied; also returns where each module came from."""
    variables = {k: dict(v) for k, v in variables.items()}
    report = {m: "random" for m in variables["params"]}
    if phase == "phase1" and config.train.resnet_checkpoint:
        template = {
            "params": variables["params"]["backbone"],
            "batch_stats": variables["batch_stats"].get("backbone", {}),
        }
        sub = _restore_subtree(config.train.resnet_checkpoint, template, "backbone")
        variables = _with_subtree(variables, "backbone", sub)
        report["backbone"] = "resnet_checkpoint"
    if phase == "phase2":
        # Phase 1 may have run in this command or an earlier one with the same workdir.
        ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir, "phase1"), async_save=False)
        if ckpt.latest_step() is not None:
            template = jax.eval_shape(lambda: _state_dict(_new_state(config, "phase1")[0]))
            restored, _ = ckpt.restore(template)
            variables, report = init_phase2_from_phase1(variables, restored)
        else:
            logging.warning("phase2: no phase-1 checkpoint in %s", ckpt.directory)
        ckpt.close()
        if config.train.pwcnet_checkpoint and "flownet" in variables["params"]:
            template = {"params": variables["params"]["flownet"]}
            sub = _restore_subtree(config.train.pwcnet_checkpoint, template, "flownet")
            variables = _with_subtree(variables, "flownet", sub)
            report["flownet"] = "pwcnet_checkpoint"
    return variables, report


def _batches(
    config: Any, phase: str, data_dir: str, start_step: int, per_device: int
) -> Iterator[dict[str, np.ndarray]]:
    """This host's batches [local_devices, per_device, ...] from `start_step` on."""
    from input_pipeline import pipeline

    data = config.data
    vid = pipeline.open_table(pipeline.VID, "train", data_dir)
    common = dict(
        image_size=data.image_size,
        max_boxes=data.max_boxes,
        batch_dims=(jax.local_device_count(), per_device),
        seed=config.seed,
        start_step=start_step,
        host_index=jax.process_index(),
        num_hosts=jax.process_count(),
        vid_frames=data.vid_frames,
        mean=tuple(data.pixel_mean_bgr),
        legacy_boxes=config.loss.legacy_boxes,
    )
    if phase == "phase1":
        det = (
            pipeline.open_table(pipeline.DET, "train", data_dir)
            if config.train.phase1_det
            else None
        )
        ds = pipeline.still_images(vid, det, det_per_class=data.det_per_class or None, **common)
    else:
        ds = pipeline.train_clips(
            vid,
            None,
            num_frames=1 + config.train.num_supports,
            support_range=data.support_range,
            **common,
        )
    keys = ("images", "boxes", "labels", "valid")
    for raw in ds.as_numpy_iterator():
        if phase == "phase1":
            yield {k: raw[k] for k in keys}
        else:
            yield {
                "images": raw["images"][:, :, 0],
                "supports": raw["images"][:, :, 1:],
                "boxes": raw["boxes"][:, :, 0],
                "labels": raw["labels"][:, :, 0],
                "valid": raw["valid"][:, :, 0],
            }


def _read_losses(path: str) -> dict[int, dict[str, float]]:
    """Per-step metrics of `losses.jsonl`; a step logged twice (re-run after a restart from an
    earlier checkpoint) keeps its last line."""
    rows: dict[int, dict[str, float]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[int(row["step"])] = row
    return rows


def _losses_path(phase_dir: str) -> str:
    """Per-step metrics file: `losses.jsonl` of process 0; other processes log the same global
    metrics to their own file (a cross-host consistency check)."""
    i = jax.process_index()
    return os.path.join(phase_dir, "losses.jsonl" if i == 0 else f"losses.process{i}.jsonl")


def _phase_summary(phase_dir: str, window: int) -> dict[str, Any]:
    rows = _read_losses(_losses_path(phase_dir))
    steps = sorted(rows)
    if not steps:
        return {}
    keys = [k for k in rows[steps[-1]] if k != "step"]

    def mean(sel):
        return {k: float(np.mean([rows[s][k] for s in sel])) for k in keys}

    return {
        "steps": steps[-1],
        "first": mean(steps[:window]),
        "final": mean(steps[-window:]),
    }


class _SigtermFlag:
    """Records SIGTERM (pre-emption) so the loop can checkpoint and stop between steps."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: checkpointing after the current step, then stopping")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_phase(
    config: Any, workdir: str, phase: str, data_dir: str, sigterm: _SigtermFlag
) -> dict[str, Any]:
    """Train one phase to `config.schedule.<phase>.steps`, resuming from the latest checkpoint
    in `<workdir>/<phase>/checkpoints`; returns the phase summary (first/final metrics)."""
    phase_dir = workdir_lib.phase_dir(workdir, phase)
    os.makedirs(phase_dir, exist_ok=True)
    total = int(config.schedule[phase].steps)
    is_chief = jax.process_index() == 0
    ckpt = Checkpointer(
        workdir_lib.checkpoint_dir(workdir, phase),
        max_to_keep=config.checkpoint.max_to_keep,
        async_save=config.checkpoint.async_save,
    )
    try:
        start = ckpt.latest_step() or 0
        if start >= total:
            logging.info("%s: finished (checkpoint at step %d); skipping", phase, start)
            return _phase_summary(phase_dir, config.log.summary_window)
        state, schedule = _new_state(config, phase)
        init_report = None
        if start:
            restored, meta = ckpt.restore(_state_dict(state))
            state = state.replace(**restored)
            logging.info("%s: resumed at step %d (data position %d)", phase, start, meta["step"])
        else:
            random = {"params": state.params, "batch_stats": state.batch_stats}
            variables, init_report = _phase_variables(config, workdir, phase, random)
            state = state.replace(
                params=variables["params"], batch_stats=variables.get("batch_stats", {})
            )
            state = state.replace(opt_state=state.tx.init(state.params))
            logging.info("%s: initialisation per module: %s", phase, init_report)
        return _train_loop(config, phase, phase_dir, data_dir, state, schedule, ckpt, start,
                           total, sigterm, is_chief, init_report)  # fmt: skip
    finally:
        ckpt.close()


def _train_loop(
    config, phase, phase_dir, data_dir, state, schedule, ckpt, start, total, sigterm, is_chief,
    init_report,
) -> dict[str, Any]:  # fmt: skip
    global_batch = config.train.batch_size
    devices = jax.local_devices()
    num_devices = jax.device_count()
    if global_batch % num_devices:
        raise ValueError(f"train.batch_size {global_batch} is not divisible by {num_devices}")
    per_device = global_batch // num_devices
    anchors = all_anchors(detector_lib.anchors_for(config.data.image_size, config.model.anchors))
    p_step = make_pmap_train_step(anchors, loss_settings_from_config(config), schedule)
    writer = metric_logging.create_writer(phase_dir, just_logging=not is_chief)
    if start == 0:
        hparams = metric_logging.flat_hparams(config.to_dict())
        writer.write_hparams(dict(hparams, phase=phase))
        if is_chief and init_report is not None:
            with open(os.path.join(phase_dir, "init_report.json"), "w") as f:
                json.dump(init_report, f, indent=1)
    meta_base = {"phase": phase, "seed": config.seed, "config": config.to_json()}

    def save(step: int, host_state: dict[str, Any]) -> None:
        # The data stream is a pure function of (seed, step): the step is the data position.
        ckpt.save(step, host_state, dict(meta_base, step=step, data_position=step), force=True)

    rstate = replicate(state, devices)
    del state
    batches = _batches(config, phase, data_dir, start, per_device)
    progress = metric_logging.Progress(start, total)
    window: list[dict[str, float]] = []
    every = config.checkpoint.every_steps
    step = start
    log_file = open(_losses_path(phase_dir), "a")
    try:
        while step < total:
            batch = next(batches)
            if step + 1 == config.train.inject_nan_at_step:
                batch = dict(batch, images=np.full_like(batch["images"], np.nan))
            if config.train.sleep_per_step_s:
                time.sleep(config.train.sleep_per_step_s)
            rstate, metrics = p_step(rstate, batch)
            metrics = {k: float(v) for k, v in unreplicate(metrics).items()}
            step += 1
            bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
            if bad:
                ckpt.wait()
                last = ckpt.latest_step()
                raise TrainingDiverged(
                    f"{phase}: non-finite values at step {step}: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
                    + f". Stopped; the last good checkpoint is step {last} in {ckpt.directory}"
                )
            log_file.write(json.dumps({"step": step, **metrics}) + "\n")
            log_file.flush()
            window.append(metrics)
            if step % config.log.every_steps == 0 or step == total:
                rate, eta = progress.update(step)
                means = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
                writer.write_scalars(step, dict(means, steps_per_sec=rate))
                logging.info(
                    "%s step %d/%d loss %.4f lr %.2e %.2f steps/s ETA %s",
                    phase, step, total, means["loss"], metrics["lr"], rate,
                    metric_logging.format_eta(eta),
                )  # fmt: skip
                window = []
            if step % every == 0 or step == total or sigterm.raised:
                save(step, _state_dict(unreplicate(rstate)))
            if sigterm.raised:
                ckpt.wait()
                raise Preempted(f"{phase}: SIGTERM; checkpointed step {step} in {ckpt.directory}")
        ckpt.wait()
    finally:
        log_file.close()
        batches.close()  # stops the tf.data iterator and its prefetch threads now, not at gc
        writer.flush()
    final = unreplicate(rstate.params)
    summary = _phase_summary(phase_dir, config.log.summary_window)
    summary["params_fingerprint"] = params_fingerprint(final)
    logging.info(
        "%s done: process %d params fingerprint %s",
        phase, jax.process_index(), summary["params_fingerprint"],
    )  # fmt: skip
    if is_chief:
        with open(os.path.join(phase_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Run the configured phases (skipping finished ones, resuming an interrupted one), then
    (`eval.after_training`) evaluate each trained phase on `eval.split` and (`eval.demo`) draw
    the first evaluated video; write `<workdir>/summary.json`: per phase the first and final
    (windowed) training metrics and the evaluation's mAP overall and by motion speed."""
    initialize_distributed(config.distributed)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    # One process generates and builds; the others wait, then reuse what it built.
    if jax.process_index() == 0:
        data_dir = prepare_data(config, workdir)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("data prepared")
        if jax.process_index() > 0:
            data_dir = prepare_data(config, workdir)
    summary: dict[str, Any] = {"phases": {}}
    with _SigtermFlag() as sigterm:
        for phase in config.train.phases:
            if phase not in workdir_lib.PHASES:
                raise ValueError(f"unknown phase {phase!r}: 'phase1' or 'phase2'")
            summary["phases"][phase] = train_phase(config, workdir, phase, data_dir, sigterm)
    summary["train_seconds"] = time.time() - t0
    summary["variant"] = config.model.variant
    if jax.process_index() == 0:
        if config.eval.after_training:
            summary.update(evaluate_trained(config, workdir, config.train.phases))
        summary["seconds"] = time.time() - t0
        results.atomic_write_text(
            os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1)
        )
        print(format_summary(summary))
    return summary


def evaluate_trained(
    config: Any, workdir: str, phases: Sequence[str], out_workdir: str | None = None
) -> dict[str, Any]:
    """The evaluation part of a run's summary: {'eval': {phase: headline metrics}} and, with
    `eval.demo`, {'demo': stats} of the last phase's model on the first evaluated video."""
    from ssvd_jax import evaluate

    out: dict[str, Any] = {}
    summaries = evaluate.evaluate_workdir(config, workdir, phases, out_workdir=out_workdir)
    keys = ("mAP", "mAP_slow", "mAP_medium", "mAP_fast", "frames_per_second")
    out["eval"] = {
        phase: dict({k: s.get(k) for k in keys}, variant=s["settings"]["variant"])
        for phase, s in summaries.items()
    }
    if config.eval.demo:
        folder = workdir_lib.checkpoint_dir(workdir, list(summaries)[-1])
        output = os.path.join(out_workdir or workdir, "demo.mp4")
        out["demo"] = evaluate.demo(
            config, folder, evaluate.first_video_folder(config, workdir), output
        )
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    seconds = summary.get("seconds", summary.get("train_seconds", 0.0))
    lines = [f"finished in {seconds:.0f}s (training {summary.get('train_seconds', 0.0):.0f}s)"]
    for phase, s in summary["phases"].items():
        if not s:
            continue
        terms = ", ".join(
            f"{k} {s['first'][k]:.4f} -> {s['final'][k]:.4f}"
            for k in s["final"]
            if k == "loss" or k.endswith("/cls") or k.endswith("/box")
        )
        lines.append(f"{phase} ({s['steps']} steps): {terms}")
    for phase, e in summary.get("eval", {}).items():
        lines.append(
            f"{phase} {e['variant']} mAP {_pct(e['mAP'])}% (slow {_pct(e['mAP_slow'])}, medium "
            f"{_pct(e['mAP_medium'])}, fast {_pct(e['mAP_fast'])})"
        )
    if "demo" in summary:
        lines.append(f"demo video: {summary['demo']['output']}")
    return "\n".join(lines)
