"""Roofline numbers: FLOPs per PAN pixel per sampling step, achieved FLOP/s, and this machine's peak.

    python -m benchmarks.roofline [--quick] [--model-pt P.pt] [--model-onnx P.onnx] [--threads 1]
                                  [--gpu-results benchmarks/results/gpu_latency.json]

FLOPs (2 per multiply-add; Conv, MatMul/Gemm and attention only — normalisation, activations and pooling are
a few per element and left out) are counted twice, per preset (``small``: the benchmark model; ``reference``:
the paper configuration, random weights, exported here):
- from the ONNX graph: every Conv/MatMul/Gemm/Attention node's FLOPs from its tensor shapes at a fixed size.
  ``onnx.shape_inference`` leaves the dynamo graph's reshaped sizes symbolic, so the shapes are those ONNX
  Runtime produces when the graph runs once at that size (each needed tensor made a graph output);
- analytically on the PyTorch model with ``torch.utils.flop_counter.FlopCounterMode`` (taught the CPU
  flash-attention kernel, which it does not know).
Achieved FLOP/s = counted FLOPs / median time per call (batch 1, real demo inputs), against the fp32 GEMM
peak of this machine (torch and numpy, 1 thread and all threads). GPU timings from ``benchmarks/gpu``
(``--gpu-results``) are set against NVIDIA's published H100/H200 dense peaks.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.utils import flop_counter

from ddrf_runtime.model_spec import ModelSpec
from ddrf_runtime.session import Denoiser as OnnxDenoiser
from ddrf_train.backend import TorchDenoiser
from ddrf_train.config import UNET_PRESETS, ExperimentConfig
from ddrf_train.diffusion import build_denoiser
from ddrf_train.spec import DEFAULT_OPSET

from ._fixtures import add_model_pair_options, limit_threads, network_inputs, read_demo, resolve_models
from ._report import (RESULTS_DIR, environment, environment_lines, markdown_table, median_seconds, run_and_write,
                      say)

NAME = "roofline"
COUNTED_OPS = ("Conv", "MatMul", "Gemm", "Attention")
CATEGORY = {"Conv": "conv", "MatMul": "matmul", "Gemm": "matmul", "Attention": "attention",
            "convolution": "conv", "mm": "matmul", "addmm": "matmul", "bmm": "matmul",
            "_scaled_dot_product_flash_attention_for_cpu": "attention"}
GEMM_SIZE = 2048
GPU_RESULTS = RESULTS_DIR / "gpu_latency.json"
# NVIDIA datasheet peaks, dense (no 2:4 sparsity), TFLOP/s. torch and ONNX Runtime run fp32 convolutions on
# TF32 tensor cores by default on these GPUs, so fp32 timings are set against both fp32 rows.
GPU_PEAKS_TFLOPS: Mapping[str, Mapping[str, float]] = {
    "H100 SXM": {"fp32": 66.9, "tf32_tensor": 494.7, "fp16_tensor": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32_tensor": 378.0, "fp16_tensor": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32_tensor": 417.5, "fp16_tensor": 835.5},
    "H200 SXM": {"fp32": 66.9, "tf32_tensor": 494.7, "fp16_tensor": 989.4},
}


def gpu_peaks(device_name: str) -> tuple[str, Mapping[str, float]]:
    """The datasheet row for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (SXM) or 'NVIDIA H100 PCIe'."""
    for key, marker in (("H100 NVL", "NVL"), ("H100 PCIe", "PCIe"), ("H200 SXM", "H200"), ("H100 SXM", "H100")):
        if marker in device_name:
            return key, GPU_PEAKS_TFLOPS[key]
    raise KeyError(f"no published peaks listed for {device_name!r}")


# ------------------------------------------------------------------------------------------ counting FLOPs

def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def node_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """FLOPs of one Conv/MatMul/Gemm/Attention node (2 per multiply-add, biases ignored)."""
    out = shapes[node.output[0]]
    if node.op_type == "Conv":  # y (B, Cout, Ho, Wo), w (Cout, Cin/groups, kh, kw)
        return 2 * math.prod(out) * math.prod(shapes[node.input[1]][1:])
    if node.op_type == "MatMul":  # (..., M, K) @ (..., K, N)
        return 2 * math.prod(out) * shapes[node.input[0]][-1]
    if node.op_type == "Gemm":  # op(A) (M, K) @ op(B) (K, N)
        a = shapes[node.input[0]]
        return 2 * math.prod(out) * (a[0] if _attribute(node, "transA", 0) else a[1])
    if node.op_type == "Attention":  # softmax(Q Kᵀ) V: Q (B, H, N, d), K (B, Hkv, M, d), V (B, Hkv, M, dv)
        q, k, v = (shapes[name] for name in node.input[:3])
        if len(q) != 4:
            raise ValueError(f"Attention node {node.name}: 3-D inputs are not supported, got {q}")
        b, h, n, d = q
        return 2 * b * h * n * k[2] * (d + v[3])
    raise ValueError(f"not a counted op: {node.op_type}")


def runtime_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor a counted node reads or writes, from one unoptimised ONNX Runtime run of ``feeds``."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    shapes.update({name: a.shape for name, a in feeds.items()})
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = set(shapes) | {o.name for o in probe.graph.output}
    wanted = sorted({x for n in probe.graph.node if n.op_type in COUNTED_OPS for x in [*n.input, *n.output]
                     if x and x not in known})
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node as written
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes.update({name: value.shape for name, value in zip(names, session.run(None, dict(feeds)))})
    return shapes


def onnx_flops(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """FLOPs of one graph evaluation on ``feeds``, by op type."""
    shapes = runtime_shapes(model, feeds)
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if node.op_type in COUNTED_OPS:
            counts[node.op_type] += node_flops(node, shapes)
    return dict(counts)


def _cpu_flash_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def torch_flops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """FLOPs of one forward pass by aten op (FlopCounterMode, plus the CPU flash-attention kernel)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}
    with torch.inference_mode(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(*inputs)
    return {str(op).split(".")[-1]: int(n) for op, n in counter.get_flop_counts()["Global"].items()}


def by_category(counts: Mapping[str, int]) -> dict[str, int]:
    out = {"conv": 0, "matmul": 0, "attention": 0}
    for op, n in counts.items():
        out[CATEGORY[op]] += n
    return out


# ------------------------------------------------------------------------------------------ peaks and timing

def torch_gemm_flops(threads: int, n: int = GEMM_SIZE) -> float:
    """fp32 FLOP/s of an n×n @ n×n torch matmul on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats=5)


def numpy_gemm_flops(n: int = GEMM_SIZE) -> float:
    """fp32 FLOP/s of an n×n numpy matmul with the BLAS's own threading (set by environment variables)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    return 2 * n**3 / median_seconds(lambda: a @ a, repeats=5)


def numpy_gemm_flops_threads(threads: int) -> float:
    """``numpy_gemm_flops`` in a fresh interpreter whose BLAS is limited to ``threads`` threads."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    code = "from benchmarks.roofline import numpy_gemm_flops; print(numpy_gemm_flops())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.split()[-1])


def peaks(threads: tuple[int, ...]) -> list[dict]:
    rows = []
    for n in threads:
        rows.append({"library": "torch", "threads": n, "gflops": torch_gemm_flops(n) / 1e9})
        rows.append({"library": "numpy", "threads": n, "gflops": numpy_gemm_flops_threads(n) / 1e9})
    return rows


def export_preset(preset: str, path: Path) -> torch.nn.Module:
    """A randomly initialised 4-band model of ``preset`` (eval mode), exported to ``path`` as the product would be."""
    from export.to_onnx import export_graph  # torch + onnx + onnxscript

    config = ExperimentConfig(model=dataclasses.replace(UNET_PRESETS[preset], bands=4))
    torch.manual_seed(0)
    model = build_denoiser(config).eval()
    onnx.save(export_graph(model, config, DEFAULT_OPSET), path)
    return model


def preset_of(config: ExperimentConfig) -> str:
    return next((name for name, cfg in UNET_PRESETS.items()
                 if dataclasses.replace(cfg, bands=config.model.bands) == config.model), "custom")


def measure(preset: str, model: torch.nn.Module, onnx_path: Path, spec: ModelSpec, scene, tiles: tuple[int, ...],
            timing_tiles: tuple[int, ...], threads: int, repeats: int) -> list[dict]:
    """Per tile: FLOPs from both counters and, for ``timing_tiles``, the measured call times of both runtimes."""
    graph = onnx.load(onnx_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rows = []
    for tile in tiles:
        x_t, cond, wav = network_inputs(scene.ms, scene.pan, scene.scale, spec, tile, batch=1)
        feeds = {"x_t": x_t, "t": np.array([spec.timesteps - 1]), "cond": cond, "wav": wav}
        tensors = tuple(torch.from_numpy(a) for a in feeds.values())
        from_onnx, from_torch = onnx_flops(graph, feeds), torch_flops(model, tensors)
        row = {"preset": preset, "tile": tile, "onnx_flops": from_onnx, "torch_flops": from_torch,
               "onnx_total": sum(from_onnx.values()), "torch_total": sum(from_torch.values())}
        row["flops_per_pixel"] = row["onnx_total"] / tile**2
        row["relative_difference"] = row["onnx_total"] / row["torch_total"] - 1
        if tile in timing_tiles:
            with torch.inference_mode():
                row["torch_s"] = median_seconds(lambda: model(*tensors), repeats)
            row["onnx_s"] = median_seconds(lambda: session.run(None, feeds), repeats)
        say(NAME, f"{preset} tile {tile}: {row['flops_per_pixel'] / 1e3:.1f} kFLOP/px "
                  f"(onnx/torch count {row['relative_difference']:+.2%})")
        rows.append(row)
    return rows


def gpu_rows(path: Path, count_at: dict[int, float]) -> dict | None:
    """Achieved TFLOP/s of the GPU timings in ``path`` against the device's published peaks."""
    if not path.exists():
        return None
    gpu = json.loads(path.read_text())
    name, peak = gpu_peaks(gpu["device"])
    rows = []
    for call in gpu["calls"]:
        if call.get("median_s") is None or call["tile"] not in count_at:
            continue
        tflops = count_at[call["tile"]] * call["batch"] * call["tile"] ** 2 / call["median_s"] / 1e12
        reference = ("fp16_tensor",) if call["precision"] == "fp16" else ("fp32", "tf32_tensor")
        rows.append({**call, "tflops": tflops, **{f"fraction_of_{k}": tflops / peak[k] for k in reference}})
    return {"source": str(path), "device": gpu["device"], "peaks_row": name, "rows": rows}


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    env = environment(NAME, argv, ("numpy", "torch", "onnxruntime", "onnx"))
    limit_threads(args.threads)
    tiles, timing_tiles = ((256,), (256,)) if args.quick else ((128, 256, 512), (256, 512))
    models = resolve_models(args.model_pt, args.model_onnx, threads=args.threads)
    small = TorchDenoiser(models.pt, "cpu", args.threads)
    spec = OnnxDenoiser(models.onnx, "cpu", args.threads).spec
    scene = read_demo()
    repeats = 3
    rows = measure(preset_of(small.config), small.model, models.onnx, spec, scene, tiles, timing_tiles,
                   args.threads, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        say(NAME, "exporting a random-weight reference-preset model")
        reference = export_preset("reference", Path(tmp) / "reference.onnx")
        rows += measure("reference", reference, Path(tmp) / "reference.onnx", spec, scene, tiles, timing_tiles,
                        args.threads, repeats)
    peak_rows = peaks(tuple(sorted({1, os.cpu_count() or 1})))
    one_thread_peak = max(p["gflops"] for p in peak_rows if p["threads"] == 1)
    for row in rows:
        for rt in ("torch", "onnx"):
            if f"{rt}_s" in row:
                row[f"{rt}_gflops"] = row["onnx_total"] / row[f"{rt}_s"] / 1e9
                row[f"{rt}_fraction_of_1_thread_peak"] = row[f"{rt}_gflops"] / one_thread_peak
    small_rows = [r for r in rows if r["preset"] != "reference"]
    gpu = gpu_rows(args.gpu_results, {r["tile"]: r["flops_per_pixel"] for r in small_rows})
    return {**env, "quick": args.quick, "threads": args.threads, "models": dataclasses.asdict(models),
            "gemm_size": GEMM_SIZE, "peaks": peak_rows, "one_thread_peak_gflops": one_thread_peak, "rows": rows,
            "gpu_peaks_tflops": GPU_PEAKS_TFLOPS, "gpu": gpu}


def to_markdown(r: dict) -> str:
    lines = [f"# Roofline: FLOPs per PAN pixel per step, achieved FLOP/s ({'quick' if r['quick'] else 'full'})",
             "", *environment_lines(r), f"- models: small = {r['models']['source']}; reference = random weights",
             "", f"## fp32 GEMM peak of this machine ({r['gemm_size']}² matmul, median of 5)", ""]
    lines += markdown_table(["library", "threads", "GFLOP/s"],
                            ((p["library"], p["threads"], f"{p['gflops']:.1f}") for p in r["peaks"]))
    lines += ["", "## FLOPs per PAN pixel per sampling step (batch 1)", "",
              "One step = one network call per tile; the count is Conv + MatMul/Gemm + attention. The ONNX count "
              "is from the graph's node shapes, the torch count from FlopCounterMode.", ""]
    lines += markdown_table(
        ["preset", "tile", "ONNX graph kFLOP/px", "torch counter kFLOP/px", "ONNX/torch − 1", "conv", "matmul",
         "attention"],
        ((row["preset"], row["tile"], f"{row['onnx_total'] / row['tile'] ** 2 / 1e3:.1f}",
          f"{row['torch_total'] / row['tile'] ** 2 / 1e3:.1f}", f"{row['relative_difference']:+.3%}",
          *(f"{100 * v / row['onnx_total']:.1f} %" for v in by_category(row["onnx_flops"]).values()))
         for row in r["rows"]))
    lines += ["", f"## Achieved on CPU ({r['threads']} thread, real demo tiles, median of 3 calls)", "",
              f"Fraction of the best 1-thread GEMM peak ({r['one_thread_peak_gflops']:.1f} GFLOP/s).", ""]
    lines += markdown_table(
        ["preset", "tile", "runtime", "ms per call", "GFLOP/s", "of 1-thread peak"],
        ((row["preset"], row["tile"], rt, f"{1e3 * row[f'{rt}_s']:.0f}", f"{row[f'{rt}_gflops']:.2f}",
          f"{100 * row[f'{rt}_fraction_of_1_thread_peak']:.1f} %")
         for row in r["rows"] for rt in ("onnx", "torch") if f"{rt}_s" in row))
    lines += ["", "## GPU peaks (NVIDIA datasheets, dense TFLOP/s)", ""]
    lines += markdown_table(["GPU", "FP32", "TF32 tensor", "FP16 tensor"],
                            ((k, v["fp32"], v["tf32_tensor"], v["fp16_tensor"])
                             for k, v in r["gpu_peaks_tflops"].items()))
    g = r["gpu"]
    lines.append("")
    if g is None:
        lines.append("No GPU timings: no GPU was available to this session (see `benchmarks/gpu/run_all.sh`).")
    else:
        lines += [f"Achieved on {g['device']} (peaks row {g['peaks_row']}), from `{g['source']}`:", ""]
        lines += markdown_table(
            ["runtime", "precision", "batch", "tile", "ms", "TFLOP/s", "of peak"],
            ((c["runtime"], c["precision"], c["batch"], c["tile"], f"{1e3 * c['median_s']:.2f}", f"{c['tflops']:.2f}",
              ", ".join(f"{100 * v:.2f} % {k.removeprefix('fraction_of_')}" for k, v in c.items()
                        if k.startswith("fraction_of_"))) for c in g["rows"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="count and time at tile 256 only")
    add_model_pair_options(ap)
    ap.add_argument("--threads", type=int, default=1, help="threads of the timed calls (default 1)")
    ap.add_argument("--gpu-results", type=Path, default=GPU_RESULTS, help="JSON written by benchmarks/gpu")
    args = ap.parse_args(argv)
    run_and_write(f"{NAME}_quick" if args.quick else NAME, lambda: run(args, argv), to_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
