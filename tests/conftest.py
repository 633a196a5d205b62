"""Shared test set-up.

torch/torchvision must be imported before tensorflow in one process (the other order segfaults
with tensorflow-cpu 2.21 + torchvision 0.29.1, see shared/docs/PERF_NOTES.md), so import them here,
before any test module is collected. Four host devices let the pmap paths run on CPU.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch/torchvision before anything that may import tensorflow (test modules, input_pipeline).
# torch is a test requirement (requirements-dev.txt): parity tests never skip for want of it.
import jax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: F401, E402
import torchvision  # noqa: F401, E402

jax.config.update("jax_enable_x64", False)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures not found at {FIXTURES} (expected ../shared beside the repo)")
    return FIXTURES
