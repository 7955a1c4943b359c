"""Sensor MTF gains and MTF-matched Gaussian low-pass filters (Vivone et al. toolbox semantics).

Wald's protocol, D_λ and the MTF-GLP baselines all need to blur an image the way the MS sensor's optics
would have at the coarser scale. The toolbox models each band's MTF as a Gaussian whose amplitude at the
MS Nyquist frequency equals the sensor's published gain GNyq, designs it as a 41×41 FIR filter by frequency
sampling (MATLAB ``fwind1`` with a Kaiser window, β = 0.5) and applies it with replicate borders.

All gain tables here are in the project's CANONICAL band order: B, G, R, NIR, then the sensor's other bands.
"""
from __future__ import annotations

import functools
import math
import re

import numpy as np
from numba import njit
from numpy.typing import ArrayLike
from scipy.signal import fftconvolve

from .bands import WV_NATIVE, canonical_order

DEFAULT_MS_GAIN = 0.3  # toolbox "otherwise" branch: Landsat, GF-2, hyperspectral, unknown
DEFAULT_PAN_GAIN = 0.15  # toolbox "none" branch
KERNEL_SIZE = 41  # side of the MTF low-pass filter (the toolbox's)

_WV_NATIVE_TO_CANONICAL = canonical_order(WV_NATIVE)  # toolbox tables are in native WorldView band order
_WV3_NATIVE = (0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315)
_WV2_NATIVE = (0.35,) * 7 + (0.27,)

_MS_GAINS: dict[str, tuple[float, ...]] = {
    "WV3": tuple(_WV3_NATIVE[i] for i in _WV_NATIVE_TO_CANONICAL),
    "WV2": tuple(_WV2_NATIVE[i] for i in _WV_NATIVE_TO_CANONICAL),
    "QB": (0.34, 0.32, 0.30, 0.22),
    "IKONOS": (0.26, 0.28, 0.29, 0.28),
    "GE1": (0.23, 0.23, 0.23, 0.23),
}
_PAN_GAINS: dict[str, float] = {"WV3": 0.14, "WV2": 0.11, "QB": 0.15, "IKONOS": 0.17, "GE1": 0.16}

# Names as they appear in file metadata and papers, upper-cased with separators removed.
_ALIASES: dict[str, str] = {
    "WV3": "WV3", "WORLDVIEW3": "WV3",
    "WV2": "WV2", "WORLDVIEW2": "WV2",
    "QB": "QB", "QUICKBIRD": "QB",
    "IKONOS": "IKONOS", "IK": "IKONOS",
    # The toolbox treats WorldView-4 like GeoEye-1 (same GNyq for MS and PAN).
    "GE1": "GE1", "GEOEYE1": "GE1", "GEOEYE": "GE1", "WV4": "GE1", "WORLDVIEW4": "GE1",
}


def canonical_sensor(sensor: str) -> str | None:
    """Map a sensor name or alias ("GeoEye-1", "WorldView-2", "wv3") to its table key; None if unknown."""
    return _ALIASES.get(re.sub(r"[^A-Z0-9]", "", sensor.upper()))


def ms_gains(sensor: str, nbands: int) -> np.ndarray:
    """(nbands,) Nyquist gains of the first canonical bands; 0.3 for unknown sensors or bands past the table."""
    table = _MS_GAINS.get(canonical_sensor(sensor) or "", ())
    gains = np.full(nbands, DEFAULT_MS_GAIN)
    n = min(nbands, len(table))
    gains[:n] = table[:n]
    return gains


def pan_gain(sensor: str) -> float:
    """Nyquist gain of the sensor's PAN channel; 0.15 for unknown sensors."""
    return _PAN_GAINS.get(canonical_sensor(sensor) or "", DEFAULT_PAN_GAIN)


def gaussian_fir(sigma: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """2-D FIR filter whose frequency response is a Gaussian of std ``sigma`` DFT bins (peak 1 at DC).

    Replicates the toolbox recipe ``fwind1(fspecial('gaussian', N, σ) / max, kaiser(N))``: the Gaussian is a
    *frequency* response sampled on the N×N DFT grid, inverse-transformed, then multiplied by a circularly
    symmetric window made from a 1-D Kaiser (β = 0.5) by Huang's method (zero outside the inscribed circle).
    Normalised to unit sum (the toolbox leaves it at ~0.99; unit DC gain keeps image means unchanged).
    """
    if size % 2 != 1 or size < 3:
        raise ValueError(f"kernel size must be odd and >= 3, got {size}")
    half = (size - 1) // 2
    t = np.arange(-half, half + 1, dtype=np.float64)
    resp = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2.0 * sigma**2))  # (N, N) desired response
    resp[resp < np.finfo(np.float64).eps * resp.max()] = 0.0  # as fspecial does
    resp /= resp.max()
    kernel = np.real(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(resp))))  # (N, N), centred
    radius = np.hypot(t[:, None], t[None, :]) / half  # 1 on the inscribed circle
    window = np.interp(radius, t / half, np.kaiser(size, 0.5), right=0.0)
    kernel *= window
    return kernel / kernel.sum()


def mtf_kernel(gnyq: float, ratio: int, size: int = KERNEL_SIZE) -> np.ndarray:
    """(size, size) kernel whose Gaussian response is ``gnyq`` at the MS Nyquist frequency (f_cut = 1/ratio)."""
    if not 0.0 < gnyq < 1.0:
        raise ValueError(f"Nyquist gain must be in (0, 1), got {gnyq}")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    sigma = math.sqrt(((size - 1) * (1.0 / ratio) / 2.0) ** 2 / (-2.0 * math.log(gnyq)))
    return gaussian_fir(sigma, size)


@functools.lru_cache(maxsize=16)
def separable_taps(gnyq: float, ratio: int, size: int = KERNEL_SIZE) -> np.ndarray:
    """(size,) float64 taps whose outer product is ``mtf_kernel(gnyq, ratio, size)`` to ~1e-6 of its peak, unit sum.

    The kernel is a Gaussian response under a circular window that is nearly separable: its second singular
    value is ~1e-5 of its first, so the rank-one part filters rows and columns one after the other."""
    u, _, _ = np.linalg.svd(mtf_kernel(gnyq, ratio, size))
    taps = u[:, 0] / u[:, 0].sum()
    taps.flags.writeable = False  # cached: shared by every caller
    return taps


@njit(nogil=True, cache=True)
def _filter_kept(planes, taps, ratio):  # pragma: no cover - compiled; exercised through lowpass_decimate
    """planes (P, H + S − 1, W + S − 1), edge-padded by S // 2 → (P, H // ratio, W // ratio): the separable taps
    (S,) applied down the columns at the kept rows only, then along those rows at the kept columns only."""
    n, hp, wp = planes.shape
    s = taps.size
    h, w, off = (hp - s + 1) // ratio, (wp - s + 1) // ratio, ratio // 2
    rows = np.empty((h, wp), np.float32)
    out = np.empty((n, h, w), np.float32)
    for k in range(n):
        for i in range(h):
            acc_row = rows[i]
            acc_row[:] = 0.0
            for t in range(s):
                weight, src = taps[t], planes[k, off + ratio * i + t]
                for x in range(wp):  # along a whole padded row: vectorised
                    acc_row[x] += weight * src[x]
        for i in range(h):
            for j in range(w):
                acc = np.float32(0.0)
                for t in range(s):
                    acc += taps[t] * rows[i, off + ratio * j + t]
                out[k, i, j] = acc
    return out


def lowpass_decimate(img: np.ndarray, gnyq: float, ratio: int) -> np.ndarray:
    """(..., H, W) → (..., H // ratio, W // ratio) float32: the MTF low-pass of Nyquist gain ``gnyq`` (replicate
    borders), kept only at the pixels ``resample.decimate`` keeps.

    Equal to ``decimate(convolve_replicate(img, mtf_kernel(gnyq, ratio)))`` within ~1e-6 of the image's range
    (float32 round-off), at a fraction of the cost: the kernel's separable taps filter only the rows and columns
    that decimation keeps (a numba kernel on the calling thread; BLAS would start threads of its own that spin
    beside the pipeline's workers). The runtime uses it wherever a low-pass is decimated at once; the evaluation
    keeps the toolbox's 2-D filter.
    """
    taps = separable_taps(gnyq, ratio).astype(np.float32)
    half = taps.size // 2
    lead = img.shape[:-2]
    planes = img.reshape((-1,) + img.shape[-2:]).astype(np.float32, copy=False)  # (P, H, W)
    padded = np.pad(planes, ((0, 0), (half, half), (half, half)), mode="edge")  # (P, H + S − 1, W + S − 1)
    out = _filter_kept(padded, taps, ratio)  # (P, H/r, W/r)
    return out.reshape(lead + out.shape[1:])


def convolve_replicate(img: np.ndarray, kernel: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Filter one H×W image with an odd, centred kernel, replicate borders (MATLAB imfilter 'replicate').

    FFT-based: a 41×41 direct correlation of a 1280² PAN costs seconds; this is ~20× faster and equal to
    float rounding. The kernels used here are point-symmetric, so convolution equals correlation. ``dtype``:
    the arithmetic (float32 is ~2.5× faster, for the runtime's per-tile filtering; the toolbox metrics keep float64).
    """
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(img.astype(dtype, copy=False), ((ph, ph), (pw, pw)), mode="edge")
    return fftconvolve(padded, kernel[::-1, ::-1].astype(dtype), mode="valid")  # (H, W)


def mtf_lowpass(img: np.ndarray, gains: ArrayLike, ratio: int) -> np.ndarray:
    """Low-pass each band with its MTF-matched kernel; same shape, float dtype kept (ints → float64).

    ``img`` is H×W×C with ``gains`` of length C (or a scalar for all bands), or H×W with a scalar gain.
    """
    out_dtype = img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64
    g = np.asarray(gains, dtype=np.float64)
    if img.ndim == 2:
        if g.size != 1:
            raise ValueError(f"a single-band image takes one gain, got {g.size}")
        return convolve_replicate(img, mtf_kernel(float(g.reshape(())), ratio)).astype(out_dtype)
    if img.ndim != 3:
        raise ValueError(f"expected H×W or H×W×C, got shape {img.shape}")
    nb = img.shape[2]
    g = np.broadcast_to(g.reshape(-1), (nb,)) if g.size == 1 else g.reshape(-1)
    if g.size != nb:
        raise ValueError(f"{g.size} gains for {nb} bands")
    out = np.empty(img.shape, dtype=out_dtype)  # (H, W, C)
    for b in range(nb):
        out[..., b] = convolve_replicate(img[..., b], mtf_kernel(float(g[b]), ratio))
    return out
