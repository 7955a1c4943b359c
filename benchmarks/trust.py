"""Does the scene one scale down tell how much of the network's correction to keep? Measured per sample.

    python -m benchmarks.trust --model models/ddrf_4band.onnx [--family 4band] [--split test|val]
    python -m benchmarks.trust --model models/ddrf_4band.onnx --crops 128 --scenes osman ge1 wv2
    python -m benchmarks.trust --checkpoint runs/loso/osman_hpm_fit_pool_jitter_pan/last.pt --fold osman
    python -m benchmarks.trust --model models/ddrf_4band.onnx --full-resolution --scenes osman ge1 wv2 ...

A residual model outputs base + correction. Per reduced-resolution sample: λ one scale down as the runtime fits it
(``ddrf_runtime.trust``: the central window degraded once more is a Wald pair whose reference is the sample itself),
the best λ at the native scale (the same least squares against the ground truth), and ERGAS / SAM of the model with
its correction in full (``--trust full``), of its base alone, of base + clip(λ, 0, 1) · correction (a plain λ guard)
and of the runtime's default (``--trust fitted``: min(1, λ / ``TRUST_FIT``)). Writes ``trust_<label>.md`` / ``.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ddrf_runtime.backends import DenoiserLike
from ddrf_runtime.evaluation import datasets, splits
from ddrf_runtime.evaluation.metrics import reduced_resolution_metrics
from ddrf_runtime.pipeline import FuseOptions, arrays_statistics, arrays_trust
from ddrf_runtime.session import Denoiser
from ddrf_runtime.trust import TRUST_FIT, Trust, TrustFit, correction_weight

from ._report import RESULTS_DIR, Clock, environment, environment_lines, markdown_table, say, write_results
from .quality import base_fuser, model_fuser

NAME = "trust"


def runtime_trust(denoiser: DenoiserLike, ms: np.ndarray, pan: np.ndarray, bit_depth: int) -> TrustFit:
    """The weight ``fuse_arrays`` gives this scene's correction by default, and its λ."""
    options = FuseOptions(bit_depth=bit_depth)
    radiometry, _ = arrays_statistics(denoiser.spec, options, ms, pan)
    return arrays_trust(ms, pan, denoiser, options, radiometry)


def score(denoiser: DenoiserLike, pair: datasets.Pair) -> dict[str, object]:
    """One sample's λ one scale down (the runtime's), best native λ, and every row's weight, ERGAS and SAM."""
    trust = runtime_trust(denoiser, pair.ms_lr, pair.pan, pair.bit_depth)
    full, b = model_fuser(denoiser, trust=Trust.FULL)(pair), base_fuser(denoiser)(pair)  # (H, W, C) DN
    plain = 1.0 if trust.fit is None else float(np.clip(trust.fit, 0, 1))  # a plain λ guard's weight
    fused = {"model": full, "base": b, "clip(λ)": b + np.float32(plain) * (full - b),
             "fitted": model_fuser(denoiser)(pair)}
    rows = {}
    for way, img in fused.items():
        m = reduced_resolution_metrics(pair.gt, np.clip(img, 0.0, pair.full_scale), pair.ratio, pair.full_scale)
        rows[way] = {"ERGAS": m["ERGAS"], "SAM": m["SAM"]}
    return {"fit": trust.fit, "weight": trust.weight, "best": correction_weight(full, b, pair.gt.astype(np.float32)),
            "rows": rows}


def full_resolution_fits(denoiser: DenoiserLike, scenes: Sequence[str]) -> dict[str, dict[str, object]]:
    """λ one scale down and the runtime's weight on whole scenes at their own resolution, as a user runs them: one
    scale down is then the scale of the Wald pairs the model trained on (no reference, so no best λ)."""
    rows = {}
    for scene in scenes:
        full = datasets.full_resolution(scene, None, denoiser.spec.num_bands)
        if full.ratio != denoiser.spec.ratio:
            continue
        trust = runtime_trust(denoiser, full.ms, full.pan, full.bit_depth)
        rows[scene] = {"ms_pixels": list(full.ms.shape[:2]), "fit": trust.fit, "weight": trust.weight}
    return rows


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


def _fit(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def to_markdown(report: Mapping) -> str:
    if "scenes" in report:  # full resolution: fits only
        return "\n".join([f"# Trust at full resolution: {report['label']}", "", *environment_lines(report), "",
                          f"Model: `{report['model']}`. Whole scenes at their own resolution (what a user runs): λ one "
                          "scale down on the central window (the scale of the model's training pairs) and the "
                          f"runtime's weight min(1, λ / {TRUST_FIT}); – : too small to fit.", "",
                          *markdown_table(["scene", "MS pixels", "λ one scale down", "weight"],
                                          ([n, "×".join(map(str, r["ms_pixels"])), _fit(r["fit"]),
                                            f"{r['weight']:.3f}"] for n, r in report["scenes"].items())), ""])
    samples = report["samples"]
    ways = list(next(iter(samples.values()))["rows"])
    lines = [f"# Trust in the network's correction: {report['label']}", "", *environment_lines(report), "",
             f"Model: `{report['model']}`. λ: least-squares weight of the network's correction (model − base) onto "
             "what the base misses (reference − base), one scale down on the central window as the runtime fits it "
             "(the sample is its own reference) and at the native scale (the ground truth). Rows: the model with its "
             "correction in full, its base, base + clip(λ, 0, 1) · correction, the runtime's default (`--trust "
             f"fitted`: min(1, λ / {TRUST_FIT}) · correction). ERGAS / SAM.", "",
             *markdown_table(["sample", "λ one scale down", "runtime weight", "best λ (native)",
                              *(f"{w} ERGAS / SAM" for w in ways)],
                             ([name, _fit(s["fit"]), f"{s['weight']:.3f}", f"{s['best']:.3f}",
                               *(f"{s['rows'][w]['ERGAS']:.3f} / {s['rows'][w]['SAM']:.3f}" for w in ways)]
                              for name, s in samples.items())), "",
             *markdown_table(["mean over samples", *ways],
                             [[k, *(f"{np.mean([s['rows'][w][k] for s in samples.values()]):.3f}" for w in ways)]
                              for k in ("ERGAS", "SAM")]), "",
             f"Samples whose native λ is above 0.5 (the correction helps): {report['helped']} of {len(samples)}; "
             f"of them with λ one scale down below {TRUST_FIT} (the runtime scales back a correction that helps): "
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
    ap.add_argument("--scenes", nargs="+", default=["osman", "ge1", "wv2"],
                    help="with --crops or --full-resolution and --model")
    ap.add_argument("--full-resolution", action="store_true",
                    help="fit whole scenes at their own resolution instead (--scenes with --model, the fold's with "
                         "--checkpoint)")
    ap.add_argument("--fold", help="with --checkpoint: the held-out sensor (benchmarks.generalization's folds)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    clock = Clock()
    if args.model:
        denoiser: DenoiserLike = Denoiser(args.model, "cpu")
        scenes, samples = args.scenes, {}
        if args.full_resolution:
            label = f"full_{denoiser.spec.num_bands}band"
        elif args.crops:
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
        scenes = list(FOLDS[args.fold].scenes)
        label = f"full_{label}" if args.full_resolution else label
    env = environment(NAME, argv, ("numpy", "onnxruntime"))
    if args.full_resolution:
        report = {**env, "label": label, "model": str(args.model or args.checkpoint), "trust_fit": TRUST_FIT,
                  "scenes": full_resolution_fits(denoiser, scenes), "run": clock.summary()}
        write_results(f"{NAME}_{label}", report, to_markdown(report), args.out)
        return 0
    scored = {}
    for name, pair in samples.items():
        scored[name] = score(denoiser, pair)
        say(NAME, f"{name}: λ one scale down {_fit(scored[name]['fit'])}, native {scored[name]['best']:.3f}")
    helped = [s for s in scored.values() if s["best"] > 0.5]
    report = {**env, "label": label, "model": str(args.model or args.checkpoint), "trust_fit": TRUST_FIT,
              "samples": scored, "helped": len(helped), "helped_but_low": sum(s["weight"] < 1 for s in helped),
              "run": clock.summary()}
    write_results(f"{NAME}_{label}", report, to_markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
