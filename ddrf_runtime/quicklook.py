"""A side-by-side PNG (MS upsampled | PAN | fused [| spread]) for a human to judge a fusion at a glance."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

MAX_SIDE = 1024  # quicklook panels are decimated to at most this many pixels per side
# Spread colour ramp (dark blue → red → yellow): anchors at equal steps of the stretched spread.
_SPREAD_RAMP = np.array([[0, 0, 40], [80, 20, 140], [200, 40, 60], [250, 150, 0], [255, 255, 160]], np.float64)


def rgb_indices(bands: Sequence[str]) -> tuple[int, int, int]:
    """Channel indices of R, G, B by canonical band name; the first three bands otherwise."""
    names = [b.upper() for b in bands]
    if all(c in names for c in ("R", "G", "B")):
        return names.index("R"), names.index("G"), names.index("B")
    return (0, 1, 2) if len(names) >= 3 else (0, 0, 0)


def _stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Linear stretch to 0..255 between per-channel percentiles."""
    scaled = (img.astype(np.float64) - lo) / np.maximum(hi - lo, 1e-12)
    return (np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def spread_colours(spread: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """(H, W) spread → (H, W, 3) uint8 on a colour ramp from 0 to the spread's ``percentile``."""
    top = float(np.nanpercentile(spread, percentile)) if np.isfinite(spread).any() else 0.0
    pos = np.clip(np.nan_to_num(spread / max(top, 1e-12)), 0.0, 1.0) * (len(_SPREAD_RAMP) - 1)  # (H, W)
    i = np.minimum(pos.astype(np.int64), len(_SPREAD_RAMP) - 2)
    frac = (pos - i)[..., None]
    return (_SPREAD_RAMP[i] * (1 - frac) + _SPREAD_RAMP[i + 1] * frac + 0.5).astype(np.uint8)


def make_quicklook(ms: np.ndarray, pan: np.ndarray, fused: np.ndarray, bands: Sequence[str],
                   path: str | os.PathLike, percentiles: tuple[float, float] = (2.0, 98.0),
                   spread: np.ndarray | None = None) -> None:
    """Write MS (nearest-upsampled), PAN and fused true-colour panels side by side, and the spread if given.

    ms (h, w, C), pan (H, W), fused (H, W, C), spread (H, W) (e.g. the samples' std). MS and fused share one
    stretch (taken from the fused image), so colour differences between the panels are real, not a display
    artefact; the spread panel runs from 0 (dark) to its 99th percentile (yellow).
    """
    step = max(1, int(np.ceil(max(fused.shape[:2]) / MAX_SIDE)))
    idx = list(rgb_indices(bands))
    fused_rgb = fused[::step, ::step, idx]  # (H', W', 3)
    ratio = fused.shape[0] // ms.shape[0]
    ms_up = np.repeat(np.repeat(ms[..., idx], ratio, axis=0), ratio, axis=1)[: fused.shape[0], : fused.shape[1]]
    ms_rgb = ms_up[::step, ::step]
    lo, hi = np.nanpercentile(fused_rgb.reshape(-1, 3), percentiles, axis=0)
    pan_s = pan[::step, ::step]
    plo, phi = np.nanpercentile(pan_s, percentiles)
    pan_rgb = np.repeat(_stretch(pan_s, plo, phi)[..., None], 3, axis=2)
    gap = np.full((fused_rgb.shape[0], 8, 3), 255, np.uint8)
    panels = [_stretch(ms_rgb, lo, hi), gap, pan_rgb, gap, _stretch(fused_rgb, lo, hi)]
    if spread is not None:
        panels += [gap, spread_colours(spread[::step, ::step])]
    panel = np.concatenate(panels, axis=1)
    Image.fromarray(panel).save(path, format="PNG")
