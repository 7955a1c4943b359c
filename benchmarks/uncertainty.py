"""Does the spread of N diffusion samples say where the fusion is wrong? Test splits, Wald protocol.

    python -m benchmarks.uncertainty [--quick] [--family 4band|hs_ms|hs_pan] [--configs 1:0 2:0 5:0 10:0 10:1]
                                     [--samples 8] [--threads 1] [--tag T]
    python -m benchmarks.uncertainty --cost [--samples 4] [--threads 1]

For every Wald pair of ``reduced_resolution_split(family, "test")`` and every sampling configuration
(steps:eta), the runtime's ``pipeline.sample_tiles`` draws ``--samples`` fused samples (seed 0; every test pair
fits one default tile, so these are exactly the samples ``--samples N`` blends). The first N of them (N = 1, 4,
8) give what ``--samples N`` writes: their mean (scored with ERGAS/SAM) and their spread
(``uncertainty.sample_statistics``). The spread is scored against the mean's per-pixel error (RMS over bands)
and next to a model-free proxy, the PAN's Gaussian gradient magnitude (σ = 1 and 2 PAN pixels):
Spearman ρ, sparsification curves (RMSE of the pixels left as the most uncertain are removed) against the
oracle ordering by the true error, AUSE (mean gap to the oracle over removed fractions 0..0.99, both curves
normalised by the RMSE of all pixels) and the RMSE reduction at 10 % removed. A calibration plot (binned
predicted standard deviation against observed RMS error) is written as ``uncertainty_calibration.png``.
Validation needs a reference, so it is reduced-resolution only: at full resolution there is no ground truth.

``--cost`` times ``fuse_scene`` on the bundled demo scene (one step, default tiling and batch, ONNX Runtime
CPU) with one sample and with ``--samples``, alternating, twice each, and writes ``uncertainty_cost.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numba
import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, stats

from ddrf_runtime import scene
from ddrf_runtime.evaluation import datasets
from ddrf_runtime.datapaths import DEMO_DIR, MODELS_DIR
from ddrf_runtime.evaluation.metrics import ergas, sam
from ddrf_runtime.pipeline import FuseOptions, arrays_statistics, make_grid, sample_tiles
from ddrf_runtime.session import Denoiser, Device
from ddrf_runtime.uncertainty import pool_spread, sample_statistics

from ._fixtures import resolve_models
from ._report import (RESULTS_DIR, environment, environment_lines, markdown_table, run_and_write, say,
                      write_results)

NAME = "uncertainty"
FULL_CONFIGS = ("1:0", "2:0", "5:0", "10:0", "2:1", "5:1", "10:1")
QUICK_CONFIGS = ("1:0", "2:1")
SAMPLE_COUNTS = (1, 4, 8)
FRACTIONS = np.arange(100) / 100.0  # removed fractions of the sparsification curves
PROXY_SIGMAS = (1.0, 2.0)  # PAN pixels
CAL_BINS = 20


def sparsification(score: np.ndarray, sq_err: np.ndarray) -> np.ndarray:
    """RMSE of the pixels left after removing the ``FRACTIONS`` with the highest ``score``, over the RMSE of all."""
    order = np.argsort(-score, kind="stable")
    tail = np.cumsum(sq_err[order][::-1])[::-1]  # tail[k]: sum of squared errors of pixels k.. in that order
    n = sq_err.size
    keep = np.minimum((FRACTIONS * n).astype(np.int64), n - 1)
    return np.sqrt(tail[keep] / (n - keep)) / np.sqrt(tail[0] / n)


def score_ordering(score: np.ndarray, sq_err: np.ndarray, oracle: np.ndarray) -> dict:
    """Spearman ρ with the error, the sparsification curve, AUSE and the RMSE reduction at 10 % removed."""
    curve = sparsification(score, sq_err)
    rho = stats.spearmanr(score, sq_err).statistic if np.ptp(score) > 0 else 0.0
    return {"spearman": float(rho), "ause": float(np.mean(curve - oracle)),
            "rmse_cut_at_10": float(1.0 - curve[10]), "curve": [round(float(v), 4) for v in curve]}


def pan_proxy(pan: np.ndarray, sigma: float) -> np.ndarray:
    """The model-free proxy: Gaussian gradient magnitude of the PAN (of a multi-band guide's mean), (H, W)."""
    guide = pan.astype(np.float64)
    return ndimage.gaussian_gradient_magnitude(guide if guide.ndim == 2 else guide.mean(axis=2), sigma)


def draw_samples(denoiser: Denoiser, pair: datasets.Pair, steps: int, eta: float, samples: int) -> np.ndarray:
    """(samples, H, W, C) fused samples of a pair, exactly as ``--samples`` draws them for its one tile."""
    options = FuseOptions(steps=steps, eta=eta, samples=samples, bit_depth=pair.bit_depth, seed=0)
    grid = make_grid(denoiser.spec, options, pair.pan.shape[0], pair.pan.shape[1])
    if len(grid.tiles) != 1:
        raise ValueError(f"{pair.name} spans {len(grid.tiles)} tiles; this benchmark needs one tile per pair")
    tile, (radiometry, scene) = grid.tiles[0], arrays_statistics(denoiser.spec, options, pair.ms_lr, pair.pan)
    out = sample_tiles(grid, [tile], [pair.ms_lr[tile.ms.slices]], [pair.pan[tile.pan.slices]], denoiser,
                       options, radiometry=radiometry, scene=scene)  # (1, N, th, tw, C)
    return out[0, :, :tile.read.height, :tile.read.width]


def evaluate_pair(pair: datasets.Pair, draws: np.ndarray, proxies: Mapping[str, np.ndarray]) -> dict:
    """Scores of the mean of the first N draws, and of its spread and the proxies as error predictors."""
    gt = pair.gt.astype(np.float64)
    out: dict = {}
    for n in SAMPLE_COUNTS:
        if n > draws.shape[0]:
            continue
        blend = sample_statistics(draws[:n])  # (H, W, 2C + 1)
        c = gt.shape[2]
        mean, var, angle = blend[..., :c], blend[..., c:2 * c], blend[..., 2 * c]
        sq_err = ((mean - gt) ** 2).mean(axis=2).ravel()  # (H·W,) per-pixel MSE over bands, DN²
        oracle = sparsification(sq_err, sq_err)
        row = {"ERGAS": ergas(gt, mean, pair.ratio), "SAM": sam(gt, mean), "rmse_dn": float(np.sqrt(sq_err.mean())),
               "oracle": {"ause": 0.0, "rmse_cut_at_10": float(1.0 - oracle[10]),
                          "curve": [round(float(v), 4) for v in oracle]}}
        if n > 1:
            std = np.sqrt(var.mean(axis=2)).ravel()  # per-pixel RMS over bands of the std, DN
            row["spread"] = score_ordering(std, sq_err, oracle)
            # what the sidecar holds by default: variances pooled over FuseOptions.spread_sigma pixels
            pooled = pool_spread(blend[None].copy(), c, FuseOptions.spread_sigma)[0]  # (H, W, 2C + 1)
            std_pooled = np.sqrt(pooled[..., c:2 * c].mean(axis=2)).ravel()
            row["spread_pooled"] = score_ordering(std_pooled, sq_err, oracle)
            row["angle"] = score_ordering(angle.ravel(), sq_err, oracle)
            row["calibration"] = {"std": std_pooled / pair.full_scale, "err": np.sqrt(sq_err) / pair.full_scale}
            row["mean_std_dn"] = float(std.mean())
        for name, proxy in proxies.items():
            row[name] = score_ordering(proxy.ravel(), sq_err, oracle)
        out[str(n)] = row
    return out


def calibration_bins(std: np.ndarray, err: np.ndarray, bins: int = CAL_BINS) -> dict:
    """Equal-count bins of predicted std: mean predicted std and RMS observed error per bin (full-scale units)."""
    order = np.argsort(std, kind="stable")
    parts = np.array_split(order, bins)
    return {"std": [float(std[p].mean()) for p in parts], "rmse": [float(np.sqrt((err[p] ** 2).mean())) for p in parts]}


def _mean_over_pairs(per_pair: Mapping[str, Mapping], n: str) -> dict:
    """Scene-mean of every scalar score of the mean of n samples (curves averaged point by point)."""
    rows = [r[n] for r in per_pair.values()]
    out: dict = {k: float(np.mean([r[k] for r in rows])) for k in ("ERGAS", "SAM", "rmse_dn")}
    for key in rows[0]:
        if isinstance(rows[0][key], dict) and "curve" in rows[0][key]:
            out[key] = {m: float(np.mean([r[key][m] for r in rows])) for m in ("ause", "rmse_cut_at_10")}
            out[key]["curve"] = [round(float(v), 4) for v in np.mean([r[key]["curve"] for r in rows], axis=0)]
            if "spearman" in rows[0][key]:
                out[key]["spearman"] = float(np.mean([r[key]["spearman"] for r in rows]))
    return out


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "scipy", "onnxruntime", "numba"))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    bundled = resolve_models(threads=args.threads).onnx if args.family == "4band" else \
        MODELS_DIR / f"ddrf_{args.family}.onnx"
    onnx_path = args.model_onnx or bundled
    denoiser = Denoiser(onnx_path, Device.CPU, args.threads)
    pairs = datasets.reduced_resolution_split(args.family, "test")
    if args.quick:
        pairs = pairs[-3:]  # the three small non-Landsat pairs
    proxies = {p.name: {f"proxy_sigma{s:g}": pan_proxy(p.pan, s) for s in PROXY_SIGMAS} for p in pairs}
    configs = []
    for text in args.configs:
        steps, eta = text.split(":")
        t0, per_pair, cal = time.perf_counter(), {}, {}
        for pair in pairs:
            draws = draw_samples(denoiser, pair, int(steps), float(eta), args.samples)
            per_pair[pair.name] = evaluate_pair(pair, draws, proxies[pair.name])
            for n, row in per_pair[pair.name].items():  # pool the calibration pixels over pairs
                if "calibration" in row:
                    c = row.pop("calibration")
                    cal.setdefault(n, ([], []))[0].append(c["std"])
                    cal[n][1].append(c["err"])
        seconds = time.perf_counter() - t0
        mean = {n: _mean_over_pairs(per_pair, n) for n in next(iter(per_pair.values()))}
        bins = {n: calibration_bins(np.concatenate(s), np.concatenate(e)) for n, (s, e) in cal.items()}
        configs.append({"config": text, "steps": int(steps), "eta": float(eta), "seconds": seconds,
                        "mean": mean, "calibration": bins, "per_pair": per_pair})
        top = mean[str(max(int(k) for k in mean))]
        say(NAME, f"{text}: {seconds:.0f} s; N={max(int(k) for k in mean)}: ERGAS {top['ERGAS']:.3f}, "
                  f"rho spread {top.get('spread', {}).get('spearman', float('nan')):.3f} vs proxy "
                  f"{max(top[f'proxy_sigma{s:g}']['spearman'] for s in PROXY_SIGMAS):.3f}")
    plot = RESULTS_DIR / f"{args.name}_calibration.png"
    draw_calibration(configs, plot)
    return {**env, "family": args.family, "quick": args.quick, "threads": args.threads, "model_onnx": str(onnx_path),
            "training_data": denoiser.spec.training_data, "samples": args.samples,
            "pairs": [p.name for p in pairs], "configs": configs, "calibration_png": str(plot)}


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (23, 190, 207), (127, 127, 127)]


def recalibration(bins: Mapping[str, Sequence[float]]) -> float:
    """k such that k·std matches the RMS error over the equal-count bins (1 = calibrated as it is)."""
    std, rmse = np.asarray(bins["std"]), np.asarray(bins["rmse"])
    return float(np.sqrt((rmse**2).sum() / max((std**2).sum(), 1e-30)))


def draw_calibration(configs: Sequence[Mapping], path: Path, size: int = 480, margin: int = 60) -> None:
    """Binned RMS error against predicted std (N = most samples), one line per config, each with its dashed
    y = k·std (k from ``recalibration``): the curve's shape says how well the spread ranks, k how far off it is."""
    lines = []
    for cfg in configs:
        n = max(cfg["calibration"], key=int, default=None)
        if n is not None:
            lines.append((f"{cfg['config']} N={n}", cfg["calibration"][n]))
    x_top = max([max(b["std"]) for _, b in lines], default=1.0) * 1.05
    y_top = max([max(b["rmse"]) for _, b in lines], default=1.0) * 1.05
    img = Image.new("RGB", (size + 2 * margin, size + 2 * margin), "white")
    d = ImageDraw.Draw(img)

    def xy(x: float, y: float) -> tuple[float, float]:
        return margin + min(x / x_top, 1.0) * size, margin + size - min(y / y_top, 1.0) * size

    d.rectangle([margin, margin, margin + size, margin + size], outline="black")
    for k in range(5):
        d.text((xy(x_top * k / 4, 0)[0] - 14, margin + size + 6), f"{x_top * k / 4:.4f}", fill="black")
        d.text((4, xy(0, y_top * k / 4)[1] - 6), f"{y_top * k / 4:.3f}", fill="black")
    d.text((margin + size // 2 - 90, margin + size + 24), "predicted std (full-scale units)", fill="black")
    d.text((4, margin - 40), "observed RMS error (full-scale units), equal-count bins", fill="black")
    for i, (label, b) in enumerate(lines):
        colour, k = _COLOURS[i % len(_COLOURS)], recalibration(b)
        d.line([xy(x, y) for x, y in zip(b["std"], b["rmse"])], fill=colour, width=2)
        for s0 in np.arange(0, 1, 0.05)[::2] * x_top:  # dashed y = k·x, inside the frame
            if k * (s0 + 0.05 * x_top) <= y_top:
                d.line([xy(s0, k * s0), xy(s0 + 0.05 * x_top, k * (s0 + 0.05 * x_top))], fill=colour, width=1)
        d.text((margin + 8, margin + 8 + 14 * i), f"{label}: error ~ {k:.1f} x std", fill=colour)
    img.save(path, format="PNG")


def to_markdown(r: dict) -> str:
    proxies = [f"proxy_sigma{s:g}" for s in PROXY_SIGMAS]
    lines = [f"# Per-pixel uncertainty from N samples ({'quick' if r['quick'] else 'full'})", "",
             *environment_lines(r), f"- model: `{r['model_onnx']}` ({r['training_data']})",
             f"- data: {r.get('family', '4band')} test split, {len(r['pairs'])} Wald pairs; ONNX Runtime CPU, "
             f"{r['threads']} thread(s), "
             f"seed 0, up to {r['samples']} samples; the machine was shared with other jobs (times are indicative)",
             "- error = per-pixel RMS over bands of (mean of N samples − reference); spread = per-pixel RMS over "
             "bands of the samples' std; angle = mean spectral angle of the samples to their mean; proxy = PAN "
             "Gaussian gradient magnitude (σ in PAN pixels). Scores are means over the test scenes.",
             "- reduced resolution only: at full resolution there is no reference to validate against.", "",
             "## Mean of N samples against one sample", ""]
    base = r["configs"][0]["mean"]["1"]
    rows = []
    for cfg in r["configs"]:
        for n, m in cfg["mean"].items():
            rows.append([cfg["config"], n, f"{m['ERGAS']:.3f}", f"{m['SAM']:.3f}",
                         f"{m['ERGAS'] - base['ERGAS']:+.3f}", f"{cfg['seconds']:.0f}"])
    lines += markdown_table(["steps:eta", "N", "ERGAS ↓", "SAM ° ↓", f"ΔERGAS vs {r['configs'][0]['config']} N=1",
                             "s (all N, split)"], rows)
    lines += ["", "## Does the spread predict the error?", "",
              "ρ = Spearman(score, error); cut@10 % = RMSE reduction after removing the 10 % highest-scored "
              "pixels; AUSE ↓ = mean gap to the oracle sparsification curve.", ""]
    scored = [(cfg, n, m) for cfg in r["configs"] for n, m in cfg["mean"].items() if "spread" in m]
    keys = [k for k in ("spread", "spread_pooled", "angle", *proxies) if scored and k in scored[0][2]]
    rows = []
    for cfg, n, m in scored:
        cells = [cfg["config"], n]
        for key in keys:
            k = m[key]
            cells.append(f"{k['spearman']:.3f} / {100 * k['rmse_cut_at_10']:.1f} % / {k['ause']:.3f}")
        cells.append(f"{100 * m['oracle']['rmse_cut_at_10']:.1f} %")
        cells.append(f"{recalibration(cfg['calibration'][n]):.1f}")
        rows.append(cells)
    lines += markdown_table(["steps:eta", "N", *(f"{k} ρ / cut@10 / AUSE" for k in keys), "oracle cut@10",
                             "error / std"], rows)
    lines += ["", "## Per scene (most samples of each configuration)", ""]
    rows = []
    for cfg in r["configs"]:
        n = max(cfg["mean"], key=int)
        for name, pr in cfg["per_pair"].items():
            m = pr[n]
            if "spread" in m:
                pooled = f"{m['spread_pooled']['spearman']:.3f}" if "spread_pooled" in m else "–"
                rows.append([cfg["config"], n, name, f"{m['ERGAS']:.3f}", f"{m['spread']['spearman']:.3f}", pooled,
                             f"{max(m[p]['spearman'] for p in proxies):.3f}",
                             f"{100 * m['spread']['rmse_cut_at_10']:.1f} %",
                             f"{100 * m['oracle']['rmse_cut_at_10']:.1f} %"])
    lines += markdown_table(["steps:eta", "N", "scene", "ERGAS", "spread ρ", "pooled ρ", "best proxy ρ",
                             "spread cut@10", "oracle cut@10"], rows)
    which = "pooled" if scored and "spread_pooled" in scored[0][2] else "raw per-pixel"
    lines += ["", f"Calibration plot: `{Path(r['calibration_png']).name}` (equal-count bins of the {which} "
              "predicted std, pixels of all scenes together; dashed: error = k·std with the column 'error / std' "
              "as k — a calibrated spread has k ≈ 1).", "", *_targets(r, proxies), ""]
    return "\n".join(lines)


def _targets(r: Mapping, proxies: Sequence[str]) -> list[str]:
    """The issue's targets, checked on the scene means, for the best spread score (raw or pooled) of any
    configuration by Spearman ρ."""
    scored = [(cfg, n, key, m) for cfg in r["configs"] for n, m in cfg["mean"].items()
              for key in ("spread", "spread_pooled") if key in m]
    if not scored:
        return []
    cfg, n, key, m = max(scored, key=lambda x: x[3][x[2]]["spearman"])
    best, proxy = m[key], m[max(proxies, key=lambda p: m[p]["spearman"])]
    single = r["configs"][0]["mean"]["1"]
    lines = ["## Targets (scene means)", "",
             f"- best: {key} at {cfg['config']} (steps:eta) with N={n}: ρ {best['spearman']:.3f} against "
             f"{proxy['spearman']:.3f} for the best proxy (target: proxy + 0.1 = {proxy['spearman'] + 0.1:.3f}): "
             f"{'met' if best['spearman'] >= proxy['spearman'] + 0.1 else 'NOT met'}",
             f"- removing its 10 % most uncertain pixels cuts the RMSE of the rest by "
             f"{100 * best['rmse_cut_at_10']:.1f} % (proxy {100 * proxy['rmse_cut_at_10']:.1f} %, oracle "
             f"{100 * m['oracle']['rmse_cut_at_10']:.1f} %; target ≥ 20 %): "
             f"{'met' if best['rmse_cut_at_10'] >= 0.2 else 'NOT met'}"]
    for cfg in r["configs"]:
        for n, m in cfg["mean"].items():
            if n != "1":
                lines.append(f"- mean of {n} at {cfg['config']}: ERGAS {m['ERGAS']:.3f} against {single['ERGAS']:.3f} "
                             f"for one {r['configs'][0]['config']} sample "
                             f"({'no worse' if m['ERGAS'] <= single['ERGAS'] else 'worse'})")
    return lines


def run_cost(args: argparse.Namespace, argv: list[str]) -> dict:
    """Wall time of fuse_scene on the demo scene, one sample against ``args.samples``."""
    import tempfile
    env = environment(NAME, argv, ("numpy", "onnxruntime", "numba", "rasterio"))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    onnx_path = args.model_onnx or resolve_models(threads=args.threads).onnx
    runs: dict[int, list[dict]] = {1: [], args.samples: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(2):
            for n in runs:
                config = scene.SceneConfig(model=str(onnx_path), device=Device.CPU, threads=args.threads,
                                           overwrite=True, fuse=FuseOptions(steps=1, samples=n))
                cpu = time.process_time()
                report = scene.fuse_scene(DEMO_DIR / "ms.tif", DEMO_DIR / "pan.tif", Path(tmp) / "f.tif", config)
                runs[n].append({**report["timings_s"], "cpu_s": round(time.process_time() - cpu, 2)})
                say(NAME, f"samples {n}, run {repeat + 1}: {runs[n][-1]['total']:.1f} s wall, "
                          f"{runs[n][-1]['cpu_s']:.1f} CPU-s")
    best = {n: min(t["cpu_s"] for t in r) for n, r in runs.items()}
    return {**env, "threads": args.threads, "model_onnx": str(onnx_path), "scene": "data/demo (800×800 PAN)",
            "samples": args.samples, "runs": {str(n): r for n, r in runs.items()},
            "best_cpu_s": {str(n): v for n, v in best.items()}, "ratio": best[args.samples] / best[1]}


def cost_markdown(r: dict) -> str:
    n = str(r["samples"])
    lines = [f"# Cost of --samples {n} against one sample (CPU)", "", *environment_lines(r),
             f"- model: `{r['model_onnx']}`; scene {r['scene']}; one step, default tiling and batch, ONNX Runtime "
             f"CPU, {r['threads']} thread(s), all in one process. The machine was shared with other jobs (wall "
             "times swing 2-3×), so the cost compared is the process's CPU time, best of two runs", ""]
    lines += markdown_table(["samples", "run 1 wall s", "run 2 wall s", "run 1 CPU-s", "run 2 CPU-s", "best CPU-s"],
                            ([k, *(f"{t['total']:.1f}" for t in v), *(f"{t['cpu_s']:.1f}" for t in v),
                              f"{r['best_cpu_s'][k]:.1f}"] for k, v in r["runs"].items()))
    lines += ["", f"**--samples {n} costs {r['ratio']:.2f}× one sample** (target ≤ {n}×).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 small pairs, configs " + " ".join(QUICK_CONFIGS))
    ap.add_argument("--cost", action="store_true", help="time one sample against --samples on the demo scene")
    ap.add_argument("--family", choices=("4band", "hs_ms", "hs_pan"), default="4band",
                    help="test split and bundled model (default 4band)")
    ap.add_argument("--tag", help="suffix of the result files (uncertainty_<tag>.md), for extra runs")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only re-render the markdown and plot of a result")
    ap.add_argument("--configs", nargs="+", help="steps:eta sampling configurations (default: all, or quick's)")
    ap.add_argument("--samples", type=int, help="samples drawn per pair (default 8; with --cost 4)")
    ap.add_argument("--model-onnx", type=Path, help="model (default: bundled, else exported from the training run)")
    ap.add_argument("--threads", type=int, default=1, help="network threads (default 1)")
    args = ap.parse_args(argv)
    if args.render:  # presentation only: the numbers are those of the run that wrote the JSON
        report = json.loads(args.render.read_text())
        draw_calibration(report["configs"], Path(report["calibration_png"]))
        write_results(args.render.stem, report, to_markdown(report), args.render.parent)
        return 0
    if args.cost:
        args.samples = args.samples or 4
        run_and_write(f"{NAME}_cost", lambda: run_cost(args, argv), cost_markdown)
        return 0
    args.samples = args.samples or max(SAMPLE_COUNTS)
    args.configs = args.configs or list(QUICK_CONFIGS if args.quick else FULL_CONFIGS)
    family = "" if args.family == "4band" else f"_{args.family}"
    args.name = f"{NAME}{family}{'_quick' if args.quick else ''}{'_' + args.tag if args.tag else ''}"
    run_and_write(args.name, lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
