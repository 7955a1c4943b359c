"""The diffusion noise schedule and timestep selection: defined once, in float64 numpy.

Training (torch) and the runtime both read these arrays, so a model and its sampler can never
disagree about what timestep ``t`` means.
"""
from __future__ import annotations

import enum

import numpy as np


class ScheduleKind(str, enum.Enum):
    COSINE = "cosine"


def cosine_alphas_cumprod(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """ᾱ_t for t = 0..T-1 (Nichol & Dhariwal 2021): index t is the state after t+1 noising steps.

    Betas are clipped at ``max_beta`` as in the original, which keeps ᾱ_{T-1} strictly positive.
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    s = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((s + offset) / (1.0 + offset) * np.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    betas = np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)
    return np.cumprod(1.0 - betas)  # (T,)


def alphas_cumprod(kind: ScheduleKind | str, num_timesteps: int, offset: float = 0.008) -> np.ndarray:
    """Dispatch on the schedule kind recorded in a config or in model metadata."""
    kind = ScheduleKind(kind)
    if kind is ScheduleKind.COSINE:
        return cosine_alphas_cumprod(num_timesteps, offset)
    raise ValueError(f"unknown schedule {kind}")  # pragma: no cover - enum is exhaustive


def ddim_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """``steps`` original timesteps, uniformly spaced, descending from T-1; the last is 0 when steps > 1.

    These are the indices passed to the network (never the respaced 0..steps-1).
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in 1..{num_timesteps}, got {steps}")
    return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int64)  # (steps,)
