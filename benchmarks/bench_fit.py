"""Wall time of `calibrate fit --judge heuristic` on the bundled sample, cold cache and warm cache.

Target (issue: calibrate fit): under one minute on a 2-core machine. Run (from the repo root):
    python -m benchmarks.bench_fit [--repeats 3]
Prints one line per case with the median and the spread, plus the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine


def timed_fit(out: Path, cache: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "calibrate", "fit", "--judge", "heuristic", "--out", str(out),
                    "--cache", str(cache), "--no-progress"], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache.sqlite3"
            cold.append(timed_fit(Path(tmp) / "cold", cache))
            warm.append(timed_fit(Path(tmp) / "warm", cache))
    print(machine())
    for name, times in (("cold cache (judges 144 pairs)", cold), ("warm cache (judges nothing)", warm)):
        print(f"{name}: median {statistics.median(times):.2f}s (min {min(times):.2f}s, max {max(times):.2f}s, "
              f"{len(times)} runs)")


if __name__ == "__main__":
    main()
