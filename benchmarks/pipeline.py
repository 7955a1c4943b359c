"""Scene throughput of everything around the network, and with the real network, on a 16-MP scene.

    python -m benchmarks.pipeline [--side 4000] [--repeats 2] [--baseline-tree DIR] [--skip-model] [--quick]
                                  [--stub-latency-ms 8]

The "stub" run replaces the network by x0 = 0 (same inputs, outputs and metadata), so what it measures is the
pipeline's own cost: reading, conditioning (23-tap upsampling, DB1 wavelets, noise), blending, writing and the
COG — the ceiling any GPU box gets, measurable without a GPU. The scene is the bundled demo pair mirror-padded
to ``side``² PAN pixels (16 MP by default). ``--baseline-tree`` runs the same stub through another checkout
(e.g. ``git worktree add /tmp/base 0b459e4``) in the same run, its runs interleaved with this tree's, for
a ratio of throughputs (fastest runs) and of process CPU (medians). Each run is a fresh process.
``--stub-latency-ms`` adds stub runs whose network call waits that long without using a CPU, as a call to an
accelerator does (the H200 took 8 ms per 512² tile, ../shared/docs/gpu.md): whether the CPU work around the
network overlaps with it, which a GPU box's throughput depends on.
The last line is ``pipeline: X MP/s (stub), Y MP/s (model)``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._fixtures import BUNDLED, read_demo
from ._report import environment, environment_lines, markdown_table, run_and_write, say

NAME = "pipeline"
SCENES_DIR = Path(tempfile.gettempdir()) / "ddrf-benchmark-scenes"
REPO = Path(__file__).resolve().parents[1]

# One fused scene in a fresh interpreter: argv = scene dir, output path, model path, stub (0/1), JSON options,
# the stub's wait per network call in seconds.
# The network is swapped by replacing ``scene.load_denoiser``, which every checkout's fuse_scene calls, so the
# same code times this tree and a baseline tree.
_RUN_ONE = r"""
import json, sys, time
import numpy as np
from ddrf_runtime import scene
from ddrf_runtime.pipeline import FuseOptions

scene_dir, out, model, stub, options, latency = sys.argv[1:7]
options, latency = json.loads(options), float(latency)

class ZeroNetwork:
    def __init__(self, real):
        self.spec, self.providers_used, self.versions, self.path = real.spec, ("stub (x0 = 0)",), {}, real.path

    def conditioned(self, cond, wav, samples=1):
        def call(x_t, t):
            time.sleep(latency)  # an accelerator's call: the calling thread waits, no CPU is used
            return np.zeros_like(x_t)
        return call

if stub == "1":
    load = scene.load_denoiser
    scene.load_denoiser = lambda *a, **k: ZeroNetwork(load(*a, **k))
fields = scene.SceneConfig.__dataclass_fields__
config = scene.SceneConfig(model=model, overwrite=True, fuse=FuseOptions(**options.pop("fuse", {})),
                           **{k: v for k, v in options.items() if k in fields})
start, cpu = time.perf_counter(), time.process_time()
report = scene.fuse_scene(f"{scene_dir}/ms.tif", f"{scene_dir}/pan.tif", out, config)
report["timings_s"]["process_total"] = time.perf_counter() - start
report["timings_s"]["process_cpu"] = time.process_time() - cpu  # every thread's CPU: steadier than wall on 2 cores
print(json.dumps({"timings_s": report["timings_s"], "size": report["size"], "providers": report["providers"]}))
"""


def make_scene(side: int, folder: Path = SCENES_DIR) -> Path:
    """The demo pair cropped or mirror-padded to ``side``² PAN pixels (tiled, deflate), made once and cached."""
    import rasterio
    from rasterio.transform import Affine

    out = folder / f"demo_{side}"
    if (out / "pan.tif").exists():
        return out
    demo = read_demo()
    ratio = demo.pan.shape[0] // demo.ms.shape[0]
    if side % ratio:
        raise ValueError(f"side {side} is not a multiple of the ratio {ratio}")
    n = side // ratio
    ms = demo.ms[:n, :n]  # a smaller scene is a crop, a larger one mirrored
    ms = np.pad(ms, ((0, n - ms.shape[0]), (0, n - ms.shape[1]), (0, 0)), mode="symmetric")  # (n, n, C)
    pan = demo.pan[:side, :side]
    pan = np.pad(pan, ((0, side - pan.shape[0]), (0, side - pan.shape[1])), mode="symmetric")  # (side, side)
    with rasterio.open(demo.ms_path) as src:
        crs, ms_transform = src.crs, src.transform
    tmp = Path(tempfile.mkdtemp(dir=folder.parent if folder.exists() else None))
    common = dict(driver="GTiff", dtype="uint16", crs=crs, tiled=True, blockxsize=256, blockysize=256,
                  compress="deflate")
    with rasterio.open(tmp / "ms.tif", "w", count=ms.shape[2], height=ms.shape[0], width=ms.shape[1],
                       transform=ms_transform, **common) as dst:
        dst.write(np.rint(ms).astype(np.uint16).transpose(2, 0, 1))
    with rasterio.open(tmp / "pan.tif", "w", count=1, height=side, width=side,
                       transform=ms_transform * Affine.scale(1 / ratio), **common) as dst:
        dst.write(np.rint(pan).astype(np.uint16)[None])
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def run_scene(tree: Path, scene: Path, model: Path, stub: bool, options: Mapping[str, Any],
              threads: int | None, latency_s: float = 0.0) -> dict:
    """One fused scene through ``tree``'s runtime in a fresh process; its report's timings. ``latency_s``: how
    long each call of the stub network waits."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", _RUN_ONE, str(scene), f"{tmp}/fused.tif", str(model),
                               "1" if stub else "0", json.dumps(dict(options)), str(latency_s)], cwd=tree, env=env,
                              capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"scene run in {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rate(run: dict) -> float:
    h, w = run["size"]
    return h * w / 1e6 / run["timings_s"]["total"]


def measure(label: str, trees: list[tuple[Path, Path]], scene: Path, stub: bool, options: Mapping[str, Any],
            repeats: int, threads: int | None, latency_s: float = 0.0) -> list[dict]:
    """One configuration through each (tree, model) of ``trees`` — this tree first, then the baseline — ``repeats``
    times, the trees' runs interleaved, so that a machine whose speed drifts (a shared VM's does by 10–20 % over
    minutes) slows both alike; a row per tree, labelled ``label`` and ``label, baseline tree``."""
    runs: list[list[dict]] = [[] for _ in trees]
    names = [label] + [f"{label}, baseline tree"] * (len(trees) - 1)
    for i in range(repeats):
        for (tree, model), name, done in zip(trees, names, runs):
            done.append(run_scene(tree, scene, model, stub, options, threads, latency_s))
            say(NAME, f"{name} run {i + 1}/{repeats}: {done[-1]['timings_s']['total']:.2f} s "
                      f"({_rate(done[-1]):.2f} MP/s)")
    rows = []
    for (tree, _), name, done in zip(trees, names, runs):
        best = min(done, key=lambda r: r["timings_s"]["total"])
        rows.append({"label": name, "tree": str(tree), "stub": stub, "options": dict(options), "runs": done,
                     "best": best, "mp_per_s": round(_rate(best), 3),
                     "median_total_s": round(statistics.median(r["timings_s"]["total"] for r in done), 3),
                     "median_cpu_s": round(statistics.median(r["timings_s"]["process_cpu"] for r in done), 3)})
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "onnxruntime", "numba", "rasterio"))
    side = 2000 if args.quick else args.side
    scene = make_scene(side)
    model = args.model or BUNDLED.with_suffix(".onnx")
    base_model = args.baseline_model or model  # a baseline tree may not read this tree's model metadata
    say(NAME, f"scene {scene} ({side}² PAN pixels), model {model}")
    both = [(REPO, model)] + ([(args.baseline_tree, base_model)] if args.baseline_tree else [])
    rows = measure("stub", both, scene, True, {}, args.repeats, None)
    rows += measure("stub, 2 prepare threads, depth 2", [(REPO, model)], scene, True,
                    {"prepare_threads": 2, "queue_depth": 2}, args.repeats, None)
    if args.stub_latency_ms:
        rows += measure(f"stub, {args.stub_latency_ms:g} ms per network call", both, scene, True, {}, args.repeats,
                        None, args.stub_latency_ms / 1000.0)
    if not args.skip_model:
        rows += measure("model (1 step)", both, scene, False, {"fuse": {"steps": 1}}, 1, None)
    return {**env, "side": side, "megapixels": side * side / 1e6, "model": str(model),
            "baseline_model": str(base_model), "rows": rows}


def to_markdown(r: Mapping[str, Any]) -> str:
    own_model = r.get("baseline_model", r["model"]) == r["model"]
    lines = [f"# Scene pipeline throughput ({r['megapixels']:.0f}-MP scene)", ""] + environment_lines(r) + [
        f"- scene: the demo pair mirror-padded to {r['side']}² PAN pixels; model {r['model']}"
        + ("" if own_model else f", baseline tree's model {r['baseline_model']}"),
        "- stub: the network replaced by x0 = 0 (the pipeline's own cost: read, condition, blend, write, COG)", ""]
    header = ["run", "MP/s", "total s", "setup s", "fuse + write s", "COG s", "CPU s (median)", "providers"]
    table = []
    for row in r["rows"]:
        t = row["best"]["timings_s"]
        table.append([row["label"], f"{row['mp_per_s']:.2f}", f"{t['total']:.2f}", f"{t['setup']:.2f}",
                      f"{t['fuse_and_write']:.2f}", f"{t['cog']:.2f}", f"{row['median_cpu_s']:.2f}",
                      ", ".join(row["best"]["providers"])])
    lines += markdown_table(header, table)
    rates = {row["label"]: row["mp_per_s"] for row in r["rows"]}
    if "stub, baseline tree" in rates:
        cpu = {row["label"]: row["median_cpu_s"] for row in r["rows"]}
        lines += ["", f"stub speed-up over the baseline tree: {rates['stub'] / rates['stub, baseline tree']:.2f}x",
                  f"stub CPU over the baseline tree's: {cpu['stub'] / cpu['stub, baseline tree']:.2f}x"]
    waited = [label for label in rates if label.endswith("per network call")]
    if waited and f"{waited[0]}, baseline tree" in rates:
        ratio = rates[waited[0]] / rates[f"{waited[0]}, baseline tree"]
        lines += [f"{waited[0]}: speed-up over the baseline tree {ratio:.2f}x"]
    if "model (1 step), baseline tree" in rates:
        lines += [f"model-run speed-up over the baseline tree: "
                  f"{rates['model (1 step)'] / rates['model (1 step), baseline tree']:.2f}x"]
    model = rates.get("model (1 step)")
    lines += ["", f"pipeline: {rates['stub']:.2f} MP/s (stub), "
                  f"{'not run' if model is None else f'{model:.2f} MP/s'} (model)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=4000, help="PAN pixels per side of the padded scene (4000: 16 MP)")
    ap.add_argument("--repeats", type=int, default=2, help="stub runs per configuration (the fastest is kept)")
    ap.add_argument("--baseline-tree", type=Path, help="another checkout to run the same stub through")
    ap.add_argument("--model", type=Path, help="ONNX model (default: the bundled 4-band model)")
    ap.add_argument("--baseline-model", type=Path, help="the baseline tree's ONNX model (default: --model)")
    ap.add_argument("--skip-model", action="store_true", help="stub runs only")
    ap.add_argument("--quick", action="store_true", help="a 4-MP scene (2000² PAN pixels)")
    ap.add_argument("--stub-latency-ms", type=float, default=0.0,
                    help="also time a stub whose network call waits this long without CPU, like an accelerator's")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    run_and_write(NAME + ("_quick" if args.quick else ""), lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
