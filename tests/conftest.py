"""Shared test set-up.

torch/torchvision must be imported before tensorflow in one process (the other order segfaults
with tensorflow-cpu 2.21 + torchvision 0.29.1), so import them here, before any test module is
collected. Four host devices let the pmap paths run on CPU.

Fixtures: `fixtures_dir` is `tests/fixtures` (golden parity arrays, the ILSVRC2015-VID mini tree,
the release's key lists), part of the repository. `rng` is the one source of random test inputs:
a fresh seed per test, printed when the test fails, replayable with `SSVD_TEST_SEED=<seed>`.
"""

import os
import pathlib
import secrets

# LLVM optimisation level 0: the suite is compile-bound (tiny models, seconds of compute, minutes
# of compiles); level 0 compiles SSVD's train step ~2.5x faster. Semantics are the same (no
# fast-math either way); the big convolutions are library calls, unaffected.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch/torchvision before anything that may import tensorflow (test modules, input_pipeline).
# torch is a test requirement (requirements-dev.txt): parity tests never skip for want of it.
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: F401, E402
import torchvision  # noqa: F401, E402

jax.config.update("jax_enable_x64", False)

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
SEED_ENV = "SSVD_TEST_SEED"
_SEED_KEY = "random seed"


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    if not (FIXTURES / "ssvd_reference_parity").is_dir():
        pytest.fail(
            f"test fixtures not found at {FIXTURES}: they are part of the repository "
            "(tests/fixtures/ssvd_reference_parity, ilsvrc2015_vid_mini, ssvd_release_keys)"
        )
    return FIXTURES


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy Generator with a fresh seed per test (or `SSVD_TEST_SEED`), reported on failure.

    Derive jax keys from it as `jax.random.key(int(rng.integers(2**31)))`.
    """
    env = os.environ.get(SEED_ENV)
    seed = int(env) if env else secrets.randbits(32)
    request.node.user_properties.append((_SEED_KEY, seed))
    return np.random.default_rng(seed)


_MODULE_SEEDS: dict[str, int] = {}


@pytest.fixture(scope="module")
def module_rng(request) -> np.random.Generator:
    """`rng` for module-scoped fixtures (inputs shared by a module's tests): one seed per module,
    reported on the failure of any test that uses it (directly or through a fixture)."""
    env = os.environ.get(SEED_ENV)
    seed = int(env) if env else secrets.randbits(32)
    _MODULE_SEEDS[request.module.__name__] = seed
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    seeds = [v for k, v in item.user_properties if k == _SEED_KEY]
    if "module_rng" in getattr(item, "fixturenames", ()) and item.module.__name__ in _MODULE_SEEDS:
        seeds.append(_MODULE_SEEDS[item.module.__name__])
    if seeds:
        line = f"random seed: {seeds[-1]} (replay with {SEED_ENV}={seeds[-1]})"
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("random seed", line)  # printed under the traceback
        else:
            report.sections.append(("random seed", line))
