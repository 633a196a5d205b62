"""Tracks: detections with a track id each, grouped into the tracks of an evaluation
(docs/TRACK_PROTOCOL.md §1-2).

A track (tracklet) is the set of detections of one video that carry the same track id: the
devkit groups a result file per video, so one id used in two videos names two tracks. A track
has one class and at most one box per frame, and its score is the mean of its detections'
scores. Ground-truth tracks are the boxes of one video with the same XML `<trackid>`, in the
order their ids first appear (frame by frame, XML order inside a frame), as the devkit builds
them.

Pure numpy, like the rest of the protocol code; nothing here reads files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ssvd_jax.evaluation import vid_ap


@dataclasses.dataclass(frozen=True, eq=False)
class Tracks:
    """Detections with a track id each: dets (vid_ap.Detections) and track_id [D] (ints >= 0)."""

    dets: vid_ap.Detections
    track_id: np.ndarray

    def __post_init__(self):
        track_id = np.asarray(self.track_id)
        if track_id.size and not np.issubdtype(track_id.dtype, np.integer):
            if not np.all(np.isfinite(track_id)) or np.any(track_id != np.round(track_id)):
                raise ValueError("Tracks: track ids must be integers")
        track_id = track_id.astype(np.int64).reshape(-1)
        if len(track_id) != len(self.dets):
            raise ValueError(f"Tracks: {len(track_id)} track ids for {len(self.dets)} detections")
        if len(track_id) and track_id.min() < 0:
            raise ValueError("Tracks: track ids must be >= 0 (the devkit rejects -1)")
        object.__setattr__(self, "track_id", track_id)

    def __len__(self) -> int:
        return len(self.track_id)

    def take(self, index: np.ndarray) -> Tracks:
        """The rows `index` (integer indices or a boolean mask), in that order."""
        return Tracks(self.dets.take(index), self.track_id[index])

    @staticmethod
    def concatenate(parts: Sequence[Tracks]) -> Tracks:
        return Tracks(
            vid_ap.Detections.concatenate([p.dets for p in parts]),
            np.concatenate([p.track_id for p in parts] + [np.zeros(0, np.int64)]),
        )


class TrackConsistencyError(ValueError):
    """A track that breaks a rule of the protocol (two classes, two boxes on one frame).

    `row` is the offending row of the input (a detection of the Tracks, or a box of the
    GroundTruth when `ground_truth`), so that a reader of files can name the line or the XML;
    `problem` says what is wrong.
    """

    def __init__(self, row: int, problem: str, ground_truth: bool = False):
        super().__init__(problem)
        self.row = int(row)
        self.problem = problem
        self.ground_truth = ground_truth


@dataclasses.dataclass(frozen=True, eq=False)
class TrackSet:
    """The tracks of an evaluation, each a run of `entries` ordered by frame.

    index: [M] the entries: rows of the source (Tracks detections or GroundTruth boxes) on
      listed frames, grouped by track, each track's entries in frame order;
    frame: [M] frame row (in GroundTruth.frame_ids) of each entry;
    start: [K + 1] offsets of the K tracks in `index`; track_of: [M] track of each entry;
    video: [K] video (index into GroundTruth.video_starts) of each track; label: [K] 0-based
      class; score: [K] mean score of its entries (1 for ground truth); track_id: [K] its id;
    num_dropped: source rows on frames outside the list (not part of any track).
    """

    index: np.ndarray
    frame: np.ndarray
    start: np.ndarray
    track_of: np.ndarray
    video: np.ndarray
    label: np.ndarray
    score: np.ndarray
    track_id: np.ndarray
    num_dropped: int = 0

    def __len__(self) -> int:
        return len(self.video)

    @property
    def length(self) -> np.ndarray:
        """[K] number of frames (entries) of each track."""
        return np.diff(self.start)


def video_of_frames(gt: vid_ap.GroundTruth) -> np.ndarray:
    """[F] video of each frame row (one video when `video_starts` is unset)."""
    starts = gt.video_starts if gt.video_starts is not None else np.zeros(1, np.int64)
    return np.searchsorted(starts, np.arange(gt.num_frames), side="right") - 1


def _group(
    frame: np.ndarray,
    label: np.ndarray,
    score: np.ndarray,
    track_id: np.ndarray,
    rows: np.ndarray,
    video_of: np.ndarray,
    *,
    first_appearance: bool,
    num_dropped: int,
    what: str,
) -> TrackSet:
    """Group `rows` (source rows on listed frames, with their frame rows etc.) by (video, id)."""
    video = video_of[frame]
    key_order = np.lexsort((track_id, video))  # by video, then id
    key_video, key_id = video[key_order], track_id[key_order]
    new_key = np.r_[True, (key_video[1:] != key_video[:-1]) | (key_id[1:] != key_id[:-1])]
    group_sorted = np.cumsum(new_key) - 1
    group = np.empty(len(rows), np.int64)
    group[key_order] = group_sorted
    num = int(group_sorted[-1]) + 1 if len(rows) else 0
    # Rank of each group: by (video, id) or, for ground truth, by (video, first row).
    if first_appearance:
        first = np.full(num, len(rows), np.int64)
        np.minimum.at(first, group, np.arange(len(rows)))
        first_video = video[first] if num else np.zeros(0, np.int64)
        rank = np.empty(num, np.int64)
        rank[np.lexsort((first, first_video))] = np.arange(num)
        group = rank[group]
    # Entries by track, then frame, then input order (the checks below name the later row).
    order = np.lexsort((np.arange(len(rows)), frame, group))
    g_sorted, f_sorted = group[order], frame[order]
    start = np.searchsorted(g_sorted, np.arange(num + 1))
    lead = order[start[:-1]]
    # One class per track: name the first row (in input order) whose class differs.
    bad = label[order] != np.repeat(label[lead], np.diff(start))
    if bad.any():
        row = int(np.min(order[bad]))
        k = group[row]
        raise TrackConsistencyError(
            int(rows[row]),
            f"{what} {int(track_id[row])} has two classes ({int(label[lead[k]]) + 1} and "
            f"{int(label[row]) + 1})",
            ground_truth=first_appearance,
        )
    twice = np.r_[False, (g_sorted[1:] == g_sorted[:-1]) & (f_sorted[1:] == f_sorted[:-1])]
    if twice.any():
        row = int(np.min(order[twice]))
        raise TrackConsistencyError(
            int(rows[row]),
            f"{what} {int(track_id[row])} has two boxes on one frame",
            ground_truth=first_appearance,
        )
    sums = np.bincount(g_sorted, weights=score[order], minlength=num)
    return TrackSet(
        index=rows[order],
        frame=f_sorted,
        start=start,
        track_of=g_sorted,
        video=video[lead],
        label=label[lead],
        score=sums / np.maximum(np.diff(start), 1),
        track_id=track_id[lead],
        num_dropped=num_dropped,
    )


def predicted_tracks(gt: vid_ap.GroundTruth, tracks: Tracks) -> TrackSet:
    """The predicted tracks of `tracks` on the listed frames of `gt`, ordered by video, then
    track id (the devkit's `unique`); detections on other frames are dropped (counted)."""
    if len(tracks) and (tracks.dets.label.min() < 0 or tracks.dets.label.max() >= gt.num_classes):
        raise ValueError(f"track labels must be in 0..{gt.num_classes - 1}")
    frame_all = vid_ap.frame_rows(gt.frame_ids, tracks.dets.frame_id)
    rows = np.flatnonzero(frame_all >= 0)
    return _group(
        frame_all[rows], tracks.dets.label[rows], tracks.dets.score[rows], tracks.track_id[rows],
        rows, video_of_frames(gt), first_appearance=False,
        num_dropped=int(len(tracks) - len(rows)), what="track",
    )  # fmt: skip


def ground_truth_tracks(gt: vid_ap.GroundTruth) -> TrackSet:
    """The ground-truth tracks: boxes of one video with one `<trackid>`, ordered by video, then
    by where the id first appears (the devkit's order). Raises TrackConsistencyError (row: the
    box) for a track with two classes or two boxes on one frame (the devkit stops there too)."""
    if gt.track_id is None:
        raise ValueError("the tracklet evaluation needs GroundTruth.track_id")
    rows = np.arange(len(gt))
    return _group(
        gt.frame, gt.label, np.ones(len(gt)), gt.track_id, rows, video_of_frames(gt),
        first_appearance=True, num_dropped=0, what="ground-truth track",
    )  # fmt: skip


def video_class_groups(
    dets: vid_ap.Detections, video_frame_ids: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Detections split per video and class, frame by frame (what Seq-NMS and linking run on).

    Returns (outside, groups): `outside` are the detections on frames of no listed video;
    each group (videos in order, classes ascending) is a list over the video's frames of the
    detection indices on that frame, in input order.
    """
    lengths = [len(v) for v in video_frame_ids]
    all_ids = np.concatenate([np.asarray(v, np.int64).reshape(-1) for v in video_frame_ids] + [[]])
    video_of = np.repeat(np.arange(len(lengths)), lengths)
    local_t = np.concatenate([np.arange(k) for k in lengths] + [[]]).astype(np.int64)
    rows = vid_ap.frame_rows(all_ids.astype(np.int64), dets.frame_id)
    outside = np.flatnonzero(rows < 0)
    inside = np.flatnonzero(rows >= 0)
    order = inside[np.lexsort((local_t[rows[inside]], dets.label[inside], video_of[rows[inside]]))]
    vid, t_in = video_of[rows[order]], local_t[rows[order]]
    labels = dets.label[order]
    group_start = np.flatnonzero(np.r_[True, (vid[1:] != vid[:-1]) | (labels[1:] != labels[:-1])])
    if not len(order):
        group_start = group_start[:0]
    group_end = np.r_[group_start[1:], len(order)][: len(group_start)]
    groups = []
    for s, e in zip(group_start.tolist(), group_end.tolist(), strict=True):
        idx = order[s:e]
        cuts = np.searchsorted(t_in[s:e], np.arange(lengths[vid[s]] + 1))
        groups.append([idx[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)])
    return outside, groups
