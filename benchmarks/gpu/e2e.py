"""``ddrf-run`` end to end on the 16-MP scene, ONNX Runtime CUDA against the PyTorch backend, on the GPU box.

    python -m benchmarks.gpu.e2e --inputs benchmarks/gpu/inputs --out $OUT [--cpu-smoke] [--budget-s 170]

The scene is ``benchmarks.pipeline.make_scene`` (the demo pair mirror-padded to 4000² PAN pixels; built on the
box: rasterio arrives with the wheels). Each run is ``python -m ddrf_runtime.cli`` in a fresh process, as a user
runs it (session creation, cuDNN's algorithm search and the COG included), writing its ``--report``; the
report's ``timings_s.total`` is the number issue 13's targets are set on, the process's wall time is kept too.
Runs, most important first: onnx fp32 1 step, torch 10 steps, onnx fp32 10 steps, onnx fp16 1 step,
torch 1 step; one is started only while ``--budget-s`` is left. Writes ``e2e.json`` (the reports' timings) and
``e2e.md`` (the table and the target ratios). ``--cpu-smoke``: the CPU, the 800² demo through the same
``make_scene``, 2 steps for 10 (a loaded 2-core machine needs minutes even so).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ddrf_runtime.datapaths import REPO_ROOT

from .._report import environment, environment_lines, markdown_table, say
from .prepare import checkpoint_path, device_parser

NAME = "gpu.e2e"
SIDE, SMOKE_SIDE = 4000, 800  # PAN pixels per side: 16 MP on the box; the smoke test: the demo itself (4 tiles)
TARGET_TOTAL_S = 3.0  # onnx/cuda, 16 MP, 1 step, COG included
TARGET_SPEEDUP_10 = 2.0  # torch/cuda time over onnx/cuda time at 10 steps


@dataclass(frozen=True)
class Run:
    label: str  # row name, e.g. "onnx fp32"
    backend: str  # ddrf-run --backend
    model: str  # file name in the inputs folder, or "checkpoint"
    steps: int


RUNS = (Run("onnx fp32", "onnx", "model.onnx", 1), Run("torch fp32", "torch", "checkpoint", 10),
        Run("onnx fp32", "onnx", "model.onnx", 10), Run("onnx fp16", "onnx", "model.fp16.onnx", 1),
        Run("torch fp32", "torch", "checkpoint", 1))


def nvidia_library_path() -> str:
    """The lib folders of the nvidia-* wheels torch brought (cuBLAS, cuDNN, …), for the loader path.

    A ddrf-run process with the onnx backend imports no torch, and ORT's CUDA provider (RUNPATH $ORIGIN only)
    finds those libraries only on the loader path or through ``ort.preload_dlls()``, which the runtime does
    not call: if a run fails for that, it is retried with them on LD_LIBRARY_PATH and the report says so.
    """
    spec = importlib.util.find_spec("nvidia")
    roots = spec.submodule_search_locations if spec and spec.submodule_search_locations else []
    return ":".join(sorted({str(lib) for root in roots for lib in Path(root).glob("*/lib")}))


def ddrf_run(run: Run, scene: Path, model: Path, device: str, timeout_s: float, env: dict[str, str]) -> dict:
    """One ``ddrf-run`` in a fresh process; its report's timings, providers and size, and the process wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "ddrf_runtime.cli", str(scene / "ms.tif"), "--pan", str(scene / "pan.tif"),
               "-o", f"{tmp}/fused.tif", "--model", str(model), "--backend", run.backend, "--device", device,
               "--steps", str(run.steps), "--report", str(report), "--overwrite", "-q"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", **env))
        wall = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
        r = json.loads(report.read_text())
    return {"timings_s": r["timings_s"], "providers": r["providers"], "size": r["size"], "tiles": r["tiles"],
            "tile_shape": r["tile_shape"], "steps": r["steps"], "process_wall_s": round(wall, 3)}


def run_with_libraries(run: Run, scene: Path, model: Path, device: str, deadline: float, env: dict[str, str],
                       report: dict) -> dict:
    """``ddrf_run``; on CUDA, a failure that names CUDA is retried once with the nvidia wheels' libraries on
    LD_LIBRARY_PATH, which ``env`` then keeps for the later runs and ``report`` records."""
    try:
        return ddrf_run(run, scene, model, device, deadline - time.perf_counter(), env)
    except RuntimeError as e:
        libs = nvidia_library_path()
        if device != "cuda" or env or not libs or "CUDA" not in str(e):
            raise
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, (libs, os.environ.get("LD_LIBRARY_PATH"))))
        report["ld_library_path_added"] = f"after {run.label} {run.steps} step(s) failed: {str(e)[-500:]}"
        say(NAME, f"retrying with the nvidia wheels' libraries on LD_LIBRARY_PATH: {libs}")
        return ddrf_run(run, scene, model, device, deadline - time.perf_counter(), env)


def measure(inputs: Path, out: Path, cpu_smoke: bool, budget_s: float, argv: list[str]) -> dict:
    from ..pipeline import make_scene  # rasterio: imported when the scene is built

    t0 = time.perf_counter()
    device = "cpu" if cpu_smoke else "cuda"
    side = SMOKE_SIDE if cpu_smoke else SIDE
    meta = json.loads((inputs / "meta.json").read_text())
    report = {**environment(NAME, argv, ("torch", "onnxruntime", "onnxruntime-gpu", "rasterio", "numba")),
              "cpu_smoke": cpu_smoke, "device": device, "inputs": meta, "side": side, "runs": []}
    env: dict[str, str] = {}  # added to each ddrf-run's environment (see nvidia_library_path)
    scene = make_scene(side)
    report["scene_build_s"] = round(time.perf_counter() - t0, 2)
    say(NAME, f"scene {scene} ({side}² PAN pixels) in {report['scene_build_s']} s")
    for run in RUNS:
        steps = min(run.steps, 2) if cpu_smoke else run.steps
        row = {**asdict(run), "steps": steps}
        left = budget_s - (time.perf_counter() - t0)
        if left < 10:
            row["skipped"] = "time budget"
        else:
            model = checkpoint_path(inputs, meta) if run.model == "checkpoint" else inputs / run.model
            try:
                row.update(run_with_libraries(Run(run.label, run.backend, run.model, steps), scene, model, device,
                                              t0 + budget_s, env, report))
                say(NAME, f"{run.label} {steps} step(s): {row['timings_s']['total']:.2f} s "
                          f"(process {row['process_wall_s']:.1f} s, {', '.join(row['providers'])})")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                row["error"] = f"{type(e).__name__}: {e}"
                say(NAME, f"{run.label} {steps} step(s) failed: {row['error'][:300]}")
        report["runs"].append(row)
        write(report, out)
    return report


def _total(report: dict, label: str, steps: int) -> float | None:
    for r in report["runs"]:
        if r["label"] == label and r["steps"] == steps and "timings_s" in r:
            return r["timings_s"]["total"]
    return None


def to_markdown(r: dict) -> str:
    smoke = r["cpu_smoke"]
    lines = [f"# ddrf-run end to end, {r['side'] ** 2 / 1e6:.2g}-MP scene, {r['device']}"
             f"{' (CPU SMOKE TEST — not a benchmark)' * smoke}", "", *environment_lines(r),
             f"- scene: the demo pair mirror-padded to {r['side']}² PAN pixels (built in {r.get('scene_build_s')} s)",
             f"- models: exports of {r['inputs']['source']} (step {r['inputs']['checkpoint_step']}) made at "
             f"{r['inputs'].get('export_commit')}; total = the report's timings_s.total (setup, fusion, COG)"]
    if "ld_library_path_added" in r:
        lines.append("- **ONNX Runtime's CUDA provider needed the nvidia wheels' libraries on LD_LIBRARY_PATH** "
                     f"(the runtime does not call ort.preload_dlls): {r['ld_library_path_added'][:300]}")
    lines.append("")
    header = ["run", "steps", "total s", "MP/s", "setup s", "fuse + write s", "COG s", "process s", "providers"]
    rows = []
    for run in r["runs"]:
        if "timings_s" not in run:
            rows.append([run["label"], run["steps"], run.get("skipped") or run.get("error", "")[:120],
                         *[""] * 6])
            continue
        t, (h, w) = run["timings_s"], run["size"]
        rows.append([run["label"], run["steps"], f"{t['total']:.2f}", f"{h * w / 1e6 / t['total']:.2f}",
                     f"{t.get('setup', 0):.2f}", f"{t.get('fuse_and_write', 0):.2f}", f"{t.get('cog', 0):.2f}",
                     f"{run['process_wall_s']:.1f}", ", ".join(run["providers"])])
    lines += markdown_table(header, rows)
    many = 2 if smoke else 10
    lines += ["", "## Issue 13 targets" + " (smoke sizes: not the targets' scene)" * smoke, ""]
    targets = []
    for label in ("onnx fp32", "onnx fp16"):
        total = _total(r, label, 1)
        targets.append((f"ddrf-run --device {r['device']} {label}, 1 step, total ≤ {TARGET_TOTAL_S:g} s",
                        "not measured" if total is None else f"{total:.2f} s",
                        "?" if total is None else "yes" if total <= TARGET_TOTAL_S else "**no**"))
    onnx, torch = _total(r, "onnx fp32", many), _total(r, "torch fp32", many)
    ratio = None if onnx is None or torch is None else torch / onnx
    targets.append((f"{many} steps: torch/{r['device']} time ÷ onnx/{r['device']} time ≥ {TARGET_SPEEDUP_10:g}",
                    "not measured" if ratio is None else f"{ratio:.2f}× ({torch:.2f} s / {onnx:.2f} s)",
                    "?" if ratio is None else "yes" if ratio >= TARGET_SPEEDUP_10 else "**no**"))
    lines += markdown_table(["target", "measured", "met"], targets)
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "e2e.md").write_text(to_markdown(report))


def main(argv: list[str] | None = None) -> int:
    ap = device_parser(NAME, __doc__, "the CPU, the 800² demo, at most 2 steps")
    ap.add_argument("--budget-s", type=float, default=170.0, help="start no run after this")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    report = measure(args.inputs, args.out, args.cpu_smoke, args.budget_s, sys.argv[1:] if argv is None else argv)
    print(to_markdown(report), end="")
    return 1 if any("error" in run for run in report["runs"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
