"""DDIM for an x0-predicting denoiser, k-diffusion style: deterministic (η = 0) or stochastic (η > 0).

The function only uses ``+``, ``-``, ``*``, ``/`` with Python floats on ``x``, so the same code
drives numpy arrays (ONNX runtime) and torch tensors (the PyTorch reference path). Stochastic steps take
their fresh noise from a caller-supplied function of the step index, so a run stays a pure function of
its inputs (deterministic per seed).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

import numpy as np

Array = TypeVar("Array")
# denoise(x_t, t) -> x0 estimate; t is the ORIGINAL schedule index of this step.
Denoiser = Callable[[Array, int], Array]
StepCallback = Callable[[int, int, Array], None]
# noise(i) -> standard-normal array shaped like x, injected after step i when eta > 0
StepNoise = Callable[[int], Array]


def sample_ddim(
    denoise: Denoiser,
    x: Array,
    timesteps: Sequence[int] | np.ndarray,
    alphas_cumprod: np.ndarray,
    *,
    callback: StepCallback | None = None,
    eta: float = 0.0,
    noise: StepNoise | None = None,
) -> Array:
    """Integrate the probability-flow ODE from noise ``x`` at ``timesteps[0]`` and return x0̂.

    Each step: x0̂ = denoise(x_t, t); ε̂ = (x_t − √ᾱ_t x0̂)/√(1−ᾱ_t); x_{t'} = √ᾱ_{t'} x0̂ + √(1−ᾱ_{t'}) ε̂.
    The last step returns x0̂ itself (the clean estimate), so one step is the posterior mean.
    ``callback(i, t, x0̂)`` is called after every network evaluation (progress bars, uncertainty).
    With ``eta`` > 0 (1 = DDPM-like ancestral sampling) a step keeps only part of ε̂ and adds σ·noise(i),
    σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t'}) (Song et al., 2021, eq. 16): samples then differ by more
    than their starting noise.
    """
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ValueError("timesteps must not be empty")
    if eta < 0 or (eta > 0 and noise is None):
        raise ValueError(f"eta must be >= 0 and needs a noise function when > 0, got eta={eta}")
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
        sigma = eta * math.sqrt((1.0 - a_next) / (1.0 - a_t) * (1.0 - a_t / a_next)) if eta > 0 else 0.0
        x = x0 * math.sqrt(a_next) + eps * math.sqrt(max(1.0 - a_next - sigma**2, 0.0))
        if sigma > 0:
            x = x + noise(i) * sigma
    return x0
