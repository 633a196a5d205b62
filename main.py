"""ssvd_jax command line: parses flags, runs the mode's job (`ssvd_jax/jobs.py`), prints its text.

python main.py                      # the embedded default: synthetic data, both phases, eval, demo
python main.py --mode=eval --config=configs/default.py --workdir=runs/default
python main.py --mode=demo --workdir=runs/synthetic --input=clip.mp4 --output=clip_boxes.mp4
python main.py --mode=sweep --config=configs/tiny.py --workdir=runs/table2 --sweep=table2
python main.py --mode=convert --config=configs/default.py --input=ssvd_1.pth --workdir=runs/rel
python main.py --mode=check --config=configs/default.py --config.data.root=/data/ILSVRC2015
python main.py --mode=export --workdir=runs/synthetic --output=runs/synthetic/export/phase2
A problem the user can fix prints `error: <file>: <problem>` and exits with 2 (--debug: traceback).
"""

import sys

from ssvd_jax import runtime

# Before threads start allocating; the XLA flags follow in main(), from the config, before any
# jax computation (XLA reads XLA_FLAGS once). ssvd_jax/runtime.py says what and why.
runtime.tune_glibc_malloc()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ssvd_jax import errors  # noqa: E402


def fail(line: str, code: int = errors.EXIT_USER_ERROR):
    print(line, file=sys.stderr)
    raise SystemExit(code)


FLAGS = flags.FLAGS
DEFAULT_CONFIG = "configs/synthetic.py"
try:  # ml_collections checks the --config.<key> overrides here, against the default config
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file.", lock_config=True)
except (AttributeError, KeyError) as e:  # a key the config has no field for
    if "--debug" in sys.argv:
        raise
    fail(errors.config_override_error(e, sys.argv, DEFAULT_CONFIG).line())
flags.DEFINE_string("workdir", "runs/synthetic", "Folder for data, checkpoints and results.")
MODES = ("train", "eval", "demo", "sweep", "overfit", "convert", "score", "check", "export")
flags.DEFINE_enum("mode", "train", MODES, "The job to run (ssvd_jax/jobs.py says what each does).")
flags.DEFINE_string("checkpoint", None, "eval/demo/export: an orbax checkpoint folder, for eval "
                    "also another run's workdir (default: the workdir's trained phases for eval, "
                    "its last phase else).")  # fmt: skip
flags.DEFINE_string("input", None, "demo: an mp4 or frame folder. convert: the .pth/.npz file.")
flags.DEFINE_string("output", None, "demo: the mp4 to write. export: the artifact folder.")
flags.DEFINE_enum("checkpoint_kind", "ssvd", ["ssvd", "pwcnet", "resnet"], "convert: what "
                  "--input holds (the release, a PWC-Net, a torchvision ResNet).")  # fmt: skip
flags.DEFINE_string("detections", None, "score: a `frame_id class score x1 y1 x2 y2` file.")
flags.DEFINE_string("tracks", None, "score: a `frame_id class track score x1 y1 x2 y2` file.")
flags.DEFINE_string("split", "val", "score: the VID split whose annotations are the truth.")
flags.DEFINE_string("frame_list", None, "score: optional frame list defining the frame ids.")
flags.DEFINE_bool("seq_nms", False, "score: apply Seq-NMS before scoring.")
flags.DEFINE_string("sweep", "table2", "sweep: which of the config's sweeps to run.")
flags.DEFINE_bool("debug", False, "Show the traceback of an error instead of its one line.")
NEEDS = {"demo": ("input", "output"), "convert": ("input",)}  # score: detections or tracks
OPTIONS = ("checkpoint", "input", "output", "checkpoint_kind", "detections", "tracks", "split",
           "frame_list", "seq_nms", "sweep")  # fmt: skip


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    missing = [f"--{name}" for name in NEEDS.get(FLAGS.mode, ()) if not FLAGS[name].value]
    if missing:
        raise app.UsageError(f"--mode={FLAGS.mode} needs {' and '.join(missing)}")
    logging.set_verbosity(logging.INFO)
    from ssvd_jax import jobs, metric_logging

    metric_logging.quiet_library_info()
    config_path = config_flags.get_config_filename(FLAGS["config"])
    options = {name: FLAGS[name].value for name in OPTIONS} | {"config_path": config_path}
    try:
        with errors.loading_config(config_path):
            config = FLAGS.config.lock()  # (reading it raises what loading the file raised)
        runtime.configure_from_config(config, source=config_path)  # before jax starts
        result = jobs.run_mode(FLAGS.mode, config, FLAGS.workdir, options)
    except KeyboardInterrupt:  # outside the training loop, or a second Ctrl-C inside it
        fail(f"stopped: {FLAGS.workdir}: interrupted", 130)
    except Exception as e:
        if FLAGS.debug or errors.describe(e) is None:
            raise
        fail(*errors.describe(e))
    print(result.text)
    return result.exit_code


def parse_flags(argv):
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as e:  # a wrong value or --config.<key>
        if "--debug" in argv:
            raise
        fail(errors.command_line_error(e, argv, DEFAULT_CONFIG).line())


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
