"""Hyperspectral fusion on the EO-1 Paris data: 128 Hyperion bands, a 9-band ALI MS or ALI PAN guide, ratio 3.

The same code paths as pansharpening; only the family (bands, k, ratio, bit depth) differs.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io

from ddrf_runtime.evaluation import datasets as ds
from ddrf_runtime.evaluation.metrics import full_resolution_metrics, reduced_resolution_metrics
from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.mtf import mtf_lowpass
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays, make_grid
from ddrf_runtime.resample import decimate, upsample

from .onnx_fakes import make_model

PARIS = "hyperspectral/hysure_paris_eo1/paris_data_hs_"


def _mat(data_dir, which: str) -> dict:
    return scipy.io.loadmat(data_dir / f"{PARIS}{which}.mat")


def test_readers_give_hyperion_bands_guides_and_dn_scale(data_dir):
    hs_ms, hs_pan = _mat(data_dir, "ms"), _mat(data_dir, "pan")
    assert ds.HYPERION_BANDS == tuple(f"H{n:03d}" for n in hs_ms["non_del_bands"].ravel())
    a, b = ds.load_scene("paris_hs_ms"), ds.load_scene("paris_hs_pan")
    assert (a.sensor, a.guide, a.ratio, a.ms.shape, a.pan.shape) == ("Hyperion", "ALI-MS", 1, (72, 72, 128),
                                                                     (72, 72, 9))
    assert (b.sensor, b.guide, b.ratio, b.ms.shape, b.pan.shape) == ("Hyperion", "ALI-PAN", 3, (72, 58, 128),
                                                                     (216, 174))
    np.testing.assert_allclose(a.ms, hs_ms["HSim"] * 1e4, rtol=1e-6)  # DN = value × 10 000
    np.testing.assert_allclose(a.pan, hs_ms["MSim"] * 1e4, rtol=1e-6)
    np.testing.assert_allclose(b.pan, hs_pan["PCim"] * 1e4, rtol=1e-6)
    np.testing.assert_array_equal(b.ms, a.ms[:, 13:71])  # the PAN file's HSim is a crop of the MS file's
    assert max(a.ms.max(), a.pan.max(), b.pan.max()) <= a.full_scale == 2**15 - 1


def test_hs_ms_wald_pair_keeps_the_ms_guide_and_blurs_the_hs_by_three(data_dir):
    s = ds.load_scene("paris_hs_ms")
    (p,) = ds.reduced_resolution_split("hs_ms", "test")
    assert (p.name, p.ratio, p.bands, p.full_scale) == ("paris_hs_ms[c48:72]", 3, ds.HYPERION_BANDS, 32767)
    assert p.gt.shape == p.lms.shape == (72, 24, 128) and p.pan.shape == (72, 24, 9) and p.ms_lr.shape == (24, 8, 128)
    np.testing.assert_array_equal(p.gt, s.ms[:, 48:72])
    np.testing.assert_array_equal(p.pan, s.pan[:, 48:72])  # already on the reference grid: not degraded
    np.testing.assert_allclose(p.ms_lr, decimate(mtf_lowpass(s.ms[:, 48:72], 0.3, 3), 3), rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(p.lms, upsample(p.ms_lr, 3), rtol=1e-5, atol=1e-2)


def test_hs_pan_pairs_and_full_resolution_block(data_dir):
    (train,), (test,) = ds.reduced_resolution_split("hs_pan", "train"), ds.reduced_resolution_split("hs_pan", "test")
    assert train.gt.shape == test.gt.shape == (36, 57, 128) and test.pan.shape == (36, 57)
    assert test.ms_lr.shape == (12, 19, 128)
    (full,) = ds.full_resolution_split("hs_pan")
    assert full.ms.shape == (32, 32, 128) and full.pan.shape == (96, 96)  # D_s blocks of 32 fit
    np.testing.assert_array_equal(full.ms, ds.load_scene("paris_hs_pan").ms[36:68, :32])


@pytest.mark.parametrize("family, axis, cut", [("hs_ms", 1, 48), ("hs_pan", 0, 36)])
def test_test_pixels_never_reach_a_training_pair(data_dir, family, axis, cut):
    (region,) = ds.split_regions(family, "train")
    s = ds.load_scene(region.scene)
    held_out = [slice(None)] * 2
    held_out[axis] = slice(cut, None)
    ms, pan = s.ms.copy(), s.pan.copy()
    ms[tuple(held_out)] = 0.0
    held_out[axis] = slice(cut * s.ratio, None)
    pan[tuple(held_out)] = 1.0
    a = ds.reduced_resolution(s, 3, region)
    b = ds.reduced_resolution(dataclasses.replace(s, ms=ms, pan=pan), 3, region)
    for x, y in ((a.gt, b.gt), (a.pan, b.pan), (a.ms_lr, b.ms_lr)):
        np.testing.assert_array_equal(x, y)


def test_tiny_model_trains_on_hs_ms_patches(data_dir):
    """C = 128, k = 9, ratio 3 through the config, the patch sampler, the loss and back-propagation."""
    torch = pytest.importorskip("torch")
    from ddrf_train.config import ExperimentConfig
    from ddrf_train.diffusion import build_denoiser, training_loss
    from ddrf_train.patches import PatchSampler

    cfg = ExperimentConfig.from_dict({"model": {"preset": "tiny"}, "diffusion": {"timesteps": 20},
                                      "train": {"family": "hs_ms", "patch": 24, "batch": 2}})
    m = cfg.model
    assert (m.bands, m.guide_bands, m.cond_channels, m.wav_channels) == (128, 9, 137, 155)
    sampler = PatchSampler(ds.reduced_resolution_split("hs_ms", "train"), 24, 2, cfg.train.weighting,
                           cfg.diffusion.target, np.random.default_rng(0))
    batch = sampler.next()
    assert batch.cond.shape == (2, 137, 24, 24) and batch.wav.shape == (2, 155, 12, 12)
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    loss = training_loss(model, batch.x0, batch.cond, batch.wav, torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)


def test_fuse_arrays_tiles_a_ratio_three_scene_with_a_nine_band_guide(data_dir, tmp_path):
    spec = ModelSpec(bands=ds.HYPERION_BANDS, guide_bands=9, ratio=3, size_multiple=8, timesteps=10,
                     default_bit_depth=15)
    (p,) = ds.reduced_resolution_split("hs_ms", "test")  # LR 24×8×128, guide 72×24×9
    zero = make_model(tmp_path / "zero.onnx", "zero", spec=spec)
    wav = make_model(tmp_path / "wav.onnx", "wav", spec=spec)
    tiled = FuseOptions(tile=24, overlap=12, steps=1, projections=0)  # tiles: multiples of lcm(8, 3) = 24; 5×1 of them
    out = fuse_arrays(p.ms_lr, p.pan, zero, tiled)
    assert out.shape == (72, 24, 128)
    np.testing.assert_allclose(out, np.clip(p.lms, 0, p.full_scale), rtol=1e-4, atol=0.5)  # zero model: fused = lms
    # A model that reads the wavelet condition only: tiling must not change the result. The default options
    # fit themselves to ratio 3 (tile 504 = 21·24, overlap 66): one padded tile here.
    np.testing.assert_allclose(fuse_arrays(p.ms_lr, p.pan, wav, tiled),
                               fuse_arrays(p.ms_lr, p.pan, wav, FuseOptions(steps=1, projections=0)),
                               rtol=1e-5, atol=0.05)
    grid = make_grid(spec, FuseOptions(), 3000, 3000)
    assert (grid.tile, grid.overlap) == (504, 66)


def test_metrics_on_128_bands(data_dir):
    (p,) = ds.reduced_resolution_split("hs_ms", "test")
    ideal = reduced_resolution_metrics(p.gt, p.gt, 3, p.full_scale)
    assert ideal["SAM"] == pytest.approx(0, abs=1e-3) and ideal["ERGAS"] == 0
    assert ideal["Q2n"] == pytest.approx(1) and ideal["SCC"] == pytest.approx(1) and ideal["PSNR"] == np.inf
    exp = reduced_resolution_metrics(p.gt, p.lms, 3, p.full_scale)
    assert all(np.isfinite(v) for v in exp.values()) and exp["ERGAS"] > 0 and 0 < exp["Q2n"] < 1
    (f,) = ds.full_resolution_split("hs_pan")
    full = full_resolution_metrics(f.lms, f.lms, f.pan, f.sensor, f.ratio)
    assert all(0 <= full[k] <= 1 for k in ("D_lambda", "D_s", "HQNR"))


def _geotiff(path, pixels: np.ndarray, res: float) -> None:
    """(rows, cols[, bands]) DN → an int16 GeoTIFF at ``res`` metres per pixel, all files sharing one origin."""
    import rasterio
    from affine import Affine

    arr = np.rint(pixels if pixels.ndim == 3 else pixels[..., None]).astype(np.int16).transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype="int16", crs="EPSG:32631", transform=Affine(res, 0, 448_000, 0, -res, 5_411_000)) as dst:
        dst.write(arr)


@pytest.mark.parametrize("family", ["hs_ms", "hs_pan"])
def test_ddrf_run_fuses_hyperspectral_geotiffs_with_the_bundled_model(data_dir, tmp_path, cli, family):
    """HS + guide GeoTIFFs at ratio 3 through ``ddrf-run``, which picks the bundled model by the band counts of
    the pair: the 128-band output is the library's ``fuse_arrays`` result (same defaults), on the guide grid,
    with the Hyperion band names."""
    import rasterio

    from ddrf_runtime.datapaths import MODELS_DIR
    from ddrf_runtime.session import Denoiser

    model = MODELS_DIR / f"ddrf_{family}.onnx"
    (p,) = ds.reduced_resolution_split(family, "test")  # LR HS (h, w, 128), guide (3h, 3w[, k])
    _geotiff(tmp_path / "hs.tif", p.ms_lr, 90.0)
    _geotiff(tmp_path / "guide.tif", p.pan, 30.0)
    out = tmp_path / "fused.tif"
    rc, lines = cli(tmp_path / "hs.tif", "--pan", tmp_path / "guide.tif", "-o", out, "--bit-depth", "15", "-q")
    assert (rc, lines) == (0, [])
    with rasterio.open(out) as o:
        fused = o.read().transpose(1, 2, 0)  # (3h, 3w, 128)
        assert o.res == (30.0, 30.0) and o.descriptions == ds.HYPERION_BANDS
    ms_lr, guide = (np.rint(a).astype(np.int16).astype(np.float32) for a in (p.ms_lr, p.pan))
    want = fuse_arrays(ms_lr, guide, Denoiser(model, "cpu"), FuseOptions(bit_depth=15))
    np.testing.assert_allclose(fused, np.clip(np.rint(want), 0, 32767), atol=1)
