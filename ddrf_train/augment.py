"""Radiometric jitter of training crops: vary what differs between sensors so a model holds up on new ones.

Leave-one-sensor-out showed the model leaning on the radiometry of the sensors it saw. These draws change
brightness, per-band calibration and the PAN's response and noise, but never the geometry, and they keep the
Wald relation between a crop's lms and gt: a band's lms and gt get the same factor, so its residual target
(gt − lms) is scaled, not distorted. Pure function of the arrays and one numpy Generator (checkpointed).
"""
from __future__ import annotations

import numpy as np

from .config import RadiometricConfig


def _log_uniform(rng: np.random.Generator, spread: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.exp(rng.uniform(-spread, spread, size=shape)).astype(np.float32)


def jitter(lms: np.ndarray, pan: np.ndarray, gt: np.ndarray, base: np.ndarray, cfg: RadiometricConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Jittered copies of normalised crops lms, gt, base (B, C, P, P) and pan (B, k, P, P); unchanged when off.

    The base (``ddrf_runtime.detail_base``) scales with its MS band; a PAN gain leaves the GLP bases unchanged
    (it cancels in P / P_LP, and scales the histogram-matching offsets with P) and so does PAN noise here (the
    base keeps its noise-free ratio).

    Draw order is fixed (gain, band gain, PAN gain, PAN noise), and a switched-off jitter draws nothing, so
    a run without jitter sees the exact crops it saw before the lever existed.
    """
    if not cfg.active:
        return lms, pan, gt, base
    b, c = lms.shape[:2]
    ms_factor = np.ones((b, c, 1, 1), np.float32)  # (B, C, 1, 1)
    pan_factor = np.ones((b, 1, 1, 1), np.float32)  # (B, 1, 1, 1)
    if cfg.gain:
        g = _log_uniform(rng, cfg.gain, (b, 1, 1, 1))
        ms_factor, pan_factor = ms_factor * g, pan_factor * g
    if cfg.band_gain:
        ms_factor = ms_factor * _log_uniform(rng, cfg.band_gain, (b, c, 1, 1))
    if cfg.pan_gain:
        pan_factor = pan_factor * _log_uniform(rng, cfg.pan_gain, (b, 1, 1, 1))
    pan = pan * pan_factor
    if cfg.pan_noise:
        std = cfg.pan_noise * pan.mean(axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
        pan = pan + std * rng.standard_normal(pan.shape).astype(np.float32)
    return lms * ms_factor, pan.astype(np.float32, copy=False), gt * ms_factor, base * ms_factor
