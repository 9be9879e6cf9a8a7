"""`compare`: run several judges (and the trivial baselines) on the same calibration sets and put
them side by side: error, error after mapping, agreement with each other and with humans, order
bias, repeat stability, injection shift, cost. Returns a `CompareResult`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS, FIT_SETS
from calibrate.data.invariance import invariance_sets, parse_invariance
from calibrate.data.labels import ITEM, read_labels, split_item
from calibrate.data.pairs import LoadedSet, Pair
from calibrate.data.sources import load_source, portable_path
from calibrate.data.tables import load_ratings
from calibrate.errors import CalibrateError
from calibrate.judging.base import DEFAULT_RULE, Backend
from calibrate.judging.config import JudgeConfig
from calibrate.judging.estimate import RequestSizer, SpendBudget
from calibrate.judging.preflight import check_ready, load_judges, report
from calibrate.judging.progress import ProgressCallback
from calibrate.judging.runner import CachedTable, judge_pairs
from calibrate.judging.trust import trusting
from calibrate.records import Record
from calibrate.stats.agreement import AgreementReport, agreement_report
from calibrate.stats.calibration import MappingSelection
from calibrate.stats.comparison import (
    BetweenJudges,
    Comparison,
    ComparisonData,
    ComparisonRun,
    JudgeRun,
    JudgeSummary,
    Recommendation,
    against_humans,
    between_judges,
    judge_mappings,
    judge_summary,
    recommend,
)
from calibrate.stats.humans import HumanAgreement, table4
from calibrate.stats.metrics import DEFAULT_BOOTSTRAP
from calibrate.stats.rules import check_rule
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.common import (
    calibration_rows,
    check_judged,
    is_baseline,
    judgments_kept,
    load_sets,
    orders_of,
    output_dir,
    package_versions,
    response_sources,
    sets_record,
    staged_output,
    write_json,
)
from calibrate.workflows.compare_responses import (
    compare_leaderboards,
    plan_leaderboards,
    scored_models,
    scoring_configs,
)
from calibrate.workflows.plan import (
    ProbeQuote,
    RunPlan,
    combined,
    estimate_judging,
    plan_store,
    probe_judging,
    spend_budget,
)

COMPARISON_SCHEMA_VERSION = 1
DEFAULT_BASELINES = ("always-0", "always-aligned", "heuristic")


@dataclass
class CompareResult:
    """What `calibrate compare` produced: the comparison record, each judge's judgment table, file paths."""

    comparison: Comparison
    judgments: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def judges(self) -> dict[str, JudgeSummary]:
        """Per judge: error on each set, after mapping, agreement, order bias, stability, cost."""
        return self.comparison.judges

    @property
    def leaderboard(self) -> pd.DataFrame:
        """One row per judge, the columns a person choosing a judge compares (comparison.csv)."""
        return self.comparison.leaderboard.to_frame()

    @property
    def recommendation(self) -> Recommendation:
        return self.comparison.recommendation

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """Write comparison.json, comparison.csv, judgments.parquet and the reports; returns their paths."""
        from calibrate.reports.compare import write_compare_report
        from calibrate.reports.render import write_csv

        out = output_dir(out_dir)
        with staged_output(out) as staged:
            paths = {"comparison": staged.dir / "comparison.json", "leaderboard": staged.dir / "comparison.csv",
                     "judgments": staged.dir / "judgments.parquet"}
            write_json(paths["comparison"], self.comparison.to_dict())
            write_csv(self.leaderboard, paths["leaderboard"])
            self.judgments.to_parquet(paths["judgments"], index=False)
            paths.update(write_compare_report(self.comparison, staged.dir))
        self.paths = staged.final(paths)
        return self.paths


@dataclass(frozen=True)
class Analysis(Record):
    """The comparison's statistics, the part of the record that `analyse` computes."""

    judges: dict[str, JudgeSummary]
    between_judges: BetweenJudges
    humans: HumanAgreement | None
    recommendation: Recommendation
    mappings: dict[str, MappingSelection]  # per judge, what `fit` would select: `compare --responses` scores with it


def analyse(runs: Sequence[JudgeRun], rule: str, set_names: Sequence[str], orders: Sequence[str],
            labels: pd.DataFrame | None, n_boot: int, seed: int, invariance: Sequence[str] = ()) -> Analysis:
    """The comparison's statistics from the judges' runs: per judge, between judges, against humans, the
    recommendation (benchmarks/bench_compare.py times this part alone)."""
    calibration_sets = [name for name in set_names if name in CALIBRATION_SETS]
    mappings = {run.name: judge_mappings(run, rule, set_names, orders[0], seed) for run in runs}
    per_judge = {run.name: judge_summary(run, rule, set_names, orders, n_boot, seed, invariance,
                                         mapping=mappings[run.name]) for run in runs}
    return Analysis(
        judges=per_judge,
        between_judges=between_judges(runs, orders[0], calibration_sets, n_boot, seed),
        humans=against_humans(runs, labels, orders[0], rule, n_boot, seed) if labels is not None else None,
        recommendation=recommend(per_judge), mappings=mappings)


@dataclass(frozen=True)
class Inputs:
    """What a comparison judges, loaded and checked: the same for the run and for its plan."""

    configs: list[JudgeConfig]
    backends: list[Backend]
    labels: pd.DataFrame | None
    orders: tuple[str, ...]
    loaded: dict[str, LoadedSet]
    labelled: dict[str, LoadedSet]
    invariance: list[str]

    @property
    def pairs(self) -> list[Pair]:
        every = [*self.loaded.values(), *invariance_sets(self.loaded, self.invariance).values(),
                 *self.labelled.values()]
        return [pair for loaded_set in every for pair in loaded_set.pairs]


def load_inputs(judges: Sequence[str], *, data: str, sets: Sequence[str] | str, repeats: int, order: str,
                human_labels: Path | str | None, responses: Sequence[str], baselines: bool, limit: int | None,
                seed: int, planning: bool, invariance: Sequence[str] | str | None = None) -> Inputs:
    """Every config loaded and, for a run (not `planning`), every API key and endpoint checked, before any
    judging; then the labels and the sets."""
    if repeats < 1:
        raise CalibrateError("repeats must be at least 1", ("repeats",))
    transformations = parse_invariance(invariance)
    if not judges:
        raise CalibrateError("judges: name at least one judge to compare", ("judges",))
    names = list(dict.fromkeys([*judges, *(DEFAULT_BASELINES if baselines else ())]))
    if len(names) < 2 and not human_labels:
        raise CalibrateError("judges: a comparison needs two judges or more (without baselines, name them all), "
                             "or human labels to check one judge against", ("judges",))
    judges_loaded, problems = load_judges(names)
    if planning:
        report(problems)
    seen: dict[str, str] = {}
    for config, _ in judges_loaded:
        if config.name in seen:
            raise CalibrateError(f"judges: two judges are named '{config.name}' ({seen[config.name]}, {config.path})",
                                 ("judges",))
        seen[config.name] = str(config.path)
    backends = [backend for _, backend in judges_loaded]
    if not planning:
        check_ready(backends, problems)  # every unreadable config, missing key, unreachable endpoint at once
    labels = read_labels(human_labels, "human_labels") if human_labels else None
    orders = orders_of(order)
    loaded = load_sets(data, sets, limit, seed)
    return Inputs([config for config, _ in judges_loaded], backends, labels, orders, loaded,
                  labelled_response_pairs(labels, responses, loaded) if labels is not None else {}, transformations)


def plan_compare(
    judges: Sequence[str],
    *,
    data: str = "sample",
    sets: Sequence[str] | str = FIT_SETS,
    repeats: int = 1,
    order: str = "forward",
    human_labels: Path | str | None = None,
    responses: Sequence[str] = (),
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    invariance: Sequence[str] | str | None = None,
    families: Mapping[str, str] | None = None,
    trust: bool = False,
    probe: int = 0,
    max_cost: float | SpendBudget | None = None,
    progress: ProgressCallback | None = None,
    on_quote: Callable[[list[ProbeQuote]], None] | None = None,
) -> RunPlan:
    """What `compare` with the same arguments would send and cost, per judge; sends nothing, needs no key
    (the cache is read read-only). With `probe` N, N of each judge's requests are sent first and the plan
    extrapolates from them (as `plan_fit`)."""
    with trusting(trust):
        inputs = load_inputs(judges, data=data, sets=sets, repeats=repeats, order=order, human_labels=human_labels,
                             responses=responses, baselines=baselines, limit=limit, seed=seed, planning=True,
                             invariance=invariance)
        sizers: dict[str, RequestSizer] = {}
        probes = probe_judging([(backend, inputs.pairs, inputs.orders) for backend in inputs.backends], probe,
                               cache=cache, budget=spend_budget(max_cost), sizers=sizers, progress=progress,
                               on_quote=on_quote)
        with plan_store(cache) as store:
            estimates = [e for backend in inputs.backends
                         for e in estimate_judging(backend, inputs.pairs, store, inputs.orders, repeats,
                                                   sizers=sizers)]
        scoring = plan_leaderboards(scoring_configs(inputs.configs, judges, responses, labelled=bool(human_labels)),
                                    responses,
                                    order=inputs.orders[0], limit=limit, seed=seed, cache=cache, families=families)
        # a judge in a panel: judged once; the response datasets' scoring added to each judge
        return RunPlan("compare", combined([*{e.name: e for e in estimates}.values(), *scoring]), probes=probes)


def compare(
    judges: Sequence[str],
    *,
    data: str = "sample",
    sets: Sequence[str] | str = FIT_SETS,
    rule: str | None = None,
    out: Path | str | None = None,
    repeats: int = 1,
    order: str = "forward",
    human_labels: Path | str | None = None,
    responses: Sequence[str] = (),
    baselines: bool = True,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    progress: ProgressCallback | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    max_cost: float | SpendBudget | None = None,
    invariance: Sequence[str] | str | None = None,
    families: Mapping[str, str] | None = None,
    trust: bool = False,
) -> CompareResult:
    """Run (or reuse from the cache) every judge and the baselines on the same sets, then compare them.

    Every config is loaded and every API key checked before any judging. `rule` applies to every
    judge alike (None: v2, the public repo's); `out`: a folder for comparison.json, comparison.csv,
    judgments.parquet and the reports (None: write nothing). `limit`: at most N pairs per calibration set
    (a seeded random N, by `seed`, which also seeds the bootstrap). `human_labels`: a label file (long or
    wide, see data/labels.py); with it one judge is enough. Labels on benchmark answers name the response
    datasets they come from in `responses` (files named like the items' source); only their labelled
    pairs are judged. `max_cost`: stop before the spend (USD, list price, all judges together) would
    pass it; `progress`: receives the judging's `JudgingProgress` events. `plan_compare` says what a run
    would cost, sending nothing. `invariance`: transformations (data/invariance.py) whose sets every judge
    judges too; each judge's shift per transformation is in `judges[j].invariance`, and a flagged one keeps
    the judge from the recommendation. With two or more judges named (baselines aside), every judge scores
    the `responses` datasets too (its `score`, the first `limit` pairs of each, with the calibration its `fit`
    on these sets would make, taken from this comparison's judgments and analysis; no breakdowns):
    `comparison.rank_agreement` holds Kendall's tau between their leaderboards, the flips, and
    `comparison.self_preference` how each judge scores its own family's models (`families`: dataset name ->
    model family where the model id does not say; data/families.py).
    """
    with trusting(trust):
        started = time.perf_counter()
        budget = spend_budget(max_cost)
        rule = check_rule(rule or DEFAULT_RULE)
        inputs = load_inputs(judges, data=data, sets=sets, repeats=repeats, order=order, human_labels=human_labels,
                             responses=responses, baselines=baselines, limit=limit, seed=seed, planning=False,
                             invariance=invariance)
        scorers = scoring_configs(inputs.configs, judges, responses, labelled=bool(human_labels))
        scored = scored_models(responses, limit, families) if scorers else None  # checked before any judging
        out_dir = output_dir(out)
        cache_file = cache_path(cache)
        with judgments_kept(cache_file, out_dir):
            runs = []
            read_alone: dict[str, CachedTable] = {}  # a panel's member compared on its own too is read once
            with JudgmentStore(cache_file) as store:
                for config, backend in zip(inputs.configs, inputs.backends, strict=True):
                    table, counts = judge_pairs(backend, inputs.pairs, store, orders=inputs.orders,
                                                progress=progress, repeats=repeats, budget=budget, reuse=read_alone)
                    runs.append(JudgeRun(config, table, counts, baseline=is_baseline(config)))
                quarantined = store.quarantined
            for run in runs:  # a judge with no calibration judgment has nothing to compare
                check_judged(run.name, calibration_rows(run.table, inputs.orders[0]), data, "the cache's failure log")
            analysis = analyse(runs, rule, list(inputs.loaded), inputs.orders, inputs.labels, n_boot, seed,
                               inputs.invariance)
            ranks, preference = (compare_leaderboards(
                list(zip(runs, inputs.backends, strict=True))[:len(scorers)], analysis.mappings, scored, rule=rule,
                order=inputs.orders[0], limit=limit, seed=seed, cache=cache, progress=progress, n_boot=n_boot,
                budget=budget) if scored else (None, None))
            humans = analysis.humans
            if humans is not None and human_labels is not None:  # human agreement is measured only with labels
                humans = dataclasses.replace(humans, source=portable_path(human_labels),
                                             responses=sets_record(inputs.labelled))
            comparison = Comparison(
                schema_version=COMPARISON_SCHEMA_VERSION,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                scoring_rule=rule,
                data=ComparisonData(source=data, limit_per_set=limit, seed=seed, sets=sets_record(inputs.loaded)),
                run=ComparisonRun(orders=list(inputs.orders), metrics_order=inputs.orders[0], repeats=repeats,
                                  cache=portable_path(cache_file), quarantined=quarantined, bootstrap_resamples=n_boot,
                                  elapsed_s=round(time.perf_counter() - started, 3),
                                  counts={run.name: run.counts for run in runs}),
                judges=analysis.judges, between_judges=analysis.between_judges, humans=humans,
                recommendation=analysis.recommendation, package_versions=package_versions(),
                rank_agreement=ranks, self_preference=preference or None)
            result = CompareResult(comparison, pd.concat([run.table for run in runs], ignore_index=True))
            if out_dir is not None:
                result.write(out_dir)
        return result


def labelled_response_pairs(labels: pd.DataFrame, responses: Sequence[str],
                            loaded: dict[str, LoadedSet]) -> dict[str, LoadedSet]:
    """The labelled pairs of the response datasets the labels name (an item's source is the dataset's
    file or folder name); an item whose source is neither a judged set nor a given dataset is an error."""
    sources = response_sources(responses) if responses else {}
    wanted: dict[str, set[int]] = {}
    for item in labels[ITEM].unique():
        source, pair_id = split_item(item)
        if source in loaded:
            continue
        if source not in sources:
            raise CalibrateError(f"human_labels: item {item} comes from '{source}', which is neither a judged set "
                                 f"({', '.join(loaded)}) nor a response dataset given in responses",
                                 ("human_labels", "responses"))
        wanted.setdefault(source, set()).add(pair_id)
    chosen = {}
    for name, ids in wanted.items():
        whole = load_source(sources[name], name)
        found = [p for p in whole.pairs if p.id in ids]
        if len(found) < len(ids):
            absent = min(ids - {p.id for p in found})
            raise CalibrateError(f"human_labels: item {name}/{absent} is not a pair of {sources[name]} "
                                 f"(no id {absent})", ("human_labels",))
        chosen[name] = LoadedSet(name, whole.source, whole.files, found)
    return chosen


def human_agreement(human_labels: Path | str, *, rule: str = DEFAULT_RULE, n_boot: int = DEFAULT_BOOTSTRAP,
                    seed: int = 0) -> HumanAgreement:
    """The annotators' part of Table 4 from a label file alone: annotator-annotator rows and PAC per
    annotator (and their consensus), with intervals (`calibrate agreement --human-labels`)."""
    labels = read_labels(human_labels, "human_labels")
    if labels.empty:
        raise CalibrateError(f"human_labels {human_labels}: no labels", ("human_labels",))
    record = table4(labels, {}, check_rule(rule), n_boot, seed)
    return dataclasses.replace(record, source=portable_path(human_labels))


def agreement(ratings: Path | str, *, level: str = "ordinal", truth: str | None = None,
              labels: Sequence[int | float | str] | None = None) -> AgreementReport:
    """Agreement statistics of any wide ratings table (column `item`, one column per rater; `truth`: the
    column of reference labels, every other column a rater): Krippendorff's alpha at `level`, Fleiss' kappa,
    pairwise Cohen's kappas, each rater against the truth. `labels`: the full ordered scale (default: every
    value seen), so that a label nobody used still counts in the weighted kappas' distances."""
    table, truth_values = load_ratings(ratings, truth)
    return agreement_report(table, level, truth_values, labels)
