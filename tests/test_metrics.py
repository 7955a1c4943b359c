"""Metrics: ideal values, analytic cases, sewar as an oracle for SAM/ERGAS, first-principles Q2ⁿ/Q/SCC/D_s."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from sewar import full_ref

from ddrf_runtime.evaluation import metrics as m
from ddrf_runtime.errors import InputError

RNG = np.random.default_rng(1234)


@pytest.fixture(scope="module")
def wv2(data_dir):
    """Real WorldView-2 scene (GRIP PNN demo): MS 320×320×8 and PAN 1280×1280, uint16 11-bit, as float64."""
    mat = scipy.io.loadmat(data_dir / "mat" / "grip_pnn" / "imgWV2.mat")
    return mat["I_MS"].astype(np.float64), mat["I_PAN"].astype(np.float64)


@pytest.fixture(scope="module")
def wv2_blurred(wv2):
    """A plausible 'fused' image: the MS slightly blurred plus noise, kept on the uint16 grid."""
    ms = wv2[0]
    out = ndimage.gaussian_filter(ms, (1.0, 1.0, 0.0)) + RNG.normal(0.0, 5.0, ms.shape)
    return np.clip(np.round(out), 0, 2047)


# ---------------------------------------------------------------- independent hypercomplex oracles


def _complex_mult(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    a, b = x[..., 0], x[..., 1]
    c, d = y[..., 0], y[..., 1]
    return np.stack([a * c - b * d, a * d + b * c], axis=-1)


def _hamilton(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Textbook quaternion product; the toolbox's differs only in the sign of the k part, not in modulus."""
    a1, b1, c1, d1 = np.moveaxis(x, -1, 0)
    a2, b2, c2, d2 = np.moveaxis(y, -1, 0)
    return np.stack([
        a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
    ], axis=-1)


def _bar(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[..., :1], -x[..., 1:]], axis=-1)


def _toolbox_onion(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The toolbox's onion_mult written out as its recursion (with its N = 2 special case)."""
    n = x.shape[-1]
    if n == 1:
        return x * y
    h = n // 2
    a, b, c, d = x[..., :h], _bar(x[..., h:]), y[..., :h], _bar(y[..., h:])
    if n == 2:
        return np.concatenate([a * c - d * b, a * d + c * b], axis=-1)
    return np.concatenate([_toolbox_onion(a, c) - _toolbox_onion(d, _bar(b)),
                           _toolbox_onion(_bar(a), d) + _toolbox_onion(c, b)], axis=-1)


def _block_q_oracle(ref: np.ndarray, fus: np.ndarray, mult) -> float:
    """Q2ⁿ of one block (P×N, already on the uint16 grid) straight from the definition, any product."""
    p = ref.shape[0]
    mu, sd = ref.mean(0), ref.std(0, ddof=1)
    sd[sd == 0] = np.finfo(float).eps
    x = (ref - mu) / sd + 1
    y = _bar((fus - mu) / np.where(mu == 0, 1.0, sd) + 1)
    mx, my = x.mean(0), y.mean(0)
    cov = p / (p - 1) * (mult(x, y).mean(0) - mult(mx, my))
    var = p / (p - 1) * ((x**2).sum(1).mean() - mx @ mx + (y**2).sum(1).mean() - my @ my)
    return 4 * np.linalg.norm(cov) * np.linalg.norm(mx) * np.linalg.norm(my) / (var * (mx @ mx + my @ my))


def _blocks_q_oracle(ref: np.ndarray, fus: np.ndarray, size: int, mult) -> float:
    """Mean of the oracle over non-overlapping size×size blocks of H×W×N images (sides multiples of size)."""
    vals = [
        _block_q_oracle(ref[i:i + size, j:j + size].reshape(-1, ref.shape[2]),
                        fus[i:i + size, j:j + size].reshape(-1, ref.shape[2]), mult)
        for i in range(0, ref.shape[0], size) for j in range(0, ref.shape[1], size)
    ]
    return float(np.mean(vals))


def _int_pair(shape: tuple[int, ...], noise: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    ref = RNG.integers(100, 1500, shape).astype(np.float64)
    return ref, np.clip(np.round(ref + RNG.normal(0, noise, shape)), 0, None)


# ---------------------------------------------------------------- ideal values and errors


def test_identical_images_give_ideal_values(wv2):
    ms = wv2[0][:96, :96]
    assert m.sam(ms, ms) == pytest.approx(0.0, abs=1e-6)
    assert m.ergas(ms, ms, 4) == 0.0
    assert m.q2n(ms, ms) == pytest.approx(1.0, abs=1e-12)
    assert m.q_index(ms, ms) == pytest.approx(1.0, abs=1e-12)
    assert m.scc(ms, ms) == pytest.approx(1.0, abs=1e-12)
    assert m.psnr(ms, ms, 2047) == math.inf


def test_inputs_are_validated():
    a = np.ones((32, 32, 4))
    with pytest.raises(InputError, match="shape mismatch"):
        m.sam(a, np.ones((32, 32, 3)))
    with pytest.raises(InputError, match="H×W"):
        m.ergas(np.ones(5), np.ones(5), 4)
    with pytest.raises(InputError, match="multiples of the block size"):
        m.d_s(np.ones((40, 32, 4)), np.ones((40, 32, 4)), np.ones((40, 32)), 4)


# ---------------------------------------------------------------- SAM / ERGAS / PSNR


def test_sam_and_ergas_match_sewar_on_real_data(wv2, wv2_blurred):
    ms = wv2[0]
    assert m.sam(ms, wv2_blurred) == pytest.approx(np.degrees(full_ref.sam(ms, wv2_blurred)), rel=1e-10)
    # sewar's r is the inverse ratio: ergas(..., r=1/4) is the toolbox ERGAS at ratio 4.
    assert m.ergas(ms, wv2_blurred, 4) == pytest.approx(full_ref.ergas(ms, wv2_blurred, r=0.25), rel=1e-10)
    assert 0.5 < m.sam(ms, wv2_blurred) < 20 and 0.5 < m.ergas(ms, wv2_blurred, 4) < 20


def test_constant_scaling_keeps_sam_zero_and_gives_analytic_ergas(wv2):
    ms = wv2[0][:64, :64]
    s = 1.1
    assert m.sam(ms, s * ms) == pytest.approx(0.0, abs=1e-6)
    rel_power = (ms**2).mean(axis=(0, 1)) / ms.mean(axis=(0, 1)) ** 2
    assert m.ergas(ms, s * ms, 4) == pytest.approx(25 * (s - 1) * np.sqrt(rel_power.mean()), rel=1e-12)
    flat = np.full((8, 8, 3), [100.0, 200.0, 300.0])
    assert m.ergas(flat, 0.9 * flat, 2) == pytest.approx(50 * 0.1, rel=1e-12)


def test_band_swap_analytic_sam_and_ergas():
    a, b = 3.0, 1.0
    ref = np.broadcast_to([a, b], (4, 4, 2))
    swapped = ref[..., ::-1]
    assert m.sam(ref, swapped) == pytest.approx(np.degrees(np.arccos(2 * a * b / (a * a + b * b))), rel=1e-12)
    expected = 100 / 4 * abs(a - b) * np.sqrt((1 / a**2 + 1 / b**2) / 2)
    assert m.ergas(ref, swapped, 4) == pytest.approx(expected, rel=1e-12)
    orthogonal = np.zeros((2, 2, 3))
    orthogonal[..., 0] = 1.0
    assert m.sam(orthogonal, np.roll(orthogonal, 1, axis=2)) == pytest.approx(90.0)


def test_sam_leaves_out_zero_pixels():
    ref = RNG.uniform(1, 10, (6, 6, 4))
    fused = ref + RNG.normal(0, 1, ref.shape)
    holed_ref, holed_fused = ref.copy(), fused.copy()
    holed_ref[0, :3] = 0.0
    holed_fused[5, 5] = 0.0
    keep = np.ones((6, 6), bool)
    keep[0, :3] = keep[5, 5] = False
    expected = m.sam(ref[keep][None], fused[keep][None])
    assert m.sam(holed_ref, holed_fused) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(m.sam(np.zeros((2, 2, 3)), fused[:2, :2, :3]))


def test_psnr_per_band_average():
    ref = np.full((4, 4, 2), 500.0)
    fused = ref + np.array([10.0, 40.0])
    expected = np.mean([20 * np.log10(1000 / 10), 20 * np.log10(1000 / 40)])
    assert m.psnr(ref, fused, 1000) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- Q2ⁿ


@pytest.mark.parametrize(("bands", "mult"), [(1, np.multiply), (2, _complex_mult), (4, _hamilton)])
def test_q2n_matches_textbook_algebra_on_tiny_blocks(bands, mult):
    ref, fused = _int_pair((16, 16, bands))
    assert m.q2n(ref, fused, block_size=8, shift=8) == pytest.approx(_blocks_q_oracle(ref, fused, 8, mult), rel=1e-12)


def test_q8_matches_toolbox_recursion_on_real_data(wv2, wv2_blurred):
    ref, fused = wv2[0][:32, :32], wv2_blurred[:32, :32]
    expected = _blocks_q_oracle(ref, fused, 16, _toolbox_onion)
    assert m.q2n(ref, fused, block_size=16, shift=16) == pytest.approx(expected, rel=1e-12)
    q8 = m.q2n(wv2[0], wv2_blurred)
    assert 0.6 < q8 < 1.0
    assert m.q2n(wv2[0], ndimage.gaussian_filter(wv2[0], (2.0, 2.0, 0.0))) < q8


def test_q2n_single_block_hand_computed():
    """One 2×2 block, 2 bands: Q2 with Python complex numbers z = band0 + i·band1 after normalisation."""
    ref = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 9]]], dtype=float).reshape(4, 2)
    fused = ref + np.array([[1, 0], [0, 1], [0, 0], [1, 0]])
    mu, sd = ref.mean(0), ref.std(0, ddof=1)
    x, y = ((ref - mu) / sd + 1) @ [1, 1j], ((fused - mu) / sd + 1) @ [1, 1j]
    cov = np.mean(x * np.conj(y)) - x.mean() * np.conj(y.mean())  # N/(N−1) factors cancel
    mx, my = abs(x.mean()), abs(y.mean())
    expected = 4 * abs(cov) * mx * my / ((np.var(x) + np.var(y)) * (mx**2 + my**2))
    got = m.q2n(ref.reshape(2, 2, 2), fused.reshape(2, 2, 2), block_size=2, shift=2)
    assert got == pytest.approx(expected, rel=1e-12)


def test_q2n_constant_offset_is_the_mean_bias_term():
    """f = g + c per band: covariance = variance, so each block scores 2|m1||m2|/(|m1|²+|m2|²)."""
    ref, _ = _int_pair((32, 32, 4))
    offsets = np.array([30.0, -20.0, 0.0, 50.0])
    m2 = 1 + offsets / ref.reshape(-1, 4).std(0, ddof=1)
    expected = 2 * np.sqrt(4 * (m2 @ m2)) / (4 + m2 @ m2)
    assert m.q2n(ref, ref + offsets) == pytest.approx(expected, rel=1e-12)


def test_q2n_rounds_to_uint16_like_matlab():
    ref, fused = _int_pair((32, 32, 4))
    base = m.q2n(ref, fused)
    assert m.q2n(ref + 0.3, fused - 0.4) == base
    assert m.q2n(ref, fused + 0.5) == m.q2n(ref, fused + 1.0)  # half rounds away from zero
    shifted = fused - 1000.0
    assert m.q2n(ref, shifted) == m.q2n(ref, np.clip(shifted, 0, None))  # negatives saturate to 0


def test_q2n_mirror_pads_right_and_bottom():
    ref, fused = _int_pair((40, 36, 4))
    rows = np.r_[0:40, 39:15:-1]  # MATLAB: x(N:-1:N-est+1) appended, edge sample repeated
    cols = np.r_[0:36, 35:7:-1]
    padded = lambda a: a[rows][:, cols]  # noqa: E731
    assert m.q2n(ref, fused) == pytest.approx(m.q2n(padded(ref), padded(fused)), rel=1e-14)


def test_q2n_pads_bands_with_zeros_to_a_power_of_two():
    ref, fused = _int_pair((16, 16, 3))
    zero = np.zeros((16, 16, 1))
    ref4, fused4 = np.concatenate([ref, zero], 2), np.concatenate([fused, zero], 2)
    q3 = m.q2n(ref, fused, block_size=8, shift=8)
    assert q3 == pytest.approx(_blocks_q_oracle(ref4, fused4, 8, _hamilton), rel=1e-12)
    assert q3 == m.q2n(ref4, fused4, block_size=8, shift=8)


def test_q2n_keeps_the_toolbox_quirk_for_zero_mean_reference_bands():
    """A reference band that is 0 over a block: the fused band is shifted by +1 but not divided by eps."""
    ref, fused = _int_pair((8, 8, 4))
    ref[..., 3] = 0.0
    fused[..., 3] = RNG.integers(0, 3, (8, 8))
    q = m.q2n(ref, fused, block_size=8, shift=8)
    assert q == pytest.approx(_blocks_q_oracle(ref, fused, 8, _hamilton), rel=1e-12)
    assert q > 0.5


def test_q2n_hyperspectral_100_bands_padded_to_128():
    ref, fused = _int_pair((64, 64, 100), noise=60.0)
    assert m.q2n(ref, ref) == pytest.approx(1.0, abs=1e-10)
    assert 0.5 < m.q2n(ref, fused) < 1.0


def test_onion_table_reproduces_the_toolbox_recursion():
    for n in (2, 4, 8, 16):
        x, y = RNG.normal(size=(2, n))
        assert np.allclose(m._onion_product(np.outer(x, y)), _toolbox_onion(x, y), rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(n=st.sampled_from([2, 4, 8]), data=st.data())
def test_onion_product_is_norm_multiplicative_up_to_8(n, data):
    """Composition algebra up to octonions, which is what keeps Q2ⁿ ≤ 1."""
    vec = arrays(np.float64, n, elements=st.floats(-10, 10))
    x, y = data.draw(vec), data.draw(vec)
    prod = m._onion_product(np.outer(x, y))
    assert np.linalg.norm(prod) == pytest.approx(np.linalg.norm(x) * np.linalg.norm(y), rel=1e-9, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(bands=st.integers(1, 8), data=st.data())
def test_q2n_bounded(bands, data):
    img = arrays(np.float64, (8, 8, bands), elements=st.integers(0, 300).map(float))
    q = m.q2n(data.draw(img), data.draw(img), block_size=8, shift=8)
    assert 0.0 <= q <= 1.0 + 1e-9


# ---------------------------------------------------------------- sliding-window Q


def test_q_index_matches_brute_force_windows(wv2, wv2_blurred):
    ref, fused = wv2[0][:40, :40, :3], wv2_blurred[:40, :40, :3]
    per_band = []
    for b in range(3):
        xs = sliding_window_view(ref[..., b], (32, 32)).reshape(-1, 1024)
        ys = sliding_window_view(fused[..., b], (32, 32)).reshape(-1, 1024)
        q = [4 * np.cov(x, y)[0, 1] * x.mean() * y.mean()
             / ((x.var(ddof=1) + y.var(ddof=1)) * (x.mean() ** 2 + y.mean() ** 2)) for x, y in zip(xs, ys)]
        per_band.append(np.mean(q))
    assert m.q_index(ref, fused) == pytest.approx(np.mean(per_band), rel=1e-9)


def test_q_index_constant_offset_and_flat_windows():
    ref = RNG.integers(100, 200, (34, 33, 1)).astype(float)
    mu = sliding_window_view(ref[..., 0], (32, 32)).mean(axis=(2, 3))
    c = 25.0
    assert m.q_index(ref, ref + c) == pytest.approx(np.mean(2 * mu * (mu + c) / (mu**2 + (mu + c) ** 2)), rel=1e-12)
    flat = np.full((32, 32, 1), 10.0)
    assert m.q_index(flat, flat) == 1.0  # 0/0 windows follow Wang's convention
    assert m.q_index(flat, 3 * flat) == pytest.approx(2 * 10 * 30 / (10**2 + 30**2))


# ---------------------------------------------------------------- SCC


def test_scc_hand_computed_tiny():
    ref = RNG.integers(0, 9, (6, 5, 2)).astype(float)
    fused = RNG.integers(0, 9, (6, 5, 2)).astype(float)

    def grad(img):  # interior 4×3, zero outside it, explicit Sobel sums
        core = np.pad(img[1:-1, 1:-1], ((1, 1), (1, 1), (0, 0)))
        out = np.zeros((4, 3, 2))
        for i in range(4):
            for j in range(3):
                w = core[i:i + 3, j:j + 3]
                gy = w[0, 0] + 2 * w[0, 1] + w[0, 2] - w[2, 0] - 2 * w[2, 1] - w[2, 2]
                gx = w[0, 0] + 2 * w[1, 0] + w[2, 0] - w[0, 2] - 2 * w[1, 2] - w[2, 2]
                out[i, j] = np.sqrt(gx**2 + gy**2)
        return out

    gr, gf = grad(ref), grad(fused)
    expected = (gr * gf).sum() / np.sqrt((gr**2).sum() * (gf**2).sum())
    assert m.scc(ref, fused) == pytest.approx(expected, rel=1e-12)


def test_scc_properties_on_real_data(wv2, wv2_blurred):
    ms = wv2[0][:128, :128]
    assert m.scc(ms, 2.5 * ms) == pytest.approx(1.0, abs=1e-12)  # uncentred cosine: gain-invariant
    assert m.scc(ms, ms + 100.0) < 0.999  # zero padding sees the offset at the border
    assert 0.5 < m.scc(ms, wv2_blurred[:128, :128]) < 0.99
    assert m.scc(ms, np.roll(ms, 3, axis=1)) < m.scc(ms, np.roll(ms, 1, axis=1)) < 1.0


# ---------------------------------------------------------------- full resolution


def test_imresize_down_preserves_constants_and_ramps():
    h, w = 40, 24
    ramp = np.broadcast_to(np.arange(h, dtype=float)[:, None, None], (h, w, 1))
    out = m._imresize_down(ramp, 4)
    assert out.shape == (10, 6, 1)
    # Block centres 4i + 1.5, exact where the 16-tap kernel stays inside the image.
    assert np.allclose(out[2:-2, :, 0], (4 * np.arange(2, 8) + 1.5)[:, None], atol=1e-12)
    assert np.allclose(m._imresize_down(np.full((16, 12, 2), 7.0), 4), 7.0, atol=1e-12)
    sym = RNG.normal(size=(16, 16, 1))
    sym = sym + sym[::-1]  # mirror-symmetric input → mirror-symmetric output
    assert np.allclose(m._imresize_down(sym, 4)[::-1], m._imresize_down(sym, 4), atol=1e-12)


def test_imresize_down_matches_matlab_antialiased_bicubic_weights():
    """MATLAB imresize(x, 1/4): output i centres on 4i + 1.5 with 16 taps cubic(d/4), d = ±0.5 … ±7.5,
    normalised, over a symmetric (edge-repeating) extension of the input."""
    def cubic(t):
        t = abs(t)
        return (1.5 * t**3 - 2.5 * t**2 + 1) if t <= 1 else (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2) if t <= 2 else 0.0

    offsets = np.arange(-7.5, 8.0)  # (16,) centre minus tap position
    weights = np.array([cubic(d / 4) for d in offsets])
    weights /= weights.sum()
    x = RNG.normal(size=40)
    ext = np.pad(x, 16, mode="symmetric")
    expected = [sum(w * ext[int(16 + 4 * i + 1.5 - d)] for w, d in zip(weights, offsets)) for i in range(10)]
    img = np.broadcast_to(x[:, None, None], (40, 8, 1))
    out = m._imresize_down(img, 4)
    assert out.shape == (10, 2, 1)
    assert np.allclose(out[:, 0, 0], expected, rtol=0, atol=1e-12)
    assert np.allclose(out[:, 1, 0], expected, rtol=0, atol=1e-12)


def test_d_s_is_zero_when_fused_relates_to_pan_as_lms_to_pan_lp(wv2):
    pan = wv2[1][:128, :128]
    fused = np.repeat(pan[..., None], 4, axis=2)
    lms = np.repeat(m._guide_lowpass(pan[..., None], 4), 4, axis=2)
    assert m.d_s(fused, lms, pan, 4) == pytest.approx(0.0, abs=1e-12)
    assert m.d_s(fused, lms, pan[..., None], 4) == pytest.approx(0.0, abs=1e-12)  # 1-band guide as H×W×1


@pytest.fixture(scope="module")
def full_res(wv2):
    """A real full-resolution case: 4 MS bands on a 256² PAN crop; 'EXP' (the upsampled MS) as the fusion."""
    from ddrf_runtime.resample import interp23tap

    ms, pan = wv2[0][:64, :64, :4], wv2[1][:256, :256]
    return interp23tap(ms, 4), pan


def test_d_lambda_is_zero_for_spectrally_consistent_fusion(full_res):
    from ddrf_runtime.mtf import ms_gains, mtf_lowpass

    lms, pan = full_res
    fused = lms + 0.3 * (pan - pan.mean())[..., None]
    consistent_lms = mtf_lowpass(fused, ms_gains("WV2", 4), 4)
    assert m.d_lambda(fused, consistent_lms, "WV2", 4) == pytest.approx(0.0, abs=1e-12)
    swapped = fused[..., [2, 1, 0, 3]]
    assert m.d_lambda(swapped, lms, "WV2", 4) > m.d_lambda(fused, lms, "WV2", 4) > 0.0


def test_full_resolution_bundle_and_hqnr(full_res):
    lms, pan = full_res
    fused = lms + 0.3 * (pan - pan.mean())[..., None]
    row = m.full_resolution_metrics(fused, lms, pan, "WV2", 4)
    assert set(row) == {"D_lambda", "D_s", "HQNR"}
    assert 0.0 < row["D_lambda"] < 0.3 and 0.0 < row["D_s"] < 0.3
    assert row["HQNR"] == pytest.approx((1 - row["D_lambda"]) * (1 - row["D_s"]), rel=1e-12)
    assert m.hqnr(fused, lms, pan, "WV2", 4) == row["HQNR"]
    assert row["D_s"] == m.d_s(fused, lms, pan, 4)


def test_d_s_multiband_guide_averages_guide_bands(full_res):
    lms, pan = full_res
    fused = lms + 0.3 * (pan - pan.mean())[..., None]
    guide = np.stack([pan, 0.5 * pan + 100.0], axis=2)
    per_band = [m.d_s(fused, lms, guide[..., j], 4) for j in range(2)]
    assert m.d_s(fused, lms, guide, 4) == pytest.approx(np.mean(per_band), rel=1e-12)


def test_reduced_resolution_bundle(wv2, wv2_blurred):
    ms, fused = wv2[0][:64, :64], wv2_blurred[:64, :64]
    row = m.reduced_resolution_metrics(ms, fused, 4, 2047)
    assert row == {
        "SAM": m.sam(ms, fused), "ERGAS": m.ergas(ms, fused, 4), "Q2n": m.q2n(ms, fused),
        "SCC": m.scc(ms, fused), "PSNR": m.psnr(ms, fused, 2047),
    }


# ---------------------------------------------------------------- SAM properties


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_sam_symmetric_and_per_pixel_scale_invariant(data):
    img = arrays(np.float64, (3, 4, 3), elements=st.floats(0.1, 1000))
    a, b = data.draw(img), data.draw(img)
    gains = data.draw(arrays(np.float64, (3, 4, 1), elements=st.floats(0.01, 100)))
    assert m.sam(a, b) == pytest.approx(m.sam(b, a), abs=1e-9)
    assert m.sam(a, b * gains) == pytest.approx(m.sam(a, b), abs=1e-5)
    assert 0.0 <= m.sam(a, b) <= 90.0
