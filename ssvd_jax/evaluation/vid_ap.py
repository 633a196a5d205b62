"""ILSVRC VID detection AP, exactly as the devkit, FGFA and SSVD compute it (VID_PROTOCOL §1).

Rules implemented, quirks included (section numbers are VID_PROTOCOL's):

* §1 box convention: inclusive pixels, w = x2 - x1 + 1; IoU only where iw > 0 and ih > 0, with
  the devkit's order of float operations, so IoUs are bit-identical to FGFA's.
* §1 per-object threshold: thr = min(0.5, w*h / ((w + 10) * (h + 10))) with the +1 sizes.
* §1 matching, per frame, detections by descending score: among ground truth of the same class
  that is not yet matched and has IoU >= its own thr, take the largest IoU (first in XML order on
  exact ties). An already matched ground truth is skipped (not VOC's duplicate rule), so a
  second detection can claim a neighbouring object; a second detection on a lone object is a FP.
* §1 no "difficult": every box counts, `generated` (interpolated) ones included.
* §1 pooling: all detections of the listed frames, in frame-list order, then sorted by score over
  the whole set; ties keep that order (the devkit's stable sort; FGFA's numpy quicksort is
  arbitrary on ties, so only score-distinct detections give one well-defined answer).
* §1 detections on frames outside the list are dropped; frames without ground truth still count
  (their detections are FPs).
* §1 AP: all-point VOC2010+ interpolation; rec = TP / npos, prec = TP / max(TP + FP, eps).
* §1 classes without ground truth: the sources disagree (devkit 0/0 = NaN, FGFA plain eval
  divides by zero, FGFA motion eval uses -1 and leaves the class out of the mean). We report NaN
  for such a class and average over the classes that have ground truth, which is FGFA's motion
  rule and the only one that gives a finite mAP on a subset; on the full VID val set every class
  has ground truth, so the mean is the published 30-class mean.

Datasets other than ILSVRC (COCO-VID JSON) choose `GroundTruth.iou_rule = 'iou50'`: continuous
boxes (w = x2 - x1) and a plain IoU >= 0.5 for every object, COCO's rule at IoU 0.5; and may
carry crowd regions (COCO's `iscrowd` boxes), which are not ground truth: an otherwise unmatched
detection that a same-frame, same-class crowd region covers (intersection / detection area >=
CROWD_COVER, in the rule's box convention) is ignored, neither TP nor FP (`Matching.num_ignored`).
The defaults ('ilsvrc', no crowd regions) are the devkit's rules above, bit for bit.

Everything is vectorised with numpy except the greedy assignment inside groups of detections that
compete for the same ground truth box (a short Python loop over those detections only).
Labels are 0-based here (0 = airplane); result files use 1..30 (`results.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# VID_PROTOCOL §5: the 30 ILSVRC2015 VID classes (names in input_pipeline.classes).
NUM_CLASSES = 30
# VID_PROTOCOL §1: the devkit's defaultIOUthr and pixelTolerance.
DEFAULT_IOU_THRESHOLD = 0.5
PIXEL_TOLERANCE = 10.0
# How predicted boxes are compared with ground truth: 'ilsvrc' (the devkit: inclusive "+1"
# pixel boxes, the per-object threshold of iou_thresholds) or 'iou50' (continuous boxes,
# w = x2 - x1, plain IoU >= 0.5 for every object: COCO's rule at IoU 0.5).
IOU_RULES: tuple[str, ...] = ("ilsvrc", "iou50")
# COCO's iscrowd rule: a crowd region absorbs a detection when intersection / detection area
# reaches the IoU threshold, 0.5 here for either rule (areas in the rule's box convention).
CROWD_COVER = 0.5


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """Detections of a whole evaluation, one row each.

    frame_id: [D] global 1-based frame ids (REFERENCE_SPEC §9); label: [D] 0-based classes;
    score: [D]; boxes: [D, 4] x1 y1 x2 y2 in original-image inclusive pixels.
    """

    frame_id: np.ndarray
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "frame_id", np.asarray(self.frame_id, np.int64).reshape(-1))
        object.__setattr__(self, "label", np.asarray(self.label, np.int64).reshape(-1))
        object.__setattr__(self, "score", np.asarray(self.score, np.float64).reshape(-1))
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float64).reshape(-1, 4))
        n = len(self.frame_id)
        if not (len(self.label) == len(self.score) == len(self.boxes) == n):
            raise ValueError(
                f"Detections: frame_id {n}, label {len(self.label)}, score {len(self.score)} "
                f"and boxes {len(self.boxes)} rows differ"
            )

    def __len__(self) -> int:
        return len(self.frame_id)

    def take(self, index: np.ndarray) -> Detections:
        """The rows `index` (integer indices or a boolean mask), in that order."""
        return Detections(
            self.frame_id[index], self.label[index], self.score[index], self.boxes[index]
        )

    @staticmethod
    def concatenate(parts: Sequence[Detections]) -> Detections:
        if not parts:
            return Detections(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 4)))
        return Detections(
            np.concatenate([p.frame_id for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.boxes for p in parts]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
    """Ground truth of the evaluated frames, in evaluation order.

    frame_ids: [F] global 1-based ids of the evaluated frames, in list order (unique).
    frame: [G] row in `frame_ids` of each box, non-decreasing (boxes of a frame in XML order).
    label: [G] 0-based classes; boxes: [G, 4] raw XML boxes (inclusive pixels, not clipped).
    motion_iou: [G] FGFA motion IoU of each box (VID_PROTOCOL §2), needed for the speed buckets.
    video_starts: [V] first row of each video (rows of a video are contiguous), for Seq-NMS.
    track_id: [G] the XML `<trackid>` of each box (an object's id within its video), needed for
      the tracklet evaluation (docs/TRACK_PROTOCOL.md).
    iou_rule: one of IOU_RULES ('ilsvrc': the devkit's +1 boxes and per-object threshold).
    crowd_frame / crowd_label / crowd_boxes: [K] frame rows, [K] labels, [K, 4] boxes of crowd
      regions (COCO's iscrowd); not ground truth (not in npos, motion buckets or tracks): they
      only absorb detections that match nothing else (module docstring). None: no regions.
    class_names: the name of each class, len num_classes; empty: the 30 VID names, or generic
      ones for another number of classes (`names`).
    """

    frame_ids: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    motion_iou: np.ndarray | None = None
    video_starts: np.ndarray | None = None
    num_classes: int = NUM_CLASSES
    track_id: np.ndarray | None = None
    iou_rule: str = "ilsvrc"
    crowd_frame: np.ndarray | None = None
    crowd_label: np.ndarray | None = None
    crowd_boxes: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "frame_ids", np.asarray(self.frame_ids, np.int64).reshape(-1))
        object.__setattr__(self, "frame", np.asarray(self.frame, np.int64).reshape(-1))
        object.__setattr__(self, "label", np.asarray(self.label, np.int64).reshape(-1))
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float64).reshape(-1, 4))
        g = len(self.frame)
        if len(self.label) != g or len(self.boxes) != g:
            raise ValueError("GroundTruth: frame, label and boxes must have one row per box")
        if len(np.unique(self.frame_ids)) != len(self.frame_ids):
            raise ValueError("GroundTruth: frame_ids must be unique")
        if g and (np.any(np.diff(self.frame) < 0) or self.frame[0] < 0):
            raise ValueError("GroundTruth: boxes must be ordered by frame row")
        if g and self.frame[-1] >= len(self.frame_ids):
            raise ValueError("GroundTruth: a box refers to a frame row past frame_ids")
        if g and (self.label.min() < 0 or self.label.max() >= self.num_classes):
            raise ValueError(f"GroundTruth: labels must be in 0..{self.num_classes - 1}")
        if self.motion_iou is not None:
            motion = np.asarray(self.motion_iou, np.float64).reshape(-1)
            if len(motion) != g:
                raise ValueError("GroundTruth: motion_iou must have one value per box")
            object.__setattr__(self, "motion_iou", motion)
        if self.video_starts is not None:
            object.__setattr__(
                self, "video_starts", np.asarray(self.video_starts, np.int64).reshape(-1)
            )
        if self.track_id is not None:
            track_id = np.asarray(self.track_id, np.int64).reshape(-1)
            if len(track_id) != g:
                raise ValueError("GroundTruth: track_id must have one value per box")
            object.__setattr__(self, "track_id", track_id)
        if self.iou_rule not in IOU_RULES:
            raise ValueError(
                f"GroundTruth: iou_rule {self.iou_rule!r} is not one of {', '.join(IOU_RULES)}"
            )
        self._init_crowd()
        names = tuple(str(n) for n in self.class_names)
        if names and len(names) != self.num_classes:
            raise ValueError(
                f"GroundTruth: {len(names)} class_names for {self.num_classes} classes"
            )
        object.__setattr__(self, "class_names", names)

    def _init_crowd(self) -> None:
        given = [x is not None for x in (self.crowd_frame, self.crowd_label, self.crowd_boxes)]
        if not any(given):
            return
        if not all(given):
            raise ValueError("GroundTruth: crowd_frame, crowd_label and crowd_boxes go together")
        frame = np.asarray(self.crowd_frame, np.int64).reshape(-1)
        label = np.asarray(self.crowd_label, np.int64).reshape(-1)
        boxes = np.asarray(self.crowd_boxes, np.float64).reshape(-1, 4)
        k = len(frame)
        if len(label) != k or len(boxes) != k:
            raise ValueError("GroundTruth: crowd_frame, crowd_label and crowd_boxes differ in rows")
        if k and (frame.min() < 0 or frame.max() >= len(self.frame_ids)):
            raise ValueError("GroundTruth: a crowd region refers to a frame row past frame_ids")
        if k and (label.min() < 0 or label.max() >= self.num_classes):
            raise ValueError(f"GroundTruth: crowd labels must be in 0..{self.num_classes - 1}")
        object.__setattr__(self, "crowd_frame", frame)
        object.__setattr__(self, "crowd_label", label)
        object.__setattr__(self, "crowd_boxes", boxes)

    @property
    def names(self) -> tuple[str, ...]:
        """The class names: `class_names`; when it is empty, the 30 VID names for 30 classes,
        else 'class_1', 'class_2', ... (1-based, like the ids of the result files)."""
        if self.class_names:
            return self.class_names
        if self.num_classes != NUM_CLASSES:
            return tuple(f"class_{k + 1}" for k in range(self.num_classes))
        # Imported here: the VID names live in input_pipeline (floor 1, below this module), and
        # its package import registers the TFDS builders, which plain matching does not need.
        from input_pipeline.classes import CLASS_NAMES

        return CLASS_NAMES

    @property
    def num_crowd(self) -> int:
        return 0 if self.crowd_frame is None else len(self.crowd_frame)

    def pair_iou(self, a_Nx4: np.ndarray, b_Nx4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`pair_iou_by_rule` under this ground truth's iou_rule."""
        return pair_iou_by_rule(a_Nx4, b_Nx4, self.iou_rule)

    def thresholds(self) -> np.ndarray:
        """[G] the IoU each box needs under this ground truth's iou_rule."""
        return iou_thresholds(self.boxes, self.iou_rule)

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)

    def __len__(self) -> int:
        return len(self.frame)

    def boxes_per_frame(self) -> np.ndarray:
        """[F] number of ground truth boxes in each frame (any class)."""
        return np.bincount(self.frame, minlength=self.num_frames)

    def npos(self) -> np.ndarray:
        """[C] number of ground truth boxes per class (VID_PROTOCOL §1: every box counts)."""
        return np.bincount(self.label, minlength=self.num_classes).astype(np.float64)

    def video_frame_ids(self) -> list[np.ndarray]:
        """Global frame ids of each video, in order (one video if video_starts is unset)."""
        starts = self.video_starts if self.video_starts is not None else np.zeros(1, np.int64)
        bounds = np.append(starts, self.num_frames)
        return [self.frame_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def iou_thresholds(boxes_Gx4: np.ndarray, rule: str = "ilsvrc") -> np.ndarray:
    """Per-object IoU threshold: 'ilsvrc' min(0.5, w*h / ((w+10)(h+10))), +1 sizes
    (VID_PROTOCOL §1); 'iou50' 0.5 for every object."""
    boxes_Gx4 = np.asarray(boxes_Gx4, np.float64)
    if rule == "iou50":
        return np.full(len(boxes_Gx4), DEFAULT_IOU_THRESHOLD)
    if rule != "ilsvrc":
        raise ValueError(f"iou rule {rule!r} is not one of {', '.join(IOU_RULES)}")
    w = boxes_Gx4[:, 2] - boxes_Gx4[:, 0] + 1
    h = boxes_Gx4[:, 3] - boxes_Gx4[:, 1] + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = (w * h) / ((w + PIXEL_TOLERANCE) * (h + PIXEL_TOLERANCE))
    return np.minimum(thr, DEFAULT_IOU_THRESHOLD)


def pair_iou(a_Nx4: np.ndarray, b_Nx4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of row-aligned box pairs with the devkit's +1 formula (VID_PROTOCOL §1).

    Returns (iou [N], overlaps [N]); iou is 0 where the boxes do not overlap (iw or ih <= 0).
    The float operations follow FGFA's `vid_eval` in order, so values are bit-identical.
    """
    iw = np.minimum(a_Nx4[:, 2], b_Nx4[:, 2]) - np.maximum(a_Nx4[:, 0], b_Nx4[:, 0]) + 1
    ih = np.minimum(a_Nx4[:, 3], b_Nx4[:, 3]) - np.maximum(a_Nx4[:, 1], b_Nx4[:, 1]) + 1
    overlaps = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = (
        (a_Nx4[:, 2] - a_Nx4[:, 0] + 1.0) * (a_Nx4[:, 3] - a_Nx4[:, 1] + 1.0)
        + (b_Nx4[:, 2] - b_Nx4[:, 0] + 1.0) * (b_Nx4[:, 3] - b_Nx4[:, 1] + 1.0)
        - inter
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(overlaps, inter / np.where(overlaps, union, 1.0), 0.0)
    return iou, overlaps


def pair_iou_continuous(a_Nx4: np.ndarray, b_Nx4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of row-aligned box pairs with continuous coordinates (w = x2 - x1, COCO).

    Returns (iou [N], overlaps [N]) like `pair_iou`: iou is 0 where iw or ih <= 0.
    """
    iw = np.minimum(a_Nx4[:, 2], b_Nx4[:, 2]) - np.maximum(a_Nx4[:, 0], b_Nx4[:, 0])
    ih = np.minimum(a_Nx4[:, 3], b_Nx4[:, 3]) - np.maximum(a_Nx4[:, 1], b_Nx4[:, 1])
    overlaps = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = (
        (a_Nx4[:, 2] - a_Nx4[:, 0]) * (a_Nx4[:, 3] - a_Nx4[:, 1])
        + (b_Nx4[:, 2] - b_Nx4[:, 0]) * (b_Nx4[:, 3] - b_Nx4[:, 1])
        - inter
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(overlaps, inter / np.where(overlaps, union, 1.0), 0.0)
    return iou, overlaps


def pair_iou_by_rule(
    a_Nx4: np.ndarray, b_Nx4: np.ndarray, rule: str = "ilsvrc"
) -> tuple[np.ndarray, np.ndarray]:
    """`pair_iou` (the devkit's +1 boxes) for 'ilsvrc', `pair_iou_continuous` for 'iou50'."""
    if rule == "ilsvrc":
        return pair_iou(a_Nx4, b_Nx4)
    if rule == "iou50":
        return pair_iou_continuous(a_Nx4, b_Nx4)
    raise ValueError(f"iou rule {rule!r} is not one of {', '.join(IOU_RULES)}")


def crowd_cover(det_Nx4: np.ndarray, crowd_Nx4: np.ndarray, rule: str = "ilsvrc") -> np.ndarray:
    """[N] intersection / detection area of row-aligned (detection, crowd region) pairs, COCO's
    iscrowd overlap; +1 sizes under 'ilsvrc', continuous under 'iou50'; 0 without overlap."""
    one = 1.0 if rule == "ilsvrc" else 0.0
    iw = np.minimum(det_Nx4[:, 2], crowd_Nx4[:, 2]) - np.maximum(det_Nx4[:, 0], crowd_Nx4[:, 0])
    ih = np.minimum(det_Nx4[:, 3], crowd_Nx4[:, 3]) - np.maximum(det_Nx4[:, 1], crowd_Nx4[:, 1])
    iw, ih = iw + one, ih + one
    overlaps = (iw > 0) & (ih > 0)
    area = (det_Nx4[:, 2] - det_Nx4[:, 0] + one) * (det_Nx4[:, 3] - det_Nx4[:, 1] + one)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlaps & (area > 0), iw * ih / np.where(area > 0, area, 1.0), 0.0)


def average_precision(rec: np.ndarray, prec: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+ `VOCap`, FGFA `vid_ap`; VID_PROTOCOL §1)."""
    mrec = np.concatenate(([0.0], np.asarray(rec, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(prec, np.float64), [0.0]))
    # Precision envelope: non-increasing from the right (the devkit's backwards max loop).
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def expand_pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, k) with lo[i] <= k < hi[i], grouped by i ascending: (i [P], k [P])."""
    counts = np.maximum(hi - lo, 0)
    i = np.repeat(np.arange(len(lo)), counts)
    offsets = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    return i, np.repeat(lo, counts) + offsets


@dataclasses.dataclass(frozen=True, eq=False)
class Matching:
    """Result of the per-frame greedy matching (VID_PROTOCOL §1).

    det_index: [M] indices into the Detections of those on listed frames, in evaluation order
    (frame-list order, then descending score, ties in input order); frame: [M] their frame rows;
    matched_gt: [M] index of the ground truth box each one claimed, -1 if none (a FP);
    num_dropped: detections on frames outside the list;
    num_ignored: detections on listed frames that a crowd region absorbed (module docstring),
    left out of det_index, so they are neither TP nor FP for any consumer.
    """

    det_index: np.ndarray
    frame: np.ndarray
    matched_gt: np.ndarray
    num_dropped: int
    num_ignored: int = 0


def frame_rows(frame_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """Row of each query id in `frame_ids` (unique), -1 where absent."""
    rows = np.full(len(query_ids), -1, np.int64)
    if len(frame_ids) == 0:
        return rows
    sorter = np.argsort(frame_ids, kind="stable")
    sorted_ids = frame_ids[sorter]
    pos = np.minimum(np.searchsorted(sorted_ids, query_ids), len(sorted_ids) - 1)
    found = sorted_ids[pos] == query_ids
    rows[found] = sorter[pos[found]]
    return rows


def match_detections(gt: GroundTruth, dets: Detections) -> Matching:
    """Greedy per-frame matching of every detection on a listed frame (VID_PROTOCOL §1)."""
    if len(dets) and (dets.label.min() < 0 or dets.label.max() >= gt.num_classes):
        raise ValueError(f"detection labels must be in 0..{gt.num_classes - 1}")
    rows_all = frame_rows(gt.frame_ids, dets.frame_id)
    listed = np.flatnonzero(rows_all >= 0)
    # Frame-list order, then score descending; lexsort is stable, so ties keep input order
    # (the devkit's MATLAB stable sort, VID_PROTOCOL §1 "per-frame order").
    order = listed[np.lexsort((-dets.score[listed], rows_all[listed]))]
    rows = rows_all[order]
    num_classes = gt.num_classes
    matched = np.full(len(order), -1, np.int64)

    # Candidate pairs (detection, same-frame same-class ground truth), via sorted keys.
    gt_key = gt.frame * num_classes + gt.label
    gt_order = np.argsort(gt_key, kind="stable")  # stable: XML order within (frame, class)
    gt_key_sorted = gt_key[gt_order]
    det_key = rows * num_classes + dets.label[order]
    lo = np.searchsorted(gt_key_sorted, det_key, "left")
    hi = np.searchsorted(gt_key_sorted, det_key, "right")
    pair_det, pair_pos = expand_pairs(lo, hi)
    pair_gt = gt_order[pair_pos]
    iou, overlaps = gt.pair_iou(dets.boxes[order[pair_det]], gt.boxes[pair_gt])
    thr = gt.thresholds()
    cand = overlaps & (iou >= thr[pair_gt])
    c_det, c_gt, c_iou = pair_det[cand], pair_gt[cand], iou[cand]

    # Detections compete only inside one (frame, class) group, and only when some ground truth
    # is a candidate of more than one of them. Elsewhere each takes its best candidate at once.
    contested_gt = np.bincount(c_gt, minlength=len(gt))[c_gt] > 1
    contested_keys = np.unique(det_key[c_det[contested_gt]])
    in_contest = np.isin(det_key[c_det], contested_keys)

    free = ~in_contest
    f_det, f_gt, f_iou = c_det[free], c_gt[free], c_iou[free]
    # Largest IoU per detection, first candidate (XML order) on exact ties: the devkit's
    # strict `>` scan. lexsort is stable, so equal IoUs keep candidate order.
    best = np.lexsort((-f_iou, f_det))
    first = np.ones(len(best), bool)
    first[1:] = f_det[best][1:] != f_det[best][:-1]
    matched[f_det[best[first]]] = f_gt[best[first]]

    # Contested groups: the sequential greedy scan, detections in evaluation order.
    k_det, k_gt, k_iou = c_det[in_contest], c_gt[in_contest], c_iou[in_contest]
    if len(k_det):
        taken = np.zeros(len(gt), bool)
        starts = np.flatnonzero(np.r_[True, k_det[1:] != k_det[:-1]])
        ends = np.r_[starts[1:], len(k_det)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            ovmax, kmax = -1.0, -1
            for g, ov in zip(k_gt[s:e].tolist(), k_iou[s:e].tolist(), strict=True):
                if not taken[g] and ov > ovmax:
                    ovmax, kmax = ov, g
            if kmax >= 0:
                taken[kmax] = True
                matched[k_det[s]] = kmax
    num_dropped = int(len(dets) - len(listed))
    if not gt.num_crowd:
        return Matching(order, rows, matched, num_dropped)
    ignored = _crowd_ignored(gt, dets, order, det_key, matched)
    keep = ~ignored
    return Matching(order[keep], rows[keep], matched[keep], num_dropped, int(ignored.sum()))


def _crowd_ignored(
    gt: GroundTruth, dets: Detections, order: np.ndarray, det_key: np.ndarray, matched: np.ndarray
) -> np.ndarray:
    """[M] the unmatched detections that a same-frame, same-class crowd region covers."""
    crowd_key = gt.crowd_frame * gt.num_classes + gt.crowd_label
    crowd_order = np.argsort(crowd_key, kind="stable")
    crowd_key_sorted = crowd_key[crowd_order]
    unmatched = np.flatnonzero(matched < 0)
    lo = np.searchsorted(crowd_key_sorted, det_key[unmatched], "left")
    hi = np.searchsorted(crowd_key_sorted, det_key[unmatched], "right")
    pair_u, pair_pos = expand_pairs(lo, hi)
    cover = crowd_cover(
        dets.boxes[order[unmatched[pair_u]]], gt.crowd_boxes[crowd_order[pair_pos]], gt.iou_rule
    )
    ignored = np.zeros(len(matched), bool)
    ignored[unmatched[pair_u[cover >= CROWD_COVER]]] = True
    return ignored


def pooled_order(scores: np.ndarray) -> np.ndarray:
    """Dataset-wide order by descending score; stable, so ties keep evaluation order (§1)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def class_aps(
    labels: np.ndarray, tp: np.ndarray, fp: np.ndarray, npos: np.ndarray, num_classes: int
) -> np.ndarray:
    """[C] AP per class from pooled, score-sorted detections; NaN where npos <= 0.

    tp and fp may be fractional (the motion buckets' FP weights, VID_PROTOCOL §2).
    """
    aps = np.full(num_classes, np.nan)
    eps = np.finfo(np.float64).eps
    for c in range(num_classes):
        if npos[c] <= 0:
            continue
        mask = labels == c
        tp_c = np.cumsum(tp[mask])
        fp_c = np.cumsum(fp[mask])
        rec = tp_c / float(npos[c])
        prec = tp_c / np.maximum(tp_c + fp_c, eps)
        aps[c] = average_precision(rec, prec)
    return aps


def mean_ap(aps: np.ndarray) -> float:
    """Mean over the classes with an AP (NaN marks a class without ground truth); NaN if none."""
    aps = np.asarray(aps, np.float64)
    valid = ~np.isnan(aps)
    return float(aps[valid].mean()) if valid.any() else float("nan")


@dataclasses.dataclass(frozen=True, eq=False)
class VidResult:
    """ap: [C] per class (NaN without ground truth); npos: [C]; mAP over classes with GT."""

    ap: np.ndarray
    npos: np.ndarray
    mAP: float
    num_detections: int
    num_dropped: int
    num_tp: int


def evaluate_vid(gt: GroundTruth, dets: Detections, matching: Matching | None = None) -> VidResult:
    """Per-class AP and mAP under the ILSVRC VID protocol (VID_PROTOCOL §1)."""
    if matching is None:
        matching = match_detections(gt, dets)
    tp = (matching.matched_gt >= 0).astype(np.float64)
    fp = 1.0 - tp
    order = pooled_order(dets.score[matching.det_index])
    labels = dets.label[matching.det_index][order]
    npos = gt.npos()
    aps = class_aps(labels, tp[order], fp[order], npos, gt.num_classes)
    return VidResult(
        ap=aps,
        npos=npos,
        mAP=mean_ap(aps),
        num_detections=len(matching.det_index),
        num_dropped=matching.num_dropped,
        num_tp=int(tp.sum()),
    )
