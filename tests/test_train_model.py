"""The DDRF UNet: I/O shapes of ARCHITECTURE.md, guides with k = 1 and 3, linear-memory cross-attention."""
import dataclasses

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from ddrf_train.config import UNET_PRESETS, UNetConfig  # noqa: E402
from ddrf_train.model import DDRFUNet, DecoderBlock, attend, attention_context  # noqa: E402

FOUR_LEVELS = UNetConfig(width=8, channel_mults=(1, 2, 2, 4), enc_blocks=1, dec_blocks=2, heads=2, time_dim=16,
                         mod_hidden=8)


def _inputs(cfg, b, h, w):
    return (torch.randn(b, cfg.bands, h, w), torch.randint(0, 500, (b,)), torch.rand(b, cfg.cond_channels, h, w),
            torch.randn(b, cfg.wav_channels, h // 2, w // 2))


@pytest.mark.parametrize("cfg, size", [
    (UNET_PRESETS["tiny"], (8, 8)),
    (UNET_PRESETS["tiny"], (12, 20)),
    (FOUR_LEVELS, (16, 16)),
    (FOUR_LEVELS, (48, 16)),
    (dataclasses.replace(FOUR_LEVELS, bands=6, guide_bands=3), (32, 16)),
])
def test_output_shape(cfg, size):
    assert size[0] % cfg.size_multiple == 0 and size[1] % cfg.size_multiple == 0
    net = DDRFUNet(cfg).eval()
    with torch.no_grad():
        out = net(*_inputs(cfg, 2, *size))
    assert out.shape == (2, cfg.bands, *size) and out.dtype == torch.float32


def test_self_condition_input_and_gradients_reach_every_parameter():
    cfg = UNET_PRESETS["tiny"]
    net = DDRFUNet(cfg, self_condition=True)
    for p in net.parameters():  # zero-initialised output layers would hide missing paths
        torch.nn.init.normal_(p, std=0.1)
    x_t, t, cond, wav = _inputs(cfg, 2, 8, 8)
    net(x_t, t, cond, wav, torch.randn_like(x_t)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert net(x_t, t, cond, wav).shape == x_t.shape  # x_self defaults to zeros


def test_without_wavelet_modulation_the_wavelet_input_is_ignored():
    cfg = dataclasses.replace(UNET_PRESETS["tiny"], wavelet_modulation=False)
    net = DDRFUNet(cfg)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert not any("attn.kv" in name for name, _ in net.named_parameters())
    x_t, t, cond, wav = _inputs(cfg, 2, 8, 8)
    torch.testing.assert_close(net(x_t, t, cond, wav), net(x_t, t, cond, torch.randn_like(wav)))
    with_wavelet = DDRFUNet(UNET_PRESETS["tiny"])
    for p in with_wavelet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert not torch.allclose(with_wavelet(x_t, t, cond, wav), with_wavelet(x_t, t, cond, torch.randn_like(wav)))


class _Sizes(TorchDispatchMode):
    """Records the element count of every tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def test_wavelet_cross_attention_never_builds_an_n_by_m_matrix():
    cfg = dataclasses.replace(UNET_PRESETS["tiny"], heads=2)
    block = DecoderBlock(16, 8, cfg)
    h, w = 64, 64  # N = 4096 query positions, M = 1024 wavelet positions
    x, temb, wav = torch.randn(1, 16, h, w), torch.randn(1, cfg.time_dim), torch.randn(1, cfg.wav_channels, 32, 32)
    with _Sizes() as sizes:
        block(x, temb, block.attn.context(wav)).sum().backward()
    assert sizes.largest <= 16 * h * w * 9  # im2col-sized at most; N·M would be 4.2 M
    assert sizes.largest < (h * w) * (32 * 32) // 4


def test_linear_cross_attention_is_normalised_attention():
    q, k, v = torch.randn(2, 3, 4, 10), torch.randn(2, 3, 4, 7), torch.randn(2, 3, 5, 7)
    out = attend(q, attention_context(k, v))
    assert out.shape == (2, 3, 5, 10)
    want = torch.einsum("bhdn,bhdm,bhem->bhen", q.softmax(2), k.softmax(3), v)
    torch.testing.assert_close(out, want)


def test_samples_of_a_tile_attend_to_its_own_context():
    """Queries (B·N rows, sample s of tile i at row i·N + s) against B contexts: each row sees its tile's."""
    q, k, v = torch.randn(6, 3, 4, 10), torch.randn(2, 3, 4, 7), torch.randn(2, 3, 5, 7)
    out = attend(q, attention_context(k, v))
    want = attend(q, attention_context(k.repeat_interleave(3, 0), v.repeat_interleave(3, 0)))
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", [FOUR_LEVELS, dataclasses.replace(FOUR_LEVELS, wavelet_modulation=False)],
                         ids=["wavelets", "no-wavelets"])
def test_step_of_encode_is_forward_for_every_sample_of_a_tile(cfg):
    """``step(x_t, t, encode(cond, wav))`` equals ``forward`` bit for bit, and N samples of a tile (rows i·N + s)
    against one encoding equal ``forward`` on the condition repeated N times."""
    torch.manual_seed(0)
    net = DDRFUNet(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised output layers would make every comparison trivial
            p.add_(0.2 * torch.randn_like(p))
        x_t, t, cond, wav = _inputs(cfg, 2, 32, 16)
        assert torch.equal(net.step(x_t, t, net.encode(cond, wav)), net(x_t, t, cond, wav))
        x_n, t_n = torch.randn(6, cfg.bands, 32, 16), torch.randint(0, 500, (6,))
        want = net(x_n, t_n, cond.repeat_interleave(3, 0), wav.repeat_interleave(3, 0))
        assert torch.equal(net.step(x_n, t_n, net.encode(cond, wav)), want)
