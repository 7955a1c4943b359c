"""The runtime's torch backend: a ``.pt`` checkpoint behind the same interface as the ONNX ``Denoiser``.

``ddrf-run --backend torch --model x.pt`` loads this by name (``ddrf_runtime.backends``), so tiling,
sampling and I/O are the runtime's own and a comparison with the exported graph differs in the
network alone. The spec comes from ``ddrf_train.spec.build_spec``, exactly as the export writes it.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ddrf_runtime.errors import DeviceError
from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.session import DenoiseFn, Device, checked_device

from .checkpoint import load_denoiser
from .spec import build_spec


def _torch_device(device: Device) -> torch.device:
    """auto → CUDA when torch has it, else CPU; cuda without CUDA is an error (never a silent fallback)."""
    if device is Device.CPU or (device is Device.AUTO and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device 'cuda' requested, but this PyTorch ({torch.__version__}) has no usable CUDA")
    return torch.device("cuda")


class TorchDenoiser:
    """The EMA weights of a checkpoint in eval mode: ``conditioned(cond, wav)(x_t, t) -> x0`` on numpy float32.

    ``intra_op_threads`` sets torch's thread count, which is process-wide and which numba's OpenMP layer
    resets on its first parallel call (the wavelet preprocessing), so every call re-applies it.
    """

    def __init__(self, path: str | os.PathLike, device: Device | str = Device.AUTO,
                 intra_op_threads: int | None = None) -> None:
        self.path = str(path)
        device = checked_device(device, intra_op_threads)
        self.threads = intra_op_threads
        self._apply_threads()
        self.device = _torch_device(device)
        model, config, payload = load_denoiser(self.path)
        self.model = model.to(self.device)
        self.config = config
        self.spec: ModelSpec = build_spec(config, payload, self.path)
        self.providers_used: tuple[str, ...] = (f"torch-{self.device.type}",)
        self.versions = {"torch": torch.__version__, "model_format": str(self.spec.format_version),
                         "checkpoint_step": str(payload["step"])}

    def _apply_threads(self) -> None:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def conditioned(self, cond: np.ndarray, wav: np.ndarray, samples: int = 1) -> DenoiseFn:
        """``denoise(x_t, t)`` for B tiles: cond (B, C+k, H, W) and wav (B, C+3k, H/2, W/2) are encoded once; x_t
        (B·N, C, H, W) holds ``samples`` = N rows per tile (``session.Denoiser.conditioned``)."""
        self._apply_threads()
        with torch.inference_mode():
            conditioning = self.model.encode(self._tensor(cond), self._tensor(wav))
        rows = cond.shape[0] * samples

        def run(x_t: np.ndarray, t: int) -> np.ndarray:
            self._apply_threads()
            with torch.inference_mode():
                tt = torch.full((rows,), int(t), dtype=torch.int64, device=self.device)  # (B·N,) original index
                x0 = self.model.step(self._tensor(x_t), tt, conditioning)  # (B·N, C, H, W)
            return x0.cpu().numpy()
        return run
