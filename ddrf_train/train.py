"""Train a DDRF denoiser:
``python -m ddrf_train.train --config configs/x.toml [--resume] [--out DIR] [--iterations N] [--device cuda]
[--init CKPT] [--pairs PACKED.npz]`` (packed pairs: ``ddrf_train.packed``, for a machine without the data).

Writes to the run directory: ``last.pt`` (every ``ckpt_every`` steps, at the end and on
SIGINT/SIGTERM), ``best.pt`` (best validation ERGAS of the EMA model), ``config.json`` and
``log.jsonl`` (one JSON object per log/validation event). ``--resume`` restores weights, EMA,
optimiser, step and every RNG from ``last.pt``, so an interrupted run continues bit-identically.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ddrf_runtime.evaluation.datasets import Pair, reduced_resolution_split
from ddrf_runtime.errors import ConfigError, DdrfError
from ddrf_runtime.evaluation.metrics import ergas, sam

from . import packed as packed_pairs
from .checkpoint import read_checkpoint, restore_rng, rng_state, save_checkpoint
from .config import ExperimentConfig, load_config
from .diffusion import EMA, build_denoiser, sample, training_loss
from .model import count_parameters
from .patches import PatchSampler, make_batch, validation_crops


class Trainer:
    """All state of one run; ``run`` trains to ``cfg.train.iterations`` from wherever ``step`` is."""

    def __init__(self, cfg: ExperimentConfig, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair]) -> None:
        tc = cfg.train
        self.cfg = cfg
        self.out = Path(tc.out_dir)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        random.seed(tc.seed)
        torch.manual_seed(tc.seed)  # model initialisation
        self.np_rng = np.random.default_rng(tc.seed)  # crops and augmentation
        self.generator = torch.Generator().manual_seed(tc.seed + 1)  # t, noise, self-conditioning coin
        self.device = torch.device(tc.device)
        self.model = build_denoiser(cfg).to(self.device)
        if tc.init:
            self._init_weights(Path(tc.init))
        self.ema = EMA(self.model, tc.ema_decay, tc.ema_warmup)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.sampler = PatchSampler(train_pairs, tc.patch, tc.batch, tc.weighting, cfg.diffusion.target,
                                    self.np_rng, cfg.augment, cfg.degrade, tc.reference_mean)
        self.val_crops = validation_crops(val_pairs, tc.val_crops, tc.val_size, cfg.diffusion.target,
                                          tc.reference_mean)
        self.step = 0
        self.best_ergas = math.inf

    # ----------------------------------------------------------------------------------- state
    def save(self, name: str) -> Path:
        path = self.out / name
        save_checkpoint(path, config=self.cfg, model=self.model, ema=self.ema.model, step=self.step,
                        optimizer=self.optimizer, rng=rng_state(self.np_rng, self.generator),
                        extra={"best_ergas": self.best_ergas})
        return path

    def _init_weights(self, path: Path) -> None:
        """Fine-tuning: the network starts from ``path``'s EMA weights; optimiser, step and RNGs start fresh."""
        payload, stored = read_checkpoint(path)
        if stored.to_dict()["model"] != self.cfg.to_dict()["model"]:
            raise ConfigError("[model] differs from the config's; cannot initialise from it", str(path))
        self.model.load_state_dict(payload["ema"])

    def resume(self, path: Path) -> None:
        """Restore everything from a checkpoint of a run with the same model and diffusion settings."""
        payload, stored = read_checkpoint(path)
        for section in ("model", "diffusion"):
            if stored.to_dict()[section] != self.cfg.to_dict()[section]:
                raise ConfigError(f"[{section}] differs from the checkpoint's; cannot resume", str(path))
        if payload["optimizer"] is None or payload["rng"] is None:
            raise ConfigError("checkpoint has no optimiser/RNG state (not a training checkpoint)", str(path))
        self.model.load_state_dict(payload["model"])  # load_state_dict copies onto the model's device
        self.ema.model.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        restore_rng(payload["rng"], self.np_rng, self.generator)
        self.step = payload["step"]
        self.best_ergas = float(payload["extra"].get("best_ergas", math.inf))

    # ----------------------------------------------------------------------------------- steps
    def lr_at(self, step: int) -> float:
        """Linear warm-up, then step decay (0-based ``step`` of the update about to happen)."""
        tc = self.cfg.train
        warm = min(1.0, (step + 1) / tc.warmup) if tc.warmup else 1.0
        decay = tc.lr_decay_factor ** (step // tc.lr_decay_every) if tc.lr_decay_every else 1.0
        return tc.lr * warm * decay

    def train_step(self) -> float:
        batch = self.sampler.next().to(self.device)
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = training_loss(self.model, batch.x0, batch.cond, batch.wav, self.generator, batch.base,
                             self.cfg.train.sam_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.model, self.step)
        return float(loss.item())

    def validate(self) -> dict[str, float]:
        """Mean SAM / ERGAS (DN units, clipped like the runtime output) of the EMA model on fixed crops.

        Uses its own fixed noise, so validating never perturbs the training RNG streams.
        """
        crops = self.val_crops
        parts = [c.scene.crop(c.top, c.left, self.cfg.train.val_size) for c in crops]
        batch = make_batch(*(np.stack(p) for p in zip(*parts)), self.cfg.diffusion.target)
        noise = torch.randn(batch.lms.shape, generator=torch.Generator().manual_seed(0))
        dev = batch.to(self.device)
        fused_n = sample(self.ema.model, dev.lms, dev.pan, self.cfg.train.val_steps,
                         noise=noise.to(self.device), base=dev.base).cpu()
        sams, ergases, exp_ergases = [], [], []
        for i, crop in enumerate(crops):
            s = crop.scene.unit
            gt = _hwc(batch.gt[i]) * s
            fused = np.clip(_hwc(fused_n[i]) * s, 0.0, crop.scene.full_scale)
            sams.append(sam(gt, fused))
            ergases.append(ergas(gt, fused, crop.scene.ratio))
            exp_ergases.append(ergas(gt, _hwc(batch.lms[i]) * s, crop.scene.ratio))
        return {"val_sam": float(np.mean(sams)), "val_ergas": float(np.mean(ergases)),
                "val_ergas_lms": float(np.mean(exp_ergases))}

    # ----------------------------------------------------------------------------------- loop
    def run(self, progress: bool = True) -> dict[str, Any]:
        """Train until ``iterations``; stops early (after saving last.pt) on SIGINT/SIGTERM."""
        tc = self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        stop = threading.Event()
        previous = _install_stop_handlers(stop)
        log = (self.out / "log.jsonl").open("a")
        losses: list[float] = []
        last: dict[str, Any] = {}  # the latest logged record, returned as the summary
        bar = tqdm(total=tc.iterations, initial=self.step, disable=not progress, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        t0 = time.perf_counter()
        try:
            _log(log, {"event": "start", "step": self.step,
                       "parameters": count_parameters(self.model), "threads": torch.get_num_threads()})
            while self.step < tc.iterations and not stop.is_set():
                losses.append(self.train_step())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{self.lr_at(self.step - 1):.2e}",
                                refresh=False)
                record = {}
                if self.step % tc.log_every == 0 or self.step == tc.iterations:
                    record = {"loss": float(np.mean(losses)), "lr": self.lr_at(self.step - 1),
                              "it_per_s": len(losses) / (time.perf_counter() - t0)}
                    losses, t0 = [], time.perf_counter()
                if tc.val_every and self.val_crops and self.step % tc.val_every == 0:
                    record.update(self.validate())
                    if record["val_ergas"] < self.best_ergas:
                        self.best_ergas = record["val_ergas"]
                        self.save("best.pt")
                        record["best"] = True
                    bar.write(f"step {self.step}: SAM {record['val_sam']:.3f}  ERGAS {record['val_ergas']:.3f} "
                              f"(lms ERGAS {record['val_ergas_lms']:.3f})")
                if record:
                    last = {"step": self.step, **record}
                    _log(log, last)
                if tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self.save("last.pt")
            self.save("last.pt")
            _log(log, {"event": "stopped" if stop.is_set() else "done", "step": self.step})
        finally:
            bar.close()
            log.close()
            _restore_handlers(previous)
        return {**last, "step": self.step, "interrupted": stop.is_set(), "best_ergas": self.best_ergas}


def _pairs(family: str, packed_path: str | None) -> tuple[list[Pair], list[Pair]]:
    """The family's training and validation pairs: read from the data, or from a packed file."""
    if packed_path is None:
        return reduced_resolution_split(family, "train"), reduced_resolution_split(family, "val")
    packed = packed_pairs.load(packed_path)
    if packed.family != family:
        raise ConfigError(f"holds {packed.family!r} pairs, the config trains {family!r}", packed_path)
    return packed.train, packed.val


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(np.float64)  # (H, W, C)


def _log(f: Any, record: dict[str, Any]) -> None:
    f.write(json.dumps({"time": time.time(), **record}) + "\n")
    f.flush()


def _install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set ``stop``; the loop finishes its step and saves. Main thread only (Python rule)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddrf_train.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiment TOML (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--out", help="run directory (overrides train.out_dir)")
    parser.add_argument("--iterations", type=int, help="total steps (overrides train.iterations)")
    parser.add_argument("--device", help="torch device, cpu or cuda[:N] (overrides train.device)")
    parser.add_argument("--init", help="start from this checkpoint's EMA weights (overrides train.init)")
    parser.add_argument("--pairs", help="train on packed pairs (python -m ddrf_train.packed), not the data's splits")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log.jsonl still written)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        overrides = {k: v for k, v in (("out_dir", args.out), ("iterations", args.iterations),
                                       ("device", args.device), ("init", args.init)) if v is not None}
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides)).validate(args.config)
        family = cfg.train.family.value
        trainer = Trainer(cfg, *_pairs(family, args.pairs))
        if not trainer.val_crops:
            print(f"note: family {family!r} has no validation pairs; best.pt will not be written", file=sys.stderr)
        if args.resume:
            trainer.resume(trainer.out / "last.pt")
        print(f"{count_parameters(trainer.model):,} parameters; step {trainer.step} of {cfg.train.iterations}; "
              f"writing {trainer.out}", file=sys.stderr)
        summary = trainer.run(progress=not args.no_progress)
    except DdrfError as e:
        print(f"ddrf-train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
