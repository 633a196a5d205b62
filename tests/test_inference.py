"""The online engine: support schedules, once-per-frame features, equality with the direct forward.

The release's schedule is checked against a simulation of its own buffer logic (a deque of 2R+1
feature entries filled as `compute_on_dataset` does, REFERENCE_SPEC §1.2-1.3). The engine runs a
tiny two-stream SSVD over three videos (lengths 13, 5 and 1) in two slots (the third takes the
slot of the second when it is done), must run the body exactly once per frame, detect every frame
exactly once, and give the same detections as the model's direct forward on the same entries.
"""

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from ssvd_jax import inference
from ssvd_jax.models import outputs
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables

SIZE = 64


def simulate_release(length: int) -> dict[int, list[int]]:
    """The release's compute_on_dataset + prepare_data, transcribed: frame -> its 7 entries."""
    half = min(length // 2, 15)
    delta = (2 * half) // 6
    buf = collections.deque(maxlen=2 * half + 1)
    out = {}

    def detect():
        c = half
        idx = [c, c - delta, c + delta, c - 2 * delta, c + 2 * delta, c - 3 * delta, c + 3 * delta]
        out[buf[c]] = [buf[i] for i in idx]

    for t in range(length):
        flag = 0 if t == 0 else (1 if t == length - 1 else 2)
        if flag == 0:
            for _ in range(half + 1):
                buf.append(t)
        elif flag == 2:
            buf.append(t)
            if len(buf) == 2 * half + 1:
                detect()
        else:
            while len(out) < length:
                buf.append(t)
                if len(buf) == 2 * half + 1:
                    detect()
    return out


@pytest.mark.parametrize("length", [1, 2, 5, 11, 13, 20, 31, 100])
def test_release_schedule_closed_form(length):
    entries = inference.release_entries(length, 15)
    assert entries.shape == (length, 7)
    if length == 1:
        # The release never detects a 1-frame video (it has no "last" frame); we do, with
        # every entry the frame itself.
        assert simulate_release(1) == {}
        np.testing.assert_array_equal(entries, 0)
        return
    simulated = simulate_release(length)
    assert sorted(simulated) == list(range(length))
    for t in range(length):
        assert entries[t].tolist() == simulated[t], t
    if length >= 30:
        assert entries[50 if length == 100 else 15].tolist()[:3] == (
            [50, 45, 55] if length == 100 else [15, 10, 20]
        )


def test_paper_schedule():
    assert inference.paper_offsets(6, 12).tolist() == [-12, -7, -3, 3, 7, 12]
    assert inference.paper_offsets(0, 12).tolist() == []
    entries = inference.paper_entries(30, 2, 12)
    assert entries[15].tolist() == [15, 3, 27]
    assert entries[0].tolist() == [0, 0, 12]  # clamped at the start
    assert inference.buffer_slots_needed("paper", 6, 12) == 25
    assert inference.buffer_slots_needed("release", 6, 15) == 31


@pytest.fixture(scope="module")
def engine_setup(module_rng):
    config = tiny.get_config()
    config.data.image_size = SIZE
    config.postprocess.update(
        dict(score_threshold=0.005, pre_nms_top_n=50, nms_iou=0.45, max_detections=20)
    )
    config.eval.batch_videos = 2
    model = ssvd_lib.create_model(config.model)
    variables = init_variables(model, jnp.zeros((1, 3, SIZE, SIZE, 3)), seed=3)
    lengths, sizes = (13, 5, 1), [(SIZE * 2, SIZE), (SIZE, SIZE), (SIZE, SIZE * 2)]
    videos = [module_rng.uniform(-100, 100, (n, SIZE, SIZE, 3)).astype(np.float32) for n in lengths]
    engine = inference.create_engine(config, model, variables, per_stream=True)
    assert engine.schedule == "release" and engine.num_videos == 2
    results = list(
        engine.run_streams(
            inference.Video(iter(v), len(v), size, key=i)
            for i, (v, size) in enumerate(zip(videos, sizes, strict=True))
        )
    )
    return config, model, variables, videos, engine, results


def test_engine_runs_each_body_once_and_detects_every_frame(engine_setup):
    _, _, _, _, engine, results = engine_setup
    assert engine.frames_pushed == 13 + 5 + 1
    done = collections.Counter((v, t) for v, t, _ in results)
    want = [(0, t) for t in range(13)] + [(1, t) for t in range(5)] + [(2, 0)]
    assert sorted(done) == want
    assert set(done.values()) == {1}


def test_engine_equals_direct_forward(engine_setup):
    config, model, variables, videos, _, results = engine_setup
    by_key = {(v, t): d for v, t, d in results}
    detect = outputs.create_detect(config)

    @jax.jit
    def direct(frames):
        out = model.apply(variables, frames)
        return {
            "fused": detect([out["motion"], out["sample"]]),
            "motion": detect([out["motion"]]),  # each stream alone: its own post-processing
            "sample": detect([out["sample"]]),
        }

    for v, t in [(0, 0), (0, 6), (0, 12), (1, 2), (2, 0)]:
        frames = videos[v]
        entries = inference.release_entries(len(frames), config.data.support_range)[t]
        # The model's own forward on the clip [reference, supports...] (batch contract).
        wants = jax.tree.map(lambda a: np.asarray(a)[0], direct(frames[entries][None]))
        assert sorted(by_key[(v, t)]) == ["fused", "motion", "sample"]
        for name, want in wants.items():
            got = by_key[(v, t)][name]
            assert want.valid.sum() > 0
            np.testing.assert_array_equal(got.valid, want.valid)
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
            scale = np.array(
                [[2.0, 1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 1.0, 2.0]][v]
            )  # original sizes (128, 64), (64, 64), (64, 128)
            np.testing.assert_allclose(got.boxes, want.boxes * scale, atol=1e-3)


def test_demo_writes_a_video_with_the_input_frame_count(engine_setup, tmp_path, rng):
    import imageio_ffmpeg

    from input_pipeline.classes import CLASS_NAMES
    from ssvd_jax import visualize

    config, _, _, _, engine, _ = engine_setup
    src = tmp_path / "in.mp4"
    writer = imageio_ffmpeg.write_frames(str(src), (96, 80), fps=10, macro_block_size=1)
    writer.send(None)
    for _ in range(9):
        writer.send(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    writer.close()
    out = tmp_path / "out" / "demo.mp4"
    stats = visualize.run_demo(
        engine, str(src), str(out), pixel_mean_bgr=config.data.pixel_mean_bgr,
        class_names=CLASS_NAMES, min_score=0.0,
    )  # fmt: skip
    assert stats["frames"] == 9 and stats["fps"] > 0
    frames, count, size, _ = visualize.open_video(str(out))
    assert count == 9 and size == (96, 80)
    assert len(list(frames)) == 9
    with pytest.raises(visualize.VideoInputError, match="nothing.mp4"):
        visualize.open_video(str(tmp_path / "nothing.mp4"))


def test_evaluate_on_real_ilsvrc_files(engine_setup, fixtures_dir, tmp_path):
    """Engine over a real VID snippet (1280x720 JPEGs), devkit file written, scored."""
    from ssvd_jax.evaluation import detect, results

    config, _, _, _, engine, _ = engine_setup
    summary = detect.evaluate_engine(
        engine, fixtures_dir / "ilsvrc2015_vid_mini", "train", tmp_path,
        pixel_mean_bgr=config.data.pixel_mean_bgr, frame_list=None, seq_nms=False, max_videos=1,
    )  # fmt: skip
    dets = results.read_detections(tmp_path / "det_VID_train.txt")
    assert len(dets) > 0
    # The first listed snippet (sorted folders) has 60 frames: global ids 1..60, each detected.
    assert set(dets.frame_id.tolist()) <= set(range(1, 61))
    assert len(set(dets.frame_id.tolist())) == 60
    # Boxes are in original 1280x720 pixels, not the 64-px input.
    assert dets.boxes[:, 2].max() > 64
    stored = json.loads((tmp_path / "summary_VID_train.json").read_text())
    np.testing.assert_equal(stored["counts"]["detections"], len(dets))
    np.testing.assert_equal(summary["counts"]["frames"], 60)
    # Each stream's own detections, scored beside the fused ones.
    assert sorted(summary["streams"]) == ["motion", "sample"]
    for stream, stream_summary in summary["streams"].items():
        own = results.read_detections(tmp_path / f"det_VID_train_{stream}.txt")
        assert stream_summary["counts"]["detections"] == len(own) > 0
        assert 0.0 <= stream_summary["mAP"] <= 1.0 or stream_summary["mAP"] != stream_summary["mAP"]
