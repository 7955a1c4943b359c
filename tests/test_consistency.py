"""Back-projection onto the MS (``ddrf_runtime.consistency``, ``FuseOptions.projections``): the fused image blurred
and decimated gives back its MS more closely after each step, the PAN's detail stays, and on a real Wald pair a
classical fusion gets closer to the reference."""
import numpy as np
import pytest
from rasterio.windows import Window

from ddrf_runtime.backends import BaseOnly
from ddrf_runtime.consistency import project_onto_ms
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.evaluation import baselines
from ddrf_runtime.evaluation.datasets import reduced_resolution
from ddrf_runtime.evaluation.metrics import reduced_resolution_metrics
from ddrf_runtime.mtf import DEFAULT_MS_GAIN, mtf_lowpass
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.resample import decimate, upsample

from .scenes import crop_demo, read
from .test_trust import HPM_SPEC

R = 4


def _chw(img):  # (H, W, C) → (1, C, H, W)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)


def _ms_error(fused_chw, ms):
    """RMS of decimate(MTF(fused)) − ms, the inconsistency the projection removes."""
    down = decimate(mtf_lowpass(fused_chw[0].transpose(1, 2, 0), DEFAULT_MS_GAIN, R), R)
    return float(np.sqrt(((down - ms) ** 2).mean()))


def _scene():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:128, 0:128] / 128.0
    hr = np.stack([0.3 + 0.2 * np.sin(6 * x + k) * np.cos(5 * y) for k in range(3)], -1)
    hr = hr + 0.05 * rng.normal(size=hr.shape)  # (128, 128, 3): texture the PAN would bring
    ms = decimate(mtf_lowpass(hr, DEFAULT_MS_GAIN, R), R).astype(np.float32)  # (32, 32, 3)
    return hr.astype(np.float32), ms


def test_zero_steps_leave_the_image_as_it_is():
    hr, ms = _scene()
    fused = _chw(hr)
    assert project_onto_ms(fused, _chw(upsample(ms, R)), R, 0) is fused


def test_each_step_brings_the_blurred_image_closer_to_its_ms_and_keeps_the_detail():
    hr, ms = _scene()
    y = np.mgrid[0:128, 0:128][0] / 128.0
    fused = _chw(hr + (0.1 + 0.1 * y)[..., None])  # a smooth bias, as a correction learnt on another sensor adds
    lms = _chw(upsample(ms, R))
    errors = [_ms_error(project_onto_ms(fused, lms, R, k), ms) for k in range(4)]
    assert errors[1] < 0.2 * errors[0]
    assert errors[3] < errors[2] < errors[1]
    detail = fused - _chw(mtf_lowpass(fused[0].transpose(1, 2, 0), 0.9, R))
    moved = project_onto_ms(fused, lms, R, 2)
    moved_detail = moved - _chw(mtf_lowpass(moved[0].transpose(1, 2, 0), 0.9, R))
    assert np.abs(moved_detail - detail)[..., 16:-16, 16:-16].mean() < 0.05 * np.abs(detail).mean()


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_the_steps_summed_on_the_ms_grid_equal_the_steps_taken_one_by_one(steps):
    """The definition, step by step on the PAN grid with the toolbox's 2-D filter, against the one upsampling of
    the shortfalls summed through the round-trip filter: equal away from the borders (each mirrors its own)."""
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:256, 0:256] / 256.0
    hr = np.stack([0.3 + 0.2 * np.sin(9 * x + k) * np.cos(7 * y) for k in range(3)], -1)
    hr = hr + 0.05 * rng.normal(size=hr.shape)  # (256, 256, 3)
    ms = decimate(mtf_lowpass(hr, DEFAULT_MS_GAIN, R), R)  # (64, 64, 3)
    fused = hr + (0.1 + 0.1 * y)[..., None]  # a smooth bias for the steps to take back
    reference = fused
    for _ in range(steps):
        missing = ms - decimate(mtf_lowpass(reference, DEFAULT_MS_GAIN, R), R)  # (64, 64, 3)
        reference = reference + upsample(np.pad(missing, ((12, 12), (12, 12), (0, 0)), mode="symmetric"),
                                         R)[48:-48, 48:-48]
    summed = project_onto_ms(_chw(fused), _chw(upsample(ms, R)), R, steps)[0].transpose(1, 2, 0)
    moved = np.abs(reference - fused)[32:-32, 32:-32].max()
    assert moved > 0.05
    assert np.abs(summed - reference)[32:-32, 32:-32].max() < 1e-5


def test_projection_brings_a_classical_fusion_of_a_real_pair_closer_to_its_reference():
    pair = reduced_resolution("osman", 4)  # the whole Osman scene: 50² LR MS
    fused = baselines.fuse("MTF-GLP-HPM", pair.ms_lr, pair.pan, pair.ratio, pair.sensor).astype(np.float32)
    projected = project_onto_ms(_chw(fused), _chw(pair.lms), pair.ratio, 2)[0].transpose(1, 2, 0)
    before, after = (reduced_resolution_metrics(pair.gt, np.clip(f, 0, pair.full_scale), pair.ratio,
                                                pair.full_scale) for f in (fused, projected))
    assert after["ERGAS"] < 0.98 * before["ERGAS"]
    assert after["SAM"] < before["SAM"]


def test_the_pipeline_projects_each_tile_and_tiles_still_blend_like_one(tmp_path):
    ms_path, pan_path = crop_demo(tmp_path, Window(60, 60, 64, 64))
    ms, pan = read(ms_path).transpose(1, 2, 0).astype(np.float32), read(pan_path)[0].astype(np.float32)  # DN
    base = BaseOnly(HPM_SPEC)
    whole, tiled, off = (fuse_arrays(ms, pan, base, FuseOptions(tile=t, overlap=32, bit_depth=11, projections=k))
                         for t, k in ((256, 2), (128, 2), (256, 0)))
    assert _ms_error(_chw(whole), ms) < 0.5 * _ms_error(_chw(off), ms)
    moved = np.sqrt(((whole - off) ** 2).mean())
    assert np.sqrt(((tiled - whole) ** 2).mean()) < 0.1 * moved


def test_negative_steps_are_refused():
    with pytest.raises(ConfigError, match="projections"):
        FuseOptions(projections=-1)
