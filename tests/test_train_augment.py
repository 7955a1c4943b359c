"""The radiometric jitter lever: off changes nothing; on, it scales a band's lms and gt alike, moves the PAN
relative to the MS, and is reproducible from the sampler's Generator. The MTF lever: Wald copies of a pair through
other MS MTFs. The scale lever: copies on a coarser ground grid. The PAN-response lever: copies whose PAN follows
other bands."""
import numpy as np
import pytest

pytest.importorskip("torch")

from ddrf_runtime.evaluation.datasets import Pair, coarsened, redegrade, reduced_resolution, respectral  # noqa: E402
from ddrf_runtime.errors import ConfigError  # noqa: E402
from ddrf_runtime.evaluation.splits import Region  # noqa: E402
from ddrf_runtime.target import TargetSpec  # noqa: E402
from ddrf_train.augment import jitter  # noqa: E402
from ddrf_train.config import ExperimentConfig, RadiometricConfig, Weighting  # noqa: E402
from ddrf_train.patches import PatchSampler  # noqa: E402


def _crops(seed=0):
    rng = np.random.default_rng(seed)
    lms = rng.uniform(0.1, 0.5, (3, 4, 8, 8)).astype(np.float32)
    gt = (lms + rng.normal(0, 0.02, lms.shape)).astype(np.float32)
    pan = rng.uniform(0.1, 0.5, (3, 1, 8, 8)).astype(np.float32)
    return lms, pan, gt


def test_off_returns_the_crops_and_draws_nothing():
    lms, pan, gt = _crops()
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    base = lms * 1.1
    out = jitter(lms, pan, gt, base, RadiometricConfig(), rng)
    assert all(a is b for a, b in zip(out, (lms, pan, gt, base)))
    assert rng.bit_generator.state == state


def test_band_gain_scales_lms_and_gt_of_a_band_alike():
    lms, pan, gt = _crops()
    base = lms * 1.1
    jl, jp, jg, jb = jitter(lms, pan, gt, base, RadiometricConfig(band_gain=0.3), np.random.default_rng(2))
    factor = jl / lms  # (B, C, P, P): one factor per crop and band
    np.testing.assert_allclose(factor, factor[..., :1, :1] * np.ones_like(factor), rtol=1e-5)
    np.testing.assert_allclose(jg, gt * factor, rtol=1e-5)  # residual gt − lms scaled, not distorted
    np.testing.assert_allclose(jb, base * factor, rtol=1e-5)  # so is the residual relative to the GLP base
    assert np.ptp(factor[:, :, 0, 0]) > 0.05 and np.all(np.abs(np.log(factor)) <= 0.3 + 1e-6)
    np.testing.assert_array_equal(jp, pan)  # the PAN is untouched by a per-band MS gain


def test_gain_and_pan_gain_and_noise_move_the_pan_relative_to_the_ms():
    lms, pan, gt = _crops()
    cfg = RadiometricConfig(gain=0.2, pan_gain=0.2)
    jl, jp, _, _ = jitter(lms, pan, gt, lms, cfg, np.random.default_rng(3))
    ms_f, pan_f = (jl / lms)[:, 0, 0, 0], (jp / pan)[:, 0, 0, 0]
    assert not np.allclose(ms_f, pan_f)  # the PAN's own factor on top of the common gain
    assert np.all(np.abs(np.log(pan_f / ms_f)) <= 0.2 + 1e-6)
    _, noisy, _, _ = jitter(lms, pan, gt, lms, RadiometricConfig(pan_noise=0.05), np.random.default_rng(4))
    rel = (noisy - pan).std() / pan.mean()
    assert 0.03 < rel < 0.07
    again = jitter(lms, pan, gt, lms, cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(again[1], jp)  # reproducible from the Generator


def test_sampler_applies_the_configured_jitter():
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 900, (32, 32, 4)).astype(np.float32)
    pair = Pair("p", "WV2", 11, ("B", "G", "R", "NIR"), 4, gt * 0.98, gt.mean(-1), gt, gt[::4, ::4])
    target = TargetSpec(residual=True, scale=20.0)
    plain = PatchSampler([pair], 16, 4, Weighting.PAIR, target, np.random.default_rng(5)).next()
    cfg = ExperimentConfig.from_dict({"train": {"patch": 16}, "augment": {"band_gain": 0.3}}).augment
    jittered = PatchSampler([pair], 16, 4, Weighting.PAIR, target, np.random.default_rng(5), cfg).next()
    ratio = (jittered.gt / plain.gt).numpy()  # same crops (the jitter draws after them), scaled per band
    assert not np.allclose(ratio, 1.0)
    np.testing.assert_allclose((jittered.lms / plain.lms).numpy(), ratio, rtol=1e-4)
    np.testing.assert_array_equal(jittered.pan.numpy(), plain.pan.numpy())


# --- the MTF lever: Wald copies through other MTFs ---


def test_redegrade_at_the_sensors_gains_is_the_pair_and_sharper_gains_keep_more_detail(data_dir):
    pair = reduced_resolution("osman", 4, Region("osman", (0, 128), (0, 128)), 4)
    same = redegrade(pair, np.ones(4))
    np.testing.assert_allclose(same.ms_lr, pair.ms_lr, rtol=1e-5, atol=1e-3)
    sharp, blunt = redegrade(pair, np.full(4, 1.5)), redegrade(pair, np.full(4, 0.6))
    err = {k: float(np.abs(p.lms - pair.gt).mean()) for k, p in (("sharp", sharp), ("nominal", pair),
                                                                     ("blunt", blunt))}
    assert err["sharp"] < err["nominal"] < err["blunt"]  # a sharper MS MTF leaves less for the network to add
    np.testing.assert_array_equal(sharp.pan, pair.pan)
    assert sharp.name != pair.name and sharp.sensor == pair.sensor


def test_sampler_adds_mtf_copies_that_share_their_pairs_weight():
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 900, (32, 32, 4)).astype(np.float32)
    pairs = [Pair(n, s, 11, ("B", "G", "R", "NIR"), 4, gt * 0.98, gt.mean(-1), gt, gt[::4, ::4])
             for n, s in (("a", "WV2"), ("b", "GE1"))]
    cfg = ExperimentConfig.from_dict({"train": {"patch": 16}, "degrade": {"mtf_copies": 2, "mtf_spread": 0.3}})
    sampler = PatchSampler(pairs, 16, 4, Weighting.SENSOR, TargetSpec(), np.random.default_rng(5), cfg.augment,
                           cfg.degrade)
    assert [s.name.split("@")[0] for s in sampler.scenes] == ["a"] * 3 + ["b"] * 3
    np.testing.assert_allclose(sampler.probs, 1 / 6)
    assert not np.allclose(sampler.scenes[1].lms, sampler.scenes[0].lms)  # a copy's MS differs


def test_degrade_config_is_checked():
    with pytest.raises(ConfigError, match="degrade.mtf_spread"):
        ExperimentConfig.from_dict({"degrade": {"mtf_spread": 1.5}})
    with pytest.raises(ConfigError, match="degrade.mtf_copies"):
        ExperimentConfig.from_dict({"degrade": {"mtf_copies": -1}})
    with pytest.raises(ConfigError, match="degrade.coarse_copies"):
        ExperimentConfig.from_dict({"degrade": {"coarse_copies": -1}})


# --- the scale lever: copies on a coarser grid ---


def test_coarsened_pair_is_a_wald_pair_of_the_same_ground_at_half_the_sampling(data_dir):
    pair = reduced_resolution("osman", 4, Region("osman", (0, 128), (0, 100)), 4)  # gt (100, 128, 4)
    half = coarsened(pair, 2)
    assert (half.name, half.gt.shape, half.pan.shape, half.ms_lr.shape) == (
        "osman[r0:100,c0:128]@1/2", (48, 64, 4), (48, 64), (12, 16, 4))
    assert half.ratio == pair.ratio and half.sensor == pair.sensor
    # the low-pass keeps the mean radiometry, and the copy is smoother than plain subsampling of the same ground
    np.testing.assert_allclose(half.gt.mean((0, 1)), pair.gt[:96].mean((0, 1)), rtol=0.01)
    step = {k: float(np.abs(np.diff(a, axis=1)).mean()) for k, a in (("low-passed", half.gt),
                                                                      ("subsampled", pair.gt[:96:2, ::2]))}
    assert step["low-passed"] < 0.9 * step["subsampled"]


def test_sampler_adds_coarse_copies_only_where_they_stay_large_enough():
    rng = np.random.default_rng(0)
    pairs = [Pair(n, "WV2", 11, ("B", "G", "R", "NIR"), 4, g * 0.98, g.mean(-1), g, g[::4, ::4])
             for n, g in (("big", rng.uniform(100, 900, (64, 64, 4)).astype(np.float32)),
                          ("small", rng.uniform(100, 900, (16, 16, 4)).astype(np.float32)))]
    cfg = ExperimentConfig.from_dict({"train": {"patch": 16}, "degrade": {"coarse_copies": 2}})
    sampler = PatchSampler(pairs, 16, 4, Weighting.SENSOR, TargetSpec(), np.random.default_rng(5), cfg.augment,
                           cfg.degrade)
    assert [(s.name, s.shape) for s in sampler.scenes] == [
        ("big", (64, 64)), ("big@1/2", (32, 32)), ("big@1/4", (16, 16)), ("small", (16, 16))]


# --- the PAN spectral-response lever: copies whose PAN follows other bands ---


def test_respectral_mixes_a_band_combination_into_the_pan_at_the_pans_mean_and_contrast(data_dir):
    pair = reduced_resolution("osman", 4, Region("osman", (0, 128), (0, 128)), 4)
    np.testing.assert_allclose(respectral(pair, np.ones(4), 0.0).pan, pair.pan, rtol=1e-6)
    nir = respectral(pair, np.array([0.0, 0.0, 0.0, 1.0]), 1.0)  # a PAN that is the NIR band, rescaled
    assert abs(nir.pan.mean() - pair.pan.mean()) < 1e-3 * pair.pan.mean()
    assert abs(nir.pan.std() - pair.pan.std()) < 1e-3 * pair.pan.std()
    corr = {k: np.corrcoef(p.pan.ravel(), pair.gt[..., 3].ravel())[0, 1] for k, p in (("real", pair), ("nir", nir))}
    assert corr["nir"] > 0.999 > corr["real"]
    half = respectral(pair, np.array([0.0, 0.0, 0.0, 1.0]), 0.5)
    assert corr["real"] < np.corrcoef(half.pan.ravel(), pair.gt[..., 3].ravel())[0, 1] < corr["nir"]
    np.testing.assert_array_equal(half.gt, pair.gt)  # only the PAN changes
    np.testing.assert_array_equal(half.lms, pair.lms)
    assert half.name != pair.name and half.sensor == pair.sensor


def test_respectral_needs_a_one_band_pan():
    gt = np.ones((8, 8, 4), np.float32)
    pair = Pair("hs", "HS", 12, ("B", "G", "R", "NIR"), 4, gt, np.ones((8, 8, 2), np.float32), gt, gt[::4, ::4])
    with pytest.raises(ConfigError, match="hs: .*1-band PAN"):
        respectral(pair, np.ones(4), 0.5)


def test_sampler_adds_pan_copies_whose_pan_alone_differs():
    rng = np.random.default_rng(0)
    gt = rng.uniform(100, 900, (32, 32, 4)).astype(np.float32)
    pair = Pair("a", "WV2", 11, ("B", "G", "R", "NIR"), 4, gt * 0.98, gt.mean(-1), gt, gt[::4, ::4])
    cfg = ExperimentConfig.from_dict({"train": {"patch": 16},
                                      "degrade": {"pan_copies": 2, "pan_mix": 0.5, "pan_tilt": 1.0}})
    sampler = PatchSampler([pair], 16, 4, Weighting.SENSOR, TargetSpec(), np.random.default_rng(5), cfg.augment,
                           cfg.degrade)
    first, *copies = sampler.scenes
    assert len(copies) == 2 and all(c.name.startswith("a@pan0.50[") for c in copies)
    assert not np.allclose(copies[0].pan, first.pan) and not np.allclose(copies[0].pan, copies[1].pan)
    assert all(np.array_equal(c.gt, first.gt) and np.array_equal(c.lms, first.lms) for c in copies)
    with pytest.raises(ConfigError, match="degrade.pan_mix"):
        ExperimentConfig.from_dict({"degrade": {"pan_mix": 1.5}})
    with pytest.raises(ConfigError, match="degrade.pan_copies"):
        ExperimentConfig.from_dict({"degrade": {"pan_copies": -1}})
