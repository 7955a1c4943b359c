"""Leave-one-sensor-out: train without one sensor's pixels, score on that sensor against every classical method.

    python -m benchmarks.generalization [--folds wv2 ge1 ...] [--variants base jitter] [--threads 1] [--out DIR]
    python -m benchmarks.generalization --write-configs [--iterations 600] [--patch 48]
    python -m benchmarks.generalization --folds wv3 --variants hpm_fit_pool_jitter --pack .gpu/train   # for a GPU box
    python -m benchmarks.generalization --folds wv3 --variants hpm_fit_pool_jitter --checkpoint wv3.pt # score it

This is the number that predicts a new user's experience: the held-out sensor plays the sensor the model has
never seen. Each fold (``FOLDS``) is one sensor of the 4-band (B, G, R, NIR) pool. Its config
``configs/loso/<fold>.toml`` (written by ``--write-configs`` from ``configs/small_4band.toml`` with the stated
budget, identical for every fold except ``out_dir``) trains on the Wald pairs (ratio 4) of every scene of the
*other* sensors; a variant (``VARIANTS``) flips one generalisation lever on top. The trained EMA weights fuse
the held-out sensor's scenes through the runtime pipeline (PyTorch backend, 1 step, seed 0): reduced
resolution on whole scenes, and HQNR at full resolution on 128² MS crops of its native ratio-4 scenes. Each
classical baseline fuses the same samples. The table gives per fold the ratio DDRF / best classical method
(best = lowest mean ERGAS, and separately lowest mean SAM, over the fold's reduced-resolution scenes).
Results are written after every fold (``generalization.{md,json}``), so an interrupted run keeps the folds done;
trained runs (``runs/loso/<fold>[_<variant>]/last.pt``) are reused or resumed.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numba
import numpy as np
import torch

from ddrf_runtime.evaluation import baselines, datasets
from ddrf_runtime.flip_ensemble import FlipEnsemble
from ddrf_runtime.model_spec import ValueScale
from ddrf_runtime.evaluation.splits import FUSEBOX_PATH_ROWS, Region
from ddrf_runtime.target import Base
from ddrf_runtime.trust import Trust
from ddrf_train.backend import TorchDenoiser
from ddrf_train import packed
from ddrf_train.checkpoint import read_checkpoint
from ddrf_train.config import DegradationConfig, ExperimentConfig, RadiometricConfig, load_config

from ._report import RESULTS_DIR, Clock, environment, environment_lines, markdown_table, say, write_results
from .ablation import train_variant
from .quality import base_fuser, default_methods, model_fuser, score_sample

NAME = "generalization"
BASE_CONFIG = Path("configs/small_4band.toml")
CONFIG_DIR = Path("configs/loso")
BANDS = 4  # B, G, R, NIR: the bands every sensor of the pool has
RATIO = 4
_CORNER = ((0, 128), (0, 128))  # full-resolution crop (cols, rows) in MS pixels: a 512² PAN block
_MIN_SIDE = 64  # smallest MS side of a training scene (larger than any crop of the fold budgets)


@dataclass(frozen=True)
class Fold:
    """One sensor: its scenes leave training together and are the fold's test."""

    label: str  # table title
    scenes: tuple[str, ...]  # every scene of the sensor (none of them trains the fold)
    test: tuple[str, ...]  # scored at reduced resolution (whole scenes)
    full: tuple[Region, ...]  # scored at full resolution (native ratio 4 only)
    trains_as: str | None = None  # a fold of the same sensor whose training this one shares: its scenes are that
    # fold's read otherwise (parts, registered), never in the pool


def _corner(scene: str) -> Region:
    return Region(scene, *_CORNER)


_L7 = tuple(f"fusebox_{n}" for n in range(1, 40))
FOLDS: Mapping[str, Fold] = {
    "wv2": Fold("WorldView-2 (GRIP WV2, SpaceNet-6 Rotterdam ×2)", ("wv2", "rotterdam_1", "rotterdam_2"),
                ("wv2", "rotterdam_1", "rotterdam_2"), (_corner("wv2"), _corner("rotterdam_1"))),
    "ge1": Fold("GeoEye-1 (GRIP GE1, 8-bit stretched)", ("ge1",), ("ge1",), (_corner("ge1"),)),
    "osman": Fold("Osman demo sensor (11-bit, unnamed VHR)", ("osman",), ("osman",), (_corner("osman"),)),
    # The same fold scored on the scene's two sides of its seam, each with its PAN moved onto its MS (datasets).
    "osman_registered": Fold("Osman demo sensor, each side of the scene's seam registered",
                             ("osman_top", "osman_bottom"), ("osman_top", "osman_bottom"), (), trains_as="osman"),
    # One scene per WRS-2 path/row keeps the scoring cost bounded; all 39 leave training.
    "l7": Fold("Landsat-7 ETM+ (FuseBox, 6 path/rows)", _L7,
               tuple(f"fusebox_{r.start}" for r in FUSEBOX_PATH_ROWS.values()), ()),
    "l8": Fold("Landsat-8 OLI (sat-testdata)", ("landsat8",), ("landsat8",), ()),
    # CristianICS is unlabelled but has WV3's resampled GSDs (1.2 m / 0.3 m) and band set: it leaves with WV3.
    "wv3": Fold("WorldView-3 (SpaceNet-2 Shanghai, CristianICS; Z-PNN example at full resolution)",
                ("shanghai", "cristianics", "wv3_example"), ("shanghai", "cristianics"),
                (_corner("shanghai"), Region("wv3_example"))),
}


@dataclass(frozen=True)
class Variant:
    name: str  # run-directory suffix and table row ("DDRF" for the base)
    change: str  # what differs from the fold config
    edit: Callable[[ExperimentConfig], ExperimentConfig]
    sees_held_out: bool = False  # a control, not a LOSO model: trained on every sensor (one run for all folds)
    drops: tuple[str, ...] = ()  # scenes also left out of training (fewer sensors: what diversity is worth)
    adds: tuple[str, ...] = ()  # scenes outside the folds that train it too (simulated sensors)


def _with_base(cfg: ExperimentConfig, base: Base) -> ExperimentConfig:
    return dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, base=base))


def _pooled(cfg: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, base=Base.GLP_HPM_FIT,
                                                                  gain_pooling=0.5))


# The radiometric jitter lever (``ddrf_train.augment``): spreads chosen to cover the sensors' spread of
# brightness (a 2× range of how much of the bit depth a scene uses), band calibration and PAN response.
JITTER = RadiometricConfig(gain=0.35, band_gain=0.1, pan_gain=0.15, pan_noise=0.02)
# The PAN spectral-response lever (``datasets.respectral``): another sensor's PAN follows the bands differently.
PAN_RESPONSE = DegradationConfig(pan_copies=2, pan_mix=0.5, pan_tilt=1.0)


def _jitter_pan(cfg: ExperimentConfig) -> ExperimentConfig:
    """The pooled base with radiometric jitter and PAN spectral-response copies (the 4-band release's levers)."""
    return dataclasses.replace(_pooled(cfg), augment=JITTER, degrade=PAN_RESPONSE)


VARIANTS = (
    Variant("base", "the fold config (4-band recipe)", lambda c: c),
    Variant("jitter", f"+ radiometric jitter {dataclasses.asdict(JITTER)}",
            lambda c: dataclasses.replace(c, augment=JITTER)),
    Variant("glp", "+ residual relative to the MTF-GLP ratio injection (`diffusion.base = \"glp_ratio\"`)",
            lambda c: _with_base(c, Base.GLP_RATIO)),
    Variant("hpm", "+ residual relative to MTF-GLP-HPM: the GLP ratio with histogram-matching offsets "
                   "(`diffusion.base = \"glp_hpm\"`)",
            lambda c: _with_base(c, Base.GLP_HPM)),
    Variant("hpm_fit", "+ residual relative to MTF-GLP-HPM with per-band detail gains fitted on the scene one "
                       "scale down (`diffusion.base = \"glp_hpm_fit\"`)",
            lambda c: _with_base(c, Base.GLP_HPM_FIT)),
    Variant("hpm_fit_pool", "+ hpm_fit base with each band's gain halfway to the gain fitted to all bands jointly "
                            "(`diffusion.gain_pooling = 0.5`)",
            _pooled),
    Variant("hpm_fit_pool_narrow", "hpm_fit_pool trained without WorldView-3, CristianICS and SpaceNet-6 Rotterdam, "
                                   "i.e. on the sensors the 4-band release saw before it was widened",
            _pooled, drops=("shanghai", "cristianics", "rotterdam_1", "rotterdam_2")),
    Variant("hpm_fit_pool_sim", "hpm_fit_pool trained on IKONOS simulated from the HySpex and AVIRIS cubes too "
                                "(`datasets` sim_ikonos_*: real spatial detail, another PAN-to-band relation)",
            _pooled, adds=("sim_ikonos_hyspex", "sim_ikonos_aviris")),
    Variant("hpm_fit_pool_coarse", "hpm_fit_pool and a copy of every training pair on a 2× coarser grid "
                                   "(`[degrade] coarse_copies = 1`)",
            lambda c: dataclasses.replace(_pooled(c), degrade=DegradationConfig(coarse_copies=1))),
    Variant("hpm_fit_pool_jitter", f"hpm_fit_pool and radiometric jitter {dataclasses.asdict(JITTER)}",
            lambda c: dataclasses.replace(_pooled(c), augment=JITTER)),
    Variant("hpm_fit_pool_jitter_pan", "hpm_fit_pool_jitter and 2 copies of every training pair whose PAN is "
                                       "half a combination of the reference's bands, weights exp(±1) "
                                       "(`[degrade] pan_copies = 2, pan_mix = 0.5, pan_tilt = 1`)",
            _jitter_pan),
    Variant("hpm_fit_pool_jitter_pan_osreg", "hpm_fit_pool_jitter_pan with the Osman scene's two sides registered "
                                             "(osman_top, osman_bottom) in place of the scene as its files pair it",
            _jitter_pan, drops=("osman",), adds=("osman_top", "osman_bottom")),
    Variant("hpm_fit_pool_jitter_scene", "hpm_fit_pool_jitter trained on pairs in scene-mean units "
                                         "(`train.value_scale = \"scene_mean\"`), as the runtime feeds a scene "
                                         "under ValueScale.SCENE_MEAN",
            lambda c: dataclasses.replace(_pooled(c), augment=JITTER,
                                          train=dataclasses.replace(c.train, value_scale=ValueScale.SCENE_MEAN))),
    Variant("hpm_fit_sam", "+ hpm_fit base and the fused image's spectral angle in the loss (`train.sam_weight = 1`)",
            lambda c: dataclasses.replace(_with_base(c, Base.GLP_HPM_FIT),
                                          train=dataclasses.replace(c.train, sam_weight=1.0))),
    Variant("hpm_mtf", "+ hpm base and 2 Wald copies per training pair through MS MTFs × exp(±0.3) "
                       "(`[degrade] mtf_copies = 2, mtf_spread = 0.3`)",
            lambda c: dataclasses.replace(_with_base(c, Base.GLP_HPM),
                                          degrade=DegradationConfig(mtf_copies=2, mtf_spread=0.3))),
    Variant("hpm_jitter", f"+ hpm base and radiometric jitter {dataclasses.asdict(JITTER)}",
            lambda c: dataclasses.replace(_with_base(c, Base.GLP_HPM), augment=JITTER)),
    # Separates budget from generalisation: the same budget with the held-out sensor's scenes in training.
    Variant("seen", "control: every sensor trains, the held-out one included", lambda c: c, sees_held_out=True),
    Variant("hpm_seen", "control: hpm base, every sensor trains, the held-out one included",
            lambda c: _with_base(c, Base.GLP_HPM), sees_held_out=True),
)


@functools.lru_cache(maxsize=None)
def _pair(scene: str) -> datasets.Pair:
    return datasets.reduced_resolution(scene, RATIO, bands=BANDS)


def training_scenes(fold: str | None) -> list[str]:
    """Every pool scene whose sensor is not the fold's (no pixel of the held-out sensor trains; None: every
    sensor), less those too small for a Wald pair and a training crop (the 32² Z-PNN WV3 example)."""
    if fold and FOLDS[fold].trains_as:
        return training_scenes(FOLDS[fold].trains_as)
    pool = [s for f in FOLDS.values() if not f.trains_as for s in f.scenes]
    held_out = set(FOLDS[fold].scenes) if fold else set()
    return [s for s in pool if s not in held_out and min(datasets.load_scene(s).ms.shape[:2]) >= _MIN_SIDE]


def variant_scenes(fold: str, variant: Variant) -> list[str]:
    """The scenes a variant of a fold trains on."""
    held_out = None if variant.sees_held_out else fold
    return [s for s in training_scenes(held_out) if s not in variant.drops] + list(variant.adds)


def fold_config(base: ExperimentConfig, fold: str, iterations: int, patch: int) -> ExperimentConfig:
    """The fold's training config: ``base`` at the stated budget, validation off (the fold's test is the sensor)."""
    t = dataclasses.replace(base.train, iterations=iterations, patch=patch, threads=1, val_every=0,
                            warmup=min(base.train.warmup, iterations // 5),
                            ema_warmup=min(base.train.ema_warmup, iterations // 2),
                            out_dir=f"runs/loso/{fold}")
    return dataclasses.replace(base, train=t).validate(fold)


def write_configs(iterations: int, patch: int) -> list[Path]:
    """configs/loso/<fold>.toml for every fold, from the 4-band recipe at the given budget."""
    base = load_config(BASE_CONFIG)
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for fold in FOLDS:
        header = [f"# Leave-one-sensor-out fold {fold!r}: {FOLDS[fold].label} held out.",
                  f"# Written by `python -m benchmarks.generalization --write-configs --iterations {iterations} "
                  f"--patch {patch}` from {BASE_CONFIG}."]
        path = CONFIG_DIR / f"{fold}.toml"
        path.write_text(config_toml(fold_config(base, fold, iterations, patch), header,
                                    ("model", "diffusion", "train", "augment")))
        paths.append(path)
    return paths


def config_toml(cfg: ExperimentConfig, header: list[str],
                sections: tuple[str, ...] = ("model", "diffusion", "train", "augment", "degrade")) -> str:
    """``cfg`` as the TOML ``load_config`` reads, after the ``header`` comment lines."""
    d = cfg.to_dict()
    lines = list(header)
    for section in sections:
        lines += ["", f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in d[section].items())]
    return "\n".join(lines) + "\n"


def pack_for_box(fold: str, variant: Variant, folder: Path) -> Path:
    """``folder``/config.toml and pairs.npz: one fold's variant as a run that needs neither the data nor a raster
    reader (a lent GPU box: ``ddrf_train.train --config … --pairs …``, benchmarks/gpu/train.sh); score what it
    trains here with ``--checkpoint``."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = variant_config(fold, variant)
    pairs = [_pair(s) for s in variant_scenes(fold, variant)]
    packed.pack(folder / "pairs.npz", packed.PackedPairs(cfg.train.family.value, pairs, []))
    header = [f"# Leave-one-sensor-out fold {fold!r}, variant {variant.name!r}: {variant.change}.",
              f"# Written by `python -m benchmarks.generalization --folds {fold} --variants {variant.name} --pack`; "
              "trains on the pairs.npz beside it."]
    (folder / "config.toml").write_text(config_toml(cfg, header))
    return folder


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def variant_config(fold: str, variant: Variant) -> ExperimentConfig:
    cfg = variant.edit(load_config(CONFIG_DIR / f"{fold}.toml"))
    if variant.name != "base":
        seen_dir = "runs/loso/all_sensors" + ("" if variant.name == "seen" else f"_{variant.name}")
        out = seen_dir if variant.sees_held_out else f"{cfg.train.out_dir}_{variant.name}"
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=out))
    return cfg.validate(variant.name)


def run_fold(fold: str, variants: list[Variant], threads: int, flip_ensemble: bool = False,
             also_value_scale: ValueScale | None = None, checkpoint: Path | None = None,
             trust_full: bool = False, projections: int | None = None) -> dict:
    """Train every variant of one fold, then score them and the classical methods on the held-out sensor;
    ``checkpoint``: score that one (a single variant trained elsewhere, e.g. on a GPU box) instead of training."""
    spec = FOLDS[fold]
    fusers = dict(default_methods())
    runs = {}
    for v in variants:
        scenes = variant_scenes(fold, v)  # read as pairs only to train: a given checkpoint needs none
        cfg = variant_config(fold, v)
        say(NAME, f"{fold}/{v.name}: {len(scenes)} training pairs, " + (
            f"scoring {checkpoint}" if checkpoint else f"{cfg.train.iterations} steps (a finished run is reused)"))
        last = checkpoint or train_variant(cfg, [_pair(s) for s in scenes], [])
        payload, trained = read_checkpoint(last)
        step = payload["step"]
        if checkpoint:  # its own budget, whatever the fold config says; the variant's network and diffusion
            if (trained.model, trained.diffusion) != (cfg.model, cfg.diffusion):
                raise SystemExit(f"{checkpoint}: [model]/[diffusion] differ from variant {v.name}'s")
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(trained.train, iterations=step))
        elif step < cfg.train.iterations:  # SIGINT/SIGTERM: never score or move on with a half-trained model
            raise SystemExit(f"{fold}/{v.name} stopped at step {step} of {cfg.train.iterations}; rerun to resume")
        row = "DDRF" if v.name == "base" else f"DDRF+{v.name}"
        denoiser = TorchDenoiser(last, "cpu", threads)
        fusers[row] = model_fuser(denoiser)
        if flip_ensemble:  # the same network averaged over the tiles' four mirror images (FuseOptions.flip_ensemble)
            fusers[f"{row} flip ensemble"] = model_fuser(FlipEnsemble(denoiser))
        if also_value_scale:  # the same network under the other input scaling (FuseOptions.value_scale)
            fusers[f"{row}, {also_value_scale.value} scaling"] = model_fuser(denoiser, also_value_scale)
        if trust_full:  # the network's correction in full, not weighted by its fit one scale down (FuseOptions.trust)
            fusers[f"{row}, trust full"] = model_fuser(denoiser, trust=Trust.FULL)
        if projections is not None:  # other back-projection steps onto the MS (FuseOptions.projections)
            fusers[f"{row}, {projections} projections"] = model_fuser(denoiser, projections=projections)
        if cfg.diffusion.base is not Base.UPSAMPLED:  # the fitted-once classical part, for what the network adds
            fusers[f"{row} base (x0 = 0)"] = base_fuser(denoiser)
        runs[row] = {"config": str(CONFIG_DIR / f"{fold}.toml"), "change": v.change, "step": step,
                     "batch": cfg.train.batch, "patch": cfg.train.patch, "train_scenes": scenes}
    say(NAME, f"{fold}: scoring {len(spec.test)} reduced- and {len(spec.full)} full-resolution samples")
    reduced = {s: score_sample(fusers, _pair(s)) for s in spec.test}
    full = {r.label: score_sample(fusers, datasets.full_resolution(r.scene, r, BANDS)) for r in spec.full}
    return {"label": spec.label, "train_scenes": training_scenes(fold), "runs": runs,
            "reduced": reduced, "full": full,
            "summary": summarise(reduced, full, [m for m in fusers if m not in baselines.METHODS])}


def summarise(reduced: Mapping[str, Mapping[str, Mapping[str, float]]],
              full: Mapping[str, Mapping[str, Mapping[str, float]]], models: list[str]) -> dict:
    """Per method the fold means; per model the ratios to the best classical method by mean ERGAS and SAM."""
    methods = list(next(iter(reduced.values())))
    mean = {m: {k: float(np.mean([scene[m][k] for scene in reduced.values()])) for k in ("ERGAS", "SAM", "Q2n")}
            for m in methods}
    for m in methods:
        mean[m]["HQNR"] = float(np.mean([scene[m]["HQNR"] for scene in full.values()])) if full else float("nan")
    classical = [m for m in methods if m in baselines.METHODS]
    best = {k: min(classical, key=lambda m: mean[m][k]) for k in ("ERGAS", "SAM")}
    best["HQNR"] = max(classical, key=lambda m: mean[m]["HQNR"]) if full else None
    ratios = {m: {k: mean[m][k] / mean[best[k]][k] for k in ("ERGAS", "SAM")} for m in models}
    return {"mean": mean, "best_classical": best, "ratio_to_best": ratios}


def to_markdown(r: Mapping) -> str:
    lines = ["# Leave-one-sensor-out generalisation (4 bands B, G, R, NIR; ratio 4; Wald protocol)", "",
             *environment_lines(r),
             f"- budget per fold and variant: {r['iterations']} steps × batch {r['batch']} × {r['patch']}² crops, "
             f"1 thread, seed 0, EMA weights; fold configs `configs/loso/<fold>.toml` (from `{BASE_CONFIG}`)",
             "- DDRF: runtime pipeline, PyTorch backend, 1 step, seed 0, the scenes' bit depth stated, the model's "
             "input scaling (`ValueScale`; 4-band `auto`: DN ÷ full scale). Reduced resolution: whole held-out scenes. "
             "Full resolution: 128² MS crops (512² PAN) of the held-out native-ratio-4 scenes.",
             "- ratio = DDRF mean / best classical mean on the fold (best chosen per metric); target ERGAS ≤ 0.85, "
             "SAM ≤ 0.90, never > 1. A `base (x0 = 0)` row is that model's classical base alone (network output "
             "0, same runtime path): the network's contribution is the difference.", ""]
    head = ["fold", "model", "ERGAS ratio", "SAM ratio", "ERGAS", "best classical ERGAS", "SAM °",
            "best classical SAM °", "HQNR", "best classical HQNR"]
    rows = []
    for fold, f in r["folds"].items():
        s = f["summary"]
        for model, ratio in s["ratio_to_best"].items():
            m, b = s["mean"][model], s["best_classical"]
            hq = "—" if b["HQNR"] is None else f"{m['HQNR']:.4f}"
            hq_best = "—" if b["HQNR"] is None else f"{s['mean'][b['HQNR']]['HQNR']:.4f} ({b['HQNR']})"
            rows.append((fold, model, f"{ratio['ERGAS']:.3f}", f"{ratio['SAM']:.3f}", f"{m['ERGAS']:.3f}",
                         f"{s['mean'][b['ERGAS']]['ERGAS']:.3f} ({b['ERGAS']})", f"{m['SAM']:.3f}",
                         f"{s['mean'][b['SAM']]['SAM']:.3f} ({b['SAM']})", hq, hq_best))
    lines += markdown_table(head, rows)
    for fold, f in r["folds"].items():
        lines += ["", f"## {fold}: {f['label']}", "", f"Trained on {len(f['train_scenes'])} scenes of the other "
                  f"sensors; held out: {', '.join(f['reduced'])}" + (f"; full resolution {', '.join(f['full'])}"
                                                                     if f["full"] else ""), ""]
        methods = list(f["summary"]["mean"])
        per = [(m, *(f"{f['reduced'][s][m]['ERGAS']:.3f} / {f['reduced'][s][m]['SAM']:.3f}" for s in f["reduced"]),
                *(f"{f['full'][s][m]['HQNR']:.4f}" for s in f["full"])) for m in methods]
        lines += markdown_table(["method", *(f"{s} ERGAS / SAM" for s in f["reduced"]),
                                 *(f"{s} HQNR" for s in f["full"])], per)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--folds", nargs="+", choices=list(FOLDS), default=list(FOLDS))
    ap.add_argument("--variants", nargs="+", choices=[v.name for v in VARIANTS], default=["base"])
    ap.add_argument("--threads", type=int, default=1, help="torch/numba threads (default 1)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    ap.add_argument("--write-configs", action="store_true", help="(re)write configs/loso/*.toml and exit")
    ap.add_argument("--iterations", type=int, default=600, help="with --write-configs: steps per fold")
    ap.add_argument("--patch", type=int, default=48, help="with --write-configs: crop side")
    ap.add_argument("--flip-ensemble", action="store_true", help="also score each model with the flip ensemble")
    ap.add_argument("--also-value-scale", choices=[v.value for v in ValueScale],
                    help="also score each model under this input scaling (default rows: the model's own)")
    ap.add_argument("--also-trust-full", action="store_true",
                    help="also score each model with its correction in full (default rows: weighted by its fit one "
                         "scale down, FuseOptions.trust)")
    ap.add_argument("--also-projections", type=int, metavar="K",
                    help="also score each model with K back-projection steps onto the MS (FuseOptions.projections)")
    ap.add_argument("--pack", type=Path, metavar="DIR",
                    help="write DIR/<fold>_<variant>/{config.toml,pairs.npz} for training elsewhere, and exit")
    ap.add_argument("--checkpoint", type=Path,
                    help="score this checkpoint of the one fold and variant given instead of training (e.g. "
                         "trained on a GPU box from --pack)")
    args = ap.parse_args(argv)
    variants = [v for v in VARIANTS if v.name in args.variants]
    if args.write_configs:
        for path in write_configs(args.iterations, args.patch):
            print(path)
        return 0
    if args.pack:
        for fold in args.folds:
            for v in variants:
                print(pack_for_box(fold, v, args.pack / f"{fold}_{v.name}"))
        return 0
    if args.checkpoint and (len(args.folds) != 1 or len(variants) != 1):
        ap.error("--checkpoint scores one fold and one variant: give one of each")
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    clock = Clock()
    base = load_config(CONFIG_DIR / f"{args.folds[0]}.toml").train
    report = {**environment(NAME, argv, ("numpy", "torch", "onnxruntime", "numba")),
              "iterations": base.iterations, "batch": base.batch, "patch": base.patch, "folds": {}}
    for fold in args.folds:
        report["folds"][fold] = run_fold(fold, variants, args.threads, args.flip_ensemble,
                                         args.also_value_scale and ValueScale(args.also_value_scale),
                                         args.checkpoint, args.also_trust_full, args.also_projections)
        if args.checkpoint:  # the budget line states the checkpoint's own
            run = next(iter(report["folds"][fold]["runs"].values()))
            report.update(iterations=run["step"], batch=run["batch"], patch=run["patch"])
        report["run"] = clock.summary()
        write_results(NAME, report, to_markdown(report), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
