"""Multiply-accumulates of a jax function, counted from its jaxpr (convolutions and matmuls).

XLA's `cost_analysis()` counts a loop body once whatever its trip count, so the deformable
convolution (a `lax.scan` over its 9 taps) would count for a ninth of its matmuls; it also
counts elementwise flops. Here every `conv_general_dilated` and `dot_general` is counted as
executed (a transposed convolution's zero-dilated input included, as XLA runs it), a `scan` body
times its length, a `cond` as its most expensive branch (in an engine's steady state every
branch that matters is taken), and nested calls (jit, custom_vjp/jvp, remat) are entered.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.extend import core as jax_core


def _conv_macs(eqn: Any) -> int:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    # rhs_spec: (out feature dim, in feature dim, *spatial dims) positions in the kernel shape.
    rhs_spec = dn.rhs_spec
    in_features = rhs[rhs_spec[1]]
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    return math.prod(out) * window * in_features


def _dot_macs(eqn: Any) -> int:
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    return math.prod(out) * math.prod(lhs[d] for d in lhs_contract)


def _sub_jaxprs(eqn: Any) -> list[Any]:
    found = []
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax_core.ClosedJaxpr):
                found.append(v.jaxpr)
            elif isinstance(v, jax_core.Jaxpr):
                found.append(v)
    return found


def jaxpr_macs(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_macs(eqn.params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
        else:
            total += sum(jaxpr_macs(sub) for sub in _sub_jaxprs(eqn))
    return total


def count_macs(fn: Any, *args: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one call of `fn(*args, **kwargs)` (arrays or ShapeDtypeStructs)."""
    return jaxpr_macs(jax.make_jaxpr(fn, **kwargs)(*args).jaxpr)
