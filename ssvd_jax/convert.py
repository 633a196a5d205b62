"""PyTorch checkpoints -> Flax variables, strictly.

The release's loader silently keeps the initial value of any parameter it cannot match
(REFERENCE_SPEC §8.3), so a misnamed checkpoint yields a model that runs and detects nothing.
Here every Flax leaf must be filled from exactly one PyTorch key with the same (converted)
shape, and every PyTorch key must be used or explicitly ignored; anything else is an error
that names the keys.

Conversion is driven by the Flax variables of the target model (a "template", e.g. from
`model.init` or `jax.eval_shape`): for each leaf a naming function gives the PyTorch key, and
the leaf's kind gives the layout change (Conv2d OIHW -> HWIO; ConvTranspose2d IOHW -> flipped
HWIO; 1-D arrays unchanged).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ssvd_jax.checkpoint import Checkpointer
from ssvd_jax.errors import UserError
from ssvd_jax.models import pwcnet as pwcnet_lib
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import abstract_variables
from ssvd_jax.ops import anchors as anchors_lib

TorchNameFn = Callable[[str, tuple[str, ...]], str]


class ConversionError(UserError, ValueError):
    """A checkpoint does not match the model: missing, unexpected or mis-shaped keys. Raised
    inside the conversion with `file` "" (or the key at fault); `convert_file` adds the file."""


def conv_kernel_from_torch(w_OIHW: np.ndarray) -> np.ndarray:
    """Conv2d weight (O, I, kh, kw) -> HWIO."""
    return np.ascontiguousarray(np.transpose(w_OIHW, (2, 3, 1, 0)))


def conv_transpose_kernel_from_torch(w_IOHW: np.ndarray) -> np.ndarray:
    """ConvTranspose2d weight (I, O, kh, kw) -> the HWIO kernel of the equivalent
    input-dilated correlation (spatially flipped), REFERENCE_SPEC §8.3."""
    return np.ascontiguousarray(np.transpose(w_IOHW[:, :, ::-1, ::-1], (2, 3, 0, 1)))


def to_numpy_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Accept numpy arrays or torch tensors; return float32/int numpy arrays."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):  # a torch tensor; avoids importing torch here
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value)
    return out


def resnet_torch_name(style: str) -> TorchNameFn:
    """Naming of a ResNet body in PyTorch.

    style 'torchvision': `conv1.weight`, `bn1.running_mean`, `layer2.0.downsample.0.weight`.
    style 'release': maskrcnn-benchmark's `stem.conv1.weight`, `stem.bn1.weight`, same layers.
    """
    if style not in ("torchvision", "release"):
        raise ValueError(f"unknown ResNet naming style {style!r}")
    stem = "" if style == "torchvision" else "stem."

    def name(collection: str, path: tuple[str, ...]) -> str:
        module, leaf = path[0], path[-1]
        if len(path) == 2 and module.startswith("stem_"):
            base = stem + module[len("stem_") :]
        else:
            match = re.fullmatch(r"layer(\d+)_(\d+)", module)
            if match is None or len(path) != 3:
                raise ConversionError("", f"unexpected ResNet variable path {'/'.join(path)}")
            sub = path[1]
            sub = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(sub, sub)
            base = f"layer{match[1]}.{match[2]}.{sub}"
        leaf = "weight" if leaf == "kernel" else leaf
        return f"{base}.{leaf}"

    return name


def fpn_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """The release's FeaturePyramid names are ours: `fpn_p3_1x1.weight`, `fpn_p6.bias`."""
    del collection
    module, leaf = path
    return f"{module}.{'weight' if leaf == 'kernel' else leaf}"


def head_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """Release SSVDSubnets names: tower conv i is Sequential index 2i (ReLUs in between)."""
    del collection
    module, leaf = path
    match = re.fullmatch(r"(cls_tower|bbox_tower)_(\d+)", module)
    if match:
        module = f"{match[1]}.{2 * int(match[2])}"
    return f"{module}.{'weight' if leaf == 'kernel' else leaf}"


def _convert_leaf(path: tuple[str, ...], value: np.ndarray, transposed: bool) -> np.ndarray:
    if path[-1] == "kernel":
        if value.ndim != 4:
            raise ConversionError("/".join(path), f"expected a 4-D weight, got {value.shape}")
        return (
            conv_transpose_kernel_from_torch(value) if transposed else conv_kernel_from_torch(value)
        )
    return value


def convert(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    torch_name: TorchNameFn,
    *,
    prefix: str = "",
    ignore: Iterable[str] = (),
    is_transposed: Callable[[tuple[str, ...]], bool] = lambda path: False,
    strict_unexpected: bool = True,
) -> tuple[dict[str, Any], set[str]]:
    """Fill `template` ({collection: nested dict}) from `state_dict`.

    Args:
      state_dict: PyTorch names -> arrays (numpy or torch tensors).
      template: Flax variables whose structure and shapes define what is needed.
      torch_name: (collection, flax path) -> PyTorch key (without `prefix`).
      prefix: prepended to every PyTorch key (e.g. 'backbone.body.').
      ignore: regular expressions of PyTorch keys that may be present and unused
        (e.g. a classifier 'fc\\..*' or 'num_batches_tracked').
      is_transposed: whether a kernel comes from a ConvTranspose2d.
      strict_unexpected: raise on keys that are neither used nor ignored; with False the
        unused keys are returned instead (for converting one part of a larger checkpoint).

    Returns:
      (variables with numpy leaves, set of PyTorch keys that were used).
    """
    sd = to_numpy_state_dict(state_dict)
    ignore_res = [re.compile(p) for p in ignore]
    out: dict[str, Any] = {}
    used: set[str] = set()
    missing, bad_shape = [], []
    for collection, tree in template.items():
        flat = traverse_util.flatten_dict(dict(tree))
        filled = {}
        for path, leaf in flat.items():
            key = prefix + torch_name(collection, path)
            if key not in sd:
                missing.append(key)
                continue
            value = _convert_leaf(path, sd[key], is_transposed(path))
            if tuple(value.shape) != tuple(leaf.shape):
                bad_shape.append(f"{key}: checkpoint {value.shape} vs model {tuple(leaf.shape)}")
                continue
            filled[path] = value.astype(np.dtype(leaf.dtype))
            used.add(key)
        out[collection] = traverse_util.unflatten_dict(filled)
    unexpected = sorted(
        k for k in sd if k not in used and not any(r.fullmatch(k) for r in ignore_res)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:20])}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatch(es): {'; '.join(bad_shape[:20])}")
    if unexpected and strict_unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:20])}")
    if problems:
        raise ConversionError("", "does not match the model: " + " | ".join(problems))
    return out, used


# torchvision classification checkpoints carry a classifier and BN step counters that a
# detection body does not use.
TORCHVISION_RESNET_IGNORE = (r"fc\.weight", r"fc\.bias", r".*num_batches_tracked")


def resnet_from_torch(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    *,
    style: str = "torchvision",
    prefix: str = "",
    ignore: Iterable[str] = TORCHVISION_RESNET_IGNORE,
) -> dict[str, Any]:
    """Convert a ResNet body state_dict into `template`'s {'params', 'batch_stats'}."""
    variables, _ = convert(
        state_dict, template, resnet_torch_name(style), prefix=prefix, ignore=ignore
    )
    return variables


def load_torch_file(path: str) -> dict[str, np.ndarray]:
    """Read a `torch.save` file on CPU; unwrap {'model': ...} and strip 'module.' prefixes."""
    try:
        import torch
    except ImportError as e:  # torch is only needed to read .pth files
        raise ConversionError(
            path,
            "reading it needs PyTorch (pip install -r requirements-dev.txt), or pass a "
            "dict of numpy arrays instead",
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(path, f"not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ConversionError(path, f"expected a state_dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in to_numpy_state_dict(obj).items()}


# ---- the authors' SSVD release --------------------------------------------------------------

PWC_PREFIXES = ("flownet.", "flow_net.", "flow_module.")
ANCHOR_BUFFER = re.compile(r"anchor_generator\.cell_anchors\.(\d+)")


def _torch_path(components: tuple[str, ...]) -> str:
    """Flax module path -> dotted PyTorch path: `moduleOne_0` -> `moduleOne.0`."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", c) for c in components)


def pwcnet_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """PWCNet variables -> sniklaus/pytorch-pwc names (`moduleFiv.moduleUpfeat.weight`)."""
    del collection
    leaf = "weight" if path[-1] == "kernel" else path[-1]
    return f"{_torch_path(path[:-1])}.{leaf}"


def sample_block_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """SamplingBlock variables -> release names; v1's raw Parameters are `off_conv1_weight`."""
    del collection
    module, leaf = path
    if module.startswith("off_conv"):
        return f"{module}_weight"
    return f"{module}.{'weight' if leaf == 'kernel' else leaf}"


def ssvd_torch_name(collection: str, path: tuple[str, ...]) -> str:
    """SSVD variables -> the release's state_dict keys (REFERENCE_SPEC §8)."""
    top, rest = path[0], path[1:]
    if top == "backbone":
        return "backbone.body." + resnet_torch_name("release")(collection, rest)
    if top in ("motion_fpn", "sample_fpn", "fpn"):
        return f"{top}." + fpn_torch_name(collection, rest)
    if top in ("motion_subnets", "sample_subnets", "fused_subnets", "head"):
        return f"{top}." + head_torch_name(collection, rest)
    if top == "flownet":
        return "flownet." + pwcnet_torch_name(collection, rest)
    if top == "sample_block":
        return "sample_block.sample_block." + sample_block_torch_name(collection, rest)
    raise ConversionError("", f"no release name for variable {collection}/{'/'.join(path)}")


def _is_conv_transpose(path: tuple[str, ...]) -> bool:
    return "moduleUpflow" in path or "moduleUpfeat" in path


def normalize_release_keys(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Strip `module.`, map every PWC-Net prefix onto `flownet.` (the release's own loader maps
    `flow_module` to `flow_net`, which its model does not have, REFERENCE_SPEC §8.3)."""
    out: dict[str, np.ndarray] = {}
    for key, value in to_numpy_state_dict(state_dict).items():
        key = key.removeprefix("module.")
        for p in PWC_PREFIXES[1:]:
            if key.startswith(p):
                key = PWC_PREFIXES[0] + key[len(p) :]
        if key in out:
            raise ConversionError("", f"two checkpoint keys map to {key} (PWC-Net prefix clash)")
        out[key] = value
    return out


def check_anchor_buffers(
    state_dict: Mapping[str, np.ndarray], cell_anchors: list[np.ndarray] | None
) -> list[str]:
    """Compare the release's stored cell anchors with ours; returns the buffer keys."""
    keys = [k for k in state_dict if ANCHOR_BUFFER.fullmatch(k)]
    if cell_anchors is None:
        return keys
    for key in keys:
        i = int(ANCHOR_BUFFER.fullmatch(key)[1])
        ours = cell_anchors[i] if i < len(cell_anchors) else None
        if ours is None or ours.shape != state_dict[key].shape:
            raise ConversionError(key, "no matching anchor level in this model")
        if not np.allclose(ours, state_dict[key], atol=1e-3):
            raise ConversionError(
                key, "the checkpoint's anchors differ from this model's anchor settings"
            )
    return keys


def _suffix_resolve(
    sd: dict[str, np.ndarray], template: Mapping[str, Any], name_fn: TorchNameFn
) -> dict[str, np.ndarray]:
    """Exact-then-suffix matching: a model key absent from the checkpoint may be found as the
    unique checkpoint key ending in '.' + key (e.g. an extra wrapper prefix)."""
    out = dict(sd)
    for collection, tree in template.items():
        for path in traverse_util.flatten_dict(dict(tree)):
            key = name_fn(collection, path)
            if key in out:
                continue
            hits = [k for k in sd if k.endswith("." + key)]
            if len(hits) > 1:
                raise ConversionError(key, "ambiguous, several checkpoint keys end with it")
            if hits:
                out[key] = out.pop(hits[0])
    return out


def ssvd_from_torch(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    cell_anchors: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Convert a release SSVD state_dict (v1 or v2; any variant's subset) into `template`.

    `cell_anchors` (per level, [9, 4]) are checked against the checkpoint's anchor buffers when
    given. Any missing, unexpected or mis-shaped key raises ConversionError naming it.
    """
    sd = normalize_release_keys(state_dict)
    anchor_keys = check_anchor_buffers(sd, cell_anchors)
    sd = _suffix_resolve({k: v for k, v in sd.items() if k not in anchor_keys}, template,
                         ssvd_torch_name)  # fmt: skip
    variables, _ = convert(
        sd,
        template,
        ssvd_torch_name,
        ignore=(r".*num_batches_tracked",),
        is_transposed=_is_conv_transpose,
    )
    return variables


def pwcnet_from_torch(state_dict: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """A PWC-Net-only checkpoint (sniklaus naming, optionally under any PWC prefix or
    `module.`) into a PWCNet template. Refiner (context network) keys are ignored: SSVD has no
    refiner."""
    sd = {}
    for key, value in to_numpy_state_dict(state_dict).items():
        key = key.removeprefix("module.")
        for p in PWC_PREFIXES:
            key = key.removeprefix(p)
        sd[key] = value
    variables, _ = convert(
        sd,
        template,
        pwcnet_torch_name,
        ignore=(r"moduleRefiner\..*",),
        is_transposed=_is_conv_transpose,
    )
    return variables


def to_torch_state_dict(
    variables: Mapping[str, Any],
    torch_name: TorchNameFn,
    *,
    is_transposed: Callable[[tuple[str, ...]], bool] = lambda path: False,
) -> dict[str, np.ndarray]:
    """The inverse of `convert`: Flax variables -> PyTorch names and layouts (for exporting
    weights, and for round-trip tests of the naming)."""
    out = {}
    for collection, tree in variables.items():
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            value = np.asarray(leaf)
            if path[-1] == "kernel":
                if is_transposed(path):  # HWIO of the flipped correlation -> (I, O, kh, kw)
                    value = np.transpose(value, (2, 3, 0, 1))[:, :, ::-1, ::-1]
                else:
                    value = np.transpose(value, (3, 2, 0, 1))
            out[torch_name(collection, path)] = np.ascontiguousarray(value)
    return out


def ssvd_to_torch_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """SSVD variables -> a state_dict with the release's names (no anchor buffers)."""
    return to_torch_state_dict(variables, ssvd_torch_name, is_transposed=_is_conv_transpose)


# ---- the `main.py --mode=convert` job -------------------------------------------------------

CONVERT_KINDS = ("ssvd", "pwcnet", "resnet")


def load_state_dict_file(path: str) -> dict[str, np.ndarray]:
    """A `.pth` (torch.save) or `.npz` (numpy arrays keyed by PyTorch names) file."""
    if not os.path.isfile(path):
        raise ConversionError(path, "no such file")
    if path.endswith(".npz"):
        try:
            with np.load(path) as f:
                return {k.removeprefix("module."): f[k] for k in f.files}
        except Exception as e:
            raise ConversionError(path, f"not a readable .npz file ({e})") from e
    return load_torch_file(path)


RELEASE_NUM_CLASSES = 30  # the authors' weights: ImageNet VID (REFERENCE_SPEC §2)


def convert_file(path: str, kind: str, config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Convert a PyTorch checkpoint file into Flax variables for `config`'s model.

    kind 'ssvd': the authors' release (any PWC-Net prefix, `module.` stripped, anchor buffers
    checked against the config's anchors); 'pwcnet': a PWC-Net-only checkpoint (sniklaus names;
    refiner ignored) -> the `flownet` subtree; 'resnet': a torchvision ImageNet ResNet -> the
    `backbone` subtree (classifier ignored). Returns (variables, meta).
    """
    if kind not in CONVERT_KINDS:
        raise ConversionError(
            "--checkpoint_kind", f"unknown checkpoint kind {kind!r}; choose one of {CONVERT_KINDS}"
        )
    if kind == "ssvd" and config.model.num_classes != RELEASE_NUM_CLASSES:
        raise ConversionError(
            path,
            f"the release detects the {RELEASE_NUM_CLASSES} ImageNet VID classes, this config "
            f"{config.model.num_classes} ({', '.join(config.data.class_names) or 'num_classes'}): "
            "convert it with the VID classes (e.g. configs/default.py), then fine-tune with "
            "--config.train.init_checkpoint=<that folder>, which starts the class subnets' "
            "last layers afresh",
        )
    sd = load_state_dict_file(path)
    size = config.data.image_size
    image = jax_shape((1, size, size, 3))
    try:
        if kind == "ssvd":
            model = ssvd_lib.create_model(config.model)
            template = abstract_variables(model, ssvd_lib.example_frames(size, 3))
            a = config.model.anchors
            cells = [
                anchors_lib.cell_anchors(s, z, tuple(a.ratios), a.scales_per_octave)
                for s, z in zip(a.strides, a.sizes, strict=True)
            ]
            variables = ssvd_from_torch(sd, template, cells)
        elif kind == "pwcnet":
            net = pwcnet_lib.PWCNet(config.model.pwc_channel_scale)
            variables = pwcnet_from_torch(sd, abstract_variables(net, image, image))
        else:
            body = ssvd_lib.create_backbone(config.model.backbone, jnp.float32)
            variables = resnet_from_torch(sd, abstract_variables(body, image), style="torchvision")
    except ConversionError as e:
        raise ConversionError(path, str(e)) from e
    meta = {
        "kind": kind,
        "source": os.path.abspath(path),
        "model": config.model.to_dict(),
        "image_size": size,
    }
    return variables, meta


def jax_shape(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def run(config: Any, workdir: str, checkpoint_path: str, kind: str) -> str:
    """Convert `checkpoint_path` and write it as an orbax checkpoint (step 0) under
    `<workdir>/checkpoints`; returns that folder."""
    variables, meta = convert_file(checkpoint_path, kind, config)
    folder = os.path.join(workdir, "checkpoints")
    ckpt = Checkpointer(folder, max_to_keep=None, async_save=False)
    ckpt.save(0, variables, meta, force=True)
    ckpt.close()
    return folder
