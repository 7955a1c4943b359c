"""In-memory fusion: per-tile conditioning, batched DDIM sampling over tiles, blending into the scene.

``prepare_batch`` (conditions, wavelets, noise), ``predict_x0`` (the network) and ``finish_batch`` (base +
correction, the projection onto the MS, DN) are the building blocks a windowed (GeoTIFF) orchestrator runs on
different threads: it reads each tile's ``tile.ms`` and ``tile.pan`` windows, prepares, predicts, finishes, and
blends with ``TileGrid.blend``. ``fuse_arrays`` does the same for arrays already in memory.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .consistency import DEFAULT_PROJECTIONS, project_onto_ms
from .errors import ConfigError, InputError
from .flip_ensemble import FlipEnsemble
from .model_spec import ModelSpec
from .resample import UPSAMPLE_REACH, upsample
from .sampler import sample_ddim
from .schedule import ddim_timesteps
from .backends import BaseOnly, DenoiserLike
from .detail_base import (MatchMoments, SceneBase, base_context, box_mean, fit_window, residual_base,
                          scene_statistics)
from .model_spec import ValueScale
from .session import Denoiser
from .target import TargetSpec
from .tiling import Tile, TileGrid, pad_symmetric, tile_noise
from .trust import Trust, TrustFit, correction_weight, one_scale_down, trust_from_fit
from .uncertainty import pool_spread, sample_statistics, spread_bands, spread_channels
from .wavelets import wavelet_condition

# MS pixels of context read around every tile, so that a tile's lms equals that of the whole scene.
UPSAMPLE_HALO = UPSAMPLE_REACH
DEFAULT_TILE, DEFAULT_OVERLAP = 512, 64  # PAN pixels; fitted to the model when FuseOptions leaves them unset


@dataclass(frozen=True)
class FuseOptions:
    steps: int | None = None  # DDIM steps (network evaluations per tile); None → the model's default_steps
    tile: int | None = None  # tile side, PAN pixels, a multiple of lcm(model size_multiple, ratio); bounds memory
    overlap: int | None = None  # minimum overlap of neighbouring tiles, PAN pixels (multiple of the ratio); blended
    batch: int = 2  # tile-samples per network call (at least one tile's samples); ORT's CPU attention holds
    # ≈ 0.5 GiB per 512² tile-sample (small model)
    seed: int = 0  # scene noise seed: a tile's noise depends only on it and the tile's position
    bit_depth: int | None = None  # inputs' full scale is 2**bit_depth − 1; None → uint8: 8, else the model default
    samples: int = 1  # fused samples per tile (own noises, one network call); > 1 → their mean, plus the spread
    eta: float = 0.0  # DDIM stochasticity: 0 deterministic ODE, 1 ancestral (fresh seeded noise at every step)
    spread_sigma: float = 1.0  # Gaussian σ (PAN pixels) pooling each tile's sample variance; 0 = per pixel
    flip_ensemble: bool = False  # average the network over the 4 flips of every tile (``FlipEnsemble``): ≈ 3.3× time
    value_scale: ValueScale | None = None  # how DN become network units (``Radiometry``); None → the model's
    trust: Trust = Trust.FITTED  # the network's correction as fitted one scale down (``trust``), or in full
    projections: int = DEFAULT_PROJECTIONS  # back-projection steps of each fused tile onto its MS (``consistency``)

    def __post_init__(self) -> None:
        checks = [  # (field, valid?, problem): the error names the field as its ``path``
            ("steps", self.steps is None or self.steps >= 1, f"must be >= 1, got {self.steps}"),
            ("tile", self.tile is None or self.tile >= 1, f"must be >= 1, got {self.tile}"),
            ("overlap", self.overlap is None or self.overlap >= 0, f"must be >= 0, got {self.overlap}"),
            ("batch", self.batch >= 1, f"must be >= 1, got {self.batch}"),
            ("seed", self.seed >= 0, f"must be >= 0, got {self.seed}"),
            ("bit_depth", self.bit_depth is None or 1 <= self.bit_depth <= 32,
             f"must be in 1..32, got {self.bit_depth}"),
            ("samples", self.samples >= 1, f"must be >= 1, got {self.samples}"),
            ("eta", 0.0 <= self.eta <= 1.0, f"must be in 0..1, got {self.eta}"),
            ("spread_sigma", self.spread_sigma >= 0, f"must be >= 0, got {self.spread_sigma}"),
            ("value_scale", self.value_scale is None or self.value_scale in {v.value for v in ValueScale},
             f"must be one of {', '.join(v.value for v in ValueScale)}, got {self.value_scale!r}"),
            ("trust", self.trust in {v.value for v in Trust},
             f"must be one of {', '.join(v.value for v in Trust)}, got {self.trust!r}"),
            ("projections", self.projections >= 0, f"must be >= 0, got {self.projections}"),
        ]
        for name, ok, problem in checks:
            if not ok:
                raise ConfigError(problem, name)

    def requested_value_scale(self, spec: ModelSpec, depth: "BitDepth") -> ValueScale:
        """The option, else the model's default; AUTO with a stated bit depth is BIT_DEPTH, with a guessed one it
        stays AUTO (``Radiometry.of`` decides from the scene's brightness). Anything but BIT_DEPTH needs the
        model's ``reference_mean``."""
        value_scale = spec.value_scale if self.value_scale is None else ValueScale(self.value_scale)
        if value_scale is ValueScale.AUTO and depth.stated:
            return ValueScale.BIT_DEPTH
        if value_scale is not ValueScale.BIT_DEPTH and not spec.reference_mean:
            raise ConfigError("the model has no reference_mean (exported before scene-mean scaling); "
                              "use value_scale bit_depth or re-export it", "value_scale")
        return value_scale

    def num_steps(self, spec: ModelSpec) -> int:
        steps = spec.default_steps if self.steps is None else self.steps
        if steps > spec.timesteps:
            raise ConfigError(f"steps {steps} exceeds the model's {spec.timesteps} training timesteps")
        return steps


def make_grid(spec: ModelSpec, options: FuseOptions, height: int, width: int) -> TileGrid:
    """The tiling of a height × width (PAN pixels) scene for this model and these options.

    An unset tile is the largest multiple of lcm(size_multiple, ratio) up to ``DEFAULT_TILE`` (512 for
    power-of-two ratios, 480 for a ratio-3 model of multiple 16); an unset overlap is ``DEFAULT_OVERLAP``
    rounded up to a multiple of the ratio.
    """
    multiple = math.lcm(spec.size_multiple, spec.ratio)
    tile = max(multiple, DEFAULT_TILE // multiple * multiple) if options.tile is None else options.tile
    overlap = -(-DEFAULT_OVERLAP // spec.ratio) * spec.ratio if options.overlap is None else options.overlap
    return TileGrid(height, width, tile, overlap, spec.size_multiple, spec.ratio, UPSAMPLE_HALO,
                    base_context(spec.target, spec.ratio))


def full_scale(bit_depth: int) -> float:
    return float(2**bit_depth - 1)


@dataclass(frozen=True)
class BitDepth:
    """The inputs' bit depth and where it came from."""

    bits: int  # full scale 2**bits − 1
    source: str  # how it was found, for the run report
    stated: bool  # by the user or the data (option, NBITS tag, uint8), not guessed (data maximum, model default)


@dataclass(frozen=True)
class Radiometry:
    """How one scene's DN map to network units: inputs ÷ ``unit``, the fused result × ``unit``, then clipped to
    [0, ``full_scale``]. Under ``ValueScale.SCENE_MEAN`` the unit makes the scene's mean MS the model's
    ``reference_mean``, so the network's answer does not depend on the bit depth stated or on the scene's
    brightness: the classical base is homogeneous in the inputs and the network's correction is scaled back.
    ``correction`` is how much of that correction the scene keeps (``trust``)."""

    full_scale: float  # 2**bits − 1 of the inputs: the largest value read or written
    unit: float  # DN per network unit: the full scale (BIT_DEPTH) or mean MS DN ÷ reference_mean (SCENE_MEAN)
    value_scale: ValueScale = ValueScale.BIT_DEPTH  # which of the two ``unit`` is
    correction: float = 1.0  # weight of the network's correction (x0) in the fused result: ``TrustFit.weight``

    @classmethod
    def of(cls, spec: ModelSpec, value_scale: ValueScale, scale: float,
           moments: MatchMoments | None) -> "Radiometry":
        """The scene's radiometry under a requested ``value_scale`` (``FuseOptions.requested_value_scale``) from
        its full ``scale`` and its ``moments`` (MS normalised by ``scale``; None only for BIT_DEPTH). AUTO keeps
        the full scale when it puts the scene's mean MS inside the model's ``brightness_range``. A scene without
        signal keeps the full scale."""
        mean = 0.0 if moments is None else moments.ms_mean()
        lo, hi = spec.brightness_range
        if value_scale is ValueScale.BIT_DEPTH or mean <= 0 or value_scale is ValueScale.AUTO and lo <= mean <= hi:
            return cls(scale, scale)
        return cls(scale, scale * mean / spec.reference_mean, ValueScale.SCENE_MEAN)

    @property
    def from_full_scale(self) -> float:
        """Values (and histogram-matching offsets) normalised by the full scale × this = network units."""
        return self.full_scale / self.unit


def _normalised(ms: np.ndarray, pan: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """ms (h, w, C) and a one-band pan (rh, rw[, 1]) in DN → (C, h, w) and (rh, rw) float32 ÷ ``scale``."""
    ms_n = (ms.astype(np.float32) / np.float32(scale)).transpose(2, 0, 1)  # (C, h, w)
    return ms_n, pan.reshape(pan.shape[:2]).astype(np.float32) / np.float32(scale)  # (rh, rw)


def scene_moments(ms: np.ndarray, pan: np.ndarray, ratio: int, scale: float) -> MatchMoments:
    """``MatchMoments`` of a whole in-memory scene, ms (h, w, C) and pan (rh, rw[, 1]) in DN, ÷ ``scale``."""
    ms_n, pan_n = _normalised(ms, pan, scale)
    return MatchMoments.of(ms_n, box_mean(pan_n, ratio))


def scene_base(target: TargetSpec, ms: np.ndarray, pan: np.ndarray, ratio: int, scale: float) -> SceneBase | None:
    """The base statistics (``detail_base.scene_statistics``) of a whole in-memory scene, ms (h, w, C) and pan
    (rh, rw) in DN, normalised by ``scale`` (the network unit); None for bases that need none."""
    if not target.base.needs_scene_statistics:
        return None
    ms_n, pan_n = _normalised(ms, pan, scale)  # (C, h, w), (rh, rw)
    return _array_statistics(target, ms_n, pan_n, ratio, MatchMoments.of(ms_n, box_mean(pan_n, ratio)), 1.0)


def _array_statistics(target: TargetSpec, ms_n: np.ndarray, pan_n: np.ndarray, ratio: int, moments: MatchMoments,
                      to_unit: float) -> SceneBase | None:
    """``scene_statistics`` of normalised arrays ms_n (C, h, w) and pan_n (rh, rw) with their ``moments``."""
    def fit_inputs() -> tuple[np.ndarray, np.ndarray, None]:
        r0, c0, rows, cols = fit_window(ms_n.shape[1], ms_n.shape[2], ratio)
        return (ms_n[:, r0:r0 + rows, c0:c0 + cols],
                pan_n[r0 * ratio:(r0 + rows) * ratio, c0 * ratio:(c0 + cols) * ratio], None)
    return scene_statistics(target, moments, to_unit, ratio, fit_inputs)


def condition_tile(grid: TileGrid, tile: Tile, ms_read: np.ndarray, pan_read: np.ndarray, scale: float,
                   target: TargetSpec = TargetSpec(),
                   scene: SceneBase | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One tile's network condition cat[lms_n, guide_n] (C + k, tile rows, tile cols) and the base image its
    residual is added to (C, tile rows, tile cols), both float32 and normalised.

    ``ms_read`` (tile.ms rows, cols, C) and ``pan_read`` (tile.pan rows, cols[, k]) are DN, each with its halo.
    Both are normalised and mirrored where the halo was clipped; the MS is upsampled, the base computed with the
    PAN halo's context and the ``scene``'s statistics (``scene_base``; None: the tile's own), and the halos
    cropped away.
    """
    th, tw = tile.window.height, tile.window.width
    want_ms, want_pan = (tile.ms.height, tile.ms.width), (tile.pan.height, tile.pan.width)
    if ms_read.shape[:2] != want_ms or pan_read.shape[:2] != want_pan:
        raise InputError(f"tile {tile.index}: got ms {ms_read.shape[:2]} and pan {pan_read.shape[:2]} pixels, "
                         f"expected {want_ms} and {want_pan}")
    ms = pad_symmetric(ms_read.astype(np.float32) / np.float32(scale), tile.ms_pad)  # (mh, mw, C)
    off = grid.halo * grid.ratio  # the tile's first row/column inside the upsampled window
    lms = upsample(ms, grid.ratio)[off:off + th, off:off + tw].transpose(2, 0, 1)  # (C, th, tw)
    pan = pad_symmetric(pan_read.astype(np.float32) / np.float32(scale), tile.pan_pad)  # (th + 2p, tw + 2p[, k])
    pan = pan.reshape(pan.shape[:2] + (-1,)).transpose(2, 0, 1)  # (k, th + 2p, tw + 2p)
    p = grid.pan_halo
    cond = np.concatenate([lms, pan[:, p:p + th, p:p + tw]])  # (C+k, th, tw)
    base = residual_base(target, lms, pan, grid.ratio, context=p, scene=scene)  # (C, th, tw)
    return np.ascontiguousarray(cond, np.float32), base  # base: stacked per batch by the caller


@dataclass(frozen=True, eq=False)  # holds arrays
class BatchInputs:
    """Everything the network needs for one batch of tiles, prepared on the CPU ahead of the network call."""

    tiles: tuple[Tile, ...]
    cond: np.ndarray  # (B, C+k, th, tw) float32: cat[lms_n, guide_n]
    wav: np.ndarray  # (B, C+3k, th/2, tw/2) float32: DB1 sub-bands of the condition
    base: np.ndarray  # (B, C, th, tw) float32: what the network's residual is added to
    noise: np.ndarray  # (B·N, C, th, tw) float32: starting noise of sample s of tile i at row i·N + s


def tiles_per_call(options: FuseOptions) -> int:
    """Tiles in one network call: all samples of a tile go together, and memory is bounded by the batch."""
    return max(1, options.batch // options.samples)


def _sample_noise(options: FuseOptions, tiles: Sequence[Tile], shape: tuple[int, ...], *stream: int) -> np.ndarray:
    """(B·N, *shape) noise of every sample of every tile (tile-major); ``stream`` names a later step's draw."""
    return np.stack([tile_noise(options.seed, t.window.row, t.window.col, shape, s, *stream)
                     for t in tiles for s in range(options.samples)])


def prepare_batch(grid: TileGrid, tiles: Sequence[Tile], ms_reads: Sequence[np.ndarray],
                  pan_reads: Sequence[np.ndarray], spec: ModelSpec, options: FuseOptions, scale: float,
                  scene: SceneBase | None = None) -> BatchInputs:
    """The CPU half of fusing tiles: conditions, wavelets, the residual's base image and noise (numpy/numba; no
    network, GIL mostly free).

    ``ms_reads[i]``/``pan_reads[i]`` are the DN pixels of ``tiles[i].ms``/``tiles[i].pan``. Sample s of a tile
    starts from ``tile_noise(options.seed, row, col, shape, s)`` (sample 0: the scene's historical noise), so
    results do not depend on batching. ``scene``: the scene's base statistics (``scene_base``).
    """
    c = spec.num_bands
    conds, bases = zip(*(condition_tile(grid, t, m, p, scale, spec.target, scene)
                         for t, m, p in zip(tiles, ms_reads, pan_reads)))
    cond, base = np.stack(conds), np.stack(bases)  # (B, C+k, th, tw), (B, C, th, tw)
    wav = wavelet_condition(cond[:, :c], cond[:, c:])  # (B, C+3k, th/2, tw/2)
    return BatchInputs(tuple(tiles), cond, wav, base, _sample_noise(options, tiles, (c,) + grid.tile_shape))


def predict_x0(batch: BatchInputs, denoiser: DenoiserLike, options: FuseOptions,
               progress: tqdm | None = None) -> np.ndarray:
    """The network half: x0 (B·N, C, th, tw) in network units, ``options.samples`` per tile of ``batch``.

    Each tile's samples share its condition and go through the network in one call; with ``options.eta`` > 0
    step i of sample s adds ``tile_noise(..., s, i + 1)``. ``progress`` advances by one per tile and step.
    """
    spec = denoiser.spec
    timesteps = ddim_timesteps(spec.timesteps, options.num_steps(spec))
    c, n = spec.num_bands, len(batch.tiles)
    th, tw = batch.cond.shape[2:]
    advance = None if progress is None else (lambda *_: progress.update(n))  # per network call
    network = FlipEnsemble(denoiser) if options.flip_ensemble else denoiser
    return sample_ddim(network.conditioned(batch.cond, batch.wav, samples=options.samples), batch.noise, timesteps,
                       spec.alphas_cumprod(), callback=advance, eta=options.eta,
                       noise=lambda step: _sample_noise(options, batch.tiles, (c, th, tw), step + 1))


def finish_samples(batch: BatchInputs, x0: np.ndarray, spec: ModelSpec, options: FuseOptions,
                   radiometry: Radiometry) -> np.ndarray:
    """``predict_x0``'s x0 → the fused samples, (B, N, th, tw, C) float32 DN in [0, full scale]: the trust weight
    on the correction, base + correction, the projection onto the MS, DN, clip. No network: an orchestrator runs
    it on a worker thread while the network takes the next batch (the projection costs more CPU than the rest of
    a tile's post-processing together)."""
    c, n_s, n = spec.num_bands, options.samples, len(batch.tiles)
    th, tw = batch.cond.shape[2:]
    base, lms = ((a if n_s == 1 else np.repeat(a, n_s, axis=0))  # (B·N, C, th, tw) each: shared per tile
                 for a in (batch.base, batch.cond[:, :c]))
    if radiometry.correction != 1.0:
        x0 = x0 * np.float32(radiometry.correction)
    fused = project_onto_ms(spec.target.decode(x0, base), lms, spec.ratio, options.projections)  # (B·N, C, th, tw)
    fused = fused * np.float32(radiometry.unit)
    fused = np.clip(fused, 0.0, radiometry.full_scale)
    return fused.reshape(n, n_s, c, th, tw).transpose(0, 1, 3, 4, 2)  # (B, N, th, tw, C)


def sample_batch(batch: BatchInputs, denoiser: DenoiserLike, options: FuseOptions, *, radiometry: Radiometry,
                 progress: tqdm | None = None) -> np.ndarray:
    """``options.samples`` fused samples of each tile, (B, N, th, tw, C) float32 DN in [0, full scale]; ``batch``
    was prepared in ``radiometry.unit``: ``predict_x0`` then ``finish_samples``."""
    x0 = predict_x0(batch, denoiser, options, progress)  # (B·N, C, th, tw)
    return finish_samples(batch, x0, denoiser.spec, options, radiometry)


def _reduce_samples(samples: np.ndarray, bands: int, options: FuseOptions) -> np.ndarray:
    """(n, N, th, tw, C) samples → (n, th, tw, C + S) blendable channels: the one sample exactly, or the mean
    and S = C + 1 spread channels (``uncertainty.sample_statistics``) pooled over ``options.spread_sigma``."""
    if options.samples == 1:
        return samples[:, 0]  # exactly the single sample: outputs of one sample do not change
    stats = sample_statistics(np.moveaxis(samples, 1, 0))  # (n, th, tw, 2C + 1)
    return pool_spread(stats, bands, options.spread_sigma)


def finish_batch(batch: BatchInputs, x0: np.ndarray, spec: ModelSpec, options: FuseOptions,
                 radiometry: Radiometry) -> np.ndarray:
    """``finish_samples`` reduced to what orchestrators blend: (B, th, tw, C + S) float32 (see ``fuse_tiles``)."""
    return _reduce_samples(finish_samples(batch, x0, spec, options, radiometry), spec.num_bands, options)


def sample_tiles(grid: TileGrid, tiles: Sequence[Tile], ms_reads: Sequence[np.ndarray],
                 pan_reads: Sequence[np.ndarray], denoiser: DenoiserLike, options: FuseOptions, *,
                 radiometry: Radiometry, scene: SceneBase | None = None, progress: tqdm | None = None) -> np.ndarray:
    """``options.samples`` fused samples of each tile: (n, N, tile rows, tile cols, C) float32 DN in [0, full
    scale], ``tiles_per_call`` tiles per network call; ``scene``: the scene's base statistics (``scene_base``, in
    ``radiometry.unit``)."""
    per_call = tiles_per_call(options)
    return np.concatenate([
        sample_batch(prepare_batch(grid, tiles[b0:b0 + per_call], ms_reads[b0:b0 + per_call],
                                   pan_reads[b0:b0 + per_call], denoiser.spec, options, radiometry.unit, scene),
                     denoiser, options, radiometry=radiometry, progress=progress)
        for b0 in range(0, len(tiles), per_call)])


def fuse_tiles(grid: TileGrid, tiles: Sequence[Tile], ms_reads: Sequence[np.ndarray], pan_reads: Sequence[np.ndarray],
               denoiser: DenoiserLike, options: FuseOptions, *, radiometry: Radiometry,
               scene: SceneBase | None = None, progress: tqdm | None = None) -> np.ndarray:
    """Fuse tiles: (n, tile rows, tile cols, C + S) float32, to blend with the tiles' weights.

    The first C channels are the fused image in DN, in [0, full scale]: the one sample, or the mean of
    ``options.samples``. With several samples S = C + 1 spread channels follow (per-band variance, spectral
    angle spread), pooled over ``options.spread_sigma`` pixels; with one, S = 0. Arguments as for ``sample_tiles``.
    """
    samples = sample_tiles(grid, tiles, ms_reads, pan_reads, denoiser, options, radiometry=radiometry, scene=scene,
                           progress=progress)
    return _reduce_samples(samples, denoiser.spec.num_bands, options)


def output_channels(bands: int, options: FuseOptions) -> int:
    """Channels ``fuse_tiles`` returns for a ``bands``-band model: the bands, plus the spread channels."""
    return bands + (spread_channels(bands) if options.samples > 1 else 0)


def _check_arrays(ms: np.ndarray, pan: np.ndarray, spec: ModelSpec) -> None:
    """Every way user arrays can disagree with the model becomes an InputError that says what to do."""
    for name, a in (("ms", ms), ("pan", pan)):
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise InputError(f"{name} must hold integer or float numbers, got dtype {a.dtype}")
        if a.size == 0:
            raise InputError(f"{name} is empty (shape {a.shape})")
    if ms.ndim != 3:
        raise InputError(f"ms must be rows × cols × bands, got shape {ms.shape}")
    if ms.shape[2] != spec.num_bands:
        raise InputError(f"ms has {ms.shape[2]} bands but the model fuses {spec.num_bands} "
                         f"({', '.join(spec.bands)}); pass exactly those bands, in that order")
    k = spec.guide_bands
    if not (pan.ndim == 3 and pan.shape[2] == k or pan.ndim == 2 and k == 1):
        want = "rows × cols" + ("" if k == 1 else f" × {k}")
        raise InputError(f"pan must be {want} (the model's guide has {k} band(s)), got shape {pan.shape}")
    h, w = ms.shape[:2]
    if pan.shape[:2] != (spec.ratio * h, spec.ratio * w):
        raise InputError(f"pan is {pan.shape[0]}×{pan.shape[1]} but the model's ratio {spec.ratio} needs "
                         f"{spec.ratio * h}×{spec.ratio * w} for an ms of {h}×{w}")
    for name, a in (("ms", ms), ("pan", pan)):
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InputError(f"{name} contains NaN or infinite values; fill or mask no-data pixels first")


def resolve_bit_depth(options: FuseOptions, spec: ModelSpec, ms: np.ndarray, pan: np.ndarray) -> BitDepth:
    """The inputs' bit depth (options, else uint8 → 8, else the model's default), checked against the data."""
    if options.bit_depth is not None:
        depth = BitDepth(options.bit_depth, "option", True)
    elif ms.dtype == np.uint8 and pan.dtype == np.uint8:
        depth = BitDepth(8, "uint8 data type", True)
    else:
        depth = BitDepth(spec.default_bit_depth, "the model's default", False)
    peak = max(float(ms.max()), float(pan.max()))
    if peak > full_scale(depth.bits):
        raise InputError(f"values up to {peak:g} exceed the {depth.bits}-bit full scale {full_scale(depth.bits):g}; "
                         "set bit_depth to the sensor's real bit depth")
    return depth


def arrays_statistics(spec: ModelSpec, options: FuseOptions, ms: np.ndarray,
                      pan: np.ndarray) -> tuple[Radiometry, SceneBase | None]:
    """The radiometry of an in-memory scene, ms (h, w, C) and pan (rh, rw[, k]) in DN — its bit depth
    (``resolve_bit_depth``) and, unless ``ValueScale.BIT_DEPTH``, its mean MS — and its base statistics (as
    ``scene_base`` in the network unit): what ``scene`` sums block by block for a raster, from one pass here."""
    depth = resolve_bit_depth(options, spec, ms, pan)
    scale, value_scale = full_scale(depth.bits), options.requested_value_scale(spec, depth)
    if value_scale is ValueScale.BIT_DEPTH and not spec.target.base.needs_scene_statistics:
        return Radiometry(scale, scale), None
    ms_n, pan_n = _normalised(ms, pan, scale)  # (C, h, w), (rh, rw)
    moments = MatchMoments.of(ms_n, box_mean(pan_n, spec.ratio))
    radiometry = Radiometry.of(spec, value_scale, scale, moments)
    return radiometry, _array_statistics(spec.target, ms_n, pan_n, spec.ratio, moments, radiometry.from_full_scale)


def window_trust(read: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray | None]], denoiser: DenoiserLike,
                 options: FuseOptions, radiometry: Radiometry) -> TrustFit:
    """How much of the network's correction a scene keeps (``trust``), from its central ``fit_window`` as ``read()``
    returns it, called only when a fit is wanted: ms (h, w, C) and pan (r·h, r·w[, k]) in DN and the MS pixels
    valid in both (h, w) (None: all). The window one scale down is fused by the model and by its base alone, at
    the scene's full scale and value scale, one sample."""
    spec = denoiser.spec
    if Trust(options.trust) is Trust.FULL:
        return TrustFit(1.0, None, "trust full: the correction as predicted")
    if not spec.target.residual:
        return TrustFit(1.0, None, "the model predicts the image, not a correction of a base")
    ms, pan, valid = read()
    down = one_scale_down(ms, pan, spec.ratio, radiometry.full_scale)
    if down is None:
        return TrustFit(1.0, None, "too small to fit one scale down")
    ms_r, pan_r = down  # (h/r, w/r, C), (h, w[, k])
    bits = round(math.log2(radiometry.full_scale + 1))
    plain = dataclasses.replace(options, trust=Trust.FULL, samples=1, bit_depth=bits, projections=0,
                                value_scale=radiometry.value_scale)  # λ's threshold was set on the raw correction
    fused, base = (fuse_arrays(ms_r, pan_r, network, plain) for network in (denoiser, BaseOnly(spec)))  # (h, w, C)
    h, w = fused.shape[:2]
    return trust_from_fit(correction_weight(fused, base, ms[:h, :w], None if valid is None else valid[:h, :w]))


def arrays_trust(ms: np.ndarray, pan: np.ndarray, denoiser: DenoiserLike, options: FuseOptions,
                 radiometry: Radiometry) -> TrustFit:
    """``window_trust`` of an in-memory scene, ms (h, w, C) and pan (rh, rw[, k]) in DN (``arrays_statistics``'s
    ``radiometry``), on its central ``fit_window``."""
    r = denoiser.spec.ratio
    r0, c0, rows, cols = fit_window(ms.shape[0], ms.shape[1], r)
    return window_trust(lambda: (ms[r0:r0 + rows, c0:c0 + cols], pan[r0 * r:(r0 + rows) * r, c0 * r:(c0 + cols) * r],
                                 None), denoiser, options, radiometry)


def fuse_arrays(ms: np.ndarray, pan: np.ndarray, model: DenoiserLike | str | os.PathLike,
                options: FuseOptions = FuseOptions(), progress: bool = False) -> np.ndarray:
    """Fuse a whole in-memory scene: ms (h, w, C) and pan (rh, rw[, k]) in DN → (rh, rw, C) float32 DN.

    ``model`` is a loaded denoiser (ONNX or torch backend) or the path of an exported ``.onnx`` (device 'auto').
    With ``options.samples`` > 1 the result is the samples' mean (``fuse_arrays_with_spread`` adds the spread).
    """
    return fuse_arrays_with_spread(ms, pan, model, options, progress)[0]


def fuse_arrays_with_spread(ms: np.ndarray, pan: np.ndarray, model: DenoiserLike | str | os.PathLike,
                            options: FuseOptions = FuseOptions(),
                            progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``fuse_arrays`` and, with ``options.samples`` > 1, the spread: (rh, rw, C + 1) float32, per-band standard
    deviation of the samples in DN, then their spectral angle spread in degrees (None with one sample)."""
    ms, pan = np.asarray(ms), np.asarray(pan)
    denoiser = Denoiser(model) if isinstance(model, (str, os.PathLike)) else model
    spec = denoiser.spec
    _check_arrays(ms, pan, spec)
    radiometry, scene = arrays_statistics(spec, options, ms, pan)
    radiometry = dataclasses.replace(radiometry, correction=arrays_trust(ms, pan, denoiser, options, radiometry).weight)
    grid = make_grid(spec, options, pan.shape[0], pan.shape[1])
    c = spec.num_bands
    out = np.zeros(pan.shape[:2] + (output_channels(c, options),), np.float32)  # (rh, rw, C + S) weighted sum
    tiles = grid.tiles
    with tqdm(total=len(tiles) * options.num_steps(spec), disable=not progress, unit="tile-step") as bar:
        for b0 in range(0, len(tiles), options.batch):  # one batch at a time bounds the memory held
            group = tiles[b0:b0 + options.batch]
            fused = fuse_tiles(grid, group, [ms[t.ms.slices] for t in group], [pan[t.pan.slices] for t in group],
                               denoiser, options, radiometry=radiometry, scene=scene, progress=bar)
            for tile, values in zip(group, fused):
                grid.blend(out, tile, values)
    if options.samples == 1:
        return out, None
    return np.ascontiguousarray(out[..., :c]), spread_bands(out[..., c:], c)
