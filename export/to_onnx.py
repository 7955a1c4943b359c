"""Export a training checkpoint's EMA denoiser to a self-describing ONNX file.

    python -m export.to_onnx CKPT [-o OUT.onnx] [--fp16] [--split] [--opset 23] [--default-steps N] [--check]

The graph is ``Denoiser.forward`` (x0 output; eps/v conversion happens inside), exported with the
dynamo exporter with dynamic batch, height and width, and carries its ``ModelSpec`` in
``metadata_props["ddrf"]``. Before a file is renamed into place, ONNX Runtime loads it and the graph
it will really execute is inspected (no GroupNormalization left, the fused Attention present); with
``--check`` it must also match PyTorch on real data. ``--fp16`` adds ``OUT.fp16.onnx`` (fp32 I/O). ``--split``
adds, for each, the same network cut in two (``OUT.cond.onnx``: the condition encoder, run once per batch of
tiles; ``OUT.step.onnx``: the per-step denoiser; ``export/split.py``), which the runtime uses when present.
ORT's transformer optimizer is not used: its fusions are GPU-specific and the CPU graph must stay portable.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnxruntime as ort
import torch
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxscript import opset23 as op
from torch.export import Dim

from ddrf_runtime.backends import DenoiserLike
from ddrf_runtime.evaluation.datasets import reduced_resolution_split
from ddrf_runtime.errors import ConfigError, DdrfError, ModelError, OutputError
from ddrf_runtime.model_spec import METADATA_KEY, ModelSpec
from ddrf_runtime.pipeline import DEFAULT_TILE
from ddrf_runtime.session import INPUT_NAMES, Denoiser as OnnxDenoiser, split_paths
from ddrf_train.backend import TorchDenoiser
from ddrf_train.checkpoint import load_denoiser
from ddrf_train.config import ExperimentConfig
from ddrf_train.diffusion import Denoiser
from ddrf_train.spec import DEFAULT_OPSET, build_spec

from .check import call_diffs, real_patches, sampling_diff, tile_patch
from .split import Trace, split_traces

PROG = "export.to_onnx"
OUTPUT_NAME = "x0"
MIN_OPSET = 23  # the first opset with ai.onnx Attention, which F.scaled_dot_product_attention lowers to
FP32_CALL_TOL, FP16_CALL_TOL, SAMPLING_TOL = 1e-4, 2e-2, 1e-3  # max |diff|: x0 per call / fused image (normalised)
# max |Δx0| per call between a split pair and its monolithic graph with 2 samples per tile (tiny test model,
# real patches: fp32 5e-6; fp16 5e-3, where ORT's CPU fp16 kernels round a broadcast batch differently)
SPLIT_CALL_TOL = {"fp32": 2e-5, "fp16": FP16_CALL_TOL}
# Node metadata the exporter adds that only bloats the file and leaks local paths (name scopes are kept:
# profilers and the tests use them to tell which module a node came from).
_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")
_TIME_EMBEDDING_SCOPE = "net.time'"  # ends a node's name_scopes entry in the sinusoidal timestep embedding


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _group_mean(x):
    """Mean of x (B, G, C/G, H, W) over each group's channels and pixels: (B, G, 1, 1, 1).

    Reduced one axis at a time (columns, rows, then the group's channels): ONNX Runtime sums a reduced axis
    sequentially in float32, and over a whole 64×512² group in one go the mean drifts by 4e-3 of the
    normalised result; over ≤ 512 values at a time it stays at float32 rounding.
    """
    for axis in (4, 3, 2):
        x = op.ReduceMean(x, op.Constant(value_ints=[axis]), keepdims=1)
    return x


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, cudnn_enabled: bool = True):
    """aten.group_norm from primitive ops (ReduceMean, Sub, Mul, Add, Sqrt, Reciprocal) and the per-channel affine.

    The default lowering emits ai.onnx GroupNormalization, which ONNX Runtime has no kernel for; the
    InstanceNormalization form used before runs on ONNX Runtime's CPU EP even in a CUDA session (88 host
    round trips per call on an H200, ../shared/docs/gpu.md). These primitives have kernels on every provider.
    The weight is folded into the per-channel scale, so the pixels see one subtraction and one multiply
    (and the bias add). Tensor arguments are left unannotated: the exporter reads annotations to tell
    attributes (num_groups, eps) from inputs.
    """
    groups = op.Constant(value_ints=[num_groups, -1])
    x5 = op.Reshape(x, op.Concat(op.Shape(x, start=0, end=1), groups, op.Shape(x, start=2, end=4), axis=0))
    centred = op.Sub(x5, _group_mean(x5))  # (B, G, C/G, H, W)
    variance = _group_mean(op.Mul(centred, centred))  # (B, G, 1, 1, 1)
    scale = op.Reciprocal(op.Sqrt(op.Add(variance, op.CastLike(op.Constant(value_float=eps), x))))
    if weight is not None:
        per_group = op.Concat(op.Constant(value_ints=[1]), groups, op.Constant(value_ints=[1, 1]), axis=0)
        scale = op.Mul(scale, op.Reshape(weight, per_group))  # (B, G, C/G, 1, 1)
    y = op.Reshape(op.Mul(centred, scale), op.Shape(x))  # (B, C, H, W)
    if bias is not None:
        y = op.Add(y, op.Reshape(bias, op.Concat(op.Shape(x, start=1, end=2), op.Constant(value_ints=[1, 1]), axis=0)))
    return y


def dynamic_shapes(size_multiple: int) -> dict[str, dict[int, Any]]:
    """Batch, height and width free; height and width multiples of ``size_multiple`` (wav: half of them)."""
    batch, rows, cols = Dim("batch", min=1), Dim("rows", min=1), Dim("cols", min=1)  # rows = H / size_multiple
    m, half = size_multiple, size_multiple // 2
    image = {0: batch, 2: m * rows, 3: m * cols}
    return {"x_t": image, "t": {0: batch}, "cond": image, "wav": {0: batch, 2: half * rows, 3: half * cols}}


def example_inputs(config: ExperimentConfig) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: batch 2 and 3×5 size multiples, all distinct so no dynamic axes get unified."""
    m, c, k = config.model.size_multiple, config.model.bands, config.model.guide_bands
    h, w = 3 * m, 5 * m
    return (torch.randn(2, c, h, w), torch.tensor([0, config.diffusion.timesteps - 1]),  # x_t, t
            torch.rand(2, c + k, h, w), torch.rand(2, c + 3 * k, h // 2, w // 2))  # cond, wav


def monolithic_trace(model: Denoiser, config: ExperimentConfig) -> Trace:
    """``model.forward`` with the network I/O contract (INPUT_NAMES → x0)."""
    return Trace(model, example_inputs(config), list(INPUT_NAMES), [OUTPUT_NAME],
                 dynamic_shapes(config.model.size_multiple))


def export_graph(model: Denoiser, config: ExperimentConfig, opset: int) -> onnx.ModelProto:
    """The dynamo export of ``model`` (eval mode) with named I/O and the GroupNorm translation."""
    return trace_graph(monolithic_trace(model.eval(), config), opset)


def trace_graph(trace: Trace, opset: int) -> onnx.ModelProto:
    """The dynamo export of one trace, with the GroupNorm translation and without bulky node metadata."""
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" registry notes
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # x_t/cond share axes
            warnings.filterwarnings("ignore", category=FutureWarning)
            program = torch.onnx.export(
                trace.module, trace.args, input_names=trace.input_names, output_names=trace.output_names,
                dynamic_shapes=trace.dynamic_shapes, dynamo=True, opset_version=opset,
                custom_translation_table={torch.ops.aten.group_norm.default: group_norm}, verbose=False)
    finally:
        quiet.setLevel(level)
    graph = program.model_proto
    for node in graph.graph.node:
        keep = [p for p in node.metadata_props if p.key not in _DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    return graph


def annotate(graph: onnx.ModelProto, spec: ModelSpec, checkpoint: Path, step: int, name: str = "ddrf_denoiser",
             function: str = "x0 = f(x_t, t, cond, wav)") -> None:
    """The ddrf ModelSpec plus the standard producer/doc fields (ORT reports model_version as the step)."""
    onnx.helper.set_model_props(graph, {METADATA_KEY: spec.to_json()})
    try:
        ddrf_version = importlib.metadata.version("ddrf")
    except importlib.metadata.PackageNotFoundError:
        ddrf_version = "unknown"
    graph.producer_name = "ddrf export.to_onnx"
    graph.producer_version = f"{ddrf_version} (torch {torch.__version__})"
    graph.model_version = step
    graph.graph.name = name
    graph.doc_string = (
        f"DDRF pansharpening denoiser {function} for {len(spec.bands)} bands "
        f"({', '.join(spec.bands)}), ratio {spec.ratio}; EMA weights of {checkpoint.name} at step {step}. "
        f"See metadata_props['{METADATA_KEY}'].")


def to_fp16(graph: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations with fp32 I/O; the timestep embedding stays fp32.

    t·freq reaches T−1 radians, where fp16's spacing (0.25 at 256..512) puts the sinusoids off by up to
    0.2 (measured at T = 500); the embedding is a handful of tiny ops, so fp32 there costs nothing.
    """
    block = [n.name for n in graph.graph.node
             if any(p.key == "pkg.torch.onnx.name_scopes" and _TIME_EMBEDDING_SCOPE in p.value
                    for p in n.metadata_props)]
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    return convert_float_to_float16(copy, keep_io_types=True, node_block_list=block)


def op_counts(graph: onnx.ModelProto) -> Counter[str]:
    """Node count per op type; ops outside ai.onnx are prefixed with their domain."""
    return Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in graph.graph.node)


def ort_op_counts(path: Path, threads: int | None, name: Path | None = None) -> Counter[str]:
    """Op counts of the graph ONNX Runtime really runs on CPU, after its own fusions and layout changes.

    ``name`` is the file errors name (the final name of a temporary ``path``)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3  # the optimised file is hardware-specific (NCHWc): we only read it
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types, all plain Exceptions
            raise ModelError(f"ONNX Runtime cannot load the export ({e})", str(name or path)) from None
        return op_counts(onnx.load(options.optimized_model_filepath))


def _count(counts: Counter[str], op_type: str) -> int:
    return sum(n for name, n in counts.items() if name.rsplit(".", 1)[-1] == op_type)


def verify_runtime_graph(path: Path, final: Path, threads: int | None, attention: bool = True) -> Counter[str]:
    """Fail unless ORT's optimised graph of ``path`` (to become ``final``) has no GroupNormalization and
    (where ``attention``: all but the condition encoder) the fused Attention."""
    counts = ort_op_counts(path, threads, final)
    _say(f"{final.name}: ONNX Runtime CPU graph: {_format_counts(counts)}")
    if _count(counts, "GroupNormalization"):
        raise ModelError("GroupNormalization survived into the runtime graph", str(final))
    if attention and not _count(counts, "Attention"):
        raise ModelError("no fused Attention in the runtime graph", str(final))
    return counts


def _format_counts(counts: Counter[str]) -> str:
    return f"{sum(counts.values())} nodes: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())


@dataclass(frozen=True)
class Artifact:
    """One precision's files: the monolithic graph and, with ``--split``, its encoder and step graphs."""

    label: str  # "fp32" or "fp16"
    path: Path  # the monolithic graph's final path; the split graphs go to ``split_paths(path)``
    graphs: tuple[onnx.ModelProto, ...]  # monolithic[, encoder, step]
    tol: float  # max |Δx0| per call against PyTorch

    @property
    def split(self) -> bool:
        return len(self.graphs) > 1


def _files(path: Path, count: int) -> list[Path]:
    """The monolithic graph at ``path`` and, for a split artifact (count 3), the encoder and step beside it."""
    return [path, *split_paths(path)][:count]


def check_parity(checkpoint: Path, artifacts: Sequence[tuple[Artifact, Path]], steps: int,
                 threads: int | None) -> None:
    """Per-call and whole-sampling comparison with PyTorch on real test-split patches; raise on a miss.

    ``artifacts`` pairs each artifact with the temporary path of its monolithic graph (split graphs beside it).
    A split pair is compared with PyTorch and with its monolithic graph, there with two samples per tile.
    """
    reference = TorchDenoiser(checkpoint, "cpu", threads)
    pairs = reduced_resolution_split(reference.config.train.family.value, "test")
    real = real_patches(pairs, reference.spec.size_multiple, target=reference.spec.target)
    if not real:
        raise ModelError(f"no test pair of family {reference.config.train.family.value!r} holds a "
                         f"{reference.spec.size_multiple}-pixel patch to check with", str(checkpoint))
    multiple = math.lcm(reference.spec.size_multiple, reference.spec.ratio)
    patches = [*real, tile_patch(real, DEFAULT_TILE // multiple * multiple)]  # and the runtime's tile size
    failures = []

    def compare(label: str, ref: DenoiserLike, candidate: DenoiserLike, tol: float, samples: int = 1) -> None:
        worst = 0.0
        for patch, t, diff in call_diffs(ref, candidate, patches, samples=samples):
            _say(f"check {label}: {patch} t={t}: max |Δx0| = {diff:.2e}")
            worst = max(worst, diff)
        if worst > tol:
            failures.append(f"{label} per-call max |Δx0| {worst:.2e} > {tol:g}")

    for artifact, path in artifacts:
        candidate = OnnxDenoiser(path, "cpu", threads, split=False)
        compare(artifact.label, reference, candidate, artifact.tol)
        if artifact.label == "fp32":
            diff = sampling_diff(reference.model, candidate, real[-1], steps)
            _say(f"check fp32: {steps}-step DDIM on {real[-1].label}: max |Δfused| = {diff:.2e} (normalised)")
            if diff > SAMPLING_TOL:
                failures.append(f"fp32 {steps}-step sampling max |Δfused| {diff:.2e} > {SAMPLING_TOL:g}")
        if artifact.split:
            split = OnnxDenoiser(path, "cpu", threads)
            if split.versions["model_graphs"] == "monolithic":
                raise ModelError("the runtime does not take the split graphs (see the warning above)",
                                 str(artifact.path))
            compare(f"{artifact.label} split", reference, split, artifact.tol)
            compare(f"{artifact.label} split vs monolithic, 2 samples", candidate, split,
                    SPLIT_CALL_TOL[artifact.label], samples=2)
    if failures:
        raise ModelError("parity check failed: " + "; ".join(failures), str(checkpoint))


def fp16_path(out: Path) -> Path:
    return out.with_suffix(".fp16.onnx")


def _temp_path(final: Path) -> Path:
    """A hidden per-process name next to ``final`` that keeps its ``.onnx`` suffix, so the split graphs of a
    temporary monolithic graph sit where the runtime looks for them (``split_paths``)."""
    return final.parent / f".{final.stem}.{os.getpid()}.tmp.onnx"


def _write(graph: onnx.ModelProto, tmp: Path, final: Path) -> None:
    try:
        onnx.save(graph, tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the model ({e.strerror or e})", str(final)) from None


def export(checkpoint: Path, out: Path, *, fp16: bool = False, split: bool = False, opset: int = DEFAULT_OPSET,
           default_steps: int = 1, check: bool = False, check_steps: int = 5, threads: int | None = None) -> list[Path]:
    """Export, verify (and optionally check) ``checkpoint``; return the files written (fp32, then fp16; each
    monolithic, then with ``split`` its encoder and step graphs)."""
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset must be >= {MIN_OPSET} (the fused Attention op), got {opset}")
    if out.resolve() == checkpoint.resolve():
        raise ConfigError("the output would overwrite the checkpoint", str(out))
    model, config, payload = load_denoiser(checkpoint)
    steps_ok = 1 <= default_steps <= config.diffusion.timesteps and 1 <= check_steps <= config.diffusion.timesteps
    if not steps_ok:
        raise ConfigError(f"--default-steps and --check-steps must be in 1..{config.diffusion.timesteps}",
                          str(checkpoint))
    if threads is not None:
        torch.set_num_threads(threads)
    spec = build_spec(config, payload, checkpoint, default_steps, opset)
    step = int(payload["step"])
    n_params = sum(p.numel() for p in model.parameters())
    _say(f"exporting EMA weights of {checkpoint} (step {step}, {n_params:,} parameters, opset {opset})")
    start = time.perf_counter()
    trace = monolithic_trace(model.eval(), config)
    graphs = [trace_graph(trace, opset)]
    annotate(graphs[0], spec, checkpoint, step)
    if split:
        encoder, stepper = split_traces(model, trace.args, trace.dynamic_shapes, config.model.size_multiple,
                                        OUTPUT_NAME)
        graphs += [trace_graph(encoder, opset), trace_graph(stepper, opset)]
        annotate(graphs[1], spec, checkpoint, step, "ddrf_condition_encoder", "condition encoder (cond, wav) → "
                 f"{', '.join(encoder.output_names)}")
        annotate(graphs[2], spec, checkpoint, step, "ddrf_denoiser_step", "step x0 = f(x_t, t, encoder outputs)")
    for g in graphs:
        _say(f"exported {g.graph.name} in {time.perf_counter() - start:.1f} s: {_format_counts(op_counts(g))}")

    artifacts = [Artifact("fp32", out, tuple(graphs), FP32_CALL_TOL)]
    if fp16:
        artifacts.append(Artifact("fp16", fp16_path(out), tuple(to_fp16(g) for g in graphs), FP16_CALL_TOL))
    moves: list[tuple[Path, Path]] = []  # (temporary, final), renamed into place only once all are verified
    try:
        for artifact in artifacts:
            n = len(artifact.graphs)
            for g, tmp, final in zip(artifact.graphs, _files(_temp_path(artifact.path), n), _files(artifact.path, n)):
                _write(g, tmp, final)
                moves.append((tmp, final))
                verify_runtime_graph(tmp, final, threads, attention=g.graph.name != "ddrf_condition_encoder")
        if check:
            check_parity(checkpoint, [(a, _temp_path(a.path)) for a in artifacts], check_steps, threads)
        for tmp, final in moves:
            os.replace(tmp, final)
            _say(f"wrote {final} ({final.stat().st_size / 2**20:.2f} MiB)")
    finally:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
    return [final for _, final in moves]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (.pt); its EMA weights are exported")
    parser.add_argument("-o", "--output", type=Path, help="output .onnx (default: the checkpoint's name, .onnx)")
    parser.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx (fp16 inside, fp32 I/O)")
    parser.add_argument("--split", action="store_true",
                        help="also write OUT.cond.onnx and OUT.step.onnx (condition encoder + per-step denoiser)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--default-steps", type=int, default=1, help="DDIM steps the runtime uses by default")
    parser.add_argument("--check", action="store_true", help="compare with PyTorch on real test-split patches")
    parser.add_argument("--check-steps", type=int, default=5, help="DDIM steps of the --check sampling comparison")
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime")
    args = parser.parse_args(argv)
    try:
        export(args.checkpoint, args.output or args.checkpoint.with_suffix(".onnx"), fp16=args.fp16, split=args.split,
               opset=args.opset, default_steps=args.default_steps, check=args.check, check_steps=args.check_steps,
               threads=args.threads)
    except DdrfError as e:
        print(f"{PROG}: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
