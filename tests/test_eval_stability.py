"""Stability errors of matched tracks (Zhang & Wang 2016; docs/TRACK_PROTOCOL.md §4), each on a
hand-worked case: fragment, centre position, scale and ratio; the mean over matched tracks."""

from __future__ import annotations

import numpy as np
import pytest

from ssvd_jax.evaluation import stability, track_ap, tracks, vid_ap

G = (0, 0, 99, 99)  # a 100 x 100 object: centre (49.5, 49.5)


def run(gt_tracks, pred_tracks, num_frames):
    """gt_tracks / pred_tracks: {track id: {frame row: box}}; one class, one video."""
    objects = sorted((f, tid, box) for tid, boxes in gt_tracks.items() for f, box in boxes.items())
    gt = vid_ap.GroundTruth(
        frame_ids=np.arange(1, num_frames + 1), frame=[o[0] for o in objects],
        label=[0] * len(objects), boxes=np.array([o[2] for o in objects], np.float64),
        video_starts=[0], track_id=[o[1] for o in objects],
    )  # fmt: skip
    rows = [(f + 1, tid, box) for tid, boxes in pred_tracks.items() for f, box in boxes.items()]
    preds = tracks.Tracks(
        vid_ap.Detections([r[0] for r in rows], [0] * len(rows), [0.5] * len(rows),
                          np.array([r[2] for r in rows], np.float64)),
        [r[1] for r in rows],
    )  # fmt: skip
    result = track_ap.evaluate_tracks(gt, preds)
    return stability.stability(gt, preds.dets.boxes, result)


def test_fragment_error_counts_status_changes():
    # G on frames 0-4; the track has exact boxes on 0, 1, 3, 4 (ov 4/5 >= 0.5: matched).
    # Status 1 1 0 1 1: 2 changes over 4 steps -> E_F = 0.5; exact boxes -> E_C = E_R = 0.
    out = run({0: dict.fromkeys(range(5), G)}, {0: {f: G for f in (0, 1, 3, 4)}}, 5)
    assert out.fragment_error == 0.5 and out.center_error == 0.0
    assert out.scale_ratio_error == 0.0 and out.total == 0.5 and out.num_tracks == 1
    # A box that misses G's threshold counts as no box: (60, 0, 159, 99), IoU 40/160 < 0.5.
    miss = {0: G, 1: G, 2: (60, 0, 159, 99), 3: G, 4: G}
    assert run({0: dict.fromkeys(range(5), G)}, {0: miss}, 5).fragment_error == 0.5
    # A one-frame track has no steps: 0.
    assert run({0: {0: G}}, {0: {0: G}}, 1).fragment_error == 0.0


def test_center_position_error():
    # Shifted by 10 px in x on frames 0 and 2 (IoU 9000 / 11000 >= 0.5): e_x = 10 / 100 on
    # those, 0 on the others: e_x = [0.1, 0, 0.1, 0], population std 0.05; e_y = 0 -> E_C = 0.05.
    shifted = (10, 0, 109, 99)
    out = run({0: dict.fromkeys(range(4), G)}, {0: {0: shifted, 1: G, 2: shifted, 3: G}}, 4)
    assert out.center_error == pytest.approx(0.05)
    assert out.fragment_error == 0.0 and out.scale_ratio_error == 0.0


def test_scale_and_ratio_error():
    # Frame 1: W = (0, 10, 124, 89), 125 x 80 (IoU 8000 / 12000 >= 0.5): scale
    # sqrt(125 * 80 / 100^2) = 1 -> e_s = 0 on both frames; ratio (125 / 80) / 1 = 1.5625 ->
    # e_r = [0, 0.5625], std 0.28125 -> E_R = 0.28125. Its centre (62, 49.5): e_x = [0, 0.125],
    # std 0.0625 -> E_C = 0.0625.
    wide = (0, 10, 124, 89)
    out = run({0: {0: G, 1: G}}, {0: {0: G, 1: wide}}, 2)
    assert out.scale_ratio_error == pytest.approx(0.28125)
    assert out.center_error == pytest.approx(0.0625)
    # Twice the size, same centre: IoU 1/4 < 0.5, so frame 1 has status 0 (the track still
    # claims G: ov = 1/2): the errors use frame 0 alone, and the status changes once.
    double = (-50, -50, 149, 149)
    out = run({0: {0: G, 1: G}}, {0: {0: G, 1: double}}, 2)
    assert out.scale_ratio_error == 0.0 and out.fragment_error == 1.0


def test_means_over_matched_tracks_only():
    # G0 fragmented (E_F 0.5, as above), G1 exact (0), G2 claimed by no track: left out.
    right, far = (300, 0, 399, 99), (600, 0, 699, 99)
    gt_tracks = {0: dict.fromkeys(range(5), G), 1: dict.fromkeys(range(5), right),
                 2: dict.fromkeys(range(5), far)}  # fmt: skip
    preds = {0: {f: G for f in (0, 1, 3, 4)}, 1: dict.fromkeys(range(5), right)}
    out = run(gt_tracks, preds, 5)
    assert out.num_tracks == 2 and out.fragment_error == 0.25 and out.tau == 0.5
    assert run(gt_tracks, {}, 5).num_tracks == 0  # nothing matched: NaN errors
    assert np.isnan(run(gt_tracks, {}, 5).total)
