"""Checkpoints: atomic, self-describing, and loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors, numbers, strings, lists and dicts: model and EMA state dicts, the
optimiser state, the step, the experiment config as a plain dict, and every RNG state the training
loop draws from, so ``--resume`` continues bit-identically and no pickled code is ever executed.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddrf_runtime.errors import ConfigError, ModelError

from .config import ExperimentConfig
from .diffusion import Denoiser, build_denoiser

FORMAT = 1
_REQUIRED = ("format", "step", "config", "model", "ema")


def rng_state(np_rng: np.random.Generator, generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the loop uses (plus the global ones, for completeness), in weights_only-safe form."""
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch_generator": generator.get_state(),
        "numpy": np_rng.bit_generator.state,  # dict of str / int (PCG64's 128-bit ints pickle fine)
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss},
    }


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["torch_generator"])
    np_rng.bit_generator.state = state["numpy"]
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def save_checkpoint(path: str | Path, *, config: ExperimentConfig, model: Denoiser, ema: Denoiser,
                    step: int, optimizer: torch.optim.Optimizer | None = None,
                    rng: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write atomically: a temporary file in the same directory, then ``os.replace``.

    A crash mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "step": int(step),
        "config": config.to_dict(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng,
        "extra": extra or {},
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """The raw payload and its validated config; ModelError / ConfigError name the file."""
    p = str(path)
    if not Path(path).is_file():
        raise ModelError("checkpoint not found", p)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (zip, pickle, EOF, Runtime) for a damaged file
        raise ModelError(f"cannot read checkpoint ({type(e).__name__}: {e})", p) from None
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        raise ModelError(f"not a ddrf checkpoint (needs keys {list(_REQUIRED)})", p)
    if payload["format"] != FORMAT:
        raise ModelError(f"checkpoint format {payload['format']!r} is not supported (expected {FORMAT})", p)
    try:
        config = ExperimentConfig.from_dict(payload["config"], p)
    except (TypeError, AttributeError) as e:
        raise ConfigError(f"stored config is malformed ({e})", p) from None
    return payload, config


def load_denoiser(path: str | Path, use_ema: bool = True) -> tuple[Denoiser, ExperimentConfig, dict[str, Any]]:
    """Rebuild the model from the stored config and load its (EMA by default) weights, in eval mode."""
    payload, config = read_checkpoint(path)
    model = build_denoiser(config)
    try:
        model.load_state_dict(payload["ema" if use_ema else "model"])
    except RuntimeError as e:
        raise ModelError(f"weights do not match the stored config ({e})", str(path)) from None
    return model.eval(), config, payload


def release(src: str | Path, dst: str | Path) -> None:
    """Write the deployable copy of a training checkpoint: EMA weights only, no optimizer or RNG state.

    The EMA weights fill both weight slots (saved once: the tensors are shared), so the file loads
    everywhere a training checkpoint does and is about a third of its size.
    """
    ema, config, payload = load_denoiser(src, use_ema=True)
    save_checkpoint(dst, config=config, model=ema, ema=ema, step=payload["step"],
                    extra={**payload["extra"], "released_from": Path(src).name})


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ddrf_train.checkpoint",
                                     description="Write the EMA-only release copy of a training checkpoint.")
    parser.add_argument("src", help="training checkpoint (e.g. runs/x/best.pt)")
    parser.add_argument("dst", help="release checkpoint to write (e.g. models/ddrf_4band.pt)")
    args = parser.parse_args()
    try:
        release(args.src, args.dst)
    except (ModelError, ConfigError) as e:
        sys.exit(f"{parser.prog}: error: {e}")
