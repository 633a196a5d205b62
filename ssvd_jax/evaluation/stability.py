"""Stability of tracks: the fragment, centre position and scale-and-ratio errors of Zhang & Wang,
"On the Stability of Video Detection and Tracking" (arXiv 1611.06467), over matched tracks
(docs/TRACK_PROTOCOL.md §4).

Every ground-truth track G that a predicted track P claims in the tracklet matching at one tau
(`track_ap.match_tracks`, default 0.5) is scored along G's frames f_1 < ... < f_n:
* status s_k = 1 when P has a box on f_k that overlaps G's box by G's per-object IoU threshold
  (the detection protocol's min(0.5, wh / ((w + 10)(h + 10)))), else 0;
* fragment error of G: the number of status changes, sum_k [s_k != s_(k-1)], over n - 1
  (0 for a one-frame track);
* on the frames with s_k = 1, with +1 widths and heights and centres ((x1 + x2) / 2, ...):
  e_x = (x_P - x_G) / w_G, e_y = (y_P - y_G) / h_G, e_s = sqrt(w_P h_P / (w_G h_G)) - 1,
  e_r = (w_P / h_P) / (w_G / h_G) - 1; centre error of G = std(e_x) + std(e_y), scale and
  ratio error = std(e_s) + std(e_r), population standard deviations (numpy's default, as the
  port in FGFA's `imagenet_vid_eval_stability.py`).
E_F, E_C and E_R are the means over the matched ground-truth tracks; the stability error is
their sum. Ground-truth tracks no predicted track claims are recall failures, which mAP_track
counts; they do not enter the stability errors (the paper likewise averages over trajectories
that have matched detections).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssvd_jax.evaluation import track_ap, vid_ap

# The middle one of the devkit's overlap fractions (track_ap.TRACK_THRESHOLDS).
STABILITY_TAU = 0.5


@dataclasses.dataclass(frozen=True)
class StabilityResult:
    """E_F, E_C, E_R (NaN when no track is matched), their sum, and how many ground-truth
    tracks they average over, at the matching's `tau`."""

    fragment_error: float
    center_error: float
    scale_ratio_error: float
    total: float
    num_tracks: int
    tau: float


def _population_std(values: np.ndarray, group: np.ndarray, num: int) -> np.ndarray:
    count = np.bincount(group, minlength=num)
    mean = np.bincount(group, weights=values, minlength=num) / np.maximum(count, 1)
    var = np.bincount(group, weights=(values - mean[group]) ** 2, minlength=num)
    return np.sqrt(var / np.maximum(count, 1))


def _size(boxes_Nx4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return boxes_Nx4[:, 2] - boxes_Nx4[:, 0] + 1.0, boxes_Nx4[:, 3] - boxes_Nx4[:, 1] + 1.0


def stability(
    gt: vid_ap.GroundTruth,
    preds_boxes: np.ndarray,
    result: track_ap.TrackResult,
    tau: float = STABILITY_TAU,
) -> StabilityResult:
    """The stability errors of the ground-truth tracks matched at `tau` (one of result.taus).

    preds_boxes: [D, 4] the boxes of the Tracks that `result` evaluated.
    """
    if tau not in result.taus:
        raise ValueError(f"stability tau {tau} is not one of the evaluated {result.taus}")
    gts, preds, ov = result.gt_tracks, result.pred_tracks, result.overlaps
    matched = result.matched_gt[result.taus.index(tau)]
    partner = np.full(len(gts), -1, np.int64)  # the predicted track that claims each gt track
    claimed = np.flatnonzero(matched >= 0)
    partner[matched[claimed]] = claimed
    # Frame-level pairs of a matched (P, G) whose boxes overlap by the threshold.
    g_track = gts.track_of[ov.entry_gt]
    hit = ov.entry_hit & (partner[g_track] == preds.track_of[ov.entry_pred])
    g_entry, p_entry = ov.entry_gt[hit], ov.entry_pred[hit]
    status = np.zeros(len(gts.index), bool)
    status[g_entry] = True
    tracks = np.flatnonzero(partner >= 0)
    if not len(tracks):
        nan = float("nan")
        return StabilityResult(nan, nan, nan, nan, 0, float(tau))
    # Fragment error: status changes between consecutive entries of the same track.
    change = (status[1:] != status[:-1]) & (gts.track_of[1:] == gts.track_of[:-1])
    changes = np.bincount(gts.track_of[1:][change], minlength=len(gts))
    steps = np.maximum(gts.length - 1, 1)
    fragment = np.where(gts.length > 1, changes / steps, 0.0)
    # Centre, scale and ratio errors on the frames with status 1.
    gb = gt.boxes[gts.index[g_entry]]
    pb = preds_boxes[preds.index[p_entry]]
    gw, gh = _size(gb)
    pw, ph = _size(pb)
    e_x = ((pb[:, 0] + pb[:, 2]) / 2 - (gb[:, 0] + gb[:, 2]) / 2) / gw
    e_y = ((pb[:, 1] + pb[:, 3]) / 2 - (gb[:, 1] + gb[:, 3]) / 2) / gh
    e_s = np.sqrt(pw * ph / (gw * gh)) - 1.0
    e_r = (pw / ph) / (gw / gh) - 1.0
    owner = gts.track_of[g_entry]
    num = len(gts)
    center = _population_std(e_x, owner, num) + _population_std(e_y, owner, num)
    scale_ratio = _population_std(e_s, owner, num) + _population_std(e_r, owner, num)
    e_f, e_c, e_r_mean = (float(v[tracks].mean()) for v in (fragment, center, scale_ratio))
    return StabilityResult(
        fragment_error=e_f, center_error=e_c, scale_ratio_error=e_r_mean,
        total=e_f + e_c + e_r_mean, num_tracks=int(len(tracks)), tau=float(tau),
    )  # fmt: skip
