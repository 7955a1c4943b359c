"""``ddrf-batch``: fuse an archive of scenes into a folder, on this machine or a Ray cluster, resumably.

A thin layer over ``batch.plan_batch`` and ``batch_engine.run_batch``, with ``ddrf-run``'s scene options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import add_scene_options, run_command, scene_config, setup_logging
from .errors import OutputError

PROG = "ddrf-batch"
REPORT_NAME = "ddrf-batch.jsonl"

EPILOG = """\
SCENE: an MS GeoTIFF (its PAN found as ddrf-run finds it), a folder (every MS file in it whose PAN
is found), or a manifest: .csv with a header line, or .jsonl, with ms, pan and optionally output
(ms/pan relative to the manifest, output relative to OUT_DIR). Outputs: OUT_DIR/<MS stem>_ddrf.tif.

Resumable: an output that exists is complete (outputs are written under a temporary name and renamed),
so it is skipped; rerunning the same command after a crash or Ctrl-C fuses only what is missing.
Temporary files of killed workers are removed. One batch at a time per OUT_DIR.

Engines: 'auto' runs in this process when Ray cannot pay for its start-up (one scene to fuse, one
worker slot, or Ray not installed), else on Ray: a local cluster started for the run, or the cluster
at --address (ray start --head; KubeRay). One worker per GPU, else per --threads CPUs (default 1);
each worker loads the model once. A worker that dies mid-scene has the scene retried on another.

Run report: JSON lines appended to OUT_DIR/ddrf-batch.jsonl (or --report): a start row (engine,
workers, start-up seconds), one row per scene (scene, status done/skipped/failed, worker, seconds,
error) as results arrive, an end row.

Exit status: 0 every scene done or skipped, 2 a scene failed or bad input/option, 1 unexpected
failure (rerun with -v), 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    from .batch_engine import BatchConfig, Engine

    p = argparse.ArgumentParser(
        prog=PROG, description="Pansharpen many scenes with DDRF, resumably, on this machine or a Ray cluster.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenes", nargs="+", type=Path, metavar="SCENE", help="MS file, folder or .csv/.jsonl manifest")
    p.add_argument("-o", "--output-dir", type=Path, required=True, metavar="OUT_DIR", help="folder for the outputs")
    p.add_argument("--report", type=Path, metavar="JSONL", help=f"run report (default: OUT_DIR/{REPORT_NAME})")
    p.add_argument("--engine", choices=[e.value for e in Engine], default="auto",
                   help="auto (default), inline (this process) or ray")
    p.add_argument("--address", help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: start one")
    p.add_argument("--workers", type=int, help="workers (default: GPUs, else CPUs / --threads)")
    p.add_argument("--max-attempts", type=int, default=BatchConfig.max_attempts,
                   help="starts of a scene before workers dying on it fail it (default %(default)s)")
    add_scene_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("workers", "max_attempts", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    setup_logging(PROG, args)
    return run_command(PROG, args.verbose, "interrupted; finished outputs are kept, rerun the command to fuse the "
                                            "rest", lambda: _batch(args))


def _batch(args: argparse.Namespace) -> int:
    from .batch import plan_batch
    from .batch_engine import BatchConfig, Engine, run_batch

    out_dir = args.output_dir
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True)
        except OSError as e:
            raise OutputError(f"cannot create the output folder ({e.strerror})", str(out_dir)) from None
    config = BatchConfig(scene=scene_config(args), engine=Engine(args.engine), address=args.address,
                         workers=args.workers, max_attempts=args.max_attempts)
    report = args.report or out_dir / REPORT_NAME
    summary = run_batch(plan_batch(args.scenes, out_dir), config, report, progress=not args.quiet,
                        verbose=args.verbose)
    if not args.quiet:
        counts = ", ".join(f"{summary.counts.get(k, 0)} {k}" for k in ("done", "skipped", "failed"))
        print(f"{PROG}: {counts} in {summary.wall_s:.1f} s ({summary.engine}, {summary.workers} worker(s), "
              f"start-up {summary.startup_s:.1f} s); report: {report}")
    return 2 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
