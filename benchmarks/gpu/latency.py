"""GPU latency of the denoiser: PyTorch (eager, torch.compile) against ONNX Runtime CUDA with IO binding.

    python -m benchmarks.gpu.latency --inputs benchmarks/gpu/inputs --out $OUT [--cpu-smoke] [--budget-s 420]

Runs on the GPU box (torch + CUDA, onnxruntime-gpu) on what ``benchmarks.gpu.prepare`` wrote.
Per call (batch 1/4/8 × tile 128/256/512, real demo tiles, t = T−1): inputs and outputs stay on the device
(torch: CUDA tensors, fp16 = ``torch.autocast``; ONNX Runtime: IO binding of every input and the output, fp16 =
the ``.fp16.onnx`` export with fp32 I/O); each call ends with a device synchronisation; median of repeats after
a warm-up. ORT's levers and the strongest PyTorch path are timed at 1×512² and 8×512² only (issue 13's targets):
ORT fp16 with ``prefer_nhwc``, ORT with CUDA graphs (``enable_cuda_graph``: one session per shape, inputs
updated in place at fixed device addresses) and ``torch.compile`` (inductor, default mode; ~40 s per shape, so
each shape is started only with ``COMPILE_RESERVE_S`` of the budget left) in fp32 and bf16 autocast.
Every variant is first compared with the PyTorch CPU fp32 anchor (1×512²; torch.compile rows skip it to save a
compile) and every timed row's warm-up output with torch eager fp32 on the device; a variant that disagrees is
not timed. The markdown ends with the ratios issue 13's targets name.
Per sampling run: ``--steps`` DDIM steps over the 4 prepared 512² tiles through the product paths:
``ddrf_runtime.session.Denoiser`` (IO binding, DDIM update on the host) and ``ddrf_train.sample`` (all on the
device). Results are rewritten after every section, so a run cut short keeps what it measured.
``--cpu-smoke`` runs the same code on the CPU at small sizes (torch.compile with the "eager" backend, no CUDA
graphs or NHWC options): a test of this script, not a benchmark.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import onnxruntime as ort  # after torch: with preload_dlls, ORT's CUDA provider uses torch's CUDA libraries

from ddrf_runtime.detail_base import SceneBase, residual_base
from ddrf_runtime.model_spec import METADATA_KEY, ModelSpec
from ddrf_runtime.sampler import sample_ddim
from ddrf_runtime.schedule import ddim_timesteps
from ddrf_runtime.session import CPU_EP, CUDA_EP, INPUT_NAMES, Denoiser
from ddrf_train import sample
from ddrf_train.checkpoint import load_denoiser

from .._fixtures import image_difference
from .._report import environment, environment_lines, markdown_table, median_seconds, say
from .prepare import checkpoint_path, device_parser

NAME = "gpu.latency"
GRID = tuple(product((1, 4, 8), (128, 256, 512)))  # (batch, tile)
TARGET_GRID = ((1, 512), (8, 512))  # where issue 13's targets are set: the levers and torch.compile run here only
SMOKE_GRID = ((1, 32), (2, 32))  # --cpu-smoke: 1 thread, 2 repeats, at most 2 steps
# max |Δ| vs the reference, fused-image units (fp32 convs use TF32; bf16 keeps 8 bits of mantissa)
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-3, "bf16": 1e-2}
COMPILE_RESERVE_S = 75.0  # a torch.compile of a new shape took 38-55 s on the H200 (gpu.md), plus its timing
RESULT = "gpu_latency"


def crop(cond: np.ndarray, wav: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-left tile² of every prepared tile: DB1 blocks start at 0, so the wav crop is the crop's wav."""
    return (np.ascontiguousarray(cond[..., :tile, :tile]),
            np.ascontiguousarray(wav[..., :tile // 2, :tile // 2]))


def batch_of(a: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` tiles from the prepared ones, repeated in order when more are asked for."""
    return np.ascontiguousarray(a[np.arange(batch) % a.shape[0]])


class Runner:
    """One variant (runtime × precision): ``prepare(x_t, t, cond, wav)`` → a call that leaves x0 on the device.

    ``configs``: the (batch, tile) it is timed at (None: the whole grid); ``anchor``: whether the anchor parity
    runs it (torch.compile rows skip it: another shape is another compile); ``setup_s``: the budget a new
    shape needs before it is started.
    """

    def __init__(self, runtime: str, precision: str, prepare: Callable, fetch: Callable,
                 configs: tuple[tuple[int, int], ...] | None = None, anchor: bool = True,
                 setup_s: float = 0.0) -> None:
        self.runtime, self.precision, self.prepare, self.fetch = runtime, precision, prepare, fetch
        self.configs, self.anchor, self.setup_s = configs, anchor, setup_s

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def torch_runner(model: torch.nn.Module, device: torch.device, precision: str, runtime: str = "torch",
                 **kw) -> Runner:
    """``model`` (an nn.Module or its torch.compile wrapper) on device tensors; fp16/bf16 = autocast."""
    def prepare(*arrays: np.ndarray) -> Callable[[], torch.Tensor]:
        x_t, t, cond, wav = (torch.from_numpy(a).to(device) for a in arrays)
        autocast = (torch.autocast(device.type, dtype=AUTOCAST[precision]) if precision in AUTOCAST
                    else contextlib.nullcontext())

        def call() -> torch.Tensor:
            with torch.inference_mode(), autocast:
                return model(x_t, t, cond, wav)
        return call
    return Runner(runtime, precision, prepare, lambda out: out.float().cpu().numpy(), **kw)


def compiled_runner(model: torch.nn.Module, device: torch.device, precision: str, configs) -> Runner:
    """torch.compile (inductor, default mode, static shapes; the "eager" backend on the CPU smoke test)."""
    backend = "inductor" if device.type == "cuda" else "eager"
    compiled = torch.compile(model, backend=backend, dynamic=False)
    return torch_runner(compiled, device, precision, runtime="torch.compile", configs=configs, anchor=False,
                        setup_s=COMPILE_RESERVE_S if device.type == "cuda" else 0.0)


def ort_session(path: Path, device: str, cuda_options: dict[str, str] | None = None) -> ort.InferenceSession:
    """A session on ``device`` (CUDA provider options apply on CUDA only); fails rather than fall back."""
    providers = [(CUDA_EP, cuda_options or {}), CPU_EP] if device == "cuda" else [CPU_EP]
    session = ort.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != (CUDA_EP if device == "cuda" else CPU_EP):
        raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()[0]} (CUDA libraries missing?)")
    return session


def _fetch_binding(binding: ort.IOBinding) -> np.ndarray:
    return binding.copy_outputs_to_cpu()[0].astype(np.float32)


def ort_runner(path: Path, device: str, precision: str, cuda_options: dict[str, str] | None = None,
               runtime: str = "onnxruntime", **kw) -> Runner:
    """An InferenceSession on ``device`` with all inputs and the output bound to device memory."""
    session = ort_session(path, device, cuda_options)
    output = session.get_outputs()[0].name

    def prepare(*arrays: np.ndarray) -> Callable[[], ort.IOBinding]:
        binding = session.io_binding()
        for name, a in zip(INPUT_NAMES, arrays):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(a, device, 0))
        binding.bind_output(output, device, 0)

        def call() -> ort.IOBinding:
            session.run_with_iobinding(binding)
            return binding
        return call
    return Runner(runtime, precision, prepare, _fetch_binding, **kw)


def cuda_graph_runner(path: Path, device: str, precision: str, configs) -> Runner:
    """ORT with ``enable_cuda_graph``: the graph is captured once per session and replayed on the same device
    addresses, so each shape gets its own session and binding, and new inputs are copied into the bound
    OrtValues. On the CPU smoke test the same bookkeeping runs without the option (no CUDA graphs on the CPU)."""
    bound: dict[tuple, tuple[ort.InferenceSession, ort.IOBinding, list[ort.OrtValue]]] = {}

    def prepare(*arrays: np.ndarray) -> Callable[[], ort.IOBinding]:
        shape = tuple(a.shape for a in arrays)
        if shape in bound:
            session, binding, values = bound[shape]
            for value, a in zip(values, arrays):
                value.update_inplace(a)
        else:
            session = ort_session(path, device, {"enable_cuda_graph": "1"})
            binding = session.io_binding()
            values = [ort.OrtValue.ortvalue_from_numpy(a, device, 0) for a in arrays]
            for name, value in zip(INPUT_NAMES, values):
                binding.bind_ortvalue_input(name, value)
            out = session.get_outputs()[0]
            shape_out = (arrays[0].shape[0], out.shape[1] if isinstance(out.shape[1], int) else arrays[0].shape[1],
                         *arrays[0].shape[2:])
            binding.bind_ortvalue_output(out.name, ort.OrtValue.ortvalue_from_shape_and_type(
                shape_out, np.float32, device, 0))  # a fixed output buffer too
            bound[shape] = session, binding, values

        def call() -> ort.IOBinding:
            session.run_with_iobinding(binding)
            return binding
        return call
    return Runner("onnxruntime cuda-graph", precision, prepare, _fetch_binding, configs=configs)


class Bench:
    """State of one run: inputs, variants, the report (rewritten to ``out`` after every section)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.perf_counter()
        self.device = "cpu" if args.cpu_smoke else "cuda"
        self.torch_device = torch.device(self.device)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per configuration: let cuDNN pick kernels
        else:
            torch.set_num_threads(1)
        inputs = args.inputs
        meta = json.loads((inputs / "meta.json").read_text())
        self.cond, self.wav = np.load(inputs / "cond.npy"), np.load(inputs / "wav.npy")
        self.anchor = (np.load(inputs / "anchor_x_t.npy"), np.load(inputs / "anchor_x0.npy"), meta["anchor_t"],
                       meta["anchor_tile"])
        stats = meta.get("scene_base")  # the demo scene's base statistics (prepare.py), for the sampled tiles' base
        self.scene = None if stats is None else SceneBase(
            *(None if stats.get(k) is None else np.asarray(stats[k], np.float32) for k in ("offsets", "gains")))
        session = ort.InferenceSession(str(inputs / "model.onnx"), providers=[CPU_EP])
        self.spec = ModelSpec.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        model, _, _ = load_denoiser(checkpoint_path(inputs, meta))
        self.model = model.to(self.torch_device)
        self.runners: list[Runner] = []
        self.failures: dict[str, str] = {}
        dev, targets = self.torch_device, SMOKE_GRID if args.cpu_smoke else TARGET_GRID
        fp32, fp16 = inputs / "model.onnx", inputs / "model.fp16.onnx"
        for label, make in (
                ("torch fp32", lambda: torch_runner(self.model, dev, "fp32")),  # first: the per-row reference
                ("torch fp16", lambda: torch_runner(self.model, dev, "fp16")),
                ("onnxruntime fp32", lambda: ort_runner(fp32, self.device, "fp32")),
                ("onnxruntime fp16", lambda: ort_runner(fp16, self.device, "fp16")),
                ("onnxruntime nhwc fp16", lambda: ort_runner(fp16, self.device, "fp16", {"prefer_nhwc": "1"},
                                                             runtime="onnxruntime nhwc", configs=targets)),
                ("onnxruntime cuda-graph fp32", lambda: cuda_graph_runner(fp32, self.device, "fp32", targets)),
                ("onnxruntime cuda-graph fp16", lambda: cuda_graph_runner(fp16, self.device, "fp16", targets)),
                # torch.compile last, bf16 first, 8×512² first: the order issue 13's targets need them in
                ("torch.compile bf16", lambda: compiled_runner(self.model, dev, "bf16", targets[::-1])),
                ("torch.compile fp32", lambda: compiled_runner(self.model, dev, "fp32", targets[::-1]))):
            try:
                self.runners.append(make())
            except Exception as e:  # one broken variant must not cost the others' numbers
                self.failures[label] = f"{type(e).__name__}: {e}"
        device_name = torch.cuda.get_device_name(0) if self.device == "cuda" else "CPU (smoke test)"
        self.report = {**environment(NAME, sys.argv[1:], ("torch", "onnxruntime", "onnxruntime-gpu", "numpy")),
                       "device": device_name, "cpu_smoke": args.cpu_smoke, "inputs": meta,
                       "ort_providers": ort.get_available_providers(), "failures": self.failures,
                       "parity": [], "calls": [], "sampling": []}

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def remaining_s(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def over_budget(self, reserve_s: float = 0.0) -> bool:
        return self.remaining_s() < max(reserve_s, 0.0) or self.remaining_s() <= 0

    def save(self) -> None:
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.report["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        (out / f"{RESULT}.json").write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        (out / f"{RESULT}.md").write_text(to_markdown(self.report))

    def parity(self) -> None:
        """Each variant against the CPU fp32 anchor; variants outside tolerance are dropped from timing."""
        x_t, x0, t, tile = self.anchor
        if self.args.cpu_smoke:
            tile = min(tile, SMOKE_GRID[0][1])
            x_t, x0 = x_t[..., :tile, :tile], None
        cond, wav = crop(self.cond[:1], self.wav[:1], tile)
        feeds = (np.ascontiguousarray(x_t), np.array([t], np.int64), cond, wav)
        outputs = {}
        for r in self.runners:
            if not r.anchor:
                continue
            try:
                outputs[(r.runtime, r.precision)] = r.fetch(r.prepare(*feeds)())
            except Exception as e:  # recorded; the variant is not timed
                self.failures[f"{r.runtime} {r.precision}"] = f"{type(e).__name__}: {e}"
        reference = x0 if x0 is not None else outputs[("torch", "fp32")]  # smoke: crops are not the anchor
        kept = []
        for r in self.runners:
            if not r.anchor:  # checked against torch fp32 at each timed row instead
                kept.append(r)
                continue
            if (r.runtime, r.precision) not in outputs:
                continue
            diff = image_difference(self.spec, outputs[(r.runtime, r.precision)], reference)
            ok = diff <= TOLERANCE[r.precision]
            self.report["parity"].append({"runtime": r.runtime, "precision": r.precision, "tile": tile,
                                          "max_abs_diff_image": diff, "tolerance": TOLERANCE[r.precision], "agree": ok})
            say(NAME, f"parity {r.runtime} {r.precision}: {diff:.1e} ({'ok' if ok else 'FAIL'})")
            if ok:
                kept.append(r)
        self.runners = kept

    def feeds(self, batch: int, tile: int) -> tuple[np.ndarray, ...]:
        cond, wav = crop(batch_of(self.cond, batch), batch_of(self.wav, batch), tile)
        x_t = np.random.default_rng(batch * 1000 + tile).standard_normal(
            (batch, self.spec.num_bands, tile, tile), dtype=np.float32)
        return x_t, np.full(batch, self.spec.timesteps - 1, np.int64), cond, wav

    def time_row(self, r: Runner, batch: int, tile: int, reference: np.ndarray | None) -> np.ndarray | None:
        """Time ``r`` at one configuration after checking its warm-up output against ``reference`` (None: it is
        the reference, torch eager fp32); append the row; return the output."""
        row = {"runtime": r.runtime, "precision": r.precision, "batch": batch, "tile": tile, "median_s": None}
        out = None
        if self.over_budget(r.setup_s):
            row["skipped"] = "time budget"
        else:
            try:
                call = r.prepare(*self.feeds(batch, tile))
                out = r.fetch(call())  # the warm-up (and the compile / graph capture) is the checked call
                diff = 0.0 if reference is None else image_difference(self.spec, out, reference)
                row["max_abs_diff_vs_torch_fp32"] = diff
                if diff > TOLERANCE[r.precision]:
                    raise ValueError(f"disagrees with torch fp32: {diff:.1e} > {TOLERANCE[r.precision]}")
                row["median_s"] = median_seconds(lambda: (call(), self.sync()), self.args.repeats,
                                                 warmup=1 if self.args.cpu_smoke else 3)
                say(NAME, f"{r.label} batch {batch} tile {tile}: {1e3 * row['median_s']:.2f} ms")
            except Exception as e:  # e.g. out of memory, a failed capture: record it, go on
                row["error"] = f"{type(e).__name__}: {e}"
                say(NAME, f"{r.label} batch {batch} tile {tile}: {row['error'][:200]}")
        self.report["calls"].append(row)
        return out

    def calls(self) -> None:
        """The grid, every variant per configuration (the levers only where issue 13 sets targets), then the
        torch.compile rows in their own order (8×512² first: the target), each new shape only while the
        budget holds a compile. Every row is checked against torch eager fp32 on the same device and inputs."""
        references: dict[tuple[int, int], np.ndarray] = {}
        compiled = [r for r in self.runners if r.runtime == "torch.compile"]
        for batch, tile in SMOKE_GRID if self.args.cpu_smoke else GRID:
            for r in self.runners:
                if r in compiled or (r.configs is not None and (batch, tile) not in r.configs):
                    continue
                out = self.time_row(r, batch, tile, references.get((batch, tile)))
                if r.label == "torch fp32" and out is not None:
                    references[(batch, tile)] = out
            self.save()
        for batch, tile in compiled[0].configs if compiled else ():
            for r in compiled:
                if (batch, tile) in references:
                    self.time_row(r, batch, tile, references[(batch, tile)])
                self.save()

    def sampling(self) -> None:
        """``steps`` DDIM steps over the prepared tiles through the runtime's Denoiser and ddrf_train.sample."""
        steps, tile = self.args.steps, (SMOKE_GRID[0][1] if self.args.cpu_smoke else self.cond.shape[-1])
        cond, wav = crop(self.cond, self.wav, tile)
        c = self.spec.num_bands
        noise = np.random.default_rng(0).standard_normal((cond.shape[0], c, tile, tile), dtype=np.float32)
        timesteps, alphas = ddim_timesteps(self.spec.timesteps, steps), self.spec.alphas_cumprod()
        base = residual_base(self.spec.target, cond[:, :c], cond[:, c:], self.spec.ratio,
                             scene=self.scene)  # (B, C, tile, tile)
        fused = {}

        def onnx_path(precision: str) -> Callable[[], np.ndarray]:
            path = self.args.inputs / ("model.onnx" if precision == "fp32" else "model.fp16.onnx")
            denoiser = Denoiser(path, self.device)
            return lambda: self.spec.target.decode(
                sample_ddim(denoiser.conditioned(cond, wav), noise, timesteps, alphas), base)

        def torch_path(precision: str) -> Callable[[], np.ndarray]:
            lms, guide, x, b = (torch.from_numpy(a).to(self.torch_device)
                                for a in (cond[:, :c], cond[:, c:], noise, base))
            autocast = (torch.autocast(self.device, dtype=torch.float16) if precision == "fp16"
                        else contextlib.nullcontext())

            def run() -> np.ndarray:
                with autocast:
                    return sample(self.model, lms, guide, steps, noise=x, base=b).float().cpu().numpy()
            return run

        for runtime, make in (("onnxruntime", onnx_path), ("torch", torch_path)):
            for precision in ("fp32", "fp16"):
                row = {"path": f"{runtime} {precision}", "steps": steps, "tiles": cond.shape[0], "tile": tile}
                if self.over_budget():
                    row["skipped"] = "time budget"
                else:
                    try:
                        run = make(precision)
                        fused[row["path"]] = run()  # warm-up, and the result compared below
                        row["seconds"] = median_seconds(lambda: (run(), self.sync()), self.args.sampling_repeats,
                                                        warmup=0)
                        say(NAME, f"sampling {row['path']}: {row['seconds']:.3f} s for {steps} steps")
                    except Exception as e:
                        row["error"] = f"{type(e).__name__}: {e}"
                self.report["sampling"].append(row)
        reference = fused.get("torch fp32")
        for row in self.report["sampling"]:
            if reference is not None and row["path"] in fused:
                row["max_abs_diff_vs_torch_fp32"] = float(np.abs(fused[row["path"]] - reference).max())
        self.save()


# (batch, tile, ONNX Runtime precisions, reference (runtime, precision), speed-up needed)
TARGETS = ((8, 512, ("fp32",), ("torch", "fp32"), 2.5), (8, 512, ("fp16",), ("torch", "fp32"), 4.0),
           (8, 512, ("fp16",), ("torch", "fp16"), 2.0), (8, 512, ("fp16",), ("torch.compile", "bf16"), 1.0),
           (1, 512, ("fp32", "fp16"), ("torch", "fp32"), 5.0))


def target_rows(calls: list[dict]) -> list[tuple]:
    """One row per target: the fastest ONNX Runtime variant of the named precisions against the reference row
    (on the CPU smoke test the sizes are the smoke grid's largest batch, not the targets')."""
    timed = [c for c in calls if c.get("median_s")]
    smoke = {(c["batch"], c["tile"]) for c in calls} == set(SMOKE_GRID)
    rows = []
    for batch, tile, precisions, (ref_rt, ref_p), needed in TARGETS:
        if smoke:
            batch, tile = SMOKE_GRID[-1] if batch > 1 else SMOKE_GRID[0]
        here = [c for c in timed if (c["batch"], c["tile"]) == (batch, tile)]
        ours = [c for c in here if c["runtime"].startswith("onnxruntime") and c["precision"] in precisions]
        ref = [c for c in here if (c["runtime"], c["precision"]) == (ref_rt, ref_p)]
        name = f"{batch}×{tile}²: ORT {'/'.join(precisions)} ≥ {needed:g}× {ref_rt} {ref_p}"
        if not ours or not ref:
            rows.append((name, "—", "—", "not measured", f"{needed:g}×", "?"))
            continue
        best = min(ours, key=lambda c: c["median_s"])
        ratio = ref[0]["median_s"] / best["median_s"]
        rows.append((name, f"{best['runtime']} {best['precision']} {1e3 * best['median_s']:.2f} ms",
                     f"{1e3 * ref[0]['median_s']:.2f} ms", f"{ratio:.2f}×", f"{needed:g}×",
                     "yes" if ratio >= needed else "**no**"))
    return rows


def to_markdown(r: dict) -> str:
    lines = [f"# GPU latency: PyTorch eager vs ONNX Runtime{' (CPU SMOKE TEST — not a benchmark)' * r['cpu_smoke']}",
             "", *environment_lines(r), f"- device: {r['device']}; ORT providers available: "
             f"{', '.join(r['ort_providers'])}", f"- inputs: {r['inputs']['source']}, step "
             f"{r['inputs']['checkpoint_step']}; elapsed {r.get('elapsed_s', 0):.0f} s", ""]
    for label, error in r["failures"].items():
        lines.append(f"- **{label} unavailable**: {error}")
    lines += ["", "## Parity with the PyTorch CPU fp32 anchor (fused-image units)", ""]
    lines += markdown_table(["runtime", "precision", "tile", "max |Δ|", "tolerance", "agree"],
                            ((p["runtime"], p["precision"], p["tile"], f"{p['max_abs_diff_image']:.1e}",
                              p["tolerance"], "yes" if p["agree"] else "**no**") for p in r["parity"]))
    lines += ["", "## Per call (device-resident inputs and outputs, median ms)", ""]
    cells = {(c["batch"], c["tile"], c["runtime"], c["precision"]): c for c in r["calls"]}
    variants = sorted({(c["runtime"], c["precision"]) for c in r["calls"]})
    configs = sorted({(c["batch"], c["tile"]) for c in r["calls"]})

    def ms(c: dict | None) -> str:
        if c is None:
            return "—"  # not run at this size
        return f"{1e3 * c['median_s']:.2f}" if c.get("median_s") else c.get("skipped") or c.get("error", "—")[:40]
    lines += markdown_table(["batch", "tile", *(f"{rt} {p}" for rt, p in variants)],
                            ((b, t, *(ms(cells.get((b, t, rt, p))) for rt, p in variants)) for b, t in configs))
    worst = {}
    for c in r["calls"]:
        if "max_abs_diff_vs_torch_fp32" in c:
            key = f"{c['runtime']} {c['precision']}"
            worst[key] = max(worst.get(key, 0.0), c["max_abs_diff_vs_torch_fp32"])
    lines += ["", "Largest |Δ| of a timed row's output against torch eager fp32 on the same device and inputs: "
              + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())]
    lines += ["", "## Issue 13 targets (speed-up = reference time / ONNX Runtime time)", ""]
    lines += markdown_table(["target", "ONNX Runtime row", "reference row", "speed-up", "needed", "met"],
                            target_rows(r["calls"]))
    if r["sampling"]:
        lines += ["", "## Sampling runs (product paths)", ""]
        lines += markdown_table(["path", "steps", "tiles", "s", "max |Δ| vs torch fp32"],
                                ((s["path"], s["steps"], f"{s['tiles']}×{s['tile']}²",
                                  f"{s['seconds']:.3f}" if "seconds" in s else s.get("skipped") or s.get("error"),
                                  f"{s['max_abs_diff_vs_torch_fp32']:.1e}" if "max_abs_diff_vs_torch_fp32" in s
                                  else "—") for s in r["sampling"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = device_parser(NAME, __doc__, "run on the CPU at tiny sizes (tests the script)")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls per configuration")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of the sampling runs")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new measurements after this")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    args.sampling_repeats = 3
    if args.cpu_smoke:  # a test of the script: keep it short
        args.repeats, args.steps, args.sampling_repeats = 2, min(args.steps, 2), 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit(f"{NAME}: torch has no CUDA here; use --cpu-smoke to test the script")
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from torch's wheels, for ORT's CUDA provider
    bench = Bench(args)
    for section in (bench.parity, bench.calls, bench.sampling):
        try:
            section()
        except Exception:  # keep what was measured; the traceback goes into the report
            bench.report.setdefault("errors", []).append(traceback.format_exc())
        bench.save()
    print(to_markdown(bench.report), end="")
    return 1 if bench.report.get("errors") or bench.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
