"""Readers, canonical band order, Wald pairs and splits on the real data (skipped when it is absent)."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import rasterio
import scipy.io

from ddrf_runtime.evaluation import datasets as ds
from ddrf_runtime.evaluation import splits
from ddrf_runtime.errors import ConfigError, InputError
from ddrf_runtime.mtf import ms_gains, mtf_lowpass, pan_gain
from ddrf_runtime.resample import decimate, upsample, wald_degrade

WV = ("B", "G", "R", "NIR", "Coastal", "Yellow", "RedEdge", "NIR2")
BGRN = ("B", "G", "R", "NIR")
# name: sensor, bit depth, bands, ratio, MS shape, georeferenced
EXPECTED = {
    "ge1": ("GE1", 8, BGRN, 4, (320, 320, 4), False),
    "wv2": ("WV2", 11, WV, 4, (320, 320, 8), False),
    "wv3_example": ("WV3", 11, WV, 4, (32, 32, 8), False),
    "osman": ("unknown", 11, BGRN, 4, (200, 200, 4), True),
    "osman_top": ("unknown", 11, BGRN, 4, (97, 200, 4), True),  # MS rows 1..97, PAN 2 rows up of the file's pairing
    "osman_bottom": ("unknown", 11, BGRN, 4, (97, 200, 4), True),  # rows 102..198 (the PAN ends), 2 rows down
    "cristianics": ("unknown", 7, WV, 4, (143, 144, 8), True),
    "shanghai": ("WV3", 11, WV, 4, (324, 325, 8), True),  # 325 rows less the 3-PAN-row shift
    "rotterdam_1": ("WV2", 11, BGRN, 4, (150, 150, 4), True),  # 300² nearest-neighbour copy → native 150²
    "rotterdam_2": ("WV2", 11, BGRN, 4, (100, 150, 4), True),  # rows 50..149: the no-data-free run
    "landsat8": ("L8", 16, BGRN, 2, (603, 627, 4), True),
    **{f"fusebox_{n}": ("L7", 8, BGRN + ("SWIR1", "SWIR2"), 2, (400, 400, 6), False) for n in range(1, 40)},
    "paris_hs_ms": ("Hyperion", 15, ds.HYPERION_BANDS, 1, (72, 72, 128), False),
    "paris_hs_pan": ("Hyperion", 15, ds.HYPERION_BANDS, 3, (72, 58, 128), False),
    # IKONOS simulated from hyperspectral cubes (reflectance × 10 000, maxima < 8 191): MS and PAN on one grid
    "sim_ikonos_hyspex": ("IKONOS", 13, BGRN, 1, (86, 123, 4), True),
    "sim_ikonos_aviris": ("IKONOS", 13, BGRN, 1, (90, 90, 4), False),
}


def test_scene_names_cover_every_source():
    assert sorted(ds.scene_names()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reader_returns_documented_layout(data_dir, name):
    s = ds.load_scene(name)
    sensor, bits, bands, ratio, shape, geo = EXPECTED[name]
    assert (s.name, s.sensor, s.bit_depth, s.bands, s.ratio, s.ms.shape, s.georeferenced) == (
        name, sensor, bits, bands, ratio, shape, geo)
    assert s.ms.dtype == s.pan.dtype == np.float32
    assert s.pan.shape[:2] == (ratio * shape[0], ratio * shape[1])
    assert s.full_scale == 2**bits - 1
    for a in (s.ms, s.pan):
        assert 0 < a.min() and a.max() <= s.full_scale and not a.flags.writeable
    assert ds.load_scene(name) is s  # cached


def _raw(data_dir, spec):
    rel, _, var = spec.partition(":")
    if var:
        return scipy.io.loadmat(data_dir / rel)[var]
    with rasterio.open(data_dir / rel) as src:
        return np.moveaxis(src.read(), 0, -1)


@pytest.mark.parametrize("name, ms_file, native_index", [
    ("fusebox_7", "mat/fusebox_landsat7/cropped/7_ms.mat:cropped_im", (2, 1, 0, 3, 4, 5)),  # R,G,B,… on disk
    ("wv2", "mat/grip_pnn/imgWV2.mat:I_MS", (1, 2, 4, 6, 0, 3, 5, 7)),  # Coastal,B,G,Y,R,RE,NIR1,NIR2
    ("wv3_example", "mat/grip_zpnn/WV3_example.mat:I_MS_LR", (1, 2, 4, 6, 0, 3, 5, 7)),
    ("cristianics", "geotiff/cristianics_8band_r4/mul.tif", (1, 2, 4, 6, 0, 3, 5, 7)),
    ("shanghai", "geotiff/spacenet2_shanghai_wv3_8band_r4/MUL_AOI_4_Shanghai_img1920.tif", (1, 2, 4, 6, 0, 3, 5, 7)),
    ("osman", "geotiff/osman_4band_r4/ms.tif", (0, 1, 2, 3)),
    ("ge1", "mat/grip_pnn/imgGE1.mat:I_MS", (0, 1, 2, 3)),
])
def test_canonical_reorder_matches_the_files(data_dir, name, ms_file, native_index):
    raw = _raw(data_dir, ms_file)
    s = ds.load_scene(name)
    h, w = s.ms.shape[:2]
    np.testing.assert_array_equal(s.ms, raw[:h, :w, list(native_index)].astype(np.float32))


def test_landsat8_bands_are_b2_to_b5_and_pan_b8_from_its_corner(data_dir):
    s = ds.load_scene("landsat8")
    for i, b in enumerate((2, 3, 4, 5)):
        np.testing.assert_array_equal(s.ms[..., i], _raw(data_dir, f"geotiff/landsat8_sattestdata/l8_B{b}.tif")[..., 0])
    np.testing.assert_array_equal(s.pan, _raw(data_dir, "geotiff/landsat8_sattestdata/l8_B8.tif")[:1206, :, 0])


def test_cristianics_pan_window_is_the_best_correlated_one(data_dir):
    """The (2, 2) PAN offset is a data decision: it must beat the geotransform's (1, 2) and its neighbours."""
    s = ds.load_scene("cristianics")
    pan = _raw(data_dir, "geotiff/cristianics_8band_r4/pan.tif")[..., 0].astype(np.float64)
    inten = s.ms[1:140, 1:140, :4].mean(-1).ravel()

    def corr(oy, ox):
        block = pan[oy + 4:oy + 4 + 4 * 139, ox + 4:ox + 4 + 4 * 139].reshape(139, 4, 139, 4).mean((1, 3))
        return np.corrcoef(inten, block.ravel())[0, 1]

    np.testing.assert_array_equal(s.pan, pan[2:2 + 572, 2:2 + 576])
    best = corr(2, 2)
    assert all(corr(2 + dy, 2 + dx) < best for dy, dx in itertools.product((-1, 0, 1), repeat=2) if dy or dx)


def _block_corr(ms: np.ndarray, pan: np.ndarray, oy: int, ox: int, n: int, margin: int = 2) -> float:
    """Correlation of the MS mean with the 4×4-averaged PAN window whose MS pixel (margin, margin) starts at
    PAN (4·margin + oy, 4·margin + ox)."""
    y, x = 4 * margin + oy, 4 * margin + ox
    block = pan[y:y + 4 * n, x:x + 4 * n].reshape(n, 4, n, 4).mean((1, 3))
    return float(np.corrcoef(ms[margin:margin + n, margin:margin + n].mean(-1).ravel(), block.ravel())[0, 1])


def test_shanghai_pan_is_shifted_three_rows_as_the_data_says(data_dir):
    """The north-south MS/PAN offset is estimated from the data: PAN row 3 lines up with MS row 0, on every
    quadrant, and clearly beats the unshifted window (0.91 vs 0.83 on the whole tile)."""
    s = ds.load_scene("shanghai")
    raw = _raw(data_dir, "geotiff/spacenet2_shanghai_wv3_8band_r4/MUL_AOI_4_Shanghai_img1920.tif")
    pan = _raw(data_dir, "geotiff/spacenet2_shanghai_wv3_8band_r4/PAN_AOI_4_Shanghai_img1920.tif")[..., 0]
    pan = pan.astype(np.float64)
    np.testing.assert_array_equal(s.pan, pan[3:3 + 4 * 324])
    ms = raw.astype(np.float64)
    whole = {oy: _block_corr(ms, pan, oy, 0, 300) for oy in range(-2, 7)}
    assert max(whole, key=whole.get) == 3 and whole[3] > whole[0] + 0.05
    for r0, c0 in ((0, 0), (0, 160), (160, 0), (160, 160)):  # the shift is the same over the whole tile
        quad = {(oy, ox): _block_corr(ms[r0:r0 + 160, c0:c0 + 160], pan[4 * r0:, 4 * c0:], oy, ox, 150)
                for oy in range(0, 7) for ox in (-1, 0, 1)}
        assert max(quad, key=quad.get) == (3, 0)


def test_rotterdam_ms_is_the_native_grid_of_a_nearest_neighbour_copy(data_dir):
    raw = _raw(data_dir, "geotiff/spacenet6_rotterdam_wv2_4band/ms1.tif")
    assert raw.dtype == np.float64 and raw.shape == (300, 300, 4)
    np.testing.assert_array_equal(raw[1::2, 1::2], raw[0::2, 0::2])  # every 2×2 block is one value
    s = ds.load_scene("rotterdam_1")
    np.testing.assert_array_equal(s.ms, raw[0::2, 0::2].astype(np.float32))  # B, G, R, NIR stay in file order
    np.testing.assert_array_equal(s.pan, _raw(data_dir, "geotiff/spacenet6_rotterdam_wv2_4band/pan1.tif")[..., 0])


def test_rotterdam_2_keeps_only_rows_free_of_zero_nodata(data_dir):
    """32 % of scene 2 is untagged zero no-data (top rows): the reader keeps the longest all-valid row run."""
    raw = _raw(data_dir, "geotiff/spacenet6_rotterdam_wv2_4band/ms2.tif")[0::2, 0::2]
    pan = _raw(data_dir, "geotiff/spacenet6_rotterdam_wv2_4band/pan2.tif")[..., 0]
    assert 0.3 < np.mean(pan == 0) < 0.35
    s = ds.load_scene("rotterdam_2")
    np.testing.assert_array_equal(s.ms, raw[50:150].astype(np.float32))
    np.testing.assert_array_equal(s.pan, pan[200:600])
    assert (raw[49] == 0).any() or (pan[196:200] == 0).any()  # the run cannot grow upwards


def test_valid_row_run_picks_the_longest_hole_free_run():
    ms = np.ones((10, 3, 2), np.float32)
    pan = np.ones((20, 6), np.float32)
    ms[2, 1, 0] = 0  # a zero in one band is no-data
    pan[15, 4] = 0  # a zero PAN pixel spoils its MS row (7)
    assert ds.valid_row_run(ms, pan, 2) == (3, 7)
    assert ds.valid_row_run(np.zeros_like(ms), pan, 2) == (0, 0)


def test_osman_band_order_evidence(data_dir):
    """B, G, R, NIR (not the TIFF's R, G, B): haze floor falls from blue to red, NIR exceeds red on land."""
    ms = ds.load_scene("osman").ms
    floor = np.percentile(ms, 1, axis=(0, 1))
    assert floor[0] > floor[2] and floor[1] > floor[2]
    assert np.mean(ms[..., 3] > ms[..., 2]) > 0.95
    assert np.mean(ms[..., 3] > ms[..., 0]) < 0.5


def _simulated_source(root, wl_text: str, bands: int):
    """A (6, 5, bands) cube whose every pixel's spectrum is its wavelength in nm, an ENVI header with the given
    wavelength entry, and box responses: PAN 450–900, B 450–520, G 520–600, R 630–690, NIR 760–900 nm."""
    wl = np.linspace(400.0, 1000.0, bands)
    cube = np.broadcast_to(wl, (6, 5, bands)).astype(np.float32)
    with rasterio.open(root / "cube.tif", "w", driver="GTiff", width=5, height=6, count=bands,
                       dtype="float32") as dst:
        dst.write(np.moveaxis(cube, -1, 0))
    (root / "cube.hdr").write_text(f"ENVI\nbands = {bands}\nwavelength = {{\n {wl_text} }}\nfwhm = {{ 1 }}\n")
    lam = np.arange(350.0, 1040.0, 5.0)
    boxes = [(450, 900), (450, 520), (520, 600), (630, 690), (760, 900)]
    table = np.stack([lam] + [((lam >= a) & (lam <= b)).astype(float) for a, b in boxes], -1)
    scipy.io.savemat(root / "resp.mat", {"sp": table})
    return wl, ds._Simulated("IKONOS", "cube.tif", "cube.hdr", "resp.mat:sp", False), boxes


@pytest.mark.parametrize("unit", [1.0, 1e-3])  # nm, and µm as HySpex writes them
def test_simulated_bands_average_the_cube_over_each_response(tmp_path, unit):
    wl, sim, boxes = _simulated_source(tmp_path, ", ".join(f"{w * unit:.6f}" for w in np.linspace(400, 1000, 61)), 61)
    s = ds._simulate("toy", sim, tmp_path)
    assert (s.ratio, s.bands, s.ms.shape, s.pan.shape) == (1, BGRN, (6, 5, 4), (6, 5))
    expect = [wl[(wl >= a) & (wl <= b)].mean() for a, b in boxes]  # a spectrum equal to λ averages to mean λ
    np.testing.assert_allclose(s.pan, expect[0], rtol=1e-5)
    for k in range(4):
        np.testing.assert_allclose(s.ms[..., k], expect[k + 1], rtol=1e-5)
    assert s.bit_depth == 10  # maximum 830 nm-valued → full scale 1 023


def test_simulated_source_refuses_a_wavelength_count_that_does_not_match(tmp_path):
    _, sim, _ = _simulated_source(tmp_path, "500, 600, 700", 61)
    with pytest.raises(InputError, match="3 wavelengths for 61 bands"):
        ds._simulate("toy", sim, tmp_path)


def test_fusebox_path_rows_match_locations_txt(data_dir):
    lines = (data_dir / "mat/fusebox_landsat7/locations.txt").read_text().split("\n")
    by_line = {n: line.split(",")[0].strip() for n, line in enumerate(lines, 1) if line.strip()}
    assert by_line == {n: pr for pr, nums in splits.FUSEBOX_PATH_ROWS.items() for n in nums}


def test_missing_data_raises_input_error_with_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRF_DATA", str(tmp_path))
    with pytest.raises(InputError) as err:
        ds.load_scene.__wrapped__("ge1")  # bypass the cache: it may hold the real scene
    assert str(tmp_path / "mat/grip_pnn/imgGE1.mat") in str(err.value)
    with pytest.raises(ConfigError):
        ds.load_scene("no_such_scene")


# ---------------------------------------------------------------------------------------------- pairs

def test_reduced_resolution_pair_is_wald_of_the_cropped_scene(data_dir):
    s = ds.load_scene("ge1")
    region = splits.Region("ge1", cols=(192, 320), rows=(0, 160))
    p = ds.reduced_resolution(s, region=region)
    assert (p.name, p.ratio, p.bands, p.full_scale) == ("ge1[r0:160,c192:320]", 4, BGRN, 255)
    assert p.gt.shape == p.lms.shape == (160, 128, 4) and p.pan.shape == (160, 128) and p.ms_lr.shape == (40, 32, 4)
    assert all(a.dtype == np.float32 for a in (p.gt, p.lms, p.pan, p.ms_lr))
    np.testing.assert_array_equal(p.gt, s.ms[0:160, 192:320])
    ms_lr, pan_lr = wald_degrade(s.ms[0:160, 192:320], s.pan[0:640, 768:1280], 4, ms_gains("GE1", 4), pan_gain("GE1"))
    np.testing.assert_allclose(p.ms_lr, ms_lr, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(p.pan, pan_lr, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(p.lms, upsample(p.ms_lr, 4), rtol=1e-5, atol=1e-3)


def test_region_is_cropped_before_filtering(data_dir):
    """Pixels outside the region (e.g. a training strip) cannot influence a test pair."""
    s = ds.load_scene("osman")
    region = splits.Region("osman", cols=(136, 200))
    ms, pan = s.ms.copy(), s.pan.copy()
    ms[:, :136] = 0.0
    pan[:, :544] = 4000.0
    a = ds.reduced_resolution(s, region=region)
    b = ds.reduced_resolution(dataclasses.replace(s, ms=ms, pan=pan), region=region)
    for x, y in ((a.gt, b.gt), (a.pan, b.pan), (a.ms_lr, b.ms_lr), (a.lms, b.lms)):
        np.testing.assert_array_equal(x, y)


def test_ratio_two_scene_at_ratio_four_uses_pan_on_the_ms_grid(data_dir):
    s = ds.load_scene("fusebox_19")
    p = ds.reduced_resolution(s, ratio=4, bands=4)
    assert (p.ratio, p.bands) == (4, BGRN)
    assert p.gt.shape == p.lms.shape == (400, 400, 4) and p.pan.shape == (400, 400) and p.ms_lr.shape == (100, 100, 4)
    np.testing.assert_array_equal(p.gt, s.ms[..., :4])
    np.testing.assert_allclose(p.pan, decimate(mtf_lowpass(s.pan, pan_gain("L7"), 2), 2), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(p.ms_lr, decimate(mtf_lowpass(s.ms[..., :4], ms_gains("L7", 4), 4), 4),
                               rtol=1e-5, atol=1e-3)


def test_regions_are_trimmed_to_the_ratio_and_bad_requests_refused(data_dir):
    p = ds.reduced_resolution("cristianics", ratio=4)
    assert p.gt.shape == (140, 144, 8) and p.ms_lr.shape == (35, 36, 8)
    with pytest.raises(ConfigError):
        ds.reduced_resolution("landsat8", ratio=3)
    with pytest.raises(ConfigError):
        ds.reduced_resolution("ge1", region=splits.Region("wv2", cols=(0, 64)))
    with pytest.raises(ConfigError):
        ds.reduced_resolution("ge1", bands=8)


def test_full_resolution_keeps_the_original_data(data_dir):
    s = ds.load_scene("wv2")
    f = ds.full_resolution(s, splits.Region("wv2", cols=(192, 320)), bands=4)
    assert (f.name, f.sensor, f.ratio, f.bands) == ("wv2[c192:320]", "WV2", 4, BGRN)
    np.testing.assert_array_equal(f.ms, s.ms[:, 192:320, :4])
    np.testing.assert_array_equal(f.pan, s.pan[:, 768:1280])
    np.testing.assert_allclose(f.lms, upsample(f.ms, 4), rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------------------------------- splits

def _cells(region: splits.Region) -> tuple[tuple[str, ...], range, range]:
    """The MS files a region reads and their rows and columns (a scene that is a part of a file, like the Osman
    scene's registered sides, counts in the file's rows)."""
    big = 10**6
    source = ds._SOURCES.get(region.scene)
    files = source.ms_files if source else (region.scene,)
    first, stop = source.ms_rows if source and source.ms_rows else (0, big)
    rows = region.rows or (0, stop - first)
    return files, range(first + rows[0], min(first + rows[1], stop)), range(*(region.cols or (0, big)))


def _overlap(a: splits.Region, b: splits.Region) -> bool:
    (af, ar, ac), (bf, br, bc) = _cells(a), _cells(b)
    return af == bf and max(ar.start, br.start) < min(ar.stop, br.stop) \
        and max(ac.start, bc.start) < min(ac.stop, bc.stop)


@pytest.mark.parametrize("family", list(splits.SPLITS))
def test_splits_never_share_pixels_and_tests_are_non_empty(family):
    train = splits.split_regions(family, "train")
    held_out = [r for split in ("val", "test", "test_full", "unseen") for r in splits.split_regions(family, split)]
    # hs_ms has no full-resolution test: its HS and MS share one grid, so no native ratio-3 pair exists.
    assert train and splits.split_regions(family, "test")
    assert splits.split_regions(family, "test_full") or family == "hs_ms"
    assert not [(a, b) for a in train for b in held_out if _overlap(a, b)]
    assert {r.scene for r in train + held_out} <= set(ds.scene_names())


def test_the_unseen_split_is_a_sensor_that_no_family_trains_on(data_dir):
    unseen = splits.split_regions("4band", "unseen")
    trained = {r.scene for family in splits.SPLITS for r in splits.split_regions(family, "train")}
    unseen_sensors = {ds.load_scene(r.scene).sensor for r in unseen}
    assert unseen and unseen_sensors.isdisjoint({ds.load_scene(s).sensor for s in trained})
    assert unseen_sensors == {"IKONOS"}


def test_fusebox_path_rows_are_not_split_across_sets():
    path_row = {f"fusebox_{n}": pr for pr, nums in splits.FUSEBOX_PATH_ROWS.items() for n in nums}
    per_split = {sp: {path_row[r.scene] for r in splits.split_regions("4band", sp) if r.scene in path_row}
                 for sp in ("train", "val", "test")}
    assert per_split["train"].isdisjoint(per_split["val"] | per_split["test"])
    assert per_split["val"].isdisjoint(per_split["test"])
    assert set().union(*per_split.values()) == set(splits.FUSEBOX_PATH_ROWS)


def test_unknown_split_is_a_config_error():
    with pytest.raises(ConfigError):
        splits.split_regions("4band", "holdout")
    with pytest.raises(ConfigError):
        ds.reduced_resolution_split("4band", "test_full")


def test_split_pairs_have_family_bands_and_ratio(data_dir):
    pairs = ds.reduced_resolution_split("8band", "test")
    assert [(p.name, p.ratio, p.bands, p.gt.shape) for p in pairs] == [
        ("wv2[c192:320]", 4, WV, (320, 128, 8)), ("shanghai[r0:320,c192:320]", 4, WV, (320, 128, 8)),
        ("cristianics[r0:128,c96:144]", 4, WV, (128, 48, 8))]
    assert all(f.pan.shape[0] % 32 == 0 and f.pan.shape[1] % 32 == 0 for f in ds.full_resolution_split("8band"))
    full = ds.full_resolution_split("4band")
    assert all(f.bands == BGRN and f.pan.shape[0] % 32 == 0 and f.pan.shape[1] % 32 == 0 for f in full)
