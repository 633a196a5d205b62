"""Seq-NMS (Han et al. 2016, arXiv 1602.08465) as FGFA applies it (VID_PROTOCOL §3).

Per class and per video:
1. link boxes of consecutive frames t -> t+1 whose IoU (+1 convention) is >= 0.5;
2. dynamic programming: the best path score sum ending at each box is its own score, or the best
   predecessor's sum plus its own score when that is strictly larger (first predecessor on ties);
   the global maximum is taken at the earliest frame / lowest index on ties and backtracked;
3. stop when that sum is < 0.01 or no link remains (checked before rescoring, so boxes never on a
   path keep their scores; while links remain anywhere, a lone box can be a path of length one);
4. every box of the path gets the path's average score (FGFA's choice; the paper's 'max' is not
   used);
5. in every frame of the path, boxes with IoU >= 0.3 to the path box are deleted, and all links of
   deleted and path boxes are removed; path boxes cannot be chosen again; repeat from 2.
FGFA then runs the ordinary per-frame NMS at 0.3 (drop a box if its IoU with a kept, higher-scoring
box is > 0.3, +1 convention) per class, which `seq_nms` does too unless `frame_nms_iou` is None.
Not reproduced: FGFA's multi-process bug that leaves the last frame of each process's chunk
without Seq-NMS and NMS (§3), an artefact of its process count. Score ties in the final NMS are
taken lower index first (FGFA's reversed argsort is arbitrary on ties). Scores are float64 here;
FGFA stores the rescored averages in its float32 arrays.

The paths are tracks: `seq_nms_tracks` returns the kept detections with the id of their path
(docs/TRACK_PROTOCOL.md §3).

After each path only the frames from the path's first frame onwards are recomputed, and the
recomputation stops once the sums past the path agree with the previous ones, so a video costs
about one pass per path over the path's own frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ssvd_jax.evaluation import tracks as tracks_lib
from ssvd_jax.evaluation import vid_ap

LINK_IOU = 0.5
SUPPRESS_IOU = 0.3
MIN_PATH_SCORE = 0.01
FRAME_NMS_IOU = 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Broadcast IoU of boxes [..., 4] with the +1 convention, in FGFA's seq_nms float order."""
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    w = np.maximum(0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    h = np.maximum(0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a + area_b - inter)


def iou_matrix(a_Nx4: np.ndarray, b_Mx4: np.ndarray) -> np.ndarray:
    """[N, M] IoU with the +1 convention, in FGFA's seq_nms float order."""
    return _iou(a_Nx4[:, None, :], b_Mx4[None, :, :])


def _links(flat: np.ndarray, n: np.ndarray, link_iou: float) -> list[np.ndarray]:
    """links[t]: bool [n_t, n_t+1], IoU >= link_iou; every frame pair in one vectorised pass.

    flat: [sum n, 4] the boxes of all frames, frame after frame; n: [F] boxes per frame.
    """
    num_frames = len(n)
    off = np.r_[0, np.cumsum(n)]
    frame_of = np.repeat(np.arange(num_frames), n)
    # Partners of a box in frame t: every box of frame t+1 (none for the last frame).
    lo = off[np.minimum(frame_of + 1, num_frames)]
    hi = off[np.minimum(frame_of + 2, num_frames)]
    pair_a, pair_b = vid_ap.expand_pairs(lo, hi)
    linked = _iou(flat[pair_a], flat[pair_b]) >= link_iou
    sizes = n[:-1] * n[1:]
    starts = np.r_[0, np.cumsum(sizes)]
    return [
        linked[starts[t] : starts[t + 1]].reshape(n[t], n[t + 1]) for t in range(num_frames - 1)
    ]


def seq_nms_video(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    link_iou: float = LINK_IOU,
    suppress_iou: float = SUPPRESS_IOU,
    min_path_score: float = MIN_PATH_SCORE,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Seq-NMS of one class in one video.

    boxes[t]: [n_t, 4] and scores[t]: [n_t] of frame t (frames in order, n_t may be 0).
    Returns (keep[t] bool [n_t], new_scores[t] [n_t]) per frame; deleted boxes have keep False.
    """
    keep, new_scores, _ = seq_nms_video_paths(
        boxes, scores, link_iou=link_iou, suppress_iou=suppress_iou,
        min_path_score=min_path_score,
    )  # fmt: skip
    return keep, new_scores


def seq_nms_video_paths(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    link_iou: float = LINK_IOU,
    suppress_iou: float = SUPPRESS_IOU,
    min_path_score: float = MIN_PATH_SCORE,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """`seq_nms_video` and the paths it chose: (keep, new_scores, path) with path[t] [n_t] the
    index of the path (0, 1, ... in the order they were chosen) of each box, -1 for a box that
    was never on a path. The paths are the tracks Seq-NMS finds (docs/TRACK_PROTOCOL.md §3)."""
    num_frames = len(boxes)
    boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
    score = [np.asarray(s, np.float64).reshape(-1).copy() for s in scores]
    n = np.array([len(s) for s in score], np.int64)
    off = np.r_[0, np.cumsum(n)]
    flat = np.concatenate(boxes) if num_frames else np.zeros((0, 4))
    alive = [np.ones(k, bool) for k in n]
    chosen = [np.zeros(k, bool) for k in n]
    path_of = [np.full(k, -1, np.int64) for k in n]
    links = _links(flat, n, link_iou)
    num_links = int(sum(int(m.sum()) for m in links))
    if num_links == 0:
        return alive, score, path_of

    acc: list[np.ndarray] = [np.zeros(0)] * num_frames  # best path sum ending at each box
    back: list[np.ndarray] = [np.zeros(0, np.int64)] * num_frames  # predecessor, -1 for none
    frame_max = np.full(num_frames, -np.inf)

    def update(t: int) -> None:
        # FGFA starts every box at its score, or 0 for deleted (zeroed) and already chosen boxes.
        base = np.where(alive[t] & ~chosen[t], score[t], 0.0)
        best_back = np.full(n[t], -1, np.int64)
        if t > 0 and n[t] and n[t - 1] and links[t - 1].any():
            cand = np.where(links[t - 1], acc[t - 1][:, None] + score[t][None, :], -np.inf)
            pred = np.argmax(cand, axis=0)  # first predecessor on ties
            best = cand[pred, np.arange(n[t])]
            better = best > base
            base = np.where(better, best, base)
            best_back = np.where(better, pred, -1)
        acc[t], back[t] = base, best_back
        frame_max[t] = base.max() if n[t] else -np.inf

    for t in range(num_frames):
        update(t)

    num_paths = 0
    while True:
        t = int(np.argmax(frame_max))  # earliest frame holding the maximum
        if not np.isfinite(frame_max[t]):
            break
        j = int(np.argmax(acc[t]))
        max_sum = float(acc[t][j])
        if max_sum < min_path_score or num_links == 0:
            break
        path = [j]
        while back[t][j] != -1:
            j = int(back[t][j])
            t -= 1
            path.append(j)
        path.reverse()
        root = t
        last = root + len(path) - 1
        new_score = max_sum / len(path)
        # IoU of each path box with every box of its frame, all path frames in one pass.
        path_frames = np.arange(root, last + 1)
        seg, k = vid_ap.expand_pairs(off[path_frames], off[path_frames + 1])
        ov_all = _iou(flat[off[path_frames] + np.asarray(path)][seg], flat[k])
        seg_start = np.r_[0, np.cumsum(n[path_frames])]
        for i, j in enumerate(path):
            f = root + i
            score[f][j] = new_score
            ov = ov_all[seg_start[i] : seg_start[i + 1]]
            delete = (ov >= suppress_iou) & alive[f]
            delete[j] = False
            gone = delete.copy()
            gone[j] = True  # the path box loses its links too, but stays
            if f < num_frames - 1:
                num_links -= int(links[f][gone].sum())
                links[f][gone] = False
            if f > 0:
                num_links -= int(links[f - 1][:, gone].sum())
                links[f - 1][:, gone] = False
            alive[f] &= ~delete
            chosen[f][j] = True
            path_of[f][j] = num_paths
        num_paths += 1
        # Sums of frames before `root` cannot change; past the path they stop changing as soon
        # as one frame's sums are unchanged (later links and scores are untouched).
        for f in range(root, num_frames):
            old = acc[f]
            update(f)
            if f > last and np.array_equal(old, acc[f]):
                break
    return alive, score, path_of


def frame_nms(boxes_Nx4: np.ndarray, scores_N: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by FGFA's `py_nms`: visit by descending score (ties: lower index first),
    drop boxes whose IoU with a kept one is > iou."""
    order = np.argsort(-scores_N, kind="stable")
    ov = iou_matrix(boxes_Nx4[order], boxes_Nx4[order])
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed[i + 1 :] |= ov[i, i + 1 :] > iou
    return np.asarray(keep, np.int64)


def seq_nms(
    dets: vid_ap.Detections,
    video_frame_ids: Sequence[np.ndarray],
    *,
    link_iou: float = LINK_IOU,
    suppress_iou: float = SUPPRESS_IOU,
    min_path_score: float = MIN_PATH_SCORE,
    frame_nms_iou: float | None = FRAME_NMS_IOU,
) -> vid_ap.Detections:
    """Seq-NMS per class and video over a whole detection set, then FGFA's per-frame NMS.

    video_frame_ids: the global frame ids of each video, in frame order (e.g.
    `GroundTruth.video_frame_ids()`). Detections on frames of no listed video pass unchanged.
    The result is ordered by video, class, frame, then input order.
    """
    return seq_nms_tracks(
        dets, video_frame_ids, link_iou=link_iou, suppress_iou=suppress_iou,
        min_path_score=min_path_score, frame_nms_iou=frame_nms_iou,
    ).dets  # fmt: skip


def seq_nms_tracks(
    dets: vid_ap.Detections,
    video_frame_ids: Sequence[np.ndarray],
    *,
    link_iou: float = LINK_IOU,
    suppress_iou: float = SUPPRESS_IOU,
    min_path_score: float = MIN_PATH_SCORE,
    frame_nms_iou: float | None = FRAME_NMS_IOU,
) -> tracks_lib.Tracks:
    """`seq_nms` with the Seq-NMS paths as tracks: the detections it keeps, each with a track id
    (unique over the result): the id of its path, or an id of its own for a box that was never
    on a path (and for detections outside every listed video). A path box that the final
    per-frame NMS removes leaves a gap in its track."""
    outside, groups = tracks_lib.video_class_groups(dets, video_frame_ids)
    kept_idx, kept_scores = [outside], [dets.score[outside]]
    kept_tracks = [np.arange(len(outside), dtype=np.int64)]
    next_id = len(outside)
    for frame_idx in groups:
        keep, new_scores, paths = seq_nms_video_paths(
            [dets.boxes[i] for i in frame_idx],
            [dets.score[i] for i in frame_idx],
            link_iou=link_iou,
            suppress_iou=suppress_iou,
            min_path_score=min_path_score,
        )
        num_paths = max((int(p.max()) + 1 for p in paths if len(p)), default=0)
        lone = next_id + num_paths  # ids of boxes that were never on a path start here
        for i, k, sc, path in zip(frame_idx, keep, new_scores, paths, strict=True):
            i, sc, path = i[k], sc[k], path[k]
            if frame_nms_iou is not None and len(i) > 1:
                kept = np.sort(frame_nms(dets.boxes[i], sc, frame_nms_iou))
                i, sc, path = i[kept], sc[kept], path[kept]
            ids = np.where(path >= 0, next_id + path, -1)
            singles = ids < 0
            ids[singles] = lone + np.arange(int(singles.sum()))
            lone += int(singles.sum())
            kept_idx.append(i)
            kept_scores.append(sc)
            kept_tracks.append(ids)
        next_id = lone
    index = np.concatenate(kept_idx)
    out = dets.take(index)
    return tracks_lib.Tracks(
        vid_ap.Detections(out.frame_id, out.label, np.concatenate(kept_scores), out.boxes),
        np.concatenate(kept_tracks),
    )
