"""ddrf-run on bad inputs, each one a small crop of the real demo scene altered in a temporary folder.

A refused case must give exactly one line ``ddrf-run: error: <file or option>: <what>`` and exit status 2,
leave nothing new in the output folder (no output, no temporary file), leave the inputs byte-identical and
stay within REFUSAL_BYTES and REFUSAL_SECONDS (the absurd-size case must be refused before any allocation).

Accepted on purpose (the test checks the output instead):

- scene smaller than one tile: fused as one padded tile.
- extents off by one pixel, sizes that are not a multiple of the ratio: the pairing policy (raster_io) fuses
  the intersection, snapped to whole MS pixels, on the PAN grid; the output is exactly that window.
- no-data — int16 with −9999 and a collar, no-data declared in one input only, Landsat-7-style stripes, NaN as
  the no-data value: the output is no-data exactly where either input is, and finite, in-range values elsewhere
  (the interior far from no-data is unchanged by it). A PAN no-data value the MS dtype cannot hold (−9999 for
  uint16) is replaced by one it can that no fused pixel takes (65535). A valid pixel that fuses to the no-data
  value (a dark pixel clipped to 0 beside a 0 no-data frame) is moved 1 DN off it, so it stays valid.
- constant and all-zero areas are data, not errors: the output stays finite and is zero where the inputs are.
- values above ``--bit-depth``: clipped to the full scale (never wrapped) — the same output as clipped inputs.
"""
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

import ddrf_runtime.session as session_mod
from ddrf_runtime.raster_io import inspect_pair

from .onnx_fakes import DEMO_SPEC, make_model
from .scenes import FAST_ARGS, HALO_PAN, RATIO, folder_state, read, rewrite

# A refusal comes before the work: a refused run stays under these (Python-side allocations, wall time).
REFUSAL_BYTES, REFUSAL_SECONDS = 64 * 2**20, 20
COLLAR = 3  # MS pixels of the no-data frames below (12 PAN pixels; PAN frames are 10)

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # no_geotransform


@dataclass
class Pair:
    """A writable copy of the demo crop, a fake model, and the ddrf-run arguments that fuse them."""

    root: Path
    ms: Path
    pan: Path
    out: Path
    model: str
    crop: tuple  # the unaltered (ms, pan) it was copied from
    cli: Callable
    monkeypatch: pytest.MonkeyPatch
    args: list = field(default_factory=list)

    def argv(self) -> list:
        return [self.ms, "--pan", self.pan, "-o", self.out, "--model", self.model, *FAST_ARGS, *self.args]

    def watched(self) -> dict:
        """Digests of every file a run must not change: inputs, model, and the output folder."""
        return {str(d): folder_state(d) for d in {self.ms.parent, Path(self.model).parent, self.out.parent}}


@pytest.fixture
def pair(tmp_path, demo_crop, fake_models, cli, monkeypatch):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for src in demo_crop:
        shutil.copy(src, inputs / src.name)
    return Pair(tmp_path, inputs / "ms.tif", inputs / "pan.tif", out / "fused.tif", fake_models["zero"],
                demo_crop, cli, monkeypatch)


# ---- ways to spoil a pair -------------------------------------------------------------------------------------

def _poke(value):
    """float32 pixels with ``value`` written into a few of them."""
    def f(a):
        a = a.astype(np.float32)
        a[:, 5:7, 9] = value
        return a
    return f


def _own_model(p, **kw):
    p.model = make_model(p.ms.parent / "model.onnx", "zero", spec=DEMO_SPEC, **kw)


def _truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])


def _huge(p):
    """A 50k² MS and 200k² PAN (4·10¹⁰ pixels): sparse tiled files that hold no pixel data."""
    with rasterio.open(p.ms) as ms:
        crs, t = ms.crs, ms.transform
    for path, side, count, res in ((p.ms, 50_000, 4, t.a), (p.pan, 200_000, 1, t.a / RATIO)):
        rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=count, dtype="uint16", crs=crs,
                      transform=Affine(res, 0, t.c, 0, -res, t.f), tiled=True, blockxsize=4096, blockysize=4096,
                      SPARSE_OK=True, BIGTIFF="YES").close()


def _unreadable(p):
    os.chmod(p.ms, 0)
    if os.access(p.ms, os.R_OK):
        pytest.skip("running as a user who can read mode-000 files (root)")


def _unwritable(p):
    os.chmod(p.out.parent, 0o555)
    if os.access(p.out.parent, os.W_OK):
        pytest.skip("running as a user who can write read-only folders (root)")


def _no_cuda(p):
    p.args += ["--device", "cuda"]
    # An onnxruntime-gpu install would really have CUDA: pin the case to a build without it.
    p.monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


# id: (spoil the pair, who is named: a Pair attribute or an option, words of the message)
REFUSED = {
    "missing_file": (lambda p: p.ms.unlink(), "ms", ["file not found"]),
    "ms_is_pan": (lambda p: setattr(p, "pan", p.ms), "ms", ["same file"]),
    "crs_differs": (lambda p: rewrite(p.pan, crs="EPSG:32650"), "ms", ["CRS", "differs", "reproject"]),
    "no_overlap": (lambda p: rewrite(p.pan, transform=lambda t: t @ Affine.translation(10_000, 0)), "ms",
                   ["does not overlap"]),
    "partial_overlap": (lambda p: rewrite(p.pan, transform=lambda t: t @ Affine.translation(80, 0)), "ms",
                        ["overlaps the PAN only partly", "50%"]),
    "non_integer_ratio": (lambda p: rewrite(p.pan, transform=lambda t: t @ Affine.scale(1.6)), "ms",
                          ["ratio 2.509", "not an integer"]),
    "ratio_not_the_models": (lambda p: rewrite(p.pan, values=lambda a: a[:, ::2, ::2],
                                               transform=lambda t: t @ Affine.scale(2)), "ms",
                             ["ratio is 2", "trained for ratio 4"]),
    "ms_band_count": (lambda p: rewrite(p.ms, values=lambda a: a[:3]), "ms", ["has 3 bands", "fuses 4"]),
    "multiband_pan": (lambda p: rewrite(p.pan, values=lambda a: np.concatenate([a, a])), "pan",
                      ["has 2 bands", "1-band guide"]),
    "complex64": (lambda p: rewrite(p.ms, values=lambda a: a.astype(np.complex64)), "ms",
                  ["unsupported data type complex64"]),
    "complex_int16": (lambda p: rewrite(p.ms, values=lambda a: a.astype(np.complex64), dtype="complex_int16"),
                      "ms", ["unsupported data type complex_int16"]),
    "one_bit_mask": (lambda p: rewrite(p.ms, values=lambda a: (a > 400).astype(np.uint8), NBITS=1), "ms",
                     ["1-bit"]),
    "all_nodata_ms": (lambda p: rewrite(p.ms, values=np.zeros_like, nodata=0), "ms", ["no valid pixels"]),
    "all_nodata_ms_bit_depth_given": (lambda p: (rewrite(p.ms, values=np.zeros_like, nodata=0),
                                                 p.args.extend(["--bit-depth", "11"])), "ms", ["no valid pixels"]),
    "all_nodata_pan": (lambda p: rewrite(p.pan, values=np.zeros_like, nodata=0), "pan", ["no valid pixels"]),
    "nan_values": (lambda p: rewrite(p.ms, values=_poke(np.nan)), "ms", ["NaN or infinite"]),
    "inf_values": (lambda p: rewrite(p.pan, values=_poke(-np.inf)), "pan", ["NaN or infinite"]),
    "empty_file": (lambda p: p.ms.write_bytes(b""), "ms", ["file is empty"]),
    "truncated_tiff": (lambda p: _truncate(p.pan), "pan", ["truncated or corrupt"]),
    "truncated_header": (lambda p: _truncate(p.ms, 0.001), "ms", ["not a readable raster"]),
    "not_a_tiff": (lambda p: p.ms.write_text("MS bands, see the PDF\n"), "ms", ["not a readable raster"]),
    "unreadable_file": (_unreadable, "ms", ["permission denied"]),
    "no_geotransform": (lambda p: rewrite(p.ms, transform=None), "ms", ["no georeferencing"]),
    "absurd_size": (_huge, "pan", ["200000×200000", "exceeds the limit"]),
    "output_folder_missing": (lambda p: setattr(p, "out", p.out.parent / "missing" / "fused.tif"), "out",
                              ["output directory does not exist"]),
    "output_folder_unwritable": (_unwritable, "out", ["not writable"]),
    "output_exists": (lambda p: p.out.write_bytes(b"an earlier result"), "out", ["output exists", "--overwrite"]),
    "output_is_an_input": (lambda p: setattr(p, "out", p.pan), "out", ["one of the inputs"]),
    "corrupt_model": (lambda p: (_own_model(p), _truncate(p.model)), "model", ["cannot load the model"]),
    "model_without_metadata": (lambda p: _own_model(p, metadata=None), "model", ["no 'ddrf' metadata"]),
    "model_metadata_contradicts_graph": (
        lambda p: _own_model(p, metadata=replace(DEMO_SPEC, bands=tuple("BGRNCYEM")).to_json()), "model",
        ["disagree", "8 bands", "'x_t'", "the graph has 4"]),
    "steps_zero": (lambda p: p.args.extend(["--steps", "0"]), "--steps", ["must be >= 1, got 0"]),
    "steps_negative": (lambda p: p.args.extend(["--steps", "-3"]), "--steps", ["must be >= 1, got -3"]),
    "steps_above_T": (lambda p: p.args.extend(["--steps", "101"]), "model", ["steps 101 exceeds", "100"]),
    "prepare_threads_zero": (lambda p: p.args.extend(["--prepare-threads", "0"]), "--prepare-threads",
                             ["must be >= 1, got 0"]),
    "samples_zero": (lambda p: p.args.extend(["--samples", "0"]), "--samples", ["must be >= 1, got 0"]),
    "projections_negative": (lambda p: p.args.extend(["--projections", "-1"]), "--projections",
                             ["must be >= 0, got -1"]),
    "tile_not_a_multiple": (lambda p: p.args.extend(["--tile", "100"]), "model",
                            ["tile size 100", "multiple of 16", "try 96"]),
    "cuda_without_cuda": (_no_cuda, "--device", ["'cuda'", "no CUDA provider"]),
}


def _subject(p, who):
    return str(getattr(p, who)) if hasattr(p, who) else who


def _check_refused(p, run, case):
    spoil, who, words = REFUSED[case]
    spoil(p)
    before, existed = p.watched(), p.out.exists()
    rc, lines = run(p)
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ddrf-run: error: {_subject(p, who)}: "), lines[0]
    for word in words:
        assert word in lines[0]
    assert p.watched() == before and p.out.exists() == existed


@contextmanager
def _bounded():
    """Fail a run that allocates or lasts like a fusion instead of a refusal (an alarm ends it: exit status 1)."""
    def too_slow(*_):
        raise TimeoutError(f"not refused within {REFUSAL_SECONDS} s")
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(REFUSAL_SECONDS)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < REFUSAL_BYTES, f"{peak / 2**20:.0f} MiB allocated before refusing"


@pytest.mark.parametrize("case", REFUSED)
def test_refused(pair, case):
    def run(p):
        with _bounded():
            return p.cli(*p.argv())
    _check_refused(pair, run, case)


@pytest.mark.parametrize("case", ["no_geotransform", "truncated_tiff"])  # stderr beyond Python: warnings, GDAL
def test_refused_by_the_installed_command(pair, case):
    def run(p):
        proc = subprocess.run([Path(sys.executable).with_name("ddrf-run"), *map(str, p.argv())],
                              capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stderr.splitlines()
    _check_refused(pair, run, case)


# ---- accepted cases -------------------------------------------------------------------------------------------

def _collar(width, value, dtype=None):
    """Pixels (cast to ``dtype``) with a no-data frame ``width`` wide."""
    def f(a):
        a = a.astype(dtype or a.dtype)
        a[:, :width], a[:, -width:], a[:, :, :width], a[:, :, -width:] = value, value, value, value
        return a
    return f


def _stripes(a):
    """Landsat-7 SLC-off-like gaps: slanted two-pixel stripes of zeros."""
    rows, cols = np.indices(a.shape[1:])
    return np.where(((cols + rows // 3) % 9 < 2)[None], 0, a)


def _dark_beside_bright(a):
    """A no-data (0) frame around dark pixels (1 DN) above bright ones: interpolation undershoot fuses dark
    pixels to 0, which must not read back as no-data."""
    rows = np.arange(a.shape[1])[None, :, None]  # (1, H, 1)
    return _collar(COLLAR, 0)(np.where(rows < a.shape[1] // 2, 1, 2000).astype(a.dtype) + np.zeros_like(a))


def _zero_and_constant(a):
    """float32 pixels: the top-left quarter all zero, the bottom-right quarter constant."""
    a = a.astype(np.float32)
    h, w = a.shape[1] // 2, a.shape[2] // 2
    a[:, :h, :w], a[:, h:, w:] = 0.0, 500.0
    return a


def _same_as_clipped(p, out):
    """--bit-depth 8 on uint16 data up to 2047: the output of inputs clipped to 255 beforehand, not wrapped."""
    assert out.max() == 255
    for path in (p.ms, p.pan):
        rewrite(path, values=lambda a: np.minimum(a, 255))
    p.out = p.root / "clipped.tif"
    assert p.cli(*p.argv())[0] == 0
    np.testing.assert_array_equal(out, read(p.out))


def _interior_unchanged(p, out):
    """Far from the no-data, the fused values are those of the pair without no-data (same scene, same grid)."""
    (p.ms, p.pan), p.out = p.crop, p.root / "reference.tif"
    assert p.cli(*p.argv())[0] == 0
    far = slice(COLLAR * RATIO + HALO_PAN, -COLLAR * RATIO - HALO_PAN)
    np.testing.assert_allclose(out[:, far, far].astype(float), read(p.out)[:, far, far].astype(float), atol=1)


def _nodata_value(value):
    """The output's no-data value (e.g. one the MS dtype holds and fused pixels never take)."""
    def check(p, out):
        with rasterio.open(p.out) as o:
            assert o.nodata == value
    return check


def _zero_stays_zero(p, out):
    """The all-zero quarter (80² PAN pixels) fuses to zero away from its inner edges."""
    zero = out[:, :80 - HALO_PAN, :80 - HALO_PAN]
    assert zero.size and (zero == 0).all()


def _shape(height, width):
    def check(p, out):
        assert out.shape[1:] == (height, width)
        with rasterio.open(p.out) as o, rasterio.open(p.pan) as pan:
            assert o.transform.almost_equals(pan.transform)  # the crops all start at the PAN's first pixel
    return check


# id: (alter the pair, extra options, check (pair, output pixels (bands, rows, cols)))
ACCEPTED = {
    "smaller_than_one_tile": (lambda p: (rewrite(p.ms, window=Window(0, 0, 10, 10)),
                                         rewrite(p.pan, window=Window(0, 0, 40, 40))), [], _shape(40, 40)),
    "pan_one_pixel_narrower": (lambda p: rewrite(p.pan, window=Window(0, 0, 159, 160)), [], _shape(160, 156)),
    "ms_one_pixel_shorter": (lambda p: rewrite(p.ms, window=Window(0, 0, 40, 39)), [], _shape(156, 160)),
    "sizes_not_multiples_of_the_ratio": (lambda p: (rewrite(p.ms, window=Window(0, 0, 39, 37)),
                                                    rewrite(p.pan, window=Window(0, 0, 157, 150))),
                                         [], _shape(148, 156)),
    "int16_nodata_collar": (lambda p: (rewrite(p.ms, values=_collar(COLLAR, -9999, np.int16), nodata=-9999),
                                       rewrite(p.pan, values=_collar(10, -9999, np.int16), nodata=-9999)),
                            [], _interior_unchanged),
    "nodata_in_pan_only": (lambda p: rewrite(p.pan, values=_collar(10, 0), nodata=0), [], _interior_unchanged),
    "pan_nodata_outside_the_ms_dtype": (lambda p: rewrite(p.pan, values=_collar(10, -9999, np.int16), nodata=-9999),
                                        [], _nodata_value(65535)),
    "dark_pixels_beside_zero_nodata": (lambda p: rewrite(p.ms, values=_dark_beside_bright, nodata=0),
                                       [], None),
    "landsat7_stripes_in_ms": (lambda p: rewrite(p.ms, values=_stripes, nodata=0), [], None),
    "nan_as_nodata": (lambda p: rewrite(p.ms, values=_poke(np.nan), nodata=np.nan), [], None),
    "zero_and_constant_areas": (lambda p: (rewrite(p.ms, values=_zero_and_constant),
                                           rewrite(p.pan, values=_zero_and_constant)), [], _zero_stays_zero),
    "values_above_bit_depth": (lambda p: None, ["--bit-depth", "8"], _same_as_clipped),
}


def _invalid(path, window=None) -> np.ndarray:
    """(rows, cols) True where any band of the raster is no-data."""
    with rasterio.open(path) as ds:
        return (ds.read_masks(window=window) == 0).any(axis=0)


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted(pair, case):
    alter, options, check = ACCEPTED[case]
    alter(pair)
    pair.args += options
    before = pair.watched()
    rc, lines = pair.cli(*pair.argv())
    assert (rc, lines) == (0, [])
    after, out_dir = pair.watched(), str(pair.out.parent)
    assert set(after.pop(out_dir)) == {pair.out.name} and before.pop(out_dir) == {}  # no temporary file left
    assert after == before
    with rasterio.open(pair.out) as o, rasterio.open(pair.ms) as ms:
        assert o.dtypes[0] == ms.dtypes[0] and o.count == ms.count
    out = read(pair.out)
    geometry = inspect_pair(pair.ms, pair.pan)
    wanted = np.kron(_invalid(pair.ms, geometry.ms_window), np.ones((RATIO, RATIO), bool))
    wanted |= _invalid(pair.pan, geometry.pan_window)
    np.testing.assert_array_equal(_invalid(pair.out), wanted)  # no-data exactly where an input has it
    valid = out[:, ~wanted]
    assert np.isfinite(valid).all() and valid.min() >= 0 and valid.max() <= 2047
    if check:
        check(pair, out)
