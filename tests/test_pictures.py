"""The main job's pictures: the flow colour code, the bar chart, and Fig. 5's geometry (where
the sampling stream samples, the motion stream's flow) on a tiny two-stream SSVD."""

import jax
import numpy as np

from configs import tiny
from ssvd_jax import pictures
from ssvd_jax.models import ssvd as ssvd_lib
from ssvd_jax.models.params import init_variables


def test_flow_colour_code(rng):
    flow = np.zeros((4, 8, 2), np.float32)
    flow[:, 4:, 0] = 3.0  # right half moves right
    flow[2:, :4, 1] = -3.0  # bottom-left quarter moves up
    image = pictures.flow_to_colour(flow)
    assert image.dtype == np.uint8 and image.shape == (4, 8, 3)
    assert (image[0, 0] == 255).all()  # still: white
    right, up = image[0, 6].astype(int), image[3, 1].astype(int)
    assert right.min() < 50 and up.min() < 50  # full speed: saturated
    assert np.abs(right - up).max() > 100  # directions differ in hue
    half = pictures.flow_to_colour(flow * 0.5, max_magnitude=3.0)[0, 6].astype(int)
    assert 50 < half.min() < 255  # half speed on the same scale: paler
    # The colour of a direction does not depend on where it is.
    moving = rng.normal(0, 2, 2).astype(np.float32)
    field = np.broadcast_to(moving, (3, 5, 2)).copy()
    colours = pictures.flow_to_colour(field, max_magnitude=10.0)
    assert (colours == colours[0, 0]).all()


def test_bar_chart_draws_every_series():
    image = pictures.bar_chart(
        ["all", "fast"], {"a": [50.0, None], "b": [75.0, 20.0]}, "title",
        intervals={"b": [(70.0, 80.0), None]},
    )  # fmt: skip
    assert image.shape[2] == 3 and image.dtype == np.uint8
    blue = (image == np.uint8(pictures.SERIES_COLOURS[0])).all(-1).sum()
    orange = (image == np.uint8(pictures.SERIES_COLOURS[1])).all(-1).sum()
    assert orange > blue > 0  # b has two (and taller) bars, a one


def test_stream_geometry_on_a_tiny_two_stream_model(rng):
    config = tiny.get_config()
    model = ssvd_lib.create_model(config.model)
    size = 64
    clip = rng.normal(0, 30, (3, size, size, 3)).astype(np.float32)
    variables = init_variables(model, jax.numpy.zeros((1, 3, size, size, 3)), seed=0)
    # Offsets exactly zero (the predictor's last conv zeroed; its bias is 0 but for the
    # aggregation weight's): the 9 taps then sit on the 3x3 grid around the location.
    params = jax.tree.map(np.asarray, variables["params"])
    params["sample_block"]["offset_pred"]["kernel"] = np.zeros_like(
        params["sample_block"]["offset_pred"]["kernel"]
    )
    variables = {**variables, "params": params}
    geometry = pictures.stream_geometry(model, variables, clip, (30.0, 20.0))
    assert geometry["stride"] == 8
    assert geometry["samples"].shape == (3, 36, 2)
    assert geometry["flows"].shape == (3, 8, 8, 2)
    # 8 px apart at P3, for every group and every entry.
    location = np.asarray(geometry["location"])
    np.testing.assert_allclose(location, (28.0, 20.0))
    grid = np.stack(np.meshgrid([-8, 0, 8], [-8, 0, 8]), -1)[..., ::1].reshape(9, 2)
    want = np.tile(location + grid, (3, 4, 1))
    np.testing.assert_allclose(geometry["samples"], want, atol=1e-4)
    figure = pictures.sampling_figure(
        [np.zeros((size, size, 3), np.uint8)] * 3, [0, -2, 2], geometry, input_size=size,
        scale=2, caption="x",
    )  # fmt: skip
    assert figure.shape[1] == 3 * 2 * size + 2 * 4


def test_drawing_keeps_one_label_per_object():
    import cv2

    from ssvd_jax.ops.postprocess import Detections
    from ssvd_jax.visualize import draw_detections

    def colour(label):
        hsv = np.uint8([[[(label * 47) % 180, 220, 255]]])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]

    boxes = np.float32([[10, 10, 50, 50], [11, 11, 51, 50], [60, 60, 90, 90], [0, 0, 5, 5]])
    dets = Detections(
        boxes=boxes, scores=np.float32([0.4, 0.6, 0.5, 0.2]), labels=np.int32([1, 2, 3, 4]),
        valid=np.bool_([True, True, True, True]), stream=np.zeros(4, np.int32),
        level=np.zeros(4, np.int32), anchor=np.zeros(4, np.int32),
    )  # fmt: skip
    out = draw_detections(np.zeros((100, 100, 3), np.uint8), dets, ("a", "b", "c", "d", "e"), 0.3)
    present = {lab: bool((out == colour(lab)).all(-1).any()) for lab in (1, 2, 3, 4)}
    # Class 2 (0.6) hides class 1 (0.4) on the same object; class 3 elsewhere; 4 below 0.3.
    assert present == {1: False, 2: True, 3: True, 4: False}
