"""The ModelSpec of a checkpoint: built in ONE place for the ONNX export and the torch backend.

Both describe the same network, so ``ddrf-run --backend torch`` and the exported graph must present
identical metadata (bands, ratio, schedule, target scaling, defaults), checksum included.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from ddrf_runtime.evaluation.splits import split_regions
from ddrf_runtime.model_spec import ModelSpec, ValueScale

from .config import ExperimentConfig

DEFAULT_OPSET = 23


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_summary(config: ExperimentConfig, step: int) -> str:
    """One line: which split, which scenes (FuseBox scenes counted, other regions by label), how sampled."""
    family, t = config.train.family.value, config.train
    regions = split_regions(family, "train")
    counts = Counter("fusebox" if r.scene.startswith("fusebox_") else r.label for r in regions)
    scenes = ", ".join(f"{name} ×{n}" if name == "fusebox" else name for name, n in counts.items())
    return (f"{family} train split, {len(regions)} Wald pairs at ratio {t.family.layout.ratio} ({scenes}); "
            f"{t.weighting.value}-weighted {t.patch}² crops, batch {t.batch}, step {step}")


def build_spec(config: ExperimentConfig, payload: Mapping[str, Any], checkpoint: str | Path,
               default_steps: int = 1, opset: int = DEFAULT_OPSET) -> ModelSpec:
    """The spec of a checkpoint read by ``read_checkpoint`` (``payload``, ``config``) from ``checkpoint``.

    Bands (channel order), ratio, default bit depth, reference brightness and range, and default input scaling
    are the training family's (``ddrf_runtime.bands.FAMILIES``). ``objective`` is always x0: ``Denoiser.forward``
    converts eps/v outputs in the graph itself. Raises ModelError (naming ``checkpoint``) when ``default_steps``
    is outside 1..T.
    """
    d, layout = config.diffusion, config.train.family.layout
    spec = ModelSpec(
        bands=layout.bands,
        guide_bands=config.model.guide_bands,
        ratio=layout.ratio,
        size_multiple=config.model.size_multiple,
        timesteps=d.timesteps,
        schedule=d.schedule,
        schedule_offset=d.schedule_offset,
        target=d.target,
        default_steps=default_steps,
        default_bit_depth=layout.bit_depth,
        value_scale=ValueScale(layout.value_scale),
        reference_mean=layout.reference_mean,
        brightness_range=layout.brightness_range,
        opset=opset,
        checkpoint_sha256=file_sha256(checkpoint),
        training_data=training_summary(config, int(payload["step"])),
    )
    spec.validate(str(checkpoint))
    return spec
