"""Which network runs the denoising steps: the exported ONNX graph, or (for comparison) the PyTorch checkpoint.

Both present the same small interface — ``.spec`` (ModelSpec) and
``.conditioned(cond, wav, samples) -> denoise(x_t, t)`` — so tiling, sampling and I/O are shared and a benchmark
of the two differs in the network alone. The torch backend lives in ``ddrf_train`` and is imported by name only
when asked for: the runtime never imports torch.
"""
from __future__ import annotations

import enum
import importlib
import os
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import ConfigError
from .model_spec import ModelSpec
from .session import DenoiseFn, Denoiser, Device

TORCH_BACKEND_MODULE = "ddrf_train.backend"  # provides TorchDenoiser(path, device, intra_op_threads)


class Backend(str, enum.Enum):
    ONNX = "onnx"  # ONNX Runtime on the exported .onnx (the product)
    TORCH = "torch"  # PyTorch eager on a .pt checkpoint (needs the train extra)


class DenoiserLike(Protocol):
    spec: ModelSpec
    providers_used: tuple[str, ...]
    versions: dict[str, str]

    def conditioned(self, cond: np.ndarray, wav: np.ndarray, samples: int = 1) -> DenoiseFn: ...


@dataclass(frozen=True)
class BaseOnly:
    """A model's metadata with a network that predicts x0 = 0: a residual model's runtime then delivers its base,
    what the network's correction is measured against."""

    spec: ModelSpec
    providers_used: tuple[str, ...] = ("x0 = 0",)
    versions: dict[str, str] = field(default_factory=dict)

    def conditioned(self, cond: np.ndarray, wav: np.ndarray, samples: int = 1) -> DenoiseFn:
        return lambda x_t, t: np.zeros_like(x_t)


def load_denoiser(path: str | os.PathLike, backend: Backend = Backend.ONNX, device: Device = Device.AUTO,
                  intra_op_threads: int | None = None) -> DenoiserLike:
    """Open a model for ``backend``, or return the one this process already opened with the same arguments.

    Keeping it loaded makes the session's one-off costs (graph optimisation, cuDNN's convolution algorithm
    search per input shape) once per process and tile shape, not once per scene. A file replaced on disk
    (other size or modification time) is loaded afresh. Errors are ModelError/DeviceError/ConfigError.
    """
    try:
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, Backend(backend), Device(device),
               intra_op_threads)
    except (OSError, ValueError):
        return _open(path, backend, device, intra_op_threads)  # the loader raises the right error
    if key not in _LOADED:
        if len(_LOADED) >= _KEEP_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = _open(path, backend, device, intra_op_threads)
    return _LOADED[key]


_KEEP_LOADED = 2  # networks kept per process (e.g. the fp32 and fp16 export, or two band families)
_LOADED: dict[tuple, DenoiserLike] = {}


def _open(path: str | os.PathLike, backend: Backend, device: Device, intra_op_threads: int | None) -> DenoiserLike:
    if Backend(backend) is Backend.ONNX:
        return Denoiser(path, device, intra_op_threads)
    try:
        module = importlib.import_module(TORCH_BACKEND_MODULE)
    except ImportError as e:
        raise ConfigError(f"backend 'torch' needs the training install (pip install '.[train]'): {e}") from None
    return module.TorchDenoiser(path, device, intra_op_threads)
