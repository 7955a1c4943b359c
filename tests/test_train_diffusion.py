"""Diffusion wrapper: shared schedule, objective conversions, original timesteps, EMA, and learning."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddrf_runtime.evaluation.datasets import Region, reduced_resolution  # noqa: E402
from ddrf_runtime.evaluation.metrics import sam  # noqa: E402
from ddrf_runtime.schedule import cosine_alphas_cumprod, ddim_timesteps  # noqa: E402
from ddrf_train import sample  # noqa: E402
from ddrf_train.config import ExperimentConfig  # noqa: E402
from ddrf_train.diffusion import (EMA, build_denoiser, condition_inputs, sample_timesteps, spectral_chord,  # noqa: E402
                                  training_loss)
from ddrf_train.patches import NormPair, make_batch  # noqa: E402


def _cfg(**diffusion):
    return ExperimentConfig.from_dict({"model": {"preset": "tiny"}, "diffusion": diffusion,
                                       "train": {"patch": 32, "val_size": 32}})


def test_schedule_is_the_runtime_one():
    model = build_denoiser(_cfg(timesteps=123, schedule_offset=0.01))
    ab = cosine_alphas_cumprod(123, 0.01)
    np.testing.assert_allclose(model.sqrt_ab.numpy(), np.sqrt(ab), rtol=1e-6)
    np.testing.assert_allclose(model.sqrt_1m_ab.numpy(), np.sqrt(1 - ab), rtol=1e-6, atol=1e-7)
    assert "sqrt_ab" not in model.state_dict()  # derived from the config, not stored


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_objectives_convert_to_x0(objective):
    model = build_denoiser(_cfg(objective=objective))
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 200, 450])
    s0, s1 = model.coefficients(t)
    x_t = s0 * x0 + s1 * noise
    out = noise if objective == "eps" else s0 * noise - s1 * x0
    torch.testing.assert_close(model.to_x0(out, x_t, t), x0, atol=1e-4, rtol=1e-4)


def test_sampler_passes_original_timesteps_and_decodes():
    cfg = _cfg()
    model = build_denoiser(cfg).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[1].tolist()))
    lms, pan = torch.rand(2, 4, 8, 8), torch.rand(2, 1, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    fused = sample(model, lms, pan, steps=5, noise=noise)
    want = ddim_timesteps(cfg.diffusion.timesteps, 5).tolist()
    assert want[0] == cfg.diffusion.timesteps - 1 and want != list(range(5))
    assert seen == [[t, t] for t in want]
    # one step is the decoded posterior mean at t = T−1
    cond, wav = condition_inputs(lms, pan)
    with torch.no_grad():
        x0 = model(noise, torch.full((2,), cfg.diffusion.timesteps - 1), cond, wav)
    torch.testing.assert_close(sample(model, lms, pan, 1, noise=noise), cfg.diffusion.target.decode(x0, lms))
    assert fused.shape == lms.shape


def test_self_conditioning_feeds_previous_estimate():
    model = build_denoiser(_cfg(self_condition=True)).eval()
    fed = []
    model.register_forward_pre_hook(lambda m, args: fed.append(args[4]))
    sample(model, torch.rand(1, 4, 8, 8), torch.rand(1, 1, 8, 8), steps=3, generator=torch.Generator().manual_seed(0))
    assert fed[0] is None and all(f is not None for f in fed[1:])


def test_ema_copies_during_warmup_then_averages():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.9, warmup=1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, 1)
    torch.testing.assert_close(ema.model.weight, net.weight)
    with torch.no_grad():
        net.weight.fill_(2.0)
    ema.update(net, 2)
    torch.testing.assert_close(ema.model.weight, torch.full((2, 2), 1.1))


def test_regressor_ignores_noise_and_timestep():
    model = build_denoiser(_cfg(formulation="regression"))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    cond, wav = torch.randn(2, 5, 16, 16), torch.randn(2, 7, 8, 8)
    a = model(torch.randn(2, 4, 16, 16), torch.tensor([3, 400]), cond, wav)
    b = model(torch.randn(2, 4, 16, 16), torch.tensor([499, 0]), cond, wav)
    torch.testing.assert_close(a, b)
    diffusion = build_denoiser(_cfg())
    diffusion.load_state_dict(model.state_dict())
    torch.testing.assert_close(diffusion(torch.zeros(2, 4, 16, 16), torch.tensor([499, 499]), cond, wav), a)


def test_last_timestep_oversampling():
    cfg = _cfg(timesteps=100, last_t_prob=0.5).diffusion
    t = sample_timesteps(4000, cfg, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() == 99 and 0.45 < (t == 99).float().mean() < 0.56


def test_loss_decreases_on_a_real_batch(data_dir):
    cfg = _cfg(timesteps=50)
    pair = NormPair.from_pair(reduced_resolution("ge1", 4, Region("ge1", (0, 32), (0, 32)), 4), cfg.diffusion.target)
    batch = make_batch(*(a[None] for a in pair.crop(0, 0, 32)), cfg.diffusion.target)
    torch.manual_seed(0)
    model = build_denoiser(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def fixed_loss():
        with torch.no_grad():
            return training_loss(model, batch.x0.repeat(8, 1, 1, 1), batch.cond.repeat(8, 1, 1, 1),
                                 batch.wav.repeat(8, 1, 1, 1), torch.Generator().manual_seed(123)).item()

    before = fixed_loss()
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = training_loss(model, batch.x0.repeat(4, 1, 1, 1), batch.cond.repeat(4, 1, 1, 1),
                             batch.wav.repeat(4, 1, 1, 1), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.85 * before  # ≈ 0.67 here


@pytest.mark.parametrize("base", ["glp_hpm", "glp_hpm_fit"])
def test_training_corrects_the_base_the_runtime_adds_its_residual_to(tmp_path, data_dir, base):
    """A training pair's base (scene statistics of the whole pair) is what the tiled runtime adds a zero residual
    to, so the network learns the correction the runtime applies (scene borders aside)."""
    import dataclasses

    from ddrf_runtime.pipeline import FuseOptions, fuse_arrays

    from .onnx_fakes import SPEC, make_model

    target = _cfg(base=base).diffusion.target
    pair = reduced_resolution("osman", 4, Region("osman", (0, 160), (0, 160)), 4)
    trained = NormPair.from_pair(pair, target).base.transpose(1, 2, 0) * pair.full_scale  # (H, W, C) DN
    model = make_model(tmp_path / "zero.onnx", "zero", spec=dataclasses.replace(SPEC, target=target))
    runtime = fuse_arrays(pair.ms_lr, pair.pan, model, FuseOptions(tile=64, overlap=16, bit_depth=11, projections=0))
    inner = (slice(64, -64), slice(64, -64))
    np.testing.assert_allclose(runtime[inner], np.clip(trained, 0, pair.full_scale)[inner], atol=0.01)


def test_spectral_chord_is_the_toolbox_angle_as_a_chord():
    """2·sin(θ/2) of the runtime's SAM per pixel (an independent computation in degrees), averaged."""
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 5, 4)) + 0.05, rng.random((6, 5, 4)) + 0.05  # (H, W, C)
    theta = np.radians([sam(a[i:i + 1, j:j + 1], b[i:i + 1, j:j + 1]) for i in range(6) for j in range(5)])
    got = spectral_chord(*(torch.from_numpy(x.transpose(2, 0, 1)[None]) for x in (a, b)), eps=0.0)
    np.testing.assert_allclose(float(got), np.mean(2 * np.sin(theta / 2)), rtol=1e-6)
    same = torch.from_numpy(a.transpose(2, 0, 1)[None]).requires_grad_()
    spectral_chord(same, 3.0 * same.detach()).backward()  # equal spectra up to brightness: angle 0
    assert torch.isfinite(same.grad).all()


def test_spectral_angle_weight_adds_the_fused_images_angle(data_dir):
    """The loss with ``sam_weight`` is the L1 loss plus that weight times the angle between the fused image the
    prediction implies and the reference, on a real pair; and it trains (finite gradient). A fresh network outputs
    x0̂ = 0 (zero-initialised last convolution), so the fused image it implies is the base itself."""
    cfg = _cfg(base="glp_hpm")
    pair = NormPair.from_pair(reduced_resolution("ge1", 4, Region("ge1", (0, 16), (0, 16)), 4), cfg.diffusion.target)
    batch = make_batch(pair.lms[None], pair.pan[None], pair.gt[None], pair.base[None], cfg.diffusion.target)
    model = build_denoiser(cfg)
    plain = training_loss(model, batch.x0, batch.cond, batch.wav, torch.Generator().manual_seed(3))
    angled = training_loss(model, batch.x0, batch.cond, batch.wav, torch.Generator().manual_seed(3), batch.base, 2.0)
    assert plain.item() == pytest.approx(batch.x0.abs().mean().item(), rel=1e-6)
    want = plain.item() + 2.0 * spectral_chord(batch.base, batch.gt).item()
    assert angled.item() == pytest.approx(want, rel=1e-6) and angled.item() > plain.item() + 1e-3
    angled.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="base image"):
        training_loss(model, batch.x0, batch.cond, batch.wav, sam_weight=1.0)
