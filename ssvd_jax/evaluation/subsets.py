"""mAP on subsets of frames and videos: clean vs deteriorated frames, per deterioration kind,
and bootstrap intervals over videos.

Matching is per frame (VID_PROTOCOL §1), so the AP of a subset of frames is the AP of the
whole evaluation with every other frame's detections and ground truth given weight 0; a
bootstrap resample of videos gives each frame the number of times its video was drawn.
`score_terms` does the matching and the pooled score order once; `weighted_map` is then a
few cumulative sums per class, cheap enough for a thousand resamples. One approximation: a
speed bucket's false positive on a frame without ground truth keeps the weight the protocol
gives it over the whole evaluation (VID_PROTOCOL §2's fraction of motion entries in the
bucket), not a weight recomputed for the subset.

Frame qualities come from the synthetic generator's manifest (`synthetic_manifest.json`: per
video, per frame, the deteriorations applied); other datasets record none, and the subsets are
then absent.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from ssvd_jax.evaluation import motion, vid_ap

MANIFEST = "synthetic_manifest.json"
METRICS = ("all", *motion.SPEED_BUCKETS)


@dataclasses.dataclass(frozen=True, eq=False)
class Terms:
    """One metric's pooled, score-sorted detections: labels, tp and fp weights and frame rows
    [M]; its positives: ground truth labels and frame rows [G] with the counted mask."""

    labels: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    det_frame: np.ndarray
    gt_label: np.ndarray
    gt_frame: np.ndarray
    gt_counted: np.ndarray
    num_classes: int


def score_terms(gt: vid_ap.GroundTruth, dets: vid_ap.Detections) -> dict[str, Terms]:
    """Terms of the overall metric ('all') and of each speed bucket, matched once."""
    matching = vid_ap.match_detections(gt, dets)
    order = vid_ap.pooled_order(dets.score[matching.det_index])
    labels = dets.label[matching.det_index][order]
    frames = matching.frame[order]
    tp_all = (matching.matched_gt >= 0).astype(np.float64)
    out = {
        "all": Terms(
            labels,
            tp_all[order],
            1.0 - tp_all[order],
            frames,
            gt.label,
            gt.frame,
            np.ones(len(gt), bool),
            gt.num_classes,
        )  # fmt: skip
    }
    if gt.motion_iou is not None:
        overlaps = motion._frame_overlaps(gt, dets, matching)
        for name in motion.SPEED_BUCKETS:
            lo, hi = motion.MOTION_BUCKETS[name]
            tp, fp, _ = motion.bucket_tp_fp(gt, dets, matching, lo, hi, overlaps)
            counted = motion.bucket_counted(gt, lo, hi)
            out[name] = Terms(labels, tp[order], fp[order], frames, gt.label, gt.frame, counted,
                              gt.num_classes)  # fmt: skip
    return out


def weighted_map(terms: Terms, frame_weight: np.ndarray) -> float:
    """mAP with every frame row's detections and positives counted `frame_weight` times
    (0 leaves a frame out); classes without weighted positives are left out of the mean."""
    w_det = frame_weight[terms.det_frame]
    npos = np.bincount(
        terms.gt_label[terms.gt_counted],
        weights=frame_weight[terms.gt_frame[terms.gt_counted]],
        minlength=terms.num_classes,
    )
    aps = vid_ap.class_aps(
        terms.labels, terms.tp * w_det, terms.fp * w_det, npos, terms.num_classes
    )
    return vid_ap.mean_ap(aps)


# Weight rows per block of `weighted_maps`: bounds its temporaries to a few [rows, M] arrays.
MAPS_BLOCK = 64


def weighted_maps(terms: Terms, frame_weights_SxF: np.ndarray) -> np.ndarray:
    """[S] `weighted_map` for each row of frame weights, all rows at once per class (the
    bootstrap's resamples): the same sums, so equal to the row-by-row values up to float
    rounding. The all-point AP is sum_k (rec_k - rec_{k-1}) * envelope_k over every
    detection, where a detection that adds no recall (a false positive, or a weight of 0)
    adds 0: `vid_ap.average_precision` skips those terms, which is the same sum."""
    weights = np.atleast_2d(np.asarray(frame_weights_SxF, np.float64))
    counted_label = terms.gt_label[terms.gt_counted]
    counted_frame = terms.gt_frame[terms.gt_counted]
    eps = np.finfo(np.float64).eps
    out = np.empty(len(weights))
    for start in range(0, len(weights), MAPS_BLOCK):
        w = weights[start : start + MAPS_BLOCK]
        aps = np.full((len(w), terms.num_classes), np.nan)
        for c in range(terms.num_classes):
            npos = w[:, counted_frame[counted_label == c]].sum(axis=1)  # [S]
            has = npos > 0
            if not has.any():
                continue
            rows = np.flatnonzero(terms.labels == c)
            w_det = w[has][:, terms.det_frame[rows]]  # [S', M_c]
            tp = np.cumsum(terms.tp[rows] * w_det, axis=1)
            fp = np.cumsum(terms.fp[rows] * w_det, axis=1)
            rec = tp / npos[has, None]
            prec = tp / np.maximum(tp + fp, eps)
            zeros = np.zeros((len(rec), 1))
            mrec = np.concatenate([zeros, rec, zeros + 1.0], axis=1)
            mpre = np.concatenate([zeros, prec, zeros], axis=1)
            envelope = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
            aps[has, c] = np.sum(np.diff(mrec, axis=1) * envelope[:, 1:], axis=1)
        valid = ~np.isnan(aps)
        total = np.where(valid, aps, 0.0).sum(axis=1)
        count = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(w)] = np.where(count > 0, total / count, np.nan)
    return out


def frame_qualities(
    data_root: str | pathlib.Path, video_ids: Sequence[str], frame_stems: Sequence[Sequence[str]]
) -> list[tuple[str, ...]] | None:
    """Per evaluated frame (videos in order, their frames in order), the deteriorations the
    manifest records; None when the dataset has no manifest (not a synthetic one)."""
    path = pathlib.Path(data_root) / MANIFEST
    if not path.is_file():
        return None
    videos = json.loads(path.read_text())["videos"]
    out = []
    for video_id, stems in zip(video_ids, frame_stems, strict=True):
        kinds = videos.get(video_id, {}).get("deteriorations")
        for stem in stems:
            t = int(stem)
            out.append(tuple(kinds[t]) if kinds is not None and t < len(kinds) else ())
    return out


def quality_masks(qualities: Sequence[tuple[str, ...]]) -> dict[str, np.ndarray]:
    """{'clean': no deterioration, 'deteriorated': any, '<kind>': that kind}, [F] bool each."""
    num = len(qualities)
    masks = {
        "clean": np.array([not q for q in qualities], bool).reshape(num),
        "deteriorated": np.array([bool(q) for q in qualities], bool).reshape(num),
    }
    for kind in sorted({k for q in qualities for k in q}):
        masks[kind] = np.array([kind in q for q in qualities], bool)
    return masks


def video_of_frame(video_starts: np.ndarray, num_frames: int) -> np.ndarray:
    """[F] the video index of each frame row."""
    index = np.zeros(num_frames, np.int64)
    index[np.asarray(video_starts[1:], np.int64)] = 1
    return np.cumsum(index)


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float  # on the evaluated videos
    low: float  # 2.5% and 97.5% bootstrap quantiles
    high: float


def bootstrap(
    models: Mapping[str, dict[str, Terms]],
    subsets: Mapping[str, np.ndarray],
    video_index: np.ndarray,
    *,
    baseline: str,
    num_samples: int,
    seed: int,
) -> dict[str, dict[str, dict[str, Interval]]]:
    """Bootstrap over videos (the same resamples for every model, so differences are paired).

    models: name -> `score_terms`; subsets: name -> [F] frame mask (e.g. 'all' frames,
    'clean', 'deteriorated'). Returns {model: {'<metric>@<subset>': {'value': Interval of the
    mAP, 'delta': Interval of model - baseline}}} for every metric of `METRICS` the terms have.
    """
    num_videos = int(video_index.max()) + 1 if len(video_index) else 0
    rng = np.random.default_rng(seed)
    draws = np.array([np.bincount(rng.integers(num_videos, size=num_videos), minlength=num_videos)
                      for _ in range(num_samples)]).reshape(num_samples, num_videos)  # fmt: skip
    out: dict[str, dict[str, dict[str, Interval]]] = {m: {} for m in models}
    for subset, mask in subsets.items():
        base_weight = mask.astype(np.float64)
        for metric in METRICS:
            if any(metric not in terms for terms in models.values()):
                continue
            key = f"{metric}@{subset}"
            values = {m: weighted_map(t[metric], base_weight) for m, t in models.items()}
            weights = base_weight * draws[:, video_index]  # [num_samples, F]
            samples = {m: weighted_maps(t[metric], weights) for m, t in models.items()}
            for m in models:
                entry = {"value": _interval(values[m], samples[m])}
                if m != baseline:
                    entry["delta"] = _interval(
                        values[m] - values[baseline], samples[m] - samples[baseline]
                    )
                out[m][key] = entry
    return out


def _interval(value: float, samples: np.ndarray) -> Interval:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return Interval(float(value), float("nan"), float("nan"))
    low, high = np.quantile(finite, [0.025, 0.975])
    return Interval(float(value), float(low), float(high))
