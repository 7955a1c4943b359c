"""Deterministic DDIM (η = 0) for an x0-predicting denoiser, k-diffusion style.

The function only uses ``+``, ``-``, ``*``, ``/`` with Python floats on ``x``, so the same code
drives numpy arrays (ONNX runtime) and torch tensors (the PyTorch reference path).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

import numpy as np

Array = TypeVar("Array")
# denoise(x_t, t) -> x0 estimate; t is the ORIGINAL schedule index of this step.
Denoiser = Callable[[Array, int], Array]
StepCallback = Callable[[int, int, Array], None]


def sample_ddim(
    denoise: Denoiser,
    x: Array,
    timesteps: Sequence[int] | np.ndarray,
    alphas_cumprod: np.ndarray,
    *,
    callback: StepCallback | None = None,
) -> Array:
    """Integrate the probability-flow ODE from noise ``x`` at ``timesteps[0]`` and return x0̂.

    Each step: x0̂ = denoise(x_t, t); ε̂ = (x_t − √ᾱ_t x0̂)/√(1−ᾱ_t); x_{t'} = √ᾱ_{t'} x0̂ + √(1−ᾱ_{t'}) ε̂.
    The last step returns x0̂ itself (the clean estimate), so one step is the posterior mean.
    ``callback(i, t, x0̂)`` is called after every network evaluation (progress bars, uncertainty).
    """
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ValueError("timesteps must not be empty")
    x0 = x
    for i, t in enumerate(steps):
        x0 = denoise(x, t)
        if callback is not None:
            callback(i, t, x0)
        if i + 1 == len(steps):
            break
        a_t = float(alphas_cumprod[t])
        a_next = float(alphas_cumprod[steps[i + 1]])
        eps = (x - x0 * math.sqrt(a_t)) * (1.0 / math.sqrt(1.0 - a_t))
        x = x0 * math.sqrt(a_next) + eps * math.sqrt(1.0 - a_next)
    return x0
