"""Training pairs in one compressed array file, for a machine that has torch but not the data or a raster reader.

A lent GPU box (``../shared/docs/gpu.md``) has no rasterio and the shared data does not travel to it, so a run
there trains on pairs packed here: ``python -m ddrf_train.packed --family 4band -o pairs.npz``, then
``python -m ddrf_train.train --config CFG --pairs pairs.npz``. Only each pair's reference and reduced PAN are
stored; the LR MS and its upsampling are recomputed on load by the code that made them (``datasets.reduce_ms``),
so the box trains on the pairs a run here would. Whole-number references (every sensor's DN) are stored as
uint16, float ones (radiance) as float32.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ddrf_runtime.errors import ConfigError, DdrfError, InputError
from ddrf_runtime.evaluation.datasets import Pair, reduce_ms, reduced_resolution_split
from ddrf_runtime.mtf import ms_gains

FORMAT = "ddrf-packed-pairs/1"  # the file's ``meta`` names it, so a file from another layout is refused


@dataclass(frozen=True)
class PackedPairs:
    """What a run reads: its training and validation pairs, and the data family they belong to."""

    family: str
    train: list[Pair]
    val: list[Pair]


def _compact(gt: np.ndarray) -> np.ndarray:
    """uint16 when that is exact (digital numbers), else the float32 values themselves."""
    if gt.min() >= 0 and gt.max() <= np.iinfo(np.uint16).max and np.array_equal(gt, np.round(gt)):
        return gt.astype(np.uint16)
    return gt.astype(np.float32)


def pack(path: str | Path, packed: PackedPairs) -> Path:
    """Write ``packed`` to ``path`` (an ``.npz``); the file appears whole or not at all."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {"format": FORMAT, "family": packed.family}
    for split, pairs in (("train", packed.train), ("val", packed.val)):
        meta[split] = [{"name": p.name, "sensor": p.sensor, "bit_depth": p.bit_depth, "bands": list(p.bands),
                        "ratio": p.ratio} for p in pairs]
        for i, p in enumerate(pairs):
            arrays[f"{split}_{i}_gt"] = _compact(p.gt)  # (H, W, C)
            arrays[f"{split}_{i}_pan"] = np.asarray(p.pan, np.float32)  # (H, W) or (H, W, k)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind
    return path


def load(path: str | Path) -> PackedPairs:
    """The pairs ``pack`` wrote, each rebuilt as ``datasets.reduced_resolution`` makes it."""
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise InputError(f"not a packed-pairs file of format {FORMAT}", str(path))
            splits = {split: [_rebuild(m, z[f"{split}_{i}_gt"], z[f"{split}_{i}_pan"])
                              for i, m in enumerate(meta[split])] for split in ("train", "val")}
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read packed pairs: {e}", str(path)) from e
    return PackedPairs(meta["family"], splits["train"], splits["val"])


def _rebuild(meta: dict, gt: np.ndarray, pan: np.ndarray) -> Pair:
    gt = gt.astype(np.float32)  # (H, W, C)
    ms_lr, lms = reduce_ms(gt, ms_gains(meta["sensor"], gt.shape[-1]), meta["ratio"])
    return Pair(meta["name"], meta["sensor"], meta["bit_depth"], tuple(meta["bands"]), meta["ratio"], lms, pan, gt,
                ms_lr)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ddrf_train.packed", description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, help="data family whose train and val splits are packed (4band, …)")
    ap.add_argument("-o", "--output", required=True, help="the .npz to write")
    args = ap.parse_args(argv)
    try:
        if not args.output.endswith(".npz"):
            raise ConfigError("the output must end in .npz", "--output")
        packed = PackedPairs(args.family, reduced_resolution_split(args.family, "train"),
                             reduced_resolution_split(args.family, "val"))
        out = pack(args.output, packed)
    except DdrfError as e:
        print(f"ddrf-pack: error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {len(packed.train)} training and {len(packed.val)} validation pairs, "
          f"{out.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
