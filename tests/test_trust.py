"""Trust in the network's correction (``ddrf_runtime.trust``, ``FuseOptions.trust``): λ is the least-squares weight
of the correction onto what the base misses; the runtime scales back a correction that does not help the scene one
scale down, keeps one that does, and both orchestrators fit the same weight on the same window."""
import dataclasses
import json

import numpy as np
import pytest

from ddrf_runtime.backends import BaseOnly
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.evaluation.datasets import reduced_resolution
from ddrf_runtime.evaluation.splits import Region
from ddrf_runtime.pipeline import FuseOptions, arrays_statistics, arrays_trust, fuse_arrays
from ddrf_runtime.scene import SceneConfig, fuse_scene
from ddrf_runtime.session import Denoiser
from ddrf_runtime.target import Base, TargetSpec
from ddrf_runtime.trust import TRUST_FIT, Trust, correction_weight, one_scale_down, trust_from_fit

from .onnx_fakes import DEMO_SPEC
from .scenes import crop_demo, read

FAST = FuseOptions(tile=64, overlap=16, steps=1, bit_depth=11, projections=0)
HPM_SPEC = dataclasses.replace(DEMO_SPEC, target=TargetSpec(base=Base.GLP_HPM))


@dataclasses.dataclass(frozen=True)
class _Offset:
    """x0 = a constant brightening in every band: a bias learnt on other data, no detail (a correction that does
    not point where the base misses)."""

    spec: object = HPM_SPEC
    providers_used: tuple = ("offset",)
    versions: dict = dataclasses.field(default_factory=dict)

    def conditioned(self, cond, wav, samples=1):
        return lambda x_t, t: np.full_like(x_t, 0.5)  # ÷ scale 20: 2.5 % of the unit


def test_correction_weight_is_the_least_squares_weight_over_valid_pixels():
    rng = np.random.default_rng(0)
    base, d = rng.normal(size=(2, 32, 32, 3))
    valid = rng.random((32, 32)) > 0.3
    reference = base + 0.3 * d + 0.01 * rng.normal(size=d.shape)
    reference[~valid] += 100.0  # garbage where invalid: must not count
    assert correction_weight(base + d, base, reference, valid) == pytest.approx(0.3, abs=0.01)
    assert abs(correction_weight(base + d, base, reference) - 0.3) > 0.1
    assert correction_weight(base, base, reference) == 0.0  # no correction, nothing to weight


def test_weight_is_one_from_trust_fit_up_and_proportional_below():
    assert trust_from_fit(2 * TRUST_FIT).weight == 1.0
    assert trust_from_fit(TRUST_FIT).weight == 1.0
    assert trust_from_fit(TRUST_FIT / 2).weight == pytest.approx(0.5)
    assert trust_from_fit(-0.4).weight == 0.0
    assert trust_from_fit(0.1).fit == 0.1


def test_one_scale_down_crops_to_the_ratio_and_refuses_tiny_windows():
    ms, pan = np.full((37, 41, 4), 300.0), np.full((148, 164), 500.0)
    ms_r, pan_r = one_scale_down(ms, pan, 4, 2047.0)
    assert ms_r.shape == (9, 10, 4) and pan_r.shape == (36, 40)
    np.testing.assert_allclose(ms_r, 300.0, rtol=1e-5)
    assert one_scale_down(ms[:31], pan[:124], 4, 2047.0) is None  # 7 MS pixels a side one scale down


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo pair cut to 64×64 MS pixels (256² PAN), as rasters and arrays."""
    from rasterio.windows import Window

    paths = crop_demo(tmp_path_factory.mktemp("trust"), Window(60, 60, 64, 64))
    return paths, read(paths[0]).transpose(1, 2, 0).astype(np.float32), read(paths[1])[0].astype(np.float32)


def test_a_correction_that_does_not_help_one_scale_down_is_scaled_back(demo):
    """The constant brightening's fitted λ is far below TRUST_FIT: the output moves towards the base by exactly the
    weight (fused = base + weight · correction), and with trust full the whole offset is there."""
    _, ms, pan = demo
    net = _Offset()
    radiometry, _ = arrays_statistics(net.spec, FAST, ms, pan)
    trust = arrays_trust(ms, pan, net, FAST, radiometry)
    assert trust.fit is not None and trust.fit < 0.1  # a constant explains nothing of what the base misses
    assert trust.weight == pytest.approx(min(1.0, max(trust.fit, 0.0) / TRUST_FIT))
    full = fuse_arrays(ms, pan, net, dataclasses.replace(FAST, trust=Trust.FULL))
    fitted = fuse_arrays(ms, pan, net, FAST)
    base = fuse_arrays(ms, pan, BaseOnly(net.spec), FAST)
    assert float(np.median(full - base)) == pytest.approx(0.5 / 20 * 2047, rel=1e-3)  # DN: the whole offset
    np.testing.assert_allclose(fitted - base, trust.weight * (full - base), atol=0.05)


def test_the_bundled_models_correction_is_kept_where_it_helps():
    """On a held-out strip of a sensor it was trained on (GeoEye-1), the bundled model's correction fits λ above
    TRUST_FIT one scale down: the default output is exactly the full correction's."""
    from benchmarks._fixtures import BUNDLED

    denoiser = Denoiser(BUNDLED.with_suffix(".onnx"), "cpu")
    pair = reduced_resolution("ge1", 4, Region("ge1", (192, 320)), 4)
    options = FuseOptions(bit_depth=pair.bit_depth)
    radiometry, _ = arrays_statistics(denoiser.spec, options, pair.ms_lr, pair.pan)
    trust = arrays_trust(pair.ms_lr, pair.pan, denoiser, options, radiometry)
    assert trust.fit >= TRUST_FIT and trust.weight == 1.0
    np.testing.assert_array_equal(fuse_arrays(pair.ms_lr, pair.pan, denoiser, options),
                                  fuse_arrays(pair.ms_lr, pair.pan, denoiser,
                                              dataclasses.replace(options, trust=Trust.FULL)))


def test_small_scenes_and_full_trust_are_not_fitted():
    """A window under MIN_FIT_SIDE MS pixels one scale down, or trust full, keeps the correction without a fit."""
    net = _Offset()
    ms, pan = np.full((24, 20, 4), 300.0, np.float32), np.full((96, 80), 500.0, np.float32)
    radiometry, _ = arrays_statistics(net.spec, FAST, ms, pan)
    small = arrays_trust(ms, pan, net, FAST, radiometry)
    assert (small.weight, small.fit) == (1.0, None) and "small" in small.why
    full = arrays_trust(ms, pan, net, dataclasses.replace(FAST, trust=Trust.FULL), radiometry)
    assert (full.weight, full.fit) == (1.0, None)


def test_scene_and_arrays_fit_the_same_weight_and_report_it(demo, tmp_path, monkeypatch):
    import ddrf_runtime.scene as scene_mod

    (ms_path, pan_path), ms, pan = demo
    net = _Offset()
    monkeypatch.setattr(scene_mod, "load_denoiser", lambda *a: net)
    radiometry, _ = arrays_statistics(net.spec, FAST, ms, pan)
    expected = arrays_trust(ms, pan, net, FAST, radiometry)
    out = tmp_path / "fused.tif"
    report = fuse_scene(ms_path, pan_path, out, SceneConfig(model="offset.onnx", fuse=FAST,
                                                            report=str(tmp_path / "r.json")))
    assert report["trust"] == {"setting": "fitted", **expected.as_dict()}
    assert json.loads((tmp_path / "r.json").read_text())["trust"]["weight"] == round(expected.weight, 4)
    np.testing.assert_allclose(read(out).transpose(1, 2, 0).astype(np.float32), fuse_arrays(ms, pan, net, FAST),
                               atol=1.0)
    full = fuse_scene(ms_path, pan_path, tmp_path / "full.tif",
                      SceneConfig(model="offset.onnx", fuse=dataclasses.replace(FAST, trust=Trust.FULL)))
    assert full["trust"]["weight"] == 1.0 and full["trust"]["fit"] is None


def test_trust_option_is_validated():
    with pytest.raises(ConfigError, match="trust"):
        FuseOptions(trust="sometimes")
    assert FuseOptions(trust="full").trust == "full"
