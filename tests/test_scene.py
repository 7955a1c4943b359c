"""Whole-scene fusion through ddrf-run: georeferencing, COG layout, determinism, windows, PAN discovery,
side outputs, and faults (Ctrl-C, SIGKILL, a disk that fills up part-way)."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

import ddrf_runtime.scene as scene_mod
import ddrf_runtime.session as session_mod
from ddrf_runtime.cli import find_pan, main
from ddrf_runtime.datapaths import DEMO_DIR
from ddrf_runtime.errors import InputError

from .scenes import FAST_ARGS, HALO_PAN, digest, read, rewrite

DDRF_RUN = Path(sys.executable).with_name("ddrf-run")
DEMO_MS, DEMO_PAN = DEMO_DIR / "ms.tif", DEMO_DIR / "pan.tif"
# The whole 800² demo in 16 tiles: big enough for COG overviews, a second in-process.
WHOLE_SCENE_ARGS = ("--tile", "256", "--overlap", "16", "--steps", "1", "--device", "cpu", "-q")
TEMP_NAME = re.compile(r"\.fused\.tif\.ddrf-[0-9a-f]{12}(\.raw)?\.tmp")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, fake_models):
    """ddrf-run on the whole demo scene with every side output: (output folder, report)."""
    d = tmp_path_factory.mktemp("demo_run")
    assert main([str(a) for a in (DEMO_MS, "--pan", DEMO_PAN, "-o", d / "fused.tif", "--model", fake_models["wav"],
                                  "--quicklook", d / "q.png", "--report", d / "r.json", "--metrics",
                                  *WHOLE_SCENE_ARGS)]) == 0
    return d, json.loads((d / "r.json").read_text())


def test_output_is_a_cog_on_the_pan_grid(demo_run):
    d, _ = demo_run
    with rasterio.open(d / "fused.tif") as o, rasterio.open(DEMO_PAN) as pan, rasterio.open(DEMO_MS) as ms:
        assert (o.crs, o.transform, o.shape) == (pan.crs, pan.transform, pan.shape)
        assert (o.count, o.dtypes) == (ms.count, ms.dtypes)
        assert o.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert o.profile["tiled"] and o.overviews(1)
        assert o.descriptions == ("B", "G", "R", "NIR")  # the demo MS has none: the model's band names
    assert sorted(p.name for p in d.iterdir()) == ["fused.tif", "q.png", "r.json"]


def test_report_quicklook_and_metrics(demo_run, fake_models):
    d, report = demo_run
    assert report.keys() >= {"inputs", "output", "model", "backend", "providers", "versions", "bands", "ratio",
                             "bit_depth", "bit_depth_source", "steps", "tiles", "tile_shape", "options", "size",
                             "nodata_pixels", "machine", "timings_s", "quicklook", "metrics", "trust"}
    assert (report["output"], report["model"], report["quicklook"]) == (str(d / "fused.tif"), fake_models["wav"],
                                                                         str(d / "q.png"))
    assert (report["size"], report["ratio"], report["steps"], report["tiles"]) == ([800, 800], 4, 1, 16)
    assert (report["bit_depth"], report["bit_depth_source"]) == (11, "data maximum 2047")
    assert report["providers"] == ["CPUExecutionProvider"] and report["nodata_pixels"] == 0
    assert report["timings_s"].keys() == {"setup", "scene_statistics", "trust", "fuse_and_write", "cog",
                                          "quicklook_and_metrics", "total"}
    metrics = report["metrics"]
    assert metrics.keys() == {"crop", "D_lambda", "D_s", "HQNR"} and metrics["crop"] == [16, 16, 768, 768]
    assert all(0 <= metrics[k] <= 1 for k in ("D_lambda", "D_s", "HQNR"))
    with Image.open(d / "q.png") as png:
        assert png.format == "PNG" and png.size == (3 * 768 + 2 * 8, 768)  # MS | PAN | fused of the metrics crop


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_report_names_the_provider_really_used(tmp_path, demo_crop, fake_models, cli, monkeypatch):
    """ONNX Runtime silently drops a provider it cannot load: the report must say what ran, not what was asked."""
    really_cuda = "CUDAExecutionProvider" in session_mod.ort.get_available_providers()
    monkeypatch.setattr(session_mod.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    loaded, load = [], scene_mod.load_denoiser
    monkeypatch.setattr(scene_mod, "load_denoiser", lambda *a: loaded.append(load(*a)) or loaded[-1])
    rc, _ = cli(demo_crop[0], "--pan", demo_crop[1], "-o", tmp_path / "f.tif", "--model", fake_models["zero"],
                "--report", tmp_path / "r.json", *FAST_ARGS, "--device", "auto")
    assert rc == 0
    providers = json.loads((tmp_path / "r.json").read_text())["providers"]
    assert providers == loaded[0].session.get_providers()
    if not really_cuda:
        assert providers == ["CPUExecutionProvider"]


def test_same_seed_same_bytes_whatever_the_batch(tmp_path, demo_crop, fake_models, cli):
    def run(name, seed, batch):
        out = tmp_path / name
        assert cli(demo_crop[0], "--pan", demo_crop[1], "-o", out, "--model", fake_models["noisy"], *FAST_ARGS,
                   "--seed", seed, "--batch", batch)[0] == 0
        return out.read_bytes()
    first = run("a.tif", 3, 1)
    assert run("b.tif", 3, 4) == first
    assert run("c.tif", 4, 4) != first


@pytest.fixture(scope="module")
def crop_reference(tmp_path_factory, demo_crop, fake_models):
    """The zero-model output of the whole demo crop (bands, rows, cols)."""
    out = tmp_path_factory.mktemp("crop_reference") / "fused.tif"
    assert main([str(a) for a in (demo_crop[0], "--pan", demo_crop[1], "-o", out, "--model", fake_models["zero"],
                                  *FAST_ARGS, "--projections", "0")]) == 0
    return read(out)


@pytest.mark.parametrize("cropped, window", [("pan", Window(4, 4, 152, 152)), ("ms", Window(1, 1, 38, 38))])
def test_window_of_one_input(tmp_path, demo_crop, fake_models, cli, crop_reference, cropped, window):
    """A PAN covering part of the MS, or the reverse: the output is the common part, from the right pixels."""
    ms, pan = tmp_path / "ms.tif", tmp_path / "pan.tif"
    for src, dst in zip(demo_crop, (ms, pan)):
        rewrite(dst, src=src, window=window if dst.stem == cropped else None)
    assert cli(ms, "--pan", pan, "-o", tmp_path / "f.tif", "--model", fake_models["zero"], *FAST_ARGS,
               "--projections", "0")[0] == 0  # back-projection reads no context past a window's edge
    with rasterio.open(tmp_path / "f.tif") as o, rasterio.open(demo_crop[1]) as full_pan:
        assert o.shape == (152, 152)
        assert o.transform.almost_equals(full_pan.window_transform(Window(4, 4, 152, 152)))
    inner = (slice(None), slice(HALO_PAN, -HALO_PAN), slice(HALO_PAN, -HALO_PAN))
    np.testing.assert_allclose(read(tmp_path / "f.tif")[inner], crop_reference[:, 4:156, 4:156][inner], atol=1)


def test_ms_band_descriptions_are_kept(tmp_path, demo_crop, fake_models, cli):
    ms = tmp_path / "ms.tif"
    shutil.copy(demo_crop[0], ms)
    with rasterio.open(ms, "r+") as ds:
        for b, name in enumerate(("blue", "green", "red", "nir"), start=1):
            ds.set_band_description(b, name)
    assert cli(ms, "--pan", demo_crop[1], "-o", tmp_path / "f.tif", "--model", fake_models["zero"], *FAST_ARGS)[0] == 0
    with rasterio.open(tmp_path / "f.tif") as o:
        assert o.descriptions == ("blue", "green", "red", "nir")


@pytest.mark.parametrize("ms_name, pan_name", [
    ("ms.tif", "pan.tif"), ("scene_MUL.tif", "scene_PAN.tif"), ("x_mss.tif", "x_pan.tif"),
    ("area_multi.tif", "area_pan.tif"), ("ms_area_ms.tif", "ms_area_pan.tif"), ("farms_ms.tif", "farms_pan.tif"),
])
def test_find_pan(tmp_path, ms_name, pan_name):
    for name in (ms_name, pan_name, "decoy_pans.tif"):
        (tmp_path / name).touch()
    assert find_pan(tmp_path / ms_name) == tmp_path / pan_name


def test_find_pan_without_a_pan(tmp_path):
    (tmp_path / "scene_ms.tif").touch()
    (tmp_path / "scene_pan.jpg").touch()
    with pytest.raises(InputError, match="no PAN found"):
        find_pan(tmp_path / "scene_ms.tif")


def test_cli_discovers_the_pan_and_names_the_output(tmp_path, demo_crop, fake_models, cli):
    ms, pan = tmp_path / "scene_MUL.tif", tmp_path / "scene_PAN.tif"
    shutil.copy(demo_crop[0], ms)
    shutil.copy(demo_crop[1], pan)
    assert cli(ms, "--model", fake_models["zero"], *FAST_ARGS) == (0, [])
    with rasterio.open(tmp_path / "scene_MUL_ddrf.tif") as o:
        assert o.shape == (160, 160)


# ---- faults ----------------------------------------------------------------------------------------------------

def _start_slow_run(out_dir, model):
    """A ddrf-run on the whole demo taking far longer than the test (289 tiles × 100 steps).

    Started as from an interactive shell: a shell script's background job inherits SIGINT ignored, and Python
    then keeps ignoring it, so the Ctrl-C test would depend on how the test suite itself was launched.
    """
    return subprocess.Popen([DDRF_RUN, DEMO_MS, "--pan", DEMO_PAN, "-o", out_dir / "fused.tif", "--model", model,
                             "--tile", "64", "--overlap", "16", "--steps", "100", "--device", "cpu", "-q"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_temp_file(proc, out_dir, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not any(TEMP_NAME.fullmatch(p.name) for p in out_dir.iterdir()):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, status, leftovers", [(signal.SIGINT, 130, 0), (signal.SIGKILL, -signal.SIGKILL, 1)])
def test_killed_mid_scene(tmp_path, fake_models, cli, sig, status, leftovers):
    """Ctrl-C cleans up; SIGKILL leaves at most its uniquely named temporary file; never a file at the output."""
    before = digest(DEMO_MS), digest(DEMO_PAN)
    proc = _start_slow_run(tmp_path, fake_models["noisy"])
    try:
        _wait_for_temp_file(proc, tmp_path)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == status
    if sig == signal.SIGINT:
        assert err.splitlines() == ["ddrf-run: interrupted; no output written"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == leftovers and all(TEMP_NAME.fullmatch(n) for n in left)
    assert (digest(DEMO_MS), digest(DEMO_PAN)) == before
    # the next run is not disturbed by what a killed one left
    assert cli(DEMO_MS, "--pan", DEMO_PAN, "-o", tmp_path / "fused.tif", "--model", fake_models["wav"],
               *WHOLE_SCENE_ARGS) == (0, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(left + ["fused.tif"])


# Start ddrf-run with a 1 MiB file-size limit (the output is ~4 MiB): writes past it fail with EFBIG.
_LIMITED = ("import os, resource, signal, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20)); "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])")


def test_disk_full_part_way(tmp_path, fake_models):
    out = tmp_path / "fused.tif"
    proc = subprocess.run([sys.executable, "-c", _LIMITED, DDRF_RUN, DEMO_MS, "--pan", DEMO_PAN, "-o", out,
                           "--model", fake_models["wav"], *WHOLE_SCENE_ARGS], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    *libtiff, line = proc.stderr.splitlines()
    assert all(s.startswith("_tiff") for s in libtiff), libtiff  # libtiff's own report, printed by C code
    assert line.startswith(f"ddrf-run: error: {out}: writing failed (") and "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


def test_fuse_scene_ships_to_worker_processes():
    """A scheduler (Ray, multiprocessing) sends ``fuse_scene`` and its config by pickle: both must round-trip."""
    import pickle

    from ddrf_runtime.backends import Backend
    from ddrf_runtime.pipeline import FuseOptions
    from ddrf_runtime.scene import SceneConfig, fuse_scene

    config = SceneConfig(model="m.onnx", backend=Backend.TORCH, fuse=FuseOptions(steps=2, tile=256, seed=7),
                         threads=1, metrics=True)
    assert pickle.loads(pickle.dumps(config)) == config
    assert pickle.loads(pickle.dumps(fuse_scene)) is fuse_scene
