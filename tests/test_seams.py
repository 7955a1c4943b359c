"""No visible seams: the bundled model over a real 512² scene, tiled vs in one pass."""
import os

import numpy as np
import pytest
import rasterio

from ddrf_runtime.datapaths import DEMO_DIR, MODELS_DIR
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays, make_grid
from ddrf_runtime.session import Denoiser

MODEL = os.environ.get("DDRF_SEAM_MODEL", str(MODELS_DIR / "ddrf_4band.onnx"))
TILE, OVERLAP = 128, 32


@pytest.fixture(scope="module")
def fused_pair():
    with rasterio.open(DEMO_DIR / "ms.tif") as m, rasterio.open(DEMO_DIR / "pan.tif") as p:
        ms = m.read(window=((0, 128), (0, 128))).transpose(1, 2, 0)  # (128, 128, 4) DN
        pan = p.read(1, window=((0, 512), (0, 512)))  # (512, 512) DN
    den = Denoiser(MODEL, "cpu", intra_op_threads=1)
    whole = fuse_arrays(ms, pan, den, FuseOptions(steps=1, tile=512, overlap=0, bit_depth=11))
    tiled = fuse_arrays(ms, pan, den, FuseOptions(steps=1, tile=TILE, overlap=OVERLAP, bit_depth=11))
    return ms, whole, tiled


def test_tiled_agrees_with_single_pass(fused_pair):
    ms, whole, tiled = fused_pair
    detail = np.abs(whole - np.repeat(np.repeat(ms, 4, 0), 4, 1)).mean()  # scale of what fusion changes
    diff = np.abs(whole - tiled)
    assert diff.mean() < 0.25 * detail, (diff.mean(), detail)
    assert diff.mean() / 2047 < 2e-3


def test_no_extra_gradient_energy_along_tile_borders(fused_pair):
    """Where tiles start or end, the tiled result must not jump relative to the single pass.

    The jump energy of (tiled − single pass) across tile edges, against its energy across all columns
    (rows): ≈ 1 when blending hides the edges; hard seams (no overlap) measured here give ≈ 14.
    """
    _, whole, tiled = fused_pair
    grid = make_grid(Denoiser(MODEL, "cpu", 1).spec, FuseOptions(tile=TILE, overlap=OVERLAP), 512, 512)
    diff = tiled - whole  # (512, 512, C)

    def jump(d: np.ndarray, idx: list[int]) -> float:  # mean squared step from index i-1 to i, along axis 0
        return float(np.mean((d[idx] - d[[i - 1 for i in idx]]) ** 2))

    for axis, start in ((1, "col"), (0, "row")):
        d = np.moveaxis(diff, axis, 0)  # the axis across which we look for jumps first
        edges = sorted({e for t in grid.tiles for s in [getattr(t.window, start)] for e in (s, s + TILE)} - {0, 512})
        assert edges and jump(d, edges) < 2.0 * jump(d, list(range(1, 512))), (start, jump(d, edges))
