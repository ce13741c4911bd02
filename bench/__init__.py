"""The ingester benchmark: see bench/run.py and docs/benchmarks.md."""
