"""Back-projection of a fused image onto its MS: the fused image, blurred by an MTF and decimated, should give
back the MS it was made from (Wald's consistency property).

Neither the network's correction nor a classical detail injection keeps that property on a sensor whose MTF
differs from what they assume; one step ``fused += upsample(ms − decimate(mtf_lowpass(fused)))`` moves the
low frequencies back onto the measured MS and leaves the PAN's detail where it is. With generic MTFs (the sensor
is unknown at run time) two steps lower ERGAS and SAM on every bundled model's validation and test strips, and ERGAS
on every leave-one-sensor-out fold (SAM on all but WorldView-2; ``python -m benchmarks.quality …
--also-projections 0``, model card).
"""
from __future__ import annotations

import numpy as np

from .mtf import DEFAULT_MS_GAIN, lowpass_decimate
from .resample import UPSAMPLE_REACH, decimate, upsample
from .tiling import pad_symmetric

ROUND_OFF = 1e-6  # float32 filtering's round-off, in units of the inputs' scale: a smaller step is not added
DEFAULT_PROJECTIONS = 2  # steps: the validation strips gain 1.3 % ERGAS from the first, 0.4 % from the second


def project_onto_ms(fused: np.ndarray, lms: np.ndarray, ratio: int, steps: int,
                    gain: float = DEFAULT_MS_GAIN) -> np.ndarray:
    """``fused`` (N, C, H, W) moved ``steps`` times towards consistency with the MS that ``lms`` (N, C, H, W) is
    the upsampling of (``decimate(lms)`` is that MS exactly), through an MTF of Nyquist ``gain``; float32, same
    shape. A tile's edges are mirrored for the upsampling, so tiles blend as the whole image would."""
    if steps <= 0:
        return fused
    n, c, h, w = fused.shape
    ms = decimate(np.moveaxis(lms, (0, 1), (2, 3)), ratio)  # (h/r, w/r, N, C)
    out = np.ascontiguousarray(fused, np.float32)
    reach = UPSAMPLE_REACH
    for _ in range(steps):
        low = lowpass_decimate(out, gain, ratio)  # (N, C, h/r, w/r)
        missing = ms - np.moveaxis(low, (0, 1), (2, 3))  # (h/r, w/r, N, C)
        padded = pad_symmetric(missing.reshape(missing.shape[:2] + (n * c,)), ((reach, reach), (reach, reach)))
        up = upsample(padded, ratio)[reach * ratio:reach * ratio + h, reach * ratio:reach * ratio + w]  # (H, W, N·C)
        up[np.abs(up) < ROUND_OFF] = 0.0  # filtering round-off is no signal: an all-zero area stays zero
        out = out + np.moveaxis(up.reshape(h, w, n, c), (2, 3), (0, 1)).astype(np.float32)
    return out
