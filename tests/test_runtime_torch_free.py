"""Import boundaries: ddrf_runtime on an edge box without PyTorch; the model side on a bare GPU box."""
import pkgutil
import subprocess
import sys

import pytest

import ddrf_runtime
import ddrf_runtime.datapaths


def _import_with_blocked(blocked: tuple[str, ...], modules: list[str]) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh interpreter where every package in ``blocked`` raises ImportError."""
    code = (
        "import importlib, sys\n"
        f"blocked = {blocked!r}\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError(name + ' is blocked in this test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(k.split('.')[0] in blocked for k in sys.modules)\n"
        "print('ok')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_every_runtime_module_imports_without_torch():
    modules = [m.name for m in pkgutil.walk_packages(ddrf_runtime.__path__, "ddrf_runtime.")]
    assert len(modules) >= 5
    res = _import_with_blocked(("torch",), modules)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_model_side_imports_without_raster_and_scipy():
    """The GPU benchmark box gets torch, numpy and onnxruntime only: the network, its checkpoints and the
    PyTorch backend must not drag in the dataset readers."""
    pytest.importorskip("torch")
    res = _import_with_blocked(("rasterio", "scipy"), ["ddrf_train.config", "ddrf_train.diffusion",
                                                       "ddrf_train.checkpoint", "ddrf_train.backend"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_ddrf_run_without_onnxruntime_says_which_extra_to_install(tmp_path):
    """``pip install .`` without the [cpu]/[gpu] extra has no ONNX Runtime: one clear line, exit 2, no file."""
    out = tmp_path / "fused.tif"
    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            raise ImportError(name + ' is blocked in this test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        "from ddrf_runtime.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    demo = ddrf_runtime.datapaths.DEMO_DIR
    res = subprocess.run([sys.executable, "-c", code, str(demo / "ms.tif"), "--pan", str(demo / "pan.tif"),
                          "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "ONNX Runtime is not installed" in last and "ddrf[cpu]" in last and "ddrf[gpu]" in last, res.stderr
    assert list(tmp_path.iterdir()) == []
