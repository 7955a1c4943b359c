"""GeoTIFF scenes for the scene/CLI tests: small crops of the real demo pair, rewritten with rasterio."""
import hashlib
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from ddrf_runtime.datapaths import DEMO_DIR

RATIO = 4
HALO_PAN = 13 * RATIO  # PAN pixels within which an edge or no-data can change fused values (upsampler reach)
DEMO_MS_WINDOW = Window(80, 80, 40, 40)  # MS pixels of data/demo: a 40×40 MS / 160×160 PAN crop
# ddrf-run options that keep a fake-model run to a fraction of a second: 3×3 tiles of 64², one step.
FAST_ARGS = ("--tile", "64", "--overlap", "16", "--steps", "1", "--device", "cpu", "-q")


def rewrite(path, values=None, window=None, src=None, **profile):
    """(Re)write the GeoTIFF ``path`` from ``src`` (default: itself).

    ``window`` crops; ``values`` maps the (bands, rows, cols) pixels to new ones, whose shape and dtype the file
    takes; ``profile`` overrides creation options (a ``dtype`` there makes GDAL convert the pixels), a callable
    mapping the current value (``transform=lambda t: t @ Affine.scale(2)``).
    """
    with rasterio.open(src or path) as ds:
        data = ds.read(window=window)
        prof = dict(ds.profile, transform=ds.window_transform(window) if window else ds.transform)
    data = values(data) if values else data
    prof.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype.name)
    prof.update({k: v(prof.get(k)) if callable(v) else v for k, v in profile.items()})
    Path(path).unlink(missing_ok=True)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)


def crop_demo(folder, ms_window=DEMO_MS_WINDOW):
    """Write ``folder``/ms.tif and pan.tif: the demo pair cut to ``ms_window`` and RATIO× it, georeference kept."""
    ms, pan = Path(folder) / "ms.tif", Path(folder) / "pan.tif"
    w = ms_window
    rewrite(ms, window=w, src=DEMO_DIR / "ms.tif", photometric="MINISBLACK")  # its RGB tag does not fit 4 bands
    rewrite(pan, window=Window(w.col_off * RATIO, w.row_off * RATIO, w.width * RATIO, w.height * RATIO),
            src=DEMO_DIR / "pan.tif")
    return ms, pan


def digest(path) -> str:
    """sha256 of a file's bytes; size and mtime for a file this user cannot read."""
    path = Path(path)
    if not os.access(path, os.R_OK):
        st = path.stat()
        return f"unreadable {st.st_size} {st.st_mtime_ns}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_state(folder) -> dict[str, str]:
    """{file name: sha256} of the files in ``folder`` ({} when it does not exist)."""
    folder = Path(folder)
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def read(path) -> np.ndarray:
    """All pixels of a raster: (bands, rows, cols)."""
    with rasterio.open(path) as ds:
        return ds.read()


def demo_scenes(folder, n, side=64):
    """``folder``/s<i>_ms.tif and s<i>_pan.tif for i < n: distinct side×side MS windows of the demo pair."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_row = (200 - side) // 16 + 1  # the demo MS is 200×200: windows on a 16-pixel grid
    scenes = []
    for i in range(n):
        r, c = divmod(i, per_row)
        ms, pan = crop_demo(folder, Window(c * 16, (r * 16) % (200 - side), side, side))
        scenes.append((ms.rename(folder / f"s{i}_ms.tif"), pan.rename(folder / f"s{i}_pan.tif")))
    return scenes
