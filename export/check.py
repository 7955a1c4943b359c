"""Parity of an exported graph with its PyTorch checkpoint, on real Wald-protocol patches.

Two comparisons: per network call (same x_t, t, cond, wav into both) and a whole DDIM run, where the
PyTorch side is ``ddrf_train.diffusion.sample`` (torch DWT, torch decode) and the ONNX side is the
runtime's path (numba DWT, ``sample_ddim`` on numpy, ``TargetSpec.decode``) from the same noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ddrf_runtime.backends import DenoiserLike
from ddrf_runtime.evaluation.datasets import Pair
from ddrf_runtime.detail_base import SceneBase, residual_base
from ddrf_runtime.pipeline import scene_base
from ddrf_runtime.sampler import sample_ddim
from ddrf_runtime.schedule import ddim_timesteps
from ddrf_runtime.target import TargetSpec
from ddrf_runtime.wavelets import wavelet_condition
from ddrf_train.diffusion import Denoiser, sample

# Patch sides (rows, cols) in PAN pixels, rounded up to the model's size multiple: square and both
# orientations of non-square, so the dynamic height/width axes are exercised independently.
CHECK_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (96, 128), (128, 96), (256, 128))


@dataclass(frozen=True)
class Patch:
    """One real crop in network layout, divided by its pair's full scale, with the base its residual is added to."""

    label: str
    lms: np.ndarray  # (1, C, H, W)
    guide: np.ndarray  # (1, k, H, W)
    base: np.ndarray  # (1, C, H, W) with its whole pair's base statistics (``scene_base``), as the runtime's

    @property
    def cond(self) -> np.ndarray:
        return np.concatenate([self.lms, self.guide], axis=1)  # (1, C+k, H, W)

    @property
    def wav(self) -> np.ndarray:
        return wavelet_condition(self.lms, self.guide)  # (1, C+3k, H/2, W/2)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def real_patches(pairs: Sequence[Pair], multiple: int, sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
                 seed: int = 0, target: TargetSpec = TargetSpec()) -> list[Patch]:
    """One patch per size from a seeded-random pair large enough for it, at a seeded-random place, with its base
    for ``target`` (the model's) from the whole pair's statistics.

    Where no pair is large enough (hyperspectral test strips are a few dozen pixels), the largest pair
    gives the largest crop of multiples of ``multiple`` that it holds.
    """
    rng = np.random.default_rng(seed)
    out = []
    scenes: dict[str, SceneBase | None] = {}  # per pair: patches often share one, and a gain fit is not free
    for rows, cols in sizes:
        rows, cols = _round_up(rows, multiple), _round_up(cols, multiple)
        fitting = [p for p in pairs if p.lms.shape[0] >= rows and p.lms.shape[1] >= cols]
        pair = fitting[rng.integers(len(fitting))] if fitting else max(pairs, key=lambda p: p.lms[..., 0].size)
        rows = min(rows, pair.lms.shape[0] // multiple * multiple)
        cols = min(cols, pair.lms.shape[1] // multiple * multiple)
        if not rows or not cols:
            continue
        top = int(rng.integers(pair.lms.shape[0] - rows + 1))
        left = int(rng.integers(pair.lms.shape[1] - cols + 1))
        win = (slice(top, top + rows), slice(left, left + cols))
        scale = np.float32(pair.full_scale)
        lms = pair.lms[win].transpose(2, 0, 1)[None] / scale  # (1, C, H, W)
        guide = pair.pan[win].reshape(rows, cols, -1).transpose(2, 0, 1)[None] / scale  # (1, k, H, W)
        lms, guide = np.ascontiguousarray(lms, np.float32), np.ascontiguousarray(guide, np.float32)
        if pair.name not in scenes:
            scenes[pair.name] = scene_base(target, pair.ms_lr, pair.pan, pair.ratio, pair.full_scale)
        out.append(Patch(f"{pair.name}@({top},{left}) {rows}×{cols}", lms, guide,
                         residual_base(target, lms, guide, pair.ratio, scene=scenes[pair.name])))
    return out


def tile_patch(patches: Sequence[Patch], side: int) -> Patch:
    """The largest real patch mirrored out to a production tile (side², a multiple of the model's size multiple).

    The runtime fuses 512² tiles, while the test strips hold at most 256×128 patches: ONNX Runtime's float32
    reductions over a whole 64×512² group drifted by 1e-3 there (old GroupNorm export), invisible below.
    """
    base = max(patches, key=lambda p: p.lms[0, 0].size)
    h, w = base.lms.shape[2:]

    def grow(a: np.ndarray) -> np.ndarray:  # (1, n, h, w) -> (1, n, side, side)
        return np.pad(a, ((0, 0), (0, 0), (0, max(0, side - h)), (0, max(0, side - w))),
                      mode="symmetric")[:, :, :side, :side]
    return Patch(f"{base.label} mirrored to {side}²", *(np.ascontiguousarray(grow(a))
                                                        for a in (base.lms, base.guide, base.base)))


def call_diffs(reference: DenoiserLike, candidate: DenoiserLike, patches: Sequence[Patch],
               seed: int = 0, samples: int = 1) -> Iterator[tuple[str, int, float]]:
    """(patch label, t, max |x0 difference|) for every patch at t = T−1, T/2 and 0, from the same seeded x_t
    (``samples`` rows of x_t per patch)."""
    timesteps = reference.spec.timesteps
    rng = np.random.default_rng(seed)
    for patch in patches:
        cond, wav = patch.cond, patch.wav
        ref, cand = reference.conditioned(cond, wav, samples), candidate.conditioned(cond, wav, samples)
        for t in sorted({timesteps - 1, timesteps // 2, 0}, reverse=True):
            x_t = rng.standard_normal((samples, *patch.lms.shape[1:]), dtype=np.float32)  # (N, C, H, W)
            yield patch.label, t, float(np.abs(ref(x_t, t) - cand(x_t, t)).max())


def sampling_diff(model: Denoiser, candidate: DenoiserLike, patch: Patch, steps: int, seed: int = 0) -> float:
    """Max |difference| of the normalised fused image after ``steps`` DDIM steps from the same noise."""
    spec = candidate.spec
    noise = np.random.default_rng(seed).standard_normal(patch.lms.shape, dtype=np.float32)  # (1, C, H, W)
    with torch.inference_mode():
        fused_torch = sample(model, torch.from_numpy(patch.lms), torch.from_numpy(patch.guide), steps,
                             noise=torch.from_numpy(noise), base=torch.from_numpy(patch.base)).numpy()
    x0 = sample_ddim(candidate.conditioned(patch.cond, patch.wav), noise,
                     ddim_timesteps(spec.timesteps, steps), spec.alphas_cumprod())
    return float(np.abs(spec.target.decode(x0, patch.base) - fused_torch).max())
