"""Co-registration of the PAN with the MS from the pixels (``ddrf_runtime.registration``, ``inspect_pair``'s
``pan_offset``, ``ddrf-run --coregister``): a shifted PAN is found on real pixels and fused on its own grid, a warp
or too few pixels are not taken for a shift, and a shifted pair fuses exactly as the registered one does."""
import json
import logging
import math

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.windows import Window

from ddrf_runtime.evaluation.datasets import load_scene
from ddrf_runtime.raster_io import inspect_pair
from ddrf_runtime.registration import SEARCH, estimate_offset

from .scenes import FAST_ARGS, read

R = 4
SHANGHAI = "geotiff/spacenet2_shanghai_wv3_8band_r4/{}_AOI_4_Shanghai_img1920.tif"


@pytest.fixture(scope="module")
def wv2():
    """The GRIP WorldView-2 scene (registered: every quadrant fits best at offset 0), a central 96² MS window."""
    scene = load_scene("wv2")
    return scene.ms[112:208, 112:208].astype(np.float64), scene.pan.astype(np.float64), (112, 112)


def _pan_moved(pan, at, shape, offset):
    """The PAN under an MS window at ``at`` of ``shape`` with SEARCH pixels around, read as if the geotransforms
    paired it ``offset`` (rows, cols) of its pixels off: its content then lies ``offset`` further on."""
    (r0, c0), (h, w), (dy, dx) = at, shape, offset
    return pan[R * r0 - SEARCH - dy:R * (r0 + h) + SEARCH - dy, R * c0 - SEARCH - dx:R * (c0 + w) + SEARCH - dx]


@pytest.mark.parametrize("offset", [(0, 0), (3, 0), (-2, 1), (0, -4)])
def test_a_shifted_pan_is_found_the_same_in_every_quadrant(wv2, offset):
    ms, pan, at = wv2
    reg = estimate_offset(ms, _pan_moved(pan, at, ms.shape[:2], offset), np.ones(ms.shape[:2], bool), R)
    assert reg.offset == offset and reg.quadrants == (offset,) * 4
    assert reg.shifted == (offset != (0, 0))
    assert reg.best_correlation > 0.95  # the registered fit: the MS bands explain the PAN


def test_a_flat_band_changes_nothing(wv2):
    """A constant band (saturated, or filled no-data) adds no regressor: the same offset and correlations."""
    ms, pan, at = wv2
    moved = _pan_moved(pan, at, ms.shape[:2], (3, 0))
    flat = np.concatenate([ms, np.full(ms.shape[:2] + (1,), 7.0)], axis=-1)  # (h, w, C + 1)
    valid = np.ones(ms.shape[:2], bool)
    with_flat, without = estimate_offset(flat, moved, valid, R), estimate_offset(ms, moved, valid, R)
    assert (with_flat.offset, with_flat.quadrants) == (without.offset, without.quadrants) == ((3, 0), ((3, 0),) * 4)
    assert (with_flat.correlation, with_flat.best_correlation) == pytest.approx(
        (without.correlation, without.best_correlation), abs=1e-12)


def test_a_warp_is_not_taken_for_a_shift(wv2):
    """The top half 2 rows off one way, the bottom half the other (a scale mismatch): quadrants disagree."""
    ms, pan, at = wv2
    h, w = ms.shape[:2]
    down, up = (_pan_moved(pan, at, (h, w), (dy, 0)) for dy in (2, -2))
    warped = np.concatenate([down[:R * h // 2 + SEARCH], up[R * h // 2 + SEARCH:]])
    reg = estimate_offset(ms, warped, np.ones((h, w), bool), R)
    assert set(reg.quadrants) == {(2, 0), (-2, 0)}
    assert not reg.shifted


def test_too_few_valid_pixels_are_not_measured(wv2):
    ms, pan, at = wv2
    valid = np.zeros(ms.shape[:2], bool)
    valid[:10, :10] = True
    reg = estimate_offset(ms, _pan_moved(pan, at, ms.shape[:2], (3, 0)), valid, R)
    assert reg.offset == (0, 0) and math.isnan(reg.correlation) and not reg.shifted
    assert reg.as_dict()["correlation"] is None  # valid JSON in the run report
    with pytest.raises(ValueError, match="pan"):
        estimate_offset(ms, pan[:100, :100], valid, R)


def test_shanghai_is_three_pan_rows_off_its_geotransforms(data_dir):
    """The real SpaceNet-2 tile whose PROVENANCE note reports the shift: found, and the pairing moved by it."""
    from ddrf_runtime.scene import _registration
    ms, pan = (str(data_dir / SHANGHAI.format(kind)) for kind in ("MUL", "PAN"))
    reg = _registration(inspect_pair(ms, pan))
    assert reg.offset == (3, 0) and reg.shifted and reg.quadrants == ((3, 0),) * 4
    moved = inspect_pair(ms, pan, (3, 0))
    assert moved.pan_window == Window(0, 3, 1300, 1296) and moved.ms_window == Window(0, 0, 325, 324)
    back = inspect_pair(ms, pan, (-5, -5))  # the first MS pixels' PAN would start before the PAN: dropped
    assert back.ms_window == Window(2, 2, 323, 323) and back.pan_window == Window(3, 3, 1292, 1292)


def _write(path, pixels, transform):
    """A uint16 GeoTIFF of ``pixels`` (bands, rows, cols) on ``transform`` (UTM 33N)."""
    with rasterio.open(path, "w", driver="GTiff", count=pixels.shape[0], height=pixels.shape[1],
                       width=pixels.shape[2], dtype="uint16", crs="EPSG:32633", transform=transform) as dst:
        dst.write(pixels.astype(np.uint16))


@pytest.fixture(scope="module")
def shifted_crop(tmp_path_factory):
    """(ms.tif, registered pan.tif, shifted pan.tif): a 40² MS window of the GRIP WorldView-2 scene (B, G, R, NIR)
    and its PAN, georeferenced as one grid; the shifted PAN is cut 3 rows higher and 3 rows taller but labelled with
    the registered PAN's geotransform, so its content lies 3 PAN rows below where the geotransforms pair it."""
    d = tmp_path_factory.mktemp("shifted_crop")
    scene = load_scene("wv2")
    ms = scene.ms[140:180, 140:180][..., [1, 2, 4, 6]].transpose(2, 0, 1)  # (4, 40, 40)
    origin = Affine.translation(500_000.0, 4_000_000.0)
    _write(d / "ms.tif", ms, origin @ Affine.scale(2.0, -2.0))
    _write(d / "pan.tif", scene.pan[None, 560:720, 560:720], origin @ Affine.scale(0.5, -0.5))
    _write(d / "pan_shifted.tif", scene.pan[None, 557:720, 560:720], origin @ Affine.scale(0.5, -0.5))
    return d / "ms.tif", d / "pan.tif", d / "pan_shifted.tif"


def test_a_shifted_pair_fuses_like_the_registered_one_on_the_pans_pixels(tmp_path, shifted_crop, fake_models, cli):
    ms, registered, shifted = shifted_crop
    args = ("--model", fake_models["zero"], "--bit-depth", "11", *FAST_ARGS)
    assert cli(ms, "--pan", registered, "-o", tmp_path / "registered.tif", *args)[0] == 0
    assert cli(ms, "--pan", shifted, "-o", tmp_path / "auto.tif", "--report", tmp_path / "auto.json", *args)[0] == 0
    report = json.loads((tmp_path / "auto.json").read_text())["registration"]
    assert report["setting"] == "auto" and report["applied"] and report["offset"] == [3, 0]
    np.testing.assert_array_equal(read(tmp_path / "auto.tif"), read(tmp_path / "registered.tif"))
    with rasterio.open(tmp_path / "auto.tif") as out, rasterio.open(shifted) as pan:
        assert out.transform.almost_equals(pan.window_transform(Window(0, 3, 160, 160)))  # the PAN's own pixels


def test_check_only_warns_and_off_does_not_look(tmp_path, shifted_crop, fake_models, cli, caplog):
    ms, _, shifted = shifted_crop
    args = ("--model", fake_models["zero"], "--bit-depth", "11", *FAST_ARGS)
    with caplog.at_level(logging.WARNING):
        assert cli(ms, "--pan", shifted, "-o", tmp_path / "check.tif", "--coregister", "check",
                   "--report", tmp_path / "check.json", *args)[0] == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(shifted) in warned[0] and "--coregister auto" in warned[0]
    assert json.loads((tmp_path / "check.json").read_text())["registration"]["applied"] is False
    assert cli(ms, "--pan", shifted, "-o", tmp_path / "off.tif", "--coregister", "off",
               "--report", tmp_path / "off.json", *args)[0] == 0
    assert json.loads((tmp_path / "off.json").read_text())["registration"] == {"setting": "off", "applied": False}
    np.testing.assert_array_equal(read(tmp_path / "off.tif"), read(tmp_path / "check.tif"))  # as georeferenced
    with rasterio.open(tmp_path / "check.tif") as out, rasterio.open(shifted) as pan:
        assert out.shape == (160, 160) and out.transform.almost_equals(pan.transform)


def _scene_registration(name):
    scene = load_scene(name)
    ms, pan = scene.ms[1:-1].astype(np.float64), scene.pan.astype(np.float64)  # one MS row clear of each end
    inner = pan[R - SEARCH:R * (ms.shape[0] + 1) + SEARCH, :]
    h, w = ms.shape[0], ms.shape[1] - 2
    return estimate_offset(ms[:, 1:-1], inner[:, R - SEARCH:R * (w + 1) + SEARCH], np.ones((h, w), bool), R)


def test_the_osman_scene_has_a_seam_and_each_side_is_read_registered(data_dir):
    """The demo scene's top and bottom fit 4 PAN rows apart (no single shift); its two sides as the evaluation
    reads them (``osman_top``, ``osman_bottom``) fit where they are, in every quadrant."""
    whole = _scene_registration("osman")
    assert {q[0] for q in whole.quadrants} == {-2, 2} and not whole.shifted
    for side in ("osman_top", "osman_bottom"):
        reg = _scene_registration(side)
        assert reg.offset == (0, 0) and all(abs(q[0]) <= 1 and abs(q[1]) <= 1 for q in reg.quadrants)
        assert reg.correlation > whole.correlation + 0.03
