"""Resampling between the MS and PAN grids, with one pixel-phase convention everywhere.

Convention (the toolbox's): low-resolution pixel i sits on high-resolution pixel ``ratio·i + ratio//2``.
``interp23tap`` puts its samples there, ``decimate`` reads them from there (it is MATLAB's
``imresize(x, 1/ratio, 'nearest')``), so decimate(upsample(x)) == x and Wald-degraded pairs are aligned
with the upsampled MS exactly as in the published benchmarks.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import sparse
from numba import njit, prange

from ddrf_runtime.mtf import mtf_lowpass

# Half of the toolbox's 23-tap polynomial (CDF 23) half-band interpolator, centre tap first; gain 2 per
# axis makes up for the zeros inserted by upsampling.
_CDF23_HALF = 2.0 * np.array([
    0.5, 0.305334091185, 0.0, -0.072698593239, 0.0, 0.021809577942, 0.0,
    -0.005192756653, 0.0, 0.000807762146, 0.0, -0.000060081482,
])
CDF23 = np.concatenate([_CDF23_HALF[:0:-1], _CDF23_HALF])  # (23,) symmetric
# MS pixels of context an ``upsample`` output pixel depends on, with a margin: the 23-tap interpolator reaches at
# most 11 for ratios 2-8, Keys cubic 2. Read that much around a window and its upsampling equals the whole scene's.
UPSAMPLE_REACH = 12


def _float(img: np.ndarray) -> np.ndarray:
    """Float inputs as they are (no copy), integers as float64 (DN rasters are often uint)."""
    return img if np.issubdtype(img.dtype, np.floating) else img.astype(np.float64)


def _is_power_of_two(ratio: int) -> bool:
    return ratio >= 1 and (ratio & (ratio - 1)) == 0


@njit(parallel=True, nogil=True, cache=True)
def _double_rows(src, half_taps, phase):  # pragma: no cover - compiled; exercised through interp23tap
    """src (h, w, C) → (2h, w, C): zero insertion at ``phase`` then the 23-tap filter along rows, wrapping.

    Polyphase: rows on the sample phase copy the input (centre tap 1); the others sum the six odd taps.
    Pairs are summed outermost first in float64, as scipy's symmetric ``correlate1d`` does, so the values
    equal the reference implementation's bit for bit.
    """
    h = src.shape[0]
    flat = src.reshape(h, -1)  # (h, w·C): each output row is a weighted sum of whole input rows
    n = flat.shape[1]
    out = np.empty((2 * h, n), src.dtype)
    for r in prange(2 * h):
        if (r - phase) % 2 == 0:
            out[r] = flat[(r - phase) // 2]
            continue
        acc = np.zeros(n, np.float64)
        for d in range(half_taps.size - 1, 0, -2):  # odd offsets d = 11, 9, ..., 1
            above = flat[((r - d - phase) // 2) % h]
            below = flat[((r + d - phase) // 2) % h]
            weight = half_taps[d]
            for k in range(n):
                acc[k] += (np.float64(above[k]) + np.float64(below[k])) * weight
        for k in range(n):
            out[r, k] = acc[k]
    return out.reshape((2 * h,) + src.shape[1:])


def _double_cols(src: np.ndarray, half_taps: np.ndarray, phase: int) -> np.ndarray:
    """src (h, w, C) → (h, 2w, C) along columns (the row kernel on the transposed view)."""
    return np.ascontiguousarray(_double_rows(np.ascontiguousarray(src.transpose(1, 0, 2)), half_taps,
                                             phase).transpose(1, 0, 2))


def interp23tap(img: np.ndarray, ratio: int) -> np.ndarray:
    """Upsample H×W(×C) by a power-of-two ``ratio`` with the toolbox's 23-tap interpolator.

    Each ×2 step inserts zeros (the first step puts samples on odd indices, later steps on even ones, which
    yields the ``ratio·i + ratio//2`` phase) and filters both axes with circular borders, as the toolbox does.
    (The toolbox loops ``ratio/2`` times, which is wrong for ratio 8; we do log2(ratio) steps.)
    A numba polyphase kernel (no multiplications by the inserted zeros, all cores, GIL released) computes it.
    """
    if not _is_power_of_two(ratio):
        raise ValueError(f"interp23tap needs a power-of-two ratio, got {ratio}")
    src = _float(img)
    out = np.ascontiguousarray(src.reshape(src.shape[:2] + (-1,)))  # (h, w, C)
    half_taps = _CDF23_HALF.astype(out.dtype).astype(np.float64)  # the taps as the filter's dtype holds them
    for step in range(int(ratio).bit_length() - 1):
        phase = 1 if step == 0 else 0
        out = _double_cols(_double_rows(out, half_taps, phase), half_taps, phase)
    return out.reshape(out.shape[:2] + src.shape[2:])


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's "bicubic"), zero beyond |x| = 2."""
    ax = np.abs(x)
    near = (1.5 * ax - 2.5) * ax * ax + 1.0
    far = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


def _keys_matrix(n: int, ratio: int) -> sparse.csr_matrix:
    """Sparse (ratio·n, n) Keys-cubic (a = −0.5) interpolation matrix, half-sample symmetric borders."""
    x = np.arange(ratio * n)
    u = (x - ratio // 2) / ratio  # low-resolution coordinate of each output pixel
    base = np.floor(u).astype(np.int64)
    rows, cols, vals = [], [], []
    for off in (-1, 0, 1, 2):
        j = base + off
        w = keys_cubic(u - j)
        j = np.where(j < 0, -j - 1, j)
        j = np.where(j >= n, 2 * n - 1 - j, j)
        rows.append(x)
        cols.append(np.clip(j, 0, n - 1))  # clip only matters for n < 2
        vals.append(w)
    # Duplicate (row, col) entries from folded borders are summed by the COO → CSR conversion.
    return sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(ratio * n, n)
    ).tocsr()


def _cubic_upsample(img: np.ndarray, ratio: int) -> np.ndarray:
    """Keys-cubic upsampling on the same pixel phase as interp23tap (for ratios that are not powers of two)."""
    out = _float(img)
    h, w = out.shape[:2]
    rest = out.shape[2:]
    a_h, a_w = _keys_matrix(h, ratio), _keys_matrix(w, ratio)
    tmp = (a_h @ out.reshape(h, -1)).reshape((ratio * h, w) + rest)  # (rH, w, ...)
    tmp = np.moveaxis(tmp, 1, 0).reshape(w, -1)  # (w, rH·...)
    res = (a_w @ tmp).reshape((ratio * w, ratio * h) + rest)  # (rW, rH, ...)
    return np.ascontiguousarray(np.moveaxis(res, 0, 1)).astype(out.dtype, copy=False)


def upsample(img: np.ndarray, ratio: int) -> np.ndarray:
    """MS → PAN grid: interp23tap for powers of two (benchmark standard), Keys cubic otherwise (e.g. ratio 3).

    Keys cubic (MATLAB's bicubic kernel) reproduces quadratics exactly and keeps the ``ratio·i + ratio//2``
    phase, so a ratio-3 hyperspectral pipeline sees the same geometry as a ratio-4 pansharpening one.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"expected H×W or H×W×C, got shape {img.shape}")
    if ratio < 1:
        raise ValueError(f"ratio must be >= 1, got {ratio}")
    if _is_power_of_two(ratio):
        return interp23tap(img, ratio) if ratio > 1 else _float(img).copy()
    return _cubic_upsample(img, ratio)


def decimate(img: np.ndarray, ratio: int) -> np.ndarray:
    """Keep pixel ``ratio·i + ratio//2`` along both axes (MATLAB ``imresize(x, 1/ratio, 'nearest')``).

    Output is ⌊H/ratio⌋ × ⌊W/ratio⌋; a partial last block is dropped.
    """
    off = ratio // 2
    h, w = img.shape[0] // ratio, img.shape[1] // ratio
    return img[off : off + ratio * h : ratio, off : off + ratio * w : ratio]


def wald_degrade(
    ms: np.ndarray, pan: np.ndarray, ratio: int, ms_gains: ArrayLike, pan_gain: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Wald's protocol: MTF-matched low-pass per band, then decimation by ``ratio`` (MS and guide alike).

    ``ms`` (H, W, C) becomes the reference; ``pan`` is (rH, rW) or a k-band guide (rH, rW, k). ``pan_gain``
    is one Nyquist gain for every guide band, or k gains (for an RGB/MS guide pass MS-style gains, e.g.
    ``ms_gains(sensor, k)``). Returns (ms_lr (H/r, W/r, C), pan_lr (H, W[, k])), floats (ints → float64).
    """
    if ms.ndim != 3:
        raise ValueError(f"ms must be H×W×C, got shape {ms.shape}")
    if pan.shape[:2] != (ratio * ms.shape[0], ratio * ms.shape[1]):
        raise ValueError(f"pan {pan.shape[:2]} is not {ratio}× ms {ms.shape[:2]}")
    ms_lr = decimate(mtf_lowpass(ms, ms_gains, ratio), ratio)  # (H/r, W/r, C)
    pan_lr = decimate(mtf_lowpass(pan, pan_gain, ratio), ratio)  # (H, W[, k])
    return np.ascontiguousarray(ms_lr), np.ascontiguousarray(pan_lr)
