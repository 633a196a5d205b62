"""Tracklet AP (mAP_track): the ILSVRC VID "object detection from video with tracking" task as
the devkit's `eval_vid_tracking.m` (ILSVRC 2016+) computes it (docs/TRACK_PROTOCOL.md §2).

Rules (the section numbers are TRACK_PROTOCOL's):
* §1 tracks: `tracks.predicted_tracks` / `tracks.ground_truth_tracks` (per video and id; one
  class; a predicted track's score is the mean of its detections' scores).
* §2 overlap of a predicted track P and a ground-truth track G of the same class and video:
  ov = (frames where both have a box and IoU(P's box, G's box) >= G's per-object threshold
  min(0.5, wh / ((w + 10)(h + 10))), +1 sizes) / (frames where P or G has a box); under
  `GroundTruth.iou_rule = 'iou50'`, continuous IoU >= 0.5 instead.
* §2 matching, per video and per tau separately: predicted tracks by descending score (ties:
  lower track id first); each takes, among the ground-truth tracks not yet taken at this tau
  with ov >= tau, the one with the largest ov (the first in ground-truth order on ties): TP, the
  track is taken; otherwise FP.
* §2 AP per class and tau: all predicted tracks pooled, sorted by score (ties: earlier video,
  then lower id), the all-point AP of `vid_ap.average_precision` with npos = the number of
  ground-truth tracks of the class. A class without ground-truth tracks gets NaN and is left out
  of the mean (the devkit divides by zero there); mAP_track@tau is the mean over classes and
  mAP_track the mean over the taus (0.25, 0.5, 0.75).

Vectorised with numpy, except the greedy assignment, a Python loop over the (predicted,
ground-truth) track pairs that can match at all (ov >= the smallest tau).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ssvd_jax.evaluation import tracks as tracks_lib
from ssvd_jax.evaluation import vid_ap

# The devkit's defaultTrackThr: the fraction of the two tracks' frames that must overlap.
TRACK_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75)


@dataclasses.dataclass(frozen=True, eq=False)
class TrackOverlaps:
    """Every (predicted, ground-truth) pair of tracks that share a frame and a class.

    pred: [P] predicted track; gt: [P] ground-truth track; common: [P] frames where both have a
    box; hits: [P] of those, the frames where the boxes overlap by the ground truth's threshold;
    overlap: [P] hits / (frames where either has a box), the devkit's ov.
    The frame-level pairs behind them (for the stability metrics): entry_pred / entry_gt [Q]
    entries (indices into each TrackSet's `index`) on one frame, entry_hit [Q] whether they
    overlap by the threshold.
    """

    pred: np.ndarray
    gt: np.ndarray
    common: np.ndarray
    hits: np.ndarray
    overlap: np.ndarray
    entry_pred: np.ndarray
    entry_gt: np.ndarray
    entry_hit: np.ndarray


def track_overlaps(
    gt: vid_ap.GroundTruth,
    gt_tracks: tracks_lib.TrackSet,
    preds: tracks_lib.Tracks,
    pred_tracks: tracks_lib.TrackSet,
) -> TrackOverlaps:
    """The devkit's ov for every pair of same-class tracks that share a frame (§2)."""
    c = gt.num_classes
    gt_key = gt_tracks.frame * c + gt_tracks.label[gt_tracks.track_of]
    gt_sorted = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_sorted]
    pred_key = pred_tracks.frame * c + pred_tracks.label[pred_tracks.track_of]
    lo = np.searchsorted(gt_key_sorted, pred_key, "left")
    hi = np.searchsorted(gt_key_sorted, pred_key, "right")
    entry_pred, pos = vid_ap.expand_pairs(lo, hi)
    entry_gt = gt_sorted[pos]
    gt_rows = gt_tracks.index[entry_gt]
    # The ground truth's iou_rule: the devkit's +1 IoU and per-object threshold by default.
    iou, overlaps = gt.pair_iou(preds.dets.boxes[pred_tracks.index[entry_pred]],
                                gt.boxes[gt_rows])  # fmt: skip
    entry_hit = overlaps & (iou >= gt.thresholds()[gt_rows])
    pair_p, pair_g = pred_tracks.track_of[entry_pred], gt_tracks.track_of[entry_gt]
    key = pair_p * max(len(gt_tracks), 1) + pair_g
    unique, inverse = np.unique(key, return_inverse=True)
    common = np.bincount(inverse, minlength=len(unique))
    hits = np.bincount(inverse, weights=entry_hit, minlength=len(unique)).astype(np.int64)
    pred = unique // max(len(gt_tracks), 1)
    gt_k = unique % max(len(gt_tracks), 1)
    union = pred_tracks.length[pred] + gt_tracks.length[gt_k] - common
    return TrackOverlaps(
        pred=pred, gt=gt_k, common=common, hits=hits, overlap=hits / union,
        entry_pred=entry_pred, entry_gt=entry_gt, entry_hit=entry_hit,
    )  # fmt: skip


def pooled_order(pred_tracks: tracks_lib.TrackSet) -> np.ndarray:
    """Predicted tracks by descending score; ties: earlier video, then lower id (§2)."""
    return np.lexsort((pred_tracks.track_id, pred_tracks.video, -pred_tracks.score))


def match_tracks(
    pred_tracks: tracks_lib.TrackSet, overlaps: TrackOverlaps, taus: Sequence[float]
) -> np.ndarray:
    """[T, K] the ground-truth track each predicted track claims at each tau, -1 if none (§2)."""
    matched = np.full((len(taus), len(pred_tracks)), -1, np.int64)
    can = overlaps.overlap >= min(taus) if len(taus) else np.zeros(0, bool)
    p, g, ov = overlaps.pred[can], overlaps.gt[can], overlaps.overlap[can]
    if not len(p):
        return matched
    rank = np.empty(len(pred_tracks), np.int64)
    rank[pooled_order(pred_tracks)] = np.arange(len(pred_tracks))
    order = np.lexsort((g, rank[p]))  # predicted tracks in matching order, their pairs by gt
    p, g, ov = p[order].tolist(), g[order].tolist(), ov[order].tolist()
    taken = [set() for _ in taus]
    start = 0
    while start < len(p):
        end = start
        while end < len(p) and p[end] == p[start]:
            end += 1
        for o, tau in enumerate(taus):
            best, best_g = -np.inf, -1
            for k in range(start, end):
                if g[k] not in taken[o] and ov[k] >= tau and ov[k] > best:
                    best, best_g = ov[k], g[k]
            if best_g >= 0:
                taken[o].add(best_g)
                matched[o, p[start]] = best_g
        start = end
    return matched


@dataclasses.dataclass(frozen=True, eq=False)
class TrackResult:
    """taus: the overlap fractions; ap: [T, C] per tau and class (NaN without ground truth);
    mAP: [T] per tau; mAP_track: their mean; npos: [C] ground-truth tracks per class;
    num_tp: [T]; matched_gt: [T, K] (match_tracks); and what it was computed from."""

    taus: tuple[float, ...]
    ap: np.ndarray
    mAP: np.ndarray
    mAP_track: float
    npos: np.ndarray
    num_tp: np.ndarray
    matched_gt: np.ndarray
    gt_tracks: tracks_lib.TrackSet
    pred_tracks: tracks_lib.TrackSet
    overlaps: TrackOverlaps

    @property
    def num_tracks(self) -> int:
        return len(self.pred_tracks)

    @property
    def num_gt_tracks(self) -> int:
        return len(self.gt_tracks)


def evaluate_tracks(
    gt: vid_ap.GroundTruth,
    preds: tracks_lib.Tracks,
    taus: Sequence[float] = TRACK_THRESHOLDS,
) -> TrackResult:
    """mAP_track of predicted tracks against the ground-truth tracks of `gt` (§1-2)."""
    gt_tracks = tracks_lib.ground_truth_tracks(gt)
    pred_tracks = tracks_lib.predicted_tracks(gt, preds)
    overlaps = track_overlaps(gt, gt_tracks, preds, pred_tracks)
    taus = tuple(float(t) for t in taus)
    matched = match_tracks(pred_tracks, overlaps, taus)
    order = pooled_order(pred_tracks)
    labels = pred_tracks.label[order]
    npos = np.bincount(gt_tracks.label, minlength=gt.num_classes).astype(np.float64)
    ap = np.full((len(taus), gt.num_classes), np.nan)
    for o in range(len(taus)):
        tp = (matched[o, order] >= 0).astype(np.float64)
        ap[o] = vid_ap.class_aps(labels, tp, 1.0 - tp, npos, gt.num_classes)
    per_tau = np.array([vid_ap.mean_ap(a) for a in ap])
    return TrackResult(
        taus=taus, ap=ap, mAP=per_tau,
        mAP_track=float(per_tau.mean()) if len(per_tau) else float("nan"),
        npos=npos, num_tp=(matched >= 0).sum(axis=1), matched_gt=matched,
        gt_tracks=gt_tracks, pred_tracks=pred_tracks, overlaps=overlaps,
    )  # fmt: skip
