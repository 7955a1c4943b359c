"""The condition-encoder / per-step split against the monolithic graph, per network call and end to end (CPU).

    python -m benchmarks.split --model-onnx /tmp/ddrf_4band.onnx [--threads 1] [--repeats 3]

The model needs its split graphs beside it (``python -m export.to_onnx X.pt -o X.onnx --split``). Per call: the
monolithic graph against the step graph on the demo scene's tiles (2×256², 1×512², and 4 samples of one 256²
and of one 512² tile), plus the encoder's one-off cost per batch. End to end: ``fuse_arrays`` on the demo scene with
samples=4/steps=1 and samples=1/steps=5, monolithic against split, and the largest output difference. Each
measurement is the best of ``--repeats`` (wall and process CPU time; monolithic and split alternate), because
the machine is shared: the load average is recorded. Writes ``split.{md,json}``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.session import Denoiser, split_paths

from ._fixtures import network_inputs, read_demo
from ._report import environment, environment_lines, markdown_table, run_and_write, say

NAME = "split"
CALL_CASES = ((2, 1, 256), (1, 1, 512), (1, 4, 256), (1, 4, 512))  # (tiles, samples per tile, tile side)
FUSE_CASES = ((4, 1), (1, 5))  # (samples, steps)


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _best(runs: list[tuple[float, float]]) -> dict[str, float]:
    return {"wall_s": round(min(w for w, _ in runs), 4), "cpu_s": round(min(c for _, c in runs), 4)}


def per_call(mono: Denoiser, split: Denoiser, scene, repeats: int) -> list[dict]:
    """Per network call: monolithic (conditions repeated per sample) against the step graph, and the encoder."""
    rows = []
    for tiles, samples, side in CALL_CASES:
        x_t, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, mono.spec, side, tiles)
        x_t = np.repeat(x_t, samples, axis=0)  # (B·N, C, side, side)
        t = mono.spec.timesteps - 1
        mono_run = mono.conditioned(cond, wav, samples)
        mono_run(x_t, t)  # warm-up: ORT plans each new shape on its first run
        split.conditioned(cond, wav, samples)(x_t, t)
        runs: dict[str, list[tuple[float, float]]] = {"monolithic": [], "encoder": [], "step": []}
        for _ in range(repeats):
            wall, cpu, _ = _timed(lambda: mono_run(x_t, t))
            runs["monolithic"].append((wall, cpu))
            wall, cpu, step_run = _timed(lambda: split.conditioned(cond, wav, samples))
            runs["encoder"].append((wall, cpu))
            wall, cpu, _ = _timed(lambda: step_run(x_t, t))
            runs["step"].append((wall, cpu))
        best = {k: _best(v) for k, v in runs.items()}
        row = {"tiles": tiles, "samples": samples, "side": side, **best,
               "step_over_monolithic_cpu": round(best["step"]["cpu_s"] / best["monolithic"]["cpu_s"], 3)}
        say(NAME, f"{tiles}×{side}², {samples} sample(s): monolithic {best['monolithic']['cpu_s']:.3f} CPU-s, "
                  f"step {best['step']['cpu_s']:.3f}, encoder {best['encoder']['cpu_s']:.3f} "
                  f"(step/monolithic {row['step_over_monolithic_cpu']:.3f})")
        rows.append(row)
    return rows


def end_to_end(mono: Denoiser, split: Denoiser, scene, repeats: int) -> list[dict]:
    """``fuse_arrays`` on the demo scene, default tiling and batch, monolithic against split."""
    bits = int(round(np.log2(scene.scale + 1)))
    rows = []
    for samples, steps in FUSE_CASES:
        options = FuseOptions(steps=steps, samples=samples, bit_depth=bits)
        runs: dict[str, list[tuple[float, float]]] = {"monolithic": [], "split": []}
        images = {}
        for _ in range(repeats):
            for label, den in (("monolithic", mono), ("split", split)):
                wall, cpu, images[label] = _timed(lambda: fuse_arrays(scene.ms, scene.pan, den, options))
                runs[label].append((wall, cpu))
        best = {k: _best(v) for k, v in runs.items()}
        diff = float(np.abs(images["monolithic"] - images["split"]).max() / scene.scale)
        row = {"samples": samples, "steps": steps, **best, "max_abs_diff_normalised": diff,
               "split_over_monolithic_cpu": round(best["split"]["cpu_s"] / best["monolithic"]["cpu_s"], 3)}
        say(NAME, f"fuse_arrays samples={samples} steps={steps}: monolithic {best['monolithic']['cpu_s']:.1f} CPU-s, "
                  f"split {best['split']['cpu_s']:.1f} (×{row['split_over_monolithic_cpu']:.3f}), max |Δ| {diff:.1e}")
        rows.append(row)
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "onnxruntime", "numba"))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if not all(p.is_file() for p in split_paths(args.model_onnx)):
        raise SystemExit(f"{args.model_onnx}: no split graphs beside it; export with --split")
    mono = Denoiser(args.model_onnx, "cpu", args.threads, split=False)
    split = Denoiser(args.model_onnx, "cpu", args.threads)
    if split.versions["model_graphs"] == "monolithic":
        raise SystemExit(f"{args.model_onnx}: the split graphs were not taken (see the warning)")
    scene = read_demo()
    return {**env, "threads": args.threads, "repeats": args.repeats, "model_onnx": str(args.model_onnx),
            "scene": f"data/demo ({scene.pan.shape[0]}×{scene.pan.shape[1]} PAN)",
            "per_call": per_call(mono, split, scene, args.repeats),
            "fuse_arrays": end_to_end(mono, split, scene, args.repeats)}


def to_markdown(r: dict) -> str:
    lines = ["# Condition-encoder / per-step split against the monolithic graph (CPU)", "", *environment_lines(r),
             f"- model: `{r['model_onnx']}` with its `.cond.onnx`/`.step.onnx`; ONNX Runtime CPU, {r['threads']} "
             f"thread(s); best of {r['repeats']} (monolithic and split alternating). The machine was shared with "
             "other jobs: CPU time is the fairer measure, wall time is given too", "",
             "## Per network call (demo-scene tiles, t = T−1)", ""]
    lines += markdown_table(
        ["tiles × side", "samples", "monolithic CPU-s (wall)", "step CPU-s (wall)", "step / monolithic",
         "encoder, once per batch, CPU-s (wall)"],
        ([f"{c['tiles']}×{c['side']}²", c["samples"],
          f"{c['monolithic']['cpu_s']:.3f} ({c['monolithic']['wall_s']:.3f})",
          f"{c['step']['cpu_s']:.3f} ({c['step']['wall_s']:.3f})", f"{c['step_over_monolithic_cpu']:.3f}",
          f"{c['encoder']['cpu_s']:.3f} ({c['encoder']['wall_s']:.3f})"] for c in r["per_call"]))
    lines += ["", f"## fuse_arrays on {r['scene']}, default tiling and batch", ""]
    lines += markdown_table(
        ["samples", "steps", "monolithic CPU-s (wall)", "split CPU-s (wall)", "split / monolithic",
         "max |Δ| (normalised)"],
        ([f["samples"], f["steps"], f"{f['monolithic']['cpu_s']:.1f} ({f['monolithic']['wall_s']:.1f})",
          f"{f['split']['cpu_s']:.1f} ({f['split']['wall_s']:.1f})", f"{f['split_over_monolithic_cpu']:.3f}",
          f"{f['max_abs_diff_normalised']:.1e}"] for f in r["fuse_arrays"]))
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--model-onnx", type=Path, required=True, help="an .onnx exported with --split")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op and numba threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    args = ap.parse_args(argv)
    report = run_and_write(NAME, lambda: run(args, argv), to_markdown)
    for c in report["per_call"]:
        print(f"per call {c['tiles']}×{c['side']}² ×{c['samples']} samples: step/monolithic "
              f"{c['step_over_monolithic_cpu']:.3f} (CPU)")
    for f in report["fuse_arrays"]:
        print(f"fuse_arrays samples={f['samples']} steps={f['steps']}: split/monolithic "
              f"{f['split_over_monolithic_cpu']:.3f} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
