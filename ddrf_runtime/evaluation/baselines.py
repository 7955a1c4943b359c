"""Classical pansharpening baselines, the reference points every learned model must beat.

Semantics follow the Vivone et al. MATLAB toolbox (2021 benchmark edition) so numbers are comparable with
published tables; the code is our own. Every method works in DN units on ``lms`` = ``upsample(ms, ratio)``:

- EXP: ``lms`` alone.
- BT-H: Brovey with regression weights and haze correction (toolbox ``BroveyRegHazeMin``).
- GSA: Gram–Schmidt adaptive; intensity regressed from the degraded PAN at MS scale.
- MTF-GLP-HPM: per-band MTF low-pass of the histogram-matched PAN, multiplicative injection.
- MTF-GLP-FS: per-band MTF low-pass, additive injection with full-scale regression gains.

Deliberate differences from the toolbox: GSA degrades the PAN with its sensor's MTF filter and the
``decimate`` phase (the toolbox uses an undecimated B3-spline wavelet low-pass there); flat (numerically
constant) inputs yield ``lms`` instead of 0/0; ratios that are not powers of two use ``upsample``'s cubic;
HPM centres the PAN on its low-pass mean (as BT-H does) rather than its own mean (equal up to border effects).

A k-band guide (H×W×k, e.g. RGB for hyperspectral fusion) is reduced to one synthetic PAN per band by least
squares of that band on the degraded guide bands (plus offset) at the MS scale; each band is then fused on
its own with the single-PAN rule (so BT-H's 4-band haze constants never apply to it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ddrf_runtime.mtf import (
    DEFAULT_MS_GAIN,
    convolve_replicate,
    gaussian_fir,
    ms_gains,
    mtf_lowpass,
    pan_gain,
)
from ddrf_runtime.resample import decimate, upsample

METHODS = ("EXP", "BT-H", "GSA", "MTF-GLP-HPM", "MTF-GLP-FS")

_EPS = float(np.finfo(np.float64).eps)  # the toolbox's ``eps`` guard in ratio injections
_FLAT_RTOL = 1e-7  # spread below this × |mean| is interpolation ripple, not signal
_HAZE_PRC = 1.0  # BT-H: percentile of each band taken as its haze level (4-band case)
_HAZE_FRACTION = np.array([0.95, 0.45, 0.40, 0.05])  # BT-H: share of it removed, B, G, R, NIR


@dataclass(frozen=True)
class _Scene:
    ms: np.ndarray  # (h, w, C) float64
    lms: np.ndarray  # (H, W, C) float64
    pan: np.ndarray  # (H, W) float64
    ratio: int
    gains: np.ndarray  # (C,) MS Nyquist gains
    pan_gain: float


# ---------------------------------------------------------------- shared helpers


def _centred(x: np.ndarray, axis: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """x minus its mean over ``axis``; numerically flat images become exactly 0 (no 0/0 gains later)."""
    mean = x.mean(axis=axis, keepdims=True)
    x0 = x - mean
    flat = np.abs(x0).max(axis=axis, keepdims=True) <= _FLAT_RTOL * np.maximum(np.abs(mean), 1.0)
    return np.where(flat, 0.0, x0)


def _ratio(num: float, den: float) -> float:
    """num/den, 0 when den is 0 (a flat image carries no detail to scale)."""
    return num / den if den != 0.0 else 0.0


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares weights of ``y`` (n[, m]) on the columns of ``x`` (n, p)."""
    return np.linalg.lstsq(x, y, rcond=None)[0]


def _with_ones(x: np.ndarray) -> np.ndarray:
    """(..., p) → (n, p+1) design matrix with an offset column."""
    flat = x.reshape(-1, x.shape[-1])
    return np.concatenate([flat, np.ones((flat.shape[0], 1))], axis=1)


def _gauss_lowpass(pan: np.ndarray, ratio: int) -> np.ndarray:
    """Toolbox ``LPfilterGauss``: generic GNyq 0.3 Gaussian (σ from N·f_cut/2, not (N−1)), no decimation."""
    n = 41
    sigma = math.sqrt((n / (2.0 * ratio)) ** 2 / (-2.0 * math.log(DEFAULT_MS_GAIN)))
    return convolve_replicate(pan, gaussian_fir(sigma, n))  # (H, W)


def _glp_lowpass(pans: np.ndarray, sc: _Scene) -> np.ndarray:
    """(H, W, C) MTF-GLP approximation of each band's PAN: band-MTF low-pass, decimate, upsample."""
    return upsample(decimate(mtf_lowpass(pans, sc.gains, sc.ratio), sc.ratio), sc.ratio)


def _match(x: np.ndarray, x_lp: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Shift/scale ``x`` so that its low-pass ``x_lp`` gets ``target``'s mean and std.

    ``target`` (H, W) gives (H, W); ``target`` (H, W, C) gives one matched copy per band, (H, W, C).
    """
    t = target if target.ndim == 3 else target[..., None]
    lp_std = float(np.std(_centred(x_lp)))
    scale = np.array([_ratio(float(np.std(_centred(t[..., k]))), lp_std) for k in range(t.shape[2])])
    out = (x - x_lp.mean())[..., None] * scale + t.mean(axis=(0, 1))  # (H, W, C)
    return out if target.ndim == 3 else out[..., 0]


def _inject_additive(base: np.ndarray, detail: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """F_k = base_k + g_k·detail_k (detail (H, W) shared or (H, W, C) per band)."""
    if detail.ndim == 2:
        detail = detail[..., None]
    return base + gains * detail


def _inject_ratio(base: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """F_k = base_k · num_k / den_k, with the toolbox's eps guard on the denominator."""
    if num.ndim == 2:
        num, den = num[..., None], den[..., None]
    return base * (num / (den + _EPS))


# ---------------------------------------------------------------- methods


def _exp(sc: _Scene) -> np.ndarray:
    return sc.lms.copy()


def _bt_h(sc: _Scene) -> np.ndarray:
    """Brovey on haze-corrected bands; weights from regressing the Gaussian-low-passed PAN on ``lms``."""
    nb = sc.lms.shape[2]
    if nb == 4:
        haze = _HAZE_FRACTION * np.percentile(
            sc.lms.reshape(-1, nb), _HAZE_PRC, axis=0, method="hazen"  # = MATLAB prctile
        )
    else:
        haze = sc.lms.min(axis=(0, 1))
    pan_lp = _gauss_lowpass(sc.pan, sc.ratio)  # (H, W)
    weights = _lstsq(sc.lms.reshape(-1, nb), pan_lp.reshape(-1))
    intensity = (sc.lms - haze) @ weights  # (H, W)
    pan_eq = _match(sc.pan, pan_lp, intensity)  # (H, W)
    return _inject_ratio(np.maximum(sc.lms - haze, 0.0), pan_eq, intensity) + haze


def _gsa(sc: _Scene) -> np.ndarray:
    """Component substitution with the intensity = best linear MS fit of the PAN at MS scale."""
    pan0 = _centred(sc.pan)
    pan0_lr = decimate(mtf_lowpass(pan0, sc.pan_gain, sc.ratio), sc.ratio)  # (h, w)
    alpha = _lstsq(_with_ones(_centred(sc.ms)), pan0_lr.reshape(-1))  # (C+1,)
    lms0 = _centred(sc.lms)  # (H, W, C)
    intensity0 = _centred((_with_ones(lms0) @ alpha).reshape(sc.pan.shape))  # (H, W)
    var_i = float(np.mean(intensity0**2))
    gains = np.array([_ratio(float(np.mean(intensity0 * lms0[..., k])), var_i) for k in range(lms0.shape[2])])
    # lms0 + mean == lms and the injected detail is zero-mean, so the toolbox's final mean equalisation is implied.
    return _inject_additive(sc.lms, pan0 - intensity0, gains)


def _mtf_glp_hpm(sc: _Scene) -> np.ndarray:
    """High-pass modulation: lms × (matched PAN / its MTF-GLP low-pass), per band."""
    pans = _match(sc.pan, _gauss_lowpass(sc.pan, sc.ratio), sc.lms)  # (H, W, C)
    return _inject_ratio(sc.lms, pans, _glp_lowpass(pans, sc))


def _mtf_glp_fs(sc: _Scene) -> np.ndarray:
    """Additive MTF-GLP detail with gains cov(lms_k, P) / cov(P_LP,k, P) estimated at full scale."""
    nb = sc.lms.shape[2]
    pans = np.repeat(sc.pan[..., None], nb, axis=2)  # (H, W, C)
    pan_lp = _glp_lowpass(pans, sc)  # (H, W, C)
    pan0 = _centred(sc.pan)
    lms0, lp0 = _centred(sc.lms), _centred(pan_lp)
    gains = np.array([
        _ratio(float(np.mean(lms0[..., k] * pan0)), float(np.mean(lp0[..., k] * pan0))) for k in range(nb)
    ])
    return _inject_additive(sc.lms, pans - pan_lp, gains)


_FUSERS: dict[str, Callable[[_Scene], np.ndarray]] = {
    "EXP": _exp,
    "BT-H": _bt_h,
    "GSA": _gsa,
    "MTF-GLP-HPM": _mtf_glp_hpm,
    "MTF-GLP-FS": _mtf_glp_fs,
}


# ---------------------------------------------------------------- entry point


def _synthetic_pans(ms: np.ndarray, guide: np.ndarray, ratio: int) -> np.ndarray:
    """(H, W, C): one PAN per MS band, the least-squares fit of the band on [degraded guide, 1] at MS scale."""
    k = guide.shape[2]
    guide_lr = decimate(mtf_lowpass(guide, ms_gains("unknown", k), ratio), ratio)  # (h, w, k)
    weights = _lstsq(_with_ones(guide_lr), ms.reshape(-1, ms.shape[2]))  # (k+1, C)
    return (_with_ones(guide) @ weights).reshape(guide.shape[:2] + (ms.shape[2],))


def fuse(method: str, ms: np.ndarray, pan: np.ndarray, ratio: int, sensor: str) -> np.ndarray:
    """Fuse low-resolution ``ms`` (h, w, C) with ``pan`` (rh, rw) or a k-band guide (rh, rw, k).

    Returns (rh, rw, C) float64 in the input's DN units (not clipped). ``sensor`` selects the MTF gains
    (canonical band order); unknown sensors get the generic 0.3 / 0.15.
    """
    fuser = _FUSERS.get(method.upper())
    if fuser is None:
        raise ValueError(f"unknown fusion method {method!r}; choose from {', '.join(METHODS)}")
    if ms.ndim != 3:
        raise ValueError(f"ms must be h×w×C, got shape {ms.shape}")
    if pan.ndim not in (2, 3) or pan.shape[:2] != (ratio * ms.shape[0], ratio * ms.shape[1]):
        raise ValueError(f"pan shape {pan.shape} does not match {ratio}× ms {ms.shape[:2]}")
    ms64 = ms.astype(np.float64)
    pan64 = pan.astype(np.float64)
    lms = upsample(ms64, ratio)  # (H, W, C)
    gains, pgain = ms_gains(sensor, ms.shape[2]), pan_gain(sensor)
    if pan64.ndim == 2 or pan64.shape[2] == 1:
        return fuser(_Scene(ms64, lms, pan64.reshape(lms.shape[:2]), ratio, gains, pgain))
    pans = _synthetic_pans(ms64, pan64, ratio)  # (H, W, C)
    bands = [
        fuser(_Scene(ms64[..., b : b + 1], lms[..., b : b + 1], pans[..., b], ratio, gains[b : b + 1], pgain))
        for b in range(ms.shape[2])
    ]
    return np.concatenate(bands, axis=2)
