"""Boilerplate every benchmark shares: the run's environment record, median timing, markdown + JSON output.

A result is one JSON object (``environment`` keys plus the benchmark's own) and a markdown rendering, both
written to ``benchmarks/results/<name>.{json,md}``; the markdown starts with ``environment_lines``.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU time of a run: on a shared machine, CPU/wall far below the threads used means contention."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()

    def summary(self) -> dict[str, float]:
        wall, cpu = time.perf_counter() - self._wall, _cpu_seconds() - self._cpu
        return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cpu_per_wall": round(cpu / wall, 2),
                "load_average_1min_end": round(os.getloadavg()[0], 2)}


def environment(module: str, argv: Sequence[str], packages: Iterable[str]) -> dict[str, Any]:
    """Command, UTC date, machine (CPU, logical CPUs, platform, 1-min load at start) and package versions."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent)
        versions["ddrf_commit"] = git.stdout.strip() or None
    except OSError:  # no git (a bare benchmark machine)
        versions["ddrf_commit"] = None
    return {
        "command": " ".join([f"python -m benchmarks.{module}", *argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "versions": versions,
    }


def environment_lines(env: Mapping[str, Any]) -> list[str]:
    """Markdown bullets for the environment record (and the ``Clock`` summary under ``run``, if present)."""
    m = env["machine"]
    lines = [
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}, "
        f"load average {m['load_average_1min']:.2f} at start",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v is not None),
    ]
    if "run" in env:
        r = env["run"]
        lines.append(f"- run: {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s (CPU/wall {r['cpu_per_wall']:.2f}), "
                     f"load average {r['load_average_1min_end']:.2f} at end")
    return lines


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A GitHub markdown table; cells are rendered with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write_results(name: str, report: Mapping[str, Any], markdown: str, out_dir: Path = RESULTS_DIR) -> None:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` and print the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    print(markdown, end="", flush=True)


def say(module: str, message: str) -> None:
    """Progress on stderr, so stdout stays the result."""
    print(f"benchmarks.{module}: {message}", file=sys.stderr, flush=True)


def run_and_write(name: str, run: Callable[[], dict[str, Any]], render: Callable[[Mapping[str, Any]], str]) -> dict:
    """Run a benchmark, attach its wall/CPU clock, write ``<name>.{md,json}``; return the report."""
    clock = Clock()
    report = run()
    report["run"] = clock.summary()
    write_results(name, report, render(report))
    return report
