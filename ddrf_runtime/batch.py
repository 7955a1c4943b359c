"""What a batch fuses: SCENE arguments (MS files, folders, manifests) → one job per output, and its run report.

No fusion and no engine here: planning looks at names only (and finds each MS file's PAN the way ``ddrf-run``
does), so a plan is cheap, deterministic, and the same whichever engine runs it. A scene that cannot become a
job (no PAN, a bad manifest row, an output another scene already writes) is an ``invalid`` entry with its
reason; the run reports it as a failed row instead of failing the batch.
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import secrets
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

from .cli import find_pan
from .errors import InputError, OutputError

MANIFEST_SUFFIXES = (".csv", ".jsonl")
RASTER_SUFFIXES = (".tif", ".tiff")  # what a folder is searched for (case-insensitive)
OUTPUT_SUFFIX = "_ddrf.tif"  # OUT_DIR/<MS stem>_ddrf.tif, as ddrf-run names it


@dataclass(frozen=True)
class Job:
    """One scene to fuse: plain absolute paths, so a job pickles to any worker and reads as a report row."""

    ms: str  # MS (or HS) GeoTIFF
    pan: str  # its PAN (or guide) GeoTIFF
    output: str  # the COG to write

    @classmethod
    def of(cls, ms: str | os.PathLike, pan: str | os.PathLike, output: str | os.PathLike) -> "Job":
        """A job with normalised absolute paths (the same scene named two ways is one job)."""
        return cls(*(os.path.abspath(p) for p in (ms, pan, output)))


Invalid = tuple[str, str]  # (scene, one-line reason it cannot be fused)


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]  # in argument order, each output once
    invalid: tuple[Invalid, ...]  # what cannot be fused at all, with the reason


def plan_batch(scenes: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> Plan:
    """Jobs for ``scenes`` (MS files, folders of them, .csv/.jsonl manifests) writing into ``out_dir``.

    A SCENE argument that does not exist, or a manifest that cannot be read, is a usage error (InputError);
    problems of single scenes become ``invalid`` entries.
    """
    out_dir = Path(out_dir)
    jobs: dict[str, Job] = {}  # by resolved output path
    invalid: list[Invalid] = []
    for scene in scenes:
        for item in _expand(Path(scene), out_dir):
            if not isinstance(item, Job):
                invalid.append(item)
                continue
            other = jobs.setdefault(os.path.realpath(item.output), item)
            if other != item:
                invalid.append((item.ms, f"its output {item.output} is already the output of {other.ms}; "
                                         "name outputs in a manifest"))
    return Plan(tuple(jobs.values()), tuple(invalid))


def _expand(scene: Path, out_dir: Path) -> Iterator[Job | Invalid]:
    """The jobs (or invalid scenes) one SCENE argument names."""
    if not scene.exists():
        raise InputError("not found (a SCENE is an MS file, a folder or a .csv/.jsonl manifest)", str(scene))
    if scene.is_dir():
        for path in sorted(p for p in scene.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()):
            try:  # a folder's scenes are its MS files whose PAN is found: any other file is not a scene
                yield Job.of(path, find_pan(path), _default_output(path, out_dir))
            except InputError:
                continue
    elif scene.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest(scene, out_dir)
    else:
        try:
            yield Job.of(scene, find_pan(scene), _default_output(scene, out_dir))
        except InputError as e:
            yield str(scene), e.args[0]


def _default_output(ms: Path, out_dir: Path) -> str:
    return str(out_dir / f"{ms.stem}{OUTPUT_SUFFIX}")


def _manifest(path: Path, out_dir: Path) -> Iterator[Job | Invalid]:
    """Rows of a manifest: ms and pan relative to the manifest's folder, output relative to ``out_dir``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(_manifest_rows(f, path))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read the manifest ({e})", str(path)) from None
    for line, row in rows:
        where = f"{path}:{line}"
        if isinstance(row, str):
            yield where, row
            continue
        missing = [k for k in ("ms", "pan") if not row.get(k)]
        if missing:
            yield where, f"no {' or '.join(missing)} given (columns: ms, pan[, output])"
            continue
        ms, pan = (path.parent / str(row[k]) for k in ("ms", "pan"))
        output = str(out_dir / str(row["output"])) if row.get("output") else _default_output(ms, out_dir)
        yield Job.of(ms, pan, output)


def _manifest_rows(f: IO[str], path: Path) -> Iterator[tuple[int, dict | str]]:
    """(line number, row, or the row's problem) of a .csv (header line first) or .jsonl manifest."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "ms" not in [n.strip() for n in reader.fieldnames]:
            raise csv.Error(f"no header line naming the columns ms, pan[, output] (got {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}
        return
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            yield line, f"invalid JSON ({e.msg})"
            continue
        yield line, row if isinstance(row, dict) else f"not a JSON object with ms and pan: {text.strip():.60}"


class RunReport:
    """The JSON-lines run report, appended one row per event as it happens (a crash keeps what was done).

    The open report is locked (flock) for the run: one batch at a time per report. Rows: ``start`` (engine,
    workers, start-up seconds), one ``scene`` row per scene (scene, status, worker, seconds, error, ...), ``end``
    (counts, wall time, outcome). Each row carries the run's id, so the reports of a batch and its resumptions
    can share one file. ``counts`` (scene rows by status) and ``outputs`` (outputs with a scene row) are kept
    with the rows, so what a run says at its end matches its rows even when Ctrl-C lands mid-row.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self.outputs: set[str] = set()
        # Unique even for two runs of one process within a second (a rerun of a fast, finished batch).
        self.run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write the run report ({e.strerror})", str(path)) from None
        try:  # held for the run: a second batch on the same outputs would remove this one's temporary files
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise OutputError("another ddrf-batch is running with this report (and output folder); wait for it "
                              "or pass another --report", str(path)) from None

    def write(self, event: str, **fields: object) -> None:
        with _ctrl_c_held():  # a row and its bookkeeping both happen, or neither (no twice-reported scene)
            self._file.write(json.dumps({"event": event, "run": self.run, **fields}, default=str) + "\n")
            self._file.flush()
            if event == "scene":
                self.counts[str(fields["status"])] += 1
                if fields.get("output"):
                    self.outputs.add(str(fields["output"]))

    def close(self) -> None:
        self._file.close()


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Defer SIGINT until the block has run (main thread only: elsewhere signals are not delivered anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])
        elif caught and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)
