"""What the benchmarks run on: one model as a ``.pt``/``.onnx`` pair with the same weights, and real inputs.

Models: the bundled ``models/ddrf_4band.{pt,onnx}``; without them, a snapshot of the training run's newest
``last.pt`` exported once into a cache folder keyed by the checkpoint's hash (the run is never written to).
Inputs: network tensors cut from the bundled demo scene with the runtime's own tiling and conditioning.
Only numpy is imported at module level: the GPU script uses ``image_difference`` on a box without rasterio or scipy.
"""
from __future__ import annotations

import argparse

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ddrf_runtime.datapaths import DEMO_DIR, MODELS_DIR, REPO_ROOT
from ddrf_runtime.model_spec import ModelSpec

if TYPE_CHECKING:  # the pipeline (scipy, tqdm) only where a scene is read
    from ddrf_runtime.pipeline import BitDepth

BUNDLED = MODELS_DIR / "ddrf_4band"  # .pt and .onnx
TRAINING_CHECKPOINT = REPO_ROOT / "runs" / "small_4band" / "last.pt"
CACHE_DIR = Path(tempfile.gettempdir()) / "ddrf-benchmark-models"


@dataclass(frozen=True)
class Models:
    pt: Path  # training checkpoint (torch backend, pure PyTorch pipeline)
    onnx: Path  # its fp32 export (the product)
    source: str  # where they came from, for the report

    def fp16(self) -> Path:
        return self.onnx.with_suffix(".fp16.onnx")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _snapshot(checkpoint: Path) -> Path:
    """Copy a checkpoint that training may replace at any moment into the cache, named by its hash."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt", dir=CACHE_DIR)
    os.close(fd)
    shutil.copyfile(checkpoint, tmp)  # training replaces last.pt atomically: the copy is one whole file
    folder = CACHE_DIR / _sha256(Path(tmp))[:16]
    folder.mkdir(exist_ok=True)
    os.replace(tmp, folder / "model.pt")
    return folder / "model.pt"


def _export(pt: Path, fp16: bool, threads: int | None) -> Path:
    """The cached export of ``pt`` (``<cache>/<hash>/model.onnx``), made on first use."""
    folder = CACHE_DIR / _sha256(pt)[:16]
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists() or (fp16 and not onnx_path.with_suffix(".fp16.onnx").exists()):
        from export.to_onnx import export  # needs torch + onnx: imported only when an export is due
        folder.mkdir(parents=True, exist_ok=True)
        export(pt, onnx_path, fp16=fp16, threads=threads)
    return onnx_path


def resolve_models(pt: Path | None = None, onnx: Path | None = None, *, fp16: bool = False,
                   threads: int | None = None) -> Models:
    """The .pt/.onnx pair to benchmark; a missing .onnx is exported from the .pt (cached).

    Defaults: the bundled pair, else the training run's newest checkpoint. ``fp16`` also ensures
    ``<onnx>.fp16.onnx`` when the export is ours. Raises FileNotFoundError saying what to pass.
    """
    bundled_pt, bundled_onnx = BUNDLED.with_suffix(".pt"), BUNDLED.with_suffix(".onnx")
    if pt is None and bundled_pt.exists():
        pt, source = bundled_pt, "bundled"
    elif pt is None and TRAINING_CHECKPOINT.exists():
        pt = _snapshot(TRAINING_CHECKPOINT)
        source = f"snapshot of {TRAINING_CHECKPOINT.relative_to(REPO_ROOT)} (sha256 {pt.parent.name}…)"
    elif pt is None:
        raise FileNotFoundError(f"no model: neither {bundled_pt} nor {TRAINING_CHECKPOINT} exists; "
                                "pass --model-pt (and --model-onnx)")
    else:
        source = str(pt)
    if not Path(pt).is_file():
        raise FileNotFoundError(f"checkpoint not found: {pt}")
    if onnx is None:
        bundled_ok = pt == bundled_pt and bundled_onnx.exists() and (
            not fp16 or bundled_onnx.with_suffix(".fp16.onnx").exists())
        onnx = bundled_onnx if bundled_ok else _export(Path(pt), fp16, threads)
        if onnx != bundled_onnx:
            source += ", exported by export.to_onnx"
    if not Path(onnx).is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx}")
    return Models(Path(pt), Path(onnx), source)


def limit_threads(threads: int) -> None:
    """Run torch and numba (the runtime's DWT) on ``threads`` threads.

    Call it before numba's first parallel launch: that launch starts an OpenMP pool which otherwise resets
    torch's thread count to all cores (torch.set_num_threads(1) silently becomes 2 on a 2-core machine).
    """
    import numba
    import torch

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class DemoScene:
    """The demo pair as the scene orchestrator sees it: the common grid, DN as float32, the full scale."""

    ms: np.ndarray  # (h, w, C)
    pan: np.ndarray  # (ratio·h, ratio·w)
    depth: BitDepth  # resolved exactly as fuse_scene does
    ms_path: Path
    pan_path: Path

    @property
    def scale(self) -> float:
        """2**bits − 1."""
        from ddrf_runtime.pipeline import full_scale

        return full_scale(self.depth.bits)


def read_demo(ms_path: Path = DEMO_DIR / "ms.tif", pan_path: Path = DEMO_DIR / "pan.tif") -> DemoScene:
    """Read the pair's common windows (needs rasterio)."""
    import rasterio

    from ddrf_runtime.raster_io import inspect_pair
    from ddrf_runtime.scene import resolve_scene_bit_depth

    pair = inspect_pair(ms_path, pan_path)
    with rasterio.open(ms_path) as m, rasterio.open(pan_path) as p:
        ms = m.read(window=pair.ms_window).transpose(1, 2, 0).astype(np.float32)  # (h, w, C)
        pan = p.read(1, window=pair.pan_window).astype(np.float32)  # (H, W)
    return DemoScene(ms, pan, resolve_scene_bit_depth(pair, None), Path(ms_path), Path(pan_path))


def network_inputs(ms: np.ndarray, pan: np.ndarray, scale: float, spec: ModelSpec, tile: int, batch: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_t, cond, wav) for ``batch`` tiles of side ``tile`` of the scene, as ``fuse_tiles`` builds them.

    The scene's tiles are taken in order and repeated when the batch asks for more; x_t is each tile's noise.
    """
    from ddrf_runtime.pipeline import FuseOptions, condition_tile, make_grid
    from ddrf_runtime.tiling import tile_noise
    from ddrf_runtime.wavelets import wavelet_condition

    grid = make_grid(spec, FuseOptions(tile=tile), pan.shape[0], pan.shape[1])
    if grid.tile_shape != (tile, tile):
        raise ValueError(f"the scene ({pan.shape[0]}×{pan.shape[1]}) is smaller than a {tile}² tile")
    tiles = [grid.tiles[i % len(grid.tiles)] for i in range(batch)]
    cond = np.stack([condition_tile(grid, t, ms[t.ms.slices], pan[t.pan.slices], scale)[0] for t in tiles])
    c = spec.num_bands
    wav = wavelet_condition(cond[:, :c], cond[:, c:])  # (B, C+3k, tile/2, tile/2)
    x_t = np.stack([tile_noise(seed, t.window.row, t.window.col, (c, tile, tile)) for t in tiles])
    return x_t, cond, wav


def image_difference(spec: ModelSpec, a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| of two x0 predictions as a difference of fused images (normalised: full scale 1)."""
    zero = np.zeros_like(a)
    return float(np.abs(spec.target.decode(a - b, zero) - spec.target.decode(zero, zero)).max())


def add_model_pair_options(ap: argparse.ArgumentParser) -> None:
    """The --model-pt / --model-onnx pair every benchmark comparing the two runtimes takes."""
    ap.add_argument("--model-pt", type=Path, help="checkpoint (default: bundled, else the training run's last.pt)")
    ap.add_argument("--model-onnx", type=Path, help="its ONNX export (default: bundled, else exported from the .pt)")
