"""Per-pixel uncertainty from several diffusion samples: statistics per tile, their blendable form, summaries.

Pure functions (numpy, scipy). A tile's N fused samples become one array of *blendable* channels — the per-band
mean (C), the per-band variance (C) and the spectral angle spread (1) — so the orchestrator blends them across tile
overlaps with the same weights as the fused image (seamless, and memory flat in N: only these 2C + 1 channels are kept).
``spread_bands`` turns blended channels into the sidecar's bands: per-band standard deviation in the output's
units, then the spectral spread in degrees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

SPREAD_HIST_BINS = 4096  # resolution of the streamed percentiles: 1/4096 of the histogram's range


def spread_channels(bands: int) -> int:
    """Blendable channels a tile carries besides its ``bands`` mean bands: C variances and one angle."""
    return bands + 1


def spectral_angle_spread(samples: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Mean angle (degrees) between each sample's spectrum and the mean spectrum: shape (...).

    ``samples`` (N, ..., C) and ``mean`` (..., C) share units. The angle is atan2(|a⊥|, a·m̂): accurate in
    float32 for the tiny angles samples differ by (arccos of a cosine near 1 is not). A zero spectrum spreads 0°.
    """
    x = samples.astype(np.float32, copy=False)  # (N, ..., C)
    m = mean.astype(np.float32, copy=False)
    norm = np.linalg.norm(m, axis=-1, keepdims=True)  # (..., 1)
    unit = np.divide(m, norm, out=np.zeros_like(m), where=norm > 0)  # (..., C)
    along = np.einsum("n...c,...c->n...", x, unit)  # (N, ...)
    across = np.linalg.norm(x - along[..., None] * unit, axis=-1)  # (N, ...)
    angle = np.degrees(np.arctan2(across, along))
    return np.where((norm[..., 0] > 0) & (np.linalg.norm(x, axis=-1) > 0), angle, 0.0).mean(axis=0, dtype=np.float64)


def sample_statistics(samples: np.ndarray) -> np.ndarray:
    """N samples (N, ..., C) → blendable channels (..., 2C + 1) float32: mean, variance (ddof 1), angle spread.

    With one sample the variance and the spread are 0 (nothing was observed to differ).
    """
    n = samples.shape[0]
    mean = samples.mean(axis=0, dtype=np.float64).astype(np.float32)  # (..., C); float32 samples, few of them
    var = samples.var(axis=0, ddof=1, dtype=np.float64) if n > 1 else np.zeros_like(mean)
    angle = spectral_angle_spread(samples, mean)[..., None]  # (..., 1)
    return np.concatenate([mean, var, angle], axis=-1).astype(np.float32)


def pool_spread(channels: np.ndarray, bands: int, sigma: float) -> np.ndarray:
    """Tiles' blendable channels (n, H, W, 2C + 1) with their spread channels (after the C mean bands)
    Gaussian-averaged over ``sigma`` pixels, in place; 0 leaves them per pixel.

    A variance estimated from a few samples is noisy (relative error ≈ 1/√(2(N−1))); pooling it over neighbours
    steadies it. Tile edges are mirrored: they carry near-zero blend weight wherever another tile overlaps.
    """
    if sigma > 0:
        channels[..., bands:] = ndimage.gaussian_filter(channels[..., bands:], (0, sigma, sigma, 0), mode="mirror")
    return channels


def spread_bands(blended: np.ndarray, bands: int) -> np.ndarray:
    """Blended spread channels (..., C + 1) (variances, angle) → sidecar bands (..., C + 1): std per band, angle."""
    std = np.sqrt(np.maximum(blended[..., :bands], 0.0))  # blending rounding can leave −0-ish variances
    return np.concatenate([std, blended[..., bands:bands + 1]], axis=-1).astype(np.float32)


def band_descriptions(band_names: Sequence[str], samples: int, sigma: float) -> list[str]:
    """Sidecar band descriptions: what each band measures, over what, and in which units."""
    pooled = f", pooled over a {sigma:g}-pixel Gaussian" if sigma > 0 else ""
    return [f"std {b} over {samples} samples{pooled} (output units)" for b in band_names] + \
        [f"mean spectral angle of {samples} samples to their mean{pooled} (degrees)"]


@dataclass
class SpreadSummary:
    """Streamed summary of the sidecar (mean, percentiles from a fixed histogram, max) in bounded memory.

    ``ranges`` gives each band's histogram range; values above it fall in the last bin (the max stays exact).
    """

    names: Sequence[str]  # one per sidecar band
    ranges: Sequence[float]  # histogram upper limit per band (the lower limit is 0)
    count: int = 0
    sums: np.ndarray = field(init=False)
    maxima: np.ndarray = field(init=False)
    hists: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        k = len(self.names)
        self.sums, self.maxima = np.zeros(k), np.zeros(k)
        self.hists = np.zeros((k, SPREAD_HIST_BINS), np.int64)

    def add(self, bands: np.ndarray, valid: np.ndarray) -> None:
        """Add sidecar pixels (rows, cols, K) where ``valid`` (rows, cols)."""
        values = bands[valid].astype(np.float64)  # (n, K)
        if not values.size:
            return
        self.count += values.shape[0]
        self.sums += values.sum(axis=0)
        self.maxima = np.maximum(self.maxima, values.max(axis=0))
        for b, top in enumerate(self.ranges):
            idx = np.minimum((values[:, b] / top * SPREAD_HIST_BINS).astype(np.int64), SPREAD_HIST_BINS - 1)
            self.hists[b] += np.bincount(np.maximum(idx, 0), minlength=SPREAD_HIST_BINS)

    def _percentile(self, b: int, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (within 1/SPREAD_HIST_BINS of the range)."""
        cum = np.cumsum(self.hists[b])
        i = int(np.searchsorted(cum, q / 100.0 * cum[-1]))
        return min(float(self.ranges[b]) * (i + 1) / SPREAD_HIST_BINS, float(self.maxima[b]))

    def as_dict(self) -> dict:
        if not self.count:
            return {"pixels": 0}
        return {"pixels": self.count, "bands": {
            name: {"mean": float(self.sums[b] / self.count), "p50": self._percentile(b, 50),
                   "p95": self._percentile(b, 95), "max": float(self.maxima[b])}
            for b, name in enumerate(self.names)}}
