"""`compare`: run several judges (and the trivial baselines) on the same calibration sets and put
them side by side: error, error after mapping, agreement with each other and with humans, order
bias, repeat stability, injection shift, cost. Returns a `CompareResult`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS, FIT_SETS
from calibrate.data.sources import portable_path
from calibrate.errors import CalibrateError
from calibrate.judging.base import DEFAULT_RULE
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.stats.comparison import (
    JudgeRun,
    against_humans,
    between_judges,
    judge_summary,
    leaderboard,
    load_human_labels,
    recommend,
)
from calibrate.stats.metrics import DEFAULT_BOOTSTRAP
from calibrate.stats.rules import check_rule
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.common import (
    is_baseline,
    judgments_kept,
    load_sets,
    orders_of,
    output_dir,
    package_versions,
    sets_record,
    staged_output,
    write_json,
)

COMPARISON_SCHEMA_VERSION = 1
DEFAULT_BASELINES = ("always-0", "always-aligned", "heuristic")


@dataclass
class CompareResult:
    """What `calibrate compare` produced: the comparison record, each judge's judgment table, file paths."""

    comparison: dict
    judgments: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def judges(self) -> dict[str, dict]:
        """Per judge: error on each set, after mapping, agreement, order bias, stability, cost."""
        return self.comparison["judges"]

    @property
    def leaderboard(self) -> pd.DataFrame:
        """One row per judge, the columns a person choosing a judge compares."""
        return leaderboard(self.judges)

    @property
    def recommendation(self) -> dict:
        return self.comparison["recommendation"]

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write comparison.json, comparison.csv, judgments.parquet and the reports; returns their paths."""
        from calibrate.reports.compare import write_compare_report

        out = output_dir(out_dir)
        with staged_output(out) as staged:
            paths = {"comparison": staged.dir / "comparison.json", "leaderboard": staged.dir / "comparison.csv",
                     "judgments": staged.dir / "judgments.parquet"}
            write_json(paths["comparison"], self.comparison)
            self.leaderboard.to_csv(paths["leaderboard"], index=False)
            self.judgments.to_parquet(paths["judgments"], index=False)
            paths.update(write_compare_report(self.comparison, staged.dir))
        self.paths = staged.final(paths)
        return self.paths


def analyse(runs: Sequence[JudgeRun], rule: str, set_names: Sequence[str], orders: Sequence[str],
            labels: pd.DataFrame | None, n_boot: int, seed: int) -> dict:
    """The comparison's statistics from the judges' runs: per judge, between judges, against humans, the
    recommendation (benchmarks/bench_compare.py times this part alone)."""
    calibration_sets = [name for name in set_names if name in CALIBRATION_SETS]
    per_judge = {run.name: judge_summary(run, rule, set_names, orders, n_boot, seed) for run in runs}
    return {
        "judges": per_judge,
        "between_judges": between_judges(runs, orders[0], calibration_sets, n_boot, seed),
        "humans": against_humans(runs, labels, orders[0], n_boot, seed) if labels is not None else None,
        "recommendation": recommend(per_judge),
    }


def compare(
    judges: Sequence[str],
    data: str = "sample",
    sets: Sequence[str] | str = FIT_SETS,
    rule: str | None = None,
    out: Path | str | None = None,
    repeats: int = 1,
    order: str = "forward",
    human: Path | str | None = None,
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    show_progress: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
) -> CompareResult:
    """Run (or reuse from the cache) every judge and the baselines on the same sets, then compare them.

    Every config is loaded and every API key checked before any judging. `rule` applies to every
    judge alike (None: v2, the public repo's); `out`: a folder for comparison.json, comparison.csv,
    judgments.parquet and the reports (None: write nothing).
    """
    started = time.perf_counter()
    rule = check_rule(rule or DEFAULT_RULE)
    if repeats < 1:
        raise CalibrateError("repeats must be at least 1", ("repeats",))
    if not judges:
        raise CalibrateError("judges: name at least one judge to compare", ("judges",))
    names = list(dict.fromkeys([*judges, *(DEFAULT_BASELINES if baselines else ())]))
    if len(names) < 2:
        raise CalibrateError("judges: a comparison needs two judges or more (without baselines, name them all)",
                             ("judges",))
    configs = [load_judge_config(name) for name in names]
    seen: dict[str, str] = {}
    for config in configs:
        if config.name in seen:
            raise CalibrateError(f"judges: two judges are named '{config.name}' ({seen[config.name]}, {config.path})",
                                 ("judges",))
        seen[config.name] = str(config.path)
    backends = [make_backend(config) for config in configs]
    for backend in backends:
        backend.preflight()  # every missing key is found before anything is spent
    labels = load_human_labels(human) if human else None
    orders = orders_of(order)
    loaded = load_sets(data, sets, limit, seed)
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs]
    out_dir = output_dir(out)
    cache_file = cache_path(cache)
    with judgments_kept(cache_file, out_dir):
        runs = []
        with JudgmentStore(cache_file) as store:
            for config, backend in zip(configs, backends, strict=True):
                table, counts = judge_pairs(backend, pairs, store, orders=orders, show_progress=show_progress,
                                            repeats=repeats)
                runs.append(JudgeRun(config, table, counts, baseline=is_baseline(config)))
        comparison = {
            "schema_version": COMPARISON_SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "scoring_rule": rule,
            "data": {"source": data, "limit_per_set": limit, "seed": seed,
                     "sets": sets_record(loaded)},
            "run": {"orders": list(orders), "metrics_order": orders[0], "repeats": repeats,
                    "cache": portable_path(cache_file),
                    "bootstrap_resamples": n_boot, "elapsed_s": None,
                    "counts": {run.name: run.counts for run in runs}},
            **analyse(runs, rule, list(loaded), orders, labels, n_boot, seed),
            "package_versions": package_versions(),
        }
        comparison["run"]["elapsed_s"] = round(time.perf_counter() - started, 3)
        result = CompareResult(comparison, pd.concat([run.table for run in runs], ignore_index=True))
        if out_dir is not None:
            result.write(out_dir)
    return result
