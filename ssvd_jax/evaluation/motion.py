"""FGFA's motion-speed evaluation: AP on slow, medium and fast objects (VID_PROTOCOL §2).

Motion IoU of a ground truth box: the mean IoU (+1 convention) with the same track's boxes in
frames t-10..t+10 of its video, itself excluded, frames where the track is absent skipped
(`input_pipeline.ilsvrc.motion_iou`, which is exactly this definition; a box whose track has no
other box in the window gets 0, like the empty entries FGFA reads as 0).

Per bucket [lo, hi] (both ends inclusive, §2: 0.7 and 0.9 belong to two buckets):
* ground truth outside the bucket is ignored: it is not counted in npos, the normal matching of
  `vid_ap.match_detections` still runs against all boxes, and a detection that claims an ignored
  box is neither TP nor FP (the box is consumed);
* an unmatched detection's FP weight comes from o_in / o_out, its largest IoU with in-bucket /
  out-of-bucket ground truth of any class in its frame (-1 when there is none of that kind):
  o_in > o_out -> 1; o_out > o_in -> 0; tie on a frame without ground truth -> `empty_weight`,
  the fraction of all motion entries inside the bucket, with one 0 entry for every frame without
  ground truth (FGFA's .mat holds a single empty entry for such frames, read as 0); tie on a frame
  with ground truth -> (# out-of-bucket boxes in the frame) / (# boxes in the frame). The last
  rule counts the ignored boxes; it looks like a slip in FGFA but it is the reference behaviour;
* the area range is FGFA's fixed [0, 1e10]: a ground truth box outside it is ignored like an
  out-of-bucket one, and an unmatched detection whose +1 area is outside it (a degenerate box with
  a negative area) is ignored;
* AP per class as in §1; a class without in-bucket ground truth gets NaN (FGFA: -1) and is left
  out of the bucket's mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from input_pipeline import ilsvrc
from ssvd_jax.evaluation import vid_ap

# VID_PROTOCOL §2; the same table as ilsvrc.MOTION_BUCKETS ('all' is there too).
MOTION_BUCKETS: dict[str, tuple[float, float]] = dict(ilsvrc.MOTION_BUCKETS)
SPEED_BUCKETS: tuple[str, ...] = ("slow", "medium", "fast")
# FGFA's area range for the motion evaluation, fixed (VID_PROTOCOL §2).
AREA_RANGE: tuple[float, float] = (0.0, 1e10)


def video_motion_iou(
    frames: Sequence[Sequence[tuple[int, Sequence[float]]]], window: int = 10
) -> list[np.ndarray]:
    """Motion IoU of every box of one video; frames[t] lists (track_id, box) in XML order."""
    return ilsvrc.motion_iou(frames, window=window)


def in_bucket(motion: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """FGFA's test, written as its negation `(m < lo) | (m > hi)` so a NaN counts as inside."""
    motion = np.asarray(motion, np.float64)
    return ~((motion < lo) | (motion > hi))


def _area(boxes_Nx4: np.ndarray) -> np.ndarray:
    return (boxes_Nx4[:, 3] - boxes_Nx4[:, 1] + 1) * (boxes_Nx4[:, 2] - boxes_Nx4[:, 0] + 1)


def _outside_area(boxes_Nx4: np.ndarray) -> np.ndarray:
    area = _area(boxes_Nx4)
    return (area < AREA_RANGE[0]) | (area > AREA_RANGE[1])


def empty_weight(gt: vid_ap.GroundTruth, lo: float, hi: float) -> float:
    """Fraction of FGFA's motion entries inside [lo, hi]: every box's motion IoU plus one 0 for
    every frame without ground truth (VID_PROTOCOL §2)."""
    num_empty = int(np.sum(gt.boxes_per_frame() == 0))
    total = len(gt) + num_empty
    if total == 0:
        return 0.0
    inside = int(in_bucket(_motion_of(gt), lo, hi).sum()) + num_empty * int(in_bucket(0.0, lo, hi))
    return inside / float(total)


def _motion_of(gt: vid_ap.GroundTruth) -> np.ndarray:
    if gt.motion_iou is None:
        raise ValueError("the motion-speed evaluation needs GroundTruth.motion_iou")
    return gt.motion_iou


@dataclasses.dataclass(frozen=True, eq=False)
class _FrameOverlaps:
    """Each unmatched detection's IoU with every ground truth box of its frame (any class)."""

    unmatched: np.ndarray  # [U] positions in the Matching
    pair_seg: np.ndarray  # [P] index into `unmatched` of each pair, ascending
    pair_gt: np.ndarray  # [P]
    pair_iou: np.ndarray  # [P]
    gt_in_frame: np.ndarray  # [U] number of ground truth boxes in the detection's frame


def _frame_overlaps(
    gt: vid_ap.GroundTruth, dets: vid_ap.Detections, matching: vid_ap.Matching
) -> _FrameOverlaps:
    unmatched = np.flatnonzero(matching.matched_gt < 0)
    rows = matching.frame[unmatched]
    lo = np.searchsorted(gt.frame, rows, "left")
    hi = np.searchsorted(gt.frame, rows, "right")
    pair_seg, pair_gt = vid_ap.expand_pairs(lo, hi)
    boxes = dets.boxes[matching.det_index[unmatched]]
    iou, _ = gt.pair_iou(boxes[pair_seg], gt.boxes[pair_gt])  # the ground truth's iou_rule
    return _FrameOverlaps(unmatched, pair_seg, pair_gt, iou, hi - lo)


def _segment_max(values: np.ndarray, seg: np.ndarray, num_segments: int) -> np.ndarray:
    """Max of `values` per segment id (ids ascending), -1 for segments without values."""
    out = np.full(num_segments, -1.0)
    if len(values):
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        out[seg[starts]] = np.maximum.reduceat(values, starts)
    return out


def bucket_counted(gt: vid_ap.GroundTruth, lo: float, hi: float) -> np.ndarray:
    """[G] the ground truth boxes a bucket counts as positives (in the bucket, inside the
    image area rule of §2)."""
    return in_bucket(_motion_of(gt), lo, hi) & ~_outside_area(gt.boxes)


def bucket_tp_fp(
    gt: vid_ap.GroundTruth,
    dets: vid_ap.Detections,
    matching: vid_ap.Matching,
    lo: float,
    hi: float,
    overlaps: _FrameOverlaps | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp [M], fp [M], npos [C]) of one motion bucket, aligned with `matching` (§2)."""
    motion = _motion_of(gt)
    counted = bucket_counted(gt, lo, hi)
    npos = np.bincount(gt.label[counted], minlength=gt.num_classes).astype(np.float64)

    matched = matching.matched_gt
    tp = np.zeros(len(matched))
    tp[matched >= 0] = counted[matched[matched >= 0]].astype(np.float64)

    ov = overlaps if overlaps is not None else _frame_overlaps(gt, dets, matching)
    gt_in = in_bucket(motion, lo, hi)
    pair_in = gt_in[ov.pair_gt]
    num_u = len(ov.unmatched)
    # Off-kind pairs become -1, the "none of that kind" value, so they never raise a maximum.
    o_in = _segment_max(np.where(pair_in, ov.pair_iou, -1.0), ov.pair_seg, num_u)
    o_out = _segment_max(np.where(pair_in, -1.0, ov.pair_iou), ov.pair_seg, num_u)
    out_count = np.bincount(ov.pair_seg[~pair_in], minlength=num_u).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie = np.where(
            ov.gt_in_frame == 0,
            empty_weight(gt, lo, hi),
            out_count / np.maximum(ov.gt_in_frame, 1),
        )
    fp_u = np.where(o_in > o_out, 1.0, np.where(o_out > o_in, 0.0, tie))
    det_boxes = dets.boxes[matching.det_index[ov.unmatched]]
    fp_u[_outside_area(det_boxes)] = 0.0
    fp = np.zeros(len(matched))
    fp[ov.unmatched] = fp_u
    return tp, fp, npos


@dataclasses.dataclass(frozen=True, eq=False)
class MotionResult:
    """Per bucket name: ap [C] (NaN without in-bucket ground truth), npos [C], mAP."""

    ap: dict[str, np.ndarray]
    npos: dict[str, np.ndarray]
    mAP: dict[str, float]


def evaluate_motion(
    gt: vid_ap.GroundTruth,
    dets: vid_ap.Detections,
    buckets: Sequence[str] = SPEED_BUCKETS,
    matching: vid_ap.Matching | None = None,
) -> MotionResult:
    """AP per class and mAP for each motion bucket (names from MOTION_BUCKETS; §2)."""
    if matching is None:
        matching = vid_ap.match_detections(gt, dets)
    overlaps = _frame_overlaps(gt, dets, matching)
    order = vid_ap.pooled_order(dets.score[matching.det_index])
    labels = dets.label[matching.det_index][order]
    aps, nposs, maps = {}, {}, {}
    for name in buckets:
        lo, hi = MOTION_BUCKETS[name]
        tp, fp, npos = bucket_tp_fp(gt, dets, matching, lo, hi, overlaps)
        aps[name] = vid_ap.class_aps(labels, tp[order], fp[order], npos, gt.num_classes)
        nposs[name] = npos
        maps[name] = vid_ap.mean_ap(aps[name])
    return MotionResult(ap=aps, npos=nposs, mAP=maps)
