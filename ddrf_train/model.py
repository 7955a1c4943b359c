"""The DDRF UNet (DDRF.md "Network"): style-modulated encoder, wavelet-modulated decoder.

Export-friendly by construction: every kernel, pooling factor and frequency table is fixed in
``__init__``; ``forward`` has no Python control flow on tensor values, and attention is either
linear-memory (decoder) or ``F.scaled_dot_product_attention`` on 4-D tensors (lowest level only).
"""
from __future__ import annotations

import math
from typing import NamedTuple

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


def per_tile(rows: torch.Tensor, tiles: int) -> torch.Tensor:
    """(B·N, ...) → (B, N, ...): the N sample rows of each tile side by side (sample s of tile i is row i·N + s),
    so a tile's conditioning features, unsqueezed to (B, 1, ...), broadcast over its samples without a copy."""
    return rows.unflatten(0, (tiles, -1))


class StyleModulation(nn.Module):
    """cat[lms, pan] at the block's resolution → per-pixel (γ, β); h ↦ h·(1+γ)+β.

    ``forward`` sees the condition only (run once per tile by ``DDRFUNet.encode``); ``modulate`` applies it.
    """

    def __init__(self, cond_ch: int, hidden: int, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cond_ch, hidden, 3, padding=1)
        self.norm = _norm(hidden)
        self.out = _zero(nn.Conv2d(hidden, 2 * ch, 1))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.norm(self.conv(cond))))  # (B, 2·ch, h, w): γ then β

    @staticmethod
    def modulate(h: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """h (B·N, ch, h, w) with its tiles' style (B, 2·ch, h, w) → (B·N, ch, h, w)."""
        gamma, beta = style[:, None].chunk(2, dim=2)  # (B, 1, ch, h, w) each
        return (per_tile(h, style.shape[0]) * (1.0 + gamma) + beta).flatten(0, 1)


def attention_context(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The key/value half of efficient attention (Shen et al.): k (B, h, d, M), v (B, h, e, M) → the per-head
    context softmax_M(k)·vᵀ, (B, h, d, e). It does not depend on the queries."""
    return k.softmax(dim=3) @ v.transpose(2, 3)  # (B, h, d, e)


def attend(q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The query half: q (B·N, h, d, P) against its tiles' contexts (B, h, d, e) → (B·N, h, e, P).

    q is softmax-normalised over its head dimension; memory stays linear in positions (never a P×M matrix).
    """
    q = per_tile(q.softmax(dim=2), context.shape[0])  # (B, N, h, d, P)
    return (context.transpose(2, 3)[:, None] @ q).flatten(0, 1)  # (B·N, h, e, P)


class WaveletCrossAttention(nn.Module):
    """Decoder modulation: queries from the normalised feature, keys/values from the DB1 wavelet tensor."""

    def __init__(self, ch: int, wav_ch: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Conv2d(wav_ch, 2 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def context(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, C+3k, h, w) → the per-head context (B, heads, d, d): the condition's whole contribution."""
        k, v = self.kv(wav).flatten(2).chunk(2, dim=1)  # (B, C, M) each
        b, c = k.shape[:2]
        k = k.reshape(b, self.heads, c // self.heads, -1)  # (B, h, d, M)
        v = v.reshape(b, self.heads, c // self.heads, -1)  # (B, h, d, M)
        return attention_context(k, v)

    def forward(self, hn: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """hn (B·N, C, H, W) with its tiles' ``context`` → (B·N, C, H, W)."""
        b, c, hh, ww = hn.shape
        q = self.q(hn).reshape(b, self.heads, c // self.heads, hh * ww)  # (B·N, h, d, P)
        out = attend(q, context).reshape(b, c, hh, ww)  # (B·N, C, H, W)
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

    def forward(self, x: torch.Tensor, temb: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (B·N, cin, H, W), temb (B·N, time_dim), style = ``self.style(cond)`` (B, 2·cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]  # (B·N, cout, H, W)
        h = self.conv2(F.silu(StyleModulation.modulate(self.norm2(h), style)))
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

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """x (B·N, cin, H, W), temb (B·N, time_dim), context = ``self.attn.context(wav)`` (None without wavelets)."""
        h = self.conv1(F.silu(self.norm1(x))) + self.temb(temb)[:, :, None, None]  # (B·N, cout, H, W)
        if self.wavelet:
            h = h + self.attn(self.norm_attn(h), context)
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Upsample(nn.Module):
    """Nearest ×2 then conv3×3 (which already narrows to the finer level's width, saving compute there)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Conditioning(NamedTuple):
    """What a batch of B tiles' conditions contribute to every network call (``DDRFUNet.encode``), in call order."""

    styles: tuple[torch.Tensor, ...]  # per encoder block, then mid1, mid2: (B, 2·ch, H/2^i, W/2^i), γ then β
    contexts: tuple[torch.Tensor, ...]  # per decoder block with wavelet attention: (B, heads, d, d)


class DDRFUNet(nn.Module):
    """Raw network: (x_t, t, cond, wav[, x_self]) → the objective's prediction, (B, C, H, W).

    ``cond`` (B, C+k, H, W) enters every encoder block through style modulation at that block's
    resolution (fixed 2×2 average pooling per level); ``wav`` (B, C+3k, H/2, W/2) enters every
    decoder block through linear-memory cross-attention. Levels 0 and 1 both read ``wav`` at H/2: the
    attention context is a global d×d sum with pointwise keys/values, which nearest upsampling
    would leave unchanged.

    Neither path depends on x_t or t, so ``forward`` is ``step(x_t, t, encode(cond, wav))``: a sampler that
    calls the network several times per tile (steps, or N samples as B·N rows) encodes the condition once.
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

    def encode(self, cond: torch.Tensor, wav: torch.Tensor) -> Conditioning:
        """Everything the condition contributes to a call, (B, ...) per tile: run once for all steps and samples."""
        levels = self.cfg.levels
        conds = [cond]  # level i: (B, C+k, H/2^i, W/2^i)
        for _ in range(levels - 1):
            conds.append(F.avg_pool2d(conds[-1], 2))
        wavs = [wav, wav]  # level i ≥ 1: (B, C+3k, H/2^i, W/2^i)
        for _ in range(levels - 2):
            wavs.append(F.avg_pool2d(wavs[-1], 2))
        styles = [block.style(conds[i]) for i, blocks in enumerate(self.enc) for block in blocks]
        styles += [self.mid1.style(conds[-1]), self.mid2.style(conds[-1])]
        contexts = [block.attn.context(wavs[levels - 1 - j]) for j, blocks in enumerate(self.dec)
                    for block in blocks if block.wavelet]
        return Conditioning(tuple(styles), tuple(contexts))

    def step(self, x_t: torch.Tensor, t: torch.Tensor, conditioning: Conditioning,
             x_self: torch.Tensor | None = None) -> torch.Tensor:
        """x_t (B·N, C, H, W) and t (B·N,) for N samples of each of the B tiles ``conditioning`` was encoded from
        (sample s of tile i at row i·N + s) → (B·N, C, H, W)."""
        levels = self.cfg.levels
        styles, contexts = iter(conditioning.styles), iter(conditioning.contexts)
        temb = F.silu(self.time(t))  # (B·N, time_dim)
        if self.self_condition:
            x_t = torch.cat([x_t, torch.zeros_like(x_t) if x_self is None else x_self], dim=1)
        h = self.stem(x_t)  # (B·N, ch0, H, W)
        skips: list[list[torch.Tensor]] = [[h]]
        for i, blocks in enumerate(self.enc):
            for block in blocks:
                h = block(h, temb, next(styles))
                skips[i].append(h)
            if i + 1 < levels:
                h = self.down[i](h)  # (B·N, ch_i, H/2^(i+1), W/2^(i+1))
                skips.append([h])

        h = self.mid2(self.mid_attn(self.mid1(h, temb, next(styles))), temb, next(styles))

        for j, blocks in enumerate(self.dec):
            i = levels - 1 - j
            for block, s in zip(blocks, reversed(skips[i][-self.cfg.dec_blocks:])):
                h = block(torch.cat([h, s], dim=1), temb, next(contexts) if block.wavelet else None)
            if i > 0:
                h = self.up[j](h)  # (B·N, ch_i, H/2^(i-1), W/2^(i-1))
        return self.out(F.silu(self.out_norm(h)))  # (B·N, C, H, W)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, wav: torch.Tensor,
                x_self: torch.Tensor | None = None) -> torch.Tensor:
        return self.step(x_t, t, self.encode(cond, wav), x_self)  # (B, C, H, W)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
