"""Export (`main.py --mode=export`, ssvd_jax/export.py) and the standalone runner
(tools/run_exported.py).

Quick:
- The exported step's own driver (ring-buffer slots, schedule with its clamping, readiness,
  end-of-video drain: `export.plan_step` on the state's counters) makes, step by step, the
  decisions of the engine's host driver (`OnlineEngine.run_streams`) for every schedule and for
  lengths 1 to 31.
- The runner's preprocessing is the evaluation's (`input_pipeline.preprocess`), bit for bit.
- A random tiny SSVD, exported, runs in a fresh process through the runner's command line on a
  frame folder; the process never imports flax or ssvd_jax, and its detections equal the
  engine's on the same frames (and the devkit lines are the same).
Slow (a tiny model trained 2 steps per phase, its val videos cut to 1, 6 and 12 frames: the
window is 7): for both phases (the single-frame detector and SSVD), `--mode=export` and the
runner give `--mode=eval`'s detections on every frame: raw arrays in-process (scores within
1e-5) and the written devkit rows.
"""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from input_pipeline.preprocess import preprocess, read_frame
from ssvd_jax import export, inference, jobs
from ssvd_jax import workdir as workdir_lib
from ssvd_jax.checkpoint import restore_model
from ssvd_jax.evaluation import results, score, vid_ap
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables
from ssvd_jax.ops import postprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tools" / "run_exported.py"
SIZE = 64


def load_runner():
    spec = importlib.util.spec_from_file_location("run_exported", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the step's driver vs the engine's host driver ---------------------------------------------


def engine_decisions(engine: inference.OnlineEngine, length: int) -> list[tuple]:
    """(push slot, push?, entry slots, detect?, reference) per step of `run_streams` on one
    video, with the device step replaced by a recorder."""
    steps = []
    zeros = postprocess.Detections(*(np.zeros((1, 1, 4) if i == 0 else (1, 1)) for i in range(7)))

    def step(state, new_images, push_slot, do_push, entry_slots, do_detect):
        steps.append([int(push_slot[0]), bool(do_push[0]), entry_slots[0].tolist(),
                      bool(do_detect[0])])  # fmt: skip
        return state, {"fused": zeros}

    engine.init_state = lambda: {}
    engine.step = step
    video = inference.Video(iter(np.zeros((length, 1, 1, 3))), length, (1, 1))
    references = iter([t for _, t, _ in engine.run_streams([video])])
    return [(*s, next(references) if s[3] else -1) for s in steps]


@pytest.mark.parametrize(
    "schedule,supports,half_window",
    [("release", 0, 3), ("release", 0, 15), ("paper", 0, 3), ("paper", 2, 3), ("paper", 6, 12)],
)
def test_exported_driver_decides_as_the_engine_host_driver(schedule, supports, half_window):
    engine = inference.OnlineEngine(
        None, None, image_size=1, detect_fn=None, schedule=schedule, num_supports=supports,
        half_window=half_window, num_videos=1, cached=True,
    )  # fmt: skip
    constants = export.schedule_constants(engine)
    plan = jax.jit(lambda counters: export.plan_step(counters, **constants))
    for length in [*range(1, 17), 24, 31]:
        want = engine_decisions(engine, length)
        got, counters = [], jnp.array([length, 0, 0], jnp.int32)
        while int(counters[2]) < length:
            p = jax.tree.map(np.asarray, plan(counters))
            got.append((int(p["push_slot"]), bool(p["do_push"]), p["entry_slots"].tolist(),
                        bool(p["do_detect"]), int(p["reference"])))  # fmt: skip
            counters = p["counters"]
        # The engine writes slot 0 / zero entries where it neither pushes nor detects.
        for g, w in zip(got, want, strict=True):
            assert g[1] == w[1] and g[3] == w[3] and g[4] == w[4], (length, got, want)
            if w[1]:
                assert g[0] == w[0], (length, got, want)
            if w[3]:
                assert g[2] == w[2], (length, got, want)
        assert len(got) == len(want)


def test_runner_preprocessing_is_the_evaluations(rng):
    runner = load_runner()
    mean = (102.9801, 115.9465, 122.7717)
    for height, width in [(64, 64), (37, 101), (480, 640)]:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        want = preprocess(image, image_size=SIZE, mean_bgr=mean)
        got = runner.preprocess(image, SIZE, mean)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


# ---- a random tiny SSVD, exported, in a fresh process ------------------------------------------


def write_frames(folder: pathlib.Path, frames: list[np.ndarray]) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:06d}.png"), frame)  # lossless: the same pixels back
    return folder


def run_runner(artifact, frames, output, first_frame_id=1, check_modules=False):
    """The runner's command line in a fresh process (cwd: the repository, where ssvd_jax
    could be imported); with `check_modules`, also which project/Flax modules it imported."""
    args = ["--artifact", str(artifact), "--input", str(frames), "--output", str(output),
            "--first-frame-id", str(first_frame_id)]  # fmt: skip
    if not check_modules:
        command = [sys.executable, str(RUNNER), *args]
    else:
        code = (
            "import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('run_exported', {str(RUNNER)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"code = m.main({args!r})\n"
            "roots = ('flax', 'ssvd_jax', 'input_pipeline', 'configs', 'orbax', 'tensorflow')\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in roots)\n"
            "print(json.dumps({'code': code, 'imported': bad}))\n"
        )
        command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def read_rows(path) -> dict[int, np.ndarray]:
    """frame id -> its rows [class, score, x1, y1, x2, y2], in file order."""
    table = np.loadtxt(path, ndmin=2).reshape(-1, 7)
    return {int(f): table[table[:, 0] == f, 1:] for f in np.unique(table[:, 0])}


def assert_same_rows(got_path, want_path):
    """Same frames, classes and order; scores and boxes equal to their printed precision (one
    unit in the last decimal where a value lies on a rounding edge)."""
    got, want = read_rows(got_path), read_rows(want_path)
    assert sorted(got) == sorted(want)
    for frame in want:
        g, w = got[frame], want[frame]
        assert g.shape == w.shape, frame
        np.testing.assert_array_equal(g[:, 0], w[:, 0])
        np.testing.assert_allclose(g[:, 1], w[:, 1], atol=1.01e-4)
        np.testing.assert_allclose(g[:, 2:], w[:, 2:], atol=1.01e-2)


# The two-stream model's compiles take ~40 s (in this process and in the runner's).
@pytest.mark.parametrize(
    "variant", ["single_frame", pytest.param("two_stream", marks=pytest.mark.slow)]
)
def test_random_model_exports_and_runs_in_a_fresh_process(variant, tmp_path, rng):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.postprocess.update(dict(score_threshold=0.005, pre_nms_top_n=50, max_detections=20))
    model = ssvd_lib.create_model(config.model, variant=variant)
    frames_per_clip = 1 if variant == "single_frame" else 3
    variables = init_variables(model, jnp.zeros((1, frames_per_clip, SIZE, SIZE, 3)), seed=3)
    engine = inference.create_engine(config, model, variables, num_videos=1)
    artifact = tmp_path / "artifact"
    meta = export.export_engine(
        engine, str(artifact), pixel_mean_bgr=config.data.pixel_mean_bgr, platforms=("cpu",),
        source={"test": "random weights"},
    )  # fmt: skip
    assert meta["platforms"] == ["cpu"] and meta["buffer_size"] == engine.buffer_size
    assert [leaf["name"] for leaf in meta["state"]][-1] == "counters"
    # Smooth random frames (noise would leave every score at the prior): 5 frames of 80x48.
    frames = [
        cv2.resize(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), (80, 48)) for _ in range(5)
    ]
    folder = write_frames(tmp_path / "video", frames)
    out = run_runner(artifact, folder, tmp_path / "dets.txt", first_frame_id=7,
                     check_modules=True)  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"code": 0, "imported": []}
    # The engine on the same frames, as the evaluation feeds it.
    images = [preprocess(read_frame(p), image_size=SIZE, mean_bgr=config.data.pixel_mean_bgr)
              for p in sorted(folder.iterdir())]  # fmt: skip
    video = inference.Video(iter(images), len(images), (80, 48))
    rows = []
    for _, t, dets in engine.run([video]):
        keep = dets.valid
        rows.append(vid_ap.Detections(
            frame_id=np.full(int(keep.sum()), 7 + t), label=dets.labels[keep],
            score=dets.scores[keep], boxes=dets.boxes[keep],
        ))  # fmt: skip
    want = vid_ap.Detections.concatenate(rows)
    assert len(want) > 0
    results.write_detections(tmp_path / "engine.txt", want)
    assert_same_rows(tmp_path / "dets.txt", tmp_path / "engine.txt")


def test_runner_names_a_missing_artifact(tmp_path):
    done = subprocess.run(
        [sys.executable, str(RUNNER), "--artifact", str(tmp_path / "nothing"), "--input",
         str(tmp_path), "--output", str(tmp_path / "d.txt")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: not an exported artifact (no meta.json): see main.py "
        "--mode=export"
    ]


# ---- a trained tiny model: runner == --mode=eval ---------------------------------------------

LENGTHS = (1, 6, 12)  # the window (2K + 1 with K = 3) is 7 frames


def _config(data_dir):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.data.root = str(data_dir / "ILSVRC2015")
    config.data.synthetic.create_root = True
    config.data.tfds_dir = str(data_dir / "tfds")
    config.data.synthetic.val_videos = len(LENGTHS)
    config.data.synthetic.frames = max(LENGTHS)
    for phase in ("phase1", "phase2"):
        config.schedule[phase].steps = 2
    config.eval.after_training = False
    config.eval.link.method = ""
    config.postprocess.score_threshold = 0.005  # two steps leave scores near the prior
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("export_data")
    workdir = tmp_path_factory.mktemp("export_run")
    config = _config(data_dir)
    jobs.train_and_evaluate(config, str(workdir))
    # Val videos cut to LENGTHS frames by a frame list (global ids 1..19), and the same frames
    # as folders for the runner.
    lines, folders, first_ids, next_id = [], [], [], 1
    videos = score.evaluation_videos(config.data.root, "val")
    for (video, _), length in zip(videos, LENGTHS, strict=True):
        folder = data_dir / "cut" / video.video_id.split("/")[-1]
        folder.mkdir(parents=True)
        first_ids.append(next_id)
        for t in range(length):
            lines.append(f"{video.video_id}/{video.frames[t]} {next_id}\n")
            shutil.copy(video.image_path(config.data.root, t), folder)
            next_id += 1
        folders.append(folder)
    frame_list = data_dir / "cut_frames.txt"
    frame_list.write_text("".join(lines))
    config.eval.frame_list = str(frame_list)
    jobs.evaluate(config, str(workdir))
    return config, workdir, folders, first_ids


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["phase1", "phase2"])
def test_runner_equals_eval_on_short_long_and_one_frame_videos(trained, phase, tmp_path):
    config, workdir, folders, first_ids = trained
    checkpoint = workdir_lib.checkpoint_dir(str(workdir), phase)
    artifact = tmp_path / "artifact"
    if phase == "phase2":  # the command line, as the README shows it
        done = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "--mode=export", "--config=configs/tiny.py",
             f"--workdir={workdir}", f"--checkpoint={checkpoint}", f"--output={artifact}",
             f"--config.data.image_size={SIZE}", f"--config.data.root={config.data.root}",
             f"--config.postprocess.score_threshold={config.postprocess.score_threshold}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"to {artifact}" in done.stdout and "platforms cpu" in done.stdout
    else:
        jobs.export(config, str(workdir), checkpoint, str(artifact))
    meta = json.loads((artifact / "meta.json").read_text())
    variant = "single_frame" if phase == "phase1" else "two_stream"
    assert meta["source"]["variant"] == variant and meta["source"]["step"] == 2
    assert meta["buffer_size"] == (1 if phase == "phase1" else 7)
    # The written rows, video by video, against the evaluation's file.
    parts = []
    for folder, first in zip(folders, first_ids, strict=True):
        out = tmp_path / f"{folder.name}.txt"
        run_runner(artifact, folder, out, first_frame_id=first)
        parts.append(out.read_text())
    (tmp_path / "runner.txt").write_text("".join(parts))
    eval_file = pathlib.Path(workdir_lib.eval_dir(str(workdir), phase), "det_VID_val.txt")
    assert_same_rows(tmp_path / "runner.txt", eval_file)
    # The raw arrays, in this process: the runner's Artifact against the evaluation's engine.
    runner = load_runner()
    loaded = runner.Artifact(str(artifact))
    model, variables, _ = restore_model(checkpoint, config)
    engine = inference.create_engine(config, model, variables, per_stream=True)
    for folder in folders:
        frames, length, size = runner.open_input(str(folder))
        got = list(loaded.detect_video(frames, length, size))
        paths = sorted(folder.iterdir())
        video = inference.Video(
            (preprocess(read_frame(p), image_size=SIZE, mean_bgr=config.data.pixel_mean_bgr)
             for p in paths), len(paths), size,
        )  # fmt: skip
        want = list(engine.run([video]))
        assert [t for t, *_ in got] == [t for _, t, _ in want] == list(range(length))
        for (_, boxes, scores, labels), (_, _, d) in zip(got, want, strict=True):
            keep = d.valid
            np.testing.assert_array_equal(labels, d.labels[keep])
            np.testing.assert_allclose(scores, d.scores[keep], rtol=0, atol=1e-5)
            np.testing.assert_allclose(boxes, d.boxes[keep], rtol=0, atol=1e-3)
