import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddrf_runtime.errors import ConfigError, InputError
from ddrf_runtime.tiling import TileGrid, Window, pad_symmetric, tile_noise


@st.composite
def grids(draw):
    ratio = draw(st.sampled_from([1, 2, 3, 4, 8]))
    size_multiple = draw(st.sampled_from([1, 2, 4, 8, 16]))
    m = math.lcm(ratio, size_multiple)
    tile = m * draw(st.integers(1, max(1, 96 // m)))
    overlap = ratio * draw(st.integers(0, (tile - 1) // ratio))
    height = ratio * draw(st.integers(1, 200 // ratio))
    width = ratio * draw(st.integers(1, 200 // ratio))
    halo = draw(st.integers(0, 5))
    return TileGrid(height, width, tile, overlap, size_multiple, ratio, halo)


@settings(max_examples=200, deadline=None)
@given(grid=grids())
def test_tiles_cover_the_scene_and_weights_sum_to_one(grid):
    th, tw = grid.tile_shape
    assert th % grid.multiple == 0 and tw % grid.multiple == 0 and th <= grid.tile and tw <= grid.tile
    coverage = np.zeros((grid.height, grid.width), np.int32)
    total = np.zeros((grid.height, grid.width), np.float64)
    for tile in grid.tiles:
        win, rd = tile.window, tile.read
        assert (win.height, win.width) == (th, tw)
        assert win.row % grid.ratio == 0 and win.col % grid.ratio == 0  # tiles start on MS pixel edges
        # inside the scene; past it only along an axis where the scene is smaller than the tile
        assert 0 <= win.row and 0 <= win.col
        assert win.row + th <= grid.height or (win.row == 0 and grid.height < th)
        assert win.col + tw <= grid.width or (win.col == 0 and grid.width < tw)
        assert (rd.row, rd.col) == (win.row, win.col)
        assert rd.row + rd.height <= grid.height and rd.col + rd.width <= grid.width
        coverage[rd.slices] += 1
        w = grid.weights(tile)
        assert w.shape == (th, tw) and w.dtype == np.float32 and (w > 0).all() and (w <= 1 + 1e-6).all()
        grid.blend(total, tile, np.ones((th, tw)))
        # MS read window plus padding is exactly the tile / ratio plus the halo on every side
        (pt, pb), (pl, pr) = tile.ms_pad
        assert tile.ms.row >= 0 and tile.ms.row + tile.ms.height <= grid.height // grid.ratio
        assert tile.ms.col >= 0 and tile.ms.col + tile.ms.width <= grid.width // grid.ratio
        assert tile.ms.row - pt == win.row // grid.ratio - grid.halo
        assert tile.ms.height + pt + pb == th // grid.ratio + 2 * grid.halo
        assert tile.ms.width + pl + pr == tw // grid.ratio + 2 * grid.halo
    assert (coverage >= 1).all()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_interior_weights_are_one_and_neighbours_overlap_by_at_least_overlap():
    grid = TileGrid(1000, 600, 256, 64, 16, 4)
    rows = sorted({t.window.row for t in grid.tiles})
    assert rows[0] == 0 and rows[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in zip(rows, rows[1:]))
    w = grid.weights(grid.tiles[0])
    assert w[0, 0] == 1.0 and w[100, 100] == 1.0 and w[255, 255] < 0.01  # ramps only towards neighbours


def test_small_scene_gets_one_rounded_tile_and_padding():
    grid = TileGrid(20, 1000, 256, 64, 16, 4, halo=3)
    assert grid.tile_shape == (32, 256) and grid.shape[0] == 1
    tile = grid.tiles[0]
    assert tile.read.height == 20 and tile.pan == Window(0, 0, 20, 256) and tile.pan_pad == ((0, 12), (0, 0))
    pan = np.arange(20 * 256, dtype=np.float32).reshape(20, 256)
    padded = pad_symmetric(pan, tile.pan_pad)
    assert padded.shape == (32, 256)
    np.testing.assert_array_equal(padded[20:32], pan[::-1][:12])  # mirrored about the scene edge


def test_pan_halo_is_read_where_the_scene_has_it_and_mirrored_where_not():
    grid = TileGrid(20, 1000, 256, 64, 16, 4, halo=3, pan_halo=8)
    first, second = grid.tiles[0], grid.tiles[1]
    assert first.pan == Window(0, 0, 20, 264) and first.pan_pad == ((8, 20), (8, 0))
    assert second.pan == Window(0, second.window.col - 8, 20, 272) and second.pan_pad == ((8, 20), (0, 0))
    with pytest.raises(ConfigError, match="pan_halo"):
        TileGrid(20, 1000, 256, 64, 16, 4, pan_halo=6)  # not a multiple of the ratio: the MS phase would shift


def test_pad_symmetric_is_identity_without_padding():
    a = np.zeros((3, 4, 2))
    assert pad_symmetric(a, ((0, 0), (0, 0))) is a
    assert pad_symmetric(a, ((1, 2), (0, 3))).shape == (6, 7, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(tile=500), ConfigError, "multiple of 16"),
    (dict(tile=0), ConfigError, "multiple of 16"),
    (dict(overlap=6), ConfigError, "overlap"),
    (dict(overlap=512), ConfigError, "overlap"),
    (dict(height=1002), InputError, "multiple of the ratio"),
    (dict(halo=-1), ConfigError, "halo"),
    (dict(ratio=0), ConfigError, "ratio"),
])
def test_invalid_geometry(kwargs, error, match):
    args = dict(height=1000, width=1000, tile=512, overlap=64, size_multiple=16, ratio=4) | kwargs
    with pytest.raises(error, match=match):
        TileGrid(**args)


def test_blend_rejects_tiles_outside_the_buffer():
    grid = TileGrid(64, 64, 32, 8)
    with pytest.raises(ValueError, match="does not fit"):
        grid.blend(np.zeros((32, 64)), grid.tiles[-1], np.ones((32, 32)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63), row=st.integers(0, 10**6), col=st.integers(0, 10**6))
def test_tile_noise_depends_only_on_seed_and_position(seed, row, col):
    a = tile_noise(seed, row, col, (2, 4, 4))
    assert a.dtype == np.float32 and a.shape == (2, 4, 4)
    np.testing.assert_array_equal(a, tile_noise(seed, row, col, (2, 4, 4)))
    assert not np.array_equal(a, tile_noise(seed, row, col + 1, (2, 4, 4)))
    assert not np.array_equal(a, tile_noise(seed + 1, row, col, (2, 4, 4)))
