"""The DDRF UNet (DDRF.md "Network"): style-modulated encoder, wavelet-modulated decoder.

Export-friendly by construction: every kernel, pooling factor and frequency table is fixed in
``__init__``; ``forward`` has no Python control flow on tensor values, and attention is either
linear-memory (decoder) or ``F.scaled_dot_product_attention`` on 4-D tensors (lowest level only).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, ch)


def _zero(m: nn.Conv2d) -> nn.Conv2d:
    """Zero-initialise a layer whose output is added to a residual path, so each block starts as identity."""
    nn.init.zeros_(m.weight)
    nn.init.zeros_(m.bias)
    return m


class TimeEmbedding(nn.Module):
    """t (B,) int64 original timestep → (B, dim): sinusoids then a 2-layer MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # (dim/2,)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(torch.float32)[:, None] * self.freqs[None, :]  # (B, dim/2)
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=1))  # (B, dim)


class StyleModulation(nn.Module):
    """cat[lms, pan] at the block's resolution → per-pixel (γ, β); h ↦ h·(1+γ)+β."""

    def __init__(self, cond_ch: int, hidden: int, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cond_ch, hidden, 3, padding=1)
        self.norm = _norm(hidden)
        self.out = _zero(nn.Conv2d(hidden, 2 * ch, 1))

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.out(F.silu(self.norm(self.conv(cond)))).chunk(2, dim=1)  # (B, ch, h, w) each
        return h * (1.0 + gamma) + beta


def linear_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Efficient attention (Shen et al.): memory linear in positions, never an N×M matrix.

    q (B, h, d, N), k (B, h, d, M), v (B, h, e, M) → (B, h, e, N). q is softmax-normalised over its
    head dimension, k over positions; the per-head context kᵀv is only d×e.
    """
    q = q.softmax(dim=2)
    k = k.softmax(dim=3)
    context = k @ v.transpose(2, 3)  # (B, h, d, e)
    return context.transpose(2, 3) @ q  # (B, h, e, N)


class WaveletCrossAttention(nn.Module):
    """Decoder modulation: queries from the normalised feature, keys/values from the DB1 wavelet tensor."""

    def __init__(self, ch: int, wav_ch: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Conv2d(wav_ch, 2 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, hn: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = hn.shape
        q = self.q(hn).reshape(b, self.heads, c // self.heads, hh * ww)  # (B, h, d, N)
        k, v = self.kv(wav).flatten(2).chunk(2, dim=1)  # (B, C, M) each
        k = k.reshape(b, self.heads, c // self.heads, -1)  # (B, h, d, M)
        v = v.reshape(b, self.heads, c // self.heads, -1)  # (B, h, d, M)
        out = linear_cross_attention(q, k, v).reshape(b, c, hh, ww)  # (B, C, H, W)
        return self.proj(out)


class SelfAttention(nn.Module):
    """Full multi-head self-attention (O(N²)): used only at the lowest resolution."""

    def __init__(self, ch: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        qkv = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, hh * ww)  # (B, 3, h, d, N)
        # Contiguous (B, h, N, d): torch's CPU flash kernel refuses strided views and falls back to the
        # O(N²)-memory math kernel (6× slower attention at a 512² tile); a no-op in the exported graph.
        q, k, v = qkv.transpose(3, 4).contiguous().unbind(1)  # (B, h, N, d) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return h + self.proj(out.transpose(2, 3).reshape(b, c, hh, ww))


class EncoderBlock(nn.Module):
    """Residual block whose second normalisation is modulated by the condition (style transfer)."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(cfg.time_dim, cout)
        self.norm2 = _norm(cout)
        self.style = StyleModulation(cfg.cond_channels, cfg.mod_hidden, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]  # (B, cout, H, W)
        h = self.conv2(F.silu(self.style(self.norm2(h), cond)))
        return h + self.skip(x)


class DecoderBlock(nn.Module):
    """Residual block with wavelet cross-attention between its convolutions (the conv feed-forward)."""

    def __init__(self, cin: int, cout: int, cfg: UNetConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(cfg.time_dim, cout)
        self.wavelet = cfg.wavelet_modulation
        if self.wavelet:
            self.norm_attn = _norm(cout)
            self.attn = WaveletCrossAttention(cout, cfg.wav_channels, cfg.heads)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, wav: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]  # (B, cout, H, W)
        if self.wavelet:
            h = h + self.attn(self.norm_attn(h), wav)
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Upsample(nn.Module):
    """Nearest ×2 then conv3×3 (which already narrows to the finer level's width, saving compute there)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DDRFUNet(nn.Module):
    """Raw network: (x_t, t, cond, wav[, x_self]) → the objective's prediction, (B, C, H, W).

    ``cond`` (B, C+k, H, W) enters every encoder block through style modulation at that block's
    resolution (fixed 2×2 average pooling per level); ``wav`` (B, C+3k, H/2, W/2) enters every
    decoder block through linear-memory cross-attention. Levels 0 and 1 both read ``wav`` at H/2: the
    attention context is a global d×d sum with pointwise keys/values, which nearest upsampling
    would leave unchanged.
    """

    def __init__(self, cfg: UNetConfig, self_condition: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_condition = self_condition
        chans = [cfg.width * m for m in cfg.channel_mults]
        self.time = TimeEmbedding(cfg.time_dim)
        self.stem = nn.Conv2d(cfg.bands * (2 if self_condition else 1), chans[0], 3, padding=1)

        self.enc = nn.ModuleList()  # per level: its blocks
        self.down = nn.ModuleList()  # between levels
        skip_ch: list[list[int]] = [[chans[0]]]  # per level: channels of the skips it produces, in order
        ch = chans[0]
        for i, cout in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(cfg.enc_blocks):
                blocks.append(EncoderBlock(ch, cout, cfg))
                ch = cout
                skip_ch[i].append(ch)
            self.enc.append(blocks)
            if i + 1 < len(chans):
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_ch.append([ch])

        self.mid1 = EncoderBlock(ch, ch, cfg)
        self.mid_attn = SelfAttention(ch, cfg.heads)
        self.mid2 = EncoderBlock(ch, ch, cfg)

        self.dec = nn.ModuleList()  # per level, lowest first
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans))):
            blocks = nn.ModuleList()
            for s in reversed(skip_ch[i][-cfg.dec_blocks:]):
                blocks.append(DecoderBlock(ch + s, chans[i], cfg))
                ch = chans[i]
            self.dec.append(blocks)
            if i > 0:
                self.up.append(Upsample(ch, chans[i - 1]))
                ch = chans[i - 1]
        self.out_norm = _norm(ch)
        self.out = _zero(nn.Conv2d(ch, cfg.bands, 3, padding=1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, wav: torch.Tensor,
                x_self: torch.Tensor | None = None) -> torch.Tensor:
        levels = self.cfg.levels
        temb = F.silu(self.time(t))  # (B, time_dim)
        conds = [cond]  # level i: (B, C+k, H/2^i, W/2^i)
        for _ in range(levels - 1):
            conds.append(F.avg_pool2d(conds[-1], 2))
        wavs = [wav, wav]  # level i ≥ 1: (B, C+3k, H/2^i, W/2^i)
        for _ in range(levels - 2):
            wavs.append(F.avg_pool2d(wavs[-1], 2))

        if self.self_condition:
            x_t = torch.cat([x_t, torch.zeros_like(x_t) if x_self is None else x_self], dim=1)
        h = self.stem(x_t)  # (B, ch0, H, W)
        skips: list[list[torch.Tensor]] = [[h]]
        for i, blocks in enumerate(self.enc):
            for block in blocks:
                h = block(h, temb, conds[i])
                skips[i].append(h)
            if i + 1 < levels:
                h = self.down[i](h)  # (B, ch_i, H/2^(i+1), W/2^(i+1))
                skips.append([h])

        h = self.mid2(self.mid_attn(self.mid1(h, temb, conds[-1])), temb, conds[-1])

        for j, blocks in enumerate(self.dec):
            i = levels - 1 - j
            for block, s in zip(blocks, reversed(skips[i][-self.cfg.dec_blocks:])):
                h = block(torch.cat([h, s], dim=1), temb, wavs[i])
            if i > 0:
                h = self.up[j](h)  # (B, ch_i, H/2^(i-1), W/2^(i-1))
        return self.out(F.silu(self.out_norm(h)))  # (B, C, H, W)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
