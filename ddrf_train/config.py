"""Training configuration: frozen dataclasses, TOML loading and validation.

A run is fully described by one :class:`ExperimentConfig` (sections ``[model]``, ``[diffusion]``,
``[train]``, optional ``[augment]``). The same plain-dict form goes into every checkpoint, so a checkpoint rebuilds its
model without the TOML file. Every problem is a :class:`ConfigError` naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import enum
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ddrf_runtime.bands import FAMILIES, Family
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.model_spec import Objective, ValueScale
from ddrf_runtime.schedule import ScheduleKind
from ddrf_runtime.target import Base, TargetSpec


class DataFamily(str, enum.Enum):
    """Which data family (``ddrf_runtime.bands.FAMILIES``) a model is trained for; a scene contributes its
    first ``bands`` canonical bands."""

    FOUR_BAND = "4band"  # B, G, R, NIR; PAN; ratio 4
    EIGHT_BAND = "8band"  # B, G, R, NIR + the WorldView-2/3 extra bands; PAN; ratio 4
    HS_MS = "hs_ms"  # 128 Hyperion bands; 9-band ALI MS guide; ratio 3
    HS_PAN = "hs_pan"  # 128 Hyperion bands; ALI PAN; ratio 3

    @property
    def layout(self) -> Family:
        return FAMILIES[self.value]

    @property
    def bands(self) -> int:
        return len(self.layout.bands)


class Formulation(str, enum.Enum):
    """How the network is trained and sampled (the "with vs without diffusion" ablation, benchmarks.ablation)."""

    DIFFUSION = "diffusion"  # denoise x_t at a random timestep (DDRF)
    REGRESSION = "regression"  # the same network fed x_t = 0 at a fixed t: a direct regressor of the target


class Weighting(str, enum.Enum):
    """How a training crop picks its pair."""

    AREA = "area"  # proportional to pixel count (every pixel equally likely)
    PAIR = "pair"  # every pair equally likely
    SENSOR = "sensor"  # every sensor equally likely, then that sensor's pairs by area


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the DDRF UNet (DDRF.md "Network")."""

    bands: int = 4  # C: multispectral bands generated (and lms bands in the condition)
    guide_bands: int = 1  # k: guide channels (1 = PAN, 9 = the ALI MS guide of hyperspectral fusion)
    width: int = 32  # channels of the first level
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)  # channels of level i = width · channel_mults[i]
    enc_blocks: int = 3  # style-modulated residual blocks per encoder level
    dec_blocks: int = 4  # wavelet-modulated blocks per decoder level (each eats one skip; ≤ enc_blocks + 1)
    heads: int = 4  # attention heads (self-attention and wavelet cross-attention)
    time_dim: int = 128  # width of the timestep-embedding MLP output
    mod_hidden: int = 32  # hidden channels of the condition branch of the style modulation
    wavelet_modulation: bool = True  # decoder cross-attention to the DB1 wavelet tensor (off only for the ablation)

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def size_multiple(self) -> int:
        """Tile sides must be multiples of this: 2^(levels−1) UNet downsamplings, then the DWT's 2."""
        return 2 ** (self.levels - 1) * 2

    @property
    def wav_channels(self) -> int:
        return self.bands + 3 * self.guide_bands

    @property
    def cond_channels(self) -> int:
        return self.bands + self.guide_bands

    def check(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; empty when valid."""
        out = []
        for name in ("bands", "guide_bands", "width", "enc_blocks", "dec_blocks", "heads", "time_dim", "mod_hidden"):
            if getattr(self, name) < 1:
                out.append((name, "must be >= 1"))
        if self.time_dim % 2:
            out.append(("time_dim", "must be even (sine and cosine halves)"))
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            out.append(("channel_mults", "must be a non-empty list of positive integers"))
        elif any((self.width * m) % self.heads for m in self.channel_mults):
            out.append(("heads", f"must divide every level width {[self.width * m for m in self.channel_mults]}"))
        if self.dec_blocks > self.enc_blocks + 1:
            out.append(("dec_blocks", f"must be <= enc_blocks + 1 = {self.enc_blocks + 1} (one skip each)"))
        return out


# Presets; "reference" is the paper's configuration, "small" the CPU-trainable one (sized by measurement).
UNET_PRESETS: dict[str, UNetConfig] = {
    "reference": UNetConfig(),
    # ≈2.5 M parameters, ≈1.8 it/s for batch 8 × 64² on one core of the dev box (width 12 or one
    # decoder block per level gains < 30 % speed for half the capacity; width 32 runs at < 1 it/s).
    "small": UNetConfig(width=16, channel_mults=(1, 2, 4, 8), enc_blocks=1, dec_blocks=2, heads=4,
                        time_dim=64, mod_hidden=16),
    "tiny": UNetConfig(width=8, channel_mults=(1, 2), enc_blocks=1, dec_blocks=1, heads=2, time_dim=16,
                       mod_hidden=8),
}


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process around the network (DDRF.md "Diffusion")."""

    timesteps: int = 500  # T: training schedule length; t = 0..T−1
    schedule: ScheduleKind = ScheduleKind.COSINE  # ᾱ_t family
    schedule_offset: float = 0.008  # cosine-schedule s
    objective: Objective = Objective.X0  # what the raw network output means (converted to x0̂ in forward)
    residual: bool = True  # diffuse gt − lms (True) or the image itself (ablation)
    residual_scale: float = 20.0  # multiplier on the residual so it is not swamped by unit-variance noise
    base: Base = Base.UPSAMPLED  # the residual is gt − this: the upsampled MS, or a GLP ratio injection to correct
    base_gain: float = TargetSpec.base_gain  # glp bases: Nyquist gain of its PAN low-pass (one for all sensors)
    gain_pooling: float = 0.0  # glp_hpm_fit: weight of the gain fitted to all bands jointly in each band's gain
    self_condition: bool = False  # feed the previous x0̂ as an extra input (trained with probability 0.5)
    last_t_prob: float = 0.1  # probability of drawing t = T−1 (the 1-step sampler's only timestep); else uniform
    formulation: Formulation = Formulation.DIFFUSION  # diffusion, or the no-noise regressor baseline

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(residual=self.residual, scale=self.residual_scale, base=self.base, base_gain=self.base_gain,
                          gain_pooling=self.gain_pooling)

    def check(self) -> list[tuple[str, str]]:
        out = []
        if self.timesteps < 1:
            out.append(("timesteps", "must be >= 1"))
        if not 0.0 <= self.schedule_offset < 1.0:
            out.append(("schedule_offset", "must be in [0, 1)"))
        if self.residual_scale <= 0:
            out.append(("residual_scale", "must be > 0"))
        if not 0.0 < self.base_gain < 1.0:
            out.append(("base_gain", "must be in (0, 1)"))
        if not 0.0 <= self.gain_pooling <= 1.0:
            out.append(("gain_pooling", "must be in [0, 1]"))
        if self.base is not Base.UPSAMPLED and not self.residual:
            out.append(("base", f"{self.base.value!r} needs residual = true (without a residual there is no base)"))
        if not 0.0 <= self.last_t_prob <= 1.0:
            out.append(("last_t_prob", "must be in [0, 1]"))
        if self.formulation is Formulation.REGRESSION and self.objective is not Objective.X0:
            out.append(("objective", "must be 'x0' for the regression formulation (there is no noise to predict)"))
        return out


@dataclass(frozen=True)
class RadiometricConfig:
    """Training-time radiometric jitter that imitates what differs between sensors (``ddrf_train.augment``).

    Each crop draws its own factors, log-uniform in exp(±value); 0 switches a jitter off (the default: off).
    """

    gain: float = 0.0  # every image × one factor: scene brightness and how much of the bit depth it uses
    band_gain: float = 0.0  # each MS band (lms and gt alike) × its own factor: spectral calibration / response
    pan_gain: float = 0.0  # the guide × a factor relative to the MS: a different PAN spectral response
    pan_noise: float = 0.0  # Gaussian noise on the guide, std as a fraction of the crop's mean guide value

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def check(self) -> list[tuple[str, str]]:
        return [(f.name, "must be in [0, 1]") for f in fields(self) if not 0.0 <= getattr(self, f.name) <= 1.0]


@dataclass(frozen=True)
class DegradationConfig:
    """Extra Wald-protocol copies of every training pair (``ddrf_train.patches``): with other MS MTFs (a sensor's
    MTF is what the network otherwise learns per sensor, and an unseen sensor brings its own), on a coarser
    ground grid (an unseen sensor's pixels cover another size of roofs, fields and streets), or with a PAN of
    another spectral response (which bands the PAN follows is the other thing a sensor fixes)."""

    mtf_copies: int = 0  # extra copies of each training pair, its reference re-degraded (0: off, the default)
    mtf_spread: float = 0.0  # each copy's MS Nyquist gains = the sensor's × exp(±spread), drawn per band
    coarse_copies: int = 0  # extra copies of each pair on a 2×, 4×, … coarser grid (datasets.coarsened; 0: off)
    pan_copies: int = 0  # extra copies of each pair whose PAN follows other bands (datasets.respectral; 0: off)
    pan_mix: float = 0.0  # share of such a copy's PAN made of the reference's bands (the rest: its real PAN)
    pan_tilt: float = 0.0  # each copy's band weights are exp(±tilt), drawn per band

    def check(self) -> list[tuple[str, str]]:
        out = [(k, "must be >= 0") for k in ("mtf_copies", "coarse_copies", "pan_copies") if getattr(self, k) < 0]
        return out + [(k, f"must be in [0, {hi:g}]") for k, hi in (("mtf_spread", 1), ("pan_mix", 1), ("pan_tilt", 3))
                      if not 0.0 <= getattr(self, k) <= hi]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data and bookkeeping of one training run."""

    family: DataFamily = DataFamily.FOUR_BAND  # training data band layout (ddrf_runtime.evaluation.datasets family)
    weighting: Weighting = Weighting.SENSOR  # pair sampling: balance sensors (the pool is mostly Landsat-7)
    patch: int = 64  # side of a training crop in HRMS pixels (a multiple of the model's size_multiple)
    batch: int = 8  # crops per step
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    iterations: int = 20000  # optimiser steps of the whole run
    warmup: int = 200  # linear lr warm-up steps
    lr_decay_every: int = 8000  # step decay period (0 = no decay)
    lr_decay_factor: float = 0.5  # lr multiplier per decay period
    grad_clip: float = 1.0  # max global gradient L2 norm (0 = off)
    sam_weight: float = 0.0  # weight of the fused image's spectral angle to the reference added to the L1 loss
    value_scale: ValueScale = ValueScale.BIT_DEPTH  # network units of a pair: DN ÷ full scale, or (SCENE_MEAN) ÷ the
    # pair's mean MS over the family's reference_mean — the runtime's two ``ValueScale`` modes
    ema_decay: float = 0.995  # EMA decay of the exported weights
    ema_warmup: int = 500  # steps before EMA starts averaging (until then it copies the weights)
    val_every: int = 1000  # validate (and maybe write best.pt) every N steps (0 = never)
    val_crops: int = 8  # validation crops (fixed, one per val pair in turn)
    val_size: int = 128  # side of a validation crop in HRMS pixels
    val_steps: int = 1  # sampling steps used for validation
    log_every: int = 100  # append the mean loss and speed to log.jsonl every N steps
    ckpt_every: int = 500  # write last.pt every N steps (and at the end / on SIGINT, SIGTERM)
    seed: int = 0  # seeds numpy (crops), torch (noise, t, init) and python RNGs
    out_dir: str = "runs/default"  # checkpoints and logs go here
    init: str = ""  # start from this checkpoint's EMA weights (same [model]; fine-tuning); "" = random init
    threads: int = 0  # torch intra-op threads (0 = leave torch's default)
    device: str = "cpu"  # torch device for the model and batches ("cpu", "cuda"); data and RNGs stay on the CPU

    def check(self) -> list[tuple[str, str]]:
        out = []
        for name in ("patch", "batch", "iterations", "val_crops", "val_size", "val_steps", "log_every"):
            if getattr(self, name) < 1:
                out.append((name, "must be >= 1"))
        for name in ("warmup", "lr_decay_every", "ema_warmup", "val_every", "ckpt_every", "threads", "seed"):
            if getattr(self, name) < 0:
                out.append((name, "must be >= 0"))
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            out.append(("device", f"must be 'cpu' or 'cuda[:N]', got {self.device!r}"))
        if self.lr <= 0:
            out.append(("lr", "must be > 0"))
        for name in ("weight_decay", "grad_clip", "sam_weight"):
            if getattr(self, name) < 0:
                out.append((name, "must be >= 0"))
        if not 0.0 < self.lr_decay_factor <= 1.0:
            out.append(("lr_decay_factor", "must be in (0, 1]"))
        if not 0.0 <= self.ema_decay < 1.0:
            out.append(("ema_decay", "must be in [0, 1)"))
        if self.value_scale is ValueScale.AUTO:
            out.append(("value_scale", "must be bit_depth or scene_mean (training pairs state their bit depth)"))
        elif self.value_scale is ValueScale.SCENE_MEAN and not self.family.layout.reference_mean:
            out.append(("value_scale", f"family {self.family.value} has no reference_mean for scene_mean"))
        return out

    @property
    def reference_mean(self) -> float:
        """The brightness pairs are normalised to (``NormPair``); 0 for bit-depth scaling."""
        return self.family.layout.reference_mean if self.value_scale is ValueScale.SCENE_MEAN else 0.0


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run (and a checkpoint) needs."""

    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: RadiometricConfig = field(default_factory=RadiometricConfig)
    degrade: DegradationConfig = field(default_factory=DegradationConfig)

    def validate(self, path: str | None = None) -> "ExperimentConfig":
        problems = [(f"model.{k}", m) for k, m in self.model.check()]
        problems += [(f"diffusion.{k}", m) for k, m in self.diffusion.check()]
        problems += [(f"train.{k}", m) for k, m in self.train.check()]
        problems += [(f"augment.{k}", m) for k, m in self.augment.check()]
        problems += [(f"degrade.{k}", m) for k, m in self.degrade.check()]
        family = self.train.family
        for key, want in (("bands", family.bands), ("guide_bands", family.layout.guide_bands)):
            if getattr(self.model, key) != want:
                problems.append((f"model.{key}", f"{getattr(self.model, key)} disagrees with train.family "
                                                 f"{family.value!r} ({want})"))
        for key in ("patch", "val_size"):
            if getattr(self.train, key) % self.model.size_multiple:
                problems.append((f"train.{key}", f"must be a multiple of size_multiple {self.model.size_multiple}"))
        if self.diffusion.base is not Base.UPSAMPLED and self.model.guide_bands != 1:
            problems.append(("diffusion.base", f"{self.diffusion.base.value!r} needs a one-band PAN guide, "
                                               f"not {self.model.guide_bands} guide bands"))
        if self.train.val_steps > self.diffusion.timesteps:
            problems.append(("train.val_steps", f"must be <= diffusion.timesteps {self.diffusion.timesteps}"))
        if problems:
            key, msg = problems[0]
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise ConfigError(f"{key}: {msg}{more}", path)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (enums as their values, tuples as lists): TOML-, JSON- and torch.load-safe."""
        def plain(v: Any) -> Any:
            if isinstance(v, enum.Enum):
                return v.value
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | None = None) -> "ExperimentConfig":
        """Parse the ``to_dict`` / TOML form; ``[model] preset = "small"`` picks a preset to override."""
        unknown = set(d) - {"model", "diffusion", "train", "augment", "degrade"}
        if unknown:
            raise ConfigError(f"unknown section(s) {sorted(unknown)}", path)
        train = _build(TrainConfig(), d.get("train", {}), "train", path)
        model_d = dict(d.get("model", {}))
        preset = model_d.pop("preset", "reference")
        if preset not in UNET_PRESETS:
            raise ConfigError(f"model.preset: unknown preset {preset!r} (one of {sorted(UNET_PRESETS)})", path)
        base = dataclasses.replace(UNET_PRESETS[preset], bands=train.family.bands,
                                   guide_bands=train.family.layout.guide_bands)
        model = _build(base, model_d, "model", path)
        diffusion = _build(DiffusionConfig(), d.get("diffusion", {}), "diffusion", path)
        augment = _build(RadiometricConfig(), d.get("augment", {}), "augment", path)
        degrade = _build(DegradationConfig(), d.get("degrade", {}), "degrade", path)
        return cls(model=model, diffusion=diffusion, train=train, augment=augment, degrade=degrade).validate(path)


def _build(base: Any, values: Mapping[str, Any], section: str, path: str | None) -> Any:
    """``base`` with ``values`` replaced, each coerced to its field's annotated type or a ConfigError."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}: must be a table", path)
    hints = typing.get_type_hints(type(base))
    names = {f.name for f in fields(base)}
    kw = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{section}.{key}: unknown key (known: {', '.join(sorted(names))})", path)
        try:
            kw[key] = _coerce(value, hints[key])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{section}.{key}: {e}", path) from None
    return dataclasses.replace(base, **kw)


def _coerce(value: Any, tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0]) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp}")  # pragma: no cover - all field types are listed above


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment file."""
    p = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found", p) from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config ({e})", p) from None
    return ExperimentConfig.from_dict(data, p)
