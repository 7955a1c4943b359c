"""The base image a residual model corrects: the upsampled MS, or a classical MTF-GLP ratio injection.

``Base.GLP_RATIO`` is high-pass modulation without histogram matching (SFIM with an MTF-GLP low-pass):
base_k = lms_k · P / P_LP, P_LP the PAN blurred with a Gaussian MTF of Nyquist gain ``base_gain``, decimated and
re-interpolated like the MS. It needs no scene statistics and no sensor table, so a tile gives the same base as
the whole scene away from its edges, and it keeps the MS's spectral angles (SAM of the base = SAM of lms). A
PAN gain cancels in P / P_LP, which is why an unseen sensor's radiometry does not change the injected detail.
Interpolation overshoot next to dark pixels can drive P_LP to ~0; the ratio divides by at least ``FLOOR`` and is
clipped to [0, ``MAX_GAIN``], which on real scenes only ever touches a handful of pixels (e.g. SpaceNet Rotterdam).
"""
from __future__ import annotations

import functools

import numpy as np

from .errors import ConfigError
from .mtf import convolve_replicate, mtf_kernel
from .resample import UPSAMPLE_REACH, decimate, upsample
from .target import Base, TargetSpec

FLOOR = 0.01  # smallest P_LP divided by, in full-scale-normalised units
MAX_GAIN = 4.0  # largest P / P_LP applied to the MS
KERNEL_SIZE = 41  # the MTF low-pass filter's side (the toolbox's)
_kernel = functools.lru_cache(maxsize=8)(mtf_kernel)  # one design per (gain, ratio, size), not one per tile


def base_context(target: TargetSpec, ratio: int) -> int:
    """PAN pixels of context the base needs around a tile to equal the whole scene's there: none for the
    upsampled MS; for the GLP ratio the low-pass's reach plus the interpolator's, a multiple of ``ratio``."""
    if target.base is Base.UPSAMPLED:
        return 0
    return -(-(KERNEL_SIZE // 2 + UPSAMPLE_REACH * ratio) // ratio) * ratio


def glp_modulation(pan: np.ndarray, ratio: int, gain: float) -> np.ndarray:
    """(H, W) → (H, W) float32 P / P_LP of a normalised PAN whose sides are multiples of ``ratio``."""
    p = pan.astype(np.float32)
    blurred = convolve_replicate(p, _kernel(gain, ratio, KERNEL_SIZE), np.float32)  # (H, W)
    low = upsample(decimate(blurred, ratio), ratio)  # (H, W)
    return np.clip(p / np.maximum(low, FLOOR), 0.0, MAX_GAIN).astype(np.float32)


def residual_base(target: TargetSpec, lms: np.ndarray, guide: np.ndarray, ratio: int, context: int = 0) -> np.ndarray:
    """The base of ``target`` for normalised lms (..., C, H, W) and guide (..., k, H + 2·context, W + 2·context)
    (``context`` PAN pixels around lms's window, e.g. ``base_context``); lms itself for the upsampled-MS base."""
    if target.base is Base.UPSAMPLED:
        return lms
    if guide.shape[-3] != 1:
        raise ConfigError(f"the {target.base.value} base needs a one-band PAN guide, got {guide.shape[-3]} bands")
    h, w = lms.shape[-2:]
    pans = guide.reshape((-1,) + guide.shape[-2:])  # (N, H + 2c, W + 2c)
    mod = np.stack([glp_modulation(p, ratio, target.base_gain)[context:context + h, context:context + w]
                    for p in pans]).reshape(guide.shape[:-2] + (h, w))  # (..., 1, H, W)
    return (lms * mod).astype(lms.dtype, copy=False)  # (..., C, H, W)
