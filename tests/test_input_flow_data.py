"""Flow data for PWC-Net pretraining: the Middlebury `.flo` format (round trip, byte layout,
errors that name the file) and the FlyingChairs / MPI-Sintel layouts on small trees made here."""

import numpy as np
import pytest

from input_pipeline import flow_data


def test_flo_round_trip_and_byte_layout(tmp_path, rng):
    h, w = (int(v) for v in rng.integers(3, 40, size=2))
    flow = rng.normal(0, 5, (h, w, 2)).astype(np.float32)
    path = tmp_path / "a" / "x.flo"
    flow_data.write_flo(path, flow)
    np.testing.assert_array_equal(flow_data.read_flo(path), flow)
    raw = path.read_bytes()
    # The layout by hand: 'PIEH', width, height, then (u, v) per pixel in row-major order.
    assert raw[:4] == b"PIEH"
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [w, h]
    assert len(raw) == 12 + h * w * 8
    y, x = int(rng.integers(h)), int(rng.integers(w))
    u, v = np.frombuffer(raw[12 + 8 * (y * w + x) : 20 + 8 * (y * w + x)], "<f4")
    assert (u, v) == (flow[y, x, 0], flow[y, x, 1])


def test_bad_flo_files_name_the_file(tmp_path, rng):
    path = tmp_path / "bad.flo"
    flow_data.write_flo(path, rng.normal(size=(4, 5, 2)))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(flow_data.FlowDataError, match=r"bad\.flo: .*truncated"):
        flow_data.read_flo(path)
    path.write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(flow_data.FlowDataError, match=r"bad\.flo: not a \.flo file"):
        flow_data.read_flo(path)
    with pytest.raises(flow_data.FlowDataError, match="missing.flo"):
        flow_data.read_flo(tmp_path / "missing.flo")
    with pytest.raises(ValueError, match="out.flo"):
        flow_data.write_flo(tmp_path / "out.flo", np.zeros((4, 5, 3)))


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")


def test_flying_chairs_layout_and_split(tmp_path, rng):
    data = tmp_path / "FlyingChairs_release" / "data"
    for n in (1, 2, 3, 10):
        _touch(data / f"{n:05d}_img1.ppm")
        _touch(data / f"{n:05d}_img2.ppm")
        flow_data.write_flo(data / f"{n:05d}_flow.flo", rng.normal(size=(2, 3, 2)))
    root = tmp_path / "FlyingChairs_release"
    pairs = flow_data.flying_chairs_pairs(root)
    assert [p.flow.name for p in pairs] == [f"{n:05d}_flow.flo" for n in (1, 2, 3, 10)]
    assert pairs[3].image2 == data / "00010_img2.ppm"
    (root / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n1\n")
    assert [p.flow.name[:5] for p in flow_data.flying_chairs_pairs(root, "val")] == ["00002"]
    assert len(flow_data.flying_chairs_pairs(root, "train")) == 3
    (root / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    with pytest.raises(flow_data.FlowDataError, match="train_val.txt: 2 marks .* 4 pairs"):
        flow_data.flying_chairs_pairs(root, "train")
    (data / "00003_img2.ppm").unlink()
    with pytest.raises(flow_data.FlowDataError, match="00003_img2.ppm: missing"):
        flow_data.flying_chairs_pairs(root)
    with pytest.raises(flow_data.FlowDataError, match="no such FlyingChairs folder"):
        flow_data.flying_chairs_pairs(tmp_path / "nowhere")


def test_sintel_layout(tmp_path, rng):
    root = tmp_path / "MPI-Sintel"
    for scene, frames in (("alley_1", 3), ("bamboo_2", 2)):
        for i in range(1, frames + 1):
            _touch(root / "training" / "clean" / scene / f"frame_{i:04d}.png")
        for i in range(1, frames):  # no flow from a scene's last frame
            path = root / "training" / "flow" / scene / f"frame_{i:04d}.flo"
            flow_data.write_flo(path, rng.normal(size=(2, 2, 2)))
    pairs = flow_data.sintel_pairs(root, "clean")
    got = [(p.image1.parent.name, p.image1.name, p.image2.name) for p in pairs]
    assert got == [
        ("alley_1", "frame_0001.png", "frame_0002.png"),
        ("alley_1", "frame_0002.png", "frame_0003.png"),
        ("bamboo_2", "frame_0001.png", "frame_0002.png"),
    ]
    with pytest.raises(flow_data.FlowDataError, match=r"training/final: missing"):
        flow_data.sintel_pairs(root, "final")
