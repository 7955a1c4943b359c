import pytest

from ddrf_runtime.cli import main
from ddrf_runtime.datapaths import data_root

from .scenes import crop_demo


@pytest.fixture(scope="session")
def data_dir():
    """The shared real data; tests needing it skip with a reason when it is absent (CI has it)."""
    root = data_root()
    if not (root / "PROVENANCE.md").exists():
        pytest.skip(f"real data not found at {root} (set DDRF_DATA)")
    return root


@pytest.fixture(scope="session")
def demo_crop(tmp_path_factory):
    """(ms.tif, pan.tif): a small crop of the real demo scene, shared: copy it before altering it."""
    return crop_demo(tmp_path_factory.mktemp("demo_crop"))


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory):
    """{kind: .onnx path} of tiny fake denoisers with the demo model's spec (see tests/onnx_fakes.py)."""
    from .onnx_fakes import DEMO_SPEC, make_model  # onnx is an extra: only the tests using fakes need it
    d = tmp_path_factory.mktemp("fake_models")
    return {kind: make_model(d / f"{kind}.onnx", kind, spec=DEMO_SPEC) for kind in ("zero", "wav", "noisy")}


@pytest.fixture
def cli(capsys):
    """Run ddrf-run in-process: ``cli(*argv) -> (exit status, stderr lines)``."""
    def run(*argv):
        rc = main([str(a) for a in argv])
        return rc, capsys.readouterr().err.splitlines()
    return run
