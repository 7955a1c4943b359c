"""Where the real data lives: ``$DDRF_DATA``, else ``../shared/data`` next to the repository."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "data" / "demo"  # the bundled MIT-licensed Osman scene
MODELS_DIR = REPO_ROOT / "models"


def data_root() -> Path:
    """The shared data folder (may not exist: callers report that)."""
    env = os.environ.get("DDRF_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
