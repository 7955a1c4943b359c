"""The base image a residual model corrects: the upsampled MS, or a classical MTF-GLP ratio injection (with or
without histogram matching).

``Base.GLP_RATIO`` is high-pass modulation without histogram matching (SFIM with an MTF-GLP low-pass):
base_k = lms_k · P / P_LP, P_LP the PAN blurred with a Gaussian MTF of Nyquist gain ``base_gain``, decimated and
re-interpolated like the MS. It needs no scene statistics and no sensor table, so a tile gives the same base as
the whole scene away from its edges, and it keeps the MS's spectral angles (SAM of the base = SAM of lms). A
PAN gain cancels in P / P_LP, which is why an unseen sensor's radiometry does not change the injected detail.
Interpolation overshoot next to dark pixels can drive P_LP to ~0; the ratio divides by at least ``FLOOR`` and is
clipped to [0, ``MAX_GAIN``], which on real scenes only ever touches a handful of pixels (e.g. SpaceNet Rotterdam).

``Base.GLP_HPM`` adds MTF-GLP-HPM's histogram matching: the PAN matched to band k's mean and contrast,
(P − μ_P)·σ_k/σ_P + μ_k, turns the ratio into (P + c_k) / (P_LP + c_k) with one offset per band,
c_k = μ_k·σ_P/σ_k − μ_P. A band whose mean is large next to its contrast (haze, path radiance in the blue) gets
less of the PAN's modulation, which is what restores spectral angles on hazy VHR scenes (Osman SAM 2.82° → 2.12°
with no network). Offsets are kept ≥ 0: a negative one amplifies the PAN's contrast, which on the shared scenes
helped WorldView-2/3 a little but hurt GeoEye-1, Landsat-7 and SpaceNet Rotterdam more. They are scene statistics
(``MatchMoments``), measured on the MS grid (the PAN box-averaged onto it), so a whole scene sums them block by
block and every tile gets the same.

``Base.GLP_HPM_FIT`` scales that detail per band: base_k = lms_k + g_k·(HPM_k − lms_k). The gains come from the
scene itself one scale down (``fit_gains``): its MS and PAN degraded once more by the ratio (the toolbox's generic
MTFs, the sensor being unknown), fused by MTF-GLP-HPM, and each band's detail regressed onto the MS it should
give, as regression-based classical methods estimate injection gains. On the held-out sensors of the leave-one-
sensor-out benchmark (Osman, WorldView-3, GeoEye-1) the gains took the base alone from 6–8 % worse than the best
classical method (ERGAS) to 0–3 % better, and the network trained on it to 1–8 % better (WorldView-2: 7 %).
Unlike a gain fitted on the network's output it does not assume that the network is scale-invariant: the network
learns its correction on top of the fitted base, at its own scale, in training and at run time alike. The network
does not see the gains, so on sensors it trained on, where it could have learnt the right amount of detail itself,
it pays a little.
Gains that differ between bands change the ratios between bands, i.e. the spectral angles that HPM's common
modulation keeps; ``TargetSpec.gain_pooling`` pulls each band's gain toward the one gain fitted to all bands jointly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ConfigError
from .mtf import DEFAULT_MS_GAIN, DEFAULT_PAN_GAIN, KERNEL_SIZE, lowpass_decimate
from .resample import UPSAMPLE_REACH, upsample
from .target import Base, TargetSpec

FLOOR = 0.01  # smallest P_LP divided by, in full-scale-normalised units
MAX_GAIN = 4.0  # largest P / P_LP applied to the MS
MAX_OFFSET = 100.0  # largest histogram-matching offset (full-scale units): a flat band gets ~no PAN modulation
MAX_DETAIL_GAIN = 3.0  # largest fitted detail gain (observed on the shared 4-band pairs: 0–2.1)
FIT_MS_SIDE = 512  # detail gains are fitted on the central window of at most this many MS pixels a side: 0.08 s
# of one thread for a 512² MS window (2048² PAN; 0.65 s with the FFT low-pass), 0.3 s for 1024²; every shared
# training pair fits whole


def base_context(target: TargetSpec, ratio: int) -> int:
    """PAN pixels of context the base needs around a tile to equal the whole scene's there: none for the
    upsampled MS; for the GLP ratio the low-pass's reach plus the interpolator's, a multiple of ``ratio``."""
    if target.base is Base.UPSAMPLED:
        return 0
    return -(-(KERNEL_SIZE // 2 + UPSAMPLE_REACH * ratio) // ratio) * ratio


def box_mean(img: np.ndarray, ratio: int) -> np.ndarray:
    """(..., H, W) → (..., H/ratio, W/ratio): each ratio² block's mean (the PAN on the MS grid)."""
    h, w = img.shape[-2:]
    blocks = img.reshape(img.shape[:-2] + (h // ratio, ratio, w // ratio, ratio))
    return blocks.mean(axis=(-3, -1), dtype=np.float64)


@dataclass(frozen=True, eq=False)  # holds arrays
class MatchMoments:
    """Sums over valid MS-grid pixels that give the histogram-matching offsets and the scene's brightness; they
    add up, so a scene read block by block gets exactly the statistics of the whole."""

    n: float  # valid MS pixels
    ms: np.ndarray  # (C,) Σ of each normalised MS band
    ms2: np.ndarray  # (C,) Σ of its squares
    pan: float  # Σ of the normalised PAN box-averaged onto the MS grid
    pan2: float  # Σ of its squares
    lit: float  # valid MS pixels with any band above 0 (an all-zero pixel is fill a raster did not declare)

    @classmethod
    def of(cls, ms: np.ndarray, pan_lr: np.ndarray, valid: np.ndarray | None = None) -> "MatchMoments":
        """Moments of normalised ms (C, h, w) and pan_lr (h, w) over ``valid`` (h, w) pixels (all if None)."""
        m = np.asarray(ms, np.float64).reshape(ms.shape[0], -1)  # (C, h·w)
        p = np.asarray(pan_lr, np.float64).reshape(-1)  # (h·w,)
        if valid is not None:
            keep = np.asarray(valid, bool).reshape(-1)
            m, p = m[:, keep], p[keep]
        return cls(float(p.size), m.sum(axis=1), (m * m).sum(axis=1), float(p.sum()), float((p * p).sum()),
                   float(np.count_nonzero(m.max(axis=0, initial=0.0) > 0)))

    @classmethod
    def empty(cls, bands: int) -> "MatchMoments":
        """No pixels yet: the start of a block-by-block sum."""
        return cls(0.0, np.zeros(bands), np.zeros(bands), 0.0, 0.0, 0.0)

    def __add__(self, other: "MatchMoments") -> "MatchMoments":
        return MatchMoments(self.n + other.n, self.ms + other.ms, self.ms2 + other.ms2,
                            self.pan + other.pan, self.pan2 + other.pan2, self.lit + other.lit)

    def ms_mean(self) -> float:
        """Mean of the normalised MS over its bands and lit pixels (0 without any): the scene's brightness, which
        black fill around a scene's footprint would otherwise dilute."""
        return float(self.ms.sum() / (self.lit * self.ms.size)) if self.lit else 0.0

    def offsets(self) -> np.ndarray:
        """(C,) float32 c_k = μ_k·σ_P/σ_k − μ_P in [0, MAX_OFFSET]; 0 for a scene without valid pixels."""
        if self.n == 0:
            return np.zeros(self.ms.shape, np.float32)
        mu, mu_p = self.ms / self.n, self.pan / self.n
        sd = np.sqrt(np.maximum(self.ms2 / self.n - mu * mu, 0.0))
        sd_p = np.sqrt(max(self.pan2 / self.n - mu_p * mu_p, 0.0))
        c = np.where(sd > 1e-9, mu * sd_p / np.maximum(sd, 1e-9) - mu_p, MAX_OFFSET)
        return np.clip(c, 0.0, MAX_OFFSET).astype(np.float32)


def match_offsets(ms: np.ndarray, pan: np.ndarray, ratio: int) -> np.ndarray:
    """(C,) offsets of a whole normalised scene: ms (C, h, w) and its one-band pan (ratio·h, ratio·w)."""
    return MatchMoments.of(ms, box_mean(pan, ratio)).offsets()


def fit_window(height: int, width: int, ratio: int) -> tuple[int, int, int, int]:
    """(row, col, rows, cols) in MS pixels of the central window the detail gains are fitted on: at most
    ``FIT_MS_SIDE`` a side, sides a multiple of ``ratio`` (a whole scene gets the same gains tiled or not)."""
    rows = min(height, FIT_MS_SIDE) // ratio * ratio
    cols = min(width, FIT_MS_SIDE) // ratio * ratio
    return (height - rows) // 2, (width - cols) // 2, rows, cols


def fit_gains(ms: np.ndarray, pan: np.ndarray, ratio: int, gain: float,
              valid: np.ndarray | None = None, pooling: float = 0.0) -> np.ndarray:
    """(C,) float32 detail gains of a normalised scene window, ms (C, h, w) and its one-band pan (ratio·h, ratio·w),
    sides multiples of ``ratio``; ``valid`` (h, w) marks the MS pixels the regression may use (all if None).

    The window's Wald pair one scale down (generic MTFs) is fused by MTF-GLP-HPM with ``gain`` and its own
    offsets; per band, the least-squares gain of that detail onto the MS's, clipped to [0, MAX_DETAIL_GAIN].
    ``pooling`` (``TargetSpec.gain_pooling``) mixes in the one gain fitted to all bands jointly: different gains
    per band change the ratios between bands, i.e. the spectral angles that HPM's common modulation keeps.
    A band without detail to regress (flat, or a window under two MS pixels a side one scale down) keeps 1.
    """
    c, h, w = ms.shape
    if h < 2 * ratio or w < 2 * ratio:
        return np.ones(c, np.float32)
    ms_r = lowpass_decimate(ms, DEFAULT_MS_GAIN, ratio)  # (C, h/r, w/r)
    pan_r = lowpass_decimate(pan, DEFAULT_PAN_GAIN, ratio)  # (h, w): MS grid
    lms_r = upsample(ms_r.transpose(1, 2, 0), ratio).transpose(2, 0, 1)  # (C, h, w)
    offsets = match_offsets(ms_r, pan_r, ratio)
    detail = (lms_r * (glp_modulation(pan_r, ratio, gain, offsets) - 1.0)).reshape(c, -1)  # (C, h·w)
    missing = (ms - lms_r).reshape(c, -1)  # (C, h·w): what the detail should add
    if valid is not None:
        keep = np.asarray(valid, bool).reshape(-1)
        detail, missing = detail[:, keep], missing[:, keep]
    detail, missing = detail.astype(np.float64), missing.astype(np.float64)
    power, cross = (detail * detail).sum(axis=1), (detail * missing).sum(axis=1)  # (C,), (C,)
    per_band = np.clip(cross / np.maximum(power, 1e-12), 0.0, MAX_DETAIL_GAIN)
    joint = np.clip(cross.sum() / max(power.sum(), 1e-12), 0.0, MAX_DETAIL_GAIN)
    return np.where(power > 1e-9, (1.0 - pooling) * per_band + pooling * joint, 1.0).astype(np.float32)


@dataclass(frozen=True, eq=False)  # holds arrays
class SceneBase:
    """What the scene decides for the base of every tile, so that a tile's base equals the whole scene's there."""

    offsets: np.ndarray  # (C,) histogram-matching offsets c_k, normalised units (``MatchMoments.offsets``)
    gains: np.ndarray | None = None  # (C,) detail gains g_k (``fit_gains``; Base.GLP_HPM_FIT), else None

    def as_dict(self) -> dict[str, list[float]]:
        """The statistics for a run report (rounded)."""
        out = {"offsets": [round(float(v), 6) for v in self.offsets]}
        if self.gains is not None:
            out["gains"] = [round(float(v), 4) for v in self.gains]
        return out


def scene_statistics(target: TargetSpec, moments: MatchMoments, to_unit: float, ratio: int,
                     fit_inputs: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> SceneBase | None:
    """The scene's base statistics in network units (None for bases that need none), one rule for a scene in
    memory and one read block by block: the offsets from its ``moments`` (normalised by the full scale, the unit
    ``MAX_OFFSET`` is in) × ``to_unit``, and for ``Base.GLP_HPM_FIT`` the detail gains fitted on what
    ``fit_inputs()`` returns, called only then: the ``fit_window``'s ms (C, h, w) and pan (ratio·h, ratio·w)
    normalised like the moments, and its valid MS pixels (h, w) (None: all)."""
    if not target.base.needs_scene_statistics:
        return None
    unit = np.float32(to_unit)
    offsets = moments.offsets() * unit  # (C,)
    if target.base is Base.GLP_HPM:
        return SceneBase(offsets)
    ms, pan, valid = fit_inputs()
    return SceneBase(offsets, fit_gains(ms * unit, pan * unit, ratio, target.base_gain, valid, target.gain_pooling))


def glp_lowpass(pan: np.ndarray, ratio: int, gain: float) -> np.ndarray:
    """(H, W) → (H, W) float32 P_LP of a normalised PAN whose sides are multiples of ``ratio``: MTF-blurred,
    decimated and re-interpolated like the MS."""
    return upsample(lowpass_decimate(pan, gain, ratio), ratio)  # (H, W)


def glp_modulation(pan: np.ndarray, ratio: int, gain: float, offsets: np.ndarray | None = None,
                   context: int = 0) -> np.ndarray:
    """(H, W) → (H', W') float32 P / P_LP, or with ``offsets`` (C,) → (C, H', W') (P + c_k) / (P_LP + c_k), where
    (H', W') is the window ``context`` pixels inside the PAN: the low-pass sees all of it, the ratio (per band
    with offsets) is formed only where it is kept."""
    p = pan.astype(np.float32)
    h, w = p.shape
    inner = (slice(context, h - context), slice(context, w - context))
    low = glp_lowpass(p, ratio, gain)[inner]  # (H', W')
    p = p[inner]
    if offsets is not None:
        c = np.asarray(offsets, np.float32)[:, None, None]  # (C, 1, 1)
        p, low = p + c, low + c  # (C, H, W)
    return np.clip(p / np.maximum(low, FLOOR), 0.0, MAX_GAIN).astype(np.float32)


def residual_base(target: TargetSpec, lms: np.ndarray, guide: np.ndarray, ratio: int, context: int = 0,
                  scene: SceneBase | None = None) -> np.ndarray:
    """The base of ``target`` for normalised lms (..., C, H, W) and guide (..., k, H + 2·context, W + 2·context)
    (``context`` PAN pixels around lms's window, e.g. ``base_context``); lms itself for the upsampled-MS base.

    ``scene``: the scene's statistics (``Base.GLP_HPM``: offsets; ``GLP_HPM_FIT``: offsets and gains). Without
    them a GLP_HPM base measures its offsets on these arrays (treats them as the whole scene); GLP_HPM_FIT,
    whose gains need the scene one scale down, cannot.
    """
    if target.base is Base.UPSAMPLED:
        return lms
    if guide.shape[-3] != 1:
        raise ConfigError(f"the {target.base.value} base needs a one-band PAN guide, got {guide.shape[-3]} bands")
    h, w = lms.shape[-2:]
    pans = guide.reshape((-1,) + guide.shape[-2:])  # (N, H + 2c, W + 2c)
    offsets, gains = (None, None) if scene is None else (scene.offsets, scene.gains)
    if target.base is Base.GLP_RATIO:
        offsets = None
    elif target.base is Base.GLP_HPM_FIT and gains is None:
        raise ConfigError("the glp_hpm_fit base needs the scene's detail gains (SceneBase.gains)")
    elif offsets is None:
        c = lms.shape[-3]
        inner = pans[:, context:context + h, context:context + w]  # (N, H, W)
        ms = box_mean(lms.reshape((-1, c, h, w)), ratio).transpose(1, 0, 2, 3)  # (C, N, h, w)
        offsets = MatchMoments.of(ms, box_mean(inner, ratio)).offsets()
    mod = np.stack([glp_modulation(p, ratio, target.base_gain, offsets, context) for p in pans])  # (N, [C,] H, W)
    mod = mod.reshape(guide.shape[:-3] + (-1, h, w))  # (..., 1 or C, H, W)
    if target.base is Base.GLP_HPM_FIT:
        g = np.asarray(gains, np.float32)[:, None, None]  # (C, 1, 1)
        return (lms + g * (lms * mod - lms)).astype(lms.dtype, copy=False)  # (..., C, H, W)
    return (lms * mod).astype(lms.dtype, copy=False)  # (..., C, H, W)
