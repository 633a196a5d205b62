"""Tiny models for tests: a 4-stage ResNet with one bottleneck per stage, 32-channel FPN and
heads, PWC-Net at 1/8 width; SSVD variants via --config.model.variant.

Run: python main.py --config=configs/tiny.py --workdir=/tmp/tiny --mode=overfit
What it gives: in about a minute on 2 CPU cores, the loss on 4 generated 96x96 images falls by
more than 10x and the detections recover every box with IoU > 0.7.
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
    return config
