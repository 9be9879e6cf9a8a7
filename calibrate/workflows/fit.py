"""`fit`: judge the calibration sets, measure the judge against their known answers, fit and validate
the score mappings. Returns a `FitResult`; files are written only when `out` is given."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS, FIT_SETS
from calibrate.data.invariance import invariance_sets, parse_invariance
from calibrate.data.pairs import LoadedSet, Pair
from calibrate.data.sources import portable_path
from calibrate.errors import CalibrateError
from calibrate.judging.estimate import RequestSizer, SpendBudget
from calibrate.judging.preflight import check_ready
from calibrate.judging.progress import ProgressCallback
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.judging.trust import trusting
from calibrate.records import RecordError
from calibrate.stats.calibration import (
    Calibration,
    DataRecord,
    RunRecord,
    Summary,
    accounting,
    confusion_warnings,
    fit_mappings,
    injection_shift,
    small_set_warnings,
    summarise,
)
from calibrate.stats.invariance import invariance_shifts
from calibrate.stats.mapping import ScoreMapping
from calibrate.stats.metrics import DEFAULT_BOOTSTRAP, SetReport, confusion_matrix, order_effect, set_report
from calibrate.stats.rules import check_rule
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.batch import open_batch_requests, warn_if_in_open_batches
from calibrate.workflows.common import (
    calibration_rows,
    check_judged,
    judge_record,
    judgments_kept,
    load_sets,
    orders_of,
    output_dir,
    package_versions,
    sets_record,
    staged_output,
    write_json,
)
from calibrate.workflows.plan import ProbeQuote, RunPlan, estimate_judging, plan_store, probe_judging, spend_budget

CALIBRATION_SCHEMA_VERSION = 1


@dataclass
class FitResult:
    """What `fit` produced: the calibration record (calibration.json), the judgment table, and the
    files written (none unless `out` was given, or until `write`)."""

    calibration: Calibration
    judgments: pd.DataFrame | None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def judge(self) -> str:
        return self.calibration.judge.name

    @property
    def sets(self) -> dict[str, SetReport]:
        """Per set: observed metrics with intervals, expected values, errors, classification."""
        return self.calibration.sets

    @property
    def summary(self) -> Summary:
        """The headline: worst-set and mean PAC error, class accuracy, counts."""
        return self.calibration.summary

    @property
    def mapping(self) -> ScoreMapping:
        """The score mapping `fit` selected, as a fitted estimator."""
        return self.calibration.mapping.estimator

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write calibration.json, judgments.parquet and the reports into `out_dir`; returns their paths."""
        from calibrate.reports.fit import write_fit_report

        out = output_dir(out_dir)
        with staged_output(out) as staged:
            paths = {"calibration": staged.dir / "calibration.json"}
            write_json(paths["calibration"], self.calibration.to_dict())
            if self.judgments is not None:
                paths["judgments"] = staged.dir / "judgments.parquet"
                self.judgments.to_parquet(paths["judgments"], index=False)
                paths.update(write_fit_report(self.calibration, self.judgments, staged.dir))
        self.paths = staged.final(paths)
        return self.paths


def plan_fit(
    judge: str,
    *,
    data: str = "sample",
    sets: Sequence[str] | str = FIT_SETS,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    order: str = "forward",
    invariance: Sequence[str] | str | None = None,
    trust: bool = False,
    probe: int = 0,
    max_cost: float | SpendBudget | None = None,
    progress: ProgressCallback | None = None,
    on_quote: Callable[[list[ProbeQuote]], None] | None = None,
) -> RunPlan:
    """What `fit` with these arguments would send and cost (requests, tokens, cost at list and batch
    price, time), sending nothing: the cache is read, never written, and no key is needed. With `probe`
    N, N of the run's requests are sent first and the plan extrapolates from them (`probe_judging`:
    `on_quote` gets their price before they are sent, `max_cost` caps them, `progress` shows them)."""
    with trusting(trust):
        backend = make_backend(load_judge_config(judge))
        orders = orders_of(order)
        pairs = judged_pairs(load_sets(data, sets, limit, seed), parse_invariance(invariance))
        sizers: dict[str, RequestSizer] = {}
        probes = probe_judging([(backend, pairs, orders)], probe, cache=cache, budget=spend_budget(max_cost),
                               sizers=sizers, progress=progress, on_quote=on_quote)
        with plan_store(cache) as store:
            return RunPlan("fit", estimate_judging(backend, pairs, store, orders, sizers=sizers), probes=probes)


def fit(
    judge: str,
    *,
    data: str = "sample",
    sets: Sequence[str] | str = FIT_SETS,
    rule: str | None = None,
    out: Path | str | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    progress: ProgressCallback | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    n_folds: int = 5,
    order: str = "forward",
    max_cost: float | SpendBudget | None = None,
    invariance: Sequence[str] | str | None = None,
    trust: bool = False,
) -> FitResult:
    """Judge the calibration sets, measure each set against its expected values, fit score mappings.

    `judge`: a judge name or .toml path; `data`: 'sample', 'hub' or a directory; `sets`: the sets to
    judge; `rule`: v2 or v3 (None: the judge config's); `out`: a folder for calibration.json,
    judgments.parquet and the reports (None: write nothing); `limit`: at most N pairs per calibration
    set (a seeded random choice); `seed`: the one seed of the run (that choice, the bootstrap, the
    folds). Loads and validates every set before any judging. `max_cost`: stop before the spend (USD,
    list price) would pass it; `progress`: receives the judging's `JudgingProgress` events.
    `invariance`: transformations (data/invariance.py: padding, hedging, markdown, politeness, or a user's)
    whose sets are judged too, each reported as its shift from the untransformed sets (`invariance`).
    `plan_fit` says what a run would cost without sending anything.
    """
    with trusting(trust):
        started = time.perf_counter()
        budget = spend_budget(max_cost)
        config = load_judge_config(judge)
        backend = make_backend(config)
        check_ready([backend])  # every missing key, unreachable endpoint, ... before any work
        rule = check_rule(rule or config.rule)
        orders = orders_of(order)
        transformations = parse_invariance(invariance)
        loaded = load_sets(data, sets, limit, seed)
        pairs = judged_pairs(loaded, transformations)
        out_dir = output_dir(out)
        cache_file = cache_path(cache)
        with judgments_kept(cache_file, out_dir), JudgmentStore(cache_file) as store:
            warn_if_in_open_batches(store, config, pairs, orders, open_batch_requests(store, config.config_hash))
            table, counts = judge_pairs(backend, pairs, store, orders=orders, progress=progress, budget=budget)
            # stored records that failed the integrity check, set aside and judged again
            quarantined = store.quarantined

        # Metrics use one order per pair (forward when it was run); both orders feed the order effect.
        primary = table[table["order"] == orders[0]]
        calibrating = calibration_rows(table, orders[0])
        if not (calibrating["parse_status"] == "ok").any():
            # nothing to measure or fit: keep the paid-for failures visible, and stop with one line
            where = "the cache's failure log"
            if out_dir is not None:
                with staged_output(out_dir) as staged:  # replaces only judgments.parquet, whole or not at all
                    table.to_parquet(staged.dir / "judgments.parquet", index=False)
                where = f"{out_dir / 'judgments.parquet'} and {where}"
            check_judged(config.name, calibrating, data, where)
        with judgments_kept(cache_file, out_dir):
            set_reports = {
                name: set_report(primary[primary["set_name"] == name], name, rule, n_boot, seed)
                for name in loaded
            }
            # Robustness sets are reported, but the headline and the mapping rest on the calibration sets.
            calibration_reports = {name: report for name, report in set_reports.items() if name in CALIBRATION_SETS}
            matrix = confusion_matrix(calibration_reports)
            calibration = Calibration(
                schema_version=CALIBRATION_SCHEMA_VERSION,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                judge=judge_record(config),
                scoring_rule=rule,
                data=DataRecord(source=data, limit_per_set=limit, seed=seed, sets=sets_record(loaded)),
                run=RunRecord(**counts, quarantined=quarantined, orders=list(orders), metrics_order=orders[0],
                              cache=portable_path(cache_file), bootstrap_resamples=n_boot, elapsed_s=None),
                accounting=accounting(table, config, counts["requests"]),
                sets=set_reports,
                summary=summarise(calibration_reports),
                confusion_matrix=matrix,
                warnings=[*small_set_warnings(calibration_reports), *confusion_warnings(matrix)],
                order_effect=order_effect(table[table["set_name"].isin(list(loaded))]) if len(orders) == 2 else None,
                injection=injection_shift(primary, rule, n_boot, seed),
                mapping=fit_mappings(calibrating, rule, n_folds, seed),
                package_versions=package_versions(),
                invariance=invariance_shifts(table, transformations, orders, rule, n_boot, seed),
            )
            elapsed = round(time.perf_counter() - started, 3)
            result = FitResult(calibration=replace(calibration, run=replace(calibration.run, elapsed_s=elapsed)),
                               judgments=table)
            if out_dir is not None:
                result.write(out_dir)
        return result


def judged_pairs(loaded: dict[str, LoadedSet], transformations: list[str]) -> list[Pair]:
    """The pairs of the loaded sets, then of their invariance sets."""
    every = [*loaded.values(), *invariance_sets(loaded, transformations).values()]
    return [pair for loaded_set in every for pair in loaded_set.pairs]


def read_calibration_record(path: Path | str) -> Calibration:
    """Read a calibration.json written by `fit`, checking its schema version and every key."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CalibrateError(f"calibration file {path}: cannot read it ({error})") from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version != CALIBRATION_SCHEMA_VERSION:
        raise CalibrateError(f"calibration file {path}: schema version {version!r}, "
                             f"expected {CALIBRATION_SCHEMA_VERSION}")
    try:
        return Calibration.from_dict(record)
    except RecordError as error:
        raise CalibrateError(f"calibration file {path}: {error}") from None


def load_calibration(path: Path | str) -> FitResult:
    """A fit read back from its calibration.json, with the judgments.parquet beside it when present."""
    path = Path(path)
    calibration = read_calibration_record(path)
    beside = path.parent / "judgments.parquet"
    judgments = pd.read_parquet(beside) if beside.exists() else None
    return FitResult(calibration, judgments,
                     {"calibration": path, **({"judgments": beside} if judgments is not None else {})})
