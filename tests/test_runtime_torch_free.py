"""ddrf_runtime must import on an edge box without PyTorch."""
import pkgutil
import subprocess
import sys

import ddrf_runtime


def test_every_runtime_module_imports_without_torch():
    modules = [m.name for m in pkgutil.walk_packages(ddrf_runtime.__path__, "ddrf_runtime.")]
    assert len(modules) >= 5
    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
