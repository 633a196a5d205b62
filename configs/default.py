"""SSVD at the paper's scale: ResNet-101 + FPN RetinaNet heads at 448x448 (the release's model).

Train (on GPUs; both phases of the paper's Sec. III-D / IV-C recipe in one command):
  python main.py --config=configs/default.py --workdir=runs/default \
      --config.data.root=/data/ILSVRC2015 --config.model.dtype=bfloat16 \
      --config.train.resnet_checkpoint=runs/r101/checkpoints \
      --config.train.pwcnet_checkpoint=runs/pwc/checkpoints
  (the two checkpoints come from `--mode=convert --checkpoint_kind=resnet|pwcnet`). Phase 1: the
  single-frame detector on DET + VID stills, batch 16, SGD momentum 0.9, weight decay 1e-4, lr
  1e-3 for 80k then 1e-4 for 40k iterations; phase 2: SSVD initialised from phase 1, on VID
  clips (a reference + 2 supports from +-12 frames), lr 1e-3 for 60k then 1e-4 for 30k; 500
  warmup iterations each. Restarting with the same workdir resumes; `--config.train.phases=
  "('phase2',)"` runs phase 2 alone from an earlier phase-1 run in the workdir. Multi-host: set
  `--config.distributed.*` on every host. Ablation sweeps (Table II, Table V, Fig. 6):
  python main.py --mode=sweep --config=configs/default.py --workdir=runs/table2 --sweep=table2
Overfit check:
  python main.py --config=configs/default.py --workdir=runs/default --mode=overfit
Backbone variants of the paper's Table III: `--config=configs/default.py:r101_dcn` (DCNv1 in the
last stage), `--config=configs/default.py:x101_32x4d` (ResNeXt-101 32x4d).
What `--mode=overfit` gives: it fits the full-size single-frame detector to a few generated
images (a correctness check of the whole path at full size; needs a GPU to be quick).
The model numbers follow the authors' release (REFERENCE_SPEC §2, §5): ResNet-101 with the stride
in the 1x1 convs and eps-free frozen BN, FPN P3-P6 with 256 channels, 2-conv heads, 9 anchors,
30 ImageNet VID classes, "+1" box convention, score > 0.1, top-1000 per level, NMS 0.45, 100 dets.
"""

import ml_collections

from ssvd_jax.errors import UserError


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: '' (ResNet-101), 'r101_dcn' (DCNv1 in the last stage) or 'x101_32x4d'
    (ResNeXt-101 32x4d): the backbones of the paper's Table III."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    model = config.model = ml_collections.ConfigDict()
    model.num_classes = 30
    model.dtype = "float32"  # compute dtype; "bfloat16" on GPU (params stay float32)
    model.flow_dtype = "float32"  # PWC-Net's compute dtype ("": model.dtype); see README
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
    # 'frozen_bn' (the release; needs pretrained statistics) | 'group_norm' (from scratch)
    backbone.norm = "frozen_bn"
    backbone.norm_groups = 32  # group_norm: groups per layer (capped by its channels)
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
    # How PWC-Net's decoders compare features: 'raw' (the release's mean of products; converted
    # weights need it) | 'normalized' (Pearson correlation: PWC-Net trained from scratch)
    model.pwc_cost_volume = "raw"
    motion = model.motion = ml_collections.ConfigDict()
    # How the motion stream combines its warped entries: 'mean' (paper, release) | 'cosine'
    # (FGFA's adaptive weights: softmax over entries of temperature x cosine similarity to the
    # reference, per pixel; no parameters, so converted weights load unchanged).
    motion.aggregation = "mean"
    motion.temperature = 1.0
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

    # The learning rate and its schedule are per phase: `schedule.<phase>`.
    optimizer = config.optimizer = ml_collections.ConfigDict()
    optimizer.name = "sgd"  # the paper's SGD with momentum | 'adamw' (e.g. from scratch)
    optimizer.momentum = 0.9  # sgd
    optimizer.b1 = 0.9  # adamw
    optimizer.b2 = 0.999  # adamw
    optimizer.eps = 1e-8  # adamw
    optimizer.weight_decay = 1e-4  # on kernels; sgd: L2 in the gradient, adamw: decoupled
    optimizer.grad_clip_norm = 10.0

    # Where the data comes from: 'ilsvrc' reads the ILSVRC2015 folder `data.root`; 'synthetic'
    # generates one there (default <workdir>/data/ILSVRC2015) unless it exists already.
    data.source = "ilsvrc"
    data.root = ""
    # 'cocovid' (a user's own videos and classes, input_pipeline/cocovid.py): COCO-VID JSON
    # files per split, their `file_name`s relative to data.image_root. The class list
    # (data.class_names, model.num_classes) then comes from the files' categories.
    data.image_root = ""
    data.train_json = ""
    data.val_json = ""
    data.class_names = ()  # set from the dataset (cocovid); empty: the 30 ImageNet VID classes
    data.tfds_dir = ""  # built TFDS datasets; empty: <workdir>/data/tfds
    data.loader_threads = 0  # training clips decoded in parallel; 0: one per CPU core
    data.vid_frames = "sampled"  # phase-1 VID stills and phase-2 references: 15 per video
    data.det_per_class = 2000  # phase 1: at most this many DET images per class (0: all)
    data.support_range = 12  # K: supports from [t-K, t+K], in phase 2 and at test
    # Training augmentation: SSD's (photometric distortion, expand, min-IoU crop, flip).
    aug = data.augment = ml_collections.ConfigDict()
    aug.photometric = True  # brightness, contrast, saturation, hue, channel swap
    aug.hue_delta = 18.0  # degrees
    aug.channel_swap_prob = 0.5  # a random permutation of B, G, R
    aug.expand_prob = 0.5
    aug.max_expand = 4.0
    aug.crop = True
    aug.flip_prob = 0.5
    synthetic = data.synthetic = ml_collections.ConfigDict()
    synthetic.seed = 0
    synthetic.size = 128
    synthetic.train_videos = 6
    synthetic.val_videos = 3
    synthetic.frames = 30
    synthetic.det_images = 40
    synthetic.num_classes = 6
    synthetic.max_objects = 2
    synthetic.flow_pairs = 0  # FlyingChairs-style flow pairs (ground truth) per video
    # Generate into a given data.root that does not exist yet (the default root inside the
    # workdir is always generated): off, so that a mistyped path is an error, not a new dataset.
    synthetic.create_root = False

    # Training (paper Sec. III-D / IV-C): batch 16, SGD momentum 0.9, weight decay 1e-4.
    tr = config.train = ml_collections.ConfigDict()
    # phase1: single-frame detector; pwcnet: PWC-Net pretraining (optional); phase2: SSVD
    tr.phases = ("phase1", "phase2")
    tr.batch_size = 16  # global, over all hosts and devices
    tr.num_supports = 2  # phase 2: supports per training reference (3 frames per clip)
    tr.phase1_det = True  # phase 1 on DET + VID stills (phase 2 on VID only)
    tr.freeze_at = 2  # maskrcnn-benchmark FREEZE_CONV_BODY_AT: stem and layer1 frozen
    tr.resnet_checkpoint = ""  # phase 1 body init: a `--mode=convert --checkpoint_kind=resnet` dir
    tr.pwcnet_checkpoint = ""  # phase 2 flownet init: a converted pwcnet dir
    # Fine-tuning: the first detector phase starts from this detector checkpoint folder (a
    # run's phase, or `--mode=convert --checkpoint_kind=ssvd`'s release): every array that fits
    # by name and shape; with other classes, the class subnets' last layers start afresh.
    tr.init_checkpoint = ""

    schedule = config.schedule = ml_collections.ConfigDict()
    for name, (steps, boundary) in {
        "phase1": (120_000, 80_000),
        "phase2": (90_000, 60_000),
    }.items():
        s = schedule[name] = ml_collections.ConfigDict()
        s.kind = "multistep"  # the paper's step decay at `boundaries` | 'cosine' to 0 at `steps`
        s.steps = steps
        s.learning_rate = 1e-3
        s.boundaries = (boundary,)  # lr x decay_factor at each boundary: 1e-3 then 1e-4
        s.decay_factor = 0.1
        s.warmup_steps = 500  # maskrcnn-benchmark's linear warmup from warmup_factor x lr
        s.warmup_factor = 1.0 / 3

    # The pwcnet phase (`train.phases` with 'pwcnet' before 'phase2'): PWC-Net alone on
    # ground-truth flow, the paper's FlyingChairs step; phase 2 then starts its flownet from it.
    # The paper's configs convert the authors' pretrained PWC-Net instead
    # (train.pwcnet_checkpoint).
    flow = config.flow = ml_collections.ConfigDict()
    flow.source = "flying_chairs"  # 'flying_chairs' | 'sintel_clean' | 'sintel_final'
    flow.root = ""  # empty: <data root>/FlyingChairs (the synthetic generator's pairs)
    # Training: random crops, (height, width) (an int: square); PWC-Net's 384x448, which
    # FlyingChairs' 512x384 and Sintel's 1024x436 frames hold. Multiples of 64 (its pyramid).
    flow.crop_size = (384, 448)
    flow.max_shift = 0  # training: image 2's crop up to this many pixels from image 1's
    flow.eval_crop_size = 384  # evaluation: centre crops (FlyingChairs is 512x384)
    # Evaluation: the first images of this many val pairs against themselves moved by this
    # many pixels (evaluation.flow.translation_response: does the network match?); 0: off.
    flow.translation_shift = 4
    flow.translation_images = 32
    flow.batch_size = 8  # PWC-Net's
    flow.level_weights = (0.32, 0.08, 0.02, 0.01, 0.005)  # levels 6..2 (PWC-Net's alphas)
    # Optional, from scratch: an auxiliary displacement classification on the unwarped cost
    # volumes (objective.matching_loss), per level 6..2; all 0 = PWC-Net's own loss alone
    # (with model.pwc_cost_volume='normalized' a fresh PWC-Net matches without it).
    flow.matching_weights = (0.0, 0.0, 0.0, 0.0, 0.0)
    flow.matching_scale = 10.0  # cost volume -> logits
    flow.optimizer = ml_collections.ConfigDict(
        # PWC-Net's Adam (decoupled weight decay here), independent of the detector's optimizer
        dict(name="adamw", momentum=0.9, b1=0.9, b2=0.999, eps=1e-8, weight_decay=4e-4,
             grad_clip_norm=0.0)
    )  # fmt: skip
    s = schedule["pwcnet"] = ml_collections.ConfigDict()
    s.kind = "multistep"  # PWC-Net's S_long: 1e-4 halved at 0.4, 0.6, 0.8, 1.0M of 1.2M
    s.steps = 1_200_000
    s.learning_rate = 1e-4
    s.boundaries = (400_000, 600_000, 800_000, 1_000_000)
    s.decay_factor = 0.5
    s.warmup_steps = 0
    s.warmup_factor = 1.0

    ckpt = config.checkpoint = ml_collections.ConfigDict()
    ckpt.every_steps = 2000
    ckpt.max_to_keep = 3
    ckpt.async_save = True

    log = config.log = ml_collections.ConfigDict()
    log.every_steps = 50
    log.summary_window = 20  # final metrics: the mean over this many last steps

    # XLA:CPU settings, applied by main.py before jax starts (ssvd_jax/runtime.py): which
    # programs YNNPACK fuses, --xla_cpu_experimental_ynn_fusion_type ('eltwise': conv + BN +
    # ReLU chains, 5-12% faster for R-101 at 448; '': XLA's own kernels, faster for small
    # models). An XLA_FLAGS that already names the flag wins. GPU runs ignore it.
    config.runtime = ml_collections.ConfigDict()
    config.runtime.xla_cpu_ynn_fusion = "eltwise"

    dist = config.distributed = ml_collections.ConfigDict()
    dist.coordinator_address = ""  # e.g. 'host0:1234'; empty: single process
    dist.num_processes = 1
    dist.process_id = 0
    dist.cpu_collectives = "gloo"  # cross-process collectives on CPU hosts

    # Evaluation (REFERENCE_SPEC §1, §7): the online engine over whole videos of `split`, the
    # ILSVRC VID protocol overall and by motion speed. `main.py --mode=eval` and the end of a
    # training run use this section.
    ev = config.eval = ml_collections.ConfigDict()
    # The supports' half window K at test is `data.support_range`, the one of training: one
    # number, so the spacing the streams learned is the spacing they get. (The release trains
    # with +-12 but tests with SUPPORT_RANGE_TEST = 15; `--config.data.support_range=15` on an
    # evaluation reproduces that.)
    ev.schedule = "release"  # 'release': 7 entries t+k*(2R//6), R=min(L//2,K) | 'paper': N of +-K
    ev.num_supports = 6  # 'paper' schedule: supports per frame, any N >= 0
    ev.after_training = True  # evaluate every trained phase at the end of `--mode=train`
    ev.split = "val"
    # How a detection matches ground truth: 'ilsvrc' (the VID devkit's "+1" pixels and
    # min(0.5, wh / ((w + 10)(h + 10))) per object) | 'iou50' (continuous boxes, IoU >= 0.5; for
    # COCO-VID data that is not ILSVRC's).
    ev.iou_rule = "ilsvrc"
    ev.frame_list = ""  # optional list defining frames and global ids (empty: ImageSets/ lists)
    ev.max_videos = 0  # evaluate only the first N videos of the list (0: all)
    ev.batch_videos = 1  # videos processed in lockstep per engine step (throughput mode)
    ev.cached = True  # per-frame caches (PWC pyramid, offset-predictor half); False: per pair
    ev.seq_nms = False  # offline Seq-NMS before scoring
    # Tracks (docs/TRACK_PROTOCOL.md): the evaluated detections linked per video and class,
    # written as tracks_VID_<split>.txt and scored (mAP_track at 0.25/0.5/0.75, stability); the
    # demo colours boxes by track. Defaults untuned.
    link = ev.link = ml_collections.ConfigDict()
    link.method = "viterbi"  # '' (off) | 'viterbi' (D&T's tube linking) | 'seq_nms' (its paths)
    link.iou_weight = 1.0  # lambda: a path scores its boxes' scores + lambda * its links' IoUs
    link.min_iou = 0.3  # two boxes link when their IoU reaches this (> 0)
    link.max_gap = 0  # frames without a box that a link may skip (0: D&T's consecutive frames)
    link.rescore = "none"  # 'mean' | 'max': every box of a track gets the track's mean / max score
    ev.bootstrap_samples = 1000  # resamples of the videos for the intervals on differences
    ev.bootstrap_seed = 0
    ev.demo = False  # also draw the first evaluated video into <workdir>/demo.mp4
    ev.demo_min_score = 0.3  # boxes below this score are not drawn
    ev.demo_cover_score = 0.5  # the demo's coverage count: boxes from this score
    ev.demo_scale = 1  # the main job's side-by-side demo: frames enlarged this many times
    ev.demo_fps = 10.0  # the side-by-side demo's frame rate

    # Export (`main.py --mode=export`, ssvd_jax/export.py): the online engine's per-frame step
    # for one video, lowered with jax.export for these platforms together; a platform that
    # cannot be lowered on this machine is left out (and named in the artifact's meta.json).
    config.export = ml_collections.ConfigDict()
    config.export.platforms = ("cpu", "cuda")

    overfit = config.overfit = ml_collections.ConfigDict()
    overfit.num_images = 4
    overfit.num_classes = 5
    overfit.max_objects = 3  # per generated image
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


SWEEPS = ("table2", "table5", "fig6")


def sweep(add, name: str = "table2") -> None:
    """The paper's ablations as sweeps (`main.py --mode=sweep --sweep=<name>`):
    table2: single frame / motion stream / sampling stream / both (Table II);
    table5: number of supports at inference (Table V: 0, 2, 4, 6, 12, 24 of the +-12 frames,
    the paper's schedule). The points differ only in `eval.*`, so the model trains once and
    each point evaluates it; N = 0 is SSVD aggregating the reference alone, next to the
    phase-1 single-frame baseline that every point's table row also shows;
    fig6: fusion schemes: late fusion (release), early fusion, motion-guided sampling (Fig. 6).
    """
    if name == "table2":
        for variant in ("single_frame", "motion", "sampling", "two_stream"):
            add(**{"model.variant": variant})
    elif name == "table5":
        for k in (0, 2, 4, 6, 12, 24):
            add(**{"eval.schedule": "paper", "eval.num_supports": k})
    elif name == "fig6":
        for variant in ("two_stream", "early_fusion", "motion_guided_sampling"):
            add(**{"model.variant": variant})
    else:
        raise UserError("--sweep", f"unknown sweep {name!r}; choose one of {SWEEPS}")
