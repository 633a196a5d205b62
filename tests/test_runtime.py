"""ssvd_jax/runtime.py: the XLA:CPU flags a process runs with, from the config
(`runtime.xla_cpu_ynn_fusion`), and main.py's wiring of them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from configs import default, synthetic
from ssvd_jax import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAG = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.mark.parametrize("value", ["", "eltwise", "dot,eltwise", "individual_convolution"])
def test_xla_cpu_flags_spell_the_setting(value):
    assert runtime.xla_cpu_flags(value) == (f"{FLAG}={value}",)
    assert runtime.valid_ynn_fusion(value)


@pytest.mark.parametrize("value", ["elementwise", "eltwise,", "ELTWISE", None, 1])
def test_an_unknown_setting_is_refused(value):
    assert not runtime.valid_ynn_fusion(value)
    with pytest.raises(ValueError, match="ynn_fusion"):
        runtime.xla_cpu_flags(value)


def test_the_user_xla_flags_win_and_are_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {FLAG}=dot")
    value = runtime.add_default_xla_flags(runtime.xla_cpu_flags(""))
    assert value == f"--xla_force_host_platform_device_count=2 {FLAG}=dot"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    value = runtime.add_default_xla_flags(runtime.xla_cpu_flags(""))
    assert value == f"--xla_force_host_platform_device_count=2 {FLAG}="
    monkeypatch.delenv("XLA_FLAGS")
    assert runtime.add_default_xla_flags() == f"{FLAG}=eltwise"


def test_configure_refuses_once_jax_has_started(monkeypatch):
    import jax

    jax.numpy.zeros(1).block_until_ready()  # the test process's backend is up
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.raises(RuntimeError, match="already started"):
        runtime.configure_cpu_runtime(tune_malloc=False)


def test_the_configs_choose_their_setting():
    assert default.get_config().runtime.xla_cpu_ynn_fusion == "eltwise"
    assert synthetic.get_config().runtime.xla_cpu_ynn_fusion == ""


PROBE = """
import os, sys
sys.argv = ["main.py", *sys.argv[1:]]
import main
from ssvd_jax import jobs
def report(mode, config, workdir, options):
    print("XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""))
    raise SystemExit(0)
jobs.run_mode = report
from absl import app
app.run(main.main, flags_parser=main.parse_flags)
"""


def probe_flags(*args: str, env_flags: str | None = None) -> subprocess.CompletedProcess:
    """main.py's process up to its job: what XLA_FLAGS it would run the job with."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    if env_flags is not None:
        env["XLA_FLAGS"] = env_flags
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip


def test_main_runs_the_job_with_the_configs_setting():
    done = probe_flags("--mode=check")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"XLA_FLAGS={FLAG}=\n" in done.stdout  # configs/synthetic.py, the default
    done = probe_flags("--mode=check", "--config.runtime.xla_cpu_ynn_fusion=eltwise",
                       env_flags="--xla_force_host_platform_device_count=2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"XLA_FLAGS=--xla_force_host_platform_device_count=2 {FLAG}=eltwise\n" in done.stdout


def test_main_names_a_bad_setting_in_one_line():
    done = probe_flags("--config.runtime.xla_cpu_ynn_fusion=fast")
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: configs/synthetic.py: runtime.xla_cpu_ynn_fusion='fast': ")
    assert "Traceback" not in done.stderr
