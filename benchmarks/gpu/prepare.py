"""Prepare the GPU benchmark's inputs on this (CPU) machine: the GPU box has no rasterio and no training data.

    python -m benchmarks.gpu.prepare [--model-pt P.pt] [--out benchmarks/gpu/inputs]

Writes (about 55 MB, carried to the GPU box by ``run_all.sh``'s caller):
  model.pt, model.onnx, model.fp16.onnx   the checkpoint's release copy (EMA weights) and its fp32/fp16 exports
  cond.npy, wav.npy       4 real demo-scene tiles of 512² as the network sees them; smaller tiles are crops
  anchor_x_t.npy, anchor_x0.npy   the parity anchor: PyTorch CPU fp32 x0 of tile 0 cropped to 256², t = T−1
  meta.json               provenance
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ddrf_runtime.session import Denoiser
from ddrf_train.checkpoint import load_denoiser, release

from .._fixtures import network_inputs, read_demo, resolve_models
from .._report import say
from .latency import crop

INPUTS_DIR = Path(__file__).resolve().parent / "inputs"
TILE, TILES = 512, 4  # the largest benchmarked tile; distinct real tiles of the demo scene
ANCHOR_TILE = 256


def prepare(out: Path, model_pt: Path | None) -> dict:
    models = resolve_models(model_pt, fp16=True, threads=1)
    out.mkdir(parents=True, exist_ok=True)
    release(models.pt, out / "model.pt")
    shutil.copyfile(models.onnx, out / "model.onnx")
    shutil.copyfile(models.fp16(), out / "model.fp16.onnx")
    model, _, payload = load_denoiser(out / "model.pt")
    scene = read_demo()
    spec = Denoiser(out / "model.onnx", "cpu", 1).spec
    _, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, spec, TILE, TILES)
    np.save(out / "cond.npy", cond)
    np.save(out / "wav.npy", wav)
    anchor_cond, anchor_wav = crop(cond[:1], wav[:1], ANCHOR_TILE)
    x_t = np.random.default_rng(0).standard_normal((1, spec.num_bands, ANCHOR_TILE, ANCHOR_TILE), dtype=np.float32)
    with torch.inference_mode():
        x0 = model(*(torch.from_numpy(a) for a in (x_t, np.array([spec.timesteps - 1]), anchor_cond, anchor_wav)))
    np.save(out / "anchor_x_t.npy", x_t)
    np.save(out / "anchor_x0.npy", x0.numpy())
    meta = {"source": models.source, "checkpoint_step": int(payload["step"]), "scene": str(scene.ms_path.parent),
            "full_scale": scene.scale, "tile": TILE, "tiles": TILES, "anchor_tile": ANCHOR_TILE,
            "anchor_t": spec.timesteps - 1, "torch": torch.__version__}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--model-pt", type=Path, help="checkpoint (default: bundled, else the training run's last.pt)")
    ap.add_argument("--out", type=Path, default=INPUTS_DIR)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    meta = prepare(args.out, args.model_pt)
    size = sum(f.stat().st_size for f in args.out.iterdir()) / 2**20
    say("gpu.prepare", f"wrote {args.out} ({size:.1f} MiB): {meta['source']}, step {meta['checkpoint_step']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
