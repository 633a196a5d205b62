"""ssvd_jax command line: parses flags, runs the mode's job (`ssvd_jax/jobs.py`), prints its text.

python main.py                      # the embedded default: synthetic data, both phases, eval, demo
python main.py --mode=eval --config=configs/default.py --workdir=runs/default
python main.py --mode=demo --workdir=runs/synthetic --input=clip.mp4 --output=clip_boxes.mp4
python main.py --mode=sweep --config=configs/tiny.py --workdir=runs/table2 --sweep=table2
python main.py --mode=convert --config=configs/default.py --input=ssvd_1.pth --workdir=runs/rel
"""

import os

from ssvd_jax.runtime import configure_cpu_runtime, enable_compilation_cache

# Before any jax computation: XLA reads XLA_FLAGS once, when its first backend starts; an
# explicit user setting of a flag wins (ssvd_jax/runtime.py says which defaults and why).
configure_cpu_runtime()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/synthetic.py", "Config file.", lock_config=True)
flags.DEFINE_string("workdir", "runs/synthetic", "Folder for data, checkpoints and results.")
MODES = ("train", "eval", "demo", "sweep", "overfit", "convert", "score")
flags.DEFINE_enum("mode", "train", MODES, "The job to run (ssvd_jax/jobs.py says what each does).")
flags.DEFINE_string("checkpoint", None, "eval/demo: an orbax checkpoint folder (default: the "
                    "workdir's trained phases for eval, its last phase for demo).")  # fmt: skip
flags.DEFINE_string("input", None, "demo: an mp4 or frame folder. convert: the .pth/.npz file.")
flags.DEFINE_string("output", None, "demo: the mp4 file to write.")
KINDS = ["ssvd", "pwcnet", "resnet"]
flags.DEFINE_enum("checkpoint_kind", "ssvd", KINDS, "convert: what the --input file holds "
                  "(the authors' SSVD, a PWC-Net, a torchvision ResNet).")  # fmt: skip
flags.DEFINE_string("detections", None, "score: a `frame_id class score x1 y1 x2 y2` file.")
flags.DEFINE_string("tracks", None, "score: a `frame_id class track score x1 y1 x2 y2` file.")
flags.DEFINE_string("split", "val", "score: the VID split whose annotations are the truth.")
flags.DEFINE_string("frame_list", None, "score: optional frame list defining the frame ids.")
flags.DEFINE_bool("seq_nms", False, "score: apply Seq-NMS before scoring.")
flags.DEFINE_string("sweep", "table2", "sweep: which of the config's sweeps to run.")

NEEDS = {"demo": ("input", "output"), "convert": ("input",)}  # score: detections or tracks


def run_job(mode: str, config, workdir: str):
    from ssvd_jax import jobs

    if mode == "train":
        return jobs.train_and_evaluate(config, workdir)
    if mode == "eval":
        return jobs.evaluate(config, workdir, FLAGS.checkpoint)
    if mode == "demo":
        return jobs.demo(config, workdir, FLAGS.input, FLAGS.output, FLAGS.checkpoint)
    if mode == "score":
        return jobs.score(config, workdir, FLAGS.detections, FLAGS.split, FLAGS.frame_list,
                          FLAGS.seq_nms, tracks=FLAGS.tracks)  # fmt: skip
    if mode == "convert":
        return jobs.convert(config, workdir, FLAGS.input, FLAGS.checkpoint_kind)
    if mode == "overfit":
        from ssvd_jax import overfit

        return overfit.run(config, workdir)
    from ssvd_jax import sweep

    config_path = config_flags.get_config_filename(FLAGS["config"])
    return sweep.run(config, workdir, config_path, FLAGS.sweep)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    missing = [f"--{name}" for name in NEEDS.get(FLAGS.mode, ()) if not FLAGS[name].value]
    if missing:
        raise app.UsageError(f"--mode={FLAGS.mode} needs {' and '.join(missing)}")
    logging.set_verbosity(logging.INFO)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    # Compiled programs persist in the workdir: re-runs, evaluation and the demo reuse them.
    enable_compilation_cache(os.path.join(FLAGS.workdir, "jax_cache"))
    from ssvd_jax import metric_logging, trainer

    metric_logging.quiet_library_info()
    # Bad input (every such error of the project is a ValueError naming the file), a missing
    # file, a diverged or pre-empted run: one line, no traceback.
    expected = (FileNotFoundError, ValueError, trainer.TrainingDiverged, trainer.Preempted)
    try:
        result = run_job(FLAGS.mode, FLAGS.config, FLAGS.workdir)
    except expected as e:
        raise SystemExit(f"{FLAGS.mode} failed: {e}") from None
    print(result.text)
    if result.exit_code:
        raise SystemExit(result.exit_code)


if __name__ == "__main__":
    app.run(main)
