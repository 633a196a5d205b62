"""The embedded default: a small SSVD trained from scratch on generated data, on CPU.

Run: python main.py   (same as --config=configs/synthetic.py --workdir=runs/synthetic)
What it gives: generates a small ILSVRC-format dataset (16 training videos of 30 frames, 100 DET
images, 12 val videos, 128x128) into <workdir>/data, builds its TFDS datasets, trains phase 1
(the single-frame detector: a bottleneck ResNet with one block per stage at 1/4 width, 3000
steps of batch 4) and phase 2 (two-stream SSVD initialised from phase 1, PWC-Net at 1/4 width
from scratch, 240 steps of batch-4 clips), evaluates both on the val split with the online
engine (ImageNet VID protocol, FGFA speed buckets), prints the side-by-side table and draws the
first val video with SSVD's boxes into <workdir>/demo.mp4.
Measured on 2 CPU cores (2026-12-02): 9m12s in all: data + TFDS 10 s, phase 1 3.8 min
(~14 steps/s), phase 2 3.4 min (1 min to compile, then ~1.7 steps/s), evaluation and demo
1.8 min. Phase-1 loss 1.63 -> 0.76 (cls 1.11 -> 0.44, box 0.52 -> 0.31), phase-2 loss (both
streams) 1.90 -> 1.47. Val mAP: single-frame 22.3% (slow 41.1, medium 39.8, fast 30.5), SSVD
20.9% (slow 39.3, medium 37.3, fast 14.8): at this size the temporal streams do not pay off
yet (PWC-Net from scratch, 240 steps; 480 steps gave 22.9%, fast 16.0). With the generator's
defaults (6 + 40 training items) and 1500 phase-1 steps, val mAP was ~6%. Restarting resumes;
a finished run only prints its summary.
Overfit check: python main.py --mode=overfit fits 8 generated 128x128 images (loss falls by
more than 10x, detections recover the boxes with IoU > 0.7) in a few minutes.
"""

from configs import default


def get_config():
    config = default.get_config()
    backbone = config.model.backbone
    backbone.stage_sizes = (1, 1, 1, 1)
    backbone.block = "bottleneck"
    backbone.stem_width = 16
    backbone.base_planes = 16
    # Trained from scratch: frozen BN with untrained statistics would be no normalisation.
    backbone.norm = "group_norm"
    backbone.norm_groups = 8
    config.model.fpn_channels = 64
    config.model.head.width = 64
    config.data.image_size = 128
    config.model.anchors.sizes = (16, 32, 64, 128)
    config.overfit.num_images = 8
    config.overfit.batch_size = 8
    config.overfit.steps = 400

    config.model.pwc_channel_scale = 0.25
    config.data.source = "synthetic"
    config.data.max_boxes = 8
    config.data.det_per_class = 0
    s = config.data.synthetic
    s.train_videos = 48
    s.det_images = 100
    s.val_videos = 24
    s.flow_pairs = 8  # per video, with ground-truth flow: the pwcnet phase's data
    # K in training and at test: +-3 frames reach past most deterioration segments (2-5
    # frames) while a fast object (~3 px per frame) moves at most ~9 px (+-6 smeared it).
    config.data.support_range = 3
    # Colour is part of what a synthetic class is: SSD's channel swap would relabel it.
    config.data.augment.channel_swap_prob = 0.0
    config.train.batch_size = 4
    config.train.freeze_at = 0  # trained from scratch: nothing to keep
    config.train.phases = ("phase1", "pwcnet", "phase2")
    # From scratch, AdamW with cosine decay (the paper's SGD recipe assumes pretrained weights).
    config.optimizer.name = "adamw"
    config.optimizer.weight_decay = 0.05
    for phase, steps, lr, warmup in (("phase1", 3000, 1e-3, 100), ("phase2", 240, 2e-4, 20)):
        sch = config.schedule[phase]
        sch.kind = "cosine"
        sch.steps = steps
        sch.warmup_steps = warmup
        sch.learning_rate = lr
    flow = config.flow
    # Image 2 moved by up to 4 pixels (flow moved alike): dense motion in every pair (most
    # pixels of a synthetic video are nearly still, and zero flow is where an end-point-error
    # loss then sits); the auxiliary matching loss gives the extractor a direct signal.
    flow.crop_size = 128
    flow.max_shift = 4
    flow.eval_crop_size = 128
    flow.batch_size = 8
    flow.matching_weights = (0.0, 0.0, 1.0, 1.0, 1.0)
    sch = config.schedule.pwcnet
    sch.kind = "cosine"
    sch.steps = 300
    sch.learning_rate = 1e-3
    sch.warmup_steps = 50
    sch.warmup_factor = 0.1
    # <workdir>/demo.mp4: the first val video, single-frame and SSVD side by side, enlarged
    config.eval.demo = True
    config.eval.demo_scale = 3
    config.checkpoint.every_steps = 250
    config.log.every_steps = 10
    return config
