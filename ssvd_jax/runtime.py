"""Process-wide CPU settings for ssvd_jax's entry points (main.py, the benchmarks).

Call `configure_cpu_runtime()` first thing in a process: before the first jax computation (XLA
reads `XLA_FLAGS` once, when jax creates its first backend) and before threads start allocating
(glibc only applies the arena limit to arenas created later). main.py tunes malloc at import
and sets the XLA flags from the config (`runtime.xla_cpu_ynn_fusion`) before its job starts.
It does two things.

1. XLA:CPU flag defaults, added to `XLA_FLAGS` unless the user already set that flag:
   `--xla_cpu_experimental_ynn_fusion_type=<ynn_fusion>`, 'eltwise' unless told otherwise.
   Measured with jaxlib 0.10.2 on a 2-core AVX2 CPU, R-101 FPN RetinaNet at 448x448, the
   variants interleaved in one process (benchmarks/single_frame.py):
   - jaxlib's default sends each convolution on its own to YNNPACK; that ran about 15% slower
     than XLA's own (Eigen) convolutions, which are what the empty setting gives (and what
     shared/docs/PERF_NOTES.md recommended).
   - 'eltwise' lets YNNPACK take whole conv + frozen BN + residual + ReLU chains as one fused
     subgraph, so the elementwise epilogues stop making separate passes over the activations:
     5% faster than the empty setting at batch 1 and 12% at batch 8 (with the malloc tuning
     below); a forward+backward step of the detector (224x224, batch 2) took 30% less CPU
     time. Outputs differ from the empty setting by float
     rounding only (2e-6 of the largest logit), and the golden parity tests pass under it.
   - Small models are the other way round: configs/synthetic.py's (1/4 widths, 128x128,
     GroupNorm) trained 15-27% faster with the empty setting (train steps interleaved, median
     ms, eltwise -> empty: phase 1 155 -> 121 and 137 -> 117, PWC-Net pretraining 191 -> 139,
     phase 2 735 -> 563), for 5 s (phase 1) to 20-35 s (phase 2) more compile time. Hence
     the config switch, which the synthetic config sets to ''.
   - Exception: a program of many small elementwise chains, such as the random initialisers of
     `model.init`, becomes hundreds of separate YNNPACK fusions with their own buffers: the
     R-101 detector's jitted init needed 2.4 GB of temporaries instead of 29 MB (and 17 s
     instead of 12). Compile such programs with `compiler_options=WITHOUT_YNN_FUSIONS`.
2. glibc malloc tuning (Linux/glibc only; skipped when the environment already configures
   malloc through MALLOC_* or GLIBC_TUNABLES): never return freed memory to the OS and serve
   large blocks from one heap instead of fresh mmaps. XLA:CPU and YNNPACK allocate their
   temporaries anew on every call; by default each block above the mmap threshold is a fresh
   mapping that the kernel must fault in and zero page by page, and blocks larger than a
   per-thread arena's 64 MB heap are mmapped whatever the threshold, hence one arena. At
   batch 8 this took the forward's kernel time from about 1.1 s per call to nothing and the
   total from 1171 to 1040 ms per image (at batch 1: no measurable change in JAX; torch's
   forward gained 4%). The cost: the process keeps its peak heap, all threads share one malloc
   arena, and when fragmentation makes a call's temporaries land on fresh heap the heap grows
   by their size once (seen rarely, as one call with page faults).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

DEFAULT_YNN_FUSION = "eltwise"
# What `--xla_cpu_experimental_ynn_fusion_type` accepts: '' (none: XLA's own kernels) or a
# comma-separated list of these (XLA's LibraryFusionType, lower case).
YNN_FUSION_KINDS = ("dot", "eltwise", "reduce", "individual_dot", "individual_convolution")


def xla_cpu_flags(ynn_fusion: str = DEFAULT_YNN_FUSION) -> tuple[str, ...]:
    """The XLA:CPU flags `configure_cpu_runtime` adds, for a YNNPACK fusion setting."""
    if not valid_ynn_fusion(ynn_fusion):
        raise ValueError(f"ynn_fusion {ynn_fusion!r}: '' or a comma list of {YNN_FUSION_KINDS}")
    return (f"--xla_cpu_experimental_ynn_fusion_type={ynn_fusion}",)


def valid_ynn_fusion(value: str) -> bool:
    return isinstance(value, str) and (
        value == "" or all(kind in YNN_FUSION_KINDS for kind in value.split(","))
    )


DEFAULT_XLA_FLAGS: tuple[str, ...] = xla_cpu_flags()

# Per-compile override that turns the YNNPACK fusions off again:
# `jax.jit(f).lower(*args).compile(compiler_options=WITHOUT_YNN_FUSIONS)`.
WITHOUT_YNN_FUSIONS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}

# mallopt(3) parameters from glibc's malloc.h, and the values we set.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
MALLOPT_SETTINGS: tuple[tuple[int, int], ...] = (
    (_M_MMAP_THRESHOLD, 2_000_000_000),  # no block is big enough to get its own mmap
    (_M_TRIM_THRESHOLD, 2_000_000_000),  # never give the heap's free top back to the OS
    (_M_TOP_PAD, 512 << 20),  # grow the heap in large steps (few brk calls)
    (_M_ARENA_MAX, 1),  # one brk heap for all threads: no 64 MB per-thread heap limit
)


def configure_cpu_runtime(tune_malloc: bool = True, ynn_fusion: str = DEFAULT_YNN_FUSION) -> str:
    """Apply the XLA flag defaults (`xla_cpu_flags(ynn_fusion)`) and (optionally) the malloc
    tuning; returns `XLA_FLAGS`. Raises RuntimeError when jax has already started a backend
    (the flags would silently not apply)."""
    if tune_malloc:
        tune_glibc_malloc()
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise RuntimeError("configure_cpu_runtime: jax has already started; call it first")
    return add_default_xla_flags(xla_cpu_flags(ynn_fusion))


def configure_from_config(config: Any, *, source: str = "config") -> str:
    """`configure_cpu_runtime` (without the malloc part) with the config's
    `runtime.xla_cpu_ynn_fusion`; a value XLA would not take is a ConfigError (from `source`)
    before it reaches XLA_FLAGS."""
    from ssvd_jax.errors import ConfigError

    value = config.runtime.xla_cpu_ynn_fusion
    if not valid_ynn_fusion(value):
        raise ConfigError("runtime.xla_cpu_ynn_fusion", value,
                          f"'' or a comma list of {YNN_FUSION_KINDS}", source=source)  # fmt: skip
    return configure_cpu_runtime(tune_malloc=False, ynn_fusion=value)


def add_default_xla_flags(defaults: tuple[str, ...] = DEFAULT_XLA_FLAGS) -> str:
    """Add `defaults` to the `XLA_FLAGS` environment variable; returns the new value.

    Each default is skipped when `XLA_FLAGS` already names that flag, so an explicit setting
    (including `--xla_cpu_experimental_ynn_fusion_type=`, the empty list) wins; other user flags
    are kept. Harmless on GPU: these flags only affect the CPU backend.
    """
    current = os.environ.get("XLA_FLAGS", "")
    named = {token.split("=", 1)[0] for token in current.split()}
    added = [flag for flag in defaults if flag.split("=", 1)[0] not in named]
    value = " ".join([current, *added]).strip()
    os.environ["XLA_FLAGS"] = value
    return value


def tune_glibc_malloc() -> bool:
    """Apply `MALLOPT_SETTINGS` through glibc's mallopt; True if all of them took effect.

    A no-op (False) off Linux, without glibc, or when the user configured malloc through the
    environment (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ..., or GLIBC_TUNABLES).
    """
    if not sys.platform.startswith("linux"):
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(param, value) == 1 for param, value in MALLOPT_SETTINGS])


def enable_compilation_cache(folder: str) -> None:
    """JAX's persistent compilation cache in `folder` (e.g. `<workdir>/jax_cache`): a re-run,
    an evaluation or a demo of the same model loads its compiled programs instead of
    compiling them again (the phase-2 step took 1-3 minutes to compile on 2 CPU cores).
    Every program that took at least a second to compile is kept."""
    import jax

    os.makedirs(folder, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
