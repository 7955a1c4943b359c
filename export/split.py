"""What ``export.to_onnx --split`` traces: the denoiser cut into a condition encoder and a per-step graph.

``X.cond.onnx`` maps (cond, wav) of B tiles to the condition's whole contribution to a call (per encoder block its
style (γ, β), per decoder block its attention context; ``DDRFUNet.encode``); ``X.step.onnx`` maps x_t and t of
B·N rows plus those features of B tiles to x0 (``Denoiser.step``, sample s of tile i at row i·N + s). The runtime
runs the encoder once per batch of tiles and the step graph for every step and sample. Graph I/O is flat: the
features are named ``style0..``, ``context0..`` in the order ``Conditioning`` holds them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from ddrf_runtime.session import ENCODER_INPUTS, STEP_INPUTS
from ddrf_train.diffusion import Denoiser
from ddrf_train.model import Conditioning


class EncoderGraph(nn.Module):
    """(cond, wav) → the flat tuple of ``Conditioning`` tensors (styles, then contexts)."""

    def __init__(self, model: Denoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, cond: torch.Tensor, wav: torch.Tensor) -> tuple[torch.Tensor, ...]:
        conditioning = self.model.encode(cond, wav)
        return (*conditioning.styles, *conditioning.contexts)


class StepGraph(nn.Module):
    """(x_t (B·N, ...), t (B·N,), features of B tiles) → x0 (B·N, C, H, W)."""

    def __init__(self, model: Denoiser, styles: int) -> None:
        super().__init__()
        self.model = model
        self.styles = styles  # how many of the features are styles (the rest are contexts)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        conditioning = Conditioning(tuple(features[:self.styles]), tuple(features[self.styles:]))
        return self.model.step(x_t, t, conditioning)


@dataclass(frozen=True)
class Trace:
    """One module to export, with its example inputs, I/O names and dynamic axes."""

    module: nn.Module
    args: tuple[Any, ...]  # example inputs (a tuple argument is flattened into consecutive graph inputs)
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: dict[str, Any]  # per forward argument, as torch.export takes them


def split_traces(model: Denoiser, example: tuple[torch.Tensor, ...], dims: dict[str, dict[int, Any]],
                 size_multiple: int, output_name: str) -> tuple[Trace, Trace]:
    """The encoder and step traces of ``model`` from the monolithic export's example inputs and dynamic axes.

    The step graph's rows (B·N) are a batch axis of their own, independent of its features' B tiles. A style's
    axes are its level's share of the image axes (H/2^i): each example side is a distinct multiple of the size
    multiple, so the level is read from how much the example shrank.
    """
    x_t, t, cond, wav = example
    with torch.no_grad():
        conditioning = model.encode(cond, wav)
    features = (*conditioning.styles, *conditioning.contexts)
    names = [f"style{i}" for i in range(len(conditioning.styles))] + [
        f"context{i}" for i in range(len(conditioning.contexts))]
    rows, tiles = Dim("rows", min=1), Dim("tiles", min=1)
    height, width = Dim("height", min=1), Dim("width", min=1)  # in units of the size multiple
    feature_dims = []
    for f in conditioning.styles:  # (B, 2·ch, H/2^i, W/2^i)
        level_multiple = size_multiple * f.shape[2] // cond.shape[2]
        feature_dims.append({0: tiles, 2: level_multiple * height, 3: level_multiple * width})
    feature_dims += [{0: tiles} for _ in conditioning.contexts]  # (B, heads, d, d)
    encoder = Trace(EncoderGraph(model).eval(), (cond, wav), list(ENCODER_INPUTS), names,
                    {"cond": dims["cond"], "wav": dims["wav"]})
    step_dims = {"x_t": {0: rows, 2: size_multiple * height, 3: size_multiple * width}, "t": {0: rows},
                 "features": tuple(feature_dims)}
    samples = 3  # rows ≠ tiles in the example, so the two batch axes stay apart
    step = Trace(StepGraph(model, len(conditioning.styles)).eval(),
                 (x_t.repeat_interleave(samples, 0), t.repeat_interleave(samples, 0), features),
                 [*STEP_INPUTS, *names], [output_name], step_dims)
    return encoder, step
