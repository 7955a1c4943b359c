"""Session and pipeline against tiny synthetic ONNX models that follow the network I/O contract."""
import numpy as np
import pytest
import pywt
from onnx import TensorProto

import ddrf_runtime.session as session_mod
from ddrf_runtime.errors import ConfigError, DeviceError, InputError, ModelError
from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.pipeline import UPSAMPLE_HALO, FuseOptions, fuse_arrays
from ddrf_runtime.resample import upsample
from ddrf_runtime.schedule import ddim_timesteps
from ddrf_runtime.session import Denoiser
from ddrf_runtime.tiling import pad_symmetric

from .onnx_fakes import SPEC, make_model

C, K, FS = 4, 1, 2047.0


def _scene(h=20, w=28, seed=0, spec=SPEC):
    rng = np.random.default_rng(seed)
    r, k = spec.ratio, spec.guide_bands
    ms = rng.integers(0, 2048, (h, w, spec.num_bands)).astype(np.uint16)
    pan = rng.integers(0, 2048, (r * h, r * w) + ((k,) if k > 1 else ())).astype(np.uint16)
    return ms, pan


def reference_lms(ms, ratio=4):
    """The scene's lms as the pipeline defines it: symmetric borders, normalised."""
    pad = ((UPSAMPLE_HALO, UPSAMPLE_HALO),) * 2
    off = ratio * UPSAMPLE_HALO
    up = upsample(pad_symmetric(ms.astype(np.float32) / np.float32(FS), pad), ratio)
    return up[off:off + ratio * ms.shape[0], off:off + ratio * ms.shape[1]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {kind: make_model(d / f"{kind}.onnx", kind) for kind in ("zero", "time", "wav", "noisy")}


TILED = FuseOptions(tile=32, overlap=8, batch=2, projections=0)  # the network alone: no back-projection


@pytest.mark.parametrize("shape, options", [((20, 28), TILED), ((5, 7), TILED), ((20, 28), FuseOptions(projections=0))])
def test_zero_model_returns_the_upsampled_ms(models, shape, options):
    ms, pan = _scene(*shape)
    out = fuse_arrays(ms, pan, models["zero"], options)
    assert out.shape == pan.shape + (C,) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(reference_lms(ms) * FS, 0, FS), rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("ratio, size_multiple", [(2, 4), (3, 4)])
def test_hyperspectral_configuration(tmp_path, ratio, size_multiple):
    """More bands, an RGB guide, ratios 2 and 3: the same code path, driven by the metadata."""
    spec = ModelSpec(bands=tuple(f"b{i}" for i in range(6)), guide_bands=3, ratio=ratio,
                     size_multiple=size_multiple, timesteps=10)
    path = make_model(tmp_path / "hs.onnx", spec=spec)
    ms, pan = _scene(9, 13, spec=spec)
    out = fuse_arrays(ms, pan, path, FuseOptions(tile=12 * 2, overlap=2 * ratio, projections=0))
    np.testing.assert_allclose(out, np.clip(reference_lms(ms, ratio) * FS, 0, FS), rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("io, fp16_body", [(TensorProto.FLOAT16, False), (TensorProto.FLOAT, True)])
def test_fp16_models(tmp_path, models, io, fp16_body):
    path = make_model(tmp_path / "m.onnx", "wav", io=io, fp16_body=fp16_body)
    ms, pan = _scene()
    ref = fuse_arrays(ms, pan, models["wav"], TILED)
    np.testing.assert_allclose(fuse_arrays(ms, pan, path, TILED), ref, atol=1.0)  # DN; fp16 ≈ 3 decimal digits


def test_network_sees_the_original_timesteps(models):
    seen = []

    class Spy(Denoiser):
        def conditioned(self, cond, wav, samples=1):
            run = super().conditioned(cond, wav, samples)

            def spy(x_t, t):
                x0 = run(x_t, t)
                seen.append(int(x0[0, 0, 0, 0]))
                return x0
            return spy

    ms, pan = _scene(8, 8)
    fuse_arrays(ms, pan, Spy(models["time"]), FuseOptions(steps=5, tile=32, overlap=8, batch=4))
    assert seen == list(ddim_timesteps(SPEC.timesteps, 5)) and seen[0] == SPEC.timesteps - 1 and seen[-1] == 0


def test_wavelet_input_reaches_the_network_and_tiling_does_not_matter(models):
    ms, pan = _scene()
    tiled = fuse_arrays(ms, pan, models["wav"], FuseOptions(tile=32, overlap=8, batch=3, projections=0))
    single = fuse_arrays(ms, pan, models["wav"], FuseOptions(tile=128, batch=1, projections=0))
    lms = reference_lms(ms)
    ca, _ = pywt.dwt2(np.moveaxis(lms, 2, 0), "db1")  # (C, H/2, W/2)
    _, (ch, _, _) = pywt.dwt2(pan.astype(np.float32) / np.float32(FS), "db1")  # (H/2, W/2)
    x0 = np.moveaxis((0.5 * ca + ch).repeat(2, axis=1).repeat(2, axis=2), 0, 2)  # (H, W, C)
    expected = np.clip((lms + x0 / SPEC.target.scale) * FS, 0, FS)
    np.testing.assert_allclose(single, expected, rtol=1e-5, atol=2e-3)
    np.testing.assert_allclose(tiled, expected, rtol=1e-5, atol=2e-3)


def test_deterministic_and_independent_of_batch(models):
    ms, pan = _scene()
    a = fuse_arrays(ms, pan, models["noisy"], FuseOptions(tile=32, overlap=8, batch=1, seed=7))
    b = fuse_arrays(ms, pan, models["noisy"], FuseOptions(tile=32, overlap=8, batch=5, seed=7))
    c = fuse_arrays(ms, pan, models["noisy"], FuseOptions(tile=32, overlap=8, batch=5, seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_io_binding_path_matches_plain_run(models):
    """The CUDA path's binding logic, exercised on CPU memory (no GPU here)."""
    den = Denoiser(models["noisy"], "cpu")
    rng = np.random.default_rng(0)
    cond, wav = rng.random((2, C + K, 16, 16)), rng.random((2, C + 3 * K, 8, 8))
    bound, plain = den._conditioned(cond, wav, 2, bind="cpu"), den.conditioned(cond, wav, samples=2)
    for t in (49, 0):  # the x_t buffer is updated in place between steps
        x_t = rng.standard_normal((4, C, 16, 16))
        np.testing.assert_array_equal(bound(x_t, t), plain(x_t, t))


def test_direct_call_and_session_facts(models):
    den = Denoiser(models["time"], "cpu", intra_op_threads=1)
    assert den.providers_used == ("CPUExecutionProvider",) and den.spec == SPEC
    assert set(den.versions) >= {"onnxruntime", "model_format"}
    x0 = den(np.zeros((2, C, 8, 8)), 7, np.zeros((2, C + K, 8, 8)), np.zeros((2, C + 3 * K, 4, 4)))
    assert x0.dtype == np.float32 and x0.shape == (2, C, 8, 8) and (x0 == 7).all()


@pytest.mark.parametrize("metadata, match", [(None, "no 'ddrf' metadata"), ("{oops", "not valid JSON"),
                                             ('{"format_version": 1}', "lacks")])
def test_bad_metadata_is_a_model_error_naming_the_file(tmp_path, metadata, match):
    path = make_model(tmp_path / "bad.onnx", metadata=metadata)
    with pytest.raises(ModelError, match=match) as e:
        Denoiser(path)
    assert str(tmp_path / "bad.onnx") in str(e.value)


def test_unloadable_model_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Denoiser(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        Denoiser(tmp_path / "junk.onnx")


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_without_cuda_is_a_device_error(models, monkeypatch):
    monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="no CUDA provider"):
        Denoiser(models["zero"], "cuda")
    assert Denoiser(models["zero"], "auto").providers_used == ("CPUExecutionProvider",)
    # ORT claims CUDA but cannot load it: the silent CPU fallback must not pass under 'cuda'
    monkeypatch.setattr(session_mod.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="fell back"):
        Denoiser(models["zero"], "cuda")
    assert not Denoiser(models["zero"], "auto").on_cuda
    with pytest.raises(ConfigError, match="device"):
        Denoiser(models["zero"], "tpu")


@pytest.mark.parametrize("change, match", [
    (lambda ms, pan: (ms[..., :3], pan), "has 3 bands but the model fuses 4"),
    (lambda ms, pan: (ms, pan[:-4]), "ratio 4 needs"),
    (lambda ms, pan: (ms, np.stack([pan, pan], axis=2)), "guide has 1 band"),
    (lambda ms, pan: (ms[..., 0], pan), "rows × cols × bands"),
    (lambda ms, pan: (np.where(ms == ms.max(), np.nan, ms), pan), "NaN"),
    (lambda ms, pan: (ms.astype(np.uint16) * 4, pan), "exceed the 11-bit"),
    (lambda ms, pan: (ms.astype(complex), pan), "dtype"),
])
def test_input_errors(models, change, match):
    with pytest.raises(InputError, match=match):
        fuse_arrays(*change(*_scene(8, 8)), models["zero"], TILED)


@pytest.mark.parametrize("options, match", [
    (dict(tile=30), "multiple of 8"), (dict(steps=51), "exceeds"), (dict(overlap=3), "overlap"),
])
def test_option_errors(models, options, match):
    with pytest.raises(ConfigError, match=match):
        fuse_arrays(*_scene(8, 8), models["zero"], FuseOptions(**options))


@pytest.mark.parametrize("kwargs", [dict(batch=0), dict(seed=-1), dict(bit_depth=0), dict(steps=0),
                                    dict(value_scale="radiance")])
def test_fuse_options_validate(kwargs):
    with pytest.raises(ConfigError):
        FuseOptions(**kwargs)


def test_bit_depth_inference_and_progress(models, capsys):
    ms, pan = _scene(8, 8)
    out8 = fuse_arrays((ms // 9).astype(np.uint8), (pan // 9).astype(np.uint8), models["zero"], TILED,
                       progress=True)
    assert out8.max() <= 255 and "tile-step" in capsys.readouterr().err
