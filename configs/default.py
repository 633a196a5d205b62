"""SSVD at the paper's scale: ResNet-101 + FPN RetinaNet heads at 448x448 (the release's model).

Run (on GPUs; the training modes arrive with the training issue):
  python main.py --config=configs/default.py --workdir=runs/default --mode=overfit
Backbone variants of the paper's Table III: `--config=configs/default.py:r101_dcn` (DCNv1 in the
last stage), `--config=configs/default.py:x101_32x4d` (ResNeXt-101 32x4d).
What it gives today: `--mode=overfit` fits the full-size single-frame detector to a few generated
images (a correctness check of the whole path at full size; needs a GPU to be quick).
The model numbers follow the authors' release (REFERENCE_SPEC §2, §5): ResNet-101 with the stride
in the 1x1 convs and eps-free frozen BN, FPN P3-P6 with 256 channels, 2-conv heads, 9 anchors,
30 ImageNet VID classes, "+1" box convention, score > 0.1, top-1000 per level, NMS 0.45, 100 dets.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (ResNet-101), 'r101_dcn' (DCNv1 in the last stage) or 'x101_32x4d'
    (ResNeXt-101 32x4d): the backbones of the paper's Table III."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    model = config.model = ml_collections.ConfigDict()
    model.num_classes = 30
    model.dtype = "float32"  # compute dtype; "bfloat16" on GPU
    backbone = model.backbone = ml_collections.ConfigDict()
    backbone.depth = 101
    backbone.stage_sizes = ()  # empty: the standard stages of `depth`
    backbone.block = ""  # empty: the standard block of `depth`
    backbone.stem_width = 64
    backbone.base_planes = 64
    backbone.groups = 1
    backbone.width_per_group = 64
    backbone.stride_in_1x1 = True
    backbone.bn_eps = 0.0
    backbone.dcn_stages = ()  # e.g. (False, False, False, True): DCNv1 in the last stage
    model.fpn_channels = 256
    head = model.head = ml_collections.ConfigDict()
    head.num_convs = 2
    head.width = 256
    head.prior_prob = 0.01
    # SSVD: 'two_stream' (release, late fusion) | 'single_frame' | 'motion' | 'sampling' |
    # 'early_fusion' | 'motion_guided_sampling'.
    model.variant = "two_stream"
    model.include_reference = True  # the reference is one of the aggregated entries (release)
    model.pwc_channel_scale = 1.0  # PWC-Net widths; < 1 only in tiny test configs
    sampling = model.sampling = ml_collections.ConfigDict()
    sampling.version = "1"  # offset predictor: '1' U-Net-like (release default), '2' multi-dilation
    sampling.aggregation = "softmax"  # per-pixel softmax weights (release) | 'mean' (paper)
    sampling.deformable_groups = 4
    anchors = model.anchors = ml_collections.ConfigDict()
    anchors.strides = (8, 16, 32, 64)
    anchors.sizes = (32, 64, 128, 256)
    anchors.ratios = (0.5, 1.0, 2.0)
    anchors.scales_per_octave = 3

    data = config.data = ml_collections.ConfigDict()
    data.image_size = 448
    data.pixel_mean_bgr = (103.06, 115.90, 123.15)
    data.max_boxes = 32

    loss = config.loss = ml_collections.ConfigDict()
    loss.fg_iou = 0.5
    loss.bg_iou = 0.4
    loss.allow_low_quality = True
    loss.focal_alpha = 0.25
    loss.focal_gamma = 2.0
    loss.smooth_l1_beta = 0.11  # maskrcnn-benchmark RetinaNet's BBOX_REG_BETA
    loss.box_weights = (1.0, 1.0, 1.0, 1.0)
    loss.legacy_boxes = True  # the release's "+1" pixel convention

    post = config.postprocess = ml_collections.ConfigDict()
    post.score_threshold = 0.1
    post.pre_nms_top_n = 1000
    post.nms_iou = 0.45
    post.max_detections = 100
    post.legacy_boxes = True

    optimizer = config.optimizer = ml_collections.ConfigDict()
    optimizer.learning_rate = 1e-3
    optimizer.momentum = 0.9
    optimizer.weight_decay = 1e-4
    optimizer.grad_clip_norm = 10.0

    overfit = config.overfit = ml_collections.ConfigDict()
    overfit.num_images = 4
    overfit.num_classes = 5
    overfit.batch_size = 4
    overfit.steps = 300
    overfit.learning_rate = 1e-3  # Adam: the check is about the path, not the schedule
    overfit.min_loss_drop = 10.0
    overfit.min_iou = 0.7
    overfit.min_size_frac = 0.25
    overfit.max_size_frac = 0.5
    if variant == "r101_dcn":
        backbone.dcn_stages = (False, False, False, True)
    elif variant == "x101_32x4d":
        backbone.groups = 32
        backbone.width_per_group = 4
    elif variant:
        raise ValueError(f"unknown default.py variant {variant!r}: '', 'r101_dcn', 'x101_32x4d'")
    return config
