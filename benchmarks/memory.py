"""Peak memory of ``ddrf-run`` against scene size: real mosaics of 1×, 4× and 16× the demo scene's pixels.

    python -m benchmarks.memory [--model-onnx P.onnx] [--steps 1] [--threads 1] [--batches 2 4]

The mosaics tile the demo MS and PAN with mirrored copies (continuous at every seam) into larger GeoTIFFs that
keep the demo's origin and pixel sizes, so the pair's geometry is the demo's, only bigger. Each run is a fresh
``ddrf-run`` process with the CLI's default tiling; its peak resident set size comes from ``os.wait4``. A
process that only loads the model gives the fixed part. The scene-size dependence is the 16×/1× ratio.

The working set is one network call: ``batch`` tiles, taken from one row of tiles. The demo (1×) has only 2
tiles per row, so batch 2 (the CLI default) compares scene sizes at the same call size; with ``--batch 4`` the
demo still runs calls of 2 tiles while the mosaics run calls of 4, which shows the cost of a larger call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from ddrf_runtime.datapaths import DEMO_DIR

from ._fixtures import resolve_models
from ._report import environment, environment_lines, markdown_table, say, run_and_write

NAME = "memory"
SIDE_FACTORS = (1, 2, 4)  # mosaic side multiples: 1×, 4×, 16× the pixels
TARGET_RATIO = 1.2
LOAD_ONLY = ("from ddrf_runtime.backends import load_denoiser; import ddrf_runtime.scene; "
             "load_denoiser(sys.argv[1], 'onnx', 'cpu', int(sys.argv[2]))")


def mirror_tile(a: np.ndarray, reps: int) -> np.ndarray:
    """(bands, rows, cols) → (bands, reps·rows, reps·cols) of mirrored copies: every seam is continuous."""
    row = np.concatenate([a if j % 2 == 0 else a[..., ::-1] for j in range(reps)], axis=2)
    return np.concatenate([row if i % 2 == 0 else row[:, ::-1] for i in range(reps)], axis=1)


def write_mosaic(src: Path, dst: Path, reps: int) -> None:
    """``src`` mirrored ``reps``×``reps`` times into a tiled GeoTIFF with the same origin, pixel size and CRS."""
    with rasterio.open(src) as ds:
        data, profile = ds.read(), ds.profile
    data = mirror_tile(data, reps)
    profile.update(height=data.shape[1], width=data.shape[2], tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of a child process; it must exit 0 (its stderr goes to ``log``)."""
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {log.read_text().strip()[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0  # ru_maxrss is KiB on Linux


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "onnxruntime", "rasterio"))
    onnx_path = args.model_onnx or resolve_models(threads=args.threads).onnx
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rss, wall = peak_rss([sys.executable, "-c", "import sys; " + LOAD_ONLY, str(onnx_path), str(args.threads)],
                             work / "load.log")
        load_only = {"peak_rss_mib": rss, "wall_s": wall}
        for reps in SIDE_FACTORS:
            write_mosaic(DEMO_DIR / "ms.tif", work / f"ms_{reps}.tif", reps)
            write_mosaic(DEMO_DIR / "pan.tif", work / f"pan_{reps}.tif", reps)
        for batch in args.batches:
            for reps in SIDE_FACTORS:
                report = work / f"report_{reps}_{batch}.json"
                cmd = [sys.executable, "-m", "ddrf_runtime.cli", str(work / f"ms_{reps}.tif"), "--pan",
                       str(work / f"pan_{reps}.tif"), "-o", str(work / "fused.tif"), "--overwrite",
                       "--model", str(onnx_path), "--steps", str(args.steps), "--threads", str(args.threads),
                       "--batch", str(batch), "--device", "cpu", "--quiet", "--report", str(report)]
                rss, wall = peak_rss(cmd, work / "run.log")
                r = json.loads(report.read_text())
                rows.append({"batch": batch, "pixels_factor": reps * reps, "size": r["size"], "tiles": r["tiles"],
                             "tile_shape": r["tile_shape"], "peak_rss_mib": rss, "wall_s": wall,
                             "timings_s": r["timings_s"]})
                say(NAME, f"batch {batch}, {reps * reps}× ({r['size'][0]}×{r['size'][1]}, {r['tiles']} tiles): "
                          f"peak RSS {rss:.0f} MiB in {wall:.0f} s")
            mine = [x for x in rows if x["batch"] == batch]
            ratios[batch] = mine[-1]["peak_rss_mib"] / mine[0]["peak_rss_mib"]
    return {**env, "model_onnx": str(onnx_path), "steps": args.steps, "threads": args.threads,
            "load_only": load_only, "rows": rows, "ratio_16x_1x": ratios, "target_ratio": TARGET_RATIO}


def to_markdown(r: dict) -> str:
    lines = ["# Peak memory of ddrf-run against scene size", "", *environment_lines(r),
             f"- model: `{r['model_onnx']}`; {r['steps']} step(s), --threads {r['threads']}, CLI default tiling",
             "", f"A process that only imports the runtime and loads the model peaks at "
             f"{r['load_only']['peak_rss_mib']:.0f} MiB. The working set is one network call of up to `--batch` "
             "tiles from one row of tiles; the 1× demo has 2 tiles per row.", ""]
    base = {x["batch"]: x["peak_rss_mib"] for x in reversed(r["rows"])}  # each batch's 1× run
    lines += markdown_table(["--batch", "pixels", "PAN size", "tiles", "peak RSS MiB", "× 1×", "wall s",
                             "fuse+write s"],
                            ((x["batch"], f"{x['pixels_factor']}×", f"{x['size'][0]}×{x['size'][1]}", x["tiles"],
                              f"{x['peak_rss_mib']:.0f}", f"{x['peak_rss_mib'] / base[x['batch']]:.3f}",
                              f"{x['wall_s']:.1f}", f"{x['timings_s']['fuse_and_write']:.1f}") for x in r["rows"]))
    lines.append("")
    for batch, ratio in r["ratio_16x_1x"].items():
        verdict = "flat" if ratio <= r["target_ratio"] else "NOT flat"
        lines.append(f"- **--batch {batch}: 16×/1× peak RSS ratio {ratio:.3f}** (target ≤ {r['target_ratio']}: "
                     f"{verdict})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--model-onnx", type=Path, help="model (default: bundled, else exported from the training run)")
    ap.add_argument("--steps", type=int, default=1, help="sampling steps (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="network threads (default 1)")
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 4], help="--batch values to run (default 2 4)")
    args = ap.parse_args(argv)
    report = run_and_write(NAME, lambda: run(args, argv), to_markdown)
    print("peak RSS 16x/1x: " + ", ".join(f"batch {b}: {v:.2f}x" for b, v in report["ratio_16x_1x"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
