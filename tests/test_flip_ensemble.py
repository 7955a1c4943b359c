"""The flip ensemble averages the network over mirrored tiles and flips each answer back."""
import json

import numpy as np

from ddrf_runtime.flip_ensemble import FLIPS, FlipEnsemble
from ddrf_runtime.wavelets import wavelet_condition

from .onnx_fakes import SPEC
from .scenes import FAST_ARGS

C, K = SPEC.num_bands, SPEC.guide_bands


class _RampNetwork:
    """x0 = x_t · (a ramp along the columns) + lms: not flip-equivariant, so the ensemble has something to average.
    It also checks that every call gets the DWT of the condition it is given (the flipped one for a flip)."""

    spec, providers_used, versions = SPEC, ("ramp",), {}

    def __init__(self) -> None:
        self.calls = 0

    def conditioned(self, cond, wav, samples=1):
        np.testing.assert_allclose(wav, wavelet_condition(cond[:, :C], cond[:, C:]), atol=1e-6)
        self.calls += 1
        lms = np.repeat(cond[:, :C], samples, axis=0)  # (B·N, C, H, W)
        ramp = np.linspace(0.0, 1.0, cond.shape[-1], dtype=np.float32)  # (W,)
        return lambda x_t, t: (x_t * ramp + lms).astype(np.float32)


def test_the_mean_of_the_flipped_calls_flipped_back():
    rng = np.random.default_rng(0)
    cond = rng.random((2, C + K, 8, 12), np.float32)
    wav = wavelet_condition(cond[:, :C], cond[:, C:])
    x_t = rng.standard_normal((4, C, 8, 12)).astype(np.float32)  # 2 samples of each of the 2 tiles
    net = _RampNetwork()
    got = FlipEnsemble(net).conditioned(cond, wav, samples=2)(x_t, 3)
    ramp = np.linspace(0.0, 1.0, 12, dtype=np.float32)
    # Left-right flips see the ramp reversed, up-down flips the same ramp: half and half.
    want = x_t * (ramp + ramp[::-1]) / 2 + np.repeat(cond[:, :C], 2, axis=0)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert net.calls == len(FLIPS) and got.dtype == np.float32


def test_cli_option_reaches_the_fusion_and_the_report(tmp_path, demo_crop, fake_models, cli):
    """With a network that outputs x0 = 0 the ensemble changes nothing: the same bytes, and the report says so;
    with one that reads its x0 from the (not mirror-symmetric) wavelet input, it changes the output."""
    def run(name, model, *extra):
        out, report = tmp_path / f"{name}.tif", tmp_path / f"{name}.json"
        assert cli(demo_crop[0], "--pan", demo_crop[1], "-o", out, "--model", fake_models[model], *FAST_ARGS,
                   "--report", report, *extra)[0] == 0
        return out.read_bytes(), json.loads(report.read_text())["options"]["flip_ensemble"]
    assert run("flipped", "zero", "--flip-ensemble") == (run("plain", "zero")[0], True)
    assert run("wav_flipped", "wav", "--flip-ensemble")[0] != run("wav_plain", "wav")[0]
