"""Conversion of the authors' SSVD checkpoints: key lists, prefixes, strictness, files.

The full-size key lists of the release (tests/fixtures/ssvd_release_keys/, v1 and v2: 696 / 699
keys with shapes) must be exactly what our full-size models need, so a real release checkpoint
converts with nothing missing or left over. The value path (layouts, the transposed-conv flip)
is pinned by the golden parity test; here the renaming and the error paths are.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import default, tiny
from ssvd_jax import convert
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.pwcnet import PWCNet
from ssvd_jax.ops import anchors as anchors_lib

KEYS = pathlib.Path(__file__).resolve().parent / "fixtures/ssvd_release_keys"


def _template(config, size=448):
    model = ssvd_lib.create_model(config.model)
    return jax.eval_shape(model.init, jax.random.key(0), ssvd_lib.example_frames(size, 3))


def _release_keys(version: str) -> dict[str, tuple[int, ...]]:
    """`key<TAB>(shape)` per line."""
    out = {}
    for line in (KEYS / f"ssvd_state_dict_keys_v{version}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = tuple(int(d) for d in shape.strip("() ").split(",") if d.strip())
    return out


@pytest.mark.parametrize("version", ["1", "2"])
def test_full_size_key_list_matches_the_release(version):
    config = default.get_config()
    config.model.sampling.version = version
    template = _template(config)
    ours = {
        k: v.shape
        for k, v in convert.ssvd_to_torch_state_dict(
            jax.tree.map(lambda s: np.zeros(s.shape, np.float32), template)
        ).items()
    }
    release = {
        k: v for k, v in _release_keys(version).items() if not k.startswith("anchor_generator.")
    }
    assert set(ours) == set(release), set(ours) ^ set(release)
    for key, shape in release.items():
        assert ours[key] == shape, key


@pytest.fixture(scope="module")
def tiny_model(module_rng):
    config = tiny.get_config()
    config.data.image_size = 64
    model = ssvd_lib.create_model(config.model)
    template = jax.eval_shape(model.init, jax.random.key(0), ssvd_lib.example_frames(64, 3))
    # Random values in every leaf (an initialised model has zero biases and unit BN scales,
    # which a mix-up of two such leaves would not show), without compiling the init.
    variables = jax.tree.map(
        lambda s: module_rng.standard_normal(s.shape).astype(s.dtype), template
    )
    cells = [
        anchors_lib.cell_anchors(
            s, z, config.model.anchors.ratios, config.model.anchors.scales_per_octave
        )
        for s, z in zip(config.model.anchors.strides, config.model.anchors.sizes, strict=True)
    ]
    return model, variables, template, cells


def _equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))


def test_round_trip_and_accepted_prefixes(tiny_model):
    _, variables, template, cells = tiny_model
    sd = convert.ssvd_to_torch_state_dict(variables)
    assert "flownet.moduleFiv.moduleUpfeat.weight" in sd
    assert "sample_block.sample_block.off_conv1_weight" in sd
    assert _equal(convert.ssvd_from_torch(sd, template), variables)
    for prefix in ("flow_net.", "flow_module."):
        renamed = {
            "module." + (prefix + k[len("flownet.") :] if k.startswith("flownet.") else k): v
            for k, v in sd.items()
        }
        assert _equal(convert.ssvd_from_torch(renamed, template), variables), prefix
    # The release stores its cell anchors; they are checked against ours, then dropped.
    with_anchors = dict(
        sd, **{f"anchor_generator.cell_anchors.{i}": c for i, c in enumerate(cells)}
    )
    assert _equal(convert.ssvd_from_torch(with_anchors, template, cells), variables)


def test_errors_name_the_keys(tiny_model):
    _, variables, template, cells = tiny_model
    sd = convert.ssvd_to_torch_state_dict(variables)
    missing = dict(sd)
    del missing["flownet.moduleThr.moduleUpflow.bias"]
    with pytest.raises(convert.ConversionError, match=r"missing.*flownet\.moduleThr\.moduleUpflow"):
        convert.ssvd_from_torch(missing, template)
    extra = dict(sd, **{"sample_block.sample_block.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(convert.ConversionError, match=r"unexpected.*sample_block\.extra"):
        convert.ssvd_from_torch(extra, template)
    bad = dict(sd)
    bad["motion_fpn.fpn_p6.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(convert.ConversionError, match=r"shape.*motion_fpn\.fpn_p6\.weight"):
        convert.ssvd_from_torch(bad, template)
    wrong = dict(sd, **{"anchor_generator.cell_anchors.0": cells[0] + 8.0})
    with pytest.raises(convert.ConversionError, match=r"cell_anchors\.0"):
        convert.ssvd_from_torch(wrong, template, cells)
    clash = dict(
        sd, **{"flow_net.moduleSix.moduleSix.0.bias": sd["flownet.moduleSix.moduleSix.0.bias"]}
    )
    with pytest.raises(convert.ConversionError, match="moduleSix"):
        convert.ssvd_from_torch(clash, template)


def test_pth_file(tiny_model, tmp_path):
    _, variables, template, _ = tiny_model
    sd = {
        k: torch.from_numpy(v.copy())
        for k, v in convert.ssvd_to_torch_state_dict(variables).items()
    }
    path = tmp_path / "ssvd.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, path)
    loaded = convert.load_torch_file(str(path))
    assert _equal(convert.ssvd_from_torch(loaded, template), variables)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(convert.ConversionError, match="junk.pth"):
        convert.load_torch_file(str(tmp_path / "junk.pth"))


def test_pwcnet_only_checkpoint(tiny_model):
    model, variables, _, _ = tiny_model
    full = convert.ssvd_to_torch_state_dict(variables)
    pwc = {k[len("flownet.") :]: v for k, v in full.items() if k.startswith("flownet.")}
    pwc["moduleRefiner.moduleMain.0.weight"] = np.zeros((128, 565, 3, 3), np.float32)  # ignored
    net = PWCNet(model.pwc_channel_scale)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    template = jax.eval_shape(net.init, jax.random.key(0), x, x)
    got = convert.pwcnet_from_torch(pwc, template)
    assert _equal(got["params"], variables["params"]["flownet"])
    prefixed = {"module.flow_module." + k: v for k, v in pwc.items()}
    assert _equal(convert.pwcnet_from_torch(prefixed, template)["params"], got["params"])


def test_convert_mode_writes_a_loadable_checkpoint(tiny_model, tmp_path):
    """`main.py --mode=convert` end to end: .pth in, orbax checkpoint out, same variables."""
    import subprocess
    import sys

    from ssvd_jax.checkpoint import Checkpointer

    _, variables, template, _ = tiny_model
    sd = {
        k: torch.from_numpy(v.copy())
        for k, v in convert.ssvd_to_torch_state_dict(variables).items()
    }
    torch.save(sd, tmp_path / "release.pth")
    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable, str(root / "main.py"), "--mode=convert",
        f"--config={root / 'configs/tiny.py'}", "--config.data.image_size=64",
        f"--input={tmp_path / 'release.pth'}", f"--workdir={tmp_path / 'run'}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    restored, meta = Checkpointer(str(tmp_path / "run/checkpoints")).restore(template)
    assert meta["kind"] == "ssvd" and meta["image_size"] == 64
    assert _equal(restored, variables)

    (tmp_path / "broken.pth").write_bytes(b"\x00" * 10)
    cmd[-2] = f"--input={tmp_path / 'broken.pth'}"
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert done.returncode != 0
    assert "broken.pth" in done.stderr and "Traceback" not in done.stderr


def test_convert_pwcnet_kind(tiny_model, tmp_path):
    from configs import tiny as tiny_config
    from ssvd_jax.checkpoint import Checkpointer

    _, variables, _, _ = tiny_model
    pwc = {
        k: v
        for k, v in convert.ssvd_to_torch_state_dict(variables).items()
        if k.startswith("flownet.")
    }
    np.savez(tmp_path / "pwc.npz", **pwc)
    config = tiny_config.get_config()
    config.data.image_size = 64
    folder = convert.run(config, str(tmp_path), str(tmp_path / "pwc.npz"), "pwcnet")
    template = {"params": jax.eval_shape(lambda: variables["params"]["flownet"])}
    restored, meta = Checkpointer(folder).restore(template)
    assert meta["kind"] == "pwcnet"
    assert _equal(restored["params"], variables["params"]["flownet"])
