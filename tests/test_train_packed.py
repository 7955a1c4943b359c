"""Packed training pairs (``ddrf_train.packed``): what a GPU box without rasterio or the shared data trains on."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddrf_runtime.errors import InputError
from ddrf_runtime.evaluation import datasets
from ddrf_runtime.evaluation.splits import Region
from ddrf_train import packed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs(data_dir):
    """Two integer-DN pairs (11-bit Osman, 16-bit Landsat-8 at ratio 4) and float radiance (CristianICS)."""
    return packed.PackedPairs(
        "4band",
        [datasets.reduced_resolution("osman", 4, Region("osman", (0, 64), (0, 64)), 4),
         datasets.reduced_resolution("landsat8", 4, Region("landsat8", (0, 64), (0, 96)), 4)],
        [datasets.reduced_resolution("cristianics", 4, Region("cristianics", (0, 64), (0, 64)), 4)])


def test_a_packed_pair_comes_back_as_the_reader_made_it(tmp_path, pairs):
    path = packed.pack(tmp_path / "pairs.npz", pairs)
    back = packed.load(path)
    assert back.family == "4band" and [len(back.train), len(back.val)] == [2, 1]
    for made, loaded in zip(pairs.train + pairs.val, back.train + back.val):
        assert (loaded.name, loaded.sensor, loaded.bit_depth, loaded.bands, loaded.ratio) == \
               (made.name, made.sensor, made.bit_depth, made.bands, made.ratio)
        for field in ("gt", "pan", "ms_lr", "lms"):  # the LR MS recomputed by the same code: equal, not close
            np.testing.assert_array_equal(getattr(loaded, field), getattr(made, field), err_msg=field)
    with np.load(path) as z:  # DN stored as uint16, radiance as float32
        assert z["train_0_gt"].dtype == np.uint16 and z["train_1_gt"].dtype == np.uint16
        assert z["val_0_gt"].dtype == np.float32
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_file_that_is_not_packed_pairs_is_refused_by_name(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="other.npz"):
        packed.load(other)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="broken.npz.*cannot read"):
        packed.load(tmp_path / "broken.npz")


def test_training_on_packed_pairs_needs_no_raster_reader(tmp_path, pairs):
    """``ddrf_train.train --pairs`` with rasterio made unimportable, as on the GPU box: the run completes."""
    path = packed.pack(tmp_path / "pairs.npz", pairs)
    code = ("import sys; sys.modules['rasterio'] = None; from ddrf_train.train import main; "
            f"sys.exit(main(['--config', 'configs/tiny_test.toml', '--pairs', {str(path)!r}, "
            f"'--out', {str(tmp_path / 'run')!r}, '--no-progress']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best.pt").exists()


def test_packed_pairs_of_another_family_are_refused(tmp_path, pairs, capsys):
    from ddrf_train.train import main

    path = packed.pack(tmp_path / "pairs.npz", packed.PackedPairs("8band", pairs.train, []))
    rc = main(["--config", "configs/tiny_test.toml", "--pairs", str(path), "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "'8band'" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_the_gpu_training_script_returns_each_jobs_ema_weights(tmp_path, pairs):
    """benchmarks/gpu/train.sh on the CPU (its own smoke test): a packed job in, the EMA release copy out."""
    from ddrf_train.checkpoint import read_checkpoint

    job = tmp_path / "jobs" / "tiny"
    job.mkdir(parents=True)
    packed.pack(job / "pairs.npz", pairs)
    (job / "config.toml").write_text((REPO / "configs" / "tiny_test.toml").read_text())
    env = {**os.environ, "OUT": str(tmp_path / "out"), "JOBS": str(job.parent), "DEVICE": "cpu", "ITERATIONS": "2",
           "PYTHON": sys.executable, "TIME_LIMIT_S": "300"}
    proc = subprocess.run(["bash", "benchmarks/gpu/train.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    payload, _ = read_checkpoint(tmp_path / "out" / "tiny.pt")
    assert payload["step"] == 2 and payload["optimizer"] is None  # the EMA-only release copy
    assert (tmp_path / "out" / "tiny.log.jsonl").exists() and (tmp_path / "out" / "train.log").exists()
