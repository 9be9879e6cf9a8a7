"""Whole CLI runs that read the judgment cache in bulk: wall time, CPU time and peak memory of each process.

1. `calibrate compare` of 4 judges (a panel among them) + 3 baselines on 1,000 pairs per calibration set
   (plus injection-0), both orders, 2 repeats, every judgment already in the cache (target <= 8 s).
2. `calibrate score` with the heuristic judge on N synthetic pairs (default 115,000): a cold run
   (target <= 40 s) and a fully cached re-run (target <= 8 s).
3. (`--only compare-responses`) `calibrate compare --responses` of 3 heuristic judges on the bundled sample's
   calibration sets and 3 synthetic response datasets of `--pairs-per-dataset` pairs each (default 3,000):
   filling the cache, then every judgment cached (the command is printed, to time it again).
Peak memory of every process: target under 1.5 GB. Other load on the machine lengthens the wall times
(the first line says how loaded it was); the CPU seconds (user + system) are what a quiet machine's wall
time comes close to. Run from the repo root:
    python -m benchmarks.bench_cache [--pairs-per-set 1000] [--pairs 115000] [--workdir DIR] [--only score]
    python -m benchmarks.bench_cache --only compare-responses [--pairs-per-dataset 3000] [--workdir DIR]
The parts 1 and 2 run unless `--only` names another.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.bench_compare import EXTRA_JUDGE, JUDGES, write_sets
from benchmarks.bench_score import synthetic_responses

RESPONSE_JUDGES = ("heuristic", "heuristic-strict", "heuristic-decisive")
# each dataset's answers cycled from these bundled sample models (so the models' PAC differ)
RESPONSE_MODELS = {"echo-bench": ("echo-model",), "steady-bench": ("steady-model",),
                   "mixed-bench": ("echo-model", "steady-model", "steady-model")}


def run_cli(arguments: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak resident memory (MB) of one `calibrate`
    process (its own resource usage, read when it is reaped)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "calibrate", *arguments], cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-set", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=115_000, help="synthetic pairs for score")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the data and caches here and reuse them next time (default: a temporary folder)")
    parser.add_argument("--pairs-per-dataset", type=int, default=3000, help="synthetic pairs per response dataset "
                        "for compare-responses")
    parser.add_argument("--only", choices=("compare", "score", "compare-responses"), default=None,
                        help="run only this part")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        (root / "judges").mkdir(parents=True, exist_ok=True)
        (root / "judges" / "heuristic-wordy.toml").write_text(EXTRA_JUDGE)
        os.environ["CALIBRATE_JUDGES_DIR"] = str(root / "judges")
        if args.only == "compare-responses":
            bench_compare_responses(root, args.pairs_per_dataset)
            return
        if args.only != "score":
            bench_compare(root, args.pairs_per_set)
        if args.only != "compare":
            bench_score(root, args.pairs)


def bench_compare(root: Path, pairs_per_set: int) -> None:
    """The compare of 4 judges + 3 baselines: filling the cache, then every judgment cached."""
    data = write_sets(root / f"data-{pairs_per_set}", pairs_per_set)
    compare = ["compare", "--judges", ",".join(JUDGES), "--data", str(data), "--order", "both", "--repeats", "2",
               "--cache", str(root / "compare-cache.sqlite3"), "--out", str(root / "comparison"), "--no-progress"]
    filled, filled_cpu, _ = run_cli(compare, root)
    cached, cached_cpu, compare_mb = run_cli(compare, root)
    print(f"compare, {len(JUDGES)} judges + 3 baselines, {pairs_per_set:,} pairs per set, both orders, "
          f"2 repeats: filling the cache {filled:.1f} s ({filled_cpu:.1f} s CPU); every judgment cached "
          f"{cached:.1f} s ({cached_cpu:.1f} s CPU; target <= 8), peak memory {compare_mb:,.0f} MB")


def bench_score(root: Path, pairs: int) -> None:
    """Score with the heuristic judge on synthetic pairs: a cold run (fresh cache), then a cached one."""
    responses = root / f"synthetic-{pairs}.parquet"
    if not responses.exists():
        synthetic_responses(pairs, responses)
    cache = root / "score-cache.sqlite3"
    cache.unlink(missing_ok=True)
    run_cli(["fit", "--judge", "heuristic", "--cache", str(cache), "--out", str(root / "fit"), "--no-progress"],
            root)
    score = ["score", "--judge", "heuristic", "--responses", str(responses), "--out", str(root / "score"),
             "--calibration", str(root / "fit" / "calibration.json"), "--cache", str(cache),
             "--bootstrap", "1000", "--no-progress"]
    cold, cold_cpu, cold_mb = run_cli(score, root)
    cached, cached_cpu, cached_mb = run_cli(score, root)
    print(f"score, heuristic judge, {pairs:,} pairs: cold {cold:.1f} s ({cold_cpu:.1f} s CPU; target <= 40), "
          f"cached {cached:.1f} s ({cached_cpu:.1f} s CPU; target <= 8); peak memory {max(cold_mb, cached_mb):,.0f} "
          f"MB (target < 1,536)")


def bench_compare_responses(root: Path, pairs: int) -> None:
    """`compare --responses` of 3 heuristic judges on 3 synthetic response datasets: filling the cache, then
    every judgment cached (the judges' fits and scores of the datasets, and the rank agreement)."""
    folder = root / f"responses-{pairs}"
    folder.mkdir(parents=True, exist_ok=True)
    datasets = []
    for offset, (name, models) in enumerate(RESPONSE_MODELS.items()):
        path = folder / f"{name}.parquet"
        if not path.exists():
            synthetic_responses(pairs, path, models=models, tag=name, start=offset)
        datasets.append(str(path))
    compare = ["compare", "--judges", ",".join(RESPONSE_JUDGES), "--responses", ",".join(datasets),
               "--cache", str(root / "responses-cache.sqlite3"), "--out", str(root / "comparison-responses"),
               "--no-progress"]
    filled, filled_cpu, _ = run_cli(compare, root)
    cached, cached_cpu, peak_mb = run_cli(compare, root)
    print(f"compare --responses, {len(RESPONSE_JUDGES)} judges (+ 2 baselines), {len(datasets)} datasets of "
          f"{pairs:,} pairs: filling the cache {filled:.1f} s ({filled_cpu:.1f} s CPU); every judgment cached "
          f"{cached:.1f} s ({cached_cpu:.1f} s CPU), peak memory {peak_mb:,.0f} MB")
    print(f"the cached run, to time again (from {root}): {sys.executable} -m calibrate {' '.join(compare)}")


if __name__ == "__main__":
    main()
