"""A small ONNX Runtime wrapper around an exported ddrf denoiser: metadata, device choice, dtype handling.

The ``.onnx`` file is the whole artifact: its ``metadata_props["ddrf"]`` (a ModelSpec) says what the
network expects. Inputs are fed by name and cast to the dtypes the graph declares, so fp32 and fp16
exports (with fp32 or fp16 I/O) run through the same code. ``X.cond.onnx`` and ``X.step.onnx`` next to
``X.onnx`` (``export.to_onnx --split``) are the same network cut in two: the condition encoder, run once
per batch of tiles, and the per-step denoiser, run for every step and sample.
"""
from __future__ import annotations

import enum
import functools
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # neither build installed: Denoiser says which extra to install
    ort = None

from .errors import ConfigError, DeviceError, ModelError
from .model_spec import METADATA_KEY, ModelSpec, Objective

log = logging.getLogger(__name__)

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
INPUT_NAMES = ("x_t", "t", "cond", "wav")  # the network I/O contract (docs/ARCHITECTURE.md)
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}

ENCODER_INPUTS, STEP_INPUTS = ("cond", "wav"), ("x_t", "t")  # the split graphs' own inputs
# denoise(x_t (B·N, C, H, W), t) -> x0 (B·N, C, H, W) float32, for N samples of B tiles whose conditions are fixed.
DenoiseFn = Callable[[np.ndarray, int], np.ndarray]


def split_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The condition encoder and per-step graphs that ``export.to_onnx --split`` writes next to ``path``."""
    path = Path(path)
    return path.with_suffix(".cond.onnx"), path.with_suffix(".step.onnx")


class Device(str, enum.Enum):
    AUTO = "auto"  # CUDA when this ONNX Runtime build has it, else CPU
    CUDA = "cuda"  # CUDA or fail (never a silent CPU fallback)
    CPU = "cpu"


NO_RUNTIME = "ONNX Runtime is not installed: pip install 'ddrf[cpu]' (or 'ddrf[gpu]' on a CUDA machine)"
_BUILDS = ("onnxruntime", "onnxruntime-gpu")  # distributions that both install the `onnxruntime` module


def _check_runtime_install() -> None:
    """DeviceError without ONNX Runtime; a warning when both builds are installed (one overwrote the other)."""
    if ort is None:
        raise DeviceError(NO_RUNTIME)
    installed = []
    for name in _BUILDS:
        try:
            installed.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    if len(installed) > 1:
        log.warning("both %s are installed and share one module; keep one: pip uninstall -y onnxruntime "
                    "onnxruntime-gpu, then pip install 'ddrf[cpu]' or 'ddrf[gpu]'", " and ".join(installed))


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the NVIDIA wheels of the [gpu] extra (or PyTorch's) before the CUDA provider
    needs them: without it the provider only searches the system's library paths. Best effort: a failure
    here shows as the CUDA provider not loading, which ``Denoiser`` reports."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # noqa: BLE001 - any failure leaves the system paths to the provider
        log.debug("onnxruntime.preload_dlls failed: %s", e)


def _requested_providers(device: Device) -> list[str]:
    if device is Device.CPU:
        return [CPU_EP]
    available = ort.get_available_providers()
    if CUDA_EP in available:
        _preload_cuda_libraries()
        return [CUDA_EP, CPU_EP]
    if device is Device.CUDA:
        raise DeviceError(f"device 'cuda' requested, but this ONNX Runtime ({ort.__version__}) has no CUDA "
                          f"provider (available: {', '.join(available)}); install onnxruntime-gpu")
    return [CPU_EP]


def checked_device(device: Device | str, intra_op_threads: int | None) -> Device:
    """The device and thread options every backend takes, validated once (ConfigError on bad values)."""
    try:
        device = Device(device)
    except ValueError:
        raise ConfigError(f"device must be one of {[d.value for d in Device]}, got {device!r}") from None
    if intra_op_threads is not None and intra_op_threads < 1:
        raise ConfigError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    return device


def _open_session(path: Path | str, options: "ort.SessionOptions", providers: list[str]) -> "ort.InferenceSession":
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # ORT's own exception types all derive from Exception directly
        raise ModelError(f"ONNX Runtime cannot load the model ({e})", str(path)) from None


class _Graph:
    """One session fed by name: each input cast to the dtype the graph declares, the first output returned."""

    def __init__(self, session: "ort.InferenceSession") -> None:
        self.session = session
        self.types = {i.name: i.type for i in session.get_inputs()}
        self.dtypes = {n: np.dtype(_NUMPY_TYPES[t]) for n, t in self.types.items() if t in _NUMPY_TYPES}
        self.outputs = [o.name for o in session.get_outputs()]

    def cast(self, name: str, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=self.dtypes[name])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, {n: self.cast(n, x) for n, x in feeds.items()})


def _split_problem(encoder: _Graph, step: _Graph, spec: ModelSpec, providers: tuple[str, ...]) -> str | None:
    """Why a split pair cannot stand in for the monolithic graph of ``spec``, or None."""
    for graph in (encoder, step):
        text = graph.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None or ModelSpec.from_json(text) != spec:
            return "its metadata differs from the model's (an export of another checkpoint or options?)"
        if tuple(graph.session.get_providers()) != providers:
            return f"it runs on {graph.session.get_providers()[0]}, the model on {providers[0]}"
        if len(graph.dtypes) != len(graph.types):
            return f"unsupported input types {graph.types}"
    if set(encoder.types) != set(ENCODER_INPUTS) or set(step.types) != {*STEP_INPUTS, *encoder.outputs}:
        return (f"the encoder's inputs {sorted(encoder.types)} and outputs {encoder.outputs} do not fit the "
                f"step graph's inputs {sorted(step.types)}")
    return None


def _repeat_rows(a: np.ndarray, n: int) -> np.ndarray:
    """(B, ...) → (B·n, ...), row i repeated n times in a row (tile i's samples at rows i·n .. i·n + n − 1)."""
    return np.repeat(a, n, axis=0) if n > 1 else a


class Denoiser:
    """An exported ddrf network on one device: ``denoiser(x_t, t, cond, wav) -> x0`` (float32, NCHW).

    With ``split`` (the default) the split graphs next to the model are used when present and consistent:
    the same outputs (within float32 rounding), the condition's share of the work done once per batch.
    """

    def __init__(self, path: str | os.PathLike, device: Device | str = Device.AUTO,
                 intra_op_threads: int | None = None, split: bool = True) -> None:
        self.path = str(path)
        device = checked_device(device, intra_op_threads)
        _check_runtime_install()
        if not Path(path).is_file():
            raise ModelError("model file not found", self.path)
        requested = _requested_providers(device)
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        if requested == [CPU_EP]:
            # The CPU memory-pattern planner adds one more block of the whole activation size at the second run
            # of a shape (and again per new shape) on top of the arena the first run filled: peak RSS grew with
            # the number of calls (1.9 → 4.5 GiB from a 1× to a 16× scene, benchmarks/memory.py). Without it the
            # arena is reused: same outputs and speed, peak flat at the one-call level.
            options.enable_mem_pattern = False
        self.session = _open_session(self.path, options, requested)
        # ORT drops a provider it cannot load (e.g. missing CUDA libraries) with only a log warning: check.
        self.providers_used: tuple[str, ...] = tuple(self.session.get_providers())
        self.on_cuda = self.providers_used[0] == CUDA_EP
        if requested[0] == CUDA_EP and not self.on_cuda:
            if device is Device.CUDA:
                raise DeviceError("device 'cuda' requested, but ONNX Runtime fell back to "
                                  f"{self.providers_used[0]} (CUDA/cuDNN libraries missing or incompatible?)")
            log.warning("CUDA provider failed to load; running on CPU")
        if device is Device.AUTO:
            log.info("device auto: running on %s", "CUDA" if self.on_cuda else "CPU")

        meta = self.session.get_modelmeta()
        text = meta.custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise ModelError(f"model has no '{METADATA_KEY}' metadata: not a ddrf export", self.path)
        self.spec = ModelSpec.from_json(text, self.path)
        if self.spec.objective is not Objective.X0:
            raise ModelError(f"the runtime samples x0-predicting models only; this one predicts "
                             f"{self.spec.objective.value}", self.path)
        self.versions = {"onnxruntime": ort.__version__, "model_format": str(self.spec.format_version),
                         "model_opset": str(self.spec.opset), "model_producer": f"{meta.producer_name} {meta.version}"}

        inputs = {i.name: i.type for i in self.session.get_inputs()}
        missing = [n for n in INPUT_NAMES if n not in inputs]
        if missing:
            raise ModelError(f"graph lacks inputs {missing} (has {sorted(inputs)})", self.path)
        unsupported = {n: inputs[n] for n in INPUT_NAMES if inputs[n] not in _NUMPY_TYPES}
        if unsupported:
            raise ModelError(f"unsupported input types {unsupported}", self.path)
        self._check_channels()
        self._graph = _Graph(self.session)
        self._split = self._load_split(options, requested) if split else None  # (encoder, step) graphs
        self.versions["model_graphs"] = "split (cond + step)" if self._split else "monolithic"

    def _check_channels(self) -> None:
        """The graph's static channel counts must be those the metadata implies (a broken export otherwise)."""
        c, k = self.spec.num_bands, self.spec.guide_bands
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        for name, want in (("x_t", c), ("cond", c + k), ("wav", c + 3 * k)):
            have = shapes[name][1] if len(shapes[name]) > 1 else None
            if isinstance(have, int) and have != want:
                raise ModelError(f"metadata and graph disagree: {c} bands and a {k}-band guide need {want} channels "
                                 f"in input '{name}', the graph has {have}", self.path)

    def _load_split(self, options: "ort.SessionOptions", providers: list[str]) -> tuple[_Graph, _Graph] | None:
        """The split pair next to the model, or None when absent or unusable: a warning then says why (the
        monolithic graph gives the same outputs, only slower for several steps or samples)."""
        paths = split_paths(self.path)
        if not all(p.is_file() for p in paths):
            return None
        try:
            encoder, step = (_Graph(_open_session(p, options, providers)) for p in paths)
            problem = _split_problem(encoder, step, self.spec, self.providers_used)
        except ModelError as e:
            problem = str(e)
        if problem:
            log.warning("%s: not using %s and %s: %s", self.path, paths[0].name, paths[1].name, problem)
            return None
        return encoder, step

    def __call__(self, x_t: np.ndarray, t: int | np.ndarray, cond: np.ndarray, wav: np.ndarray) -> np.ndarray:
        """One network evaluation: x_t (B, C, H, W), t scalar or (B,), cond (B, C+k, H, W), wav (B, C+3k, H/2, W/2)."""
        return self.conditioned(cond, wav)(x_t, t)

    def conditioned(self, cond: np.ndarray, wav: np.ndarray, samples: int = 1) -> DenoiseFn:
        """``denoise(x_t, t)`` for the conditions of B tiles, cond (B, C+k, H, W) and wav (B, C+3k, H/2, W/2), as the
        sampler calls it: x_t (B·N, C, H, W) holds ``samples`` = N rows per tile, sample s of tile i at row i·N + s.

        With the split graphs the conditions are encoded here, once, and every call runs the step graph; the
        monolithic graph gets them repeated per sample. On CUDA each call goes through IO binding.
        """
        return self._conditioned(cond, wav, samples, "cuda" if self.on_cuda else None)

    def _conditioned(self, cond: np.ndarray, wav: np.ndarray, samples: int, bind: str | None) -> DenoiseFn:
        """``conditioned``, through IO binding on device ``bind`` (None: a plain ``run`` per call)."""
        if self._split is None:
            graph, fixed = self._graph, {"cond": _repeat_rows(cond, samples), "wav": _repeat_rows(wav, samples)}
        else:
            encoder, graph = self._split
            fixed = dict(zip(encoder.outputs, encoder.run({"cond": cond, "wav": wav})))  # (B, ...) per tile
        fixed = {name: graph.cast(name, a) for name, a in fixed.items()}
        x_shape = (cond.shape[0] * samples, self.spec.num_bands, *cond.shape[2:])  # (B·N, C, H, W)
        if bind is not None:
            return self._bound(graph, fixed, x_shape, bind)

        def run(x_t: np.ndarray, t: int) -> np.ndarray:
            x0 = graph.run({"x_t": x_t, "t": np.full(x_shape[0], t), **fixed})[0]  # (B·N, C, H, W)
            return x0.astype(np.float32, copy=False)
        return run

    @staticmethod
    def _bound(graph: _Graph, fixed: dict[str, np.ndarray], x_shape: tuple[int, ...], device: str) -> DenoiseFn:
        """IO binding: the fixed inputs stay on ``device`` for all steps and one device buffer is reused for x_t.

        The DDIM update runs on the host, so per step only x_t goes up and x0 comes back.
        """
        binding = graph.session.io_binding()
        for name, value in fixed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        x_dev = ort.OrtValue.ortvalue_from_shape_and_type(x_shape, graph.dtypes["x_t"].type, device, 0)
        binding.bind_ortvalue_input("x_t", x_dev)
        binding.bind_output(graph.outputs[0], device, 0)

        def run(x_t: np.ndarray, t: int) -> np.ndarray:
            x_dev.update_inplace(graph.cast("x_t", x_t))
            binding.bind_cpu_input("t", graph.cast("t", np.full(x_shape[0], t)))
            graph.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)
        return run
