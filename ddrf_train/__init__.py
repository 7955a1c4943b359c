"""ddrf training: the DDRF UNet in PyTorch, its diffusion loss, checkpoints and the reference sampler.

Importing this package does not import torch; ``sample`` is loaded on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["sample"]


def __getattr__(name: str) -> Any:
    if name == "sample":
        from .diffusion import sample
        return sample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
