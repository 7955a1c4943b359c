"""Run a batch plan: in this process, or on a pool of Ray actors that each load the model once.

The actor pool is Ray's, not a home-made scheduler: one actor per GPU (or per ``threads`` CPUs) keeps its ONNX
session(s) and fuses scene after scene; workers read and write the paths themselves, so pixels never travel
through Ray's object store (a job is three paths, a result one report row). Exactly once: the driver hands
each job to one actor at a time, skips outputs that exist (``atomic_output`` makes existence mean complete),
and when an actor dies mid-scene (killed process, lost node) removes the dead writer's temporary files and
gives the scene to the next free actor, up to ``max_attempts`` starts. Ray restarts the dead actor.

``ray`` is imported here only, and only when a Ray engine starts: the runtime core does not need it.
"""
from __future__ import annotations

import enum
import importlib.util
import logging
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from tqdm import tqdm

from .backends import Backend, DenoiserLike, load_denoiser
from .batch import Job, Plan, RunReport
from .cli import error_line
from .errors import ConfigError, DdrfError, DeviceError
from .raster_io import _first_line, temp_files
from .scene import SceneConfig, fuse_scene
from .session import Device

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # how long to wait for the first Ray worker to be placed (an autoscaler may add nodes)
KILL_WAIT_S = 30.0  # how long to wait for killed workers to be gone before removing their temporary files


class Engine(str, enum.Enum):
    AUTO = "auto"  # Ray when it can pay for its start-up (≥ 2 scenes to fuse and ≥ 2 worker slots, or --address)
    INLINE = "inline"  # this process, one scene after another, no Ray
    RAY = "ray"  # Ray actors: a local cluster started for the run, or the one at ``address``


@dataclass(frozen=True)
class BatchConfig:
    scene: SceneConfig = field(default_factory=SceneConfig)  # model, device, fusion; ``threads`` is per worker
    engine: Engine = Engine.AUTO  # where scenes are fused
    address: str | None = None  # Ray cluster to join ("auto", "HOST:6379", "ray://HOST:10001"); None → local
    workers: int | None = None  # actors; None → one per GPU (unless device cpu), else CPUs // threads
    max_attempts: int = 3  # starts of a scene on workers that die before it is failed (a scene that kills them)


class SceneWorker:
    """Fuses scene after scene with each model loaded once: a Ray actor's body, or used as it is in-process."""

    def __init__(self, config: SceneConfig) -> None:
        self.config = config
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._models: dict[tuple, DenoiserLike] = {}
        self._load_s = 0.0
        if config.threads:  # the DWT runs on numba's pool: as many threads as the network gets
            import numba
            numba.set_num_threads(min(config.threads, numba.config.NUMBA_NUM_THREADS))

    def identity(self) -> str:
        """``host:pid`` of the worker process (an answer also means: started and ready)."""
        return self.name

    def _load(self, path: str, backend: Backend, device: Device, threads: int | None) -> DenoiserLike:
        key = (path, Backend(backend), Device(device), threads)
        if key not in self._models:
            t = time.perf_counter()
            self._models[key] = load_denoiser(path, backend, device, threads)
            self._load_s += time.perf_counter() - t
        return self._models[key]

    def fuse(self, job: Job, attempt: int = 1) -> dict:
        """Fuse one job; its report row. Failures of the scene are rows too: only a dying process raises."""
        t, cpu, load_before = time.perf_counter(), time.process_time(), self._load_s
        row: dict = {"scene": job.ms, "pan": job.pan, "output": job.output, "worker": self.name,
                     "attempt": attempt, "status": "done", "error": None}
        if Path(job.output).exists() and not self.config.overwrite:  # done before a worker died (a retry)
            row["status"] = "skipped"
        else:
            try:
                report = fuse_scene(job.ms, job.pan, job.output, self.config, loader=self._load)
                if "metrics" in report:
                    row["metrics"] = report["metrics"]
            except DdrfError as e:
                row.update(status="failed", error=error_line(e))
            except Exception as e:  # a bug, but one scene's: the batch goes on and the row says what happened
                row.update(status="failed", error=f"unexpected error: {type(e).__name__}: {_first_line(e)}")
        row.update(seconds=round(time.perf_counter() - t, 3), cpu_s=round(time.process_time() - cpu, 3),
                   load_s=round(self._load_s - load_before, 3))
        return row


class BatchEngine(Protocol):
    kind: Engine
    workers: int  # scenes fused at once
    threads: int | None  # intra-op threads per worker (None: ONNX Runtime's default, all cores)
    startup_s: float  # from asking for the engine to the first worker ready

    def run(self, jobs: Iterable[Job]) -> Iterator[dict]: ...  # report rows, in completion order

    def close(self) -> None: ...  # stop the workers; remove temporary files of scenes cut short


class InlineEngine:
    """This process, one scene after another: no start-up cost, nothing to survive."""

    kind = Engine.INLINE
    workers = 1

    def __init__(self, config: BatchConfig) -> None:
        t = time.perf_counter()
        self.threads = config.scene.threads
        self._worker = SceneWorker(config.scene)
        self.startup_s = time.perf_counter() - t

    def run(self, jobs: Iterable[Job]) -> Iterator[dict]:
        for job in jobs:
            yield self._worker.fuse(job)  # Ctrl-C: atomic_output removes the temporary file on the way out

    def close(self) -> None:
        pass


class RayEngine:
    """A pool of ``SceneWorker`` actors on a local Ray started for the run, or on the cluster at ``address``."""

    kind = Engine.RAY

    def __init__(self, config: BatchConfig, verbose: bool = False) -> None:
        import ray  # the [cluster] extra

        t = time.perf_counter()
        self._ray, self._config = ray, config
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            local_cpus = None
            if config.address is None and config.workers:  # the user asked for this many: let them all start
                local_cpus = max(os.cpu_count() or 1, config.workers * (config.scene.threads or 1))
            try:  # "local" starts a new cluster even when another one runs on this machine (never joins it)
                ray.init(address=config.address or "local", num_cpus=local_cpus, include_dashboard=False,
                         log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR)
            except Exception as e:  # ConnectionError, AuthenticationError, ...: the cluster's state, not a bug here
                if config.address is None:
                    raise DeviceError(f"cannot start a local Ray cluster ({_first_line(e)})") from None
                raise DeviceError(f"cannot join the Ray cluster at {config.address} ({_first_line(e)}); is its head "
                                  "running, and RAY_AUTH_MODE=token set here if it uses token authentication?",
                                  "--address") from None
        try:
            scene, resources, self.workers = worker_placement(config, ray.cluster_resources())
            self.threads = scene.threads
            actor = ray.remote(SceneWorker).options(max_restarts=-1, max_task_retries=0, **resources)
            self._actors = [actor.remote(scene) for _ in range(self.workers)]
            self._idle: deque[int] = deque()
            self._starting = {a.identity.remote(): i for i, a in enumerate(self._actors)}  # answer → ready
            self._busy: dict = {}  # ObjectRef → (actor index, job, attempt)
            self._names: dict[int, str] = {}  # actor index → host:pid of its current process
            ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=START_TIMEOUT_S)
            if not ready:
                raise DeviceError(f"no Ray worker could be placed in {START_TIMEOUT_S:.0f} s (each needs "
                                  f"{resources}; the cluster has {ray.cluster_resources()})")
        except BaseException:  # Ctrl-C or a placement failure while starting: leave no workers behind
            self._kill_workers()
            if self._owns_connection:
                ray.shutdown()
            raise
        self.startup_s = time.perf_counter() - t

    def run(self, jobs: Iterable[Job]) -> Iterator[dict]:
        ray, queue = self._ray, deque((job, 1) for job in jobs)
        while queue or self._busy:
            while self._idle and queue:
                i = self._idle.popleft()
                job, attempt = queue.popleft()
                self._busy[self._actors[i].fuse.remote(job, attempt)] = (i, job, attempt)
            ref = ray.wait(list(self._busy) + list(self._starting), num_returns=1)[0][0]
            if ref in self._starting:
                self._worker_ready(ref)
                continue
            i, job, attempt = self._busy.pop(ref)
            try:
                row = ray.get(ref)
                self._idle.append(i)
            except ray.exceptions.RayActorError as e:  # the worker died mid-scene: Ray restarts it
                self._starting[self._actors[i].identity.remote()] = i
                _wait_gone(self._names.get(i))
                remove_temps([job.output])  # the dead writer's; the output itself was never touched
                if attempt < self._config.max_attempts:
                    log.warning("worker died while fusing %s (%s); retrying it", job.ms, type(e).__name__)
                    queue.appendleft((job, attempt + 1))
                    continue
                row = {"scene": job.ms, "pan": job.pan, "output": job.output, "worker": None, "attempt": attempt,
                       "status": "failed", "seconds": None,
                       "error": f"workers died while fusing it, on all {attempt} attempt(s) (last: "
                                f"{type(e).__name__}); the scene may crash or exhaust them"}
            yield row

    def _worker_ready(self, ref) -> None:
        i = self._starting.pop(ref)
        try:
            self._names[i] = self._ray.get(ref)
        except self._ray.exceptions.RayActorError:  # died again while (re)starting: ask again
            self._starting[self._actors[i].identity.remote()] = i
            return
        self._idle.append(i)

    def close(self) -> None:
        """Kill the workers (a Ctrl-C leaves some mid-scene), then remove the temporary files they left."""
        cut_short = [(i, job.output) for i, job, _ in self._busy.values()]
        self._kill_workers()
        if self._busy:  # their tasks fail once Ray marks the workers dead, which can precede the processes' end
            self._ray.wait(list(self._busy), num_returns=len(self._busy), timeout=KILL_WAIT_S)
            self._busy.clear()
        for i, _ in cut_short:
            _wait_gone(self._names.get(i))
        remove_temps(out for _, out in cut_short)  # a worker on another node may still leave one: the next run's
        if self._owns_connection:
            self._ray.shutdown()

    def _kill_workers(self) -> None:
        for actor in getattr(self, "_actors", ()):
            self._ray.kill(actor, no_restart=True)


def _wait_gone(worker: str | None) -> None:
    """Wait (at most KILL_WAIT_S) until the worker process ``host:pid`` has ended, if it ran on this machine.

    Only then can nothing write its temporary files any more. A zombie has ended.
    """
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname():
        return
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (OSError, IndexError):  # no such process (or no /proc: assume it has ended)
            return
        time.sleep(0.01)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def worker_placement(config: BatchConfig, cluster: dict) -> tuple[SceneConfig, dict, int]:
    """(per-worker scene config, Ray resources per worker, workers) for the cluster's resources."""
    gpus, cpus = int(cluster.get("GPU", 0)), int(cluster.get("CPU", 0))
    device = Device(config.scene.device)
    threads = config.scene.threads or 1
    if device is Device.CUDA and gpus == 0:
        raise DeviceError("device 'cuda' requested, but the Ray cluster has no GPUs")
    if gpus and device is not Device.CPU:  # more workers than GPUs share them: CPU-side work can feed a GPU
        workers = config.workers or gpus
        return (replace(config.scene, threads=threads), {"num_gpus": min(1.0, gpus / workers), "num_cpus": threads},
                workers)
    return (replace(config.scene, threads=threads), {"num_cpus": threads},
            config.workers or max(1, cpus // threads))


def local_slots(config: BatchConfig) -> int:
    """Workers a local run would get without starting Ray: GPUs (unless device cpu), else cores // threads."""
    if config.workers:
        return config.workers
    if Device(config.scene.device) is not Device.CPU:
        gpus = _local_gpus()
        if gpus:
            return gpus
    return max(1, (os.cpu_count() or 1) // (config.scene.threads or 1))


def _local_gpus() -> int:
    """NVIDIA GPUs this process may use, as Ray counts them (CUDA_VISIBLE_DEVICES, else the driver's list)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def choose_engine(config: BatchConfig, to_fuse: int) -> Engine:
    """The engine for ``to_fuse`` scenes: Ray only where it can pay for its ~5 s start-up."""
    if to_fuse == 0:  # a rerun of a finished batch: nothing to start
        return Engine.INLINE
    if config.engine is not Engine.AUTO:
        return config.engine
    if config.address is not None:
        return Engine.RAY
    if to_fuse < 2 or not ray_available():
        return Engine.INLINE
    return Engine.RAY if local_slots(config) >= 2 else Engine.INLINE


def open_engine(config: BatchConfig, to_fuse: int, verbose: bool = False) -> BatchEngine:
    engine = choose_engine(config, to_fuse)
    if engine is Engine.RAY:
        if not ray_available():
            raise ConfigError("the Ray engine needs Ray: pip install 'ddrf[cluster]'", "--engine")
        return RayEngine(config, verbose)
    if config.engine is Engine.AUTO and to_fuse >= 2 and not ray_available():
        log.info("Ray is not installed: fusing in this process, one scene at a time (pip install 'ddrf[cluster]')")
    return InlineEngine(config)


def remove_temps(outputs: Iterable[str]) -> list[Path]:
    """Remove the temporary files killed writers left for ``outputs`` (one folder listing per folder)."""
    by_folder: dict[Path, set[str]] = {}
    for out in outputs:
        by_folder.setdefault(Path(out).parent, set()).add(Path(out).name)
    removed = []
    for folder, names in by_folder.items():
        for tmp, output_name in temp_files(folder):
            if output_name in names:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


@dataclass(frozen=True)
class BatchSummary:
    counts: dict[str, int]  # scenes by status: done, skipped, failed
    engine: str  # engine that ran (inline or ray)
    workers: int
    startup_s: float  # engine start-up
    wall_s: float  # whole run

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def run_batch(plan: Plan, config: BatchConfig, report_path: str | os.PathLike, progress: bool = False,
              verbose: bool = False) -> BatchSummary:
    """Fuse what ``plan`` still lacks, appending rows to the JSON-lines report at ``report_path``.

    Existing outputs are skipped (unless ``config.scene.overwrite``), so rerunning a batch does only what is
    missing. Ctrl-C stops the workers, removes their temporary files, writes the end row and re-raises.
    """
    t = time.perf_counter()
    report, outcome = RunReport(report_path), "error"  # locked: no other batch writes these outputs now
    try:
        todo = [j for j in plan.jobs if config.scene.overwrite or not Path(j.output).exists()]
        removed = remove_temps(j.output for j in todo)  # left by a batch that was killed
        if removed:
            log.info("removed %d temporary file(s) of a killed run", len(removed))
        for scene, reason in plan.invalid:
            report.write("scene", scene=scene, status="failed", worker=None, seconds=None, error=reason)
            _say_failed(scene, reason)
        pending = set(todo)
        for job in (j for j in plan.jobs if j not in pending):
            report.write("scene", scene=job.ms, output=job.output, status="skipped", worker=None, seconds=0.0,
                         error=None)
        engine = open_engine(config, len(todo), verbose)
        report.write("start", engine=engine.kind.value, workers=engine.workers, threads_per_worker=engine.threads,
                     startup_s=round(engine.startup_s, 3), address=config.address, scenes=len(plan.jobs),
                     to_fuse=len(todo), invalid=len(plan.invalid))
        try:
            _drain(engine, todo, report, progress)
        finally:
            engine.close()
            for job in todo:  # finished as Ctrl-C stopped the workers, before their row came back
                if job.output not in report.outputs and Path(job.output).exists():
                    report.write("scene", scene=job.ms, pan=job.pan, output=job.output, worker=None, status="done",
                                 seconds=None, error=None, note="finished as the run stopped")
        outcome = "complete"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        report.write("end", outcome=outcome, counts=dict(report.counts), wall_s=round(time.perf_counter() - t, 3))
        report.close()
    return BatchSummary(dict(report.counts), engine.kind.value, engine.workers, engine.startup_s,
                        time.perf_counter() - t)


def _drain(engine: BatchEngine, todo: list[Job], report: RunReport, progress: bool) -> None:
    """Write each row as it arrives; a progress bar over scenes with the throughput in scenes per hour."""
    t = time.perf_counter()
    with tqdm(total=len(todo), unit="scene", disable=not (progress and todo),
              desc=f"fusing ({engine.workers} worker{'s' if engine.workers > 1 else ''})") as bar:
        for row in engine.run(todo):
            report.write("scene", **row)
            if row["status"] == "failed":
                _say_failed(row["scene"], row["error"])
            bar.update()
            bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - t, 1e-9) * 3600:.0f} scenes/h", refresh=False)


def _say_failed(scene: str, error: str) -> None:
    """One stderr line per failed scene, naming it once (library errors usually start with the file)."""
    tqdm.write(f"failed: {error if error.startswith(scene) else f'{scene}: {error}'}", file=sys.stderr)
