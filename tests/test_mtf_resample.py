"""MTF gains and kernels, the 23-tap interpolator, cubic upsampling and Wald degradation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import correlate

from ddrf_runtime.mtf import (convolve_replicate, lowpass_decimate, ms_gains, mtf_kernel, mtf_lowpass, pan_gain,
                              separable_taps)
from ddrf_runtime.resample import CDF23, decimate, interp23tap, upsample, wald_degrade


def _response(kernel: np.ndarray, freq: float) -> float:
    """Amplitude of the kernel's 2-D frequency response at (0, freq) cycles/pixel."""
    half = kernel.shape[1] // 2
    x = np.arange(-half, half + 1)
    return float((kernel * np.cos(2 * np.pi * freq * x)[None, :]).sum())


def _poly(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A cubic with cross terms: what a 23-tap polynomial interpolator must reproduce exactly."""
    return 3.0 + 0.4 * y - 0.25 * x + 0.01 * y * y + 0.02 * x * y - 0.015 * x * x + 3e-4 * y**3 - 2e-4 * x**3


# ---------------------------------------------------------------- gains


def test_gains_in_canonical_order_and_aliases() -> None:
    np.testing.assert_allclose(
        ms_gains("WV3", 8), [0.355, 0.360, 0.365, 0.335, 0.325, 0.350, 0.360, 0.315]
    )  # native C,B,G,Y,R,RE,N1,N2 → B,G,R,N1,C,Y,RE,N2
    np.testing.assert_allclose(ms_gains("WorldView-2", 8), [0.35] * 7 + [0.27])
    np.testing.assert_allclose(ms_gains("QuickBird", 4), [0.34, 0.32, 0.30, 0.22])
    np.testing.assert_allclose(ms_gains("ikonos", 4), [0.26, 0.28, 0.29, 0.28])
    np.testing.assert_allclose(ms_gains("GeoEye1", 4), [0.23] * 4)
    np.testing.assert_allclose(ms_gains("GeoEye-1", 2), [0.23] * 2)
    assert pan_gain("WV3") == 0.14 and pan_gain("wv-2") == 0.11 and pan_gain("GE1") == 0.16
    assert pan_gain("QB") == 0.15 and pan_gain("IKONOS") == 0.17


def test_gains_defaults() -> None:
    np.testing.assert_allclose(ms_gains("L8", 6), [0.3] * 6)
    np.testing.assert_allclose(ms_gains("unknown", 31), [0.3] * 31)
    np.testing.assert_allclose(ms_gains("QB", 6), [0.34, 0.32, 0.30, 0.22, 0.3, 0.3])  # bands beyond the table
    assert pan_gain("L7") == 0.15


# ---------------------------------------------------------------- kernel


@pytest.mark.parametrize(("gnyq", "ratio"), [(0.23, 4), (0.3, 4), (0.11, 4), (0.35, 2), (0.3, 3), (0.27, 8)])
def test_kernel_unit_sum_symmetric_and_matched_at_nyquist(gnyq: float, ratio: int) -> None:
    k = mtf_kernel(gnyq, ratio)
    assert k.shape == (41, 41)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    assert k.argmax() == 20 * 41 + 20
    # The toolbox samples the Gaussian on the 41-point DFT grid, so GNyq sits exactly on bin 20/ratio,
    # i.e. (20/ratio)/41 cycles/pixel; the MS Nyquist 0.5/ratio is a hair further out.
    assert _response(k, 20 / (ratio * 41)) == pytest.approx(gnyq, abs=0.003)
    assert _response(k, 0.5 / ratio) == pytest.approx(gnyq, abs=0.03)
    assert _response(k, 0.5 / ratio) < gnyq


def test_kernel_lower_gain_blurs_more() -> None:
    assert _response(mtf_kernel(0.15, 4), 0.1) < _response(mtf_kernel(0.3, 4), 0.1)
    with pytest.raises(ValueError):
        mtf_kernel(1.2, 4)


def test_lowpass_attenuates_a_nyquist_sinusoid_by_gnyq() -> None:
    ratio, gnyq = 4, 0.23
    freq = 20 / (ratio * 41)
    x = np.arange(256)
    img = np.tile(100.0 + 50.0 * np.cos(2 * np.pi * freq * x), (64, 1))  # (64, 256)
    out = mtf_lowpass(img, gnyq, ratio)
    amp = (out - 100.0)[:, 60:-60] / 50.0 / np.cos(2 * np.pi * freq * x)[60:-60]
    ok = np.abs(np.cos(2 * np.pi * freq * x))[60:-60] > 0.5
    np.testing.assert_allclose(amp[:, ok], gnyq, atol=0.004)


def test_convolve_replicate_matches_direct_correlation() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((37, 29))
    k = mtf_kernel(0.3, 4)
    np.testing.assert_allclose(convolve_replicate(img, k), correlate(img, k, mode="nearest"), atol=1e-12)


def test_lowpass_per_band_gains_dtype_and_constant() -> None:
    rng = np.random.default_rng(2)
    img = rng.random((40, 40, 3)).astype(np.float32)
    out = mtf_lowpass(img, [0.2, 0.3, 0.4], 4)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], mtf_lowpass(img[..., 1], 0.3, 4), rtol=1e-6)
    assert out[..., 0].std() < out[..., 2].std()  # stronger blur (lower gain) removes more variance
    assert mtf_lowpass(img.astype(np.float64), 0.3, 4).dtype == np.float64
    flat = mtf_lowpass(np.full((30, 30), 7, np.uint16), 0.3, 4)
    assert flat.dtype == np.float64
    np.testing.assert_allclose(flat, 7.0, rtol=1e-12)  # replicate border: no darkening at the edges
    with pytest.raises(ValueError):
        mtf_lowpass(img, [0.2, 0.3], 4)


@pytest.mark.parametrize("ratio", [2, 3, 4])
@pytest.mark.parametrize("gnyq", [0.15, 0.23, 0.3, 0.45])
def test_separable_taps_reproduce_the_kernel(gnyq: float, ratio: int) -> None:
    k = mtf_kernel(gnyq, ratio)
    taps = separable_taps(gnyq, ratio)
    assert taps.sum() == pytest.approx(1.0) and np.allclose(taps, taps[::-1])
    assert np.abs(np.outer(taps, taps) - k).max() < 1e-4 * k.max()


@pytest.mark.parametrize(("ratio", "shape"), [(4, (2, 3, 64, 48)), (4, (37, 29)), (3, (5, 30, 33)), (2, (20, 22))])
def test_lowpass_decimate_equals_the_2d_filter_then_decimation(ratio: int, shape: tuple[int, ...]) -> None:
    img = np.random.default_rng(ratio).random(shape).astype(np.float32) * 3.0
    flat = img.reshape((-1,) + shape[-2:])
    expected = np.stack([decimate(convolve_replicate(b, mtf_kernel(0.3, ratio)), ratio) for b in flat])
    out = lowpass_decimate(img, 0.3, ratio)
    assert out.dtype == np.float32 and out.shape == shape[:-2] + (shape[-2] // ratio, shape[-1] // ratio)
    np.testing.assert_allclose(out.reshape(expected.shape), expected, atol=1e-5)
    np.testing.assert_allclose(lowpass_decimate(np.full((16, 20), 7.0), 0.23, 4), 7.0, rtol=1e-6)  # replicate edges


# ---------------------------------------------------------------- interp23tap / upsample


def test_cdf23_is_an_interpolating_half_band_filter() -> None:
    assert CDF23.shape == (23,) and CDF23[11] == 1.0
    np.testing.assert_allclose(CDF23, CDF23[::-1])
    assert np.all(CDF23[11 + 2 :: 2] == 0)
    assert CDF23.sum() == pytest.approx(2.0, abs=1e-8)


@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_interp23tap_constant_and_identity_on_samples(ratio: int) -> None:
    np.testing.assert_allclose(interp23tap(np.full((12, 10, 2), 5.0), ratio), 5.0, rtol=1e-7)
    rng = np.random.default_rng(ratio)
    lr = rng.random((12, 10, 2))
    up = interp23tap(lr, ratio)
    assert up.shape == (12 * ratio, 10 * ratio, 2)  # log2(ratio) doublings, also for ratio 8
    np.testing.assert_array_equal(decimate(up, ratio), lr)


@pytest.mark.parametrize("ratio", [2, 4])
def test_interp23tap_reproduces_cubic_polynomials_on_the_phase_grid(ratio: int) -> None:
    n = 40
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    yh, xh = np.mgrid[0 : ratio * n, 0 : ratio * n].astype(float)
    hr = _poly((yh - ratio // 2) / ratio, (xh - ratio // 2) / ratio)  # LR pixel i sits at ratio·i + ratio//2
    up = interp23tap(_poly(yy, xx), ratio)
    m = 12 * ratio  # circular borders wrap; stay clear of them
    np.testing.assert_allclose(up[m:-m, m:-m], hr[m:-m, m:-m], rtol=1e-6)


def test_interp23tap_recovers_a_decimated_smooth_image() -> None:
    n = 128
    yy, xx = np.mgrid[0:n, 0:n] * (2 * np.pi / n)
    img = 500 + 80 * np.sin(3 * xx + 1.0) * np.cos(2 * yy) + 40 * np.cos(5 * yy - 4 * xx)  # periodic, smooth
    rec = interp23tap(decimate(img, 4), 4)
    assert np.sqrt(np.mean((rec - img) ** 2)) < 1e-3 * img.std()


def test_interp23tap_bands_dtype_and_errors() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((9, 11, 3)).astype(np.float32)
    up = interp23tap(img, 4)
    assert up.dtype == np.float32
    np.testing.assert_allclose(up[..., 2], interp23tap(img[..., 2], 4), rtol=1e-6)
    assert interp23tap(np.ones((4, 4), np.uint8), 2).dtype == np.float64
    with pytest.raises(ValueError):
        interp23tap(img, 3)


def test_upsample_dispatch_and_cubic_ratio3() -> None:
    rng = np.random.default_rng(4)
    lr = rng.random((16, 14, 2))
    np.testing.assert_array_equal(upsample(lr, 4), interp23tap(lr, 4))
    np.testing.assert_array_equal(upsample(lr, 1), lr)
    np.testing.assert_allclose(upsample(np.full((10, 12), 3.0), 3), 3.0, rtol=1e-12)
    # Keys cubic reproduces quadratics exactly, on the same ratio·i + ratio//2 phase.
    n, r = 30, 3
    quad = lambda y, x: 2.0 + 0.3 * y - 0.1 * x + 0.02 * y * y - 0.01 * x * y + 0.015 * x * x  # noqa: E731
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    yh, xh = np.mgrid[0 : r * n, 0 : r * n].astype(float)
    up = upsample(quad(yy, xx), r)
    np.testing.assert_allclose(up[6:-6, 6:-6], quad((yh - 1) / r, (xh - 1) / r)[6:-6, 6:-6], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    ratio=st.sampled_from([2, 3, 4, 5]),
    h=st.integers(2, 12),
    w=st.integers(2, 12),
    seed=st.integers(0, 2**16),
)
def test_decimate_inverts_upsample(ratio: int, h: int, w: int, seed: int) -> None:
    lr = np.random.default_rng(seed).random((h, w, 2))
    up = upsample(lr, ratio)
    assert up.shape == (ratio * h, ratio * w, 2)
    np.testing.assert_allclose(decimate(up, ratio), lr, atol=1e-12)


# ---------------------------------------------------------------- Wald degradation


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_wald_degrade_shapes_and_phase(ratio: int) -> None:
    h, w = 12 * ratio, 10 * ratio
    ms = np.zeros((h, w, 3), np.uint16)
    ms[ratio * 5 + ratio // 2, ratio * 7 + ratio // 2, :] = 1000  # an impulse on a LR sample position
    pan = np.full((ratio * h, ratio * w), 9.0, np.float32)
    ms_lr, pan_lr = wald_degrade(ms, pan, ratio, ms_gains("QB", 3), pan_gain("QB"))
    assert ms_lr.shape == (12, 10, 3) and ms_lr.dtype == np.float64
    assert pan_lr.shape == (h, w) and pan_lr.dtype == np.float32
    np.testing.assert_allclose(pan_lr, 9.0, rtol=1e-6)
    for b in range(3):
        assert np.unravel_index(ms_lr[..., b].argmax(), (12, 10)) == (5, 7)


def test_wald_degrade_multiband_guide_and_errors() -> None:
    rng = np.random.default_rng(5)
    ms = rng.random((24, 24, 4))
    guide = rng.random((72, 72, 3))
    ms_lr, guide_lr = wald_degrade(ms, guide, 3, ms_gains("unknown", 4), ms_gains("unknown", 3))
    assert ms_lr.shape == (8, 8, 4) and guide_lr.shape == (24, 24, 3)
    _, guide_scalar = wald_degrade(ms, guide, 3, 0.3, 0.3)
    np.testing.assert_allclose(guide_lr, guide_scalar)
    with pytest.raises(ValueError):
        wald_degrade(ms, guide[:70], 3, 0.3, 0.3)


def _interp23tap_scipy(img: np.ndarray, ratio: int) -> np.ndarray:
    """The toolbox's form, independently: zero insertion, then scipy's 23-tap correlation per axis (wrap)."""
    from scipy.ndimage import correlate1d

    out = img if np.issubdtype(img.dtype, np.floating) else img.astype(np.float64)
    taps = CDF23.astype(out.dtype)
    for step in range(int(ratio).bit_length() - 1):
        up = np.zeros((2 * out.shape[0], 2 * out.shape[1]) + out.shape[2:], dtype=out.dtype)
        phase = 1 if step == 0 else 0
        up[phase::2, phase::2] = out
        out = correlate1d(correlate1d(up, taps, axis=0, mode="wrap"), taps, axis=1, mode="wrap")
    return out


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 5, 2), (40, 31, 4), (33, 17, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("ratio", [2, 4, 8])
def test_polyphase_interp23tap_equals_scipy_correlation_bit_for_bit(shape, dtype, ratio):
    img = (np.random.default_rng(sum(shape) + ratio).random(shape) * 2047).astype(dtype)
    got, want = interp23tap(img, ratio), _interp23tap_scipy(img, ratio)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
