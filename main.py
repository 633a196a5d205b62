"""ssvd_jax command line: parses flags and dispatches; all logic lives in importable modules.

python main.py                      # the embedded default: synthetic data, both phases, eval, demo
python main.py --config=configs/default.py --workdir=runs/default --config.train.batch_size=32
python main.py --mode=eval --config=configs/default.py --workdir=runs/default
python main.py --mode=demo --workdir=runs/synthetic --input=clip.mp4 --output=clip_boxes.mp4
python main.py --mode=sweep --config=configs/tiny.py --workdir=runs/table2 --sweep=table2
python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=overfit
"""

import os

from ssvd_jax.runtime import configure_cpu_runtime

# Before any jax computation: XLA reads XLA_FLAGS once, when its first backend starts; an
# explicit user setting of a flag wins (ssvd_jax/runtime.py says which defaults and why).
configure_cpu_runtime()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/synthetic.py", "Experiment config file (ml_collections).", lock_config=True
)
flags.DEFINE_string("workdir", "runs/synthetic", "Directory for outputs and checkpoints.")
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval", "demo", "sweep", "overfit", "convert", "score"],
    "train: run the config's training phases in --workdir (resuming there), then evaluate them "
    "(eval.after_training). eval: evaluate --checkpoint, or every trained phase of --workdir, on "
    "eval.split with the online engine; writes devkit detections and JSON summaries. demo: draw "
    "the detections of --checkpoint (default: the workdir's last phase) on --input (mp4 or "
    "frame folder) into --output. sweep: train every point of the config's sweep(add, name) "
    "(--sweep) in sub-workdirs and write a summary table. overfit: fit the single-frame "
    "detector to a few generated images and report how well its detections recover the boxes. "
    "convert: turn a PyTorch checkpoint (--checkpoint) into an orbax checkpoint under "
    "<workdir>/checkpoints. score: score a devkit detections file (--detections) against the "
    "ILSVRC annotations under --config.data.root, no model.",
)
flags.DEFINE_string("detections", None, "score: `frame_id class score x1 y1 x2 y2` file.")
flags.DEFINE_string("split", "val", "score: the VID split whose annotations are the truth.")
flags.DEFINE_string("frame_list", None, "score: optional frame list defining the frame ids.")
flags.DEFINE_bool("seq_nms", False, "score: apply Seq-NMS before scoring.")
flags.DEFINE_string("sweep", "table2", "sweep: which of the config's sweeps to run.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "convert: the .pth or .npz file to convert. eval/demo: an orbax checkpoint folder (a "
    "phase's <workdir>/<phase>/checkpoints or a converted <workdir>/checkpoints).",
)
flags.DEFINE_string("input", None, "demo: an mp4 (or other video) file or a folder of frames.")
flags.DEFINE_string("output", None, "demo: the mp4 file to write.")
flags.DEFINE_enum(
    "checkpoint_kind",
    "ssvd",
    ["ssvd", "pwcnet", "resnet"],
    "convert: the authors' SSVD release, a PWC-Net-only checkpoint, or a torchvision ResNet.",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    if FLAGS.mode in ("train", "sweep", "eval", "demo"):
        from ssvd_jax import metric_logging

        metric_logging.quiet_library_info()
    if FLAGS.mode == "train":
        from ssvd_jax import train

        try:
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except (train.TrainingDiverged, train.Preempted) as e:
            raise SystemExit(f"training stopped: {e}") from None
    elif FLAGS.mode == "eval":
        from ssvd_jax import evaluate, workdir

        try:
            if FLAGS.checkpoint:
                name = os.path.basename(os.path.dirname(os.path.abspath(FLAGS.checkpoint)))
                summary = evaluate.evaluate_checkpoint(
                    FLAGS.config, FLAGS.checkpoint, workdir.eval_dir(FLAGS.workdir, name),
                    workdir.data_root(FLAGS.config, FLAGS.workdir),
                )  # fmt: skip
                label = evaluate.phase_label(name, summary["settings"]["variant"])
                print(evaluate.comparison_table({label: summary}))
            else:
                evaluate.evaluate_workdir(FLAGS.config, FLAGS.workdir)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"eval failed: {e}") from None
    elif FLAGS.mode == "demo":
        from ssvd_jax import evaluate, visualize

        if not FLAGS.input or not FLAGS.output:
            raise app.UsageError("--mode=demo needs --input=VIDEO_OR_FOLDER and --output=OUT.mp4")
        try:
            folder = FLAGS.checkpoint or evaluate.latest_checkpoint_dir(FLAGS.workdir)
            evaluate.demo(FLAGS.config, folder, FLAGS.input, FLAGS.output)
        except (FileNotFoundError, ValueError, visualize.VideoInputError) as e:
            raise SystemExit(f"demo failed: {e}") from None
    elif FLAGS.mode == "sweep":
        from ssvd_jax import sweep

        sweep.run(
            FLAGS.config,
            FLAGS.workdir,
            config_flags.get_config_filename(FLAGS["config"]),
            FLAGS.sweep,
        )
    elif FLAGS.mode == "overfit":
        from ssvd_jax import overfit

        result = overfit.run(FLAGS.config, FLAGS.workdir)
        if not result["passed"]:
            raise SystemExit(1)
    elif FLAGS.mode == "score":
        from ssvd_jax.evaluation import results, score

        if not FLAGS.detections or not FLAGS.config.data.root:
            raise app.UsageError("--mode=score needs --detections=FILE and --config.data.root=DIR")
        out_json = os.path.join(FLAGS.workdir, "score.json")
        try:
            score.score_detections(
                FLAGS.detections, FLAGS.config.data.root, FLAGS.split,
                frame_list=FLAGS.frame_list, out_json=out_json, seq_nms=FLAGS.seq_nms,
            )  # fmt: skip
        except (results.DetectionsFormatError, ValueError, FileNotFoundError) as e:
            raise SystemExit(f"score failed: {e}") from None
        print(f"wrote {out_json}")
    elif FLAGS.mode == "convert":
        from ssvd_jax import convert

        if not FLAGS.checkpoint:
            raise app.UsageError("--mode=convert needs --checkpoint=FILE (.pth or .npz)")
        try:
            folder = convert.run(
                FLAGS.config, FLAGS.workdir, FLAGS.checkpoint, FLAGS.checkpoint_kind
            )
        except convert.ConversionError as e:
            raise SystemExit(f"convert failed: {e}") from None
        print(f"wrote {FLAGS.checkpoint_kind} variables to {folder}")


if __name__ == "__main__":
    flags.mark_flags_as_required([])
    app.run(main)
