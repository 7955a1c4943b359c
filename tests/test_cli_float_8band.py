"""``ddrf-run mul.tif`` on the real 8-band float32 CristianICS pair with the bundled 8-band model: the PAN is
found next to it, the radiance is scaled as the training reader scaled it, and the report says so.

The run uses a 48² MS crop around the scene's brightest MS pixel (so the inferred scale is the whole file's)
to stay fast; the whole 143 × 144 file takes minutes on one loaded core."""
import json

import numpy as np
import pytest
import rasterio

from ddrf_runtime.evaluation import datasets
from ddrf_runtime.datapaths import MODELS_DIR
from ddrf_runtime.bit_depths import bit_depth_for_max
from rasterio.windows import Window

from .scenes import FAST_ARGS, rewrite

MODEL = MODELS_DIR / "ddrf_8band.onnx"


@pytest.mark.parametrize("peak, bits", [(118.2, 7), (127.0, 7), (127.5, 8), (1.0, 1), (0.3, 1), (2047.0, 11)])
def test_float_rasters_get_the_tightest_full_scale(peak, bits):
    assert bit_depth_for_max(peak, floating=True) == bits
    assert bit_depth_for_max(118.2) == 8  # integer rasters keep the standard sensor bit depths


def _crop_around_the_peak(src_dir, dst_dir, side=48):
    """dst_dir/mul.tif and pan.tif: a side² MS window holding the MS maximum and the PAN over the same ground."""
    with rasterio.open(src_dir / "mul.tif") as ms, rasterio.open(src_dir / "pan.tif") as pan:
        _, r, c = np.unravel_index(np.argmax(ms.read()), (ms.count, ms.height, ms.width))
        w = Window(int(np.clip(c - side // 2, 0, ms.width - side)), int(np.clip(r - side // 2, 0, ms.height - side)),
                   side, side)
        pw = pan.window(*ms.window_bounds(w)).round_offsets().round_lengths()
    rewrite(dst_dir / "mul.tif", window=w, src=src_dir / "mul.tif")
    rewrite(dst_dir / "pan.tif", window=pw, src=src_dir / "pan.tif")
    return dst_dir / "mul.tif"


def test_ddrf_run_fuses_the_float32_8band_pair_with_the_bundled_model(data_dir, tmp_path, cli):
    ms_path = _crop_around_the_peak(data_dir / "geotiff/cristianics_8band_r4", tmp_path)
    out, report = tmp_path / "fused.tif", tmp_path / "report.json"
    rc, lines = cli(ms_path, "-o", out, "--report", report, *FAST_ARGS)
    assert (rc, lines) == (0, [])
    r = json.loads(report.read_text())
    assert (r["inputs"]["pan"], r["model"]) == (str(ms_path.with_name("pan.tif")), str(MODEL))
    assert r["bit_depth"] == datasets.load_scene("cristianics").bit_depth == 7  # the scale the model trained on
    assert r["bit_depth_source"] == "float data maximum 118.217 (full scale 127)"
    with rasterio.open(out) as o, rasterio.open(ms_path.with_name("pan.tif")) as pan:
        assert (o.count, o.dtypes[0], o.crs) == (8, "float32", pan.crs)
        fused = o.read().astype(np.float64)  # (8, H, W)
        h, w = o.shape
        # Spectral consistency: each band's 4×4 block means follow the MS it was fused from.
        with rasterio.open(ms_path) as ms_ds:
            ms = ms_ds.read(window=ms_ds.window(*o.bounds)).astype(np.float64)
    blocks = fused[:, :h // 4 * 4, :w // 4 * 4].reshape(8, h // 4, 4, w // 4, 4).mean((2, 4))
    n, m = min(blocks.shape[1], ms.shape[1]), min(blocks.shape[2], ms.shape[2])
    for b in range(8):
        assert np.corrcoef(blocks[b, :n, :m].ravel(), ms[b, :n, :m].ravel())[0, 1] > 0.9
    assert 0.9 < blocks[:, :n, :m].mean() / ms[:, :n, :m].mean() < 1.1
