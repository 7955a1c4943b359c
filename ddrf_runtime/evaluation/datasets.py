"""Readers for every real MS/PAN and HS/guide source, Wald-protocol pairs and the fixed train/val/test splits.

Every source is described by a small ``_Source`` record; one generic reader turns it into a ``Scene``:
MS (h×w×C) and guide (ratio·h × ratio·w, or × k for a k-band guide) in float32 digital numbers, bands
reordered to the CANONICAL order (B, G, R, NIR, then the sensor's other bands in native order) so that a
4-band model can use the first four bands of any scene. A hyperspectral band set (no band named B, G, R or
NIR) keeps its native wavelength order. A data family (``FAMILIES``) fixes what one model fuses: band names,
guide bands k, ratio and default bit depth; training, export and the benchmarks all read it from there.

Decisions, with the evidence behind them
----------------------------------------
* Osman (``geotiff/osman_4band_r4``): band order **B, G, R, NIR** although the TIFF colour
  interpretation says R, G, B. Evidence: (1) haze raises the dark floor most in the shortest band:
  1st-percentile DNs are 326, 346, 151, 160 (WV2 shows the same fall from blue to red: 145, 136, 61);
  (2) the coefficient of variation rises 0.19, 0.27, 0.35 over bands 0..2 as it does from blue to red;
  (3) regressing the 4×4-averaged PAN on the bands gives weights .02, .30, .52, .16: a VHR PAN
  (≈450–800 nm) cannot ignore red; (4) (b3−b2)/(b3+b2) is positive for 99 % of pixels (NDVI-like),
  (b3−b0)/(b3+b0) is negative for most; (5) as a (b2, b1, b0) composite the scene looks natural
  (brown soil, blue steel roofs); the other way round the soil turns blue-grey.
  The PAN geotransform has 0.498 m × 0.5006 m pixels instead of 0.5 × 0.5025: both grids share
  their centre, so the PAN is taken as the exact 4× grid; cross-correlation confirms ≤ ±1.5 PAN
  pixels of residual misregistration at the left/right edges (−1 / +1 best shift), none at the centre.
  Rows are another matter (stop 30, ``registration.estimate_offset`` on strips of 4–8 MS rows × 190 columns):
  the PAN fits the MS best 2 PAN rows up above MS row ≈ 98 and 2 rows down from row ≈ 100, in every strip
  (correlation 0.90–0.96 as paired, 0.98–0.99 moved): a seam of one MS row (the MS geotransform's rows are
  2.01 m, against 4 × 0.5 m PAN rows; no MS row is duplicated, so the cause is not visible). ``osman`` stays as
  the file pairs it (the demo, the 4-band test strip and the ``osman`` leave-one-sensor-out fold carry the seam;
  the runtime's co-registration sees quadrants that disagree and leaves it as georeferenced); ``osman_top`` (MS
  rows 1–97, PAN from row 2) and ``osman_bottom`` (rows 102–198, PAN from row 410 to its end) are its two sides
  registered: the 4-band train split (since the stage-7 release) and the fold ``osman_registered`` read them.
  The PAN is not resampled: interpolation would blur the detail source.
* CristianICS (``geotiff/cristianics_8band_r4``): WorldView-3 band order (Coastal, B, G, Y, R,
  RedEdge, NIR1, NIR2). Evidence: 1.2 m / 0.3 m GSD is the WV3 resampled product, and the band
  correlations fall off with wavelength distance (bands 0..4 ≥ 0.94 among themselves, band 5 ≈ 0.9,
  bands 6/7 correlate 0.98 with each other and ≤ 0.79 with the visible). The sensor is not stated,
  so it is "unknown" (MTF gains 0.3 / 0.15, close to WV3's). Values are float radiance
  (max 118.2): bit depth 7 (full scale 127) is the smallest 2**L − 1 above them. The PAN window starts at
  PAN row 2, column 2: the geotransform says (1, 2), but the 4×4-averaged PAN correlates best with the
  MS at (2, 2) (0.981 vs 0.974) on both halves of the scene, and the data decide co-registration.
  MS 143×144 keeps all pixels (PAN rows 2..573, columns 2..577).
* SpaceNet-2 Shanghai (``shanghai``, ``geotiff/spacenet2_shanghai_wv3_8band_r4``): WorldView-3, 8 bands in
  the WV3 order, uint16 11-bit (max 1267), EPSG:4326. Both files claim the same top-left corner, but the
  4×4-averaged PAN correlates with the MS mean at 0.83 unshifted and best, 0.91, with the PAN window starting
  at PAN row 3, column 0 (row offsets −2..6 and column offsets −1..1 searched; the same (3, 0) wins on each of the
  four 160² quadrants, so it is a shift, not a warp). The data decide: ``pan_offset`` (3, 0), which costs
  one MS row (324 × 325 kept).
* SpaceNet-6 Rotterdam (``rotterdam_1``, ``rotterdam_2``, ``geotiff/spacenet6_rotterdam_wv2_4band``):
  WorldView-2 B, G, R, NIR; the MS files are float64 holding 11-bit integers on a 1 m grid that is a 2×
  nearest-neighbour copy of the native 2 m grid, so the reader takes [0::2, 0::2] (150², ratio 4 to the
  0.5 m PAN). Residual misregistration is at most one PAN pixel (4×4-average correlation peaks at
  (0, −1) in scene 1 and (−1, +1) in scene 2, within 0.02 of (0, 0); no common direction, so no shift).
  Scene 2's top ≈ 49 native rows are zero on MS and PAN (32 %, untagged): the reader keeps the longest run
  of rows with no zero pixel (MS rows 50..149, ``valid_row_run``), so no training crop, filter support or
  test region sees a hole.
* Landsat-8 (``geotiff/landsat8_sattestdata``): B2..B5 are B, G, R, NIR; B8 is the PAN. The PAN grid
  is shifted by half a PAN pixel (7.5 m, standard L1); PAN[0:2h, 0:2w] and PAN[1:2h+1, 1:2w+1] are
  equally good (correlation on cloud-free pixels is symmetric between the two), the first keeps all
  627 MS columns. Raw 16-bit DNs, bit depth 16. The scene is cloudy; cloud parallax moves clouds
  between PAN and MS by up to 3 PAN pixels.
* FuseBox Landsat-7: native R, G, B, NIR, SWIR1, SWIR2 (the FuseBox README swapped bands 1 and 3).
* Simulated IKONOS (``sim_ikonos_hyspex``, ``sim_ikonos_aviris``): the DLR HySU HySpex cube (0.7 m, 417–903 nm;
  its ENVI header gives the wavelengths in µm) and the AVIRIS Santa Barbara cube, weighted by the IKONOS responses
  that ship with HySure (columns PAN, B, G, R, NIR: centres 725, 496, 559, 666, 792 nm), each response's floor
  under 1 % of its peak dropped; the PAN response runs to 1,035 nm and is cut at HySpex's last band. Both scenes
  are vegetated (NIR ≈ 3× red), so the PAN follows the NIR band (correlation 0.81 / 0.97) more than the visible
  ones. MS and PAN share the cube's grid (ratio 1), so a Wald pair at ratio 4 reduces only the MS; bit depth by
  the float rule (maxima ≈ 8,150 → 13). Only the leave-one-sensor-out ``hpm_fit_pool_sim`` variant uses them.
* WV3_example holds only the 32×32 MS that Z-PNN ships (already a low-resolution product): it is a
  full-resolution-only scene.
* EO-1 Paris (``hyperspectral/hysure_paris_eo1``, HySure "dataset C"): 128 Hyperion bands (names
  ``H008``…``H219`` from the files' ``non_del_bands``; 215 is absent too) with the ALI 9-band MS
  (``paris_hs_ms``, same 30 m grid: native ratio 1, guide "ALI-MS", bands in ALI wavelength order
  MS-1', 1, 2, 3, 4, 4', 5', 5, 7 — each correlates best with the Hyperion band of its wavelength) or the
  ALI PAN (``paris_hs_pan``, 10 m, ratio 3; the 3×3-averaged PAN correlates best with the HS at offset
  (0, 0)). The HSim of the PAN file is columns 13..70 of the MS file's HSim, exactly.
  Values are float reflectance-like numbers (0.0009..2.29): the reader stores them as DN = value × 10 000
  (the common reflectance coding of 16-bit products), bit depth 15 (full scale 32 767, the smallest
  2**L − 1 above 22 872), so the runtime's ``/ (2**bit_depth − 1)`` maps them to [0, 0.7] and the toolbox
  Q2ⁿ, which rounds to uint16, keeps 1e-4 resolution. A model of these families expects inputs on that scale.
  Wald protocol at ratio 3: the HS is low-passed with the same MTF-matched Gaussian as every other family
  (GNyq 0.3, the toolbox's value for hyperspectral sensors, and the filter D_λ uses) and decimated by 3.
  HySure's own simulation uses a 5×5 binomial kernel, whose gain at the LR Nyquist frequency is
  cos⁴(π/6) ≈ 0.56: a weaker blur that leaves more aliasing in the LR HSI; one degradation model for
  every family and for D_λ was preferred. The ALI-MS guide stays as it is (it is already on the reference
  grid); the ALI PAN is reduced onto the HS grid with the default PAN gain 0.15, like any PAN.

Splits (``ddrf_runtime.evaluation.splits.SPLITS``)
---------------------------------------
Splits are by scene, path/row or MS column strip, and a region is cropped BEFORE any filtering, so no
test pixel reaches a training pair, not even through a 41-tap filter's support. FuseBox scenes of one
WRS-2 path/row overlap on the ground, so whole path/rows go to one split. Column strips are multiples
of 32 MS pixels, which keeps full-resolution metrics (32×32 blocks on the PAN grid) exact.

* ``4band`` (ratio 4, first four canonical bands):
  train = FuseBox P034R032, P090R083, P093R085, P093R086; Landsat-8 (whole); GE1, WV2 columns 0..191;
  Osman columns 0..135; and, for sensor diversity, the 8-band train regions of Shanghai (WV3) and CristianICS
  (their first four canonical bands) and both Rotterdam WV2 scenes. val = FuseBox P091R083. test = FuseBox
  P092R086; GE1, WV2 columns 192..319; Osman columns 136..199. test_full = the same GE1 / WV2 / Osman held-out
  strips at full resolution plus WV3_example (a 32² crop of another WorldView-3 scene). The whole Osman scene is
  the CLI demo, but columns 0..135 are training targets, so its full-resolution numbers are not a held-out test.
* ``8band`` (ratio 4, all eight bands): train = WV2 columns 0..191, Shanghai columns 0..191 (all rows),
  CristianICS columns 0..95; no val (too little 8-band data to spare); test = WV2 columns 192..319, Shanghai
  rows 0..319 × columns 192..319, CristianICS rows 0..127 × columns 96..143 (CristianICS is small, 143 × 144,
  but a 48-column strip still gives a 12-pixel-wide LR test image and a 192 × 512 PAN block for
  full-resolution metrics; rows are cut to multiples of 32 for the same reason); test_full = those three
  strips plus WV3_example (32 × 32 MS: smaller than a 64² training crop at reduced resolution, so it
  stays a held-out full-resolution scene). The Rotterdam scenes are 4-band: they train the ``4band`` family.
* ``hs_ms`` (ratio 3, 128 Hyperion bands, k = 9 ALI-MS guide): train = Paris HS+MS columns 0..47,
  test = columns 48..71 (multiples of 3; reference 72×24, LR HSI 24×8); no val, no test_full (HS and MS
  share one grid, so no native-resolution pair exists).
* ``hs_pan`` (ratio 3, 128 bands, ALI PAN): train = Paris HS+PAN rows 0..35, test = rows 36..71
  (reference 36×57, LR HSI 12×19); test_full = rows 36..67, columns 0..31 (32 HS pixels, so the PAN
  sides are multiples of the 32-pixel blocks of D_s). Rows, not columns: only a row split leaves a
  training strip for 32² crops and a held-out strip for a full-resolution block. No val.
  The two families share ground (see above), but no model is trained on both.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import scipy.io

from ..bit_depths import bit_depth_for_max
from ..bands import CANONICAL_FIRST, FAMILIES, HYPERION_BANDS, WV_NATIVE, canonical_order
from ..datapaths import data_root
from ..errors import ConfigError, InputError
from ..mtf import ms_gains, mtf_lowpass, pan_gain
from ..resample import decimate, upsample
from .splits import Region, split_regions

_L7_NATIVE = ("R", "G", "B", "NIR", "SWIR1", "SWIR2")

@dataclass(frozen=True)
class _Source:
    """Where one scene lives and what it is; files are relative to the data root.

    A file spec is ``path.mat:variable`` or ``path.tif`` (all bands). Several MS files are stacked in order;
    the guide file holds the PAN or a k-band guide. ``pan_offset`` is the guide (row, column) of the MS pixel
    (0, 0)'s top-left corner; ``dn_per_unit`` converts stored values to DN (float reflectance files).
    """

    sensor: str
    bit_depth: int
    native_bands: tuple[str, ...]
    ratio: int
    georeferenced: bool
    ms_files: tuple[str, ...]
    pan_file: str
    pan_offset: tuple[int, int] = (0, 0)
    guide: str = "PAN"
    dn_per_unit: float = 1.0
    ms_step: int = 1  # the MS file is a ms_step× nearest-neighbour copy: the native grid is [::ms_step, ::ms_step]
    zero_is_nodata: bool = False  # untagged zero no-data: keep the longest run of rows free of it (see below)
    ms_rows: tuple[int, int] | None = None  # MS rows [first, stop) kept, a part of the file; ``pan_offset`` is then
    # the guide pixel of the first kept row's first pixel


def _fusebox(n: int) -> _Source:
    d = "mat/fusebox_landsat7/cropped"
    return _Source("L7", 8, _L7_NATIVE, 2, False, (f"{d}/{n}_ms.mat:cropped_im",), f"{d}/{n}_pan.mat:cropped_gray")


def _osman(pan_offset: tuple[int, int] = (0, 0), ms_rows: tuple[int, int] | None = None) -> _Source:
    d = "geotiff/osman_4band_r4"
    return _Source("unknown", 11, CANONICAL_FIRST, 4, True, (f"{d}/ms.tif",), f"{d}/pan.tif", pan_offset,
                   ms_rows=ms_rows)


def _rotterdam(n: int) -> _Source:
    d = "geotiff/spacenet6_rotterdam_wv2_4band"
    return _Source("WV2", 11, CANONICAL_FIRST, 4, True, (f"{d}/ms{n}.tif",), f"{d}/pan{n}.tif",
                   ms_step=2, zero_is_nodata=True)


@dataclass(frozen=True)
class _Simulated:
    """A sensor simulated from a real hyperspectral cube: its MS bands and PAN are the cube weighted by the
    sensor's spectral responses, both on the cube's grid (native ratio 1, like Hyperion with the ALI MS), so a
    Wald pair reduces only the MS. The spatial detail is real; the PAN-to-band relation is the simulated sensor's.
    """

    sensor: str  # whose spectral responses and MS MTF (``mtf.ms_gains``) the simulation takes
    cube: str  # file spec of the (H, W, B) cube
    wavelengths: str  # band centres in nm: a file spec holding them, or an ENVI header (``.hdr``)
    responses: str  # file spec of a (λ nm, PAN, B, G, R, NIR) table
    georeferenced: bool


_IKONOS_RESPONSES = "hyperspectral/hysure_paris_eo1/ikonos_spec_resp.mat:ikonos_sp"
_SIMULATED: Mapping[str, _Simulated] = MappingProxyType({
    "sim_ikonos_hyspex": _Simulated("IKONOS", "hyperspectral/dlr_hysu_hyspex/DLR_HySU_HS_full.tif",
                                    "hyperspectral/dlr_hysu_hyspex/DLR_HySU_HS_full.hdr", _IKONOS_RESPONSES, True),
    "sim_ikonos_aviris": _Simulated(
        "IKONOS", "hyperspectral/aviris_santabarbara_gatorsense/a_hsi_img_for_VI_demo.mat:hsi_img",
        "hyperspectral/aviris_santabarbara_gatorsense/a_hsi_img_for_VI_demo.mat:wavelengths", _IKONOS_RESPONSES,
        False),
})

_SHANGHAI = "geotiff/spacenet2_shanghai_wv3_8band_r4/"
_L8 = "geotiff/landsat8_sattestdata/l8_B"
_PARIS = "hyperspectral/hysure_paris_eo1/paris_data_hs_"
_SOURCES: Mapping[str, _Source] = MappingProxyType({
    "ge1": _Source(
        "GE1", 8, CANONICAL_FIRST, 4, False, ("mat/grip_pnn/imgGE1.mat:I_MS",), "mat/grip_pnn/imgGE1.mat:I_PAN",
    ),
    "wv2": _Source("WV2", 11, WV_NATIVE, 4, False, ("mat/grip_pnn/imgWV2.mat:I_MS",), "mat/grip_pnn/imgWV2.mat:I_PAN"),
    "wv3_example": _Source(
        "WV3", 11, WV_NATIVE, 4, False,
        ("mat/grip_zpnn/WV3_example.mat:I_MS_LR",), "mat/grip_zpnn/WV3_example.mat:I_PAN",
    ),
    **{f"fusebox_{n}": _fusebox(n) for n in range(1, 40)},
    "osman": _osman(),
    # The same scene's two sides of its seam, each with its PAN where it fits (the Osman note above).
    "osman_top": _osman((2, 0), (1, 98)),
    "osman_bottom": _osman((4 * 102 + 2, 0), (102, 200)),
    "cristianics": _Source(
        "unknown", 7, WV_NATIVE, 4, True,
        ("geotiff/cristianics_8band_r4/mul.tif",), "geotiff/cristianics_8band_r4/pan.tif", (2, 2),
    ),
    "shanghai": _Source(
        "WV3", 11, WV_NATIVE, 4, True, (f"{_SHANGHAI}MUL_AOI_4_Shanghai_img1920.tif",),
        f"{_SHANGHAI}PAN_AOI_4_Shanghai_img1920.tif", (3, 0),
    ),
    **{f"rotterdam_{n}": _rotterdam(n) for n in (1, 2)},
    "landsat8": _Source(
        "L8", 16, CANONICAL_FIRST, 2, True, tuple(f"{_L8}{b}.tif" for b in (2, 3, 4, 5)), f"{_L8}8.tif",
    ),
    "paris_hs_ms": _Source(
        "Hyperion", 15, HYPERION_BANDS, 1, False, (f"{_PARIS}ms.mat:HSim",), f"{_PARIS}ms.mat:MSim",
        guide="ALI-MS", dn_per_unit=10_000.0,
    ),
    "paris_hs_pan": _Source(
        "Hyperion", 15, HYPERION_BANDS, 3, False, (f"{_PARIS}pan.mat:HSim",), f"{_PARIS}pan.mat:PCim",
        guide="ALI-PAN", dn_per_unit=10_000.0,
    ),
})


class _InDigitalNumbers:
    """Records whose arrays are digital numbers of a ``bit_depth``-bit sensor."""

    bit_depth: int

    @property
    def full_scale(self) -> int:
        return 2**self.bit_depth - 1


@dataclass(frozen=True, eq=False)
class Scene(_InDigitalNumbers):
    """One real MS/guide pair at its native resolution, canonical band order, float32 DN (read-only arrays)."""

    name: str
    sensor: str
    guide: str  # what ``pan`` is: "PAN" (the sensor's own), "ALI-MS", "ALI-PAN", …
    bit_depth: int
    bands: tuple[str, ...]
    ratio: int
    georeferenced: bool
    ms: np.ndarray  # (h, w, C)
    pan: np.ndarray  # (ratio·h, ratio·w) or (ratio·h, ratio·w, k)


@dataclass(frozen=True, eq=False)
class _Sample(_InDigitalNumbers):
    """What every evaluation sample says about where its arrays come from."""

    name: str
    sensor: str
    bit_depth: int
    bands: tuple[str, ...]
    ratio: int


@dataclass(frozen=True, eq=False)
class Pair(_Sample):
    """A Wald-protocol (reduced-resolution) sample: fuse (ms_lr, pan) and compare with gt."""

    lms: np.ndarray  # (H, W, C): ms_lr upsampled to the PAN grid
    pan: np.ndarray  # (H, W) or (H, W, k)
    gt: np.ndarray  # (H, W, C): the original MS
    ms_lr: np.ndarray  # (H/ratio, W/ratio, C)


@dataclass(frozen=True, eq=False)
class FullRes(_Sample):
    """A full-resolution sample (no reference): fuse (ms, pan), judge with D_λ / D_s / HQNR."""

    ms: np.ndarray  # (h, w, C)
    lms: np.ndarray  # (H, W, C)
    pan: np.ndarray  # (H, W) or (H, W, k)


def scene_names() -> list[str]:
    """Every scene ``load_scene`` knows, whether or not its files are present."""
    return [*_SOURCES, *_SIMULATED]


def _read_file(spec: str, root: Path) -> tuple[np.ndarray, float | None]:
    """One file spec → (H×W×C array, nodata value or None)."""
    rel, _, var = spec.partition(":")
    path = root / rel
    if not path.is_file():
        raise InputError("data file missing (see PROVENANCE.md)", str(path))
    if var:
        arr = scipy.io.loadmat(path, variable_names=[var]).get(var)
        if arr is None:
            raise InputError(f"variable {var!r} not in file", str(path))
        return (arr[..., None] if arr.ndim == 2 else arr), None
    import rasterio  # here, not at the top: packed pairs (``ddrf_train.packed``) train where it is not installed

    with rasterio.open(path) as src:
        return np.moveaxis(src.read(), 0, -1), src.nodata


def _wavelengths(spec: str, root: Path) -> np.ndarray:
    """(B,) band centres in nm from a file spec, or from an ENVI header's ``wavelength = {…}`` entry."""
    if not spec.endswith(".hdr"):
        return _read_file(spec, root)[0].ravel().astype(np.float64)
    path = root / spec
    if not path.is_file():
        raise InputError("data file missing (see PROVENANCE.md)", str(path))
    found = re.search(r"^wavelength\s*=\s*\{([^}]*)\}", path.read_text(errors="replace"), re.M)
    if found is None:
        raise InputError("no wavelength list in the ENVI header", str(path))
    wl = np.array([float(v) for v in found.group(1).split(",")])
    return wl * 1000.0 if wl.max() < 100.0 else wl  # µm (HySpex writes 0.4174 … 0.9028) → nm


def _simulate(name: str, sim: _Simulated, root: Path) -> Scene:
    """MS (H, W, 4) and PAN (H, W) of ``sim``'s sensor from its cube: each response, less its floor under 1 % of
    its peak, sampled at the band centres and normalised to sum 1 (one that runs past the cube is cut there)."""
    cube = _read_file(sim.cube, root)[0].astype(np.float64)  # (H, W, B)
    wl = _wavelengths(sim.wavelengths, root)  # (B,)
    table = _read_file(sim.responses, root)[0][..., 0]  # (L, 6): λ, PAN, B, G, R, NIR
    if wl.shape != (cube.shape[-1],):
        raise InputError(f"{wl.size} wavelengths for {cube.shape[-1]} bands", str(root / sim.cube.partition(":")[0]))
    resp = np.where(table[:, 1:] >= 0.01 * table[:, 1:].max(axis=0), table[:, 1:], 0.0)  # drop the noise floor
    weights = np.stack([np.interp(wl, table[:, 0], r, left=0.0, right=0.0) for r in resp.T], -1)  # (B, 5)
    weights /= weights.sum(axis=0)
    sensed = np.clip(cube @ weights, 0.0, None).astype(np.float32)  # (H, W, 5)
    ms, pan = np.ascontiguousarray(sensed[..., 1:]), np.ascontiguousarray(sensed[..., 0])
    ms.setflags(write=False)
    pan.setflags(write=False)
    bits = bit_depth_for_max(float(sensed.max()), floating=True)
    return Scene(name, sim.sensor, "PAN", bits, CANONICAL_FIRST, 1, sim.georeferenced, ms, pan)


@functools.lru_cache(maxsize=None)
def load_scene(name: str) -> Scene:
    """Read a scene (cached: the arrays are shared, hence read-only)."""
    root = data_root()
    if name in _SIMULATED:
        return _simulate(name, _SIMULATED[name], root)
    src = _SOURCES.get(name)
    if src is None:
        raise ConfigError(f"unknown scene {name!r}; known: {', '.join(scene_names())}")
    parts = [_read_file(f, root) for f in (*src.ms_files, src.pan_file)]
    nodata = {v * src.dn_per_unit for _, v in parts if v is not None}
    ms = np.concatenate([a for a, _ in parts[:-1]], axis=-1)[::src.ms_step, ::src.ms_step]
    ms = ms if src.ms_rows is None else ms[slice(*src.ms_rows)]
    guide = parts[-1][0]
    pan = guide[..., 0] if guide.shape[-1] == 1 else guide
    if ms.shape[-1] != len(src.native_bands):
        raise InputError(f"expected {len(src.native_bands)} MS bands, found {ms.shape[-1]}",
                         str(root / src.ms_files[0].partition(":")[0]))
    r, (oy, ox) = src.ratio, src.pan_offset
    h = min(ms.shape[0], (pan.shape[0] - oy) // r)
    w = min(ms.shape[1], (pan.shape[1] - ox) // r)
    order = canonical_order(src.native_bands)
    ms = (ms[:h, :w][..., list(order)] * src.dn_per_unit).astype(np.float32)
    pan = (pan[oy:oy + r * h, ox:ox + r * w] * src.dn_per_unit).astype(np.float32)
    if src.zero_is_nodata:
        r0, r1 = valid_row_run(ms, pan, r)
        if r1 == r0:
            raise InputError("every MS row holds zero (no-data) pixels", str(root / src.ms_files[0]))
        ms, pan = ms[r0:r1], pan[r * r0:r * r1]
    if any(np.any(a == v) for v in nodata for a in (ms, pan)):  # holes would teach the model false edges
        raise InputError("nodata pixels inside the co-registered window", str(root / src.pan_file))
    ms.setflags(write=False)
    pan.setflags(write=False)
    bands = tuple(src.native_bands[i] for i in order)
    return Scene(name, src.sensor, src.guide, src.bit_depth, bands, r, src.georeferenced, ms, pan)


def valid_row_run(ms: np.ndarray, pan: np.ndarray, ratio: int) -> tuple[int, int]:
    """The longest run [r0, r1) of MS rows without a zero (no-data) pixel in any MS band or its PAN block.

    Used for sources whose no-data is an untagged 0 (SpaceNet-6 Rotterdam scene 2: 32 % of both images):
    cropping whole rows keeps the scene rectangular, so no crop, filter support or test region touches a hole.
    """
    h = ms.shape[0]
    bad_pan = (pan == 0).reshape(h, ratio, -1).any(axis=(1, 2))  # (h,)
    good = np.concatenate([[0], ~((ms == 0).any(axis=(1, 2)) | bad_pan), [0]]).astype(np.int8)  # (h + 2,)
    edges = np.flatnonzero(np.diff(good))  # run starts and stops, alternating
    starts, stops = edges[0::2], edges[1::2]
    if not len(starts):
        return 0, 0
    i = int(np.argmax(stops - starts))
    return int(starts[i]), int(stops[i])


def _crop(scene: Scene | str, region: Region | None, bands: int | None, multiple: int) -> Scene:
    """Region crop (MS pixels), first ``bands`` canonical bands, sides trimmed to a multiple of ``multiple``."""
    s = load_scene(scene) if isinstance(scene, str) else scene
    if region is not None and region.scene != s.name:
        raise ConfigError(f"region {region.label} does not belong to scene {s.name}")
    nb = s.ms.shape[-1] if bands is None else bands
    if not 1 <= nb <= s.ms.shape[-1]:
        raise ConfigError(f"scene {s.name} has {s.ms.shape[-1]} bands, asked for {bands}")
    h, w = s.ms.shape[:2]
    r0, r1 = region.rows if region is not None and region.rows is not None else (0, h)
    c0, c1 = region.cols if region is not None and region.cols is not None else (0, w)
    r1 = r0 + (min(r1, h) - r0) // multiple * multiple
    c1 = c0 + (min(c1, w) - c0) // multiple * multiple
    if not (0 <= r0 < r1 and 0 <= c0 < c1):
        raise ConfigError(f"region {region} of {s.name} ({h}×{w} MS pixels) is empty after trimming to ×{multiple}")
    k = s.ratio
    return replace(
        s,
        name=region.label if region is not None else s.name,
        bands=s.bands[:nb],
        ms=s.ms[r0:r1, c0:c1, :nb],
        pan=s.pan[k * r0:k * r1, k * c0:k * c1],
    )


def reduced_resolution(
    scene: Scene | str, ratio: int | None = None, region: Region | None = None, bands: int | None = None
) -> Pair:
    """Wald-protocol pair: gt = the (cropped) MS, PAN reduced onto the MS grid, MS reduced by ``ratio``.

    Each image is MTF-low-passed and decimated by its own factor: the PAN by the scene's ratio (onto the MS
    grid), the MS by ``ratio``. At the scene's ratio this is exactly ``resample.wald_degrade``; a multiple
    of it (Landsat, native 2, used at 4) keeps the PAN ``ratio``× finer than the LR MS, as in 4× sensors.
    A guide already on the MS grid (native ratio 1: Hyperion with the ALI MS) is used as it is.
    The region is cropped first (no pixel outside it enters a filter) and trimmed to a multiple of ``ratio``.
    """
    s0 = load_scene(scene) if isinstance(scene, str) else scene
    r = ratio or s0.ratio
    if r % s0.ratio:
        raise ConfigError(f"ratio {r} is not a multiple of scene {s0.name}'s ratio {s0.ratio}")
    s = _crop(s0, region, bands, r)
    pan = s.pan if s.ratio == 1 else decimate(mtf_lowpass(s.pan, pan_gain(s.sensor), s.ratio), s.ratio)
    pan = pan.astype(np.float32, copy=False)  # (h, w[, k]): the MS grid
    ms_lr, lms = reduce_ms(s.ms, ms_gains(s.sensor, s.ms.shape[-1]), r)
    return Pair(s.name, s.sensor, s.bit_depth, s.bands, r, lms, pan, s.ms, ms_lr)


def reduce_ms(ms: np.ndarray, gains: np.ndarray, ratio: int) -> tuple[np.ndarray, np.ndarray]:
    """(ms_lr, lms) float32: ``ms`` (H, W, C) MTF-low-passed with ``gains`` and decimated, and upsampled back."""
    ms_lr = decimate(mtf_lowpass(ms, gains, ratio), ratio).astype(np.float32)
    return ms_lr, upsample(ms_lr, ratio).astype(np.float32, copy=False)


def redegrade(pair: Pair, gain_scale: np.ndarray) -> Pair:
    """``pair`` with its MS reduced again from the reference through other MTFs: the sensor's Nyquist gains ×
    ``gain_scale`` (C,), clipped to (0.05, 0.95). The PAN is kept; ``name`` tells the copy apart."""
    gains = np.clip(ms_gains(pair.sensor, pair.gt.shape[-1]) * np.asarray(gain_scale), 0.05, 0.95)
    ms_lr, lms = reduce_ms(pair.gt, gains, pair.ratio)
    label = ",".join(f"{g:.2f}" for g in gains)
    return replace(pair, name=f"{pair.name}@mtf[{label}]", lms=lms, ms_lr=ms_lr)


def respectral(pair: Pair, weights: np.ndarray, mix: float) -> Pair:
    """``pair`` as a sensor whose PAN has another spectral response: its PAN mixed, ``mix`` to 1 − ``mix``, with
    the reference's bands combined by ``weights`` (C,) and matched to the PAN's mean and contrast. A real PAN is
    such a combination of the ground's spectra, so the copy keeps real detail and changes which bands its PAN
    follows, which the network would otherwise learn per sensor. Needs a 1-band PAN."""
    if pair.pan.ndim != 2:
        raise ConfigError(f"{pair.name}: a PAN spectral-response copy needs a 1-band PAN, not {pair.pan.shape[2]}")
    w = np.asarray(weights, dtype=np.float64)
    synth = pair.gt.astype(np.float64) @ (w / w.sum())  # (H, W)
    pan = pair.pan.astype(np.float64)
    synth = (synth - synth.mean()) * (pan.std() / max(float(synth.std()), 1e-12)) + pan.mean()
    mixed = np.clip((1.0 - mix) * pan + mix * synth, 0.0, None).astype(np.float32)
    label = ",".join(f"{v:.2f}" for v in w / w.sum())
    return replace(pair, name=f"{pair.name}@pan{mix:.2f}[{label}]", pan=mixed)


def coarsened(pair: Pair, factor: int) -> Pair:
    """``pair`` as a sensor with ``factor``× larger pixels would see the ground: reference and PAN MTF-low-passed
    with the sensor's gains and decimated by ``factor`` (sides trimmed to the ratio), the MS reduced again."""
    r, gains = pair.ratio, ms_gains(pair.sensor, pair.gt.shape[-1])
    gt = decimate(mtf_lowpass(pair.gt, gains, factor), factor)
    pan = decimate(mtf_lowpass(pair.pan, pan_gain(pair.sensor), factor), factor)
    h, w = gt.shape[0] // r * r, gt.shape[1] // r * r
    gt, pan = gt[:h, :w].astype(np.float32), pan[:h, :w].astype(np.float32)
    ms_lr, lms = reduce_ms(gt, gains, r)
    return replace(pair, name=f"{pair.name}@1/{factor}", lms=lms, pan=pan, gt=gt, ms_lr=ms_lr)


def full_resolution(scene: Scene | str, region: Region | None = None, bands: int | None = None) -> FullRes:
    """The original data (no reference) with its upsampled MS, for no-reference metrics and fusion."""
    s = _crop(scene, region, bands, 1)
    lms = upsample(s.ms, s.ratio).astype(np.float32, copy=False)
    return FullRes(s.name, s.sensor, s.bit_depth, s.bands, s.ratio, s.ms, lms, s.pan)


# ---------------------------------------------------------------------------------------------- splits

def reduced_resolution_split(family: str, split: str) -> list[Pair]:
    """Wald-protocol pairs of a split at the family's ratio and band count."""
    if split == "test_full":
        raise ConfigError("test_full is a full-resolution split: use full_resolution_split")
    regions = split_regions(family, split)
    fam = FAMILIES[family]
    return [reduced_resolution(r.scene, fam.ratio, r, len(fam.bands)) for r in regions]


def full_resolution_split(family: str) -> list[FullRes]:
    """The family's full-resolution test scenes (original data, no reference)."""
    regions = split_regions(family, "test_full")
    return [full_resolution(r.scene, r, len(FAMILIES[family].bands)) for r in regions]
