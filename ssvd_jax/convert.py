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

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

TorchNameFn = Callable[[str, tuple[str, ...]], str]


class ConversionError(ValueError):
    """A checkpoint does not match the model: missing, unexpected or mis-shaped keys."""


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
                raise ConversionError(f"unexpected ResNet variable path {'/'.join(path)}")
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
            raise ConversionError(f"{'/'.join(path)}: expected a 4-D weight, got {value.shape}")
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
        raise ConversionError("checkpoint does not match the model: " + " | ".join(problems))
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
            f"reading {path} needs PyTorch (pip install -r requirements-dev.txt), or pass a "
            "dict of numpy arrays instead"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in to_numpy_state_dict(obj).items()}
