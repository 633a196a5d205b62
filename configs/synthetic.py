"""The embedded default: a small detector on generated data, on CPU.

Run: python main.py --config=configs/synthetic.py --workdir=runs/synthetic --mode=overfit
What it gives: in a few minutes on 2 CPU cores, a ResNet-18-width single-frame detector fits
8 generated 128x128 images (loss falls by more than 10x) and its detections recover the boxes
(IoU > 0.7), printed as a table.
"""

from configs import default


def get_config():
    config = default.get_config()
    backbone = config.model.backbone
    backbone.stage_sizes = (1, 1, 1, 1)
    backbone.block = "bottleneck"
    backbone.stem_width = 16
    backbone.base_planes = 16
    config.model.fpn_channels = 64
    config.model.head.width = 64
    config.data.image_size = 128
    config.model.anchors.sizes = (16, 32, 64, 128)
    config.overfit.num_images = 8
    config.overfit.batch_size = 8
    config.overfit.steps = 400
    return config
