"""Quality and time against the number of sampling steps, on the 4-band test split (Wald protocol).

    python -m benchmarks.steps [--quick] [--model-onnx P.onnx] [--threads 1]

Every pair of ``reduced_resolution_split("4band", "test")`` is fused with ``fuse_arrays`` (ONNX Runtime CPU,
default tiling, seed 0, the pair's bit depth) at 1, 2, 5, 10, 25 and 50 DDIM steps (quick: 1, 2, 5) and
scored against its reference with ERGAS, SAM and Q2n (``ddrf_runtime.evaluation.metrics``, fused image clipped as
delivered). Times are the fusion wall time summed over the split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np

from ddrf_runtime.evaluation import datasets
from ddrf_runtime.evaluation.metrics import ergas, q2n, sam
from ddrf_runtime.pipeline import FuseOptions, fuse_arrays
from ddrf_runtime.session import Denoiser, Device

from ._fixtures import resolve_models
from ._report import environment, environment_lines, markdown_table, say, run_and_write

NAME = "steps"
FULL_STEPS = (1, 2, 5, 10, 25, 50)
QUICK_STEPS = (1, 2, 5)


def score(denoiser: Denoiser, pairs: list[datasets.Pair], steps: int) -> dict:
    """Mean ERGAS/SAM/Q2n over ``pairs`` at ``steps`` steps, per-pair values and the summed fusion time."""
    per_pair, seconds = {}, 0.0
    for pair in pairs:
        options = FuseOptions(steps=steps, bit_depth=pair.bit_depth, seed=0)
        t0 = time.perf_counter()
        fused = fuse_arrays(pair.ms_lr, pair.pan, denoiser, options)
        seconds += time.perf_counter() - t0
        per_pair[pair.name] = {"ERGAS": ergas(pair.gt, fused, pair.ratio), "SAM": sam(pair.gt, fused),
                               "Q2n": q2n(pair.gt, fused)}
    mean = {k: float(np.mean([v[k] for v in per_pair.values()])) for k in ("ERGAS", "SAM", "Q2n")}
    return {"steps": steps, **mean, "fuse_s": seconds, "per_pair": per_pair}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "onnxruntime", "numba"))
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    onnx_path = args.model_onnx or resolve_models(threads=args.threads).onnx
    denoiser = Denoiser(onnx_path, Device.CPU, args.threads)
    pairs = datasets.reduced_resolution_split("4band", "test")
    megapixels = sum(p.pan.shape[0] * p.pan.shape[1] for p in pairs) / 1e6
    rows = []
    for steps in QUICK_STEPS if args.quick else FULL_STEPS:
        rows.append(score(denoiser, pairs, steps))
        r = rows[-1]
        say(NAME, f"{steps} steps: ERGAS {r['ERGAS']:.3f}, SAM {r['SAM']:.3f}, Q2n {r['Q2n']:.4f}, {r['fuse_s']:.1f} s")
    return {**env, "quick": args.quick, "threads": args.threads, "model_onnx": str(onnx_path),
            "checkpoint_sha256": denoiser.spec.checkpoint_sha256, "training_data": denoiser.spec.training_data,
            "pairs": [p.name for p in pairs], "megapixels": megapixels, "rows": rows}


def to_markdown(r: dict) -> str:
    lines = [f"# Quality and time against sampling steps ({'quick' if r['quick'] else 'full'})", "",
             *environment_lines(r), f"- model: `{r['model_onnx']}` ({r['training_data']})",
             f"- data: 4-band test split, {len(r['pairs'])} Wald pairs, {r['megapixels']:.2f} PAN megapixels; "
             f"ONNX Runtime CPU, {r['threads']} thread(s), default tiling, seed 0", ""]
    lines += markdown_table(["steps", "ERGAS ↓", "SAM ° ↓", "Q2n ↑", "fuse s (split)", "s per megapixel"],
                            ((x["steps"], f"{x['ERGAS']:.3f}", f"{x['SAM']:.3f}", f"{x['Q2n']:.4f}",
                              f"{x['fuse_s']:.1f}", f"{x['fuse_s'] / r['megapixels']:.1f}") for x in r["rows"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"steps {', '.join(map(str, QUICK_STEPS))} only")
    ap.add_argument("--model-onnx", type=Path, help="model (default: bundled, else exported from the training run)")
    ap.add_argument("--threads", type=int, default=1, help="network threads (default 1)")
    args = ap.parse_args(argv)
    run_and_write(f"{NAME}_quick" if args.quick else NAME, lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
