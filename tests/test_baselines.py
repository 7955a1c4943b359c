"""Classical baselines on real data (Wald protocol) and on degenerate inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from ddrf_runtime.evaluation.baselines import METHODS, fuse
from ddrf_runtime.evaluation.metrics import ergas
from ddrf_runtime.mtf import ms_gains, mtf_lowpass, pan_gain
from ddrf_runtime.resample import decimate, upsample, wald_degrade


@pytest.fixture(scope="module")
def ge1(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GeoEye-1 PNN demo scene, Wald-degraded: (ms_lr 80²×4, pan_lr 320², reference 320²×4)."""
    mat = sio.loadmat(data_dir / "mat/grip_pnn/imgGE1.mat")
    ms, pan = mat["I_MS"], mat["I_PAN"]  # (320, 320, 4) uint8, (1280, 1280) uint8
    assert str(mat["sensor"][0]) == "GeoEye1"
    ms_lr, pan_lr = wald_degrade(ms, pan, 4, ms_gains("GeoEye1", 4), pan_gain("GeoEye1"))
    return ms_lr, pan_lr, ms.astype(np.float64)


@pytest.fixture(scope="module")
def ge1_fused(ge1: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    ms_lr, pan_lr, _ = ge1
    return {m: fuse(m, ms_lr, pan_lr, 4, "GeoEye1") for m in METHODS}


def test_methods_beat_exp_on_real_geoeye(ge1, ge1_fused) -> None:
    ref = ge1[2]
    scores = {m: ergas(ref, f, 4) for m, f in ge1_fused.items()}
    for f in ge1_fused.values():
        assert f.shape == ref.shape and f.dtype == np.float64 and np.isfinite(f).all()
    # Measured: EXP 1.81, BT-H 1.45, GSA 1.32, HPM 1.66, FS 1.31. HPM's std-matched gain over-injects
    # into NIR, which correlates weakly with this PAN, hence its smaller margin.
    assert scores["GSA"] < 0.8 * scores["EXP"]
    assert scores["MTF-GLP-FS"] < 0.8 * scores["EXP"]
    assert scores["BT-H"] < 0.9 * scores["EXP"]
    assert scores["MTF-GLP-HPM"] < 0.95 * scores["EXP"]
    assert 1.0 < scores["EXP"] < 3.0  # sanity of the protocol itself (8-bit stretched scene)


def test_exp_is_upsampled_ms_and_additive_methods_keep_band_means(ge1, ge1_fused) -> None:
    ms_lr = ge1[0]
    lms = upsample(ms_lr, 4)
    np.testing.assert_array_equal(ge1_fused["EXP"], lms)
    for m in ("GSA", "MTF-GLP-FS"):  # zero-mean detail injection: the spectral mean is untouched
        np.testing.assert_allclose(ge1_fused[m].mean(axis=(0, 1)), lms.mean(axis=(0, 1)), rtol=2e-3)
    # Injected detail follows the PAN: the high-pass of every fused band correlates with the PAN's.
    pan = ge1[1]
    pan_hp = pan - mtf_lowpass(pan, 0.3, 4)
    for m in ("GSA", "MTF-GLP-HPM", "MTF-GLP-FS", "BT-H"):
        f = ge1_fused[m]
        for b in range(3):  # visible bands, well correlated with this PAN
            hp = f[..., b] - mtf_lowpass(f[..., b], 0.3, 4)
            assert np.corrcoef(hp.ravel(), pan_hp.ravel())[0, 1] > 0.5, (m, b)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("ms_val", "pan_val"), [(0, 0), (300, 120), (0, 50)])
def test_flat_and_zero_inputs_never_give_nan(method: str, ms_val: int, pan_val: int) -> None:
    ms = np.full((16, 16, 4), ms_val, np.uint16)
    pan = np.full((64, 64), pan_val, np.uint16)
    out = fuse(method, ms, pan, 4, "QB")
    assert out.shape == (64, 64, 4) and np.isfinite(out).all()
    np.testing.assert_allclose(out, float(ms_val), atol=1e-5 * max(ms_val, 1))  # nothing to inject


def test_multiband_guide_on_real_hyperspectral(data_dir: Path) -> None:
    """EO-1 Hyperion (128 bands) + ALI MS guide (9 bands), ratio 3: the guide path must add real detail."""
    mat = sio.loadmat(data_dir / "hyperspectral/hysure_paris_eo1/paris_data_hs_ms.mat")
    hs, msi = mat["HSim"][..., ::4], mat["MSim"]  # (72, 72, 32), (72, 72, 9); every 4th band keeps it fast
    hs_lr = decimate(mtf_lowpass(hs, 0.3, 3), 3)  # (24, 24, 32)
    base = ergas(hs, fuse("EXP", hs_lr, msi, 3, "unknown"), 3)
    for m in ("MTF-GLP-HPM", "MTF-GLP-FS"):
        out = fuse(m, hs_lr, msi, 3, "unknown")
        assert out.shape == hs.shape and np.isfinite(out).all()
        assert ergas(hs, out, 3) < 0.8 * base, m


def test_single_band_guide_cube_equals_plain_pan() -> None:
    rng = np.random.default_rng(0)
    ms = 100 + 20 * rng.random((8, 8, 4))
    pan = 100 + 20 * rng.random((32, 32))
    for m in METHODS:
        np.testing.assert_array_equal(fuse(m, ms, pan[..., None], 4, "IKONOS"), fuse(m, ms, pan, 4, "IKONOS"))


def test_bad_arguments_raise_value_error() -> None:
    ms, pan = np.ones((8, 8, 4)), np.ones((32, 32))
    assert METHODS == ("EXP", "BT-H", "GSA", "MTF-GLP-HPM", "MTF-GLP-FS")
    np.testing.assert_array_equal(fuse("gsa", ms, pan, 4, "QB"), fuse("GSA", ms, pan, 4, "QB"))
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse("PCA", ms, pan, 4, "QB")
    with pytest.raises(ValueError):
        fuse("GSA", ms, pan[:30], 4, "QB")
    with pytest.raises(ValueError):
        fuse("GSA", ms[..., 0], pan, 4, "QB")
