"""DB1 DWT speed: our numba kernel (1 thread and all threads) against ``pywt.dwt2``.

Run ``python -m benchmarks.wavelets``; prints the table and writes benchmarks/results/wavelets.{md,json}.
Each timing is the median of several runs after a warm-up (numba compilation is excluded).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import pywt

from ddrf_runtime.wavelets import dwt2_db1

SIZES = (1024, 4096)
RESULTS = Path(__file__).resolve().parent / "results"


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: compilation, page faults of the first allocation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run() -> dict:
    load = os.getloadavg()[0]  # other work on the box slows the threaded runs most
    threads = numba.config.NUMBA_NUM_THREADS
    rows = []
    for n in SIZES:
        x = np.random.default_rng(0).random((n, n), dtype=np.float32)
        repeats = 20 if n <= 1024 else 5
        t_pywt = _median_seconds(lambda: pywt.dwt2(x, "db1"), repeats)
        numba.set_num_threads(1)
        t_one = _median_seconds(lambda: dwt2_db1(x), repeats)
        numba.set_num_threads(threads)
        t_all = _median_seconds(lambda: dwt2_db1(x), repeats)
        rows.append({"size": n, "pywt_s": t_pywt, "numba_1_thread_s": t_one, f"numba_{threads}_threads_s": t_all,
                     "speedup_1_thread": t_pywt / t_one, f"speedup_{threads}_threads": t_pywt / t_all})
    return {
        "benchmark": "DB1 2-D DWT, one float32 plane (pywt.dwt2(x, 'db1') vs ddrf_runtime.wavelets.dwt2_db1)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.wavelets",
        "machine": {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "numba_threads": threads,
                    "platform": platform.platform(),
                    "load_average_1min": load},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
                     "pywavelets": pywt.__version__},
        "results": rows,
    }


def to_markdown(report: dict) -> str:
    threads = report["machine"]["numba_threads"]
    lines = [
        f"# {report['benchmark']}", "",
        f"- date: {report['date']}", f"- command: `{report['command']}`",
        f"- machine: {report['machine']['cpu']}, {report['machine']['logical_cpus']} logical CPUs, "
        f"{report['machine']['platform']}, load average {report['machine']['load_average_1min']:.2f} at start",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "- median of repeated runs after a warm-up; speedup = pywt time / numba time", "",
        f"| size | pywt ms | numba 1 thread ms | numba {threads} threads ms | speedup 1 thread | "
        f"speedup {threads} threads |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['size']}² | {1e3 * r['pywt_s']:.2f} | {1e3 * r['numba_1_thread_s']:.2f} | "
            f"{1e3 * r[f'numba_{threads}_threads_s']:.2f} | {r['speedup_1_thread']:.1f}× | "
            f"{r[f'speedup_{threads}_threads']:.1f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    report = run()
    md = to_markdown(report)
    print(md, end="")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wavelets.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "wavelets.md").write_text(md)


if __name__ == "__main__":
    main()
