"""GeoTIFF pairing and output plumbing for scenes: what rasterio knows, checked before any fusion.

Pairing policy (documented for users): the output is the *intersection* of the MS and PAN extents,
snapped to whole MS pixels (an MS pixel counts when at least half of it lies on the PAN), on the PAN's
grid. The integer ratio is the rounded MS/PAN resolution ratio; resolutions may deviate from it by
``RATIO_TOLERANCE`` (real products carry such rounding), beyond that the pair is refused.
"""
from __future__ import annotations

import math
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from .errors import InputError, OutputError

RATIO_TOLERANCE = 0.02  # relative deviation of MS/PAN resolution from the integer ratio
MIN_OVERLAP = 0.9  # the common extent must cover this fraction of both inputs
MAX_PIXELS = 4_000_000_000  # PAN pixels per scene we agree to process (refused before allocating)
TEMP_NAME = re.compile(r"\.(.+)\.ddrf-[0-9a-f]{12}(?:\.raw)?\.tmp")  # atomic_output's names; group 1: the output's
_SUPPORTED_DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                               "float32", "float64"})  # complex (also GDAL's complex_int16, unknown to numpy) refused


@dataclass(frozen=True)
class RasterPair:
    """Geometry and metadata of a validated MS/PAN pair; all windows are in each file's pixels."""

    ms_path: str
    pan_path: str
    ratio: int  # PAN pixels per MS pixel
    ms_window: Window  # MS pixels used
    pan_window: Window  # PAN pixels used == output extent (ratio × ms_window)
    ms_count: int  # MS bands
    pan_count: int  # guide bands (1 for PAN)
    dtype: str  # output dtype == MS dtype
    ms_nodata: float | None
    pan_nodata: float | None
    crs: object  # rasterio CRS of both inputs
    transform: object  # affine transform of the output grid
    band_descriptions: tuple[str | None, ...]  # MS band descriptions, copied to the output

    @property
    def height(self) -> int:
        return int(self.pan_window.height)

    @property
    def width(self) -> int:
        return int(self.pan_window.width)


def _open(path: str | os.PathLike) -> rasterio.io.DatasetReader:
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", str(path))
    if p.is_dir():
        raise InputError("is a directory, expected a GeoTIFF", str(path))
    if not os.access(p, os.R_OK):
        raise InputError("permission denied: the file is not readable", str(path))
    if p.stat().st_size == 0:
        raise InputError("file is empty", str(path))
    try:
        return rasterio.open(p)
    except RasterioIOError as e:
        raise InputError(f"not a readable raster ({_first_line(e)})", str(path)) from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _check_raster(ds: rasterio.io.DatasetReader, path: str) -> None:
    if ds.dtypes[0] not in _SUPPORTED_DTYPES:
        raise InputError(f"unsupported data type {ds.dtypes[0]} (use an integer or float raster)", path)
    if ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "1":
        raise InputError("is a 1-bit raster (a mask, not an image)", path)
    if ds.crs is None or ds.transform.is_identity:
        raise InputError("has no georeferencing (CRS and geotransform are required to pair PAN and MS)", path)
    if abs(ds.transform.b) > 1e-12 or abs(ds.transform.d) > 1e-12:
        raise InputError("rotated geotransforms are not supported; warp to a north-up grid first", path)


def _snap_axis(ms_start: float, ms_res: float, ms_n: int, pan_start: float, pan_res: float, pan_n: int,
               ratio: int) -> tuple[int, int, int]:
    """(first MS pixel, MS pixel count, first PAN pixel) along one axis, in each file's pixel units."""
    pan_lo = (pan_start - ms_start) / ms_res  # PAN extent in MS pixel coordinates
    pan_hi = pan_lo + pan_n * pan_res / ms_res
    first = max(0, math.ceil(pan_lo - 0.5))
    last = min(ms_n, math.floor(pan_hi + 0.5))  # exclusive
    count = last - first
    if count <= 0:
        return 0, 0, 0
    pan_first = round((ms_start + first * ms_res - pan_start) / pan_res)
    pan_first = min(max(pan_first, 0), pan_n - count * ratio)
    if pan_first < 0:  # PAN shorter than ratio × MS along this axis: drop MS pixels at the far end
        count = pan_n // ratio
        pan_first = 0
    return first, count, pan_first


def _moved(first: int, count: int, pan_first: int, offset: int, pan_n: int, ratio: int) -> tuple[int, int, int]:
    """``_snap_axis``'s pairing with the PAN moved by ``offset`` of its pixels, less the MS pixels whose moved PAN
    would fall outside the PAN."""
    pan_first += offset
    if pan_first < 0:
        drop = -(pan_first // ratio)  # ceil(−pan_first / ratio)
        first, count, pan_first = first + drop, count - drop, pan_first + drop * ratio
    return first, max(0, min(count, (pan_n - pan_first) // ratio)), pan_first


def inspect_pair(ms_path: str | os.PathLike, pan_path: str | os.PathLike,
                 pan_offset: tuple[int, int] = (0, 0)) -> RasterPair:
    """Open both rasters, check they can be fused together and compute the common grid; ``pan_offset`` (rows,
    columns) moves the PAN's pixels against the MS's from where the geotransforms put them (a co-registration
    measured from the pixels, ``registration``): MS pixels whose moved PAN falls outside the PAN are dropped."""
    ms_path, pan_path = str(ms_path), str(pan_path)
    if Path(ms_path).resolve() == Path(pan_path).resolve():
        raise InputError("MS and PAN are the same file", ms_path)
    with _open(ms_path) as ms, _open(pan_path) as pan:
        _check_raster(ms, ms_path)
        _check_raster(pan, pan_path)
        if ms.crs != pan.crs:
            raise InputError(f"CRS {ms.crs} differs from the PAN's {pan.crs}; reproject one of them", ms_path)
        rx, ry = ms.res[0] / pan.res[0], ms.res[1] / pan.res[1]
        ratio = round((rx + ry) / 2)
        if ratio < 1 or max(abs(rx - ratio), abs(ry - ratio)) > RATIO_TOLERANCE * ratio:
            raise InputError(
                f"MS/PAN resolution ratio {rx:.3f}×{ry:.3f} is not an integer; resample to an integer ratio", ms_path)
        if ratio < 2:
            raise InputError("MS is not coarser than the PAN (ratio 1); nothing to sharpen", ms_path)
        c0, nc, pc0 = _moved(*_snap_axis(ms.bounds.left, ms.res[0], ms.width, pan.bounds.left, pan.res[0],
                                         pan.width, ratio), pan_offset[1], pan.width, ratio)
        r0, nr, pr0 = _moved(*_snap_axis(-ms.bounds.top, ms.res[1], ms.height, -pan.bounds.top, pan.res[1],
                                         pan.height, ratio), pan_offset[0], pan.height, ratio)
        if nc <= 0 or nr <= 0:
            raise InputError(f"does not overlap the PAN {pan_path}", ms_path)
        covered = min(nc * nr / (ms.width * ms.height),
                      nc * nr * ratio * ratio / (pan.width * pan.height))
        if covered < MIN_OVERLAP:
            raise InputError(
                f"overlaps the PAN only partly ({covered:.0%} of the larger input); crop both to a common extent",
                ms_path)
        if nr * nc * ratio * ratio > MAX_PIXELS:
            raise InputError(
                f"scene of {nr * ratio}×{nc * ratio} PAN pixels exceeds the limit of {MAX_PIXELS:,} pixels; "
                "split it into parts", pan_path)
        pan_window = Window(pc0, pr0, nc * ratio, nr * ratio)
        return RasterPair(
            ms_path=ms_path, pan_path=pan_path, ratio=ratio,
            ms_window=Window(c0, r0, nc, nr), pan_window=pan_window,
            ms_count=ms.count, pan_count=pan.count, dtype=ms.dtypes[0],
            ms_nodata=ms.nodata, pan_nodata=pan.nodata, crs=pan.crs,
            transform=pan.window_transform(pan_window),
            band_descriptions=tuple(ms.descriptions),
        )


def declared_bit_depth(path: str) -> int | None:
    """The bit depth a raster declares (GDAL's NBITS image-structure item), if any."""
    with rasterio.open(path) as ds:
        nbits = ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
    return int(nbits) if nbits else None


@contextmanager
def atomic_output(out_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary path next to ``out_path``; rename it into place only on success.

    On any failure (including KeyboardInterrupt) the temporary file is removed, so the output path
    never holds a partial file. A SIGKILL can leave only the uniquely named ``.ddrf-*.tmp`` file.
    """
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.ddrf-{uuid.uuid4().hex[:12]}.tmp")  # TEMP_NAME; fuse_scene adds .raw
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_files(folder: str | os.PathLike) -> Iterator[tuple[Path, str]]:
    """(temporary file, name of the output it was for) of every ``atomic_output`` temporary in ``folder``.

    Only a killed process leaves one behind; whoever owns those outputs (a batch run) removes them.
    """
    folder = Path(folder)
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = TEMP_NAME.fullmatch(entry.name)
            if m and entry.is_file(follow_symlinks=False):
                yield folder / entry.name, m.group(1)


def check_output_path(out_path: str | os.PathLike, inputs: tuple[str, ...], overwrite: bool) -> None:
    """Refuse outputs that would clobber an input or an existing file, or that cannot be written."""
    out = Path(out_path)
    for p in inputs:
        if out.resolve() == Path(p).resolve():
            raise OutputError("output path is one of the inputs; choose another name", str(out))
    if out.exists() and not overwrite:
        raise OutputError("output exists; pass --overwrite to replace it", str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output directory does not exist", str(out))
    if not os.access(parent, os.W_OK):
        raise OutputError("output directory is not writable", str(out))
