"""Flow data for PWC-Net pretraining: the Middlebury `.flo` format (round trip, byte layout,
errors that name the file) and the FlyingChairs / MPI-Sintel layouts on small trees made here."""

import cv2
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


# ---- ground truth from the synthetic generator -------------------------------------------


def test_synthetic_ground_truth_flow_aligns_the_frames(rng):
    """Warping frame s back along the generator's flow t -> s reproduces frame t on the
    surfaces visible in both (objects moving fast, scaling, the camera panning)."""
    import cv2

    from input_pipeline import synthetic

    seed = int(rng.integers(2**31))
    video = synthetic.render_video(
        np.random.default_rng(seed), width=96, height=96, num_frames=12, labels=(0, 14, 29),
        max_objects=3, speeds=("fast", "medium", "fast"), deteriorations=(), fast_blur_bursts=0,
    )  # fmt: skip
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)

    def error(frame_t, frame_s, flow, mask):
        warped = cv2.remap(frame_s, xx + flow[..., 0], yy + flow[..., 1], cv2.INTER_LINEAR)
        return np.abs(warped - frame_t)[mask].mean()

    for t, s in ((2, 9), (9, 2), (4, 10)):
        flow = synthetic.ground_truth_flow(video, t, s)
        owner_t = video.owners[t]
        yi = np.clip(np.rint(yy + flow[..., 1]).astype(int), 0, 95)
        xi = np.clip(np.rint(xx + flow[..., 0]).astype(int), 0, 95)
        both = (owner_t >= 0) & (video.owners[s][yi, xi] == owner_t)
        both &= (xx + flow[..., 0] > 3) & (xx + flow[..., 0] < 92)
        both &= (yy + flow[..., 1] > 3) & (yy + flow[..., 1] < 92)
        assert both.sum() > 100, seed
        frame_t, frame_s = video.frames[t], video.frames[s]
        aligned = error(frame_t, frame_s, flow, both)
        # The ground truth is where the error is least: 2 px off in any direction is worse.
        for d in ((2, 0), (-2, 0), (0, 2), (0, -2)):
            off = error(frame_t, frame_s, flow + np.float32(d), both)
            assert aligned < off, (seed, t, s, d, aligned, off)
        moving = np.linalg.norm(flow, axis=-1)[both].mean()
        unaligned = np.abs(frame_s - frame_t)[both].mean()
        if moving > 5:  # pixel noise and sharp textures stay; the motion's error is gone
            assert aligned < 0.6 * unaligned, (seed, t, s, moving, aligned, unaligned)
    # Background pixels move with the camera: an integer shift of the panned window.
    flow = synthetic.ground_truth_flow(video, 0, 11)
    background = video.owners[0] == synthetic.BACKGROUND
    shift = video.background[0] - video.background[11]
    np.testing.assert_allclose(flow[background], np.broadcast_to(shift, flow[background].shape))


def test_generator_writes_flow_pairs_in_the_flying_chairs_layout(tmp_path):
    from input_pipeline import synthetic

    manifest = synthetic.generate(
        tmp_path / "d", width=64, height=64, num_train_videos=2, num_val_videos=1,
        frames_per_video=4, num_det_images=0, flow_pairs_per_video=3,
    )  # fmt: skip
    root = tmp_path / "d" / "FlyingChairs"
    train = flow_data.flying_chairs_pairs(root, "train")
    val = flow_data.flying_chairs_pairs(root, "val")
    assert (len(train), len(val)) == (6, 3)
    assert manifest["flow_pairs"] == {"train": 6, "val": 3}
    for pair in train + val:
        image1, image2, flow = flow_data.load_pair(pair)
        assert image1.shape == image2.shape == (64, 64, 3) and flow.shape == (64, 64, 2)
        # Every pixel moves (the background too): FlyingChairs' dense motion.
        assert np.linalg.norm(flow, axis=-1).min() > 0
    # The same seed writes the same pairs.
    synthetic.generate(
        tmp_path / "e", width=64, height=64, num_train_videos=2, num_val_videos=1,
        frames_per_video=4, num_det_images=0, flow_pairs_per_video=3,
    )  # fmt: skip
    again = flow_data.flying_chairs_pairs(tmp_path / "e" / "FlyingChairs", "val")
    for a, b in zip(val, again, strict=True):
        for x, y in zip(flow_data.load_pair(a), flow_data.load_pair(b), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flow_pair_ground_truth_aligns_its_images(seed):
    """A FlyingChairs-style pair: image 2 sampled along the ground-truth flow is image 1 where
    the surface is seen in both (pixel noise and occlusions aside), much closer than image 2
    as it is, and closer than the flow moved by 1 px in any direction; motions within the
    stated bounds."""
    from input_pipeline import synthetic

    rng = np.random.default_rng(seed)
    size = 96
    image1, image2, flow = synthetic.render_flow_pair(
        rng, width=size, height=size, labels=(0, 14, 29), max_objects=2
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def error(f, mask):
        warped = cv2.remap(image2, xx + f[..., 0], yy + f[..., 1], cv2.INTER_LINEAR)
        return np.abs(warped - image1)[mask].mean()

    # Pixels whose flow is locally smooth (no motion boundary in image 1 or 2 near them) and
    # that land inside image 2.
    speed = np.linalg.norm(flow, axis=-1)
    smooth = cv2.dilate((cv2.Laplacian(flow, cv2.CV_32F) ** 2).sum(-1), np.ones((5, 5))) < 1e-6
    inside = (xx + flow[..., 0] > 2) & (xx + flow[..., 0] < size - 3)
    inside &= (yy + flow[..., 1] > 2) & (yy + flow[..., 1] < size - 3)
    mask = smooth & inside
    assert mask.sum() > 0.3 * size * size, seed
    aligned = error(flow, mask)
    assert aligned < 0.4 * np.abs(image2 - image1)[mask].mean(), (seed, aligned)
    for d in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        assert aligned < error(flow + np.float32(d), mask), (seed, d)
    reach = (synthetic.FLOW_BACKGROUND_MOTION + synthetic.FLOW_OBJECT_MOTION) * size
    assert 0 < speed.min() and speed.max() < reach * 1.5 + 2, (seed, speed.max())


def test_flow_batches_are_deterministic_and_flips_negate_u(tmp_path, rng):
    size = 16
    pairs = []
    for i in range(3):
        image1 = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
        image2 = rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)
        flow = rng.normal(0, 3, (24, 20, 2)).astype(np.float32)
        import cv2

        cv2.imwrite(str(tmp_path / f"{i:05d}_img1.ppm"), image1)
        cv2.imwrite(str(tmp_path / f"{i:05d}_img2.ppm"), image2)
        flow_data.write_flo(tmp_path / f"{i:05d}_flow.flo", flow)
    pairs = flow_data.flying_chairs_pairs(tmp_path)
    kw = dict(crop_size=size, mean_bgr=(1.0, 2.0, 3.0), batch_dims=(2, 3), seed=5)
    a = flow_data.FlowBatches(pairs, start_step=0, **kw)
    first, second = next(a), next(a)
    resumed = next(flow_data.FlowBatches(pairs, start_step=1, **kw))
    for key in ("image1", "image2", "flow"):
        np.testing.assert_array_equal(second[key], resumed[key])
    assert first["image1"].shape == (2, 3, size, size, 3)
    assert first["flow"].shape == (2, 3, size, size, 2)
    # Every training crop is a window of one pair, as it is or mirrored with u negated, its
    # images cut (and mirrored) the same way and normalised.
    loaded = [flow_data.load_pair(p) for p in pairs]
    mean = np.float32([1.0, 2.0, 3.0])
    flips = 0
    for batch in (first, second):
        crops = zip(
            batch["image1"].reshape(-1, size, size, 3),
            batch["flow"].reshape(-1, size, size, 2),
            strict=True,
        )
        for image_crop, flow_crop in crops:
            found = None
            for image1, _, flow in loaded:
                for y0 in range(24 - size + 1):
                    for x0 in range(20 - size + 1):
                        window = flow[y0 : y0 + size, x0 : x0 + size]
                        image = image1[y0 : y0 + size, x0 : x0 + size].astype(np.float32) - mean
                        if np.array_equal(flow_crop, window):
                            found = (image, False)
                        elif np.array_equal(flow_crop, window[:, ::-1] * np.float32([-1, 1])):
                            found = (image[:, ::-1], True)
            assert found is not None
            np.testing.assert_array_equal(image_crop, found[0])
            flips += found[1]
    assert 0 < flips < 12  # both kinds among 12 crops (each mirrored with probability 1/2)
    small = flow_data.FlowBatches(pairs, **dict(kw, crop_size=32), start_step=0)
    with pytest.raises(flow_data.FlowDataError, match=r"00000_img1\.ppm: 20x24 is smaller"):
        next(small)


def test_translated_pairs_move_image_2_and_the_flow_alike(tmp_path, rng):
    """max_shift: half the pairs as they are, the others with image 2 moved by a sub-pixel
    (dx, dy) and the flow by the same, so image 2 sampled along the flow is image 1 (here: a
    pair with zero flow, identical smooth images; bilinear resampling, hence the tolerance)."""
    import cv2

    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    phase = rng.uniform(0, 6, 3)
    image = np.stack([120 + 80 * np.sin(0.3 * xx + 0.2 * yy + p) for p in phase], -1)
    image = image.astype(np.uint8)
    cv2.imwrite(str(tmp_path / "00001_img1.ppm"), image)
    cv2.imwrite(str(tmp_path / "00001_img2.ppm"), image)
    flow_data.write_flo(tmp_path / "00001_flow.flo", np.zeros((40, 40, 2), np.float32))
    (pair,) = flow_data.flying_chairs_pairs(tmp_path)
    shifts, still_pairs = set(), 0
    for seed in range(16):
        one, two, flow = flow_data.pair_arrays(
            pair, crop_size=32, mean_bgr=(0.0, 0.0, 0.0), rng=np.random.default_rng(seed),
            max_shift=3,
        )  # fmt: skip
        dx, dy = flow[0, 0]
        assert (flow == flow[0, 0]).all() and max(abs(dx), abs(dy)) <= 3
        if dx == dy == 0:
            still_pairs += 1
            np.testing.assert_array_equal(two, one)
            continue
        shifts.add((float(dx), float(dy)))
        # Pixel (x, y) of image 1 is at (x + dx, y + dy) in image 2 (away from the borders).
        gx, gy = np.meshgrid(np.arange(32, dtype=np.float32), np.arange(32, dtype=np.float32))
        moved = cv2.remap(two, gx + dx, gy + dy, cv2.INTER_LINEAR)
        inner = np.s_[4:28, 4:28]
        assert np.abs(moved[inner] - one[inner]).max() < 12, (seed, dx, dy)
    assert still_pairs >= 3 and len(shifts) >= 3
    assert any(dx != round(dx) for dx, _ in shifts)  # sub-pixel
    _, _, still = flow_data.pair_arrays(pair, crop_size=32, mean_bgr=(0.0, 0.0, 0.0), rng=None)
    assert not still.any()  # evaluation: the pair as it is
