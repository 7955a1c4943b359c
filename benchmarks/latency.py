"""CPU latency of the denoiser and of whole-scene fusion: ONNX Runtime (the product) against PyTorch.

    python -m benchmarks.latency [--quick] [--model-pt P.pt] [--model-onnx P.onnx] [--threads 1] [--profile 1x512]

Per network call (batch × tile grid): PyTorch eager fp32 (``ddrf_train.backend.TorchDenoiser``) against ONNX
Runtime CPU fp32 (``ddrf_runtime.session.Denoiser``) on the same weights and the same real inputs (demo-scene
tiles, each tile's seeded noise, t = T−1). The outputs are compared first; a configuration whose outputs
disagree gets no speed-up. Times are medians over repeats after a warm-up.

Per scene: ``fuse_scene`` (what ``ddrf-run`` runs) with ``--backend onnx`` and ``--backend torch`` on the demo
scene with identical options and threads, and the pure PyTorch pipeline (``ddrf_train.sample`` on torch tensors
over the same tiles and noise); outputs are compared pairwise. When ONNX Runtime is less than 2× faster
somewhere, the configuration with the smallest speed-up is profiled per operator in both runtimes (``--profile``
adds others).

Without a bundled model the training run's newest checkpoint is exported first (about a minute, cached).
Writes ``benchmarks/results/latency[_quick].{md,json}``; the last printed line is the headline.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from itertools import product
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rasterio
import torch

from ddrf_runtime.backends import Backend
from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.pipeline import FuseOptions, Radiometry, condition_tile, make_grid, scene_base, scene_moments
from ddrf_runtime.scene import SceneConfig, fuse_scene
from ddrf_runtime.session import Denoiser, Device
from ddrf_runtime.tiling import tile_noise
from ddrf_train import sample
from ddrf_train.backend import TorchDenoiser

from ._fixtures import (DemoScene, Models, add_model_pair_options, image_difference, limit_threads, network_inputs,
                        read_demo, resolve_models)
from ._report import environment, environment_lines, markdown_table, median_seconds, say, run_and_write

NAME = "latency"
FULL_GRID = tuple(product((1, 4, 8), (128, 256, 512)))  # (batch, tile)
QUICK_GRID = tuple(product((1, 4), (128, 256)))
# Agreement of one call, in fused-image units (x0 decoded, full scale = 1): 1e-4 is 0.2 DN at 11 bits.
CALL_TOL = 1e-4
TARGET_SPEEDUP = 2.0
PROFILE_TOP = 8  # operators listed per runtime in a profile


def per_call(onnx_d: Denoiser, torch_d: TorchDenoiser, scene: DemoScene, grid: tuple[tuple[int, int], ...],
             repeats: int) -> list[dict]:
    """One row per (batch, tile): agreement first, then median times of both runtimes."""
    spec, t = onnx_d.spec, onnx_d.spec.timesteps - 1
    rows = []
    for batch, tile in grid:
        x_t, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, spec, tile, batch)
        run_onnx, run_torch = onnx_d.conditioned(cond, wav), torch_d.conditioned(cond, wav)
        ref, got = run_torch(x_t, t), run_onnx(x_t, t)  # also the warm-up of both
        diff = image_difference(spec, got, ref)
        row = {"batch": batch, "tile": tile, "max_abs_diff_x0": float(np.abs(got - ref).max()),
               "max_abs_diff_image": diff, "agree": diff <= CALL_TOL}
        row["torch_s"] = median_seconds(lambda: run_torch(x_t, t), repeats, warmup=0)
        row["onnx_s"] = median_seconds(lambda: run_onnx(x_t, t), repeats, warmup=0)
        row["speedup"] = row["torch_s"] / row["onnx_s"] if row["agree"] else None
        say(NAME, f"batch {batch} tile {tile}: torch {row['torch_s']:.3f} s, onnx {row['onnx_s']:.3f} s, "
                  f"max |Δ| {diff:.1e}")
        rows.append(row)
    return rows


def torch_pipeline(model: torch.nn.Module, spec: ModelSpec, scene: DemoScene, options: FuseOptions) -> np.ndarray:
    """Fuse the demo scene as a PyTorch user would: ``ddrf_train.sample`` per batch of tiles, then blend.

    Same tiles, conditioning and noise as the runtime (``condition_tile``, ``tile_noise``); the DWT, sampler
    loop, network and decoding run in torch. Returns (H, W, C) float32 DN clipped to [0, full scale].
    """
    grid = make_grid(spec, options, scene.pan.shape[0], scene.pan.shape[1])
    radiometry = Radiometry.of(spec, options.requested_value_scale(spec, scene.depth), scene.scale,
                               scene_moments(scene.ms, scene.pan, spec.ratio, scene.scale))
    stats = scene_base(spec.target, scene.ms, scene.pan, spec.ratio, radiometry.unit)  # as fuse_arrays's
    c, (th, tw) = spec.num_bands, grid.tile_shape
    out = np.zeros(scene.pan.shape[:2] + (c,), np.float32)
    for b0 in range(0, len(grid.tiles), options.batch):
        group = grid.tiles[b0:b0 + options.batch]
        cond, base = (torch.from_numpy(np.stack(a)) for a in zip(*(
            condition_tile(grid, t, scene.ms[t.ms.slices], scene.pan[t.pan.slices], radiometry.unit, spec.target,
                           stats) for t in group)))  # (B, C+k, th, tw), (B, C, th, tw)
        noise = torch.from_numpy(np.stack([tile_noise(options.seed, t.window.row, t.window.col, (c, th, tw))
                                           for t in group]))
        fused = sample(model, cond[:, :c], cond[:, c:], options.num_steps(spec), noise=noise,
                       base=base)  # (B, C, th, tw)
        fused = (fused * radiometry.unit).clamp(0.0, radiometry.full_scale).permute(0, 2, 3, 1).numpy()
        for tile, values in zip(group, fused):
            grid.blend(out, tile, values)
    return out


def per_scene(models: Models, spec: ModelSpec, scene: DemoScene, options: FuseOptions, threads: int, repeats: int,
              workdir: Path) -> dict:
    """Wall time of each path (median of ``repeats``) and the pairwise differences of their outputs."""
    times: dict[str, list[float]] = defaultdict(list)
    outputs: dict[str, np.ndarray] = {}
    reports = {}
    for backend, model in ((Backend.ONNX, models.onnx), (Backend.TORCH, models.pt)):
        config = SceneConfig(model=str(model), backend=backend, device=Device.CPU, fuse=options, threads=threads,
                             overwrite=True)
        out_path = workdir / f"fused_{backend.value}.tif"
        for _ in range(repeats):
            t0 = time.perf_counter()
            reports[backend.value] = fuse_scene(scene.ms_path, scene.pan_path, out_path, config)
            times[f"ddrf-run --backend {backend.value}"].append(time.perf_counter() - t0)
        with rasterio.open(out_path) as ds:
            outputs[backend.value] = ds.read().transpose(1, 2, 0).astype(np.float64)
        say(NAME, f"scene {backend.value}: {times[f'ddrf-run --backend {backend.value}']} s")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = TorchDenoiser(models.pt, Device.CPU, threads).model  # loading is part of the run, as above
        outputs["pytorch"] = torch_pipeline(model, spec, scene, options).astype(np.float64)
        times["pure PyTorch (ddrf_train.sample)"].append(time.perf_counter() - t0)
    say(NAME, f"scene pure PyTorch: {times['pure PyTorch (ddrf_train.sample)']} s")
    diffs = {}
    for a, b in (("onnx", "torch"), ("onnx", "pytorch"), ("torch", "pytorch")):
        dn = float(np.abs(outputs[a] - outputs[b]).max())
        diffs[f"{a} vs {b}"] = {"max_abs_diff_dn": dn, "max_abs_diff_normalised": dn / scene.scale}
    median = {k: statistics.median(v) for k, v in times.items()}
    onnx_s, torch_s = median["ddrf-run --backend onnx"], median["ddrf-run --backend torch"]
    return {"options": asdict(options), "size": reports["onnx"]["size"], "tiles": reports["onnx"]["tiles"],
            "tile_shape": reports["onnx"]["tile_shape"],
            "steps": reports["onnx"]["steps"], "full_scale": scene.scale, "repeats": repeats, "times_s": times,
            "median_s": median, "fuse_and_write_s": {k: r["timings_s"]["fuse_and_write"] for k, r in reports.items()},
            "speedup_onnx_vs_torch": torch_s / onnx_s, "speedup_onnx_vs_pytorch":
                median["pure PyTorch (ddrf_train.sample)"] / onnx_s, "diffs": diffs}


def ort_profile(path: Path, threads: int, feeds: dict[str, np.ndarray], runs: int, workdir: Path) -> dict[str, float]:
    """Mean ms per call by ONNX operator type, from ONNX Runtime's own profiler (kernel time of each node)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort_profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_run: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    run_index = -1
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            run_index += 1
        elif e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_run[run_index][e["args"]["op_name"]] += e["dur"] / 1e3
    runs_kept = [v for k, v in per_run.items() if k > 0] or list(per_run.values())  # drop the warm-up run
    ops = {op for r in runs_kept for op in r}
    return {op: sum(r.get(op, 0.0) for r in runs_kept) / len(runs_kept) for op in ops}


def torch_profile(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], runs: int) -> dict[str, float]:
    """Mean ms per call by aten operator (self CPU time), from torch.profiler."""
    with torch.inference_mode():
        model(*inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(*inputs)
    return {e.key: e.self_cpu_time_total / 1e3 / runs for e in prof.key_averages() if e.self_cpu_time_total > 0}


def profile(models: Models, onnx_d: Denoiser, torch_d: TorchDenoiser, scene: DemoScene, batch: int, tile: int,
            threads: int, workdir: Path, runs: int = 3) -> dict:
    """Per-operator time of both runtimes on one configuration (the same inputs as the timing)."""
    spec = onnx_d.spec
    x_t, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, spec, tile, batch)
    t = np.full(batch, spec.timesteps - 1, np.int64)
    ort_ms = ort_profile(models.onnx, threads, {"x_t": x_t, "t": t, "cond": cond, "wav": wav}, runs, workdir)
    torch_ms = torch_profile(torch_d.model, tuple(torch.from_numpy(a) for a in (x_t, t, cond, wav)), runs)

    def top(ms: dict[str, float]) -> list[dict]:
        total = sum(ms.values())
        return [{"op": k, "ms": v, "share": v / total} for k, v in sorted(ms.items(), key=lambda kv: -kv[1])
                ][:PROFILE_TOP]
    return {"batch": batch, "tile": tile, "runs": runs, "onnx_total_ms": sum(ort_ms.values()),
            "torch_total_ms": sum(torch_ms.values()), "onnx_top": top(ort_ms), "torch_top": top(torch_ms)}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    limit_threads(args.threads)
    env = environment(NAME, argv, ("numpy", "torch", "onnxruntime", "onnx", "numba", "rasterio"))
    models = resolve_models(args.model_pt, args.model_onnx, threads=args.threads)
    say(NAME, f"models: {models.pt}, {models.onnx} ({models.source})")
    onnx_d = Denoiser(models.onnx, Device.CPU, args.threads)
    torch_d = TorchDenoiser(models.pt, Device.CPU, args.threads)
    scene = read_demo()
    repeats = args.repeats or (3 if args.quick else 5)
    calls = per_call(onnx_d, torch_d, scene, QUICK_GRID if args.quick else FULL_GRID, repeats)
    options = FuseOptions(steps=args.steps, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        scenes = per_scene(models, onnx_d.spec, scene, options, args.threads, 1 if args.quick else 3, Path(tmp))
        agreeing = [r for r in calls if r["agree"]]
        worst = min(agreeing, key=lambda r: r["speedup"], default=None)
        wanted = {(b, t): "asked for (--profile)" for b, t in args.profile or ()}
        slow = scenes["speedup_onnx_vs_torch"] < TARGET_SPEEDUP
        if worst is not None and (worst["speedup"] < TARGET_SPEEDUP or slow):
            wanted.setdefault((worst["batch"], worst["tile"]),
                              f"the smallest per-call speed-up, {worst['speedup']:.2f}×")
        profiles = []
        for (batch, tile), reason in wanted.items():
            say(NAME, f"profiling batch {batch} tile {tile} ({reason})")
            profiles.append({**profile(models, onnx_d, torch_d, scene, batch, tile, args.threads, Path(tmp)),
                             "reason": reason})
    return {**env, "quick": args.quick, "threads": args.threads, "models": {"pt": str(models.pt),
            "onnx": str(models.onnx), "source": models.source, "checkpoint_step": torch_d.versions["checkpoint_step"]},
            "call_tolerance_image": CALL_TOL, "timestep": onnx_d.spec.timesteps - 1, "repeats": repeats,
            "calls": calls, "scene": scenes, "profiles": profiles}


def to_markdown(r: dict) -> str:
    s = r["scene"]
    lines = [f"# Latency on CPU: ONNX Runtime vs PyTorch ({'quick' if r['quick'] else 'full'})", "",
             *environment_lines(r),
             f"- model: {r['models']['source']}, checkpoint step {r['models']['checkpoint_step']}",
             f"- threads: {r['threads']} per path (torch.set_num_threads, ORT intra-op, numba); other work on the "
             "machine shares the cores (CPU/wall below 1 above means this run was slowed by it)",
             "", "## Per denoiser call", "",
             f"Same weights and inputs (demo-scene tiles, t = {r['timestep']}); median of {r['repeats']} calls after a "
             f"warm-up. Δ = max |difference| of the outputs in fused-image units (full scale 1; tolerance "
             f"{r['call_tolerance_image']:g}). Speed-up = torch time / ONNX Runtime time.", ""]
    lines += markdown_table(
        ["batch", "tile", "torch ms", "ORT ms", "speed-up", "Δ image", "Δ x0", "agree"],
        ((c["batch"], c["tile"], f"{1e3 * c['torch_s']:.1f}", f"{1e3 * c['onnx_s']:.1f}",
          f"{c['speedup']:.2f}×" if c["speedup"] else "—", f"{c['max_abs_diff_image']:.1e}",
          f"{c['max_abs_diff_x0']:.1e}", "yes" if c["agree"] else "**no**") for c in r["calls"]))
    o = s["options"]
    lines += ["", "## Per scene", "",
              f"Demo scene {s['size'][0]}×{s['size'][1]} PAN pixels, {s['tiles']} tiles of "
              f"{s['tile_shape'][0]}×{s['tile_shape'][1]} (ddrf-run's default tiling), batch {o['batch']}, "
              f"{s['steps']} step(s), seed {o['seed']}; wall time of the "
              f"whole in-process run (model load, read, fuse, COG write; the pure PyTorch path loads, fuses in memory "
              f"and writes nothing), median of {s['repeats']}.", ""]
    base = s["median_s"]["ddrf-run --backend onnx"]
    lines += markdown_table(["path", "wall s", "fuse + write s", "× ONNX time"],
                            ((k, f"{v:.2f}", f"{s['fuse_and_write_s'].get(k.split()[-1], float('nan')):.2f}"
                              if k.startswith("ddrf-run") else "—", f"{v / base:.2f}")
                             for k, v in s["median_s"].items()))
    lines += ["", "Output agreement (the ddrf-run outputs are rounded to the input's integer DN):", ""]
    lines += markdown_table(["pair", "max |Δ| DN", "max |Δ| normalised"],
                            ((k, f"{v['max_abs_diff_dn']:.3g}", f"{v['max_abs_diff_normalised']:.1e}")
                             for k, v in s["diffs"].items()))
    for p in r["profiles"]:
        lines += ["", f"## Per-operator profile: batch {p['batch']}, tile {p['tile']}", "",
                  f"Profiled because: {p['reason']}. Mean of {p['runs']} calls; operator time totals "
                  f"{p['onnx_total_ms']:.1f} ms (ORT kernels) and {p['torch_total_ms']:.1f} ms (torch self CPU time).",
                  ""]
        for key, title in (("onnx_top", "ONNX Runtime op type"), ("torch_top", "torch aten op")):
            lines += markdown_table([title, "ms per call", "share"],
                                    ((e["op"], f"{e['ms']:.2f}", f"{100 * e['share']:.1f} %") for e in p[key]))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _config(text: str) -> tuple[int, int]:
    batch, tile = text.lower().split("x")
    return int(batch), int(tile)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1/4 × tile 128/256, 3 repeats, one scene run each")
    add_model_pair_options(ap)
    ap.add_argument("--threads", type=int, default=1, help="threads per path (default 1)")
    ap.add_argument("--steps", type=int, help="sampling steps of the scene runs (default: the model's)")
    ap.add_argument("--repeats", type=int, help="timed calls per configuration (default 5, quick 3)")
    ap.add_argument("--profile", type=_config, action="append", metavar="BATCHxTILE",
                    help="also profile this configuration per operator (e.g. 1x512); repeatable")
    args = ap.parse_args(argv)
    report = run_and_write(f"{NAME}_quick" if args.quick else NAME, lambda: run(args, argv), to_markdown)
    s = report["scene"]
    ok = all(c["agree"] for c in report["calls"])
    print(f"scene speedup onnx/torch (cpu): {s['speedup_onnx_vs_torch']:.2f}x, max abs diff "
          f"{s['diffs']['onnx vs torch']['max_abs_diff_normalised']:.1g}" + ("" if ok else " (PER-CALL MISMATCH)"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
