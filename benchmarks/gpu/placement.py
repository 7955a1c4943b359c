"""Where ONNX Runtime runs each node of the exports, from its profiler, on the device.

    python -m benchmarks.gpu.placement --inputs benchmarks/gpu/inputs --out $OUT [--cpu-smoke]

ONNX Runtime's kernel table does not predict placement (../shared/docs/gpu.md): a session is profiled
(``SessionOptions.enable_profiling``; every node event carries ``args.provider`` and ``args.op_name``) for the fp32
and fp16 exports at three optimisation levels: ``all`` (ORT's default, what ``ddrf-run`` gets: fused op types),
``basic`` and ``disabled`` (the export's own op types; ``disabled`` also runs the shape arithmetic that ``basic``
folds). A node on the CPU EP whose outputs are all integer or boolean is shape arithmetic (normal); any other is
tensor work: a host round trip and a device sync per call, with the Memcpy nodes ORT adds around it (counted).
Writes ``placement.json`` in the schema of ``export/cuda_ops.json`` (copy it over that file to keep the measurement)
and ``placement.md`` (per model and level: nodes per provider, Memcpy nodes, op types that ran on the CPU EP).
``--cpu-smoke`` profiles CPU sessions (every node on the CPU EP): a test of this script, not a measurement.
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ddrf_runtime.datapaths import REPO_ROOT
from ddrf_runtime.session import CPU_EP, CUDA_EP, INPUT_NAMES

from .._report import markdown_table, say
from .prepare import device_parser

NAME = "gpu.placement"
CUDA_OPS = REPO_ROOT / "export" / "cuda_ops.json"
LEVELS = ("all", "basic", "disabled")  # ORT_ENABLE_ALL (the default), ORT_ENABLE_BASIC, ORT_DISABLE_ALL
RAW_LEVELS = ("basic", "disabled")  # levels whose op types are the export's own (no contrib fusions)
SHAPE_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool"})
KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeRun:
    """One node as the profiler saw it (the first of its runs)."""

    name: str
    op_type: str
    provider: str
    output_dtypes: tuple[str, ...]  # e.g. ("float",), ("int64",)

    @property
    def shape_arithmetic(self) -> bool:
        """Integer/boolean outputs only: shape computation, harmless on the CPU EP."""
        return bool(self.output_dtypes) and set(self.output_dtypes) <= SHAPE_DTYPES

    @property
    def memcpy(self) -> bool:
        return self.op_type.startswith("Memcpy")


@dataclass(frozen=True)
class Placement:
    """What one profiled session ran where."""

    model: str  # "fp32" | "fp16"
    level: str  # one of LEVELS
    nodes: list[NodeRun]  # in first-run order

    def providers(self) -> Counter:
        return Counter(n.provider for n in self.nodes)

    def op_types(self, provider: str, *, shape: bool | None = None) -> set[str]:
        """Op types run on ``provider`` (Memcpy excluded); ``shape`` selects shape arithmetic / tensor work."""
        return {n.op_type for n in self.nodes if n.provider == provider and not n.memcpy
                and (shape is None or n.shape_arithmetic == shape)}

    def memcpy_nodes(self) -> int:
        return sum(n.memcpy for n in self.nodes)

    def cpu_tensor_nodes(self) -> list[NodeRun]:
        return [n for n in self.nodes if n.provider == CPU_EP and not n.shape_arithmetic and not n.memcpy]

    def summary(self) -> dict:
        return {"model": self.model, "level": self.level, "nodes": len(self.nodes),
                "providers": dict(self.providers()), "memcpy_nodes": self.memcpy_nodes(),
                "cuda_op_types": sorted(self.op_types(CUDA_EP)),
                "cpu_tensor_op_types": dict(Counter(n.op_type for n in self.cpu_tensor_nodes())),
                "cpu_shape_op_types": sorted(self.op_types(CPU_EP, shape=True)),
                "cpu_tensor_nodes": [n.name for n in self.cpu_tensor_nodes()][:40]}


def parse_profile(events: Iterable[Mapping]) -> list[NodeRun]:
    """The nodes of an ORT profile (a JSON list of trace events), each once, in first-run order.

    Node events are named ``<node>_kernel_time`` (before/after fences, where a build writes them, are skipped)
    and carry ``args.op_name``, ``args.provider`` and ``args.output_type_shape`` ([{dtype: shape}, …]).
    """
    seen: dict[str, NodeRun] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        node = name[:-len(KERNEL_SUFFIX)]
        if node not in seen:
            args = e["args"]
            dtypes = tuple(dtype for out in args.get("output_type_shape", []) for dtype in out)
            seen[node] = NodeRun(node, args["op_name"], args["provider"], dtypes)
    return list(seen.values())


def profile(path: Path, level: str, providers: list[str], feeds: Mapping[str, np.ndarray], runs: int = 2,
            model: str = "fp32") -> Placement:
    """Run ``path`` ``runs`` times with the profiler on; the nodes it ran and where."""
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = f"{tmp}/profile"
        options.graph_optimization_level = levels[level]
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        if session.get_providers()[0] != providers[0]:
            raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()[0]} (CUDA libraries missing?)")
        for _ in range(runs):
            session.run(None, dict(feeds))
        events = json.loads(Path(session.end_profiling()).read_text())
    return Placement(model, level, parse_profile(events))


def placement_json(placements: list[Placement], export_ops: set[str], measured: str) -> dict:
    """The export/cuda_ops.json schema from this run's profiles.

    cuda: raw op types that ran on the CUDA EP. cpu: op types that did tensor work on the CPU EP at any level
    (fused types included: a fusion that lands on the CPU is as bad). cuda_expected: the old file's expected
    types not measured now, plus op types of these exports that ran only as shape arithmetic on the CPU EP.
    """
    cuda = set().union(*(p.op_types(CUDA_EP) for p in placements if p.level in RAW_LEVELS))
    cpu = {n.op_type for p in placements for n in p.cpu_tensor_nodes()}
    previous = json.loads(CUDA_OPS.read_text())
    expected = (set(previous["cuda_expected"]) | export_ops) - cuda - cpu
    return {"about": previous["about"], "measured": measured, "cuda": sorted(cuda),
            "cuda_expected": sorted(expected), "cpu": sorted(cpu)}


def to_markdown(report: Mapping) -> str:
    lines = [f"# ONNX Runtime op placement{' (CPU SMOKE TEST — not a measurement)' * report['cpu_smoke']}", "",
             f"- {report['measured']}", f"- profiled input: {report['input']}", "",
             "## Per model and optimisation level", ""]
    lines += markdown_table(
        ["model", "level", "nodes", "on CUDA", "on CPU", "Memcpy nodes", "CPU tensor work (op: nodes)"],
        ((s["model"], s["level"], s["nodes"], s["providers"].get(CUDA_EP, 0), s["providers"].get(CPU_EP, 0),
          s["memcpy_nodes"], ", ".join(f"{k}: {v}" for k, v in s["cpu_tensor_op_types"].items()) or "none")
         for s in report["sessions"]))
    p = report["placement"]
    lines += ["", "## placement.json (replaces export/cuda_ops.json)", "",
              f"- on CUDA: {', '.join(p['cuda']) or 'none'}",
              f"- tensor work on the CPU EP: **{', '.join(p['cpu']) or 'none'}**",
              f"- expected (not measured doing tensor work): {', '.join(p['cuda_expected']) or 'none'}",
              f"- shape arithmetic on the CPU EP (normal): {', '.join(report['cpu_shape_op_types']) or 'none'}"]
    for label, error in report["failures"].items():
        lines.append(f"- **{label} failed**: {error}")
    return "\n".join(lines) + "\n"


def feeds_for(inputs: Path, tile: int, num_bands: int, timesteps: int) -> dict[str, np.ndarray]:
    """One real tile (the prepared tensors cropped to ``tile``²) at t = T−1."""
    from .latency import crop

    cond, wav = crop(np.load(inputs / "cond.npy")[:1], np.load(inputs / "wav.npy")[:1], tile)
    x_t = np.random.default_rng(0).standard_normal((1, num_bands, tile, tile), dtype=np.float32)
    return dict(zip(INPUT_NAMES, (x_t, np.array([timesteps - 1], np.int64), cond, wav)))


def run(inputs: Path, cpu_smoke: bool) -> dict:
    import onnx
    if not cpu_smoke:
        import torch  # noqa: F401  (first: ORT's CUDA provider then uses the CUDA/cuDNN libraries of torch's wheels)
    import onnxruntime as ort

    from ddrf_runtime.session import Denoiser

    if not cpu_smoke and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    providers = [CPU_EP] if cpu_smoke else [CUDA_EP, CPU_EP]
    spec = Denoiser(inputs / "model.onnx", "cpu", 1).spec
    tile = 32 if cpu_smoke else 512
    feeds = feeds_for(inputs, tile, spec.num_bands, spec.timesteps)
    placements, failures, export_ops = [], {}, set()
    for model, file in (("fp32", "model.onnx"), ("fp16", "model.fp16.onnx")):
        export_ops |= {n.op_type for n in onnx.load(inputs / file, load_external_data=False).graph.node}
        for level in LEVELS:
            try:
                placements.append(profile(inputs / file, level, providers, feeds, model=model))
                say(NAME, f"{model} {level}: {dict(placements[-1].providers())}, "
                          f"{placements[-1].memcpy_nodes()} Memcpy nodes")
            except Exception as e:  # one failed session must not cost the others' numbers
                failures[f"{model} {level}"] = f"{type(e).__name__}: {e}"
    device = "CPU (smoke test)" if cpu_smoke else _gpu_name()
    meta = json.loads((inputs / "meta.json").read_text())
    measured = (f"{datetime.now(timezone.utc):%Y-%m-%d}, {device}, onnxruntime {ort.__version__}, exports of "
                f"{meta['source']} (step {meta['checkpoint_step']}) at {meta.get('export_commit')}, profiled by "
                "benchmarks/gpu/placement.py; raw op types from the basic and disabled optimisation levels")
    return {"measured": measured, "cpu_smoke": cpu_smoke, "input": f"1×{tile}², t = T−1, providers {providers}",
            "sessions": [p.summary() for p in placements], "failures": failures,
            "cpu_shape_op_types": sorted(set().union(*(p.op_types(CPU_EP, shape=True) for p in placements))),
            "placement": placement_json(placements, export_ops, measured)}


def _gpu_name() -> str:
    try:
        import torch
        return torch.cuda.get_device_name(0)
    except Exception:  # torch without CUDA: the provider check above already failed
        return "CUDA device"


def main(argv: list[str] | None = None) -> int:
    ap = device_parser(NAME, __doc__, "profile CPU sessions at a tiny size (tests the script)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args.inputs, args.cpu_smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "placement.json").write_text(json.dumps(report["placement"], indent=1) + "\n")
    markdown = to_markdown(report)
    (args.out / "placement.md").write_text(markdown + "\n## Sessions (JSON)\n\n```json\n"
                                           + json.dumps(report["sessions"], indent=1) + "\n```\n")
    print(markdown, end="")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
