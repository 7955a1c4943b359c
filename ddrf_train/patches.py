"""Training and validation crops from Wald-protocol pairs, as network-ready torch tensors.

Each pair is normalised by its own full scale (2**bit_depth − 1), or by its mean MS brightness over a reference
(``TrainConfig.value_scale``), exactly as the runtime will normalise a raster, so sensors of different bit depth
share one model. All randomness comes from
one seeded numpy Generator whose state is checkpointed (bit-identical resume).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from ddrf_runtime.evaluation.datasets import Pair, coarsened, redegrade, respectral
from ddrf_runtime.detail_base import residual_base
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.pipeline import scene_base, scene_moments
from ddrf_runtime.target import TargetSpec

from .augment import jitter
from .config import DegradationConfig, RadiometricConfig, Weighting
from .diffusion import condition_inputs


@dataclass(frozen=True)
class NormPair:
    """One pair in network layout: (C, H, W) / (k, H, W) float32, divided by ``unit``."""

    name: str
    sensor: str
    ratio: int
    full_scale: float  # 2**bit_depth − 1 (DN)
    unit: float  # DN per network unit: the full scale, or the pair's mean MS DN ÷ a reference_mean
    lms: np.ndarray  # (C, H, W)
    pan: np.ndarray  # (k, H, W)
    gt: np.ndarray  # (C, H, W)
    base: np.ndarray  # (C, H, W) the residual's base image (``ddrf_runtime.detail_base``), from the whole pair

    @classmethod
    def from_pair(cls, pair: Pair, target: TargetSpec, reference_mean: float = 0.0) -> "NormPair":
        """``pair`` in network units: ÷ its full scale, or with ``reference_mean`` > 0 ÷ (its LR MS mean ÷
        reference_mean), as ``pipeline.Radiometry`` under ``ValueScale.SCENE_MEAN`` divides the fused input."""
        s = (scene_moments(pair.ms_lr, pair.pan, pair.ratio, 1.0).ms_mean() / reference_mean if reference_mean
             else float(pair.full_scale))
        pan = pair.pan[None] if pair.pan.ndim == 2 else pair.pan.transpose(2, 0, 1)
        lms = np.ascontiguousarray(pair.lms.transpose(2, 0, 1) / s, dtype=np.float32)  # (C, H, W)
        pan = np.ascontiguousarray(pan / s, dtype=np.float32)  # (k, H, W)
        scene = scene_base(target, pair.ms_lr, pair.pan, pair.ratio, s)  # the whole pair's, as the runtime's
        return cls(pair.name, pair.sensor, pair.ratio, float(pair.full_scale), s, lms, pan,
                   np.ascontiguousarray(pair.gt.transpose(2, 0, 1) / s, dtype=np.float32),
                   residual_base(target, lms, pan, pair.ratio, scene=scene))

    @property
    def shape(self) -> tuple[int, int]:
        return self.gt.shape[1], self.gt.shape[2]

    def crop(self, top: int, left: int, size: int) -> tuple[np.ndarray, ...]:
        """(lms, pan, gt, base) of the size² window at (top, left)."""
        win = (slice(None), slice(top, top + size), slice(left, left + size))
        return self.lms[win], self.pan[win], self.gt[win], self.base[win]


@dataclass
class Batch:
    """Network-ready tensors of one batch of crops (normalised units)."""

    x0: torch.Tensor  # (B, C, P, P) diffusion target
    cond: torch.Tensor  # (B, C+k, P, P)
    wav: torch.Tensor  # (B, C+3k, P/2, P/2)
    lms: torch.Tensor  # (B, C, P, P)
    pan: torch.Tensor  # (B, k, P, P)
    gt: torch.Tensor  # (B, C, P, P)
    base: torch.Tensor  # (B, C, P, P) the residual's base image

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(getattr(self, f.name).to(device) for f in fields(self)))


def make_batch(lms: np.ndarray, pan: np.ndarray, gt: np.ndarray, base: np.ndarray, target: TargetSpec) -> Batch:
    """Stacked (B, ·, P, P) numpy crops → tensors, with x0 = target.encode(gt, base) and the conditions."""
    lms_t, pan_t, gt_t, base_t = (torch.from_numpy(np.ascontiguousarray(a)) for a in (lms, pan, gt, base))
    cond, wav = condition_inputs(lms_t, pan_t)
    return Batch(target.encode(gt_t, base_t), cond, wav, lms_t, pan_t, gt_t, base_t)


def _weights(scenes: Sequence[NormPair], weighting: Weighting) -> np.ndarray:
    area = np.array([s.shape[0] * s.shape[1] for s in scenes], dtype=np.float64)
    if weighting is Weighting.AREA:
        w = area
    elif weighting is Weighting.PAIR:
        w = np.ones_like(area)
    else:
        sensors = [s.sensor for s in scenes]
        sensor_area = {k: sum(a for a, s in zip(area, sensors) if s == k) for k in set(sensors)}
        w = np.array([a / sensor_area[s] for a, s in zip(area, sensors)])
    return w / w.sum()


def with_copies(pairs: Sequence[Pair], cfg: DegradationConfig, rng: np.random.Generator) -> list[Pair]:
    """The pairs, each followed by ``cfg.mtf_copies`` copies re-degraded through MTFs drawn around its sensor's
    (``datasets.redegrade``; gains × exp(±``cfg.mtf_spread``) per band) and by ``cfg.coarse_copies`` copies on
    2×, 4×, … coarser grids (``datasets.coarsened``) and by ``cfg.pan_copies`` copies whose PAN follows the bands
    by weights exp(±``cfg.pan_tilt``) (``datasets.respectral``). A copy keeps its pair's sensor, so
    sensor-weighted sampling shares the pair's weight among its copies."""
    out: list[Pair] = []
    for p in pairs:
        out.append(p)
        for _ in range(cfg.mtf_copies):
            scale = np.exp(rng.uniform(-cfg.mtf_spread, cfg.mtf_spread, size=p.gt.shape[-1]))  # (C,)
            out.append(redegrade(p, scale))
        out += [coarsened(p, 2**k) for k in range(1, cfg.coarse_copies + 1)
                if min(p.gt.shape[:2]) >= 2**k * p.ratio * 2]
        for _ in range(cfg.pan_copies):
            weights = np.exp(rng.uniform(-cfg.pan_tilt, cfg.pan_tilt, size=p.gt.shape[-1]))  # (C,)
            out.append(respectral(p, weights, cfg.pan_mix))
    return out


class PatchSampler:
    """Random ``patch``² crops with a random flip and 90° rotation (the 8 symmetries of the square), then the
    radiometric jitter of ``augment`` (off by default), from the pairs and their MTF copies (``degrade``)."""

    def __init__(self, pairs: Sequence[Pair], patch: int, batch: int, weighting: Weighting,
                 target: TargetSpec, rng: np.random.Generator,
                 augment: RadiometricConfig = RadiometricConfig(),
                 degrade: DegradationConfig = DegradationConfig(), reference_mean: float = 0.0) -> None:
        pairs = with_copies(pairs, degrade, rng)  # the pairs themselves when there are no copies
        self.scenes = [NormPair.from_pair(p, target, reference_mean) for p in pairs if min(p.gt.shape[:2]) >= patch]
        if not self.scenes:
            raise ConfigError(f"no training pair is at least {patch}×{patch} pixels")
        self.patch, self.batch, self.target, self.rng, self.augment = patch, batch, target, rng, augment
        self.probs = _weights(self.scenes, Weighting(weighting))

    def next(self) -> Batch:
        crops = []
        for idx in self.rng.choice(len(self.scenes), size=self.batch, p=self.probs):
            scene = self.scenes[idx]
            h, w = scene.shape
            top = int(self.rng.integers(0, h - self.patch + 1))
            left = int(self.rng.integers(0, w - self.patch + 1))
            k, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))
            out = []
            for a in scene.crop(top, left, self.patch):  # (·, P, P)
                a = np.rot90(a, k, axes=(1, 2))
                out.append(a[:, :, ::-1] if flip else a)
            crops.append(out)
        lms, pan, gt, base = (np.stack(parts) for parts in zip(*crops))  # (B, ·, P, P)
        return make_batch(*jitter(lms, pan, gt, base, self.augment, self.rng), self.target)


@dataclass(frozen=True)
class ValCrop:
    """A fixed validation crop: its batch tensors plus what the metrics need."""

    scene: NormPair
    top: int
    left: int


def validation_crops(pairs: Sequence[Pair], count: int, size: int, target: TargetSpec,
                     reference_mean: float = 0.0) -> list[ValCrop]:
    """``count`` fixed crops, cycling over the pairs, at positions from a fixed seed (not the run's)."""
    scenes = [NormPair.from_pair(p, target, reference_mean) for p in pairs if min(p.gt.shape[:2]) >= size]
    rng = np.random.default_rng(12345)
    crops = []
    for i in range(count if scenes else 0):
        scene = scenes[i % len(scenes)]
        h, w = scene.shape
        crops.append(ValCrop(scene, int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))))
    return crops
