"""Anchors (`ssvd_jax.ops.anchors`) against the release: `anchors.npz` bit for bit, and the cell
anchors listed in REFERENCE_SPEC §5.2; plus grid sizes and flattening order for other inputs."""

import numpy as np
import pytest

from configs import default
from ssvd_jax.ops import anchors as anchor_ops

PARITY = "ssvd_reference_parity"
LEVELS = ("P3", "P4", "P5", "P6")
# The release's anchors, as the default config states them.
ANCHORS = default.get_config().model.anchors
STRIDES, SIZES = tuple(ANCHORS.strides), tuple(ANCHORS.sizes)
CELL = dict(ratios=tuple(ANCHORS.ratios), scales_per_octave=ANCHORS.scales_per_octave)
PER_LEVEL = dict(CELL, strides=STRIDES, sizes=SIZES)

# REFERENCE_SPEC §5.2, the first rows (ratio 0.5) and the ratio-1 scale-0 row of each level.
SPEC_CELL_ROWS = {
    8: {
        0: [-18, -8, 25, 15],
        1: [-23.7183, -11.1191, 30.7183, 18.1191],
        2: [-30.9228, -15.0488, 37.9228, 22.0488],
        3: [-12, -12, 19, 19],
        8: [-15.0488, -34.0976, 22.0488, 41.0976],
    },
    16: {0: [-38, -16, 53, 31], 4: [-32.3175, -32.3175, 47.3175, 47.3175]},
    32: {2: [-126.8661, -53.8456, 157.8661, 84.8456], 7: [-41.9564, -99.9127, 72.9564, 130.9127]},
    64: {
        0: [-150, -60, 213, 123],
        5: [-171.1873, -171.1873, 234.1873, 234.1873],
        8: [-110.8661, -253.7322, 173.8661, 316.7322],
    },
}


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return dict(np.load(fixtures_dir / PARITY / "anchors.npz"))


def test_cell_anchors_equal_release_buffers(reference):
    for level, stride, size in zip(LEVELS, STRIDES, SIZES, strict=True):
        got = anchor_ops.cell_anchors(stride, size, **CELL)
        assert got.dtype == np.float32 and got.shape == (9, 4)
        np.testing.assert_array_equal(got, reference[f"cell_anchors_{level}"])


def test_cell_anchors_equal_spec_listing():
    for stride, rows in SPEC_CELL_ROWS.items():
        got = anchor_ops.cell_anchors(stride, SIZES[STRIDES.index(stride)], **CELL)
        for a, want in rows.items():
            np.testing.assert_allclose(got[a], want, atol=1e-4)


def test_full_anchor_lists_equal_release(reference):
    per_level = anchor_ops.generate_anchors_per_level(448, **PER_LEVEL)
    for level, got in zip(LEVELS, per_level, strict=True):
        np.testing.assert_array_equal(got, reference[f"anchors_{level}"])
    everything = np.concatenate(per_level)
    assert everything.shape == (37485, 4) and everything.dtype == np.float32
    np.testing.assert_array_equal(
        everything, np.concatenate([reference[f"anchors_{level}"] for level in LEVELS])
    )


def test_grid_sizes_use_ceil():
    assert anchor_ops.level_grid_sizes(448, STRIDES) == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert anchor_ops.level_grid_sizes((100, 130), STRIDES) == [(13, 17), (7, 9), (4, 5), (2, 3)]


def test_non_square_order_is_y_x_a(rng):
    height, width = (int(v) for v in rng.integers(40, 200, size=2))
    per_level = anchor_ops.generate_anchors_per_level((height, width), **PER_LEVEL)
    grids = anchor_ops.level_grid_sizes((height, width), STRIDES)
    for anchors, (gh, gw), stride, size in zip(per_level, grids, STRIDES, SIZES, strict=True):
        assert anchors.shape == (gh * gw * 9, 4)
        cell = anchor_ops.cell_anchors(stride, size, **CELL)
        for y, x, a in [(0, 0, 0), (gh - 1, gw - 1, 8), (gh // 2, gw - 1, 4), (gh - 1, 0, 7)]:
            shift = np.array([x, y, x, y], np.float32) * stride
            np.testing.assert_array_equal(anchors[(y * gw + x) * 9 + a], cell[a] + shift)


def test_other_ratios_and_scales():
    cell = anchor_ops.cell_anchors(16, 40, ratios=(1.0, 3.0), scales_per_octave=2)
    assert cell.shape == (4, 4)
    w = cell[:, 2] - cell[:, 0] + 1
    h = cell[:, 3] - cell[:, 1] + 1
    # Ratio 1 at stride scale is 16 x 16, scaled by 40 / 16 and 40 * sqrt(2) / 16.
    np.testing.assert_allclose(w[:2], [40.0, 40.0 * 2**0.5], rtol=1e-6)
    # Ratio 3: w = round(sqrt(256 / 3)) = 9, h = round(27) = 27 at stride scale.
    np.testing.assert_allclose(h[2:] / w[2:], [3.0, 3.0], rtol=1e-6)
