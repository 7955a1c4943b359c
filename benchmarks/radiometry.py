"""How much the fused result depends on the full scale the runtime assumes, under each input scaling.

    python -m benchmarks.radiometry [--family 4band] [--model models/ddrf_4band.onnx] [--over 0 1 2] [--out DIR]

A user's raster states its bit depth badly often enough: 11-bit data in a 16-bit file without NBITS (the
runtime then guesses the smallest common bit depth above the data's maximum, which a dark scene keeps low or a
single hot pixel pushes up), an NBITS of 12 or 16 on 11-bit data, arrays passed without a bit depth (the model's
default, 11, is assumed), float radiance. And scenes differ in how much of their bit depth they use (the shared
training pairs: mean MS 0.07–0.38 of full scale). Each over-stated bit makes the scene look twice as dark to a
network fed DN ÷ full scale (``ValueScale.BIT_DEPTH``); under ``ValueScale.SCENE_MEAN`` the scene's mean MS is
mapped to the model's ``reference_mean`` whatever the full scale; ``ValueScale.AUTO`` takes the first for a stated
bit depth and the second for a guessed one.

Each test scene of the family's split (Wald protocol) is fused with its true bit depth + ``--over`` bits (stated)
and with none given (the model's default assumed), under each scaling; the table gives mean ERGAS and SAM and
their ratios to the best classical method (which does not depend on the scale), and the mean HQNR of the
full-resolution test scenes fused the same way. Results: ``radiometry.{md,json}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ddrf_runtime.evaluation import baselines
from ddrf_runtime.model_spec import ValueScale
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.session import Denoiser

from ._report import RESULTS_DIR, Clock, environment, environment_lines, markdown_table, write_results
from .quality import Fuser, Sample, default_methods, evaluate, fits, ms_to_fuse

NAME = "radiometry"


def overstated_fuser(denoiser: Denoiser, value_scale: ValueScale, over: int | None) -> Fuser:
    """The model fusing each sample as if its bit depth were ``over`` bits higher than it is (None: not given)."""
    def fuse(sample: Sample) -> np.ndarray:
        bits = None if over is None else sample.bit_depth + over
        options = FuseOptions(bit_depth=bits, value_scale=value_scale)
        return fuse_arrays(ms_to_fuse(sample), sample.pan, denoiser, options)  # float32 DN: never "uint8"
    return fuse


def row_name(value_scale: ValueScale, over: int | None) -> str:
    return f"DDRF {value_scale.value}, bit depth {_stated(over)}"


def _stated(over: int | None) -> str:
    return "not given" if over is None else f"+{over}"


def summarise(res: dict, rows: list[tuple[ValueScale, int | None]]) -> list[dict]:
    """Per (scaling, over-statement): mean ERGAS / SAM and their ratios to the best classical method."""
    mean = {m: {k: v[0] for k, v in metrics.items()} for m, metrics in res["reduced_mean"].items()}
    classical = [m for m in mean if m in baselines.METHODS]
    best = {k: min(classical, key=lambda m: mean[m][k]) for k in ("ERGAS", "SAM")}
    return [{"value_scale": vs.value, "over": over, "ERGAS": mean[row_name(vs, over)]["ERGAS"],
             "SAM": mean[row_name(vs, over)]["SAM"], "HQNR": res["full_mean"][row_name(vs, over)]["HQNR"][0],
             **{f"{k}_ratio": mean[row_name(vs, over)][k] / mean[best[k]][k] for k in ("ERGAS", "SAM")},
             **{f"best_{k}": f"{mean[best[k]][k]:.3f} ({best[k]})" for k in ("ERGAS", "SAM")}}
            for vs, over in rows]


def to_markdown(report: dict) -> str:
    lines = [f"# Fusion quality against the assumed full scale ({report['family']} test split, Wald protocol)", "",
             *environment_lines(report), f"- model: `{report['model']}`, 1 step (the default), seed 0", "",
             "Bit depth + n: the runtime told the scene has n more bits than it has (full scale 2ⁿ× too large, "
             "the scene 2ⁿ× darker to a bit-depth-scaled network); not given: float arrays without a bit depth, so "
             "the model's default (11) is assumed — 3 bits too many for the 8-bit scenes. Ratio = DDRF mean / best "
             "classical mean (the classical methods do not depend on the scale).", ""]
    rows = [(r["value_scale"], _stated(r["over"]), f"{r['ERGAS']:.3f}", f"{r['ERGAS_ratio']:.3f}", f"{r['SAM']:.3f}",
             f"{r['SAM_ratio']:.3f}", f"{r['HQNR']:.4f}") for r in report["summary"]]
    lines += markdown_table(["value scale", "bit depth", "ERGAS", "ERGAS ratio", "SAM °", "SAM ratio",
                             "HQNR (full resolution)"], rows)
    s = report["summary"][0]
    lines += ["", f"Best classical: ERGAS {s['best_ERGAS']}, SAM {s['best_SAM']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="4band")
    ap.add_argument("--model", type=Path, default=Path("models/ddrf_4band.onnx"))
    ap.add_argument("--over", type=int, nargs="+", default=[0, 1, 2], help="bits over-stated (default 0 1 2)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    denoiser = Denoiser(args.model, "cpu")
    if not fits(denoiser, args.family):
        raise SystemExit(f"{args.model}: not a model of family {args.family}")
    clock = Clock()
    rows = [(vs, over) for vs in ValueScale for over in [*args.over, None]]
    fusers = {**default_methods(), **{row_name(vs, o): overstated_fuser(denoiser, vs, o) for vs, o in rows}}
    res = evaluate(args.family, fusers)
    report = {**environment(NAME, argv, ("numpy", "onnxruntime")), "family": args.family, "model": str(args.model),
              "summary": summarise(res, rows), "reduced": res["reduced"], "run": clock.summary()}
    write_results(NAME, report, to_markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
