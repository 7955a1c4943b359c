"""Ablation of the DDRF design at an equal training budget, scored on the 4-band test split.

    python -m benchmarks.ablation [--iterations 1500] [--patch 48] [--runs runs/ablation] [--threads 1]
                                  [--seed 0] [--variants ddrf regressor ...]

Each variant is ``configs/small_4band.toml`` with one switch flipped, trained from the same seed for the
same number of optimiser steps on the same crops (``--runs``/<variant>/last.pt; an interrupted variant
resumes, a finished one is reused). Every variant's EMA weights then fuse the Wald pairs of
``reduced_resolution_split("4band", "test")`` through the runtime pipeline (PyTorch backend, seed 0) at
1 and 10 DDIM steps; the regressor has no steps, so it is scored once. Scores are cached in each run
directory, so adding a variant costs only its own training and scoring. ``--seed`` repeats the study with
another training seed (run directories ``<runs>_seed<N>``, results ``ablation_seed<N>``) to see how far rows move.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import torch

from ddrf_runtime.evaluation import datasets
from ddrf_runtime.model_spec import Objective
from ddrf_train.backend import TorchDenoiser
from ddrf_train.checkpoint import read_checkpoint
from ddrf_train.config import ExperimentConfig, Formulation, load_config
from ddrf_train.train import Trainer

from ._report import environment, environment_lines, markdown_table, run_and_write, say
from .steps import score

NAME = "ablation"
BASE_CONFIG = Path("configs/small_4band.toml")
EVAL_STEPS = (1, 10)


@dataclass(frozen=True)
class Variant:
    name: str  # run directory and table row
    change: str  # what differs from DDRF, for the table
    edit: Callable[[ExperimentConfig], ExperimentConfig]  # base config → this variant's config


def _diffusion(**kw: object) -> Callable[[ExperimentConfig], ExperimentConfig]:
    return lambda c: dataclasses.replace(c, diffusion=dataclasses.replace(c.diffusion, **kw))


VARIANTS = (
    Variant("ddrf", "none (residual target, x0 objective, wavelet modulation, diffusion)", lambda c: c),
    Variant("no_residual", "target is the HRMS itself, not HRMS − upsampled MS", _diffusion(residual=False)),
    Variant("eps", "network predicts the noise ε instead of x0", _diffusion(objective=Objective.EPS)),
    Variant("no_wavelet", "decoder blocks without the wavelet cross-attention",
            lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, wavelet_modulation=False))),
    Variant("regressor", "no diffusion: x_t = 0 and a fixed t, trained as a direct residual regressor",
            _diffusion(formulation=Formulation.REGRESSION)),
    Variant("ddrf_t_last", "diffusion trained only at t = T−1, the one timestep the 1-step sampler uses",
            _diffusion(last_t_prob=1.0)),
)


def variant_config(base: ExperimentConfig, variant: Variant, args: argparse.Namespace) -> ExperimentConfig:
    """The variant at the ablation budget: its own run directory, validation only at the end."""
    train = dataclasses.replace(base.train, iterations=args.iterations, patch=args.patch, threads=args.threads,
                                out_dir=str(_runs_dir(args) / variant.name), val_every=args.iterations, seed=args.seed,
                                warmup=min(base.train.warmup, args.iterations // 5),
                                ema_warmup=min(base.train.ema_warmup, args.iterations // 2))
    return variant.edit(dataclasses.replace(base, train=train)).validate(variant.name)


def train_variant(cfg: ExperimentConfig, train_pairs: list[datasets.Pair], val_pairs: list[datasets.Pair]) -> Path:
    """Train (or resume, or reuse) one variant; returns its last.pt."""
    trainer = Trainer(cfg, train_pairs, val_pairs)
    last = trainer.out / "last.pt"
    if last.exists():
        trainer.resume(last)
    if trainer.step < cfg.train.iterations:
        trainer.run(progress=False)
    return last


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "torch", "onnxruntime", "numba"))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    base = load_config(BASE_CONFIG)
    train_pairs = datasets.reduced_resolution_split("4band", "train")
    val_pairs = datasets.reduced_resolution_split("4band", "val")
    test_pairs = datasets.reduced_resolution_split("4band", "test")
    rows = []
    for variant in (v for v in VARIANTS if v.name in args.variants):
        cfg = variant_config(base, variant, args)
        last = train_variant(cfg, train_pairs, val_pairs)
        payload, _ = read_checkpoint(last)
        steps = (1,) if cfg.diffusion.formulation is Formulation.REGRESSION else EVAL_STEPS
        scores = _scores(last, payload["step"], steps, test_pairs, args.threads)
        for s in scores:
            say(NAME, f"{variant.name} @ {s['steps']} steps: ERGAS {s['ERGAS']:.3f}, SAM {s['SAM']:.3f}")
        rows.append({"variant": variant.name, "change": variant.change, "step": payload["step"],
                     "train_seconds": _train_seconds(Path(cfg.train.out_dir) / "log.jsonl"), "scores": scores})
    return {**env, "iterations": args.iterations, "patch": args.patch, "batch": base.train.batch,
            "threads": args.threads, "seed": args.seed, "base_config": str(BASE_CONFIG),
            "pairs": [p.name for p in test_pairs],
            "rows": rows}


def _runs_dir(args: argparse.Namespace) -> Path:
    return args.runs if args.seed == 0 else args.runs.with_name(f"{args.runs.name}_seed{args.seed}")


def _scores(last: Path, step: int, steps: tuple[int, ...], pairs: list[datasets.Pair], threads: int) -> list[dict]:
    """Test-split scores of a checkpoint, cached next to it (keyed by its step and the sampling steps)."""
    cache = last.with_name("scores.json")
    key = {"step": step, "steps": list(steps), "pairs": [p.name for p in pairs]}
    if cache.exists() and (cached := json.loads(cache.read_text()))["key"] == key:
        return cached["scores"]
    denoiser = TorchDenoiser(last, "cpu", threads)
    scores = [score(denoiser, pairs, s) for s in steps]
    cache.write_text(json.dumps({"key": key, "scores": scores}))
    return scores


def _train_seconds(log: Path) -> float:
    """Wall time spent training: start→done/stopped intervals of the run's log (restarts add up)."""
    seconds, start = 0.0, None
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "start":
            start = record["time"]
        elif record.get("event") in ("done", "stopped") and start is not None:
            seconds, start = seconds + record["time"] - start, None
    return seconds


def to_markdown(r: dict) -> str:
    lines = ["# Ablation at an equal training budget (4-band test split, Wald protocol)", "",
             *environment_lines(r),
             f"- budget: {r['iterations']} steps × batch {r['batch']} × {r['patch']}² crops per variant, "
             f"{r['threads']} thread(s), training seed {r['seed']} for all; base `{r['base_config']}` (small preset)",
             f"- test: {len(r['pairs'])} held-out pairs; EMA weights; runtime pipeline with the PyTorch backend, "
             "seed 0", ""]
    table = []
    for row in r["rows"]:
        for s in row["scores"]:
            table.append((row["variant"], row["change"], s["steps"], f"{s['ERGAS']:.3f}", f"{s['SAM']:.3f}",
                          f"{s['Q2n']:.4f}", f"{row['train_seconds'] / 60:.0f}"))
    lines += markdown_table(["variant", "change from DDRF", "steps", "ERGAS ↓", "SAM ° ↓", "Q2n ↑", "train min"],
                            table)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1500, help="optimiser steps per variant (default 1500)")
    ap.add_argument("--patch", type=int, default=48, help="training crop side (default 48)")
    ap.add_argument("--runs", type=Path, default=Path("runs/ablation"), help="run directories (default runs/ablation)")
    ap.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every variant (default 0)")
    ap.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS], default=[v.name for v in VARIANTS],
                    help="which variants (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_and_write(NAME if args.seed == 0 else f"{NAME}_seed{args.seed}", lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
