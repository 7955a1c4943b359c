"""ddrf runtime: torch-free DDRF fusion around ONNX Runtime, plus metrics and classical baselines.

High-level API: ``fuse_arrays(ms, pan, model, options)`` for in-memory arrays (``fuse_arrays_with_spread`` adds the
spread of ``options.samples`` > 1) and ``fuse_scene(ms_path, pan_path, out_path, config)`` for GeoTIFF scenes (a
pure function of paths and a picklable ``SceneConfig``, so it maps over a folder of scenes with Ray or
multiprocessing as it is).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {  # loaded on first use: `import ddrf_runtime` stays cheap (no ONNX Runtime, rasterio or numba yet)
    "fuse_arrays": "ddrf_runtime.pipeline",
    "fuse_arrays_with_spread": "ddrf_runtime.pipeline",
    "FuseOptions": "ddrf_runtime.pipeline",
    "fuse_scene": "ddrf_runtime.scene",
    "SceneConfig": "ddrf_runtime.scene",
    "Denoiser": "ddrf_runtime.session",
    "Device": "ddrf_runtime.session",
    "Backend": "ddrf_runtime.backends",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ddrf_runtime' has no attribute {name!r}")
