"""The GPU benchmark's inputs, in two halves: the exports made here, the tensors made on the GPU box.

    python -m benchmarks.gpu.prepare [--model-pt P.pt] [--out benchmarks/gpu/inputs]     # here (CPU machine)
    python -m benchmarks.gpu.prepare --tensors-only --out DIR                            # on the box (run_all.sh)

Here: ``model.onnx`` and ``model.fp16.onnx`` are exported afresh from the checkpoint by the CURRENT
``export.to_onnx`` (never a cached or bundled export, which may predate a change to the graph), and ``meta.json``
names the checkpoint: a checkpoint inside the repository travels with the checkout, any other is copied as
``model.pt`` (its release copy). About 15 MB: the folder is carried by the device call beside the checkout,
64 MiB in all (benchmarks/gpu/README.md).
On the box (rasterio arrives with the wheels): ``cond.npy``/``wav.npy``, 4 real demo tiles of 512² as the network
sees them (smaller tiles are crops), and the parity anchor ``anchor_x_t.npy``/``anchor_x0.npy``: PyTorch CPU fp32
x0 of tile 0 at 512², t = T−1. Made there because they would not fit in the call beside the checkout.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ddrf_runtime.datapaths import REPO_ROOT

from .._report import say

NAME = "gpu.prepare"
INPUTS_DIR = Path(__file__).resolve().parent / "inputs"


def device_parser(name: str, doc: str, smoke_help: str) -> argparse.ArgumentParser:
    """The options every script run on the GPU box takes: its inputs, its results folder, the CPU smoke mode."""
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc.splitlines()[0])
    ap.add_argument("--inputs", type=Path, default=INPUTS_DIR)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help=smoke_help)
    return ap
TILE, TILES = 512, 4  # the largest benchmarked tile; distinct real tiles of the demo scene
ANCHOR_TILE = 512  # the shape every variant is timed at (torch.compile and CUDA-graph rows: no extra compile)
FILES = ("model.pt", "model.onnx", "model.fp16.onnx", "meta.json", "cond.npy", "wav.npy", "anchor_x_t.npy",
         "anchor_x0.npy")


def checkpoint_path(inputs: Path, meta: dict) -> Path:
    """The checkpoint the exports were made from: in the repository, or copied beside them."""
    return REPO_ROOT / meta["model_pt"] if meta["model_pt"] else inputs / "model.pt"


def prepare_models(out: Path, model_pt: Path | None) -> dict:
    """Export fp32 + fp16 afresh from ``model_pt`` (default: the bundled checkpoint) into ``out``."""
    import torch

    from ddrf_train.checkpoint import load_denoiser, release
    from export.to_onnx import export

    from .._fixtures import BUNDLED

    pt = Path(model_pt) if model_pt else BUNDLED.with_suffix(".pt")
    if not pt.is_file():
        raise SystemExit(f"{NAME}: checkpoint not found: {pt} (pass --model-pt)")
    out.mkdir(parents=True, exist_ok=True)
    for stale in FILES:  # what an earlier prepare left: an old export, tensors of another model
        (out / stale).unlink(missing_ok=True)
    inside = pt.resolve().is_relative_to(REPO_ROOT)
    if not inside:
        release(pt, out / "model.pt")
    export(pt, out / "model.onnx", fp16=True, threads=1)
    _, _, payload = load_denoiser(pt)
    meta = {"model_pt": str(pt.resolve().relative_to(REPO_ROOT)) if inside else None,
            "source": str(pt.resolve().relative_to(REPO_ROOT) if inside else pt),
            "checkpoint_step": int(payload["step"]), "exported_with_torch": torch.__version__,
            "export_commit": _commit()}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def prepare_tensors(inputs: Path) -> dict:
    """Network inputs cut from the demo scene and the PyTorch CPU fp32 anchor (needs rasterio, numba, torch)."""
    import torch

    from ddrf_runtime.pipeline import scene_base
    from ddrf_runtime.session import Denoiser
    from ddrf_train.checkpoint import load_denoiser

    from .._fixtures import network_inputs, read_demo
    from .latency import crop

    meta = json.loads((inputs / "meta.json").read_text())
    model, _, _ = load_denoiser(checkpoint_path(inputs, meta))
    scene = read_demo()
    spec = Denoiser(inputs / "model.onnx", "cpu", 1).spec
    _, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, spec, TILE, TILES)  # (4, C+k, 512, 512)
    np.save(inputs / "cond.npy", cond)
    np.save(inputs / "wav.npy", wav)
    anchor_cond, anchor_wav = crop(cond[:1], wav[:1], ANCHOR_TILE)
    x_t = np.random.default_rng(0).standard_normal((1, spec.num_bands, ANCHOR_TILE, ANCHOR_TILE), dtype=np.float32)
    with torch.inference_mode():
        x0 = model(*(torch.from_numpy(a) for a in (x_t, np.array([spec.timesteps - 1]), anchor_cond, anchor_wav)))
    np.save(inputs / "anchor_x_t.npy", x_t)
    np.save(inputs / "anchor_x0.npy", x0.numpy())
    stats = scene_base(spec.target, scene.ms, scene.pan, spec.ratio, scene.scale)  # what the tiles' base needs
    meta.update({"scene": str(scene.ms_path.parent.relative_to(REPO_ROOT)), "full_scale": scene.scale,
                 "scene_base": None if stats is None else stats.as_dict(),
                 "tile": TILE, "tiles": TILES, "anchor_tile": ANCHOR_TILE, "anchor_t": spec.timesteps - 1,
                 "anchor_torch": torch.__version__})
    (inputs / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _commit() -> str | None:
    import subprocess
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=REPO_ROOT).stdout.strip() or None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--model-pt", type=Path, help="checkpoint (default: the bundled models/ddrf_4band.pt)")
    ap.add_argument("--out", type=Path, default=INPUTS_DIR)
    ap.add_argument("--tensors-only", action="store_true", help="on the GPU box: the tensors for existing exports")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.tensors_only:  # here; the tensors are made on the box, in run_all.sh's copy of the folder
        meta = prepare_models(args.out, args.model_pt)
        size = sum(f.stat().st_size for f in args.out.iterdir()) / 2**20
        say(NAME, f"exported {meta['source']} (step {meta['checkpoint_step']}) to {args.out}: {size:.1f} MiB")
    else:
        meta = prepare_tensors(args.out)
        say(NAME, f"tensors for {meta['tiles']} tiles of {meta['tile']}² in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
