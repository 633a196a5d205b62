"""Initialising model variables quickly.

`model.init` under the default threefry PRNG compiles one unrolled random-bits kernel per
parameter; for SSVD that compile alone takes about a minute on CPU. The 'rbg' generator
compiles ~6x faster and is what Flax's own large examples recommend for initialisation; the
values differ from threefry's but are just as good as random initial weights.

On CPU the init program is also compiled for compiling fast (`FAST_COMPILE`): it runs once, and
it is many small elementwise chains (one per parameter) that XLA's optimisations and YNNPACK's
fusions only slow down. Measured on 2 CPU cores, the two-stream SSVD of configs/synthetic.py:
30.4 s -> 13.8 s to compile, the values equal to within 1 ulp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from ssvd_jax.runtime import WITHOUT_YNN_FUSIONS

# XLA:CPU options for a program that runs once: no YNNPACK fusions (hundreds of tiny fusions
# with their own buffers) and LLVM's least optimisation.
FAST_COMPILE: dict[str, Any] = {**WITHOUT_YNN_FUSIONS, "xla_backend_optimization_level": 0}


def init_variables(model: nn.Module, *example_inputs: Any, seed: int = 0, **kwargs: Any):
    """Jitted `model.init` with an rbg key; `example_inputs` only give shapes and dtypes.
    On CPU compiled with `FAST_COMPILE`; under a trace (e.g. inside `jax.eval_shape`, where
    nothing is compiled) the plain jitted function."""
    key = jax.random.key(seed, impl="rbg")
    return run_once(lambda k, *a: model.init(k, *a, **kwargs), key, *example_inputs)


def run_once(fn: Callable[..., Any], *args: Any) -> Any:
    """`jax.jit(fn)(*args)` for a program that runs once (a picture's forward pass): on CPU
    compiled with `FAST_COMPILE`, whose slower code costs far less than the optimisation it
    skips. Measured on 2 cores, the synthetic two-stream SSVD's forward with intermediates on
    a 7-frame clip: 14-20 s -> 6 s to compile, 0.11 -> 0.2 s to run."""
    jitted = jax.jit(fn)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))
    if traced or jax.default_backend() != "cpu":  # under a trace nothing is compiled here
        return jitted(*args)
    return jitted.lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def abstract_variables(model: nn.Module, *example_inputs: Any, **kwargs: Any):
    """The variables' shapes and dtypes (ShapeDtypeStructs) without computing any of them."""
    return jax.eval_shape(
        lambda k, *a: model.init(k, *a, **kwargs), jax.random.key(0), *example_inputs
    )
