"""Back-projection of a fused image onto its MS: the fused image, blurred by an MTF and decimated, should give
back the MS it was made from (Wald's consistency property).

Neither the network's correction nor a classical detail injection keeps that property on a sensor whose MTF
differs from what they assume; one step ``fused += upsample(ms − decimate(mtf_lowpass(fused)))`` moves the
low frequencies back onto the measured MS and leaves the PAN's detail where it is. With generic MTFs (the sensor
is unknown at run time) two steps lower ERGAS and SAM on every bundled model's validation and test strips, and ERGAS
on every leave-one-sensor-out fold (SAM on all but WorldView-2; ``python -m benchmarks.quality …
--also-projections 0``, model card).

A step's correction, blurred and decimated again, comes back through a fixed filter on the MS grid (decimate ∘ MTF
∘ upsample, separable), so step k's shortfall is (I − K)^(k−1) of the first one: the steps are summed on the MS grid
and upsampled once, whatever their number.
"""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from .mtf import DEFAULT_MS_GAIN, KERNEL_SIZE, lowpass_decimate, separable_taps
from .resample import UPSAMPLE_REACH, decimate, upsample
from .tiling import pad_symmetric

ROUND_OFF = 1e-6  # float32 filtering's round-off, in units of the inputs' scale: a smaller step is not added
DEFAULT_PROJECTIONS = 2  # steps: the validation strips gain 1.3 % ERGAS from the first, 0.4 % from the second


@functools.lru_cache(maxsize=16)
def round_trip_taps(gain: float, ratio: int) -> np.ndarray:
    """(T,) float32 taps of decimate ∘ MTF(``gain``) ∘ upsample along one axis of the MS grid: what a correction
    added on the PAN grid gives back on the MS grid (every factor is separable, so the 2-D filter is their outer
    product). Taps below ``ROUND_OFF`` of the peak are left out (13 for gain 0.3 at ratio 4)."""
    reach = UPSAMPLE_REACH + KERNEL_SIZE // (2 * ratio) + 1
    impulse = np.zeros((4 * reach + 1, 1))  # (n, 1): one MS column, long enough that nothing wraps around
    impulse[2 * reach] = 1.0
    up = upsample(impulse, ratio)[:, 0]  # (r·n,)
    low = np.convolve(up, separable_taps(gain, ratio), mode="same")  # symmetric taps: convolution = correlation
    kept = decimate(np.broadcast_to(low[:, None], (low.size, ratio)), ratio)[:, 0]  # (n,): the MS grid's phase
    centre = 2 * reach
    half = np.abs(np.flatnonzero(np.abs(kept) > ROUND_OFF * np.abs(kept).max()) - centre).max()  # round-off beyond
    taps = kept[centre - half:centre + half + 1].astype(np.float32)
    taps.flags.writeable = False  # cached: shared by every caller
    return taps


def _summed_shortfalls(first: np.ndarray, taps: np.ndarray, steps: int) -> np.ndarray:
    """first (h, w, P) → the sum of ``steps`` shortfalls s_1 = first, s_(k+1) = s_k − K s_k, K the round trip
    (``taps`` along both axes, mirrored edges): what ``steps`` projection steps add, on the MS grid."""
    total, shortfall = first.copy(), first
    for _ in range(steps - 1):
        back = ndimage.correlate1d(ndimage.correlate1d(shortfall, taps, axis=0, mode="reflect"), taps, axis=1,
                                   mode="reflect")  # (h, w, P): scipy's "reflect" mirrors about the pixel edge
        shortfall = shortfall - back
        total += shortfall
    return total


def project_onto_ms(fused: np.ndarray, lms: np.ndarray, ratio: int, steps: int,
                    gain: float = DEFAULT_MS_GAIN) -> np.ndarray:
    """``fused`` (N, C, H, W) moved ``steps`` times towards consistency with the MS that ``lms`` (N, C, H, W) is
    the upsampling of (``decimate(lms)`` is that MS exactly), through an MTF of Nyquist ``gain``; float32, same
    shape. A tile's edges are mirrored for the upsampling, so tiles blend as the whole image would."""
    if steps <= 0:
        return fused
    n, c, h, w = fused.shape
    ms = decimate(np.moveaxis(lms, (0, 1), (2, 3)), ratio)  # (h/r, w/r, N, C)
    low = np.moveaxis(lowpass_decimate(fused, gain, ratio), (0, 1), (2, 3))  # (h/r, w/r, N, C)
    first = (ms - low).astype(np.float32).reshape(ms.shape[:2] + (n * c,))  # (h/r, w/r, N·C)
    missing = _summed_shortfalls(first, round_trip_taps(gain, ratio), steps)
    reach = UPSAMPLE_REACH
    padded = pad_symmetric(missing, ((reach, reach), (reach, reach)))
    up = upsample(padded, ratio)[reach * ratio:reach * ratio + h, reach * ratio:reach * ratio + w]  # (H, W, N·C)
    up[np.abs(up) < ROUND_OFF] = 0.0  # filtering round-off is no signal: an all-zero area stays zero
    return np.ascontiguousarray(fused, np.float32) + np.moveaxis(up.reshape(h, w, n, c), (2, 3), (0, 1)).astype(
        np.float32)
