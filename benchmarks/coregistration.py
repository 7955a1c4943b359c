"""What co-registration from the pixels finds on the shared data's GeoTIFF pairs, and what fusing them moved does.

    python -m benchmarks.coregistration [--steps 1]

Each pair of ``geotiff/`` that a bundled model fuses (its ratio and band count) goes through ``fuse_scene`` with
``--coregister off`` and ``auto``: the report's registration (offset, correlation as georeferenced and moved, each
quadrant's offset) and the full-resolution D_λ / D_s / HQNR of both outputs on the same central crop. There is no
reference at full resolution: HQNR is the only score, and D_s (the fused bands' relation to the PAN across
scales) is what a misregistered PAN spoils.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ddrf_runtime.datapaths import data_root
from ddrf_runtime.pipeline import FuseOptions
from ddrf_runtime.registration import Coregistration
from ddrf_runtime.scene import SceneConfig, fuse_scene

from ._report import environment, environment_lines, markdown_table, run_and_write, say

NAME = "coregistration"
PAIRS = {  # name: (MS, PAN) under geotiff/ of the shared data
    "osman (the demo)": ("osman_4band_r4/ms.tif", "osman_4band_r4/pan.tif"),
    "shanghai (SpaceNet-2 WV3)": ("spacenet2_shanghai_wv3_8band_r4/MUL_AOI_4_Shanghai_img1920.tif",
                                  "spacenet2_shanghai_wv3_8band_r4/PAN_AOI_4_Shanghai_img1920.tif"),
    "cristianics (WV3, float)": ("cristianics_8band_r4/mul.tif", "cristianics_8band_r4/pan.tif"),
}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "onnxruntime", "rasterio"))
    root = data_root() / "geotiff"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ms, pan) in PAIRS.items():
            runs = {}
            for mode in (Coregistration.OFF, Coregistration.AUTO):
                say(NAME, f"{name}: --coregister {mode.value}")
                config = SceneConfig(fuse=FuseOptions(steps=args.steps), metrics=True, coregister=mode,
                                     overwrite=True)
                report = fuse_scene(root / ms, root / pan, Path(tmp) / "fused.tif", config)
                runs[mode.value] = {k: report[k] for k in ("registration", "metrics", "size", "model")}
            rows[name] = runs
    return {**env, "steps": args.steps, "pairs": {k: list(v) for k, v in PAIRS.items()}, "rows": rows}


def to_markdown(r: Mapping[str, Any]) -> str:
    lines = [f"# Co-registration from the pixels on the shared GeoTIFF pairs ({r['steps']} step)", ""]
    lines += environment_lines(r) + ["- pairs: `geotiff/` of the shared data, the bundled model for their bands", ""]
    header = ["pair", "offset (rows, cols)", "correlation as paired → moved", "quadrants", "applied",
              "HQNR off → auto", "D_s off → auto", "D_λ off → auto", "size off → auto"]
    table = []
    for name, runs in r["rows"].items():
        reg, off, auto = runs["auto"]["registration"], runs["off"]["metrics"], runs["auto"]["metrics"]
        table.append([name, str(tuple(reg["offset"])), f"{reg['correlation']:.3f} → {reg['best_correlation']:.3f}",
                      " ".join(str(tuple(q)) if q else "–" for q in reg["quadrants"]),
                      "yes" if reg["applied"] else "no",
                      f"{off['HQNR']:.4f} → {auto['HQNR']:.4f}", f"{off['D_s']:.4f} → {auto['D_s']:.4f}",
                      f"{off['D_lambda']:.4f} → {auto['D_lambda']:.4f}",
                      f"{'×'.join(map(str, runs['off']['size']))} → {'×'.join(map(str, runs['auto']['size']))}"])
    return "\n".join(lines + markdown_table(header, table) + [""])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1, help="sampling steps (default 1, the bundled models' default)")
    args = ap.parse_args(argv)
    run_and_write(NAME, lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
