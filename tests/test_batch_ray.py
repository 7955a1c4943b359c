"""ddrf-batch on a real local Ray cluster (started once for the module): byte-identical outputs, one model load
per worker, a corrupt scene among good ones, a worker killed mid-scene, Ctrl-C and resuming."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ddrf_runtime.batch import plan_batch
from ddrf_runtime.batch_cli import main as batch_main
from ddrf_runtime.batch_engine import BatchConfig, Engine, run_batch
from ddrf_runtime.cli import main as run_main
from ddrf_runtime.pipeline import FuseOptions
from ddrf_runtime.raster_io import TEMP_NAME
from ddrf_runtime.scene import SceneConfig
from ddrf_runtime.session import Device

from .scenes import demo_scenes, digest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[cluster]')")

N_SCENES = 5
# 256² PAN scenes in 25 tiles of 64², one step: a few tenths of a second each with the fake model.
FUSE = FuseOptions(tile=64, overlap=16, steps=1)
FUSE_ARGS = ("--tile", "64", "--overlap", "16", "--steps", "1", "--device", "cpu", "-q")


@pytest.fixture(scope="module")
def cluster():
    # "local": a new cluster even where `ray start` left one (ray.init() would join it, and refuse num_cpus)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, fake_models):
    """(scene folder, {output name: sha256 of ddrf-run's output}) for N_SCENES demo cuts."""
    folder = tmp_path_factory.mktemp("archive")
    refs = tmp_path_factory.mktemp("refs")
    expected = {}
    for ms, pan in demo_scenes(folder, N_SCENES):
        out = refs / f"{ms.stem}_ddrf.tif"
        assert run_main([str(ms), "--pan", str(pan), "-o", str(out), "--model", fake_models["noisy"],
                         *FUSE_ARGS]) == 0
        expected[out.name] = digest(out)
    return folder, expected


def scene_rows(report):
    return [r for r in map(json.loads, Path(report).read_text().splitlines()) if r["event"] == "scene"]


def outputs(folder):
    """{name: sha256} of the fused outputs in ``folder``; fails on anything but outputs and the report."""
    names = sorted(p.name for p in Path(folder).iterdir())
    assert not [n for n in names if TEMP_NAME.fullmatch(n) or n.startswith(".")], names
    return {n: digest(Path(folder) / n) for n in names if n.endswith("_ddrf.tif")}


def test_batch_matches_ddrf_run_byte_for_byte(cluster, archive, fake_models, tmp_path):
    folder, expected = archive
    assert batch_main([str(folder), "-o", str(tmp_path), "--engine", "ray", "--model", fake_models["noisy"],
                       *FUSE_ARGS]) == 0
    assert outputs(tmp_path) == expected
    rows = scene_rows(tmp_path / "ddrf-batch.jsonl")
    assert sorted(r["status"] for r in rows) == ["done"] * N_SCENES
    loads: dict[str, list[float]] = {}
    for r in rows:  # in completion order: each worker's first scene loads the model, later ones reuse it
        loads.setdefault(r["worker"], []).append(r["load_s"])
    assert 1 <= len(loads) <= 2
    assert all(v[0] > 0 and not any(v[1:]) for v in loads.values()), loads
    start = [json.loads(line) for line in (tmp_path / "ddrf-batch.jsonl").read_text().splitlines()][0]
    assert (start["event"], start["engine"], start["workers"], start["threads_per_worker"]) == ("start", "ray", 2, 1)
    assert start["startup_s"] > 0


def test_a_corrupt_scene_among_good_ones(cluster, archive, fake_models, tmp_path):
    folder, expected = archive
    scenes = tmp_path / "in"
    scenes.mkdir()
    for name in ("s0_ms.tif", "s0_pan.tif", "s1_ms.tif", "s1_pan.tif"):
        shutil.copy(folder / name, scenes)
    (scenes / "s2_ms.tif").write_bytes((folder / "s2_ms.tif").read_bytes()[:700])  # truncated
    shutil.copy(folder / "s2_pan.tif", scenes)
    out = tmp_path / "out"
    assert batch_main([str(scenes), "-o", str(out), "--engine", "ray", "--model", fake_models["noisy"],
                       *FUSE_ARGS]) == 2
    assert outputs(out) == {k: expected[k] for k in ("s0_ms_ddrf.tif", "s1_ms_ddrf.tif")}
    failed = [r for r in scene_rows(out / "ddrf-batch.jsonl") if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["scene"] == str(scenes / "s2_ms.tif")
    assert failed[0]["error"].startswith(str(scenes / "s2_ms.tif") + ": ") and "\n" not in failed[0]["error"]


def _kill_first_writer(out_dir: Path, killed: list, stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen holding a temporary file of ``out_dir`` open: a worker mid-scene."""
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::SceneWorker"):
                    continue
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(str(out_dir)) and TEMP_NAME.fullmatch(Path(target).name):
                        os.kill(int(pid), signal.SIGKILL)
                        killed.append((int(pid), Path(target).name))
                        return
            except OSError:  # the process or descriptor went away meanwhile
                continue
        time.sleep(0.005)


@pytest.mark.parametrize("max_attempts", [3, 1])
def test_worker_killed_mid_scene_has_its_scene_retried(cluster, archive, fake_models, tmp_path, max_attempts):
    """Retried on another worker; with no attempts left, a failed row. Either way the rest is done, each output
    once, and no temporary file is left."""
    folder, expected = archive
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_writer, args=(tmp_path, killed, stop), daemon=True)
    killer.start()
    config = BatchConfig(scene=SceneConfig(model=fake_models["noisy"], device=Device.CPU, fuse=FUSE),
                         engine=Engine.RAY, max_attempts=max_attempts)
    try:
        summary = run_batch(plan_batch([folder], tmp_path), config, tmp_path / "report.jsonl")
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen mid-scene"
    pid, temp = killed[0]
    victim = str(tmp_path / TEMP_NAME.fullmatch(temp).group(1))
    rows = scene_rows(tmp_path / "report.jsonl")
    assert sorted(r["output"] for r in rows) == sorted(str(tmp_path / n) for n in expected)  # each exactly once
    victim_row = next(r for r in rows if r["output"] == victim)
    if max_attempts > 1:
        assert summary.counts == {"done": N_SCENES}
        assert victim_row["attempt"] == 2 and not victim_row["worker"].endswith(f":{pid}")
        assert outputs(tmp_path) == expected  # nothing partial, no temporary file left
    else:
        assert summary.counts == {"done": N_SCENES - 1, "failed": 1}
        assert victim_row["status"] == "failed" and victim_row["error"].startswith(
            "workers died while fusing it, on all 1 attempt(s) (last: ")
        assert outputs(tmp_path) == {k: v for k, v in expected.items() if str(tmp_path / k) != victim}


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(cluster, archive, fake_models, tmp_path):
    folder, expected = archive
    out = tmp_path / "out"
    argv = [str(folder), "-o", str(out), "--engine", "ray", "--workers", "2", "--model", fake_models["noisy"],
            *FUSE_ARGS]
    proc = subprocess.Popen([sys.executable, "-m", "ddrf_runtime.batch_cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600  # generous: a loaded machine starts Ray slowly
    while not any(out.glob("*_ddrf.tif")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # Ctrl-C once the first scene is done
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished outputs are kept" in err
    first = outputs(out)  # complete outputs only, no temporary file
    assert 1 <= len(first) < N_SCENES and all(expected[k] == v for k, v in first.items())
    end = json.loads((out / "ddrf-batch.jsonl").read_text().splitlines()[-1])
    assert (end["event"], end["outcome"]) == ("end", "interrupted")

    assert batch_main(argv) == 0  # resume (on the module's cluster): only what is missing
    assert outputs(out) == expected
    report = out / "ddrf-batch.jsonl"
    runs = [r["run"] for r in map(json.loads, report.read_text().splitlines()) if r["event"] == "start"]
    second = {r["output"]: r["status"] for r in scene_rows(report) if r["run"] == runs[1]}
    assert second == {str(out / n): "skipped" if n in first else "done" for n in expected}  # only what was missing
    done = [r["output"] for r in scene_rows(report) if r["status"] == "done"]
    assert sorted(done) == sorted(str(out / n) for n in expected)  # across both runs: each output done once

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*_ddrf.tif")}
    assert batch_main(argv) == 0  # and once more: a no-op
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_ddrf.tif")} == mtimes
    last = [r for r in scene_rows(report) if r["run"] not in runs[:2]]
    assert sorted(r["status"] for r in last) == ["skipped"] * N_SCENES
