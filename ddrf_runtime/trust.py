"""How much of the network's correction a scene keeps, judged where the scene is its own reference: one scale down.

A residual model outputs base + correction. On a sensor unlike those it was trained on, the correction can make
the fusion worse than the classical base and than the best classical method (leave-one-sensor-out after 12,000
steps: Osman ERGAS 2.564 against 2.477 for its base and 2.513 for MTF-GLP-HPM, Landsat-7 2.489 against 2.463 and
2.457 for MTF-GLP-FS). Degrading the scene's central window once more makes a Wald pair whose reference is the
scene itself; there λ, the least-squares weight of the network's correction onto what the base misses, says
whether the correction points the right way. On held-out sensors it follows the best weight at the native scale;
on the sensors a model was trained on it under-states it (their correction is learnt at their own scale: 0.40–0.62
on the 4-band test strips whose best native weight is 1.03–1.43). So λ is not used as it is: the correction is
kept in full from ``TRUST_FIT`` up and scaled by λ / ``TRUST_FIT`` below (``python -m benchmarks.trust``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .mtf import DEFAULT_MS_GAIN, DEFAULT_PAN_GAIN, lowpass_decimate

# λ from which the correction is kept in full: below every strip-sized seen sample's (0.395 lowest of 18), above the
# held-out ones where the correction hurt (Osman −0.01, Landsat-7 0.16–0.50 at 12,000 steps; results/trust_*).
TRUST_FIT = 0.35
MIN_FIT_SIDE = 8  # MS pixels a side one scale down below which a window carries too little to fit λ on


class Trust(str, enum.Enum):
    """Whether the network's correction is weighted by a fit on the scene one scale down."""

    FITTED = "fitted"  # correction × min(1, λ / TRUST_FIT), λ fitted on the central fit window one scale down
    FULL = "full"  # the correction as the network predicts it


@dataclass(frozen=True)
class TrustFit:
    """The weight a scene's network correction gets, and the evidence for it (the run report's ``trust``)."""

    weight: float  # multiplies the network's correction (x0); 1 = as predicted
    fit: float | None = None  # λ one scale down; None: not fitted
    why: str = "fitted one scale down"  # what decided the weight

    def as_dict(self) -> dict[str, object]:
        return {"weight": round(self.weight, 4), "fit": None if self.fit is None else round(self.fit, 4),
                "why": self.why}


def correction_weight(fused: np.ndarray, base: np.ndarray, reference: np.ndarray,
                      valid: np.ndarray | None = None) -> float:
    """λ: the least-squares weight of the correction (fused − base) onto what the base misses (reference − base),
    all (h, w, C) on one grid, over the ``valid`` (h, w) pixels (all if None); 0 for a correction of zero."""
    keep = (slice(None),) if valid is None else (valid,)
    d = (fused - base)[keep].astype(np.float64).ravel()  # the network's correction
    e = (reference - base)[keep].astype(np.float64).ravel()  # what the base misses
    dd = float(d @ d)
    return float(d @ e) / dd if dd > 0 else 0.0


def trust_from_fit(fit: float) -> TrustFit:
    """The weight for a λ fitted one scale down: 1 from ``TRUST_FIT`` up, λ / ``TRUST_FIT`` below, never < 0."""
    return TrustFit(float(np.clip(fit / TRUST_FIT, 0.0, 1.0)), fit)


def _reduce(img: np.ndarray, gain: float, ratio: int) -> np.ndarray:
    """Wald's reduction of a channels-last image, (H, W[, C]) → (H/r, W/r[, C]) float32 (``mtf.lowpass_decimate``)."""
    planes = np.moveaxis(img.reshape(img.shape[:2] + (-1,)), -1, 0)  # (C', H, W)
    out = np.moveaxis(lowpass_decimate(planes, gain, ratio), 0, -1)  # (H/r, W/r, C')
    return out.reshape(out.shape[:2] + img.shape[2:])


def one_scale_down(ms: np.ndarray, pan: np.ndarray, ratio: int,
                   full_scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The Wald pair of a window, ms (h, w, C) and pan (ratio·h, ratio·w[, k]) in DN, with generic MTFs (as the
    base's gains are fitted): (ms (h/r, w/r, C), pan (h, w[, k])) float32 in [0, full scale], the window cropped
    to multiples of the ratio; None when it is under ``MIN_FIT_SIDE`` MS pixels a side one scale down."""
    h, w = ms.shape[0] // ratio * ratio, ms.shape[1] // ratio * ratio
    if min(h, w) < MIN_FIT_SIDE * ratio:
        return None
    ms_r = _reduce(ms[:h, :w], DEFAULT_MS_GAIN, ratio)  # (h/r, w/r, C)
    pan_r = _reduce(pan[:h * ratio, :w * ratio], DEFAULT_PAN_GAIN, ratio)  # (h, w[, k])
    return (np.clip(ms_r, 0, full_scale).astype(np.float32, copy=False),
            np.clip(pan_r, 0, full_scale).astype(np.float32, copy=False))
