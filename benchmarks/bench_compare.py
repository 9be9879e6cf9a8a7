"""Analysis time of `calibrate compare`: 4 offline judges (+3 baselines) on 1,000 pairs per calibration set
(plus the injection set built from unaligned-0), both orders, 2 repeats, every judgment from the cache.

Target (issue 18): the analysis (per-judge summaries, between-judge agreement, recommendation) under 3 s.
The judging is done once into a temporary cache; the analysis is then timed alone, on the judgment
tables read back from that cache. Run from the repo root:
    python -m benchmarks.bench_compare [--pairs-per-set 1000] [--repeats 3] [--n-boot 1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import machine
from calibrate.data.calibration import CALIBRATION_SETS, FIT_SETS, sample_path

JUDGES = ("heuristic-strict", "heuristic-decisive", "panel", "heuristic-wordy")
EXTRA_JUDGE = """extends = "heuristic"
name = "heuristic-wordy"
description = "Offline keyword baseline, variant for the benchmark: refusal cues in answers of at most 60 words"
short_answer_words = 60
"""


def write_sets(folder: Path, per_set: int) -> Path:
    """`per_set` pairs per calibration set, the bundled pairs cycled with every issue text made unique
    (so every pair is its own cache key)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CALIBRATION_SETS:
        rows = [json.loads(line) for line in sample_path("calibration", name).read_text().splitlines()]
        with (folder / f"{name}.jsonl").open("w") as out:
            for i in range(per_set):
                row = dict(rows[i % len(rows)])
                row["id"] = 100_000 + i
                row["issue_description"] = f"{row['issue_description']} (case {i})"
                out.write(json.dumps(row) + "\n")
    return folder


def cached_runs(data: Path, cache: Path, repeats: int):
    """Every judge's judgment table, judged into `cache` on the first call and read back after."""
    from calibrate.judging.registry import load_judge_config, make_backend
    from calibrate.judging.runner import judge_pairs
    from calibrate.stats.comparison import JudgeRun
    from calibrate.store.judgments import JudgmentStore
    from calibrate.workflows.common import is_baseline, load_sets
    from calibrate.workflows.compare import DEFAULT_BASELINES

    pairs = [pair for loaded in load_sets(str(data), FIT_SETS, None, 0).values() for pair in loaded.pairs]
    runs = []
    with JudgmentStore(cache) as store:
        for name in (*JUDGES, *DEFAULT_BASELINES):
            config = load_judge_config(name)
            table, counts = judge_pairs(make_backend(config), pairs, store, orders=("forward", "reverse"),
                                        show_progress=False, repeats=repeats)
            runs.append(JudgeRun(config, table, counts, baseline=is_baseline(config)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-per-set", type=int, default=1000)
    parser.add_argument("--judge-repeats", type=int, default=2, help="repeats of every judgment (compare --repeats)")
    parser.add_argument("--repeats", type=int, default=3, help="timed analysis runs")
    parser.add_argument("--n-boot", type=int, default=1000, help="compare --bootstrap (the CLI default)")
    parser.add_argument("--profile", action="store_true", help="print the 30 most expensive calls of one run")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write the analysis record of the last timed run here (JSON), to compare versions")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the data and the cache here and reuse them next time (default: a temporary folder)")
    args = parser.parse_args()
    from calibrate.workflows.compare import analyse

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        (root / "judges").mkdir(parents=True, exist_ok=True)
        (root / "judges" / "heuristic-wordy.toml").write_text(EXTRA_JUDGE)
        os.environ["CALIBRATE_JUDGES_DIR"] = str(root / "judges")
        data = write_sets(root / f"data-{args.pairs_per_set}", args.pairs_per_set)
        started = time.perf_counter()
        cached_runs(data, root / "cache.sqlite3", args.judge_repeats)
        judging = time.perf_counter() - started
        runs = cached_runs(data, root / "cache.sqlite3", args.judge_repeats)
        set_names = list(FIT_SETS)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            record = analyse(runs, "v2", set_names, ("forward", "reverse"), None, args.n_boot, 0)
            times.append(time.perf_counter() - started)
        if args.dump:
            args.dump.write_text(json.dumps(record.to_dict(), indent=1))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(analyse, runs, "v2", set_names, ("forward", "reverse"), None, args.n_boot, 0)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
            print(text.getvalue())
    n_judgments = sum(len(run.table) for run in runs)
    print(machine())
    print(f"{len(runs)} judges, {args.pairs_per_set} pairs per set, {n_judgments} judgments; "
          f"judging into the cache took {judging:.1f}s")
    print(f"analysis ({args.n_boot} bootstrap resamples): median {statistics.median(times):.2f}s "
          f"(min {min(times):.2f}s, max {max(times):.2f}s, {len(times)} runs)")


if __name__ == "__main__":
    main()
