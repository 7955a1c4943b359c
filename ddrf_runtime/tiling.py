"""Tile geometry for whole-scene fusion: windows, MS read windows with halo, blend weights, tile noise.

Pure geometry (no I/O), shared by the in-memory pipeline and the windowed GeoTIFF orchestrator.
Coordinates are PAN pixels unless named ``ms``. Tiles overlap and are blended with smooth weights
that sum to one, so seams do not show; a tile's noise depends only on the scene seed and the tile's
position, so results do not depend on batching or processing order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import ConfigError, InputError

Pad = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))


@dataclass(frozen=True)
class Window:
    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


@dataclass(frozen=True)
class Tile:
    index: tuple[int, int]  # (grid row, grid column)
    window: Window  # the network's tile; passes the scene's bottom/right edge only when the scene is smaller
    read: Window  # window ∩ scene: the output pixels this tile contributes to
    ms: Window  # MS pixels to read: the window / ratio plus the halo, clipped to the MS scene
    ms_pad: Pad  # symmetric padding that restores the clipped halo (and any part past the scene)
    pan: Window  # PAN pixels to read: the window plus the PAN halo, clipped to the scene
    pan_pad: Pad  # symmetric padding that restores the clipped PAN halo (and any part past the scene)


def pad_symmetric(img: np.ndarray, pad: Pad) -> np.ndarray:
    """Mirror an (H, W, ...) array about its edges (``img`` itself when there is nothing to pad).

    Half-sample symmetric ('symmetric', edge pixel repeated) rather than 'reflect': it mirrors about the
    pixel *edge*, which is the same line on the MS and the PAN grid, so padded MS and PAN stay co-registered.
    """
    if not any(pad[0] + pad[1]):
        return img
    return np.pad(img, tuple(pad) + ((0, 0),) * (img.ndim - 2), mode="symmetric")


def tile_noise(seed: int, row: int, col: int, shape: tuple[int, ...], *stream: int) -> np.ndarray:
    """Standard-normal float32 noise for the tile at scene position (row, col): a function of these only.

    ``stream`` (non-negative ints) names further independent draws for the same tile, e.g. (sample,) for the
    starting noise of sample k or (sample, step + 1) for stochastic sampling; no stream is the scene's
    historical noise, which sample 0 keeps (so one sample reproduces earlier outputs bit for bit).
    """
    key = [seed, row, col, *stream] if any(stream) else [seed, row, col]
    return np.random.Generator(np.random.PCG64(key)).standard_normal(shape, dtype=np.float32)


def _raised_cosine(n: int) -> np.ndarray:
    """Rising ramp over n samples, strictly inside (0, 1); ramp[k] + ramp[n-1-k] == 1."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


@dataclass(frozen=True, eq=False)  # holds arrays: compare grids, not axes
class _Axis:
    """The tiling of one axis: tile starts, tile length and each tile's normalised 1-D blend profile."""

    starts: tuple[int, ...]
    length: int
    profiles: tuple[np.ndarray, ...]  # float64 (length,) each; they sum to 1 at every covered position

    @classmethod
    def build(cls, n: int, tile: int, overlap: int, multiple: int) -> "_Axis":
        length = min(tile, -(-n // multiple) * multiple)  # a scene smaller than a tile gets one smaller tile
        if n <= length:
            starts = [0]
        else:  # regular stride, then the last tile shifted back to end at the scene edge
            starts = list(range(0, n - length, length - overlap)) + [n - length]
        raw = []
        for k, s in enumerate(starts):
            w = np.ones(length)
            o_prev = starts[k - 1] + length - s if k > 0 else 0
            o_next = s + length - starts[k + 1] if k + 1 < len(starts) else 0
            if o_prev:  # ramp up over the overlap with the previous tile
                w[:o_prev] *= _raised_cosine(o_prev)
            if o_next:  # ramp down over the overlap with the next tile
                w[length - o_next:] *= _raised_cosine(o_next)[::-1]
            raw.append(w)
        total = np.zeros(max(n, length))
        for s, w in zip(starts, raw):
            total[s:s + length] += w
        # Normalising makes the weights a partition of unity even where the shifted last tile overlaps more.
        return cls(tuple(starts), length, tuple(w / total[s:s + length] for s, w in zip(starts, raw)))


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles covering a scene of ``height`` × ``width`` PAN pixels.

    Tiles are ``tile`` pixels square (a multiple of lcm(size_multiple, ratio), so that the network
    accepts them and they start on MS pixel boundaries), overlap by at least ``overlap`` (a multiple of
    ``ratio``) and stay inside the scene. Along an axis where the scene is smaller than ``tile`` there is
    one tile, the scene's size rounded up to that multiple, filled by symmetric padding.
    """

    height: int  # scene rows, PAN pixels (a multiple of ratio)
    width: int  # scene columns, PAN pixels (a multiple of ratio)
    tile: int  # tile side, PAN pixels
    overlap: int = 0  # minimum overlap of neighbouring tiles, PAN pixels
    size_multiple: int = 1  # the network's size constraint (ModelSpec.size_multiple)
    ratio: int = 1  # PAN/MS pixel-size ratio
    halo: int = 0  # MS pixels of context read around each tile (for upsampling), clipped at scene edges
    pan_halo: int = 0  # PAN pixels of context read around each tile (a multiple of ratio; for the residual's base)

    def __post_init__(self) -> None:
        for name in ("size_multiple", "ratio"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        m = self.multiple
        if self.tile < m or self.tile % m:
            hint = max(m, round(self.tile / m) * m)
            raise ConfigError(f"tile size {self.tile} must be a positive multiple of {m} (lcm of the model's size "
                              f"multiple {self.size_multiple} and ratio {self.ratio}); try {hint}")
        if not 0 <= self.overlap < self.tile or self.overlap % self.ratio:
            raise ConfigError(f"overlap {self.overlap} must be a multiple of the ratio {self.ratio} "
                              f"in 0..{self.tile - 1} (less than the tile size)")
        if self.halo < 0 or self.pan_halo < 0 or self.pan_halo % self.ratio:
            raise ConfigError(f"halo must be >= 0 and pan_halo a non-negative multiple of the ratio {self.ratio}, "
                              f"got {self.halo} and {self.pan_halo}")
        if self.height < 1 or self.width < 1 or self.height % self.ratio or self.width % self.ratio:
            raise InputError(f"scene size {self.height}×{self.width} must be a positive multiple of the ratio "
                             f"{self.ratio} in both directions")

    @property
    def multiple(self) -> int:
        return math.lcm(self.size_multiple, self.ratio)

    @cached_property
    def _rows(self) -> _Axis:
        return _Axis.build(self.height, self.tile, self.overlap, self.multiple)

    @cached_property
    def _cols(self) -> _Axis:
        return _Axis.build(self.width, self.tile, self.overlap, self.multiple)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(rows, columns) of every tile: ``tile``, or less along an axis where the scene is smaller."""
        return self._rows.length, self._cols.length

    @property
    def shape(self) -> tuple[int, int]:
        """Tiles per column and per row."""
        return len(self._rows.starts), len(self._cols.starts)

    @staticmethod
    def _read_axis(lo: int, hi: int, scene: int) -> tuple[int, int, tuple[int, int]]:
        """Read (start, length) of [lo, hi) clipped to [0, scene), and the symmetric pad restoring the rest."""
        r0, r1 = max(lo, 0), min(hi, scene)
        return r0, r1 - r0, (r0 - lo, hi - r1)

    @cached_property
    def tiles(self) -> tuple[Tile, ...]:
        """All tiles, row-major."""
        (th, tw), out = self.tile_shape, []
        for i, r in enumerate(self._rows.starts):
            q, h, ph = self.ratio, self.halo, self.pan_halo
            mr, mh, ms_r = self._read_axis(r // q - h, (r + th) // q + h, self.height // q)
            pr, p_rows, pan_r = self._read_axis(r - ph, r + th + ph, self.height)
            for j, c in enumerate(self._cols.starts):
                mc, mw, ms_c = self._read_axis(c // q - h, (c + tw) // q + h, self.width // q)
                pc, p_cols, pan_c = self._read_axis(c - ph, c + tw + ph, self.width)
                out.append(Tile(
                    index=(i, j),
                    window=Window(r, c, th, tw),
                    read=Window(r, c, min(th, self.height - r), min(tw, self.width - c)),
                    ms=Window(mr, mc, mh, mw),
                    ms_pad=(ms_r, ms_c),
                    pan=Window(pr, pc, p_rows, p_cols),
                    pan_pad=(pan_r, pan_c),
                ))
        return tuple(out)

    def weights(self, tile: Tile) -> np.ndarray:
        """(tile rows, tile cols) float32 blend weights: positive, 1 away from neighbours, summing to 1 over tiles.

        Separable: the row and column profiles each sum to one across tiles, hence so does their product.
        """
        i, j = tile.index
        return np.outer(self._rows.profiles[i], self._cols.profiles[j]).astype(np.float32)

    def blend(self, out: np.ndarray, tile: Tile, values: np.ndarray, origin: tuple[int, int] = (0, 0)) -> None:
        """Add a tile's (rows, cols[, C]) ``values`` times its weights into ``out``, whose pixel (0, 0) is
        scene pixel ``origin`` (a strip buffer, or the whole scene). Only the part inside the scene is added.
        """
        rd = tile.read
        r0, c0 = rd.row - origin[0], rd.col - origin[1]
        if r0 < 0 or c0 < 0 or r0 + rd.height > out.shape[0] or c0 + rd.width > out.shape[1]:
            raise ValueError(f"tile at {rd} does not fit an output of shape {out.shape} at {origin}")
        w = self.weights(tile)[:rd.height, :rd.width]
        v = values[:rd.height, :rd.width]
        out[r0:r0 + rd.height, c0:c0 + rd.width] += v * (w[..., None] if v.ndim == 3 else w)
