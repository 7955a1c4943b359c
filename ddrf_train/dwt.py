"""One-level DB1 (Haar) 2-D DWT in torch, equal to ``pywt.dwt2(x, "db1")`` for even sizes.

The network's wavelet input is computed outside the ONNX graph at run time (numba, in
``ddrf_runtime.wavelets``); training computes the same values here, so both must follow pywt's
band order and signs: for a 2×2 block [[a, b], [c, d]]
cA = (a+b+c+d)/2, cH = (a+b−c−d)/2, cV = (a−b+c−d)/2, cD = (a−b−c+d)/2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Analysis filters in pywt's output order (cA, cH, cV, cD), one 2×2 kernel each.
_HAAR = 0.5 * torch.tensor([
    [[1.0, 1.0], [1.0, 1.0]],
    [[1.0, 1.0], [-1.0, -1.0]],
    [[1.0, -1.0], [1.0, -1.0]],
    [[1.0, -1.0], [-1.0, 1.0]],
])  # (4, 2, 2)


class HaarDWT(nn.Module):
    """x (B, N, H, W) → (B, N, 4, H/2, W/2) with the subbands (cA, cH, cV, cD) of every channel.

    A depthwise stride-2 convolution with fixed filters; ``channels`` is fixed so the filter bank
    is built once (no runtime kernel construction, export-friendly).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", _HAAR.repeat(channels, 1, 1).unsqueeze(1), persistent=False)  # (4N, 1, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight.to(x.dtype), stride=2, groups=self.channels)  # (B, 4N, H/2, W/2)
        return y.unflatten(1, (self.channels, 4))  # (B, N, 4, H/2, W/2)


def wavelet_condition(lms: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """The network's ``wav`` input: cA of every lms band, then (cH_j, cV_j, cD_j) of every guide band j.

    lms (B, C, H, W) and guide (B, k, H, W), normalised; H, W even. Returns (B, C+3k, H/2, W/2).
    The filter banks are tiny, so building the modules per call costs nothing measurable.
    """
    lo = HaarDWT(lms.shape[1]).to(lms.device)(lms)[:, :, 0]  # (B, C, H/2, W/2)
    hi = HaarDWT(guide.shape[1]).to(guide.device)(guide)[:, :, 1:].flatten(1, 2)  # (B, 3k, H/2, W/2)
    return torch.cat([lo, hi], dim=1)
