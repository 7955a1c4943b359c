"""The self-description every exported model carries (ONNX ``metadata_props["ddrf"]``, JSON).

The runtime reads all it needs from here — bands, ratio, scaling, schedule, steps — so an
``.onnx`` file is the whole deployable artifact, with no side files.
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .errors import ModelError
from .schedule import ScheduleKind, alphas_cumprod
from .target import TargetSpec

METADATA_KEY = "ddrf"
FORMAT_VERSION = 1


class ValueScale(str, enum.Enum):
    """How a scene's digital numbers become the network's input units."""

    BIT_DEPTH = "bit_depth"  # DN ÷ (2**bit_depth − 1): the network sees the scene as bright as the raster says
    SCENE_MEAN = "scene_mean"  # DN ÷ (scene MS mean ÷ reference_mean): every scene as bright as the training median
    AUTO = "auto"  # BIT_DEPTH for a stated bit depth (option, NBITS, uint8) or a guessed one that makes the scene
    # as bright as a training scene (``brightness_range``); SCENE_MEAN for any other guess


class Objective(str, enum.Enum):
    """What the network predicts."""

    X0 = "x0"
    EPS = "eps"
    V = "v"


@dataclass(frozen=True)
class ModelSpec:
    bands: tuple[str, ...]  # canonical names of the C fused bands, in channel order (B, G, R, NIR, ...)
    guide_bands: int  # k: guide channels (1 = PAN, >1 = an MS/RGB guide for hyperspectral fusion)
    ratio: int  # guide/MS ground-sample-distance ratio the model was trained for
    size_multiple: int  # height/width of a tile must be a multiple of this (UNet stride × DWT)
    timesteps: int  # T of the training schedule
    schedule: ScheduleKind = ScheduleKind.COSINE  # ᾱ_t family
    schedule_offset: float = 0.008  # cosine-schedule s
    objective: Objective = Objective.X0  # network output kind
    target: TargetSpec = field(default_factory=TargetSpec)  # x0 <-> fused image mapping
    default_steps: int = 1  # sampling steps chosen by the steps-vs-quality benchmark
    value_scale: ValueScale = ValueScale.BIT_DEPTH  # default input scaling (``FuseOptions.value_scale`` overrides)
    reference_mean: float = 0.0  # mean MS (full-scale units) of the median training pair; 0: SCENE_MEAN unsupported
    brightness_range: tuple[float, float] = (0.0, 1.0)  # mean MS (full-scale units) of the darkest and brightest pair
    default_bit_depth: int = 11  # used when the raster says nothing about its bit depth
    opset: int = 23  # ONNX opset of the graph
    checkpoint_sha256: str = ""  # sha256 of the .pt the graph was exported from
    training_data: str = ""  # one-line summary of the training scenes
    format_version: int = FORMAT_VERSION  # bumped on incompatible changes

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    def alphas_cumprod(self) -> np.ndarray:
        return alphas_cumprod(self.schedule, self.timesteps, self.schedule_offset)

    def to_json(self) -> str:
        d = asdict(self)
        d["schedule"] = self.schedule.value
        d["objective"] = self.objective.value
        d["value_scale"] = self.value_scale.value
        d["target"]["base"] = self.target.base.value
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: str | None = None) -> "ModelSpec":
        """Parse and validate; every problem is a ModelError naming ``path``."""
        try:
            d = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ModelError(f"model metadata is not valid JSON ({e})", path) from None
        if not isinstance(d, dict):
            raise ModelError("model metadata is not a JSON object", path)
        if d.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"model metadata format {d.get('format_version')!r} is not supported (expected {FORMAT_VERSION}); "
                "re-export the model with this version", path)
        known = {f.name for f in fields(cls)}
        missing = {"bands", "guide_bands", "ratio", "size_multiple", "timesteps"} - d.keys()
        if missing:
            raise ModelError(f"model metadata lacks {sorted(missing)}", path)
        try:
            kw = {k: v for k, v in d.items() if k in known}
            kw["bands"] = tuple(str(b) for b in kw["bands"])
            kw["schedule"] = ScheduleKind(kw.get("schedule", "cosine"))
            kw["objective"] = Objective(kw.get("objective", "x0"))
            kw["value_scale"] = ValueScale(kw.get("value_scale", "bit_depth"))
            kw["brightness_range"] = tuple(float(v) for v in kw.get("brightness_range", (0.0, 1.0)))
            kw["target"] = TargetSpec(**kw.get("target", {}))
            spec = cls(**kw)
        except (TypeError, ValueError) as e:
            raise ModelError(f"model metadata is invalid ({e})", path) from None
        spec.validate(path)
        return spec

    def validate(self, path: str | None = None) -> None:
        problems = []
        if not self.bands:
            problems.append("no bands")
        for name in ("guide_bands", "ratio", "size_multiple", "timesteps", "default_bit_depth"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} must be a positive integer")
        if not problems and not 1 <= self.default_steps <= self.timesteps:
            problems.append(f"default_steps {self.default_steps} not in 1..{self.timesteps}")
        if not 0.0 <= self.target.gain_pooling <= 1.0:
            problems.append(f"target.gain_pooling {self.target.gain_pooling} not in [0, 1]")
        lo, hi = self.brightness_range if len(self.brightness_range) == 2 else (1.0, 0.0)
        if not 0.0 <= lo <= hi <= 1.0:
            problems.append(f"brightness_range {list(self.brightness_range)} is not two values 0 <= low <= high <= 1")
        if not 0.0 <= self.reference_mean <= 1.0:
            problems.append(f"reference_mean {self.reference_mean} not in [0, 1]")
        elif self.value_scale is not ValueScale.BIT_DEPTH and self.reference_mean == 0.0:
            problems.append(f"value_scale {self.value_scale.value} needs a reference_mean")
        if problems:
            raise ModelError("model metadata is invalid: " + "; ".join(problems), path)
