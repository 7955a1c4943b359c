import pytest

from ddrf_runtime.datapaths import data_root


@pytest.fixture(scope="session")
def data_dir():
    """The shared real data; tests needing it skip with a reason when it is absent (CI has it)."""
    root = data_root()
    if not (root / "PROVENANCE.md").exists():
        pytest.skip(f"real data not found at {root} (set DDRF_DATA)")
    return root
