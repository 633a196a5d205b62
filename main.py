"""ssvd_jax command line: parses flags and dispatches; all logic lives in importable modules.

python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=overfit
"""

import os

# Before jax is imported: XLA:CPU's experimental YNN fusion slows convolution-heavy graphs on
# this kind of CPU (shared/docs/PERF_NOTES.md); an explicit user setting wins.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/synthetic.py", "Experiment config file (ml_collections).", lock_config=True
)
flags.DEFINE_string("workdir", "runs/synthetic", "Directory for outputs and checkpoints.")
flags.DEFINE_enum(
    "mode",
    "overfit",
    ["overfit", "convert"],
    "overfit: fit the single-frame detector to a few generated images and report how well its "
    "detections recover the boxes. convert: turn a PyTorch checkpoint (--checkpoint) into an "
    "orbax checkpoint under <workdir>/checkpoints.",
)
flags.DEFINE_string("checkpoint", None, "convert: the .pth or .npz file to convert.")
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
    if FLAGS.mode == "overfit":
        from ssvd_jax import overfit

        result = overfit.run(FLAGS.config, FLAGS.workdir)
        if not result["passed"]:
            raise SystemExit(1)
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
