"""What the diffusion variable x0 is, and how to turn it back into a fused image.

Residual learning: x0 = (gt − lms)·scale in full-scale-normalised units. The residual is small
(std ≈ 0.02–0.04) next to unit-variance noise, so it is scaled up before diffusion. With the
residual switched off (ablation) x0 = 2·gt − 1, in [−1, 1].
Only arithmetic is used, so numpy arrays and torch tensors both work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

Array = TypeVar("Array")


@dataclass(frozen=True)
class TargetSpec:
    residual: bool = True  # predict gt − lms (True) or the image itself (False, ablation)
    scale: float = 20.0  # multiplier applied to the residual before diffusion

    def encode(self, gt: Array, lms: Array) -> Array:
        """Normalised reference (and lms) → diffusion variable x0."""
        if self.residual:
            return (gt - lms) * self.scale
        return gt * 2.0 - 1.0

    def decode(self, x0: Array, lms: Array) -> Array:
        """Diffusion variable x0 → normalised fused image (not clipped)."""
        if self.residual:
            return lms + x0 * (1.0 / self.scale)
        return (x0 + 1.0) * 0.5
