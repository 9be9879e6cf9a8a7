"""Benchmarks of calibrate; run each from the repo root as a module, e.g. `python -m benchmarks.bench_judging`."""
