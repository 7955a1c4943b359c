"""Fusion quality on the fixed test splits: reduced-resolution (Wald) and full-resolution metrics per method.

    python -m benchmarks.quality [--family 4band|8band|all] [--methods EXP GSA ...] [--out benchmarks/results]

Writes ``quality_<family>.md`` and ``.json`` (machine, versions, date, command) and prints the markdown.
Every method is a *fuser*: a callable taking a ``datasets.Pair`` (fuse ``ms_lr`` with ``pan``) or a
``datasets.FullRes`` (fuse ``ms`` with ``pan``) and returning the fused H×W×C image in DN. The classical
baselines are registered by default; a learned model joins the table by adding one entry to the mapping
passed to ``evaluate`` (that is where a ``--model path.onnx`` option will plug in its runtime callable).

Protocol: fused images are clipped to [0, full scale] (what a delivered product holds; the DDRF runtime
clips too), no border is cropped, metrics follow ``ddrf_runtime.metrics`` (toolbox semantics).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ddrf_runtime import baselines, datasets
from ddrf_runtime.metrics import full_resolution_metrics, reduced_resolution_metrics

Sample = datasets.Pair | datasets.FullRes
Fuser = Callable[[Sample], np.ndarray]

REDUCED = ("SAM", "ERGAS", "Q2n", "SCC", "PSNR")
FULL = ("D_lambda", "D_s", "HQNR")
_DECIMALS = {"SAM": 3, "ERGAS": 3, "Q2n": 4, "SCC": 4, "PSNR": 2, "D_lambda": 4, "D_s": 4, "HQNR": 4}
_BETTER = {"SAM": "↓", "ERGAS": "↓", "Q2n": "↑", "SCC": "↑", "PSNR": "↑",
           "D_lambda": "↓", "D_s": "↓", "HQNR": "↑"}
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def classical_fuser(method: str) -> Fuser:
    """A baseline of ``ddrf_runtime.baselines`` as a fuser."""
    def fuse(sample: Sample) -> np.ndarray:
        ms = sample.ms_lr if isinstance(sample, datasets.Pair) else sample.ms
        return baselines.fuse(method, ms, sample.pan, sample.ratio, sample.sensor)
    return fuse


def default_methods() -> dict[str, Fuser]:
    return {m: classical_fuser(m) for m in baselines.METHODS}


def _score(fusers: Mapping[str, Fuser], sample: Sample) -> dict[str, dict[str, float]]:
    """Every method's metrics (and fusion seconds) on one sample."""
    rows = {}
    for name, fuse in fusers.items():
        t0 = time.perf_counter()
        fused = np.clip(fuse(sample), 0.0, sample.full_scale)
        seconds = time.perf_counter() - t0
        if isinstance(sample, datasets.Pair):
            row = reduced_resolution_metrics(sample.gt, fused, sample.ratio, sample.full_scale)
        else:
            row = full_resolution_metrics(fused, sample.lms, sample.pan, sample.sensor, sample.ratio)
        rows[name] = {**row, "fuse_s": seconds}
    return rows


def _summary(per_scene: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """method → metric → [mean, std] over scenes."""
    methods = next(iter(per_scene.values()), {})
    return {
        m: {k: [float(np.mean(v)), float(np.std(v))]
            for k in methods[m] for v in [[scene[m][k] for scene in per_scene.values()]]}
        for m in methods
    }


def evaluate(family: str, fusers: Mapping[str, Fuser]) -> dict:
    """All metrics of ``fusers`` on the family's reduced- and full-resolution test scenes."""
    reduced = {p.name: _score(fusers, p) for p in datasets.reduced_resolution_split(family, "test")}
    full = {f.name: _score(fusers, f) for f in datasets.full_resolution_split(family)}
    return {
        "family": family,
        "ratio": datasets.FAMILY_RATIO,
        "bands": datasets.FAMILY_BANDS[family],
        "reduced": reduced,
        "reduced_mean": _summary(reduced),
        "full": full,
        "full_mean": _summary(full),
    }


def _table(rows: Mapping[str, Mapping[str, object]], metrics: tuple[str, ...]) -> list[str]:
    head = ["method", *(f"{k} {_BETTER[k]}" for k in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in rows.items():
        cells = []
        for k in metrics:
            v, d = row[k], _DECIMALS[k]
            cells.append(f"{v[0]:.{d}f} ± {v[1]:.{d}f}" if isinstance(v, list) else f"{v:.{d}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(res: Mapping, env: Mapping) -> str:
    out = [
        f"# Fusion quality, family {res['family']} ({res['bands']} bands, ratio {res['ratio']})", "",
        f"`{env['command']}` — {env['date']}, {env['machine']['cpu']} ({env['machine']['cores']} cores), "
        f"numpy {env['versions']['numpy']}", "",
        "Reduced resolution: Wald protocol on the held-out test regions (reference = original MS). "
        "Full resolution: original data, no reference. Fused images clipped to [0, full scale]; no border crop.",
    ]
    for key, title, metrics in (("reduced", "Reduced resolution", REDUCED), ("full", "Full resolution", FULL)):
        out += ["", f"## {title}"]
        for scene, rows in res[key].items():
            out += ["", f"### {scene}", "", *_table(rows, metrics)]
        out += ["", f"### mean ± std over {len(res[key])} scenes", "", *_table(res[f"{key}_mean"], metrics)]
    return "\n".join(out) + "\n"


def _environment(argv: list[str]) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    versions = {p: metadata.version(p) for p in ("numpy", "scipy", "rasterio")}
    versions["python"] = platform.python_version()
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    versions["ddrf_commit"] = git.stdout.strip() or None
    return {
        "command": " ".join(["python -m benchmarks.quality", *argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=[*datasets.SPLITS, "all"], default="all")
    ap.add_argument("--methods", nargs="+", choices=baselines.METHODS, default=list(baselines.METHODS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    registry = default_methods()
    fusers = {m: registry[m] for m in args.methods}
    env = _environment(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for family in datasets.SPLITS if args.family == "all" else [args.family]:
        res = evaluate(family, fusers)
        md = to_markdown(res, env)
        (args.out / f"quality_{family}.md").write_text(md)
        (args.out / f"quality_{family}.json").write_text(json.dumps({**env, **res}, indent=1) + "\n")
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
