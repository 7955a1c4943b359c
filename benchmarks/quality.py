"""Fusion quality on the fixed test splits: reduced-resolution (Wald) and full-resolution metrics per method.

    python -m benchmarks.quality [--family 4band|8band|hs_ms|hs_pan|all] [--split test|unseen]
                                 [--methods EXP GSA ...] [--model M.onnx] [--out benchmarks/results]

Writes ``quality_<family>.md`` and ``.json`` (machine, versions, date, command) and prints the markdown;
``--split unseen`` scores a sensor that no training split holds (``quality_<family>_unseen``; 4-band only),
the case of a user whose sensor the model never saw.
Every method is a *fuser*: a callable taking a ``datasets.Pair`` (fuse ``ms_lr`` with ``pan``) or a
``datasets.FullRes`` (fuse ``ms`` with ``pan``) and returning the fused H×W×C image in DN. The classical
baselines are registered by default; ``--model`` adds an exported model as the "DDRF" row of every family
whose bands, guide bands and ratio it was trained for, fused by the runtime's ``fuse_arrays`` (default
tiling and steps, seed 0, CPU), and, for a model with a classical base, that base alone ("DDRF base (x0 = 0)").

Protocol: fused images are clipped to [0, full scale] (what a delivered product holds; the DDRF runtime
clips too), no border is cropped, metrics follow ``ddrf_runtime.evaluation.metrics`` (toolbox semantics).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ddrf_runtime import bands
from ddrf_runtime.evaluation import baselines, datasets, splits
from ddrf_runtime.backends import BaseOnly, DenoiserLike
from ddrf_runtime.flip_ensemble import FlipEnsemble
from ddrf_runtime.consistency import DEFAULT_PROJECTIONS
from ddrf_runtime.evaluation.metrics import full_resolution_metrics, reduced_resolution_metrics
from ddrf_runtime.model_spec import ValueScale
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.session import Denoiser
from ddrf_runtime.target import Base
from ddrf_runtime.trust import Trust

from ._report import RESULTS_DIR, environment, environment_lines, markdown_table, write_results

Sample = datasets.Pair | datasets.FullRes
Fuser = Callable[[Sample], np.ndarray]

REDUCED = ("SAM", "ERGAS", "Q2n", "SCC", "PSNR")
FULL = ("D_lambda", "D_s", "HQNR")
_DECIMALS = {"SAM": 3, "ERGAS": 3, "Q2n": 4, "SCC": 4, "PSNR": 2, "D_lambda": 4, "D_s": 4, "HQNR": 4}
_BETTER = {"SAM": "↓", "ERGAS": "↓", "Q2n": "↑", "SCC": "↑", "PSNR": "↑",
           "D_lambda": "↓", "D_s": "↓", "HQNR": "↑"}


def ms_to_fuse(sample: Sample) -> np.ndarray:
    """The image to fuse: the Wald-degraded MS of a Pair, the original MS of a FullRes."""
    return sample.ms_lr if isinstance(sample, datasets.Pair) else sample.ms


def classical_fuser(method: str) -> Fuser:
    """A baseline of ``ddrf_runtime.evaluation.baselines`` as a fuser."""
    def fuse(sample: Sample) -> np.ndarray:
        return baselines.fuse(method, ms_to_fuse(sample), sample.pan, sample.ratio, sample.sensor)
    return fuse


def model_fuser(denoiser: DenoiserLike, value_scale: ValueScale | None = None,
                trust: Trust = Trust.FITTED, projections: int = DEFAULT_PROJECTIONS) -> Fuser:
    """An exported model as a fuser: the runtime's ``fuse_arrays`` at the sample's bit depth, with the model's
    value scale or ``value_scale``, its correction weighted as ``trust`` says (``FuseOptions.trust``) and
    ``projections`` back-projection steps onto the MS (``FuseOptions.projections``)."""
    def fuse(sample: Sample) -> np.ndarray:
        options = FuseOptions(bit_depth=sample.bit_depth, value_scale=value_scale, trust=trust,
                              projections=projections)
        return fuse_arrays(ms_to_fuse(sample), sample.pan, denoiser, options)
    return fuse


def base_fuser(denoiser: DenoiserLike, projections: int = DEFAULT_PROJECTIONS) -> Fuser:
    """The model's base image alone (its classical detail injection with the scene's statistics), through the
    same runtime path: the network's contribution is the model row's difference from this one."""
    return model_fuser(BaseOnly(denoiser.spec), trust=Trust.FULL, projections=projections)


def fits(denoiser: Denoiser, family: str) -> bool:
    """Whether the model was trained for this family's bands, guide bands and ratio."""
    fam, spec = bands.FAMILIES[family], denoiser.spec
    return (spec.bands, spec.guide_bands, spec.ratio) == (fam.bands, fam.guide_bands, fam.ratio)


def default_methods() -> dict[str, Fuser]:
    return {m: classical_fuser(m) for m in baselines.METHODS}


def score_sample(fusers: Mapping[str, Fuser], sample: Sample) -> dict[str, dict[str, float]]:
    """Every method's metrics (and fusion seconds) on one sample."""
    rows = {}
    for name, fuse in fusers.items():
        t0 = time.perf_counter()
        fused = np.clip(fuse(sample), 0.0, sample.full_scale)
        seconds = time.perf_counter() - t0
        if isinstance(sample, datasets.Pair):
            row = reduced_resolution_metrics(sample.gt, fused, sample.ratio, sample.full_scale)
        else:
            row = full_resolution_metrics(fused, sample.lms, sample.pan, sample.sensor, sample.ratio)
        rows[name] = {**row, "fuse_s": seconds}
    return rows


def _summary(per_scene: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """method → metric → [mean, std] over scenes."""
    methods = next(iter(per_scene.values()), {})
    return {
        m: {k: [float(np.mean(v)), float(np.std(v))]
            for k in methods[m] for v in [[scene[m][k] for scene in per_scene.values()]]}
        for m in methods
    }


def evaluate(family: str, fusers: Mapping[str, Fuser], split: str = "test") -> dict:
    """All metrics of ``fusers`` on the family's reduced-resolution ``split`` and, for "test", its
    full-resolution test scenes."""
    reduced = {p.name: score_sample(fusers, p) for p in datasets.reduced_resolution_split(family, split)}
    full = {f.name: score_sample(fusers, f) for f in datasets.full_resolution_split(family)} if split == "test" else {}
    return {
        "family": family,
        "split": split,
        "ratio": bands.FAMILIES[family].ratio,
        "bands": len(bands.FAMILIES[family].bands),
        "guide_bands": bands.FAMILIES[family].guide_bands,
        "reduced": reduced,
        "reduced_mean": _summary(reduced),
        "full": full,
        "full_mean": _summary(full),
    }


def _table(rows: Mapping[str, Mapping[str, object]], metrics: tuple[str, ...]) -> list[str]:
    def cell(v: object, d: int) -> str:
        return f"{v[0]:.{d}f} ± {v[1]:.{d}f}" if isinstance(v, list) else f"{v:.{d}f}"
    head = ["method", *(f"{k} {_BETTER[k]}" for k in metrics)]
    return markdown_table(head, ([method, *(cell(row[k], _DECIMALS[k]) for k in metrics)]
                                 for method, row in rows.items()))


def to_markdown(res: Mapping, env: Mapping) -> str:
    out = [
        f"# Fusion quality, family {res['family']} ({res['bands']} bands, {res['guide_bands']}-band guide, "
        f"ratio {res['ratio']})", "",
        *environment_lines(env), "",
        "Reduced resolution: Wald protocol on the held-out " + ("test regions" if res["split"] == "test" else
        "scenes of a sensor absent from every training split") + " (reference = original MS). "
        + ("Full resolution: original data, no reference. " if res["full"] else "")
        + "Fused images clipped to [0, full scale]; no border crop.",
    ]
    if "model" in res:
        out += ["", f"DDRF: `{res['model']['path']}` ({res['model']['training_data']})."]
    for key, title, metrics in (("reduced", "Reduced resolution", REDUCED), ("full", "Full resolution", FULL)):
        if not res[key]:
            continue  # e.g. hs_ms: HS and MS share one grid, so there is no full-resolution pair
        out += ["", f"## {title}"]
        for scene, rows in res[key].items():
            out += ["", f"### {scene}", "", *_table(rows, metrics)]
        out += ["", f"### mean ± std over {len(res[key])} scenes", "", *_table(res[f"{key}_mean"], metrics)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=[*splits.SPLITS, "all"], default="all")
    ap.add_argument("--split", choices=["test", "unseen"], default="test",
                    help="test: the held-out regions of the training sensors (and full resolution); unseen: a "
                         "sensor no training split holds")
    ap.add_argument("--methods", nargs="+", choices=baselines.METHODS, default=list(baselines.METHODS))
    ap.add_argument("--model", type=Path, help="exported .onnx: a DDRF row for the families it fits")
    ap.add_argument("--flip-ensemble", action="store_true",
                    help="also a row with the model averaged over the 4 flips of every tile "
                         "(FuseOptions.flip_ensemble)")
    ap.add_argument("--also-value-scale", choices=[v.value for v in ValueScale],
                    help="also a row with the model under this input scaling (FuseOptions.value_scale)")
    ap.add_argument("--also-trust-full", action="store_true",
                    help="also a row with the network's correction in full (FuseOptions.trust full; the DDRF row "
                         "weights it by its fit one scale down)")
    ap.add_argument("--also-projections", type=int, metavar="K",
                    help="also a row with K back-projection steps onto the MS (FuseOptions.projections; the DDRF "
                         f"row has {DEFAULT_PROJECTIONS})")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    registry = default_methods()
    fusers = {m: registry[m] for m in args.methods}
    denoiser = Denoiser(args.model, "cpu") if args.model else None
    env = environment("quality", argv, ("numpy", "scipy", "rasterio", "onnxruntime"))
    for family in splits.SPLITS if args.family == "all" else [args.family]:
        if not splits.split_regions(family, args.split):
            continue  # e.g. no unseen sensor with this family's bands
        model = denoiser is not None and fits(denoiser, family)
        rows = dict(fusers)
        if model:
            rows["DDRF"] = model_fuser(denoiser)
            if args.flip_ensemble:
                rows["DDRF flip ensemble"] = model_fuser(FlipEnsemble(denoiser))
            if args.also_value_scale:
                value_scale = ValueScale(args.also_value_scale)
                rows[f"DDRF, {value_scale.value} scaling"] = model_fuser(denoiser, value_scale)
            if args.also_trust_full:
                rows["DDRF, trust full"] = model_fuser(denoiser, trust=Trust.FULL)
            if args.also_projections is not None:
                rows[f"DDRF, {args.also_projections} projections"] = model_fuser(
                    denoiser, projections=args.also_projections)
            if denoiser.spec.target.base is not Base.UPSAMPLED:  # what the network adds to its base
                rows["DDRF base (x0 = 0)"] = base_fuser(denoiser)
        res = evaluate(family, rows, args.split)
        if model:
            res["model"] = {"path": str(args.model), "training_data": denoiser.spec.training_data,
                            "default_steps": denoiser.spec.default_steps,
                            "value_scale": denoiser.spec.value_scale.value}
        name = f"quality_{family}" + ("" if args.split == "test" else f"_{args.split}")
        write_results(name, {**env, **res}, to_markdown(res, env), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
