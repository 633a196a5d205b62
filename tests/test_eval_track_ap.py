"""Tracklet AP (docs/TRACK_PROTOCOL.md §2) on hand-worked cases: ground-truth tracks score 1 at
every tau, a track cut in two halves and a track that switches objects score what the devkit's
rules give by hand, the overlap counts the union of frames (not spans) and the per-object
threshold, and tracks are per video and class."""

from __future__ import annotations

import numpy as np
import pytest

from ssvd_jax.evaluation import track_ap, tracks, vid_ap

LEFT, RIGHT = (0, 0, 99, 99), (300, 0, 399, 99)


def ground_truth(objects, num_frames, video_starts=(0,)):
    """objects: [(frame row, label, track id, box)] in frame order; frames 1..num_frames."""
    frame = [o[0] for o in objects]
    order = np.argsort(frame, kind="stable")
    objects = [objects[i] for i in order]
    return vid_ap.GroundTruth(
        frame_ids=np.arange(1, num_frames + 1),
        frame=[o[0] for o in objects],
        label=[o[1] for o in objects],
        boxes=np.array([o[3] for o in objects], np.float64).reshape(-1, 4),
        video_starts=np.asarray(video_starts),
        track_id=[o[2] for o in objects],
    )


def predictions(rows):
    """rows: [(frame id, label, track id, score, box)]."""
    return tracks.Tracks(
        vid_ap.Detections(
            [r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows],
            np.array([r[4] for r in rows], np.float64).reshape(-1, 4),
        ),
        [r[2] for r in rows],
    )  # fmt: skip


def test_ground_truth_tracks_as_predictions_score_one(rng):
    # Three videos of 12 frames, several classes; objects enter late, leave early and some come
    # back after a gap (the same <trackid>): every ground-truth track given as a prediction.
    objects = []
    for v in range(3):
        for tid in range(int(rng.integers(1, 5))):
            label = int(rng.integers(0, 4))
            x = float(rng.uniform(0, 500))
            frames = np.flatnonzero(rng.random(12) < 0.7)
            for f in frames:
                box = (x + 2 * f, 10.0 * tid, x + 2 * f + rng.uniform(5, 80), 10 * tid + 50.0)
                objects.append((12 * v + int(f), label, tid, box))
    gt = ground_truth(objects, 36, video_starts=(0, 12, 24))
    # One distinct score per track (the same id in two videos is two tracks).
    key = tracks.video_of_frames(gt)[gt.frame] * 100 + gt.track_id
    unique, inverse = np.unique(key, return_inverse=True)
    score = (rng.permutation(len(unique)) + 1.0)[inverse] / 100
    preds = tracks.Tracks(
        vid_ap.Detections(gt.frame_ids[gt.frame], gt.label, score, gt.boxes), gt.track_id
    )
    result = track_ap.evaluate_tracks(gt, preds)
    assert result.num_gt_tracks == len(unique) == result.num_tracks
    has_gt = result.npos > 0
    np.testing.assert_array_equal(result.ap[:, has_gt], 1.0)
    assert np.isnan(result.ap[:, ~has_gt]).all()
    np.testing.assert_array_equal(result.mAP, [1.0, 1.0, 1.0])
    assert result.mAP_track == 1.0


def halves(first_half: int, num_frames: int, first_score: float, second_score: float):
    gt = ground_truth([(f, 2, 0, LEFT) for f in range(num_frames)], num_frames)
    rows = [(f + 1, 2, 1 if f < first_half else 2, first_score if f < first_half else second_score,
             LEFT) for f in range(num_frames)]  # fmt: skip
    return track_ap.evaluate_tracks(gt, predictions(rows))


def test_ground_truth_track_cut_into_two_halves():
    """One ground-truth track G of 10 frames, predicted as A (frames 1-5, score 0.9) and
    B (frames 6-10, score 0.8), boxes exact. ov(A, G) = 5 / |{1..5} u {1..10}| = 5/10 = 0.5,
    ov(B, G) = 0.5. npos = 1.
    tau = 0.25 and 0.5: A (first by score) claims G: TP; B finds G taken: FP. Ranked [TP, FP]:
      recall [1, 1], precision [1, 1/2] -> AP = 1 (all of the recall at precision 1).
    tau = 0.75: 0.5 < 0.75 for both: [FP, FP] -> AP = 0.
    mAP_track = (1 + 1 + 0) / 3 = 2/3.

    Odd length: G of 9 frames, A = frames 1-5 (score 0.8), B = frames 6-9 (score 0.9):
    ov(A, G) = 5/9, ov(B, G) = 4/9.
    tau = 0.25: B first, 4/9 >= 0.25: TP; A: FP -> AP 1.
    tau = 0.5: B: 4/9 < 0.5: FP; A: 5/9: TP. Ranked [FP, TP]: recall [0, 1], precision
      [0, 1/2] -> the envelope is 1/2 from recall 0 to 1 -> AP = 1/2.
    tau = 0.75: [FP, FP] -> 0.  mAP_track = (1 + 1/2 + 0) / 3 = 1/2.
    """
    result = halves(5, 10, 0.9, 0.8)
    np.testing.assert_allclose(result.ap[:, 2], [1.0, 1.0, 0.0])
    assert result.mAP_track == pytest.approx(2 / 3)
    np.testing.assert_array_equal(result.num_tp, [1, 1, 0])
    result = halves(5, 9, 0.8, 0.9)
    np.testing.assert_allclose(result.ap[:, 2], [1.0, 0.5, 0.0])
    assert result.mAP_track == pytest.approx(0.5)


def test_track_that_switches_objects_half_way():
    """Two objects of one class, G1 (left) and G2 (right), frames 1-10. P follows G1 on frames
    1-5 and G2 on 6-10: ov(P, G1) = ov(P, G2) = 5/10 = 0.5. P passes tau 0.25 (and 0.5; it
    claims G1, the first on the tie) and fails 0.75. npos = 2: AP = 1/2 at 0.25 and 0.5 (half
    the recall at precision 1), 0 at 0.75."""
    objects = [(f, 0, 7, LEFT) for f in range(10)] + [(f, 0, 8, RIGHT) for f in range(10)]
    gt = ground_truth(objects, 10)
    rows = [(f + 1, 0, 3, 0.7, LEFT if f < 5 else RIGHT) for f in range(10)]
    result = track_ap.evaluate_tracks(gt, predictions(rows))
    g1 = int(np.flatnonzero(result.gt_tracks.track_id == 7)[0])
    assert result.matched_gt[:, 0].tolist() == [g1, g1, -1]
    np.testing.assert_allclose(result.ap[:, 0], [0.5, 0.5, 0.0])


def test_overlap_counts_the_union_of_frames_not_spans():
    # G is on frames 1-3 and 8-10 (it left the view in between, same track id).
    frames = [0, 1, 2, 7, 8, 9]
    gt = ground_truth([(f, 1, 0, LEFT) for f in frames], 10)
    exact = [(f + 1, 1, 0, 0.5, LEFT) for f in frames]
    result = track_ap.evaluate_tracks(gt, predictions(exact))
    assert result.overlaps.overlap.tolist() == [1.0]  # 6 / 6: the gap is in neither track
    # Boxes on the gap frames too: 6 hits over the 10 frames where either track has a box.
    filled = exact + [(f + 1, 1, 0, 0.5, LEFT) for f in range(3, 7)]
    result = track_ap.evaluate_tracks(gt, predictions(filled))
    assert result.overlaps.overlap.tolist() == [0.6]
    assert result.matched_gt[:, 0].tolist() == [0, 0, -1]


def test_per_object_threshold_and_wrong_class():
    # A 10 x 10 object: threshold 100 / 400 = 0.25. A box shifted by 4 px: IoU 60 / 140 = 0.43
    # is enough for it (not for a large object, which needs 0.5).
    small, shifted = (0, 0, 9, 9), (4, 0, 13, 9)
    gt = ground_truth([(f, 5, 0, small) for f in range(4)], 4)
    result = track_ap.evaluate_tracks(gt, predictions([(f + 1, 5, 0, 0.5, shifted)
                                                        for f in range(4)]))  # fmt: skip
    assert result.overlaps.overlap.tolist() == [1.0]
    # The same track with another class never matches (and its class has no ground truth).
    result = track_ap.evaluate_tracks(gt, predictions([(f + 1, 6, 0, 0.5, small)
                                                        for f in range(4)]))  # fmt: skip
    assert len(result.overlaps.pred) == 0 and result.ap[0, 5] == 0.0
    assert np.isnan(result.ap[0, 6])


def test_greedy_by_track_score_and_ties_by_id():
    # Two exact predictions of one ground-truth track: the higher score claims it; on equal
    # scores the lower track id does.
    gt = ground_truth([(f, 0, 0, LEFT) for f in range(3)], 3)
    for scores, winner in [((0.4, 0.6), 1), ((0.5, 0.5), 0)]:
        rows = [(f + 1, 0, k, scores[k], LEFT) for k in (1, 0) for f in range(3)]
        result = track_ap.evaluate_tracks(gt, predictions(rows))
        claims = result.matched_gt[0]
        assert claims[result.pred_tracks.track_id == winner].tolist() == [0]
        assert claims[result.pred_tracks.track_id != winner].tolist() == [-1]
    # A track's score is the mean of its detections' scores.
    rows = [(1, 0, 4, 0.2, LEFT), (2, 0, 4, 0.4, LEFT), (3, 0, 4, 0.9, LEFT)]
    assert track_ap.evaluate_tracks(gt, predictions(rows)).pred_tracks.score == pytest.approx([0.5])


def test_tracks_are_per_video_and_off_list_detections_are_dropped():
    # Videos: frames 1-3 and 4-6. Track id 0 in both videos (different classes too): two tracks.
    objects = [(f, 0, 0, LEFT) for f in range(3)] + [(f, 1, 0, RIGHT) for f in range(3, 6)]
    gt = ground_truth(objects, 6, video_starts=(0, 3))
    rows = [(f + 1, 0, 0, 0.5, LEFT) for f in range(3)]
    rows += [(f + 1, 1, 0, 0.5, RIGHT) for f in range(3, 6)]
    rows += [(99, 1, 0, 0.5, RIGHT)]  # frame 99 is not listed
    result = track_ap.evaluate_tracks(gt, predictions(rows))
    assert result.num_tracks == 2 and result.pred_tracks.num_dropped == 1
    assert result.mAP_track == 1.0


def test_inconsistent_tracks_are_named_by_row():
    gt = ground_truth([(f, 0, 0, LEFT) for f in range(3)], 3)
    two_classes = predictions([(1, 0, 5, 0.5, LEFT), (2, 0, 5, 0.5, LEFT), (3, 4, 5, 0.5, LEFT)])
    with pytest.raises(tracks.TrackConsistencyError, match="track 5 has two classes") as e:
        track_ap.evaluate_tracks(gt, two_classes)
    assert e.value.row == 2
    two_boxes = predictions([(1, 0, 5, 0.5, LEFT), (2, 0, 5, 0.5, LEFT), (2, 0, 5, 0.4, RIGHT)])
    with pytest.raises(tracks.TrackConsistencyError, match="two boxes on one frame") as e:
        track_ap.evaluate_tracks(gt, two_boxes)
    assert e.value.row == 2
    bad_gt = ground_truth([(0, 0, 0, LEFT), (1, 0, 0, LEFT), (1, 0, 0, RIGHT)], 3)
    with pytest.raises(tracks.TrackConsistencyError, match="ground-truth track 0") as e:
        track_ap.evaluate_tracks(bad_gt, two_classes)
    assert e.value.row == 2
    with pytest.raises(ValueError, match=">= 0"):
        tracks.Tracks(vid_ap.Detections([1], [0], [0.5], [LEFT]), [-1])


def test_no_predictions():
    gt = ground_truth([(f, 0, 0, LEFT) for f in range(3)], 3)
    result = track_ap.evaluate_tracks(gt, tracks.Tracks.concatenate([]))
    np.testing.assert_array_equal(result.ap[:, 0], 0.0)
    assert result.mAP_track == 0.0 and result.num_tracks == 0
