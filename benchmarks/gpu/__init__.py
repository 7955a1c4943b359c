"""The GPU benchmark: prepared here (``prepare``), run on a CUDA box by ``run_all.sh`` (``latency``)."""
