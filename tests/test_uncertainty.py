"""--samples N: the statistics, the sample noises, the pipeline's mean and spread, the sidecar and its atomicity."""
import dataclasses
import json

import numpy as np
import pytest
import rasterio

import ddrf_runtime.scene as scene_mod
from ddrf_runtime.datapaths import DEMO_DIR, MODELS_DIR
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.pipeline import (FuseOptions, Radiometry, fuse_arrays, fuse_arrays_with_spread, fuse_tiles, make_grid,
                                   sample_tiles)
from ddrf_runtime.sampler import sample_ddim
from ddrf_runtime.schedule import cosine_alphas_cumprod, ddim_timesteps
from ddrf_runtime.session import Denoiser
from ddrf_runtime.tiling import tile_noise
from ddrf_runtime.uncertainty import (SPREAD_HIST_BINS, SpreadSummary, pool_spread, sample_statistics,
                                      spectral_angle_spread, spread_bands)

from .onnx_fakes import SPEC, make_model
from .scenes import FAST_ARGS

FS = 2047.0
BITS = Radiometry(FS, FS)  # DN ÷ full scale: the network unit of these 11-bit tests
NOISY_GAIN = 0.1 / SPEC.target.scale * FS  # DN of fused output per unit of x_t, for the 'noisy' fake at one step


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {kind: make_model(d / f"{kind}.onnx", kind) for kind in ("wav", "noisy")}


def _midrange_scene(h=12, w=20, seed=0):
    """Values far from 0 and full scale, so that no sample is clipped."""
    rng = np.random.default_rng(seed)
    return (rng.integers(700, 1300, (h, w, 4)).astype(np.uint16),
            rng.integers(700, 1300, (4 * h, 4 * w)).astype(np.uint16))


# --- pure statistics, against numpy written out the plain way ---

def test_sample_statistics_match_numpy():
    rng = np.random.default_rng(1)
    samples = rng.uniform(1, 100, (5, 3, 7, 4)).astype(np.float32)  # (N, H, W, C)
    out = sample_statistics(samples)
    assert out.shape == (3, 7, 9) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., :4], samples.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[..., 4:8], samples.var(axis=0, ddof=1), rtol=1e-5)
    mean = samples.astype(np.float64).mean(axis=0)
    angles = np.zeros((3, 7))
    for n in range(5):
        for i in range(3):
            for j in range(7):
                a, b = samples[n, i, j].astype(np.float64), mean[i, j]
                angles[i, j] += np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))) / 5
    np.testing.assert_allclose(out[..., 8], angles, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spread_bands(out[..., 4:], 4)[..., :4], samples.std(axis=0, ddof=1), rtol=1e-5)


def test_spread_edge_cases():
    one = sample_statistics(np.full((1, 2, 2, 3), 5.0, np.float32))  # a single sample: no spread observed
    assert (one[..., 3:6] == 0).all() and (one[..., 6] < 1e-4).all() and (one[..., :3] == 5).all()  # float32 angle
    zeros = np.zeros((3, 2, 2, 3), np.float32)  # zero spectra: angle 0, not NaN
    assert (spectral_angle_spread(zeros, zeros.mean(axis=0)) == 0).all()
    scaled = np.stack([np.ones((2, 2, 3)), 2 * np.ones((2, 2, 3))]).astype(np.float32)  # same direction
    np.testing.assert_allclose(spectral_angle_spread(scaled, scaled.mean(axis=0)), 0, atol=1e-5)


def test_pooling_spreads_a_spike_into_a_gaussian_and_keeps_the_mean_bands():
    channels = np.zeros((2, 21, 21, 2 * 2 + 1), np.float32)  # (n, H, W, 2C + 1), C = 2
    channels[..., :2] = 7.0
    channels[1, 10, 10, 2:] = 1.0  # one pixel of tile 1 spreads
    pooled = pool_spread(channels.copy(), 2, 1.5)
    assert (pooled[..., :2] == 7.0).all() and (pooled[0] == channels[0]).all()  # mean bands, other tile: as they were
    spike = pooled[1, ..., 2]
    assert spike.sum() == pytest.approx(1.0, rel=1e-4)  # pooled, not lost
    assert spike[10, 10] == pytest.approx(1 / (2 * np.pi * 1.5**2), rel=0.05) and spike.max() == spike[10, 10]
    np.testing.assert_allclose(spike, spike.T, atol=1e-7)
    assert (pool_spread(channels.copy(), 2, 0.0) == channels).all()


def test_streamed_summary_matches_numpy():
    rng = np.random.default_rng(2)
    bands = rng.gamma(2.0, 3.0, (40, 50, 2))
    valid = rng.random((40, 50)) > 0.2
    summary = SpreadSummary(["a", "b"], [100.0, 100.0])
    summary.add(bands[:25], valid[:25])  # two strips
    summary.add(bands[25:], valid[25:])
    got, kept = summary.as_dict(), bands[valid]
    assert got["pixels"] == valid.sum()
    for b, name in enumerate("ab"):
        assert got["bands"][name]["mean"] == pytest.approx(kept[:, b].mean())
        assert got["bands"][name]["max"] == pytest.approx(kept[:, b].max())
        for q in (50, 95):  # the q-th percentile lies in the histogram bin just below the value reported
            v, width = got["bands"][name][f"p{q}"], 100.0 / SPREAD_HIST_BINS
            assert np.mean(kept[:, b] <= v) >= q / 100 > np.mean(kept[:, b] <= v - width)


# --- noise streams and the stochastic sampler ---

def test_sample_zero_is_the_historical_noise_and_streams_differ():
    historical = np.random.Generator(np.random.PCG64([3, 64, 128])).standard_normal((2, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(tile_noise(3, 64, 128, (2, 4, 4)), historical)
    np.testing.assert_array_equal(tile_noise(3, 64, 128, (2, 4, 4), 0), historical)
    draws = [tile_noise(3, 64, 128, (2, 4, 4), *s) for s in [(1,), (2,), (0, 1), (1, 1)]]
    for i, a in enumerate([historical, *draws]):
        for b in draws[i:]:
            assert a is b or not np.array_equal(a, b)


def test_eta_zero_is_the_deterministic_sampler_and_eta_adds_the_given_noise():
    a = cosine_alphas_cumprod(50)
    ts = ddim_timesteps(50, 2)
    x = np.full((1, 1, 2, 2), 0.7)
    half = lambda x, t: 0.5 * x  # noqa: E731 - a linear denoiser with a closed form
    np.testing.assert_array_equal(sample_ddim(half, x, ts, a, eta=0.0), sample_ddim(half, x, ts, a))
    z = np.full_like(x, 0.3)
    got = sample_ddim(half, x, ts, a, eta=1.0, noise=lambda i: z)
    t0, t1 = ts
    x0 = 0.5 * x
    eps = (x - np.sqrt(a[t0]) * x0) / np.sqrt(1 - a[t0])
    sigma = np.sqrt((1 - a[t1]) / (1 - a[t0]) * (1 - a[t0] / a[t1]))
    x1 = np.sqrt(a[t1]) * x0 + np.sqrt(1 - a[t1] - sigma**2) * eps + sigma * z
    np.testing.assert_allclose(got, 0.5 * x1)
    with pytest.raises(ValueError, match="noise function"):
        sample_ddim(half, x, ts, a, eta=0.5)


# --- pipeline: exact expectations with the 'noisy' fake (x0 = conditions + 0.1·x_t) ---

def test_samples_mean_and_spread_are_those_of_the_seeded_noises(models):
    """At one step a sample is (noise-free fusion) + NOISY_GAIN·x_t: the mean and std follow from the noises."""
    ms, pan = _midrange_scene()
    plain = FuseOptions(steps=1, bit_depth=11, projections=0)  # the noises as sampled, not back-projected
    base = fuse_arrays(ms, pan, models["wav"], plain)
    one = fuse_arrays(ms, pan, models["noisy"], dataclasses.replace(plain, seed=5))
    mean, spread = fuse_arrays_with_spread(ms, pan, models["noisy"],
                                           dataclasses.replace(plain, seed=5, samples=3, spread_sigma=0))
    noises = np.stack([tile_noise(5, 0, 0, (4, 48, 80), s) for s in range(3)]).transpose(0, 2, 3, 1)  # (N, H, W, C)
    np.testing.assert_allclose(one - base, NOISY_GAIN * noises[0], atol=0.02)  # sample 0: the historical noise
    np.testing.assert_allclose(mean - base, NOISY_GAIN * noises.mean(axis=0), atol=0.02)
    assert spread.shape == (48, 80, 5) and spread.dtype == np.float32
    np.testing.assert_allclose(spread[..., :4], NOISY_GAIN * noises.std(axis=0, ddof=1), atol=0.02)
    samples = base + NOISY_GAIN * noises
    np.testing.assert_allclose(spread[..., 4], spectral_angle_spread(samples, samples.mean(axis=0)), atol=2e-3)


def test_one_sample_is_exactly_the_first_of_sample_tiles(models):
    ms, pan = _midrange_scene()
    den = Denoiser(models["noisy"], "cpu")
    options = FuseOptions(steps=2, tile=32, overlap=8, bit_depth=11)
    grid = make_grid(den.spec, options, *pan.shape)
    tiles = grid.tiles[:3]
    reads = [ms[t.ms.slices] for t in tiles], [pan[t.pan.slices] for t in tiles]
    single = fuse_tiles(grid, tiles, *reads, den, options, radiometry=BITS)
    assert single.shape == (3, 32, 32, 4)
    np.testing.assert_array_equal(single, sample_tiles(grid, tiles, *reads, den, options, radiometry=BITS)[:, 0])
    several = fuse_tiles(grid, tiles, *reads, den, FuseOptions(steps=2, tile=32, overlap=8, samples=2), radiometry=BITS)
    assert several.shape == (3, 32, 32, 4 + 5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_deterministic_per_seed_and_independent_of_batch(models, eta):
    ms, pan = _midrange_scene()

    def run(batch, seed):
        opts = FuseOptions(steps=3, tile=32, overlap=8, batch=batch, seed=seed, samples=3, eta=eta, bit_depth=11)
        return np.concatenate(fuse_arrays_with_spread(ms, pan, models["noisy"], opts), axis=2)
    first = run(1, 7)
    np.testing.assert_array_equal(run(4, 7), first)
    assert not np.array_equal(run(4, 8), first)
    assert (first[..., 4:] > 0).all()


@pytest.mark.parametrize("kwargs", [dict(samples=0), dict(eta=-0.1), dict(eta=1.5), dict(spread_sigma=-1)])
def test_sampling_options_validate(kwargs):
    with pytest.raises(ConfigError, match="must be"):
        FuseOptions(**kwargs)


# --- the bundled model on a real crop: tiled vs one tile ---

def test_spread_is_seamless_across_tiles():
    """The real model, 256² of the demo scene: the spread of 4 samples tiled at 128 (overlap 32) against one
    256² tile. Blending the variances must not add jumps along tile edges, and the level must agree."""
    with rasterio.open(DEMO_DIR / "ms.tif") as m, rasterio.open(DEMO_DIR / "pan.tif") as p:
        ms = m.read(window=((0, 64), (0, 64))).transpose(1, 2, 0)
        pan = p.read(1, window=((0, 256), (0, 256)))
    den = Denoiser(MODELS_DIR / "ddrf_4band.onnx", "cpu", intra_op_threads=1)
    opts = dict(steps=1, samples=4, bit_depth=11, batch=4)
    _, whole = fuse_arrays_with_spread(ms, pan, den, FuseOptions(tile=256, overlap=0, **opts))
    _, tiled = fuse_arrays_with_spread(ms, pan, den, FuseOptions(tile=128, overlap=32, **opts))
    std_whole, std_tiled = np.sqrt((whole[..., :4] ** 2).mean(axis=2)), np.sqrt((tiled[..., :4] ** 2).mean(axis=2))
    assert 0.8 < std_tiled.mean() / std_whole.mean() < 1.25
    assert np.corrcoef(std_tiled.ravel(), std_whole.ravel())[0, 1] > 0.5  # the same places are uncertain
    grid = make_grid(den.spec, FuseOptions(tile=128, overlap=32), 256, 256)
    for axis, start in ((1, "col"), (0, "row")):
        d = np.moveaxis(std_tiled, axis, 0)
        edges = sorted({e for t in grid.tiles for s in [getattr(t.window, start)] for e in (s, s + 128)} - {0, 256})
        jump = lambda idx: float(np.mean((d[idx] - d[[i - 1 for i in idx]]) ** 2))  # noqa: E731
        assert edges and jump(edges) < 2.0 * jump(list(range(1, 256))), (start, jump(edges))


# --- the sidecar of ddrf-run ---

def test_sidecar_bands_grid_report_and_quicklook(tmp_path, demo_crop, fake_models, cli):
    out = tmp_path / "fused.tif"
    rc, err = cli(demo_crop[0], "--pan", demo_crop[1], "-o", out, "--model", fake_models["noisy"], *FAST_ARGS,
                  "--samples", 3, "--report", tmp_path / "r.json", "--quicklook", tmp_path / "q.png")
    assert rc == 0, err
    side = tmp_path / "fused_uncertainty.tif"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif", "fused_uncertainty.tif", "q.png", "r.json"]
    with rasterio.open(out) as o, rasterio.open(side) as u:
        assert (u.crs, u.transform, u.shape) == (o.crs, o.transform, o.shape)
        assert u.count == 5 and set(u.dtypes) == {"float32"} and np.isnan(u.nodata)
        assert u.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        pooled = "pooled over a 1-pixel Gaussian"
        assert u.descriptions == tuple(f"std {b} over 3 samples, {pooled} (output units)" for b in "B G R NIR".split()
                                       ) + (f"mean spectral angle of 3 samples to their mean, {pooled} (degrees)",)
        spread = u.read()
    assert np.isfinite(spread).all() and (spread[:4] > 0).mean() > 0.99 and (spread[4] > 0).mean() > 0.99
    report = json.loads((tmp_path / "r.json").read_text())
    u = report["uncertainty"]
    assert (u["path"], u["samples"], u["pixels"]) == (str(side), 3, 160 * 160)
    assert u["bands"]["std_B"]["mean"] == pytest.approx(float(spread[0].mean()), rel=1e-6)
    assert u["bands"]["angle_deg"]["max"] == pytest.approx(float(spread[4].max()), rel=1e-6)
    from PIL import Image
    with Image.open(tmp_path / "q.png") as png:
        assert png.size == (4 * 128 + 3 * 8, 128)  # MS | PAN | fused | spread of the central 128² crop


def test_one_sample_writes_no_sidecar_and_leaves_an_old_one(tmp_path, demo_crop, fake_models, cli):
    old = tmp_path / "fused_uncertainty.tif"
    old.write_bytes(b"an earlier spread")
    assert cli(demo_crop[0], "--pan", demo_crop[1], "-o", tmp_path / "fused.tif", "--model", fake_models["noisy"],
               *FAST_ARGS)[0] == 0
    assert old.read_bytes() == b"an earlier spread"


def test_existing_sidecar_is_refused_without_overwrite(tmp_path, demo_crop, fake_models, cli):
    old = tmp_path / "fused_uncertainty.tif"
    old.write_bytes(b"an earlier spread")
    rc, err = cli(demo_crop[0], "--pan", demo_crop[1], "-o", tmp_path / "fused.tif", "--model", fake_models["noisy"],
                  *FAST_ARGS, "--samples", 2)
    assert rc == 2 and err == [f"ddrf-run: error: {old}: output exists; pass --overwrite to replace it"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused_uncertainty.tif"]


@pytest.mark.parametrize("failing_call", [1, 2])  # the output's COG conversion, then the sidecar's
def test_no_output_and_no_sidecar_when_writing_fails(tmp_path, demo_crop, fake_models, cli, monkeypatch, failing_call):
    calls, write_cog = [], scene_mod._write_cog

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError(28, "No space left on device")
        write_cog(src, dst)
    monkeypatch.setattr(scene_mod, "_write_cog", flaky)
    rc, err = cli(demo_crop[0], "--pan", demo_crop[1], "-o", tmp_path / "fused.tif", "--model", fake_models["noisy"],
                  *FAST_ARGS, "--samples", 2)
    assert rc == 2 and "nothing was written" in err[-1] and len(calls) == failing_call
    assert list(tmp_path.iterdir()) == []  # no output, no sidecar, no temporaries



def test_sparsification_and_ause_by_hand():
    from benchmarks.uncertainty import FRACTIONS, score_ordering, sparsification
    sq_err = np.array([4.0, 1.0, 0.0, 9.0])
    oracle = sparsification(sq_err, sq_err)
    assert oracle[0] == 1.0 and FRACTIONS[25] == 0.25
    assert oracle[25] == pytest.approx(np.sqrt(5 / 3) / np.sqrt(14 / 4))  # the 9 removed first
    assert oracle[75] == pytest.approx(0.0)  # only the 0 is left
    worst = score_ordering(-sq_err, sq_err, oracle)  # removes the smallest errors first
    assert worst["spearman"] == pytest.approx(-1.0) and worst["rmse_cut_at_10"] == 0.0
    assert worst["ause"] == pytest.approx(np.mean(np.array(worst["curve"]) - oracle), abs=1e-4) and worst["ause"] > 0
