"""Does the scene one scale down tell how much of the network's correction to keep? Measured per sample.

    python -m benchmarks.trust --model models/ddrf_4band.onnx [--family 4band] [--split test|val]
    python -m benchmarks.trust --model models/ddrf_4band.onnx --crops 128 --scenes osman ge1 wv2
    python -m benchmarks.trust --checkpoint runs/loso/osman_hpm_fit_pool_jitter_pan/last.pt --fold osman

A residual model outputs base + correction. Per reduced-resolution sample: λ one scale down (the sample degraded
once more with generic MTFs is a Wald pair whose reference is the sample itself; λ is the least-squares weight of
the network's correction onto what the base misses there), the best λ at the native scale (the same fit against
the ground truth), and ERGAS / SAM of base + w · correction for w = 1 (the model), 0 (its base), clip(λ, 0, 1) (the
λ guard prototype) and min(1, λ / ``RAMP``) (a guard that only scales back fits below any seen on test strips).
A guard is worth shipping only if λ one scale down predicts the native one on seen and unseen sensors alike.
Writes ``trust_<label>.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ddrf_runtime.backends import DenoiserLike
from ddrf_runtime.evaluation import datasets, splits
from ddrf_runtime.evaluation.metrics import reduced_resolution_metrics
from ddrf_runtime.mtf import DEFAULT_MS_GAIN, DEFAULT_PAN_GAIN
from ddrf_runtime.resample import wald_degrade
from ddrf_runtime.session import Denoiser

from ._report import RESULTS_DIR, Clock, environment, environment_lines, markdown_table, say, write_results
from .quality import Fuser, base_fuser, model_fuser

NAME = "trust"
RAMP = 0.35  # the ramp guard keeps the correction in full from this λ up (bundled 4-band test strips: λ ≥ 0.395)


def correction_weight(fused: np.ndarray, base: np.ndarray, reference: np.ndarray) -> float:
    """λ: the least-squares weight of the correction (fused − base) onto what the base misses (reference − base),
    arrays of one shape; 0 for a correction of zero."""
    d = (fused - base).astype(np.float64).ravel()  # the network's correction
    e = (reference - base).astype(np.float64).ravel()  # what the base misses
    dd = float(d @ d)
    return float(d @ e) / dd if dd > 0 else 0.0


def weight_one_scale_down(model: Fuser, base: Fuser, pair: datasets.Pair) -> float:
    """λ of the pair's reduced MS as the reference of its own Wald pair (generic MTFs, sides cropped to multiples
    of the ratio)."""
    r = pair.ratio
    h, w = pair.ms_lr.shape[0] // r * r, pair.ms_lr.shape[1] // r * r
    ms = pair.ms_lr[:h, :w].astype(np.float32)  # (h, w, C): the reference one scale down
    ms_r, pan_r = wald_degrade(ms, pair.pan[:h * r, :w * r], r, DEFAULT_MS_GAIN, DEFAULT_PAN_GAIN)
    down = dataclasses.replace(pair, ms_lr=ms_r, pan=pan_r, gt=ms)
    b = base(down)
    return correction_weight(model(down), b, ms)


def weights(fit: float) -> dict[str, float]:
    """The correction's weight in each row: the model, its base, the λ prototype, the ramp guard."""
    return {"model": 1.0, "base": 0.0, "clip(λ)": float(np.clip(fit, 0, 1)), "ramp": float(np.clip(fit / RAMP, 0, 1))}


def score(denoiser: DenoiserLike, pair: datasets.Pair) -> dict[str, object]:
    """One sample's λ one scale down, best native λ, and every row's weight, ERGAS and SAM."""
    model, base = model_fuser(denoiser), base_fuser(denoiser)
    fit = weight_one_scale_down(model, base, pair)
    full, b = model(pair), base(pair)  # (H, W, C) DN
    rows = {}
    for way, w in weights(fit).items():
        fused = np.clip(b + np.float32(w) * (full - b), 0.0, pair.full_scale)
        m = reduced_resolution_metrics(pair.gt, fused, pair.ratio, pair.full_scale)
        rows[way] = {"weight": w, "ERGAS": m["ERGAS"], "SAM": m["SAM"]}
    return {"fit": fit, "best": correction_weight(full, b, pair.gt.astype(np.float32)), "rows": rows}


def crop_pairs(scenes: Sequence[str], side: int, bands: int) -> dict[str, datasets.Pair]:
    """Every side² MS-pixel crop of each scene at a stride of half a side, as a Wald pair at ratio 4."""
    pairs = {}
    for scene in scenes:
        h, w = datasets.load_scene(scene).ms.shape[:2]
        for r0 in range(0, h - side + 1, side // 2):
            for c0 in range(0, w - side + 1, side // 2):
                region = splits.Region(scene, (c0, c0 + side), (r0, r0 + side))
                pairs[region.label] = datasets.reduced_resolution(scene, 4, region, bands)
    return pairs


def to_markdown(report: Mapping) -> str:
    samples = report["samples"]
    ways = list(next(iter(samples.values()))["rows"])
    lines = [f"# Trust in the network's correction: {report['label']}", "", *environment_lines(report), "",
             f"Model: `{report['model']}`. λ: least-squares weight of the network's correction (model − base) onto "
             "what the base misses (reference − base), one scale down (the sample is its own reference) and at the "
             f"native scale (the ground truth). Rows: base + w · correction, w = {', '.join(ways)} "
             f"(ramp: min(1, λ / {RAMP})). ERGAS / SAM.", "",
             *markdown_table(["sample", "λ one scale down", "best λ (native)",
                              *(f"{w} ERGAS / SAM" for w in ways)],
                             ([name, f"{s['fit']:.3f}", f"{s['best']:.3f}",
                               *(f"{s['rows'][w]['ERGAS']:.3f} / {s['rows'][w]['SAM']:.3f}" for w in ways)]
                              for name, s in samples.items())), "",
             *markdown_table(["mean over samples", *ways],
                             [[k, *(f"{np.mean([s['rows'][w][k] for s in samples.values()]):.3f}" for w in ways)]
                              for k in ("ERGAS", "SAM")]), "",
             f"Samples whose native λ is above 0.5 (the correction helps): {report['helped']} of {len(samples)}; "
             f"of them with λ one scale down below {RAMP} (the ramp would scale back a correction that helps): "
             f"{report['helped_but_low']}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trust", description=__doc__.split("\n")[0])
    model = ap.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", type=Path, help="exported .onnx, scored on a split of --family or on --crops")
    model.add_argument("--checkpoint", type=Path, help="leave-one-sensor-out checkpoint, scored on its --fold")
    ap.add_argument("--family", choices=splits.SPLITS, default="4band", help="with --model (default 4band)")
    ap.add_argument("--split", choices=("test", "val"), default="test", help="with --model (default test)")
    ap.add_argument("--crops", type=int, metavar="SIDE", help="with --model: every SIDE² crop of --scenes instead")
    ap.add_argument("--scenes", nargs="+", default=["osman", "ge1", "wv2"], help="with --crops")
    ap.add_argument("--fold", help="with --checkpoint: the held-out sensor (benchmarks.generalization's folds)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    clock = Clock()
    if args.model:
        denoiser: DenoiserLike = Denoiser(args.model, "cpu")
        if args.crops:
            samples = crop_pairs(args.scenes, args.crops, denoiser.spec.num_bands)
            label = f"crops{args.crops}"
        else:
            samples = {p.name: p for p in datasets.reduced_resolution_split(args.family, args.split)}
            label = f"{args.family}_{args.split}"
    else:
        if not args.fold:
            ap.error("--checkpoint needs --fold")
        from ddrf_train.backend import TorchDenoiser  # torch only to score a checkpoint
        from ddrf_train.checkpoint import read_checkpoint

        from .generalization import FOLDS, _pair
        step = read_checkpoint(args.checkpoint)[0]["step"]
        denoiser, label = TorchDenoiser(args.checkpoint, "cpu", 1), f"loso_{args.fold}_{step}"
        samples = {s: _pair(s) for s in FOLDS[args.fold].test}
    env = environment(NAME, argv, ("numpy", "onnxruntime"))
    scored = {}
    for name, pair in samples.items():
        scored[name] = score(denoiser, pair)
        say(NAME, f"{name}: λ one scale down {scored[name]['fit']:.3f}, native {scored[name]['best']:.3f}")
    helped = [s for s in scored.values() if s["best"] > 0.5]
    report = {**env, "label": label, "model": str(args.model or args.checkpoint), "ramp": RAMP, "samples": scored,
              "helped": len(helped), "helped_but_low": sum(s["fit"] < RAMP for s in helped), "run": clock.summary()}
    write_results(f"{NAME}_{label}", report, to_markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
