"""The import graph is one-way, as in DESIGN.md's target layout, and nothing below the jobs
layer prints or reads flags. Checked on the source (ast), so a new import that breaks the
layering fails here, not in a review.

Floors (a module may import only its own floor or lower ones, plus third-party packages):
  0  ssvd_jax (the package), ssvd_jax.ops.*, files, runtime, metric_logging, workdir, errors
     (the one user-facing error type), locks, configs.*
  1  ssvd_jax.models.*, input_pipeline.*
  2  objective, checkpoint, config_check, evaluation.{vid_ap, motion, seq_nms, results, score,
     report, subsets, tracks, linking, track_ap, stability, track_results}
  3  train, inference
  4  trainer, visualize, evaluation.detect, export
  5  jobs, sweep, overfit, convert
  6  main
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLOORS = {
    0: ("ssvd_jax", "ssvd_jax.ops", "ssvd_jax.files", "ssvd_jax.runtime", "ssvd_jax.metric_logging",
        "ssvd_jax.workdir", "ssvd_jax.errors", "ssvd_jax.locks", "configs"),
    1: ("ssvd_jax.models", "input_pipeline"),
    2: ("ssvd_jax.objective", "ssvd_jax.checkpoint", "ssvd_jax.config_check",
        "ssvd_jax.evaluation.vid_ap",
        "ssvd_jax.evaluation.motion", "ssvd_jax.evaluation.seq_nms",
        "ssvd_jax.evaluation.results", "ssvd_jax.evaluation.score",
        "ssvd_jax.evaluation.report", "ssvd_jax.evaluation.subsets", "ssvd_jax.evaluation",
        "ssvd_jax.evaluation.tracks", "ssvd_jax.evaluation.linking",
        "ssvd_jax.evaluation.track_ap", "ssvd_jax.evaluation.stability",
        "ssvd_jax.evaluation.track_results"),
    3: ("ssvd_jax.train", "ssvd_jax.inference", "ssvd_jax.evaluation.flow"),
    4: ("ssvd_jax.trainer", "ssvd_jax.visualize", "ssvd_jax.pictures",
        "ssvd_jax.evaluation.detect", "ssvd_jax.export"),
    5: ("ssvd_jax.jobs", "ssvd_jax.sweep", "ssvd_jax.overfit", "ssvd_jax.convert"),
    6: ("main",),
}  # fmt: skip
TRAINING = ("ssvd_jax.objective", "ssvd_jax.train", "ssvd_jax.trainer")
NOT_FOR_TRAINING = ("ssvd_jax.evaluation", "ssvd_jax.inference", "ssvd_jax.visualize",
                    "ssvd_jax.jobs")  # fmt: skip


def floor(module: str) -> int | None:
    """The floor of a project module (the longest matching prefix), None for third-party."""
    best, length = None, -1
    for level, prefixes in FLOORS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = level, len(p)
    return best


def project_modules() -> dict[str, pathlib.Path]:
    out = {"main": ROOT / "main.py"}
    for package in ("ssvd_jax", "input_pipeline", "configs"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = project_modules()


def imports_of(name: str, tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from ssvd_jax import jobs` imports the module ssvd_jax.jobs.
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in MODULES)  # fmt: skip
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports_only_lower_floors(name):
    own = floor(name)
    assert own is not None, f"{name} has no floor in this test's FLOORS: add it"
    tree = ast.parse(MODULES[name].read_text())
    for imported in sorted(imports_of(name, tree)):
        other = floor(imported)
        if other is None:
            continue
        assert other <= own, f"{name} (floor {own}) imports {imported} (floor {other})"
        if name.startswith(TRAINING):
            assert not imported.startswith(NOT_FOR_TRAINING), f"{name} imports {imported}"


def _prints_or_flags(tree: ast.Module) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
            bad.append(f"print() at line {node.lineno}")
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "absl"
            and any(a.name == "flags" for a in node.names)
        ):
            bad.append(f"absl flags imported at line {node.lineno}")
    return bad


@pytest.mark.parametrize("name", sorted(n for n in MODULES if floor(n) is not None))
def test_nothing_below_main_prints_or_reads_flags(name):
    if name == "main":
        return
    tree = ast.parse(MODULES[name].read_text())
    # A module's own command line (`python -m input_pipeline.synthetic`) is a top layer too.
    cli = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    body = ast.Module(body=[n for n in tree.body if n not in cli], type_ignores=[])
    assert not _prints_or_flags(body), f"{name}: {_prints_or_flags(body)}"


def test_main_is_short_and_dispatches_to_jobs():
    text = (ROOT / "main.py").read_text()
    assert len(text.splitlines()) < 100
    assert "from ssvd_jax import jobs" in text


def test_one_model_family_and_one_preprocessing():
    sources = {n: p.read_text() for n, p in MODULES.items()}
    assert not any("SingleFrameDetector" in s for s in sources.values())
    # The training augmentation resizes too (as part of its random geometry); nothing else may.
    resizes = [n for n, s in sources.items() if "cv2.INTER_LINEAR" in s and "cv2.resize" in s]
    assert sorted(resizes) == ["input_pipeline.augment", "input_pipeline.preprocess"], resizes
