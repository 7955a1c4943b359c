"""The uncertainty sidecar of a multi-sample fusion: a float32 GeoTIFF on the output's grid, streamed by strips.

``fused.tif`` gets ``fused_uncertainty.tif``: per-band standard deviation of the samples in the output's units,
then their spectral angle spread in degrees (``uncertainty.spread_bands``), NaN where the output is no-data.
Both files appear together or not at all: ``atomic_outputs`` renames the sidecar into place only after the
output itself, and removes it whenever the output fails.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from .raster_io import RasterPair, atomic_output
from .uncertainty import SpreadSummary, band_descriptions, spread_bands


def sidecar_path(out_path: str | Path) -> str:
    """``<stem>_uncertainty<suffix>`` next to the output."""
    out = Path(out_path)
    return str(out.with_name(f"{out.stem}_uncertainty{out.suffix or '.tif'}"))


@contextmanager
def atomic_outputs(out_path: str, side_path: str | None) -> Iterator[tuple[Path, Path | None]]:
    """Temporary paths of the output and (if any) its sidecar: the output is renamed into place first, the
    sidecar after it; a failure before that removes both temporaries."""
    if side_path is None:
        with atomic_output(out_path) as tmp:
            yield tmp, None
        return
    with atomic_output(side_path) as side_tmp, atomic_output(out_path) as tmp:  # inner (output) renames first
        yield tmp, side_tmp


class SpreadSidecar:
    """Writes blended spread channels (``pipeline.fuse_tiles``' channels after the C bands) strip by strip into a
    raw GeoTIFF ``raw`` (to be turned into a COG) and keeps a streamed summary for the report."""

    def __init__(self, raw: Path, pair: RasterPair, bands: Sequence[str], samples: int, sigma: float,
                 scale: float) -> None:
        self.raw, self.bands = raw, len(bands)
        names = [f"std_{b}" for b in bands] + ["angle_deg"]
        # a std of values in [0, scale] is at most scale/2·√(N/(N−1)): larger ones land in the last bin
        self.summary = SpreadSummary(names, [scale / 2] * len(bands) + [90.0])
        self._descriptions = band_descriptions(bands, samples, sigma)
        self._profile = dict(driver="GTiff", dtype="float32", count=len(bands) + 1, height=pair.height,
                             width=pair.width, crs=pair.crs, transform=pair.transform, nodata=float("nan"),
                             tiled=True, blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
        self._dst = None

    def __enter__(self) -> "SpreadSidecar":
        self._dst = rasterio.open(self.raw, "w", **self._profile)
        for b, desc in enumerate(self._descriptions, start=1):
            self._dst.set_band_description(b, desc)
        return self

    def __exit__(self, *exc) -> None:
        self._dst.close()

    def write(self, blended: np.ndarray, valid: np.ndarray, row: int) -> None:
        """Blended spread channels (n, W, C + 1) of scene rows ``row``.. and their validity (n, W)."""
        out = spread_bands(blended, self.bands)  # (n, W, C + 1)
        self.summary.add(out, valid)
        out[~valid] = np.nan
        self._dst.write(out.transpose(2, 0, 1), window=Window(0, row, out.shape[1], out.shape[0]))
