"""The torch DB1 DWT must equal PyWavelets and the runtime's numba version (the ONNX graph's wav input)."""
import numpy as np
import pytest
import pywt

torch = pytest.importorskip("torch")

from ddrf_runtime.wavelets import wavelet_condition as runtime_wavelet_condition  # noqa: E402
from ddrf_train.dwt import HaarDWT, wavelet_condition  # noqa: E402


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 1, 6, 10), (2, 2, 12, 4)])
def test_haar_dwt_equals_pywt(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = HaarDWT(shape[1])(torch.from_numpy(x)).numpy()  # (B, N, 4, H/2, W/2)
    ca, (ch, cv, cd) = pywt.dwt2(x.astype(np.float64), "db1")  # over the last two axes
    for i, want in enumerate((ca, ch, cv, cd)):
        np.testing.assert_allclose(got[:, :, i], want, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_wavelet_condition_layout_matches_pywt_and_runtime(k):
    rng = np.random.default_rng(1)
    lms = rng.random((2, 4, 8, 12), dtype=np.float32)
    guide = rng.random((2, k, 8, 12), dtype=np.float32)
    got = wavelet_condition(torch.from_numpy(lms), torch.from_numpy(guide)).numpy()
    assert got.shape == (2, 4 + 3 * k, 4, 6)
    want = [pywt.dwt2(lms[:, c], "db1")[0] for c in range(4)]
    for j in range(k):
        want += list(pywt.dwt2(guide[:, j], "db1")[1])  # cH_j, cV_j, cD_j
    np.testing.assert_allclose(got, np.stack(want, axis=1), atol=1e-5)
    np.testing.assert_allclose(got, runtime_wavelet_condition(lms, guide), atol=1e-6)
