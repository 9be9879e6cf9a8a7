"""Benchmarks of calibrate; run each from the repo root as a module, e.g. `python -m benchmarks.bench_judging`."""

import os
import platform


def machine() -> str:
    """The line every benchmark prints first, so a figure quoted in the docs says what it ran on."""
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f}")
