"""Whole-scene fusion of GeoTIFFs in bounded memory: the orchestrator over the per-tile pipeline.

Three layers, like rio-pansharpen: ``pipeline.prepare_batch``/``predict_x0``/``finish_batch`` are the per-tile math;
``_prepare`` (reader threads) reads one batch of windows and conditions it, ``_finish`` (finisher threads) turns the
network's output into fused tiles, ``_StripWriter`` (a writer thread) writes a finished strip; ``fuse_scene``
validates the pair, measures the scene statistics the model's base and input scaling need (``_scene_statistics``),
builds the output profile from the inputs, streams strips into a temporary GeoTIFF, turns it into a Cloud-Optimized
GeoTIFF and renames it into place — so the output path only ever holds a complete file. The network runs on the
calling thread, between the readers and the finishers.

``fuse_scene`` is a pure function of paths and a picklable ``SceneConfig``: ready for a Ray/multiprocess map.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numba
import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window
from tqdm import tqdm

from .backends import Backend, DenoiserLike, load_denoiser
from .datapaths import MODELS_DIR
from .detail_base import MatchMoments, SceneBase, box_mean, fit_window, scene_statistics
from .errors import ConfigError, InputError, ModelError, OutputError
from .model_spec import ModelSpec, ValueScale
from .pipeline import (BatchInputs, BitDepth, FuseOptions, Radiometry, finish_batch, full_scale, make_grid,
                       output_channels, predict_x0, prepare_batch, tiles_per_call, window_trust)
from .bit_depths import bit_depth_for_max
from .raster_io import RasterPair, _first_line, atomic_output, check_output_path, declared_bit_depth, inspect_pair
from .registration import MIN_PIXELS, SEARCH, Coregistration, Registration, estimate_offset
from .session import Device
from .sidecar import SpreadSidecar, atomic_outputs, sidecar_path
from .stages import OrderedWorker, ordered_map
from .tiling import Tile, TileGrid
from .tiling import Window as GridWindow
from .trust import Trust

# GDAL's block cache while fusing: one row of tiles' reads fits many times over, and a fixed cap keeps peak
# memory independent of the machine (GDAL's default is 5 % of RAM, which a very large scene fills).
GDAL_CACHE_BYTES = 128 * 2**20
# DEFLATE level of the COG, with the TIFF predictor: level 1 took 3.1 CPU-s for a 16-MP 4-band uint16 scene
# against 8.6 at the default 6, for a file 4 % larger (73 vs 70 MiB; 98 MiB at level 6 without predictor).
COG_DEFLATE_LEVEL = 1
STATS_BLOCK_PIXELS = 2**22  # PAN pixels per block of the scene-statistics pass (bounded memory)
REGISTRATION_SIDE = 256  # MS pixels per side of the central window the PAN/MS offset is measured on (0.1–0.4 s)
METRICS_MAX_SIDE = 2048  # full-resolution metrics use at most this central crop (PAN pixels per side)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneConfig:
    model: str | None = None  # .onnx (onnx backend) or .pt (torch); None → models/ddrf_<C>band.<ext>
    backend: Backend = Backend.ONNX  # which network runs the steps
    device: Device = Device.AUTO  # auto | cuda | cpu
    fuse: FuseOptions = field(default_factory=FuseOptions)  # steps, tiles, batch, seed, bit depth
    threads: int | None = None  # intra-op threads of the network; None → runtime default
    overwrite: bool = False  # replace an existing output
    quicklook: str | None = None  # PNG path for an MS | PAN | fused panel
    report: str | None = None  # JSON path for timings, providers and metrics
    metrics: bool = False  # compute full-resolution D_λ / D_s / HQNR into the report
    prepare_threads: int | None = None  # threads reading and conditioning tiles ahead of the network; None → half
    # the cores, 1..4
    queue_depth: int = 1  # batches ready beyond one per reader thread, and finished strips waiting to be written
    coregister: Coregistration = Coregistration.AUTO  # the PAN/MS offset measured from the pixels: fuse a shifted
    # pair moved (auto), only report it and warn (check), or trust the geotransforms (off)

    def __post_init__(self) -> None:
        for name in ("prepare_threads", "queue_depth"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"must be >= 1, got {value}", name)

    def resolved_prepare_threads(self) -> int:
        """The option, else half the cores (the network's thread takes the rest), at least 1 and at most 4: on
        2 cores one reader beat two for a real model (53 vs 60 s, 10 MP) and held peak memory 7 % lower."""
        return self.prepare_threads or max(1, min(4, (os.cpu_count() or 1) // 2))


# Bundled model per (MS bands C, guide bands k): pansharpening by band count, hyperspectral by guide.
BUNDLED_MODELS = {(4, 1): "ddrf_4band", (8, 1): "ddrf_8band", (128, 9): "ddrf_hs_ms", (128, 1): "ddrf_hs_pan"}


def default_model(bands: int, guide_bands: int, backend: Backend) -> Path:
    """The bundled model for ``bands`` MS and ``guide_bands`` guide bands (it may not be installed)."""
    ext = "onnx" if Backend(backend) is Backend.ONNX else "pt"
    return MODELS_DIR / f"{BUNDLED_MODELS.get((bands, guide_bands), f'ddrf_{bands}band')}.{ext}"


def _check_against_model(pair: RasterPair, denoiser: DenoiserLike, model_path: str) -> None:
    spec = denoiser.spec
    if pair.ms_count != spec.num_bands:
        raise InputError(f"has {pair.ms_count} bands but the model {Path(model_path).name} fuses "
                         f"{spec.num_bands} ({', '.join(spec.bands)}); pass a model for {pair.ms_count} bands",
                         pair.ms_path)
    if pair.pan_count != spec.guide_bands:
        raise InputError(f"has {pair.pan_count} bands; the model expects a {spec.guide_bands}-band guide",
                         pair.pan_path)
    if pair.ratio != spec.ratio:
        raise InputError(f"MS/PAN ratio is {pair.ratio} but the model was trained for ratio {spec.ratio}",
                         pair.ms_path)


def _read(ds: rasterio.io.DatasetReader, window: Window) -> np.ma.MaskedArray:
    """(bands, rows, cols) pixels of ``window``, no-data (a NaN no-data value included) masked.

    A failed read, and a NaN or infinity that is not no-data, are the input's fault.
    """
    try:
        data = ds.read(window=window, masked=True)
    except rasterio.errors.RasterioIOError as e:
        cause = e.__cause__ or e
        raise InputError(f"reading rows {int(window.row_off)}..{int(window.row_off + window.height) - 1} failed: "
                         f"the file is truncated or corrupt ({str(cause).strip()})", ds.name) from None
    if data.dtype.kind == "f":
        if ds.nodata is not None and np.isnan(ds.nodata):
            data = np.ma.masked_invalid(data)
        if not np.isfinite(data.filled(0)).all():
            raise InputError("contains NaN or infinite values; set a no-data value for them", ds.name)
    return data


def _scan_max(path: str, window: Window) -> float:
    """Largest valid value of a raster window, read block-row by block-row (bounded memory); -inf if none."""
    peak = -math.inf
    with rasterio.open(path) as ds:
        step = max(1, 2**22 // max(1, int(window.width) * ds.count))
        for r in range(0, int(window.height), step):
            w = Window(window.col_off, window.row_off + r, window.width, min(step, int(window.height) - r))
            data = _read(ds, w)
            if data.count():
                peak = max(peak, float(data.max()))
    return peak


def resolve_scene_bit_depth(pair: RasterPair, requested: int | None) -> BitDepth:
    """The bit depth and how it was found: the option, else the NBITS tag, else uint8 → 8 (all three stated),
    else guessed from the data's maximum."""
    if requested is not None:
        return BitDepth(requested, "option", True)
    for path in (pair.ms_path, pair.pan_path):
        bits = declared_bit_depth(path)
        if bits:
            return BitDepth(bits, f"NBITS of {Path(path).name}", True)
    if pair.dtype == "uint8":
        return BitDepth(8, "uint8 data type", True)
    peaks = {path: _scan_max(path, window) for path, window in ((pair.ms_path, pair.ms_window),
                                                               (pair.pan_path, pair.pan_window))}
    for path, peak in peaks.items():
        if peak == -math.inf:
            raise InputError("has no valid pixels (all no-data)", path)
    peak = max(peaks.values())
    if pair.dtype.startswith("float"):
        bits = bit_depth_for_max(peak, floating=True)
        return BitDepth(bits, f"float data maximum {peak:g} (full scale {2**bits - 1})", False)
    return BitDepth(bit_depth_for_max(peak), f"data maximum {peak:g}", False)


def _read_filled(ds: rasterio.io.DatasetReader, window: Window, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (rows, cols, bands) float32 clipped to [0, scale] with no-data filled, valid mask (rows, cols)).

    No-data pixels get the band's mean over the valid pixels of the window, so they inject no edges;
    values above the full scale are clipped, never wrapped.
    """
    data = _read(ds, window).astype(np.float32)  # (bands, rows, cols)
    invalid = np.ma.getmaskarray(data)
    valid = ~invalid.any(axis=0)
    filled = np.empty(data.shape, np.float32)
    for b in range(data.shape[0]):
        mean = float(data[b].mean()) if data[b].count() else 0.0
        filled[b] = data[b].filled(mean)
    np.clip(filled, 0.0, scale, out=filled)
    return filled.transpose(1, 2, 0), valid


def _shift(window: GridWindow, by: Window) -> Window:
    return Window(by.col_off + window.col, by.row_off + window.row, window.width, window.height)


def _scene_statistics(pair: RasterPair, spec: ModelSpec, value_scale: ValueScale, scale: float,
                      read_fit_window: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
                      ) -> tuple[Radiometry, SceneBase | None]:
    """The whole scene's radiometry (``pipeline.Radiometry``) and base statistics
    (``detail_base.scene_statistics``; None for bases without any) over the MS pixels valid in both inputs: the
    moments in one extra pass over the PAN, block-row by block-row (bounded memory), and for ``Base.GLP_HPM_FIT``
    the detail gains on the central ``fit_window`` as ``read_fit_window`` returns it (``_fit_window_reader``).
    Scenes that need neither skip the pass."""
    target = spec.target
    if not target.base.needs_scene_statistics and value_scale is ValueScale.BIT_DEPTH:
        return Radiometry(scale, scale), None
    r, ms_rows, ms_cols = pair.ratio, int(pair.ms_window.height), int(pair.ms_window.width)
    step = max(1, STATS_BLOCK_PIXELS // max(1, pair.width * r))  # MS rows per block
    total = MatchMoments.empty(pair.ms_count)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(pair.ms_path) as ms_ds, \
            rasterio.open(pair.pan_path) as pan_ds:
        for r0 in range(0, ms_rows, step):
            n = min(step, ms_rows - r0)
            ms, pan, valid = _read_ms_grid(ms_ds, pan_ds, pair, GridWindow(r0, 0, n, ms_cols), scale)
            total = total + MatchMoments.of(ms, box_mean(pan, r), valid)
        radiometry = Radiometry.of(spec, value_scale, scale, total)
        return radiometry, scene_statistics(target, total, radiometry.from_full_scale, r,
                                            lambda: _normalised(read_fit_window(), scale))


def _read_window(ms_ds, pan_ds, pair: RasterPair, ms_win: GridWindow,
                 scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DN of an MS-grid window: MS (n, m, C), its PAN (r·n, r·m, k), and the MS pixels valid in both (n, m)."""
    r = pair.ratio
    pan_win = GridWindow(ms_win.row * r, ms_win.col * r, ms_win.height * r, ms_win.width * r)
    ms, ms_ok = _read_filled(ms_ds, _shift(ms_win, pair.ms_window), scale)  # (n, m, C)
    pan, pan_ok = _read_filled(pan_ds, _shift(pan_win, pair.pan_window), scale)  # (n·r, m·r, k)
    return ms, pan, _valid_in_both(ms_ok, pan_ok, r)


def _valid_in_both(ms_ok: np.ndarray, pan_ok: np.ndarray, ratio: int) -> np.ndarray:
    """(n, m) MS pixels that are valid and whose every PAN pixel (ratio·n, ratio·m) is valid too."""
    return ms_ok & (box_mean(pan_ok, ratio) == 1.0)


def _normalised(window: tuple[np.ndarray, np.ndarray, np.ndarray],
                scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``_read_window`` result as MS (C, n, m) and first PAN band (r·n, r·m) ÷ ``scale``, and its valid pixels."""
    ms, pan, valid = window
    return ms.transpose(2, 0, 1) / scale, pan[..., 0] / scale, valid


def _read_ms_grid(ms_ds, pan_ds, pair: RasterPair, ms_win: GridWindow,
                  scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised MS (C, n, m) of an MS-grid window, its first PAN band (r·n, r·m), and its valid MS pixels."""
    return _normalised(_read_window(ms_ds, pan_ds, pair, ms_win, scale), scale)


def _registration(pair: RasterPair) -> Registration:
    """The PAN/MS offset on the scene's central window (``registration.estimate_offset``), the PAN read ``SEARCH``
    pixels beyond it on every side, from inside the pair's PAN window where the scene is large enough."""
    r, rows, cols = pair.ratio, int(pair.ms_window.height), int(pair.ms_window.width)
    inset = -(-SEARCH // r)  # MS pixels kept clear of the edges, so the searched PAN stays within the pair's
    h, w = (min(REGISTRATION_SIDE, n - 2 * inset) for n in (rows, cols))
    if h <= 0 or w <= 0 or h * w < MIN_PIXELS:
        return Registration.unmeasured()
    win = GridWindow((rows - h) // 2, (cols - w) // 2, h, w)
    pan_win = Window(pair.pan_window.col_off + r * win.col - SEARCH, pair.pan_window.row_off + r * win.row - SEARCH,
                     r * w + 2 * SEARCH, r * h + 2 * SEARCH)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(pair.ms_path) as ms_ds, \
            rasterio.open(pair.pan_path) as pan_ds:
        ms, ms_ok = _read_filled(ms_ds, _shift(win, pair.ms_window), math.inf)  # (h, w, C) DN
        pan, pan_ok = _read_filled(pan_ds, pan_win, math.inf)  # (r·h + 2s, r·w + 2s, k) DN
    pan_ok = pan_ok[SEARCH:SEARCH + r * h, SEARCH:SEARCH + r * w]
    return estimate_offset(ms, pan.mean(axis=2), _valid_in_both(ms_ok, pan_ok, r), r)


def _coregistered(pair: RasterPair, mode: Coregistration) -> tuple[RasterPair, Registration | None, bool]:
    """The pair as ``mode`` says to fuse it, its registration (None: not measured) and whether it was moved."""
    if mode is Coregistration.OFF:
        return pair, None, False
    registration = _registration(pair)
    if not registration.shifted:
        return pair, registration, False
    moved = f"by {registration.offset[0]} row(s), {registration.offset[1]} column(s) of its pixels"
    fit = f"correlation with the MS {registration.correlation:.3f} → {registration.best_correlation:.3f}"
    if mode is Coregistration.CHECK:
        log.warning("%s: the PAN fits the MS better moved %s than as georeferenced (%s): edges will be doubled; "
                    "--coregister auto fuses it moved", pair.pan_path, moved, fit)
        return pair, registration, False
    log.info("%s: PAN moved %s to fit the MS (%s)", pair.pan_path, moved, fit)
    return inspect_pair(pair.ms_path, pair.pan_path, registration.offset), registration, True


def _fit_window_reader(pair: RasterPair, scale: float) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``_read_window`` of the scene's central ``fit_window``, read on the first call only: the detail gains and the
    trust fit (``pipeline.window_trust``) both use it, and a scene that needs neither never reads it."""
    window = GridWindow(*fit_window(int(pair.ms_window.height), int(pair.ms_window.width), pair.ratio))

    @functools.cache
    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(pair.ms_path) as ms_ds, \
                rasterio.open(pair.pan_path) as pan_ds:
            return _read_window(ms_ds, pan_ds, pair, window, scale)
    return read


@dataclass(frozen=True, eq=False)  # holds arrays
class _ReadBatch:
    """One batch of tiles read and prepared by the producer thread, in scene order."""

    row: int  # tile-grid row: batches never span two rows
    last_in_row: bool  # the strip can be written once this batch is blended
    inputs: BatchInputs
    valid: tuple[np.ndarray, ...]  # per tile (read rows, read cols) bool: PAN and MS pixels both valid


def _read_tile(tile: Tile, grid: TileGrid, pair: RasterPair, ms_ds, pan_ds,
               scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MS DN (mh, mw, C), guide DN (ph, pw[, k]), valid (h, w)) of one tile, no-data filled: the reads with
    their halos, ``valid`` on the tile's output pixels (``tile.read``)."""
    ms, ms_ok = _read_filled(ms_ds, _shift(tile.ms, pair.ms_window), scale)  # (mh, mw, C)
    pan, pan_ok = _read_filled(pan_ds, _shift(tile.pan, pair.pan_window), scale)  # (ph, pw, k)
    rd = tile.read
    r0, c0 = rd.row - tile.ms.row * grid.ratio, rd.col - tile.ms.col * grid.ratio
    ms_ok_up = np.repeat(np.repeat(ms_ok, grid.ratio, 0), grid.ratio, 1)[r0:r0 + rd.height, c0:c0 + rd.width]
    p0, q0 = rd.row - tile.pan.row, rd.col - tile.pan.col
    valid = pan_ok[p0:p0 + rd.height, q0:q0 + rd.width] & ms_ok_up  # (h, w)
    return ms, (pan if pan.shape[2] > 1 else pan[..., 0]), valid


class _ThreadDatasets:
    """The MS and PAN opened once per thread (a rasterio dataset must not be shared between threads)."""

    def __init__(self, pair: RasterPair) -> None:
        self._pair, self._local, self._opened, self._lock = pair, threading.local(), [], threading.Lock()

    def get(self) -> tuple[Any, Any]:
        if not hasattr(self._local, "pair"):
            ms_ds = rasterio.open(self._pair.ms_path)
            pan_ds = rasterio.open(self._pair.pan_path)
            with self._lock:
                self._opened += [ms_ds, pan_ds]
            self._local.pair = (ms_ds, pan_ds)
        return self._local.pair

    def close(self) -> None:
        for ds in self._opened:
            ds.close()


def _batch_plan(rows: list[list[Tile]], batch: int) -> Iterator[tuple[int, bool, list[Tile]]]:
    """(tile-grid row, last batch of the row?, tiles) in scene order; batches never span two rows."""
    for i, row_tiles in enumerate(rows):
        for b0 in range(0, len(row_tiles), batch):
            yield i, b0 + batch >= len(row_tiles), row_tiles[b0:b0 + batch]


def _prepare(job: tuple[int, bool, list[Tile]], grid: TileGrid, pair: RasterPair, datasets: _ThreadDatasets,
             spec: ModelSpec, options: FuseOptions, radiometry: Radiometry, scene: SceneBase | None) -> _ReadBatch:
    """Read and condition one batch (the producer stage, on a worker thread)."""
    row, last, group = job
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # GDAL's settings and message handler are per thread
        ms_ds, pan_ds = datasets.get()
        ms_reads, pan_reads, valid = zip(*(_read_tile(t, grid, pair, ms_ds, pan_ds, radiometry.full_scale)
                                           for t in group))
    return _ReadBatch(row, last, prepare_batch(grid, group, ms_reads, pan_reads, spec, options, radiometry.unit,
                                               scene), valid)


def _single_threaded_kernels() -> None:
    """Pool initialiser: numba kernels on a worker use one thread; the pool is the parallelism (no spinning)."""
    numba.set_num_threads(1)


def _finish(item: tuple[_ReadBatch, np.ndarray], spec: ModelSpec, options: FuseOptions,
            radiometry: Radiometry) -> tuple[_ReadBatch, np.ndarray]:
    """One batch's network output made blendable (the finishing stage, on a worker thread)."""
    batch, x0 = item
    return batch, finish_batch(batch.inputs, x0, spec, options, radiometry)


def _output_nodata(pair: RasterPair, scale: float) -> float | None:
    """The MS no-data value, else the PAN's — or, when the output (MS) dtype cannot hold the PAN's, a value no
    fused pixel takes: the dtype's minimum if negative, else its maximum if above the full scale, else 0."""
    if pair.ms_nodata is not None or pair.pan_nodata is None:
        return pair.ms_nodata
    dtype = np.dtype(pair.dtype)
    if dtype.kind == "f":
        return pair.pan_nodata
    info = np.iinfo(dtype)
    if np.isfinite(pair.pan_nodata) and pair.pan_nodata == int(pair.pan_nodata) and \
            info.min <= pair.pan_nodata <= info.max:
        return pair.pan_nodata
    return float(info.min if info.min < 0 else info.max if info.max > scale else 0)


def _output_profile(pair: RasterPair, nodata: float | None) -> dict:
    """The temporary GeoTIFF the strips stream into: fast deflate on GDAL's threads (the COG re-encodes it)."""
    return dict(driver="GTiff", dtype=pair.dtype, count=pair.ms_count, height=pair.height, width=pair.width,
                crs=pair.crs, transform=pair.transform, nodata=nodata, tiled=True, blockxsize=256,
                blockysize=256, compress="deflate", zlevel=1, predictor=_predictor(pair.dtype),
                num_threads="ALL_CPUS", BIGTIFF="IF_SAFER")


def _predictor(dtype: str) -> int:
    """TIFF predictor: horizontal differencing for integers (2), floating-point (3)."""
    return 3 if np.dtype(dtype).kind == "f" else 2


def _to_dtype(values: np.ndarray, dtype: str, scale: float) -> np.ndarray:
    """Fused DN (rows, cols, C) → (C, rows, cols) in the output dtype: rounded and clipped for integers."""
    out = values.transpose(2, 0, 1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        hi = min(scale, np.iinfo(dtype).max)
        return np.clip(np.rint(out), 0, hi).astype(dtype)
    return out.astype(dtype)


def _off_nodata(block: np.ndarray, nodata: float, scale: float) -> None:
    """Move valid pixels that equal ``nodata`` one step towards mid-scale, so they do not read back as no-data.

    A dark pixel clipped to 0 next to a no-data value of 0 is the usual case; 1 DN (or one float ulp) is far
    below the fusion error.
    """
    hit = block == nodata
    if hit.any():
        toward = block.dtype.type(scale / 2)
        value = block.dtype.type(nodata)
        if block.dtype.kind == "f":
            block[hit] = np.nextafter(value, toward)
        else:
            block[hit] = value + (1 if value < toward else -1)


def fuse_scene(ms_path: str | os.PathLike, pan_path: str | os.PathLike, out_path: str | os.PathLike,
               config: SceneConfig = SceneConfig(), progress: bool = False,
               loader: Callable[..., DenoiserLike] | None = None) -> dict:
    """Fuse a GeoTIFF MS/PAN pair into a COG at ``out_path`` on the PAN grid; return the run report.

    Memory is bounded by one row of tiles (strip × scene width), whatever the scene height. ``loader`` opens
    the model (``load_denoiser``'s signature, which is the default and keeps the last networks loaded).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ms_path, pan_path, out_path = str(ms_path), str(pan_path), str(out_path)
    check_output_path(out_path, (ms_path, pan_path), config.overwrite)
    side_path = sidecar_path(out_path) if config.fuse.samples > 1 else None  # the spread of several samples
    if side_path:
        check_output_path(side_path, (ms_path, pan_path, out_path), config.overwrite)
    for extra in (config.quicklook, config.report):
        if extra:
            check_output_path(extra, (ms_path, pan_path, out_path), True)
    t = time.perf_counter()
    coregister = Coregistration(config.coregister)
    pair, registration, moved = _coregistered(inspect_pair(ms_path, pan_path), coregister)
    model_path = str(config.model or default_model(pair.ms_count, pair.pan_count, config.backend))
    if config.model is None and not Path(model_path).exists():
        raise ModelError(f"no bundled model for {pair.ms_count}-band MS with a {pair.pan_count}-band guide; "
                         "pass --model", model_path)
    denoiser = (loader or load_denoiser)(model_path, config.backend, config.device, config.threads)
    _check_against_model(pair, denoiser, model_path)
    spec, options = denoiser.spec, config.fuse
    try:
        steps = options.num_steps(spec)
        grid = make_grid(spec, options, pair.height, pair.width)
    except ConfigError as e:  # the options do not suit this model
        raise ConfigError(str(e), model_path) from None
    depth = resolve_scene_bit_depth(pair, options.bit_depth)
    try:
        value_scale = options.requested_value_scale(spec, depth)
    except ConfigError as e:  # the option does not suit this model
        raise ConfigError(str(e), model_path) from None
    scale = full_scale(depth.bits)
    timings["setup"] = time.perf_counter() - t
    t = time.perf_counter()
    read_fit_window = _fit_window_reader(pair, scale)
    radiometry, scene = _scene_statistics(pair, spec, value_scale, scale, read_fit_window)
    timings["scene_statistics"] = time.perf_counter() - t
    t = time.perf_counter()
    trust = window_trust(read_fit_window, denoiser, options, radiometry)
    read_fit_window.cache_clear()  # the window is not needed while the strips stream
    radiometry = dataclasses.replace(radiometry, correction=trust.weight)
    timings["trust"] = time.perf_counter() - t

    nodata = _output_nodata(pair, scale)
    t = time.perf_counter()
    n_invalid = 0
    with atomic_outputs(out_path, side_path) as (final_tmp, side_tmp):
        raw_tmp = final_tmp.with_suffix(".raw.tmp")  # like final_tmp, a name .<output>.ddrf-*.tmp
        side = None if side_tmp is None else SpreadSidecar(side_tmp.with_suffix(".raw.tmp"), pair, spec.bands,
                                                           options.samples, options.spread_sigma, scale)
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), \
                    rasterio.open(raw_tmp, "w", **_output_profile(pair, nodata)) as dst, \
                    side or contextlib.nullcontext():
                for b, desc in enumerate(pair.band_descriptions or (), start=1):
                    dst.set_band_description(b, desc or spec.bands[b - 1])
                writer = _StripWriter(dst, pair, scale, nodata, side)
                _stream_strips(grid, pair, writer, denoiser, options, radiometry, scene, steps,
                               config.resolved_prepare_threads(), config.queue_depth, progress)
                n_invalid = writer.n_invalid
            if n_invalid == pair.height * pair.width:
                raise InputError("has no valid pixels where the PAN has valid ones (all no-data); nothing was "
                                 "written", ms_path)
            timings["fuse_and_write"] = time.perf_counter() - t
            t = time.perf_counter()
            _write_cog(raw_tmp, final_tmp)
            if side is not None:
                _write_cog(side.raw, side_tmp)
            timings["cog"] = time.perf_counter() - t
        except OSError as e:  # full disk, quota, I/O failure part-way (RasterioIOError too): nothing at out_path
            detail = e.strerror or str(e.__cause__ or e).strip()
            raise OutputError(f"writing failed ({detail}); nothing was written (disk full?)", out_path) from None
        finally:
            raw_tmp.unlink(missing_ok=True)
            if side is not None:
                side.raw.unlink(missing_ok=True)

    report = {
        "inputs": {"ms": ms_path, "pan": pan_path}, "output": out_path, "model": model_path,
        "backend": Backend(config.backend).value, "providers": list(denoiser.providers_used),
        "versions": dict(denoiser.versions), "bands": list(spec.bands), "ratio": pair.ratio,
        "bit_depth": depth.bits, "bit_depth_source": depth.source, "steps": steps,
        "value_scale": {"kind": radiometry.value_scale.value, "unit": round(radiometry.unit, 4),  # DN per unit, why
                        "setting": ValueScale(options.value_scale or spec.value_scale).value},
        "tiles": len(grid.tiles), "tile_shape": list(grid.tile_shape), "options": asdict(options),
        "base": {"kind": spec.target.base.value,  # what the network's residual corrects, and its scene statistics
                 **({} if scene is None else scene.as_dict())},
        "trust": {"setting": Trust(options.trust).value, **trust.as_dict()},  # how much of the correction is kept
        "registration": {"setting": coregister.value, "applied": moved,  # the PAN/MS offset from the pixels
                         **({} if registration is None else registration.as_dict())},
        "size": [pair.height, pair.width], "nodata_pixels": n_invalid,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if side is not None:
        report["uncertainty"] = {"path": side_path, "samples": options.samples, **side.summary.as_dict()}
    if config.quicklook or config.metrics:
        t = time.perf_counter()
        report.update(_after_fusion(pair, out_path, spec.bands, config, depth.bits, side_path))
        timings["quicklook_and_metrics"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    report["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    if config.report:
        with atomic_output(config.report) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str))
    return report


@dataclass
class _StripWriter:
    """Writes finished strips (the writer stage): dtype conversion, no-data marking, the GeoTIFF write."""

    dst: Any  # the open temporary GeoTIFF
    pair: RasterPair
    scale: float
    nodata: float | None
    side: SpreadSidecar | None = None  # the spread channels' sidecar (several samples)
    n_invalid: int = 0  # no-data pixels written so far

    def write(self, strip: np.ndarray, valid: np.ndarray, row: int) -> None:
        """strip (n, W, C [+ S]) blended channels and valid (n, W) for scene rows row..row+n-1."""
        c = self.pair.ms_count
        if self.side is not None:
            self.side.write(strip[:, :, c:], valid, row)
        block = _to_dtype(strip[:, :, :c], self.pair.dtype, self.scale)  # (C, n, W)
        if self.nodata is not None:
            _off_nodata(block, self.nodata, self.scale)
        if not valid.all():
            if self.nodata is None:
                raise InputError("has invalid pixels but no no-data value to mark them", self.pair.ms_path)
            block[:, ~valid] = np.asarray(self.nodata, dtype=block.dtype)
            self.n_invalid += int((~valid).sum())
        self.dst.write(block, window=Window(0, row, self.pair.width, block.shape[1]))


def _stream_strips(grid: TileGrid, pair: RasterPair, writer: _StripWriter, denoiser: DenoiserLike,
                   options: FuseOptions, radiometry: Radiometry, scene: SceneBase | None, steps: int, workers: int,
                   depth: int, progress: bool) -> None:
    """Fuse row after row of tiles; write every scene row as soon as no later tile touches it.

    Four stages overlap: ``workers`` threads read and condition batches ahead (``workers + depth`` in
    flight), this thread runs the network and blends, ``workers`` more threads finish the network's output
    (base + correction, the projection onto the MS: on a GPU box the costliest CPU work of a tile) while the
    network takes the next batches (``workers + depth`` in flight), a writer thread converts and writes finished
    strips (``depth`` waiting).
    Order is fixed, so the output does not depend on the thread or queue counts.
    """
    rows: dict[int, list[Tile]] = {}
    for tile in grid.tiles:
        rows.setdefault(tile.index[0], []).append(tile)
    ordered = [rows[i] for i in sorted(rows)]
    starts = [r[0].window.row for r in ordered]
    written = 0
    strip = np.zeros((0, pair.width, output_channels(pair.ms_count, options)), np.float32)  # (rows, W, C + S)
    valid = np.ones((0, pair.width), bool)
    datasets = _ThreadDatasets(pair)
    prepare = functools.partial(_prepare, grid=grid, pair=pair, datasets=datasets, spec=denoiser.spec,
                                options=options, radiometry=radiometry, scene=scene)
    plan = _batch_plan(ordered, tiles_per_call(options))
    batches = ordered_map(prepare, plan, workers=workers, depth=workers + depth, initializer=_single_threaded_kernels)
    finish = functools.partial(_finish, spec=denoiser.spec, options=options, radiometry=radiometry)
    # Left in reverse order: the finishers and readers stop (and are joined) before the readers' datasets close,
    # and the writer drains before the caller closes the output.
    with tqdm(total=len(grid.tiles) * steps, disable=not progress, unit="tile-step", desc="fusing") as bar, \
            OrderedWorker(depth) as background, contextlib.closing(datasets), contextlib.closing(batches):
        predicted = ((batch, predict_x0(batch.inputs, denoiser, options, bar)) for batch in batches)  # this thread
        finished = ordered_map(finish, predicted, workers=workers, depth=workers + depth,  # > workers: the network
                               initializer=_single_threaded_kernels, name="ddrf-finish")  # runs while they finish
        with contextlib.closing(finished):
            for batch, fused in finished:
                end = min(pair.height, max(t.read.row + t.read.height for t in ordered[batch.row]))
                grow = end - written - strip.shape[0]
                if grow > 0:  # extend the strip down to this tile row's last scene row
                    strip = np.concatenate([strip, np.zeros((grow,) + strip.shape[1:], np.float32)])
                    valid = np.concatenate([valid, np.ones((grow, pair.width), bool)])
                for tile, values, ok in zip(batch.inputs.tiles, fused, batch.valid):
                    grid.blend(strip, tile, values, origin=(written, 0))
                    rd = tile.read
                    valid[rd.row - written:rd.row - written + rd.height, rd.col:rd.col + rd.width] &= ok
                if batch.last_in_row:
                    done = starts[batch.row + 1] if batch.row + 1 < len(starts) else pair.height  # no later tile
                    n = done - written
                    background.submit(writer.write, strip[:n], valid[:n], written)
                    strip, valid, written = strip[n:], valid[n:], done


def _write_cog(src: Path, dst: Path) -> None:
    """Re-write a finished GeoTIFF as a Cloud-Optimized GeoTIFF with overviews; failures are OSError.

    GDAL only logs failed block writes of ``src`` (a full disk while streaming): they surface here, when the
    blocks are read back, as CPLE_* errors or a bare SystemError ('Unknown GDAL Error'), like failures of ``dst``.
    """
    try:
        rasterio.shutil.copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", LEVEL=str(COG_DEFLATE_LEVEL),
                             PREDICTOR="YES", BIGTIFF="IF_SAFER", OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE",
                             NUM_THREADS="ALL_CPUS")
    except Exception as e:  # the input is our own finished file: any failure is an I/O failure
        raise OSError(errno.EIO, _first_line(e)) from None


def _after_fusion(pair: RasterPair, out_path: str, bands: tuple[str, ...], config: SceneConfig, bits: int,
                  side_path: str | None = None) -> dict:
    """Quicklook PNG (with the sidecar's spread, if any) and full-resolution metrics on a central crop (bounded
    memory)."""
    side = METRICS_MAX_SIDE // (32 * pair.ratio) * 32 * pair.ratio
    h = min(pair.height, side) // (32 * pair.ratio) * 32 * pair.ratio
    w = min(pair.width, side) // (32 * pair.ratio) * 32 * pair.ratio
    if h == 0 or w == 0:
        h, w = pair.height // pair.ratio * pair.ratio, pair.width // pair.ratio * pair.ratio
    r0 = (pair.height - h) // 2 // pair.ratio * pair.ratio
    c0 = (pair.width - w) // 2 // pair.ratio * pair.ratio
    crop = Window(c0, r0, w, h)
    with rasterio.open(out_path) as o, rasterio.open(pair.ms_path) as m, rasterio.open(pair.pan_path) as p:
        fused = o.read(window=crop).astype(np.float64).transpose(1, 2, 0)  # (h, w, C)
        ms_win = Window(pair.ms_window.col_off + c0 // pair.ratio, pair.ms_window.row_off + r0 // pair.ratio,
                        w // pair.ratio, h // pair.ratio)
        ms = m.read(window=ms_win).astype(np.float64).transpose(1, 2, 0)  # (h/r, w/r, C)
        pan_win = Window(pair.pan_window.col_off + c0, pair.pan_window.row_off + r0, w, h)
        pan = p.read(window=pan_win).astype(np.float64).transpose(1, 2, 0)  # (h, w, k)
    pan = pan[..., 0] if pan.shape[2] == 1 else pan
    out: dict = {}
    if config.quicklook:
        from .quicklook import make_quicklook
        spread = None
        if side_path:  # RMS over bands of the per-band std, (h, w)
            with rasterio.open(side_path) as u:
                spread = np.sqrt(np.mean(u.read(list(range(1, len(bands) + 1)), window=crop) ** 2, axis=0))
        with atomic_output(config.quicklook) as tmp:
            make_quicklook(ms, pan, fused, bands, tmp, spread=spread)
        out["quicklook"] = config.quicklook
    if config.metrics:
        if h % 32 or w % 32:
            out["metrics"] = {"skipped": f"scene crop {h}×{w} is not a multiple of 32 PAN pixels"}
        else:
            from .evaluation.metrics import full_resolution_metrics
            from .resample import upsample
            lms = upsample(ms, pair.ratio)
            vals = full_resolution_metrics(fused, lms, pan, "unknown", pair.ratio)
            out["metrics"] = {"crop": [r0, c0, h, w], **{k: float(v) for k, v in vals.items()}}
    return out

