"""What the diffusion variable x0 is, and how to turn it back into a fused image.

Residual learning: x0 = (gt − base)·scale in full-scale-normalised units, where the base is the upsampled MS
(``Base.UPSAMPLED``, DDRF's recipe) or a classical detail injection on top of it (``Base.GLP_*``, see
``ddrf_runtime.detail_base``), so the network only learns what the base gets wrong. The residual is small
(std ≈ 0.02–0.04) next to unit-variance noise, so it is scaled up before diffusion. With the residual switched
off (ablation) x0 = 2·gt − 1, in [−1, 1].
Only arithmetic is used, so numpy arrays and torch tensors both work.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

Array = TypeVar("Array")


class Base(str, enum.Enum):
    """The image the network's residual is added to."""

    UPSAMPLED = "upsampled"  # the upsampled MS (lms)
    GLP_RATIO = "glp_ratio"  # lms × PAN / (PAN's MTF-GLP low-pass): classical detail injection, corrected
    GLP_HPM = "glp_hpm"  # the same with the PAN matched to each band's mean/contrast (scene offsets, MTF-GLP-HPM)
    GLP_HPM_FIT = "glp_hpm_fit"  # GLP_HPM's detail × per-band gains fitted on the scene one scale down

    @property
    def needs_scene_statistics(self) -> bool:
        """Whether every tile's base needs the whole scene's statistics (``detail_base.SceneBase``)."""
        return self in (Base.GLP_HPM, Base.GLP_HPM_FIT)


@dataclass(frozen=True)
class TargetSpec:
    residual: bool = True  # predict gt − base (True) or the image itself (False, ablation)
    scale: float = 20.0  # multiplier applied to the residual before diffusion
    base: Base = Base.UPSAMPLED  # what the residual is relative to
    base_gain: float = 0.3  # GLP bases: MTF Nyquist gain of the PAN low-pass, one for all sensors (toolbox generic)
    gain_pooling: float = 0.0  # GLP_HPM_FIT: weight of the all-band gain in each band's (0: per band, 1: one gain)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", Base(self.base))  # metadata JSON and TOML give the value as a string

    def encode(self, gt: Array, base: Array) -> Array:
        """Normalised reference (and its base image) → diffusion variable x0."""
        if self.residual:
            return (gt - base) * self.scale
        return gt * 2.0 - 1.0

    def decode(self, x0: Array, base: Array) -> Array:
        """Diffusion variable x0 → normalised fused image (not clipped)."""
        if self.residual:
            return base + x0 * (1.0 / self.scale)
        return (x0 + 1.0) * 0.5
