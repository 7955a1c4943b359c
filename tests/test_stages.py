"""The threading primitives of the scene pipeline, and the pipeline's independence from its thread counts."""
import threading
import time

import numpy as np
import pytest
import rasterio

from ddrf_runtime import scene as scene_module
from ddrf_runtime.backends import load_denoiser
from ddrf_runtime.errors import ConfigError
from ddrf_runtime.pipeline import FuseOptions
from ddrf_runtime.scene import SceneConfig, fuse_scene
from ddrf_runtime.stages import OrderedWorker, ordered_map


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight():
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01 * ((7 * i) % 5))  # finish out of order
        with lock:
            running[0] -= 1
        return i * i

    seen = []
    for value in ordered_map(slow_square, range(20), workers=3, depth=4):
        seen.append(value)
        time.sleep(0.005)
    assert seen == [i * i for i in range(20)]
    assert 2 <= peak[0] <= 3  # threads really overlapped, never more than the workers


def test_ordered_map_reraises_at_the_failing_item_and_stops_early():
    started = []

    def fail_at_5(i):
        started.append(i)
        if i == 5:
            raise ValueError("item 5 is bad")
        return i

    got = []
    with pytest.raises(ValueError, match="item 5"):
        for value in ordered_map(fail_at_5, range(1000), workers=2, depth=3):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]
    assert max(started) < 20  # bounded lookahead: the rest never started


def test_ordered_map_rejects_bad_sizes():
    with pytest.raises(ValueError):
        list(ordered_map(abs, [1], workers=0, depth=1))


def test_ordered_worker_runs_in_order_and_reports_the_first_failure():
    done = []
    with OrderedWorker(depth=2) as worker:
        for i in range(10):
            worker.submit(done.append, i)
    assert done == list(range(10))

    def boom():
        raise OSError("disk full")

    worker = OrderedWorker(depth=2)
    with pytest.raises(OSError, match="disk full"):  # from submit, or from close if it was queued in time
        worker.submit(boom)
        worker.submit(done.append, "never")  # queued after the failing call: it must not run
        worker.close()
    worker.close()  # the thread is gone; nothing left to report
    assert "never" not in done


def test_ordered_worker_stops_when_the_caller_fails():
    done = []
    with pytest.raises(KeyError):
        with OrderedWorker(depth=50) as worker:
            worker.submit(time.sleep, 0.05)
            for i in range(20):
                worker.submit(done.append, i)
            raise KeyError("caller failed")
    assert done == []  # queued calls were dropped, and the thread was joined before the with-block ended


def test_scene_output_does_not_depend_on_prepare_threads_or_queue_depth(demo_crop, fake_models, tmp_path):
    """Same seed → the same bytes whatever the thread counts (the 'noisy' fake depends on the noise)."""
    ms, pan = demo_crop
    options = FuseOptions(tile=64, overlap=16, steps=2, batch=3, seed=5)
    pixels = []
    for i, (threads, depth) in enumerate([(1, 1), (3, 4), (2, 1)]):
        out = tmp_path / f"fused_{i}.tif"
        fuse_scene(ms, pan, out, SceneConfig(model=fake_models["noisy"], device="cpu", fuse=options,
                                             prepare_threads=threads, queue_depth=depth))
        with rasterio.open(out) as ds:
            pixels.append(ds.read())
    assert all(np.array_equal(pixels[0], p) for p in pixels[1:])
    assert pixels[0].std() > 0


def test_the_network_output_is_finished_off_the_network_thread(demo_crop, fake_models, tmp_path, monkeypatch):
    """The projection onto the MS and the rest of a tile's post-processing run on finisher threads, so the
    network thread can take the next batch meanwhile."""
    ms, pan = demo_crop
    where: list[str] = []
    finish = scene_module.finish_batch

    def spy(*args, **kwargs):
        where.append(threading.current_thread().name)
        return finish(*args, **kwargs)

    monkeypatch.setattr(scene_module, "finish_batch", spy)
    options = FuseOptions(tile=64, overlap=16, steps=1, batch=2, seed=3)
    fuse_scene(ms, pan, tmp_path / "fused.tif", SceneConfig(model=fake_models["noisy"], device="cpu", fuse=options,
                                                            prepare_threads=2))
    assert where and all(name.startswith("ddrf-finish") for name in where)


@pytest.mark.parametrize("field", ["prepare_threads", "queue_depth"])
def test_scene_config_rejects_zero_threads(field):
    with pytest.raises(ConfigError, match="must be >= 1") as e:
        SceneConfig(**{field: 0})
    assert e.value.path == field


def test_a_loaded_network_is_reused_until_its_file_changes(fake_models, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(open(fake_models["zero"], "rb").read())
    first = load_denoiser(path, device="cpu")
    assert load_denoiser(path, device="cpu") is first
    assert load_denoiser(path, device="cpu", intra_op_threads=1) is not first  # other session options
    path.write_bytes(open(fake_models["wav"], "rb").read())  # replaced on disk: loaded afresh
    assert load_denoiser(path, device="cpu") is not first
