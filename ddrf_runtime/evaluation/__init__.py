"""What an edge box never runs: the real-data readers and their train/test splits, the classical baselines and the
quality metrics (``ddrf-run --metrics`` imports the last on demand). Training and the benchmarks build on these."""
