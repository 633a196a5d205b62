"""Seq-NMS as FGFA uses it (VID_PROTOCOL §3): hand-worked videos and a port of FGFA's seq_nms."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ssvd_jax.evaluation import seq_nms, vid_ap


def run(frames):
    """frames[t] = [(box, score), ...] -> per frame [(box, new score)] of the kept boxes."""
    boxes = [np.array([b for b, _ in f], np.float64).reshape(-1, 4) for f in frames]
    scores = [np.array([s for _, s in f], np.float64) for f in frames]
    keep, new = seq_nms.seq_nms_video(boxes, scores)
    return [
        [(tuple(b), float(s)) for b, s, k in zip(bb, ss, kk, strict=True) if k]
        for bb, ss, kk in zip(boxes, new, keep, strict=True)
    ]


A0, A1, A2 = (0, 0, 99, 99), (2, 0, 101, 99), (4, 0, 103, 99)
D1 = (10, 0, 109, 99)
Z2 = (300, 300, 349, 349)


def test_best_path_is_rescored_to_its_average_and_neighbours_deleted():
    # Links (IoU >= 0.5): A0-A1, A0-D1, A1-A2, D1-A2. Best path A0-A1-A2: 0.9 + 0.1 + 0.8 = 1.8
    # (via D1: 1.75), rescored to 0.6. D1 overlaps A1 by 92/108 >= 0.3: deleted. Then no link
    # remains, so the lone Z2 keeps its 0.4.
    out = run([[(A0, 0.9)], [(A1, 0.1), (D1, 0.05)], [(A2, 0.8), (Z2, 0.4)]])
    assert out[0] == [(A0, pytest.approx(0.6))]
    assert out[1] == [(A1, pytest.approx(0.6))]
    assert out[2] == [(A2, pytest.approx(0.6)), (Z2, 0.4)]


def test_lone_box_is_a_path_while_links_remain():
    # P (0.9) has no link but is the best "path" while R-R' links exist: it keeps 0.9 and
    # deletes Q (IoU 9025/10975 = 0.82 with P). Then R-R' (0.2 + 0.2, average 0.2).
    P, Q, R = (0, 0, 99, 99), (5, 5, 104, 104), (300, 0, 399, 99)
    out = run([[(P, 0.9), (Q, 0.3)], [(R, 0.2)], [(R, 0.2)]])
    assert out == [[(P, 0.9)], [(R, 0.2)], [(R, 0.2)]]
    # Without any link nothing happens at all: Q survives (the per-frame NMS is separate).
    out = run([[(P, 0.9), (Q, 0.3)], [(R, 0.2)], []])
    assert out == [[(P, 0.9), (Q, 0.3)], [(R, 0.2)], []]


def test_stops_below_min_path_score():
    # Path sum 0.004 + 0.004 < 0.01: scores untouched.
    out = run([[(A0, 0.004)], [(A1, 0.004)]])
    assert out == [[(A0, 0.004)], [(A1, 0.004)]]


def test_per_video_and_class_then_frame_nms():
    # Video 1 = frames 1, 2; video 2 = frames 3, 4. Box X of class 0 in frames 2 and 3 must not
    # link across the video boundary; class 1 in frame 2 must not link with class 0.
    X = (0, 0, 99, 99)
    dets = vid_ap.Detections(
        frame_id=[1, 1, 2, 2, 3, 4, 4],
        label=[0, 0, 0, 1, 0, 0, 0],
        score=[0.9, 0.5, 0.2, 0.7, 0.8, 0.6, 0.65],
        boxes=[X, (3, 3, 102, 102), X, X, X, X, (500, 0, 599, 99)],
    )
    out = seq_nms.seq_nms(dets, [np.array([1, 2]), np.array([3, 4])])
    got = sorted(
        zip(out.frame_id.tolist(), out.label.tolist(), np.round(out.score, 6).tolist(), strict=True)
    )
    # Video 1, class 0: path X(0.9)-X(0.2) -> 0.55; the 0.5 box overlaps X by 0.89 -> deleted.
    # Video 1, class 1: one box, no link -> 0.7. Video 2, class 0: X(0.8)-X(0.6) -> 0.7; the far
    # box (0.65) in frame 4 keeps its score.
    assert got == [(1, 0, 0.55), (2, 0, 0.55), (2, 1, 0.7), (3, 0, 0.7), (4, 0, 0.65), (4, 0, 0.7)]


def test_frame_nms_after_seq_nms():
    # No links anywhere (one frame), so Seq-NMS changes nothing; the per-frame NMS at 0.3 then
    # drops the 0.5 box (IoU 0.89 > 0.3) unless disabled.
    dets = vid_ap.Detections([1, 1], [0, 0], [0.9, 0.5], [(0, 0, 99, 99), (3, 3, 102, 102)])
    assert seq_nms.seq_nms(dets, [np.array([1])]).score.tolist() == [0.9]
    assert len(seq_nms.seq_nms(dets, [np.array([1])], frame_nms_iou=None)) == 2


# ----------------------------------------------------------------------------------------------
# FGFA's lib/nms/seq_nms.py for one class, ported to Python 3 with its logic unchanged.


def fgfa_seq_nms(dets_cls):
    dets_cls = [d.copy() for d in dets_cls]
    links_cls = []
    for f in range(len(dets_cls) - 1):
        d1, d2 = dets_cls[f], dets_cls[f + 1]
        areas2 = (d2[:, 2] - d2[:, 0] + 1) * (d2[:, 3] - d2[:, 1] + 1)
        frame_links = []
        for box1 in d1:
            area1 = (box1[2] - box1[0] + 1) * (box1[3] - box1[1] + 1)
            w = np.maximum(0.0, np.minimum(box1[2], d2[:, 2]) - np.maximum(box1[0], d2[:, 0]) + 1)
            h = np.maximum(0.0, np.minimum(box1[3], d2[:, 3]) - np.maximum(box1[1], d2[:, 1]) + 1)
            inter = w * h
            ovrs = inter / (area1 + areas2 - inter)
            frame_links.append([i for i, o in enumerate(ovrs) if o >= 0.5])
        links_cls.append(frame_links)
    delete_sets = [[] for _ in dets_cls]
    delete_single_box = []
    sum_links = sum(len(b) for fr in links_cls for b in fr)
    while True:
        root, maxpath, maxsum = _find_max_path(links_cls, dets_cls, delete_single_box)
        if maxsum < 1e-2 or sum_links == 0 or len(maxpath) < 1:
            break
        if len(maxpath) == 1:
            delete_single_box.append([root, maxpath[0]])
        for i, b in enumerate(maxpath):
            dets_cls[root + i][b][4] = maxsum / len(maxpath)
        delete_set, num_delete = _delete_link(dets_cls, links_cls, root, maxpath)
        sum_links -= num_delete
        for i, b in enumerate(maxpath):
            delete_set[i].remove(b)
            delete_single_box.append([[root + i], b])
            for j in delete_set[i]:
                dets_cls[i + root][j] = np.zeros(5)
            delete_sets[i + root] = delete_sets[i + root] + delete_set[i]
    return [
        (sorted(set(range(len(fr))) - set(delete_sets[f])), fr) for f, fr in enumerate(dets_cls)
    ]


def _find_max_path(links, dets, delete_single_box):
    max_boxes = max(len(d) for d in dets)
    num_frame = len(links) + 1
    if max_boxes == 0:
        return 0, [], 0
    a = np.zeros([num_frame, max_boxes])
    new_dets = np.zeros([num_frame, max_boxes])
    for d in delete_single_box:
        new_dets[d[0], d[1]] = 1
    b = np.full((num_frame, max_boxes), -1)
    for f in range(len(dets)):
        for j in range(len(dets[f])):
            if new_dets[f, j] == 0:
                a[f, j] = dets[f][j][-1]
    for i in range(1, num_frame):
        for box_id, box in enumerate(links[i - 1]):
            for nxt in box:
                w = a[i - 1, box_id] + dets[i][nxt][-1]
                if w > a[i, nxt]:
                    a[i, nxt] = w
                    b[i, nxt] = box_id
    i, j = np.unravel_index(a.argmax(), a.shape)
    maxpath, maxscore = [j], a[i, j]
    while b[i, j] != -1:
        maxpath.append(b[i, j])
        j = b[i, j]
        i = i - 1
    maxpath.reverse()
    return i, maxpath, maxscore


def _delete_link(dets, links, root, maxpath):
    delete_set, num = [], 0
    for i, box_ind in enumerate(maxpath):
        fr = dets[root + i]
        areas = (fr[:, 2] - fr[:, 0] + 1) * (fr[:, 3] - fr[:, 1] + 1)
        box1 = fr[box_ind]
        w = np.maximum(0.0, np.minimum(box1[2], fr[:, 2]) - np.maximum(box1[0], fr[:, 0]) + 1)
        h = np.maximum(0.0, np.minimum(box1[3], fr[:, 3]) - np.maximum(box1[1], fr[:, 1]) + 1)
        inter = w * h
        ovrs = inter / (areas[box_ind] + areas - inter)
        deletes = [k for k, o in enumerate(ovrs) if o >= 0.3]
        delete_set.append(deletes)
        if root + i < len(links):
            for k in deletes:
                num += len(links[root + i][k])
                links[root + i][k] = []
        if i > 0 or root > 0:
            for prior in links[root + i - 1]:
                for k in deletes:
                    if k in prior:
                        prior.remove(k)
                        num += 1
    return delete_set, num


def random_video(rng, num_frames=20):
    """A few drifting tracks with jittered boxes plus clutter; distinct scores."""
    tracks = [
        (rng.uniform(0, 300, 2), rng.uniform(30, 120, 2), rng.normal(0, 4, 2)) for _ in range(4)
    ]
    frames = []
    for t in range(num_frames):
        boxes = []
        for pos, size, vel in tracks:
            for _ in range(rng.integers(0, 3)):
                xy = pos + vel * t + rng.normal(0, 0.1 * size, 2)
                boxes.append([*xy, *(xy + size * rng.uniform(0.8, 1.2, 2))])
        for _ in range(rng.integers(0, 3)):
            xy = rng.uniform(0, 400, 2)
            boxes.append([*xy, *(xy + rng.uniform(10, 80, 2))])
        frames.append(np.round(np.asarray(boxes, np.float64).reshape(-1, 4), 2))
    total = sum(len(b) for b in frames)
    scores = np.split(
        rng.permutation(total) / total * 0.9 + 0.005, np.cumsum([len(b) for b in frames])[:-1]
    )
    return frames, scores


def _assert_matches_fgfa(boxes, scores) -> tuple[int, int]:
    """Our Seq-NMS equals the FGFA port on one video; returns (boxes rescored, boxes deleted)."""
    expected = fgfa_seq_nms([np.c_[b, s] for b, s in zip(boxes, scores, strict=True)])
    keep, new = seq_nms.seq_nms_video(copy.deepcopy(boxes), copy.deepcopy(scores))
    rescored = 0
    for (exp_keep, exp_dets), k, s, s0 in zip(expected, keep, new, scores, strict=True):
        assert np.flatnonzero(k).tolist() == exp_keep
        np.testing.assert_allclose(s[k], exp_dets[exp_keep, 4], rtol=0, atol=1e-12)
        rescored += int(np.sum(s[k] != s0[k]))
    deleted = sum(len(b) for b in boxes) - sum(len(e[0]) for e in expected)
    return rescored, deleted


@pytest.mark.parametrize("draw", range(5))
def test_matches_fgfa_seq_nms_on_random_videos(draw, rng):
    rescored, deleted = _assert_matches_fgfa(*random_video(rng))
    # Paths were found and rescored, and boxes deleted (in each of 1,000 draws).
    assert rescored > 10 and deleted > 0


def test_long_crowded_video_matches_fgfa(rng):
    # A full-length VID snippet: 300 frames, ~15 boxes per frame (three shifted copies of each
    # box, so paths compete and the deletion sets overlap); one class.
    boxes, scores = random_video(rng, num_frames=300)
    boxes = [np.concatenate([b + 5 * k for k in range(3)]) for b in boxes]
    scores = [np.concatenate([s * (0.9 + 0.03 * k) for k in range(3)]) for s in scores]
    rescored, deleted = _assert_matches_fgfa(boxes, scores)
    # Many long paths (20 draws: 644..707 boxes rescored, 2,898..3,161 of ~4,500 deleted).
    assert rescored > 500 and deleted > 2000
