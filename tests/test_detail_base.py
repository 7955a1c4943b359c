"""The GLP ratio base (``ddrf_runtime.detail_base``): what it is on real scenes, and that training, the torch
reference and the tiled runtime all add the network's residual to the same image."""
import dataclasses

import numpy as np
import pytest
import rasterio

from ddrf_runtime import datasets
from ddrf_runtime.detail_base import glp_modulation, residual_base
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.metrics import ergas, sam
from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.scene import SceneConfig, fuse_scene
from ddrf_runtime.session import Device
from ddrf_runtime.splits import Region
from ddrf_runtime.target import Base, TargetSpec

from .onnx_fakes import SPEC, make_model
from .test_session_pipeline import reference_lms

GLP = TargetSpec(base=Base.GLP_RATIO)


@pytest.fixture(scope="module")
def osman(data_dir):
    """A 192² Wald pair (PAN and reference) of the Osman demo sensor (11-bit VHR)."""
    return datasets.reduced_resolution("osman", 4, Region("osman", (0, 192), (0, 192)), 4)


def _nchw(pair: datasets.Pair) -> tuple[np.ndarray, np.ndarray]:
    s = pair.full_scale
    return ((pair.lms.transpose(2, 0, 1) / s)[None].astype(np.float32),  # (1, C, H, W)
            (pair.pan / s)[None, None].astype(np.float32))  # (1, 1, H, W)


def test_upsampled_base_is_lms_itself():
    lms, pan = np.ones((1, 4, 8, 8), np.float32), np.ones((1, 1, 8, 8), np.float32)
    assert residual_base(TargetSpec(), lms, pan, 4) is lms


def test_flat_pan_injects_nothing_and_a_pan_gain_cancels():
    flat = np.full((32, 32), 0.4)
    np.testing.assert_allclose(glp_modulation(flat, 4, 0.3), 1.0, rtol=1e-6)
    pan = 0.2 + 0.1 * np.random.default_rng(0).random((32, 32))
    np.testing.assert_allclose(glp_modulation(pan, 4, 0.3), glp_modulation(2.5 * pan, 4, 0.3), rtol=1e-5)


def test_on_a_real_pair_the_base_adds_detail_and_keeps_the_spectral_angles(osman):
    lms, pan = _nchw(osman)
    base = residual_base(GLP, lms, pan, 4)[0].transpose(1, 2, 0) * osman.full_scale  # (H, W, C) DN
    assert ergas(osman.gt, base, 4) < 0.8 * ergas(osman.gt, osman.lms, 4)
    assert sam(osman.gt, base) == pytest.approx(sam(osman.gt, osman.lms), rel=1e-4)


def test_clipped_where_the_low_pass_nears_zero():
    pan = np.zeros((32, 32))
    pan[10:14, 10:14] = 1.0  # a bright block on black: P_LP is ~0 around it
    mod = glp_modulation(pan, 4, 0.3)
    assert np.isfinite(mod).all() and mod.min() >= 0.0 and mod.max() <= 4.0


def test_runtime_tiles_add_the_residual_to_the_whole_scene_base(tmp_path, osman):
    """x0 = 0 returns the base itself: computed per tile with its PAN halo, it is the whole scene's base, seams
    included (scene borders aside, where the two pad differently)."""
    spec = dataclasses.replace(SPEC, target=GLP)
    model = make_model(tmp_path / "zero_glp.onnx", "zero", spec=spec)
    out = fuse_arrays(osman.ms_lr, osman.pan, model, FuseOptions(tile=48, overlap=16, bit_depth=11))
    lms = reference_lms(osman.ms_lr).transpose(2, 0, 1)[None]  # (1, C, H, W), the runtime's scene lms
    pan = (osman.pan / 2047.0)[None, None].astype(np.float32)
    whole = np.clip(residual_base(GLP, lms, pan, 4)[0].transpose(1, 2, 0) * 2047.0, 0, 2047.0)
    inner = (slice(64, -64), slice(64, -64))  # farther from the scene edge than the halo reaches
    np.testing.assert_allclose(out[inner], whole[inner], atol=0.01)
    assert np.abs(out - np.clip(reference_lms(osman.ms_lr) * 2047.0, 0, 2047.0))[inner].mean() > 5.0  # not lms


def test_metadata_round_trip_keeps_the_base():
    spec = dataclasses.replace(SPEC, target=TargetSpec(scale=20.0, base=Base.GLP_RATIO, base_gain=0.25))
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_a_multiband_guide_has_no_glp_base():
    with pytest.raises(ConfigError, match="one-band PAN"):
        residual_base(GLP, np.ones((1, 4, 8, 8), np.float32), np.ones((1, 3, 8, 8), np.float32), 4)


def test_scene_path_reads_the_pan_halo_like_the_array_path(tmp_path, demo_crop):
    """``fuse_scene`` (windowed GeoTIFF reads, strips, COG) gives the in-memory result of a glp-base model."""
    model = make_model(tmp_path / "zero_glp.onnx", "zero", spec=dataclasses.replace(SPEC, target=GLP))
    fuse = FuseOptions(tile=64, overlap=16, bit_depth=11)
    out = tmp_path / "fused.tif"
    fuse_scene(*demo_crop, out, SceneConfig(model=str(model), device=Device.CPU, fuse=fuse, threads=1))
    with rasterio.open(demo_crop[0]) as m, rasterio.open(demo_crop[1]) as p, rasterio.open(out) as o:
        ms, pan, fused = m.read().transpose(1, 2, 0), p.read(1), o.read().transpose(1, 2, 0)
    expected = np.round(fuse_arrays(ms, pan, model, fuse))
    np.testing.assert_allclose(fused, expected, atol=1.0)  # rounding to the output's integers
