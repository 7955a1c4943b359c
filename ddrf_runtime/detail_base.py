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

import numpy as np

from .errors import ConfigError
from .mtf import convolve_replicate, mtf_kernel
from .resample import decimate, upsample
from .target import Base, TargetSpec

FLOOR = 0.01  # smallest P_LP divided by, in full-scale-normalised units
MAX_GAIN = 4.0  # largest P / P_LP applied to the MS


def glp_modulation(pan: np.ndarray, ratio: int, gain: float) -> np.ndarray:
    """(H, W) → (H, W) float32 P / P_LP of a normalised PAN whose sides are multiples of ``ratio``."""
    p = pan.astype(np.float64)
    low = upsample(decimate(convolve_replicate(p, mtf_kernel(gain, ratio)), ratio), ratio)  # (H, W)
    return np.clip(p / np.maximum(low, FLOOR), 0.0, MAX_GAIN).astype(np.float32)


def residual_base(target: TargetSpec, lms: np.ndarray, guide: np.ndarray, ratio: int) -> np.ndarray:
    """The base of ``target`` for normalised lms (..., C, H, W) and guide (..., k, H, W); lms itself when it is
    the upsampled-MS base (no copy)."""
    if target.base is Base.UPSAMPLED:
        return lms
    if guide.shape[-3] != 1:
        raise ConfigError(f"the {target.base.value} base needs a one-band PAN guide, got {guide.shape[-3]} bands")
    pans = guide.reshape((-1,) + guide.shape[-2:])  # (N, H, W)
    mod = np.stack([glp_modulation(p, ratio, target.base_gain) for p in pans]).reshape(guide.shape)  # (..., 1, H, W)
    return (lms * mod).astype(lms.dtype, copy=False)  # (..., C, H, W)
