"""Diffusion around the UNet: the exported denoiser, the training loss, EMA and the reference sampler.

The schedule is ``ddrf_runtime.schedule`` (float64 numpy) cast once to torch buffers and the
sampler is ``ddrf_runtime.sampler.sample_ddim`` itself, so training, the PyTorch reference path and
the ONNX runtime cannot disagree about timesteps or update rules.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ddrf_runtime.model_spec import Objective
from ddrf_runtime.sampler import sample_ddim
from ddrf_runtime.schedule import alphas_cumprod, ddim_timesteps
from ddrf_runtime.target import Base

from .config import DiffusionConfig, ExperimentConfig, Formulation, UNetConfig
from .dwt import wavelet_condition
from .model import Conditioning, DDRFUNet


class Denoiser(nn.Module):
    """``forward(x_t, t, cond, wav) -> x0_hat``: the network of ARCHITECTURE.md (what gets exported).

    Wraps the raw UNet and converts its output from the configured objective to x0̂ with the
    schedule, so the sampler and the runtime only ever see x0 predictions.
    """

    def __init__(self, model_cfg: UNetConfig, diffusion_cfg: DiffusionConfig) -> None:
        super().__init__()
        self.model_cfg = model_cfg
        self.diffusion_cfg = diffusion_cfg
        self.net = DDRFUNet(model_cfg, diffusion_cfg.self_condition)
        ab = alphas_cumprod(diffusion_cfg.schedule, diffusion_cfg.timesteps, diffusion_cfg.schedule_offset)
        # Derived from the config, so kept out of state dicts (checkpoints stay config + weights).
        self.register_buffer("sqrt_ab", torch.from_numpy(ab ** 0.5).float(), persistent=False)  # (T,)
        self.register_buffer("sqrt_1m_ab", torch.from_numpy((1.0 - ab) ** 0.5).float(), persistent=False)  # (T,)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ_t, √(1−ᾱ_t)) shaped (B, 1, 1, 1) for broadcasting against images."""
        return self.sqrt_ab[t][:, None, None, None], self.sqrt_1m_ab[t][:, None, None, None]

    def raw(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, wav: torch.Tensor,
            x_self: torch.Tensor | None = None) -> torch.Tensor:
        """The network output in objective space (x0, ε or v), (B, C, H, W)."""
        return self.raw_step(x_t, t, self.encode(cond, wav), x_self)

    def raw_step(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: Conditioning,
                 x_self: torch.Tensor | None = None) -> torch.Tensor:
        """``raw`` from encoded conditions; x_t (B·N, C, H, W) holds N samples of each encoded tile.

        A regressor sees neither noise nor timestep: x_t is replaced by zeros and t by T−1, so every
        sampler (any steps, any noise) returns its single prediction.
        """
        if self.diffusion_cfg.formulation is Formulation.REGRESSION:
            x_t = torch.zeros_like(x_t)  # (B·N, C, H, W)
            t = torch.full_like(t, self.diffusion_cfg.timesteps - 1)  # (B·N,)
        return self.net.step(x_t, t, conditioning, x_self)

    def to_x0(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        objective = self.diffusion_cfg.objective
        if objective is Objective.X0:
            return out
        s0, s1 = self.coefficients(t)
        if objective is Objective.EPS:
            return (x_t - s1 * out) / s0
        return s0 * x_t - s1 * out  # v = √ᾱ ε − √(1−ᾱ) x0

    def encode(self, cond: torch.Tensor, wav: torch.Tensor) -> Conditioning:
        """cond (B, C+k, H, W), wav (B, C+3k, H/2, W/2) → what every later ``step`` of these tiles reuses."""
        return self.net.encode(cond, wav)

    def step(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: Conditioning,
             x_self: torch.Tensor | None = None) -> torch.Tensor:
        """x0̂ (B·N, C, H, W) for x_t (B·N, C, H, W), t (B·N,): N samples per encoded tile, sample s of tile i
        at row i·N + s. ``step(x_t, t, encode(cond, wav))`` is ``forward(x_t, t, cond, wav)``."""
        return self.to_x0(self.raw_step(x_t, t, conditioning, x_self), x_t, t)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, wav: torch.Tensor,
                x_self: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(x_t, t, self.encode(cond, wav), x_self)  # (B, C, H, W)


def build_denoiser(cfg: ExperimentConfig) -> Denoiser:
    return Denoiser(cfg.model, cfg.diffusion)


def sample_timesteps(batch: int, cfg: DiffusionConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform t in 0..T−1, with probability ``last_t_prob`` replaced by T−1.

    The default sampler may take one step, which evaluates the network only at t = T−1; uniform
    sampling alone would train that timestep in just 1/T of the draws.
    """
    t = torch.randint(0, cfg.timesteps, (batch,), generator=generator)
    last = torch.rand(batch, generator=generator) < cfg.last_t_prob
    return torch.where(last, torch.full_like(t, cfg.timesteps - 1), t)  # (B,) int64


def spectral_chord(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean over pixels of |a/|a| − b/|b||, spectra along dim 1 of (B, C, H, W): 2·sin(θ/2) ≈ θ, the spectral
    angle in radians, but with a finite gradient where the angle is 0 (``eps`` smooths the norm there)."""
    unit_a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-6)  # (B, C, H, W)
    unit_b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return torch.sqrt(((unit_a - unit_b) ** 2).sum(dim=1) + eps * eps).mean()


def training_loss(denoiser: Denoiser, x0: torch.Tensor, cond: torch.Tensor, wav: torch.Tensor,
                  generator: torch.Generator | None = None, base: torch.Tensor | None = None,
                  sam_weight: float = 0.0) -> torch.Tensor:
    """L1 between the network output and its objective's target at a random t and noise, plus ``sam_weight``
    times the spectral angle (``spectral_chord``) between the fused image it implies and the reference, both
    decoded onto ``base`` (B, C, H, W): L1 treats the bands independently, the angle weighs their ratios, which
    is where SAM says the model falls short of its ERGAS gain.

    With self-conditioning, half of the batches first predict x0̂ without gradient and feed it back.
    """
    cfg = denoiser.diffusion_cfg
    t = sample_timesteps(x0.shape[0], cfg, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    s0, s1 = denoiser.coefficients(t)
    x_t = s0 * x0 + s1 * noise  # q(x_t | x0)
    x_self = None
    if cfg.self_condition and torch.rand((), generator=generator).item() < 0.5:
        with torch.no_grad():
            x_self = denoiser(x_t, t, cond, wav).detach()
    target = {Objective.X0: x0, Objective.EPS: noise, Objective.V: s0 * noise - s1 * x0}[cfg.objective]
    raw = denoiser.raw(x_t, t, cond, wav, x_self)  # (B, C, H, W)
    loss = F.l1_loss(raw, target)
    if sam_weight:
        if base is None:
            raise ValueError("the spectral-angle loss needs the base image the residual is added to")
        fused = cfg.target.decode(denoiser.to_x0(raw, x_t, t), base)  # (B, C, H, W)
        loss = loss + sam_weight * spectral_chord(fused, cfg.target.decode(x0, base))
    return loss


class EMA:
    """Exponential moving average of a model's weights; a plain copy until ``warmup`` steps are done."""

    def __init__(self, model: nn.Module, decay: float, warmup: int) -> None:
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after optimiser step number ``step`` (1-based)."""
        weight = 1.0 if step <= self.warmup else 1.0 - self.decay
        mine = [v for v in self.model.state_dict().values() if v.is_floating_point()]
        theirs = [v for v in model.state_dict().values() if v.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, weight)


def condition_inputs(lms: torch.Tensor, pan: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, wav) network inputs from normalised lms (B, C, H, W) and guide (B, k, H, W)."""
    return torch.cat([lms, pan], dim=1), wavelet_condition(lms, pan)


def sample(model: Denoiser, lms: torch.Tensor, pan: torch.Tensor, steps: int,
           generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
           base: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch reference fusion: DDIM from noise, returning the normalised fused image (B, C, H, W).

    Uses the runtime's ``sample_ddim`` with the ORIGINAL timestep of every step. ``noise``
    (B, C, H, W) overrides the draw from ``generator`` (to compare against the ONNX runtime). ``base``
    (B, C, H, W) is the residual's base image (``ddrf_runtime.detail_base.residual_base``); None means lms,
    which is only right for the upsampled-MS base. The result is not clipped.
    """
    cfg = model.diffusion_cfg
    with torch.inference_mode():
        cond, wav = condition_inputs(lms, pan)
        x = noise if noise is not None else torch.randn(lms.shape, generator=generator).to(lms)
        prev: list[torch.Tensor | None] = [None]  # self-conditioning: the previous step's x0̂

        def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
            prev[0] = model(x_t, tt, cond, wav, prev[0] if cfg.self_condition else None)
            return prev[0]

        ab = alphas_cumprod(cfg.schedule, cfg.timesteps, cfg.schedule_offset)
        x0 = sample_ddim(denoise, x, ddim_timesteps(cfg.timesteps, steps), ab)
        if base is None and cfg.target.base is not Base.UPSAMPLED:
            raise ValueError(f"a model with the {cfg.target.base.value} base needs its base image")
        return cfg.target.decode(x0, lms if base is None else base)
