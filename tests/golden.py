"""The golden parity fixture's synthetic weights, regenerated from its README's rule.

`tests/fixtures/ssvd_reference_parity/README.md` §3: every state_dict key is drawn from
`np.random.default_rng(crc32(key))` with a per-key gain; `keys.tsv` lists keys, shapes and a
SHA-256 prefix of each float32 tensor, which `release_state_dict` checks key by key.
"""

from __future__ import annotations

import functools
import hashlib
import math
import pathlib
import re
import zlib

import numpy as np

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures/ssvd_reference_parity"
SQRT2 = math.sqrt(2.0)


def gain(key: str) -> float:
    """The README's GAIN table for 4-D weights (first matching row wins)."""
    if key == "backbone.body.stem.conv1.weight":
        return 0.1
    if key.startswith("backbone."):
        return 1.0
    fpn = re.fullmatch(r"(motion|sample)_fpn\.fpn_p(\d)(_1x1)?\.weight", key)
    if fpn:
        return 1.0 if fpn[3] else {"3": 0.38, "4": 0.75, "5": 2.0, "6": 1.7}[fpn[2]]
    if key.startswith("flownet."):
        if ".moduleUpflow." in key or ".moduleUpfeat." in key:
            return 1.0
        if re.fullmatch(r"flownet\.module(Two|Thr|Fou|Fiv|Six)\.moduleSix\.0\.weight", key):
            return 2.85
        return SQRT2
    block = "sample_block.sample_block."
    if key.startswith(block + "off_conv"):
        return 1.0
    if key == block + "offset_lateral.weight":
        return SQRT2
    if key == block + "offset_pred.weight":
        return 2.5
    if key == block + "sample_conv.weight":
        return 1.0
    head = re.fullmatch(r"(motion|sample)_subnets\.(\w+?)(\.\d)?\.weight", key)
    if head:
        return {"cls_tower": SQRT2, "bbox_tower": SQRT2, "cls_logits": 1.0, "bbox_pred": 0.3}[
            head[2]
        ]
    raise KeyError(f"no gain rule for {key}")


def gen(key: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    if key.startswith("backbone.") and len(shape) == 1:
        leaf = key.rsplit(".", 1)[1]
        if leaf == "weight":
            lo, hi = (0.2, 0.4) if key.endswith(".bn3.weight") else (0.5, 1.0)
            v = rng.uniform(lo, hi, size=shape)
        elif leaf == "bias":
            v = rng.uniform(-0.1, 0.1, size=shape)
        elif leaf == "running_mean":
            v = rng.standard_normal(size=shape) * 0.1
        elif leaf == "running_var":
            v = rng.uniform(0.5, 1.5, size=shape)
        else:
            raise KeyError(key)
        return v.astype(np.float32)
    if len(shape) == 4:
        if ".moduleUpflow." in key or ".moduleUpfeat." in key:
            fan_in = shape[0] * shape[2] * shape[3] // 4
        else:
            fan_in = shape[1] * shape[2] * shape[3]
        z = rng.standard_normal(size=shape)
        return (z * (gain(key) / math.sqrt(fan_in))).astype(np.float32)
    v = rng.uniform(-0.1, 0.1, size=shape)
    if key == "motion_subnets.cls_logits.bias":
        v = v + (-6.05)
    if key == "sample_subnets.cls_logits.bias":
        v = v + (-5.25)
    if key == "sample_block.sample_block.offset_pred.bias":
        v[72] = v[72] + 1.4
    return v.astype(np.float32)


def _sha16(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, "<f4").tobytes()).hexdigest()[:16]


@functools.cache
def release_state_dict() -> dict[str, np.ndarray]:
    """All 696 keys of the fixture's model, verified against keys.tsv's checksums."""
    anchors = np.load(FIXTURE / "anchors.npz")
    sd = {}
    lines = (FIXTURE / "keys.tsv").read_text().splitlines()[1:]
    for line in lines:
        key, shape, _, _, _, sha = line.split("\t")
        shape = tuple(int(s) for s in shape.split(","))
        m = re.fullmatch(r"anchor_generator\.cell_anchors\.(\d)", key)
        value = anchors[f"cell_anchors_P{int(m[1]) + 3}"] if m else gen(key, shape)
        if value.shape != shape or _sha16(value) != sha:
            raise AssertionError(f"regenerated {key} does not match keys.tsv")
        sd[key] = value
    return sd


def outputs() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE / "outputs.npz"))


def frames() -> np.ndarray:
    return np.load(FIXTURE / "frames.npz")["frames"]
