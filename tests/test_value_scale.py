"""Input scaling (``ValueScale``): under SCENE_MEAN the fused result depends neither on the stated bit depth nor
on the scene's brightness; under BIT_DEPTH it does; AUTO takes BIT_DEPTH for a stated bit depth and SCENE_MEAN for
a guessed one. Checked with a fake network that is not homogeneous in its inputs (x0 = t, so the fused detail is
unit · t / residual_scale), through both orchestrators."""
import dataclasses
import json

import numpy as np
import pytest
import rasterio

from ddrf_runtime import bands
from ddrf_runtime.evaluation import datasets, splits
from ddrf_runtime.errors import ConfigError, ModelError
from ddrf_runtime.model_spec import ModelSpec, ValueScale
from ddrf_runtime.pipeline import FuseOptions, arrays_statistics, fuse_arrays, scene_moments
from ddrf_runtime.scene import SceneConfig, fuse_scene
from ddrf_runtime.session import Denoiser
from ddrf_runtime.target import TargetSpec

from .onnx_fakes import DEMO_SPEC, make_model

REF = 0.2
# x0 = t = 99 at the one step, / 10⁴: a detail of ≈ 1 % of the network unit, far from the clip at full scale
SCENE_SPEC = dataclasses.replace(DEMO_SPEC, value_scale=ValueScale.SCENE_MEAN, reference_mean=REF, default_steps=1,
                                 target=TargetSpec(scale=1e4))
FAST = FuseOptions(tile=64, overlap=8, projections=0)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """{kind: path}: x0 = t at every pixel (the fused detail is proportional to the network unit), and x0 = 0."""
    d = tmp_path_factory.mktemp("value_scale")
    return {kind: make_model(d / f"{kind}.onnx", kind, spec=SCENE_SPEC) for kind in ("time", "zero")}


@pytest.fixture(scope="module")
def time_model(fakes):
    return Denoiser(fakes["time"])


def _scene(seed=0, h=24, w=20, peak=900):
    rng = np.random.default_rng(seed)
    ms = rng.integers(50, peak, (h, w, 4)).astype(np.float32)
    pan = rng.integers(50, peak, (4 * h, 4 * w)).astype(np.float32)
    return ms, pan


def test_scene_mean_unit_maps_the_mean_ms_to_the_reference(time_model):
    ms, pan = _scene()
    r = arrays_statistics(time_model.spec, FuseOptions(bit_depth=11), ms, pan)[0]
    assert r.full_scale == 2047.0
    assert r.unit == pytest.approx(float(ms.mean()) / REF, rel=1e-5)
    bits = arrays_statistics(time_model.spec, FuseOptions(bit_depth=11, value_scale=ValueScale.BIT_DEPTH), ms, pan)[0]
    assert bits.unit == bits.full_scale == 2047.0


def test_black_fill_does_not_dilute_the_scene_brightness(time_model):
    """All-zero MS pixels (fill a raster did not declare as no-data) do not count towards the scene's mean."""
    ms, pan = _scene()
    filled = ms.copy()
    filled[:, :8] = 0.0  # 8 of 20 columns: fill around the footprint
    r = arrays_statistics(time_model.spec, FuseOptions(bit_depth=11), filled, pan)[0]
    assert r.unit == pytest.approx(float(ms[:, 8:].mean()) / REF, rel=1e-5)


def test_a_scene_without_signal_keeps_the_full_scale(time_model):
    ms, pan = _scene()
    r = arrays_statistics(time_model.spec, FuseOptions(bit_depth=11), np.zeros_like(ms), pan)[0]
    assert r.unit == r.full_scale == 2047.0


def test_scene_mean_ignores_the_stated_bit_depth_and_the_brightness(time_model, fakes):
    ms, pan = _scene()
    fused = fuse_arrays(ms, pan, time_model, dataclasses.replace(FAST, bit_depth=11))
    np.testing.assert_allclose(fuse_arrays(ms, pan, time_model, dataclasses.replace(FAST, bit_depth=14)), fused,
                               rtol=1e-5)
    np.testing.assert_allclose(fuse_arrays(2 * ms, 2 * pan, time_model, dataclasses.replace(FAST, bit_depth=12)),
                               2 * fused, rtol=1e-5)
    # the network's detail rides on the scene's unit, not on the full scale
    plain = dataclasses.replace(FAST, bit_depth=11, value_scale=ValueScale.BIT_DEPTH)
    zero = Denoiser(fakes["zero"])
    detail_scene = fused - fuse_arrays(ms, pan, zero, dataclasses.replace(FAST, bit_depth=11))
    detail_bits = fuse_arrays(ms, pan, time_model, plain) - fuse_arrays(ms, pan, zero, plain)
    assert detail_scene.mean() / detail_bits.mean() == pytest.approx(float(ms.mean()) / REF / 2047.0, rel=1e-3)


def test_bit_depth_scaling_depends_on_the_stated_bit_depth(time_model):
    ms, pan = _scene()
    plain = dataclasses.replace(FAST, value_scale=ValueScale.BIT_DEPTH)
    a = fuse_arrays(ms, pan, time_model, dataclasses.replace(plain, bit_depth=11))
    b = fuse_arrays(ms, pan, time_model, dataclasses.replace(plain, bit_depth=12))
    assert np.abs(a - b).max() > 1.0  # DN: the detail doubled with the full scale


def _write_pair(folder, ms, pan):
    """ms.tif / pan.tif (uint16 GeoTIFFs, PAN 4× finer) of the arrays."""
    profile = {"driver": "GTiff", "dtype": "uint16", "crs": "EPSG:32633"}
    ms_path, pan_path = folder / "ms.tif", folder / "pan.tif"
    (h, w), (ph, pw) = ms.shape[:2], pan.shape
    with rasterio.open(ms_path, "w", **profile, width=w, height=h, count=4,
                       transform=rasterio.transform.from_origin(500000, 4000000, 2.0, 2.0)) as dst:
        dst.write(ms.transpose(2, 0, 1).astype(np.uint16))
    with rasterio.open(pan_path, "w", **profile, width=pw, height=ph, count=1,
                       transform=rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(pan[None].astype(np.uint16))
    return ms_path, pan_path


def test_geotiff_orchestrator_uses_the_same_unit(tmp_path, time_model, fakes):
    ms, pan = _scene(h=40, w=36)
    ms_path, pan_path = _write_pair(tmp_path, ms, pan)
    out = tmp_path / "fused.tif"
    report = fuse_scene(ms_path, pan_path, out, SceneConfig(fuse=dataclasses.replace(FAST, bit_depth=11),
                                                            model=str(fakes["time"])))
    assert report["value_scale"]["kind"] == "scene_mean"
    assert report["value_scale"]["unit"] == pytest.approx(float(ms.mean()) / REF, rel=1e-3)
    expected = fuse_arrays(ms, pan, time_model, dataclasses.replace(FAST, bit_depth=11))
    with rasterio.open(out) as src:
        np.testing.assert_allclose(src.read().transpose(1, 2, 0), np.rint(expected), atol=1.0)


def test_scene_mean_needs_a_reference_mean(tmp_path):
    plain = Denoiser(make_model(tmp_path / "old.onnx", "zero", spec=DEMO_SPEC))
    assert plain.spec.value_scale is ValueScale.BIT_DEPTH  # metadata without the field: an older export
    ms, pan = _scene()
    with pytest.raises(ConfigError, match="reference_mean") as e:
        fuse_arrays(ms, pan, plain, dataclasses.replace(FAST, value_scale=ValueScale.SCENE_MEAN))
    assert e.value.path == "value_scale"
    with pytest.raises(ModelError, match="scene_mean needs a reference_mean"):
        dataclasses.replace(DEMO_SPEC, value_scale=ValueScale.SCENE_MEAN).validate()


def test_spec_round_trips_the_value_scale():
    spec = dataclasses.replace(SCENE_SPEC, brightness_range=(0.07, 0.28))
    back = ModelSpec.from_json(spec.to_json())
    assert (back.value_scale, back.reference_mean, back.brightness_range) == (ValueScale.SCENE_MEAN, REF, (0.07, 0.28))
    with pytest.raises(ModelError, match="brightness_range"):
        dataclasses.replace(spec, brightness_range=(0.3, 0.1)).validate()


@pytest.mark.parametrize("family", ["4band", "8band"])
def test_family_brightness_constants_are_the_training_pairs(data_dir, family):
    """The stored reference (median) and range (darkest, brightest) are what their definitions give on the shared
    training split: the mean MS of each pair's LR input, as the runtime measures a scene."""
    fam = bands.FAMILIES[family]
    means = [scene_moments(p.ms_lr, p.pan, p.ratio, p.full_scale).ms_mean()
             for p in datasets.reduced_resolution_split(family, "train")]
    assert len(means) == len(splits.split_regions(family, "train"))
    assert fam.reference_mean == pytest.approx(float(np.median(means)), abs=0.001)
    assert fam.brightness_range == pytest.approx((min(means), max(means)), abs=0.001)


def test_training_pairs_in_scene_mean_units_match_the_runtime(data_dir):
    """A training pair under SCENE_MEAN is the network input the runtime builds for that pair: the LR MS mean
    at the reference brightness, whatever the pair's gain."""
    from ddrf_train.patches import NormPair

    pair = datasets.reduced_resolution("ge1", 4, splits.Region("ge1", (0, 64), (0, 64)), 4)
    target = TargetSpec()
    norm = NormPair.from_pair(pair, target, REF)
    runtime = arrays_statistics(SCENE_SPEC, FuseOptions(bit_depth=pair.bit_depth), pair.ms_lr, pair.pan)[0]
    assert norm.unit == pytest.approx(runtime.unit, rel=1e-5) and norm.full_scale == pair.full_scale
    assert float(pair.ms_lr.mean()) / norm.unit == pytest.approx(REF, rel=1e-6)
    brighter = dataclasses.replace(pair, lms=pair.lms * 1.7, pan=pair.pan * 1.7, gt=pair.gt * 1.7,
                                   ms_lr=pair.ms_lr * 1.7)
    np.testing.assert_allclose(NormPair.from_pair(brighter, target, REF).lms, norm.lms, rtol=1e-5)
    assert NormPair.from_pair(pair, target).unit == pair.full_scale  # bit-depth units by default


def test_scene_mean_training_needs_a_family_reference():
    from ddrf_train.config import DataFamily, ExperimentConfig, TrainConfig

    cfg = ExperimentConfig(train=TrainConfig(family=DataFamily.HS_PAN, value_scale=ValueScale.SCENE_MEAN))
    with pytest.raises(ConfigError, match="value_scale.*no reference_mean"):
        cfg.validate("x.toml")
    with pytest.raises(ConfigError, match="value_scale.*bit_depth or scene_mean"):
        ExperimentConfig(train=TrainConfig(value_scale=ValueScale.AUTO)).validate("x.toml")


def test_cli_value_scale_option_reaches_the_report(tmp_path, fakes, cli):
    ms, pan = _scene(h=16, w=16)
    ms_path, pan_path = _write_pair(tmp_path, ms, pan)
    for choice, unit in (("bit_depth", 2047.0), ("scene_mean", float(ms.mean()) / REF)):
        report = tmp_path / f"{choice}.json"
        rc, err = cli(ms_path, "--pan", pan_path, "-o", tmp_path / f"{choice}.tif", "--model", fakes["time"],
                      "--bit-depth", "11", "--value-scale", choice, "--report", report, "-q")
        assert (rc, err) == (0, [])
        got = json.loads(report.read_text())["value_scale"]
        assert got["kind"] == choice and got["unit"] == pytest.approx(unit, rel=1e-3)


@pytest.mark.parametrize("stated, plausible, kind", [
    (True, False, "bit_depth"),  # a stated bit depth is trusted, however dark it makes the scene
    (False, True, "bit_depth"),  # a guess that makes the scene as bright as a training scene is kept
    (False, False, "scene_mean"),  # any other guess is not
])
def test_auto_trusts_a_stated_or_plausible_bit_depth(tmp_path, stated, plausible, kind):
    # the scene's mean MS is 0.23 of the 11-bit full scale and (for the GeoTIFF, whose maximum guesses 10 bits) 0.46
    ms, pan = _scene(peak=900)
    mean = float(ms.mean()) / 2047.0
    spec = dataclasses.replace(SCENE_SPEC, value_scale=ValueScale.AUTO,
                               brightness_range=(mean - 0.05, mean + 0.05) if plausible else (0.5, 0.6))
    auto = Denoiser(make_model(tmp_path / "auto.onnx", "zero", spec=spec))
    options = FuseOptions(bit_depth=11 if stated else None)  # None: the model's default 11, a guess
    r = arrays_statistics(auto.spec, options, ms, pan)[0]
    assert r.value_scale.value == kind
    assert r.unit == (2047.0 if kind == "bit_depth" else pytest.approx(float(ms.mean()) / REF, rel=1e-5))
    ms_path, pan_path = _write_pair(tmp_path, ms, pan)  # no NBITS tag: the data maximum (< 1024) guesses 10 bits
    config = SceneConfig(fuse=dataclasses.replace(FAST, bit_depth=11 if stated else None), model=auto.path)
    report = fuse_scene(ms_path, pan_path, tmp_path / "fused.tif", config)
    assert report["value_scale"]["setting"] == "auto" and report["bit_depth"] == (11 if stated else 10)
    assert report["value_scale"]["kind"] == ("bit_depth" if stated else "scene_mean")  # 0.46: outside either range


def test_cli_scene_mean_on_an_old_model_is_a_one_line_error(tmp_path, cli):
    old = make_model(tmp_path / "old.onnx", "zero", spec=DEMO_SPEC)  # no reference_mean
    ms_path, pan_path = _write_pair(tmp_path, *_scene(h=16, w=16))
    out = tmp_path / "fused.tif"
    rc, err = cli(ms_path, "--pan", pan_path, "-o", out, "--model", old, "--value-scale", "scene_mean", "-q")
    assert rc != 0 and len(err) == 1 and str(old) in err[0] and "reference_mean" in err[0]
    assert not out.exists()
