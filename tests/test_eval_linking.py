"""Linking detections into tracks (docs/TRACK_PROTOCOL.md §3): planted tracks are recovered with
consistent ids, through a 2-frame gap when max_gap allows it; hand-worked path choices; the
incremental Viterbi equals a naive full recomputation after every path on seeded random videos;
per video and class; rescoring; Seq-NMS paths as tracks."""

from __future__ import annotations

import numpy as np
import pytest

from ssvd_jax.evaluation import linking, seq_nms, tracks, vid_ap

SETTINGS = dict(iou_weight=1.0, min_iou=0.3, max_gap=0)


def moving_box(x0: float, y0: float, t: int, dx: float = 3.0, size: float = 60.0):
    return (x0 + dx * t, y0, x0 + dx * t + size - 1, y0 + size - 1)


def as_arrays(frames):
    """frames[t] = [(box, score), ...] -> (boxes[t] [n_t, 4], scores[t] [n_t])."""
    boxes = [np.array([b for b, _ in f], np.float64).reshape(-1, 4) for f in frames]
    scores = [np.array([s for _, s in f], np.float64) for f in frames]
    return boxes, scores


def planted(num_frames=10, gap=(), order_seed=0):
    """Three objects A, B, C (far apart) over `num_frames` frames plus one clutter box per frame
    that overlaps nothing; A's detections are missing on the frames in `gap`. The boxes of a
    frame are shuffled. Returns (boxes, scores, truth) with truth[t][i] the object of box i
    ('A', 'B', 'C' or 'clutter')."""
    rng = np.random.default_rng(order_seed)
    frames, truth = [], []
    for t in range(num_frames):
        jump = 150 * (t % 2)
        items = [
            (moving_box(0, 0, t), 0.9, "A"),
            (moving_box(0, 300, t, dx=-2), 0.6, "B"),
            (moving_box(400, 100, t, dx=5), 0.3, "C"),
            ((900 + jump, 600, 940 + jump, 640), 0.2, "clutter"),
        ]
        items = [it for it in items if not (it[2] == "A" and t in gap)]
        items = [items[i] for i in rng.permutation(len(items))]
        frames.append([(b, s) for b, s, _ in items])
        truth.append([name for _, _, name in items])
    boxes, scores = as_arrays(frames)
    return boxes, scores, truth


def tracks_of(track, truth):
    """{object: sorted set of track ids it got}."""
    out: dict[str, set[int]] = {}
    for t_ids, t_names in zip(track, truth, strict=True):
        for tid, name in zip(t_ids.tolist(), t_names, strict=True):
            out.setdefault(name, set()).add(tid)
    return out


def test_planted_tracks_are_recovered_with_consistent_ids():
    boxes, scores, truth = planted()
    track = linking.link_video(boxes, scores, **SETTINGS)
    got = tracks_of(track, truth)
    # One id per object over all 10 frames, and the best (A: 10 x 0.9 + 9 x IoU) first.
    assert got["A"] == {0} and got["B"] == {1} and got["C"] == {2}
    # The clutter box jumps by 150 px every frame: never linked, ten tracks of one box.
    assert len(got["clutter"]) == 10 and not got["clutter"] & {0, 1, 2}


@pytest.mark.parametrize("max_gap, pieces", [(0, 2), (1, 2), (2, 1), (3, 1)])
def test_two_frame_gap_is_bridged_when_max_gap_allows(max_gap, pieces):
    # A is missing on frames 4 and 5: frames 3 and 6 are 3 apart, a link skipping 2 frames.
    # A moves 3 px a frame: IoU(box_3, box_6) = 51 * 60 / (2 * 3600 - 51 * 60) = 0.74 >= 0.3.
    boxes, scores, truth = planted(gap=(4, 5))
    track = linking.link_video(boxes, scores, **dict(SETTINGS, max_gap=max_gap))
    got = tracks_of(track, truth)
    assert len(got["A"]) == pieces
    assert len(got["B"]) == 1 and len(got["C"]) == 1  # untouched by the gap setting
    if pieces == 2:  # the halves: frames 0-3 and 6-9, each with one id
        first = {int(track[t][truth[t].index("A")]) for t in range(4)}
        second = {int(track[t][truth[t].index("A")]) for t in range(6, 10)}
        assert len(first) == len(second) == 1 and first != second


def test_ids_do_not_depend_on_the_order_of_boxes_in_a_frame():
    # With A's two missing frames, B (10 x 0.6 + 9 x 58/62) outscores A (8 x 0.9 + 6 x 57/63
    # + 51/69): B is found first.
    for seed in range(3):
        boxes, scores, truth = planted(gap=(4, 5), order_seed=seed)
        got = tracks_of(linking.link_video(boxes, scores, **dict(SETTINGS, max_gap=2)), truth)
        assert got["B"] == {0} and got["A"] == {1} and got["C"] == {2}


P, Q = (0, 0, 99, 99), (0, 10, 99, 109)  # IoU(P, Q) = 90 * 100 / (2 * 10000 - 9000) = 9 / 11


def test_path_score_is_box_scores_plus_lambda_times_link_ious():
    # Frame 0: P (0.5); frame 1: P (0.5) and Q (0.6). Paths ending in frame 1:
    #   P-P: 0.5 + 0.5 + lambda * 1      P-Q: 0.5 + 0.6 + lambda * 9/11
    # lambda = 1: 2.0 > 1.918 -> P-P first, Q alone.  lambda = 0.1: 1.1 < 1.182 -> P-Q first.
    boxes, scores = as_arrays([[(P, 0.5)], [(P, 0.5), (Q, 0.6)]])
    track = linking.link_video(boxes, scores, iou_weight=1.0, min_iou=0.3, max_gap=0)
    assert [t.tolist() for t in track] == [[0], [0, 1]]
    track = linking.link_video(boxes, scores, iou_weight=0.1, min_iou=0.3, max_gap=0)
    assert [t.tolist() for t in track] == [[0], [1, 0]]
    # Below min_iou nothing links: three tracks, the best box (0.6) first, then the earliest
    # frame on the 0.5 tie.
    boxes, scores = as_arrays([[(P, 0.5)], [(Q, 0.5), (Q, 0.6)]])
    track = linking.link_video(boxes, scores, iou_weight=1.0, min_iou=0.9, max_gap=0)
    assert [t.tolist() for t in track] == [[1], [2, 0]]


def test_after_a_path_the_rest_is_relinked():
    # T = (0, 20, 99, 119): IoU(P, T) = 8000 / 12000 = 2/3, IoU(Q, T) = 9000 / 11000 = 9/11.
    # frame 0: P .9 | frame 1: P .5 | frame 2: P .9, Q .7 | frame 3: Q .6, T .5
    # Best paths: P1 = .5 + .9 + 1 = 2.4; P2 = .9 + 2.4 + 1 = 4.3; Q2 = .7 + 2.4 + 9/11;
    # Q3 = .6 + max(P2 + 9/11, Q2 + 1) = 5.72 via P2; T3 = .5 + max(P2 + 2/3, Q2 + 9/11) = 5.47
    # via P2. First track: P0-P1-P2-Q3. Q2 loses P1 (now .7 alone) and T3 loses P2: relinked
    # to Q2, .5 + .7 + 9/11 = 2.02 > .7, so the second track is Q2-T3.
    T = (0, 20, 99, 119)
    boxes, scores = as_arrays([[(P, 0.9)], [(P, 0.5)], [(P, 0.9), (Q, 0.7)], [(Q, 0.6), (T, 0.5)]])
    track = linking.link_video(boxes, scores, **SETTINGS)
    assert [t.tolist() for t in track] == [[0], [0], [0, 1], [0, 1]]


def reference_link(boxes, scores, *, iou_weight, min_iou, max_gap):
    """Naive Viterbi: the whole DP recomputed from scratch after every path, pure Python."""
    nodes = [(t, i) for t, s in enumerate(scores) for i in range(len(s))]
    index = {node: k for k, node in enumerate(nodes)}
    score = [float(scores[t][i]) for t, i in nodes]
    incoming: list[list[tuple[int, float]]] = [[] for _ in nodes]
    for k, (t, i) in enumerate(nodes):
        for g in range(1, max_gap + 2):  # latest earlier frame first, then lowest index
            if t - g < 0:
                continue
            for i2 in range(len(scores[t - g])):
                a = np.asarray(boxes[t - g][i2], np.float64)[None]
                b = np.asarray(boxes[t][i], np.float64)[None]
                iou = float(vid_ap.pair_iou(a, b)[0][0])
                if iou >= min_iou:
                    incoming[k].append((index[(t - g, i2)], iou_weight * iou))
    alive = [True] * len(nodes)
    track = [-1] * len(nodes)
    num = 0
    while any(alive):
        acc, back = [0.0] * len(nodes), [-1] * len(nodes)
        for k in range(len(nodes)):
            if not alive[k]:
                continue
            best, src = 0.0, -1
            for i, w in incoming[k]:
                if alive[i] and acc[i] + w > best:
                    best, src = acc[i] + w, i
            acc[k] = score[k] + best if src >= 0 else score[k]
            back[k] = src
        j = max((k for k in range(len(nodes)) if alive[k]), key=lambda k: (acc[k], -k))
        while j != -1:
            alive[j], track[j] = False, num
            j = back[j]
        num += 1
    out, k = [], 0
    for s in scores:
        out.append(np.asarray(track[k : k + len(s)], np.int64))
        k += len(s)
    return out


@pytest.mark.parametrize("max_gap", [0, 1, 2])
def test_equals_naive_recomputation_on_random_videos(max_gap, rng):
    for _ in range(6):
        num_frames = int(rng.integers(1, 12))
        boxes, scores = [], []
        for _ in range(num_frames):
            n = int(rng.integers(0, 7))
            xy = rng.uniform(0, 60, (n, 2)).round()
            wh = rng.uniform(10, 50, (n, 2)).round()
            boxes.append(np.c_[xy, xy + wh])
            # Rounded scores: ties in path scores happen and must be broken the same way.
            scores.append(rng.uniform(0.05, 1.0, n).round(1))
        settings = dict(iou_weight=float(rng.choice([0.0, 0.5, 1.0])), min_iou=0.2,
                        max_gap=max_gap)  # fmt: skip
        got = linking.link_video(boxes, scores, **settings)
        want = reference_link(boxes, scores, **settings)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_link_detections_per_video_and_class_keeps_rows_in_order():
    # Videos: frames 1-3 and 4-6. The same box in every frame, class 0, plus class 1 in frames
    # 2-3, plus one detection on frame 9 (in no video).
    frame = np.array([1, 2, 3, 4, 5, 6, 2, 3, 9])
    label = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0])
    dets = vid_ap.Detections(frame, label, np.full(9, 0.5), np.tile(P, (9, 1)))
    out = linking.link_detections(dets, [np.array([1, 2, 3]), np.array([4, 5, 6])], **SETTINGS)
    assert out.dets is dets  # same rows, same order
    ids = out.track_id.tolist()
    assert ids[0] == ids[1] == ids[2]  # video 1, class 0
    assert ids[3] == ids[4] == ids[5] != ids[0]  # video 2 is another track
    assert ids[6] == ids[7] not in (ids[0], ids[3])  # class 1 is another track
    assert len(set(ids)) == 4  # the detection on frame 9 is a track of its own


def test_rescore_mean_and_max():
    dets = vid_ap.Detections([1, 2, 3, 1], [0, 0, 0, 0], [0.2, 0.4, 0.9, 0.5], np.tile(P, (4, 1)))
    t = tracks.Tracks(dets, [7, 7, 7, 3])
    np.testing.assert_allclose(linking.rescore_tracks(t, "mean").dets.score, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(linking.rescore_tracks(t, "max").dets.score, [0.9, 0.9, 0.9, 0.5])
    assert linking.rescore_tracks(t, "none") is t


def test_seq_nms_paths_are_tracks():
    # The hand-worked video of test_eval_seq_nms: path A0-A1-A2 (rescored to 0.6), D1 deleted,
    # the lone Z2 keeps 0.4 and a track of its own.
    A0, A1, A2 = (0, 0, 99, 99), (2, 0, 101, 99), (4, 0, 103, 99)
    D1, Z2 = (10, 0, 109, 99), (300, 300, 349, 349)
    dets = vid_ap.Detections(
        [1, 2, 2, 3, 3], [4] * 5, [0.9, 0.1, 0.05, 0.8, 0.4], [A0, A1, D1, A2, Z2]
    )
    out = seq_nms.seq_nms_tracks(dets, [np.array([1, 2, 3])])
    np.testing.assert_array_equal(out.dets.boxes, [A0, A1, A2, Z2])
    np.testing.assert_allclose(out.dets.score, [0.6, 0.6, 0.6, 0.4])
    ids = out.track_id.tolist()
    assert ids[0] == ids[1] == ids[2] != ids[3]
    # `seq_nms` is the same detections without the ids.
    plain = seq_nms.seq_nms(dets, [np.array([1, 2, 3])])
    np.testing.assert_array_equal(plain.boxes, out.dets.boxes)
    np.testing.assert_array_equal(plain.score, out.dets.score)
    via_link = linking.link(dets, [np.array([1, 2, 3])], method="seq_nms", rescore="none",
                            **SETTINGS)  # fmt: skip
    np.testing.assert_array_equal(via_link.track_id, out.track_id)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(method="hungarian"), "method"),
        (dict(rescore="median"), "rescore"),
        (dict(min_iou=0.0), "min_iou"),
        (dict(max_gap=-1), "max_gap"),
        (dict(max_gap=1.5), "max_gap"),
        (dict(iou_weight=-1.0), "iou_weight"),
    ],
)
def test_bad_settings_are_named(change, message):
    dets = vid_ap.Detections([1], [0], [0.5], [P])
    settings = dict(method="viterbi", rescore="none", **SETTINGS) | change
    with pytest.raises(ValueError, match=message):
        linking.link(dets, [np.array([1])], **settings)


def test_empty_inputs():
    assert linking.link_video([], [], **SETTINGS) == []
    empty = [np.zeros((0, 4))] * 3
    assert [len(t) for t in linking.link_video(empty, [np.zeros(0)] * 3, **SETTINGS)] == [0] * 3
    none = vid_ap.Detections.concatenate([])
    assert len(linking.link_detections(none, [np.array([1, 2])], **SETTINGS)) == 0
