import numpy as np
import pytest
import pywt
from hypothesis import given, settings
from hypothesis import strategies as st

from ddrf_runtime.wavelets import dwt2_db1, wavelet_condition

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 17), st.integers(1, 17))


def _pywt_bands(x: np.ndarray) -> list[np.ndarray]:
    ca, (ch, cv, cd) = pywt.dwt2(x, "db1")
    return [ca, ch, cv, cd]


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_dwt2_matches_pywt_including_odd_sizes(shape, seed):
    x = np.random.default_rng(seed).normal(0, 3, shape).astype(np.float32)
    for ours, ref in zip(dwt2_db1(x), _pywt_bands(x)):
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_dwt2_plain_2d_and_float64_input():
    x = np.random.default_rng(1).random((6, 5))  # float64 in, float32 out
    for ours, ref in zip(dwt2_db1(x), _pywt_bands(x)):
        assert ours.shape == ref.shape == (3, 3)
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_dwt2_rejects_empty():
    with pytest.raises(ValueError):
        dwt2_db1(np.zeros((0, 4), np.float32))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), c=st.integers(1, 4), k=st.integers(1, 3),
       h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_wavelet_condition_layout(b, c, k, h, w, seed):
    cond = np.random.default_rng(seed).random((b, c + k, h, w), dtype=np.float32)
    lms, guide = cond[:, :c], cond[:, c:]  # views, as the pipeline passes them
    wav = wavelet_condition(lms, guide)
    assert wav.shape == (b, c + 3 * k, (h + 1) // 2, (w + 1) // 2) and wav.dtype == np.float32
    expected = [_pywt_bands(lms)[0]]  # (B, C, h2, w2)
    for j in range(k):
        expected.append(np.stack(_pywt_bands(guide[:, j])[1:], axis=1))  # (B, 3, h2, w2)
    np.testing.assert_allclose(wav, np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_wavelet_condition_rejects_mismatch():
    with pytest.raises(ValueError, match="does not match"):
        wavelet_condition(np.zeros((1, 4, 8, 8), np.float32), np.zeros((1, 1, 8, 6), np.float32))
