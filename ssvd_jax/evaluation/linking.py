"""Linking per-frame detections into tracks by dynamic programming (Viterbi): the action-tube
linking of Gkioxari & Malik (CVPR 2015) that D&T (Feichtenhofer et al., ICCV 2017) uses and the
SSVD paper's tracklets come from (docs/TRACK_PROTOCOL.md §3).

Per video and class (frames in order):
1. links: a box in frame t and a box in frame t + g, 1 <= g <= max_gap + 1, are linked when
   their IoU (+1 convention) is >= min_iou (> 0); a link with g > 1 bridges g - 1 frames without
   a box of the track (missing detections);
2. a path's score is the sum of its boxes' scores plus iou_weight (lambda) times the sum of its
   links' IoUs. This is D&T's energy, the sum over links of s_i + s_j + lambda * IoU_ij, with
   every box counted once (there interior boxes count twice and a lone box scores 0), so paths
   of any length, a single box included, compare on one scale;
3. Viterbi: the best path ending at a box has the box's score plus the best of 0 and, over its
   links from earlier boxes, (best path ending there + lambda * IoU); a tie goes to the latest
   earlier frame, then the lowest index in it. The best path of all (highest score, on ties
   the earliest frame, then the lowest index) is backtracked;
4. its boxes become a track and leave, with their links; repeat from 3 on the remaining boxes
   until every box is in a track (a box with no link is a track of its own). Nothing is
   suppressed: every input detection is kept and gets a track id;
5. optional rescoring (`rescore_tracks`): every box of a track gets the mean or the max of the
   track's scores ('none' keeps them).

The first Viterbi pass is vectorised per frame; after each chosen path only the boxes whose
best path ran through a removed box are recomputed (frame order, each from its links), which
gives exactly what a full recomputation would (best paths elsewhere cannot improve when boxes
leave). `benchmarks/linking.py` times a 1000-frame video with 100 detections per frame.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from ssvd_jax.evaluation import seq_nms as seq_nms_lib
from ssvd_jax.evaluation import tracks as tracks_lib
from ssvd_jax.evaluation import vid_ap

METHODS = ("viterbi", "seq_nms")
RESCORE = ("none", "mean", "max")
_PAIRS_PER_CHUNK = 1 << 18  # box pairs whose IoU is computed at once (bounds memory)


def check_settings(
    *, method: str, iou_weight: float, min_iou: float, max_gap: int, rescore: str
) -> None:
    """Raise ValueError for settings outside their ranges (each named)."""
    if method not in METHODS:
        raise ValueError(f"link method {method!r} is not one of {METHODS}")
    if rescore not in RESCORE:
        raise ValueError(f"link rescore {rescore!r} is not one of {RESCORE}")
    if not 0.0 < min_iou <= 1.0:
        raise ValueError(f"link min_iou {min_iou} must be in (0, 1]: boxes that do not overlap "
                         "never link")  # fmt: skip
    if int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"link max_gap {max_gap} must be an integer >= 0")
    if not iou_weight >= 0.0:
        raise ValueError(f"link iou_weight {iou_weight} must be >= 0")


def _iou_grid(a_CxNx4: np.ndarray, b_CxMx4: np.ndarray) -> np.ndarray:
    """[C, N, M] IoU (+1 convention, 0 where the boxes do not overlap) of each frame pair."""
    a, b = a_CxNx4[:, :, None, :], b_CxMx4[:, None, :, :]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    union = area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def _links(
    flat: np.ndarray, off: np.ndarray, *, min_iou: float, max_gap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All links (src [E], dst [E], IoU [E]) between boxes up to max_gap + 1 frames apart.

    Frames are padded to the largest box count and compared in blocks of frame pairs, one
    broadcast IoU per block (cheaper than gathering every pair)."""
    n = np.diff(off)
    num_frames, width = len(n), int(n.max())
    padded = np.zeros((num_frames, width, 4))
    valid = np.arange(width)[None, :] < n[:, None]
    padded[valid] = flat
    block = max(1, _PAIRS_PER_CHUNK // (width * width))
    srcs, dsts, ious = [], [], []
    for g in range(1, max_gap + 2):
        for t0 in range(0, num_frames - g, block):
            t1 = min(t0 + block, num_frames - g)
            iou = _iou_grid(padded[t0:t1], padded[t0 + g : t1 + g])
            ok = (iou >= min_iou) & valid[t0:t1, :, None] & valid[t0 + g : t1 + g, None, :]
            t, i, k = np.nonzero(ok)
            srcs.append(off[t0 + t] + i)
            dsts.append(off[t0 + g + t] + k)
            ious.append(iou[t, i, k])
    empty = [np.zeros(0, np.int64)]
    return (np.concatenate(srcs + empty), np.concatenate(dsts + empty),
            np.concatenate(ious + [np.zeros(0)]))  # fmt: skip


def link_video(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    iou_weight: float,
    min_iou: float,
    max_gap: int,
) -> list[np.ndarray]:
    """Viterbi linking of one class in one video (module docstring).

    boxes[t]: [n_t, 4] and scores[t]: [n_t] of frame t (frames in order, n_t may be 0).
    Returns track[t] [n_t]: the track of each box, 0, 1, ... in the order the paths were chosen.
    """
    n = np.array([len(np.asarray(s).reshape(-1)) for s in scores], np.int64)
    off = np.r_[0, np.cumsum(n)]
    num = int(off[-1])
    if num == 0:
        return [np.zeros(0, np.int64) for _ in n]
    flat = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes])
    score = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in scores])
    frame_of = np.repeat(np.arange(len(n)), n)
    src, dst, iou = _links(flat, off, min_iou=min_iou, max_gap=max_gap)
    weight = iou_weight * iou
    # Incoming links of each box, in the order ties are broken: latest source frame first,
    # then lowest source index.
    order = np.lexsort((src, -frame_of[src], dst))
    in_src, in_w, in_dst = src[order], weight[order], dst[order]
    in_ptr = np.searchsorted(in_dst, np.arange(num + 1))
    out_order = np.lexsort((dst, src))
    out_dst = dst[out_order]
    out_ptr = np.searchsorted(src[out_order], np.arange(num + 1))

    # First pass, vectorised per frame.
    acc = score.copy()
    back = np.full(num, -1, np.int64)
    for f in range(len(n)):
        a, b = int(off[f]), int(off[f + 1])
        e0, e1 = int(in_ptr[a]), int(in_ptr[b])
        if e0 == e1:
            continue
        cand = acc[in_src[e0:e1]] + in_w[e0:e1]
        degree = np.diff(in_ptr[a : b + 1])
        has = degree > 0
        starts = in_ptr[a:b][has] - e0
        best = np.maximum.reduceat(cand, starts)
        pos = np.where(cand == np.repeat(best, degree[has]), np.arange(e1 - e0), e1 - e0)
        first = np.minimum.reduceat(pos, starts)
        extend = best > 0.0
        nodes = (a + np.flatnonzero(has))[extend]
        acc[nodes] = score[nodes] + best[extend]
        back[nodes] = in_src[e0 + first[extend]]

    # Greedy paths, best first, in plain Python: few boxes change after each path. The heap
    # holds upper bounds (values only ever decrease): a popped entry above its box's current
    # value goes back in with that value.
    acc_l, back_l, score_l = acc.tolist(), back.tolist(), score.tolist()
    in_ptr_l, in_src_l, in_w_l = in_ptr.tolist(), in_src.tolist(), in_w.tolist()
    out_ptr_l, out_dst_l = out_ptr.tolist(), out_dst.tolist()
    alive = [True] * num
    track = [-1] * num
    heap = [(-v, j) for j, v in enumerate(acc_l)]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    num_tracks = 0
    while heap:
        neg, j = pop(heap)
        if not alive[j]:
            continue
        if -neg != acc_l[j]:
            push(heap, (-acc_l[j], j))
            continue
        path = []
        while j != -1:
            path.append(j)
            j = back_l[j]
        for k in path:
            alive[k] = False
            track[k] = num_tracks
        num_tracks += 1
        pending: list[int] = []
        for v in path:
            for e in range(out_ptr_l[v], out_ptr_l[v + 1]):
                k = out_dst_l[e]
                if alive[k] and back_l[k] == v:
                    push(pending, k)
        last = -1
        while pending:  # box indices grow with the frame: this is frame order
            k = pop(pending)
            if k == last:
                continue
            last = k
            best, best_src = 0.0, -1
            for e in range(in_ptr_l[k], in_ptr_l[k + 1]):
                i = in_src_l[e]
                if alive[i]:
                    c = acc_l[i] + in_w_l[e]
                    if c > best:
                        best, best_src = c, i
            back_l[k] = best_src
            new = score_l[k] + best if best_src >= 0 else score_l[k]
            if new != acc_l[k]:
                acc_l[k] = new
                for e in range(out_ptr_l[k], out_ptr_l[k + 1]):
                    d = out_dst_l[e]
                    if back_l[d] == k and alive[d]:
                        push(pending, d)
    track_arr = np.asarray(track, np.int64)
    return [track_arr[off[t] : off[t + 1]] for t in range(len(n))]


def rescore_tracks(tracks: tracks_lib.Tracks, mode: str) -> tracks_lib.Tracks:
    """Every detection of a track (one track id) gets the mean ('mean') or the max ('max') of
    the track's scores; 'none' returns `tracks` unchanged."""
    if mode == "none" or not len(tracks):
        if mode not in RESCORE:
            raise ValueError(f"rescore {mode!r} is not one of {RESCORE}")
        return tracks
    ids, inverse = np.unique(tracks.track_id, return_inverse=True)
    score = tracks.dets.score
    if mode == "mean":
        per_track = np.bincount(inverse, weights=score) / np.bincount(inverse)
    elif mode == "max":
        per_track = np.full(len(ids), -np.inf)
        np.maximum.at(per_track, inverse, score)
    else:
        raise ValueError(f"rescore {mode!r} is not one of {RESCORE}")
    d = tracks.dets
    return tracks_lib.Tracks(
        vid_ap.Detections(d.frame_id, d.label, per_track[inverse], d.boxes), tracks.track_id
    )


def link_detections(
    dets: vid_ap.Detections,
    video_frame_ids: Sequence[np.ndarray],
    *,
    iou_weight: float,
    min_iou: float,
    max_gap: int,
) -> tracks_lib.Tracks:
    """Viterbi linking per video and class over a whole detection set: the same detections, in
    the same order, each with a track id unique over the result (a detection on a frame of no
    listed video is a track of its own). video_frame_ids: each video's global frame ids in
    frame order (`GroundTruth.video_frame_ids()`, or `[np.arange(1, T + 1)]` for one video)."""
    outside, groups = tracks_lib.video_class_groups(dets, video_frame_ids)
    track_id = np.full(len(dets), -1, np.int64)
    track_id[outside] = np.arange(len(outside))
    next_id = len(outside)
    for frame_idx in groups:
        per_frame = link_video(
            [dets.boxes[i] for i in frame_idx], [dets.score[i] for i in frame_idx],
            iou_weight=iou_weight, min_iou=min_iou, max_gap=max_gap,
        )  # fmt: skip
        for i, t in zip(frame_idx, per_frame, strict=True):
            track_id[i] = next_id + t
        next_id += 1 + max((int(t.max()) for t in per_frame if len(t)), default=-1)
    return tracks_lib.Tracks(dets, track_id)


def link(
    dets: vid_ap.Detections,
    video_frame_ids: Sequence[np.ndarray],
    *,
    method: str,
    iou_weight: float,
    min_iou: float,
    max_gap: int,
    rescore: str,
) -> tracks_lib.Tracks:
    """Tracks of a detection set by `method`: 'viterbi' (`link_detections`, every detection
    kept) or 'seq_nms' (the Seq-NMS paths as tracks, `seq_nms.seq_nms_tracks`: FGFA's Seq-NMS
    and per-frame NMS, so suppressed detections are gone; the link settings other than
    `rescore` do not apply); then `rescore_tracks(rescore)`."""
    check_settings(method=method, iou_weight=iou_weight, min_iou=min_iou, max_gap=max_gap,
                   rescore=rescore)  # fmt: skip
    if method == "viterbi":
        out = link_detections(
            dets, video_frame_ids, iou_weight=iou_weight, min_iou=min_iou, max_gap=max_gap
        )
    else:
        out = seq_nms_lib.seq_nms_tracks(dets, video_frame_ids)
    return rescore_tracks(out, rescore)
