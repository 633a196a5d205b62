"""Training's core, below the phase loop: the train state, the optimizer and its schedule,
parameter freezing, and THE train step (the pmap body of synchronized SGD), which the phase loop
(`ssvd_jax.trainer`) and the overfit check both run.

Nothing here reads files, prints or knows about evaluation; the objective is
`ssvd_jax.objective` (the paper's Eq. 4).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax import lax

from input_pipeline import flow_data
from ssvd_jax import objective
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables
from ssvd_jax.models.pwcnet import RAW_FLOW_UNIT

Array = jax.Array


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


def all_anchors(per_level_anchors: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(per_level_anchors), axis=0)


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule


def learning_rate_schedule(phase_schedule: Any) -> optax.Schedule:
    """The learning rate of a phase's step, by `kind`:

    multistep  maskrcnn-benchmark's WarmupMultiStepLR (the paper): lr = base *
               decay_factor^(number of `boundaries` passed);
    cosine     base * (1 + cos(pi * step / steps)) / 2, down to 0 at the phase's last step;
    both times a linear warmup factor from `warmup_factor` to 1 over `warmup_steps`.
    """
    kind = phase_schedule.kind
    if kind not in ("multistep", "cosine"):
        raise ValueError(f"schedule kind {kind!r}: 'multistep' or 'cosine'")
    base = float(phase_schedule.learning_rate)
    boundaries = jnp.asarray(tuple(phase_schedule.boundaries) or (2**31 - 1,), jnp.int32)
    decay = float(phase_schedule.decay_factor)
    total = max(int(phase_schedule.steps), 1)
    warmup_steps = int(phase_schedule.warmup_steps)
    warmup_factor = float(phase_schedule.warmup_factor)

    def schedule(step: Array) -> Array:
        step = jnp.asarray(step, jnp.int32)
        if kind == "multistep":
            passed = jnp.sum(step >= boundaries)
            lr = base * decay ** passed.astype(jnp.float32)
        else:
            progress = jnp.minimum(step.astype(jnp.float32) / total, 1.0)
            lr = base * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
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
    """The configured optimizer (`optimizer.name`) with optional global-norm clipping first;
    weight decay on kernels only (biases undecayed, as maskrcnn-benchmark's
    WEIGHT_DECAY_BIAS = 0); frozen parameters get zero updates and keep no optimizer state.

    sgd    SGD with momentum and L2 weight decay added to the gradient (the paper's recipe)
    adamw  Adam with decoupled weight decay (Loshchilov & Hutter), for training from scratch
    """
    name = optimizer_config.name
    kernels = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
    parts = []
    if optimizer_config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optimizer_config.grad_clip_norm))
    if name == "sgd":
        parts += [
            optax.add_decayed_weights(optimizer_config.weight_decay, mask=kernels),
            optax.sgd(schedule, momentum=optimizer_config.momentum),
        ]
    elif name == "adamw":
        parts.append(
            optax.adamw(
                schedule,
                b1=optimizer_config.b1,
                b2=optimizer_config.b2,
                eps=optimizer_config.eps,
                weight_decay=optimizer_config.weight_decay,
                mask=kernels,
            )
        )
    else:
        raise ValueError(f"optimizer.name {name!r}: 'sgd' or 'adamw'")
    return optax.multi_transform(
        {"trainable": optax.chain(*parts), "frozen": optax.set_to_zero()},
        param_labels(params, frozen),
    )


# ----------------------------------------------------------------------------------------------
# The synchronized-SGD step


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    anchors_Ax4: Array,
    settings: objective.LossSettings,
    learning_rate_fn: optax.Schedule,
    axis_name: str = "batch",
) -> tuple[TrainState, dict[str, Array]]:
    """THE train step (every training path runs it): one synchronized-SGD step, run under
    `jax.pmap(..., axis_name=axis_name)` (`make_train_step`).

    batch: the input pipeline's contract, per device: 'frames' [b, T, H, W, 3] (normalised BGR,
    the reference frame at index 0, T = 1 for the single-frame detector) and the reference
    frame's 'boxes' [b, G, 4], 'labels' [b, G] (0-based), 'valid' [b, G].

    Every device computes its loss with the *global* number of foreground anchors,
    normalizer = max(1, psum(num_fg)) / num_devices, so that the mean over devices of the
    per-device gradients (`lax.pmean`) is exactly the gradient of one device holding the whole
    global batch. Returns the new state and metrics identical on every device: 'loss',
    '<stream>/cls', '<stream>/box' (global values), 'num_fg' (global count), 'grad_norm' (of
    the averaged gradient), 'param_norm', 'lr' (the rate used by this step).
    """
    targets = objective.anchor_targets(
        anchors_Ax4, batch["boxes"], batch["labels"], batch["valid"], settings
    )
    local_fg = jnp.sum(targets.fg_mask.astype(jnp.float32))
    num_devices = lax.psum(1, axis_name)
    # Each device's loss is its share of the global loss; pmean of the gradients (sum / D) is
    # then the gradient of the global loss when every device divides by global_fg / D.
    global_fg = lax.psum(local_fg, axis_name)
    normalizer = jnp.maximum(global_fg, 1.0) / num_devices

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs = state.apply_fn(variables, batch["frames"])
        return objective.detection_loss(outputs, targets, settings, normalizer)

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


def make_train_step(
    anchors_Ax4: Array,
    settings: objective.LossSettings,
    learning_rate_fn: optax.Schedule,
    devices: Sequence[Any] | None = None,
) -> Callable[[TrainState, dict[str, Array]], tuple[TrainState, dict[str, Array]]]:
    """`train_step` with its constants bound, pmap-ed over `devices` (default: all local
    devices); the state (argument 0, replicated with `replicate`) is donated. Batches are
    [len(devices), per_device, ...]."""
    return jax.pmap(
        functools.partial(
            train_step,
            anchors_Ax4=jnp.asarray(anchors_Ax4),
            settings=settings,
            learning_rate_fn=learning_rate_fn,
        ),
        axis_name="batch",
        donate_argnums=(0,),
        devices=devices,
    )


def flow_train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    level_weights: dict[str, float],
    learning_rate_fn: optax.Schedule,
    matching: dict[str, Any] | None = None,
    axis_name: str = "batch",
) -> tuple[TrainState, dict[str, Array]]:
    """PWC-Net pretraining's synchronized step, under `jax.pmap` (`make_flow_step`): batch
    per device {'image1', 'image2': [b,H,W,3] normalised BGR, 'flow': [b,H,W,2] ground truth
    in pixels}; `objective.flow_loss` (plus, with `matching` {'weights', 'scale', 'range'},
    `objective.matching_loss`), gradients averaged over devices (every device holds an equal
    share of the global batch). Metrics: 'loss', 'epe_L2'..'epe_L6', 'epe' (full
    resolution), 'zero_epe' (of zero flow), 'grad_norm', 'param_norm', 'lr'."""

    def loss_fn(params):
        variables = {"params": params}
        pyr1 = state.apply_fn(variables, batch["image1"], method="extract")
        pyr2 = state.apply_fn(variables, batch["image2"], method="extract")
        flows = state.apply_fn(variables, pyr1, pyr2, method="from_pyramids")
        loss, terms = objective.flow_loss(flows["raw"], batch["flow"], level_weights, RAW_FLOW_UNIT)
        if matching is not None:
            strides = {k: batch["flow"].shape[1] // v.shape[1] for k, v in pyr1.items()}
            match = objective.matching_loss(
                pyr1, pyr2, batch["flow"], matching["weights"], strides, matching["scale"],
                matching["range"],
            )  # fmt: skip
            terms = dict(terms, matching=match)
            loss = loss + match
        return loss, terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, axis_name)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = lax.pmean(dict(terms, loss=loss), axis_name)
    metrics.update(
        grad_norm=optax.global_norm(grads),
        param_norm=optax.global_norm(params),
        lr=learning_rate_fn(state.step),
    )
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_flow_step(
    level_weights: dict[str, float],
    learning_rate_fn: optax.Schedule,
    matching: dict[str, Any] | None = None,
    devices: Sequence[Any] | None = None,
) -> Callable[[TrainState, dict[str, Array]], tuple[TrainState, dict[str, Array]]]:
    """`flow_train_step` pmap-ed over `devices` (default: all local), the state donated."""
    return jax.pmap(
        functools.partial(
            flow_train_step,
            level_weights=level_weights,
            learning_rate_fn=learning_rate_fn,
            matching=matching,
        ),
        axis_name="batch",
        donate_argnums=(0,),
        devices=devices,
    )


def flow_matching(flow_config: Any) -> dict[str, Any] | None:
    """The auxiliary matching loss's settings from `flow.matching_weights` (levels 6..2; None
    when all are 0)."""
    weights = tuple(flow_config.matching_weights)
    if len(weights) != 5:
        raise ValueError(f"flow.matching_weights needs 5 values (levels 6..2), got {weights}")
    if not any(weights):
        return None
    return {
        "weights": {f"L{lv}": float(w) for lv, w in zip((6, 5, 4, 3, 2), weights, strict=True)},
        "scale": float(flow_config.matching_scale),
        "range": 4,  # PWC-Net's cost-volume search range
    }


def flow_level_weights(flow_config: Any) -> dict[str, float]:
    """`flow.level_weights` (coarsest level 6 first, as PWC-Net's paper lists them) by level."""
    weights = tuple(flow_config.level_weights)
    if len(weights) != 5:
        raise ValueError(f"flow.level_weights needs 5 values (levels 6..2), got {weights}")
    return {f"L{level}": float(w) for level, w in zip((6, 5, 4, 3, 2), weights, strict=True)}


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


def create_flow_state(config: Any) -> tuple[TrainState, optax.Schedule]:
    """PWC-Net alone (the SSVD's `flownet`, same parameter tree) with random variables, the
    optimizer and the `schedule.pwcnet` learning rate: the pretraining phase's state."""
    model = ssvd_lib.create_flownet(config.model)
    images = jnp.zeros((1, *flow_data.crop_shape(config.flow.crop_size), 3))
    variables = init_variables(model, images, images, seed=config.seed)
    schedule = learning_rate_schedule(config.schedule.pwcnet)
    tx = create_optimizer(config.flow.optimizer, schedule, variables["params"])
    return create_train_state(model, variables, tx), schedule


def phase_variant(config: Any, phase: str) -> str:
    """The model a phase trains: phase 1 the single-frame detector, phase 2 the config's SSVD."""
    return "single_frame" if phase == "phase1" else config.model.variant


def phase_num_frames(config: Any, phase: str) -> int:
    """Frames per training clip (T of the batch contract): the reference alone in phase 1."""
    return 1 if phase == "phase1" else 1 + config.train.num_supports


def create_state(config: Any, phase: str) -> tuple[TrainState, optax.Schedule]:
    """A phase's model with random variables (seeded by `config.seed`), its optimizer and
    learning-rate schedule."""
    model = ssvd_lib.create_model(config.model, variant=phase_variant(config, phase))
    frames = jnp.zeros(
        ssvd_lib.example_frames(config.data.image_size, phase_num_frames(config, phase)).shape
    )
    variables = init_variables(model, frames, seed=config.seed)
    schedule = learning_rate_schedule(config.schedule[phase])
    tx = create_optimizer(
        config.optimizer, schedule, variables["params"], frozen_prefixes(config.train.freeze_at)
    )
    return create_train_state(model, variables, tx), schedule


def state_dict(state: TrainState) -> dict[str, Any]:
    """The arrays of a train state, as checkpointed."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }
