"""DB1 DWT speed: our numba kernel (1 thread and all threads) against ``pywt.dwt2``.

Run ``python -m benchmarks.wavelets``; prints the table and writes benchmarks/results/wavelets.{md,json}.
Each timing is the median of several runs after a warm-up (numba compilation is excluded).
"""
from __future__ import annotations

import numba
import numpy as np
import pywt

from ddrf_runtime.wavelets import dwt2_db1

from ._report import environment, environment_lines, markdown_table, median_seconds, write_results

SIZES = (1024, 4096)


def run() -> dict:
    env = environment("wavelets", [], ("numpy", "numba", "pywavelets"))  # load at start: threaded runs suffer most
    threads = numba.config.NUMBA_NUM_THREADS
    rows = []
    for n in SIZES:
        x = np.random.default_rng(0).random((n, n), dtype=np.float32)
        repeats = 20 if n <= 1024 else 5
        t_pywt = median_seconds(lambda: pywt.dwt2(x, "db1"), repeats)
        numba.set_num_threads(1)
        t_one = median_seconds(lambda: dwt2_db1(x), repeats)
        numba.set_num_threads(threads)
        t_all = median_seconds(lambda: dwt2_db1(x), repeats)
        rows.append({"size": n, "pywt_s": t_pywt, "numba_1_thread_s": t_one, f"numba_{threads}_threads_s": t_all,
                     "speedup_1_thread": t_pywt / t_one, f"speedup_{threads}_threads": t_pywt / t_all})
    return {
        **env,
        "benchmark": "DB1 2-D DWT, one float32 plane (pywt.dwt2(x, 'db1') vs ddrf_runtime.wavelets.dwt2_db1)",
        "numba_threads": threads,
        "results": rows,
    }


def to_markdown(report: dict) -> str:
    threads = report["numba_threads"]
    header = ["size", "pywt ms", "numba 1 thread ms", f"numba {threads} threads ms", "speedup 1 thread",
              f"speedup {threads} threads"]
    rows = [(f"{r['size']}²", f"{1e3 * r['pywt_s']:.2f}", f"{1e3 * r['numba_1_thread_s']:.2f}",
             f"{1e3 * r[f'numba_{threads}_threads_s']:.2f}", f"{r['speedup_1_thread']:.1f}×",
             f"{r[f'speedup_{threads}_threads']:.1f}×") for r in report["results"]]
    lines = [f"# {report['benchmark']}", "", *environment_lines(report),
             "- median of repeated runs after a warm-up; speedup = pywt time / numba time", "",
             *markdown_table(header, rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    report = run()
    write_results("wavelets", report, to_markdown(report))


if __name__ == "__main__":
    main()
