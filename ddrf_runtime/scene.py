"""Whole-scene fusion of GeoTIFFs in bounded memory: the orchestrator over the per-tile pipeline.

Three layers, like rio-pansharpen: ``pipeline.fuse_tiles`` is the per-tile math; ``_fuse_tile_row`` reads one
row of tiles from the rasters and blends it into a strip; ``fuse_scene`` validates the pair, builds the
output profile from the inputs, streams strips into a temporary GeoTIFF, turns it into a Cloud-Optimized
GeoTIFF and renames it into place — so the output path only ever holds a complete file.

``fuse_scene`` is a pure function of paths and a picklable ``SceneConfig``: ready for a Ray/multiprocess map.
"""
from __future__ import annotations

import errno
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window
from tqdm import tqdm

from .backends import Backend, DenoiserLike, load_denoiser
from .datapaths import MODELS_DIR
from .errors import ConfigError, InputError, ModelError, OutputError
from .pipeline import FuseOptions, full_scale, fuse_tiles, make_grid
from .raster_io import (RasterPair, _first_line, atomic_output, bit_depth_for_max, check_output_path,
                        declared_bit_depth, inspect_pair)
from .session import Device
from .tiling import Tile, TileGrid

# GDAL's block cache while fusing: one row of tiles' reads fits many times over, and a fixed cap keeps peak
# memory independent of the machine (GDAL's default is 5 % of RAM, which a very large scene fills).
GDAL_CACHE_BYTES = 128 * 2**20
METRICS_MAX_SIDE = 2048  # full-resolution metrics use at most this central crop (PAN pixels per side)


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


def resolve_scene_bit_depth(pair: RasterPair, requested: int | None) -> tuple[int, str]:
    """(bit depth, how it was found): the option, else the NBITS tag, else uint8 → 8, else the data's maximum."""
    if requested is not None:
        return requested, "option"
    for path in (pair.ms_path, pair.pan_path):
        bits = declared_bit_depth(path)
        if bits:
            return bits, f"NBITS of {Path(path).name}"
    if pair.dtype == "uint8":
        return 8, "uint8 data type"
    peaks = {path: _scan_max(path, window) for path, window in ((pair.ms_path, pair.ms_window),
                                                               (pair.pan_path, pair.pan_window))}
    for path, peak in peaks.items():
        if peak == -math.inf:
            raise InputError("has no valid pixels (all no-data)", path)
    peak = max(peaks.values())
    if pair.dtype.startswith("float"):
        bits = bit_depth_for_max(peak, floating=True)
        return bits, f"float data maximum {peak:g} (full scale {2**bits - 1})"
    return bit_depth_for_max(peak), f"data maximum {peak:g}"


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


def _shift(window: Window, by: Window) -> Window:
    return Window(by.col_off + window.col, by.row_off + window.row, window.width, window.height)


def _fuse_tile_row(row_tiles: list[Tile], grid: TileGrid, pair: RasterPair, ms_ds, pan_ds,
                   denoiser: DenoiserLike, options: FuseOptions, scale: float, strip: np.ndarray,
                   valid: np.ndarray, origin: int, bar: tqdm | None) -> None:
    """Fuse one row of tiles and blend it into ``strip`` (rows from scene row ``origin``), marking invalid pixels."""
    for b0 in range(0, len(row_tiles), options.batch):
        group = row_tiles[b0:b0 + options.batch]
        ms_reads, pan_reads = [], []
        for tile in group:
            ms, ms_ok = _read_filled(ms_ds, _shift(tile.ms, pair.ms_window), scale)  # (mh, mw, C)
            pan, pan_ok = _read_filled(pan_ds, _shift(tile.read, pair.pan_window), scale)  # (h, w, k)
            ms_reads.append(ms)
            pan_reads.append(pan if pan.shape[2] > 1 else pan[..., 0])
            rd = tile.read
            r0, c0 = rd.row - tile.ms.row * grid.ratio, rd.col - tile.ms.col * grid.ratio
            ms_ok_up = np.repeat(np.repeat(ms_ok, grid.ratio, 0), grid.ratio, 1)[r0:r0 + rd.height, c0:c0 + rd.width]
            valid[rd.row - origin:rd.row - origin + rd.height, rd.col:rd.col + rd.width] &= pan_ok & ms_ok_up
        fused = fuse_tiles(grid, group, ms_reads, pan_reads, denoiser, options, scale=scale, progress=bar)
        for tile, values in zip(group, fused):
            grid.blend(strip, tile, values, origin=(origin, 0))


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
    return dict(driver="GTiff", dtype=pair.dtype, count=pair.ms_count, height=pair.height, width=pair.width,
                crs=pair.crs, transform=pair.transform, nodata=nodata, tiled=True, blockxsize=256,
                blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")


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
               config: SceneConfig = SceneConfig(), progress: bool = False) -> dict:
    """Fuse a GeoTIFF MS/PAN pair into a COG at ``out_path`` on the PAN grid; return the run report.

    Memory is bounded by one row of tiles (strip × scene width), whatever the scene height.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ms_path, pan_path, out_path = str(ms_path), str(pan_path), str(out_path)
    check_output_path(out_path, (ms_path, pan_path), config.overwrite)
    for extra in (config.quicklook, config.report):
        if extra:
            check_output_path(extra, (ms_path, pan_path, out_path), True)
    t = time.perf_counter()
    pair = inspect_pair(ms_path, pan_path)
    model_path = str(config.model or default_model(pair.ms_count, pair.pan_count, config.backend))
    if config.model is None and not Path(model_path).exists():
        raise ModelError(f"no bundled model for {pair.ms_count}-band MS with a {pair.pan_count}-band guide; "
                         "pass --model", model_path)
    denoiser = load_denoiser(model_path, config.backend, config.device, config.threads)
    _check_against_model(pair, denoiser, model_path)
    spec, options = denoiser.spec, config.fuse
    try:
        steps = options.num_steps(spec)
        grid = make_grid(spec, options, pair.height, pair.width)
    except ConfigError as e:  # the options do not suit this model
        raise ConfigError(str(e), model_path) from None
    bits, bits_source = resolve_scene_bit_depth(pair, options.bit_depth)
    scale = full_scale(bits)
    timings["setup"] = time.perf_counter() - t

    nodata = _output_nodata(pair, scale)
    t = time.perf_counter()
    n_invalid = 0
    with atomic_output(out_path) as final_tmp:
        raw_tmp = final_tmp.with_suffix(".raw.tmp")  # like final_tmp, a name .<output>.ddrf-*.tmp
        try:
            with rasterio.Env(GDAL_NUM_THREADS="1", GDAL_CACHEMAX=GDAL_CACHE_BYTES), \
                    rasterio.open(ms_path) as ms_ds, rasterio.open(pan_path) as pan_ds, \
                    rasterio.open(raw_tmp, "w", **_output_profile(pair, nodata)) as dst:
                for b, desc in enumerate(pair.band_descriptions or (), start=1):
                    dst.set_band_description(b, desc or spec.bands[b - 1])
                n_invalid = _stream_strips(grid, pair, ms_ds, pan_ds, dst, denoiser, options, scale, nodata,
                                           steps, progress)
            if n_invalid == pair.height * pair.width:
                raise InputError("has no valid pixels where the PAN has valid ones (all no-data); nothing was "
                                 "written", ms_path)
            timings["fuse_and_write"] = time.perf_counter() - t
            t = time.perf_counter()
            _write_cog(raw_tmp, final_tmp)
            timings["cog"] = time.perf_counter() - t
        except OSError as e:  # full disk, quota, I/O failure part-way (RasterioIOError too): nothing at out_path
            detail = e.strerror or str(e.__cause__ or e).strip()
            raise OutputError(f"writing failed ({detail}); nothing was written (disk full?)", out_path) from None
        finally:
            raw_tmp.unlink(missing_ok=True)

    report = {
        "inputs": {"ms": ms_path, "pan": pan_path}, "output": out_path, "model": model_path,
        "backend": Backend(config.backend).value, "providers": list(denoiser.providers_used),
        "versions": dict(denoiser.versions), "bands": list(spec.bands), "ratio": pair.ratio,
        "bit_depth": bits, "bit_depth_source": bits_source, "steps": steps,
        "tiles": len(grid.tiles), "tile_shape": list(grid.tile_shape), "options": asdict(options),
        "size": [pair.height, pair.width], "nodata_pixels": n_invalid,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if config.quicklook or config.metrics:
        t = time.perf_counter()
        report.update(_after_fusion(pair, out_path, spec.bands, config, bits))
        timings["quicklook_and_metrics"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    report["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    if config.report:
        with atomic_output(config.report) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str))
    return report


def _stream_strips(grid: TileGrid, pair: RasterPair, ms_ds, pan_ds, dst, denoiser: DenoiserLike,
                   options: FuseOptions, scale: float, nodata: float | None, steps: int, progress: bool) -> int:
    """Fuse row after row of tiles; write every scene row as soon as no later tile touches it."""
    rows: dict[int, list[Tile]] = {}
    for tile in grid.tiles:
        rows.setdefault(tile.index[0], []).append(tile)
    starts = [rows[i][0].window.row for i in sorted(rows)]
    written, n_invalid = 0, 0
    strip = np.zeros((0, pair.width, pair.ms_count), np.float32)
    valid = np.ones((0, pair.width), bool)
    with tqdm(total=len(grid.tiles) * steps, disable=not progress, unit="tile-step", desc="fusing") as bar:
        for i in sorted(rows):
            end = min(pair.height, max(t.read.row + t.read.height for t in rows[i]))
            grow = end - written - strip.shape[0]
            if grow > 0:  # extend the strip down to this tile row's last scene row
                strip = np.concatenate([strip, np.zeros((grow,) + strip.shape[1:], np.float32)])
                valid = np.concatenate([valid, np.ones((grow, pair.width), bool)])
            _fuse_tile_row(rows[i], grid, pair, ms_ds, pan_ds, denoiser, options, scale, strip, valid, written, bar)
            done = starts[i + 1] if i + 1 < len(starts) else pair.height  # rows no later tile reaches
            n = done - written
            block = _to_dtype(strip[:n], pair.dtype, scale)  # (C, n, W)
            ok = valid[:n]
            if nodata is not None:
                _off_nodata(block, nodata, scale)
            if not ok.all():
                if nodata is None:
                    raise InputError("has invalid pixels but no no-data value to mark them", pair.ms_path)
                block[:, ~ok] = np.asarray(nodata, dtype=block.dtype)
                n_invalid += int((~ok).sum())
            dst.write(block, window=Window(0, written, pair.width, n))
            strip, valid, written = strip[n:], valid[n:], done
    return n_invalid


def _write_cog(src: Path, dst: Path) -> None:
    """Re-write a finished GeoTIFF as a Cloud-Optimized GeoTIFF with overviews; failures are OSError.

    GDAL only logs failed block writes of ``src`` (a full disk while streaming): they surface here, when the
    blocks are read back, as CPLE_* errors or a bare SystemError ('Unknown GDAL Error'), like failures of ``dst``.
    """
    try:
        rasterio.shutil.copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", BIGTIFF="IF_SAFER",
                             OVERVIEWS="AUTO", OVERVIEW_RESAMPLING="AVERAGE", NUM_THREADS="1")
    except Exception as e:  # the input is our own finished file: any failure is an I/O failure
        raise OSError(errno.EIO, _first_line(e)) from None


def _after_fusion(pair: RasterPair, out_path: str, bands: tuple[str, ...], config: SceneConfig, bits: int) -> dict:
    """Quicklook PNG and full-resolution metrics on a central crop (bounded memory)."""
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
        pan = p.read(window=Window(pair.pan_window.col_off + c0, pair.pan_window.row_off + r0, w, h)).astype(np.float64).transpose(1, 2, 0)
    pan = pan[..., 0] if pan.shape[2] == 1 else pan
    out: dict = {}
    if config.quicklook:
        from .quicklook import make_quicklook
        with atomic_output(config.quicklook) as tmp:
            make_quicklook(ms, pan, fused, bands, tmp)
        out["quicklook"] = config.quicklook
    if config.metrics:
        if h % 32 or w % 32:
            out["metrics"] = {"skipped": f"scene crop {h}×{w} is not a multiple of 32 PAN pixels"}
        else:
            from .metrics import full_resolution_metrics
            from .resample import upsample
            lms = upsample(ms, pair.ratio)
            vals = full_resolution_metrics(fused, lms, pan, "unknown", pair.ratio)
            out["metrics"] = {"crop": [r0, c0, h, w], **{k: float(v) for k, v in vals.items()}}
    return out

