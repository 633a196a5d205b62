"""Tiny models for tests: a 4-stage ResNet with one bottleneck per stage, 32-channel FPN and
heads, PWC-Net at 1/8 width; SSVD variants via --config.model.variant.

Run (overfit check): python main.py --config=configs/tiny.py --workdir=/tmp/tiny --mode=overfit
What it gives: in about a minute on 2 CPU cores, the loss on 4 generated 96x96 images falls by
more than 10x and the detections recover every box with IoU > 0.7.
Run (training, tests): python main.py --config=configs/tiny.py --workdir=/tmp/tiny_train
trains both phases for a few steps each on a small generated dataset (a path check, no quality).
Sweep: python main.py --mode=sweep --config=configs/tiny.py --workdir=/tmp/tiny_sweep runs the
paper's Table II points (single frame / motion / sampling / both) at this size.
"""

from configs import default


def get_config():
    config = default.get_config()
    backbone = config.model.backbone
    backbone.stage_sizes = (1, 1, 1, 1)
    backbone.block = "bottleneck"
    backbone.stem_width = 16
    backbone.base_planes = 8
    config.model.fpn_channels = 32
    config.model.head.width = 32
    config.data.image_size = 96
    config.model.anchors.sizes = (16, 32, 64, 128)
    config.model.pwc_channel_scale = 0.125
    config.overfit.steps = 300

    config.data.source = "synthetic"
    synthetic = config.data.synthetic
    synthetic.size = 64
    synthetic.train_videos = 2
    synthetic.val_videos = 1
    synthetic.frames = 8
    synthetic.det_images = 6
    synthetic.num_classes = 3
    config.data.max_boxes = 4
    config.data.det_per_class = 0
    config.data.support_range = 3
    config.train.batch_size = 4
    config.train.num_supports = 1
    for phase in ("phase1", "phase2"):
        s = config.schedule[phase]
        s.steps = 4
        s.boundaries = (3,)
        s.warmup_steps = 1
        s.learning_rate = 1e-2
    synthetic.flow_pairs = 2  # the pwcnet phase's data, when a test adds that phase
    config.flow.crop_size = (64, 64)
    config.flow.eval_crop_size = 64
    config.flow.batch_size = 4
    config.schedule.pwcnet.steps = 4
    config.schedule.pwcnet.learning_rate = 1e-3
    config.checkpoint.every_steps = 2
    config.checkpoint.max_to_keep = 2
    config.log.every_steps = 1
    config.log.summary_window = 2
    return config


def sweep(add, name: str = "table2") -> None:
    """The paper's ablations at tiny size: see configs/default.py:sweep."""
    default.sweep(add, name)
