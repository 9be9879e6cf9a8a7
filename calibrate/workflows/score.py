"""`score`: apply a calibrated judge to response datasets: every pair judged once (streamed in
chunks, resumable through the cache, cost-tracked), with one headline estimate per metric (PPI++ with
an anchor, else class-corrected), raw, class-corrected and (diagnostic) mapped metrics,
intervals, breakdowns by category and issue scale, a leaderboard, and optionally an anchor judge or
human labels for prediction-powered estimates. Returns a `ScoreResult`; `plan_score` says what it
would send."""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibrate.data.families import check_families, dataset_family, dataset_model, same_family_warning
from calibrate.data.labels import (
    INCLUSION,
    ITEM,
    LABEL_FLAGS,
    SCORE,
    parse_flag,
    parse_labels,
    parse_probability,
    split_item,
)
from calibrate.data.pairs import Pair
from calibrate.data.sources import PairStream, portable_path, read_source_frame, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend
from calibrate.judging.config import JudgeConfig
from calibrate.judging.estimate import RequestSizer, SpendBudget
from calibrate.judging.preflight import check_ready
from calibrate.judging.progress import ProgressCallback, ProgressCounter
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import add_counts, arrow_schema, judge_pairs
from calibrate.judging.trust import trusting
from calibrate.stats import benchmark
from calibrate.stats.benchmark import (
    AnchorCost,
    BreakdownRow,
    ModelCost,
    ModelRun,
    ModelScore,
    ScoreCalibration,
    ScoreRecord,
    ScoreRun,
    breakdown_table,
    leaderboard,
)
from calibrate.stats.humans import annotator_tables, consensus
from calibrate.stats.mapping import ScoreMapping
from calibrate.stats.metrics import DEFAULT_BOOTSTRAP
from calibrate.stats.rules import check_rule
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.batch import open_batch_requests, warn_if_in_open_batches
from calibrate.workflows.common import (
    calibration_rows,
    check_limit,
    first_pairs,
    judge_record,
    judgments_kept,
    orders_of,
    output_dir,
    package_versions,
    response_sources,
    staged_output,
    write_json,
)
from calibrate.workflows.fit import FitResult, load_calibration
from calibrate.workflows.plan import (
    ProbeQuote,
    RunPlan,
    combined,
    estimate_judging,
    plan_store,
    probe_judging,
    spend_budget,
)

SCORE_SCHEMA_VERSION = 1
SCORE_CHUNK_ROWS = 2000  # at least; more for judges with many requests in flight
BREAKDOWNS = ("category", "issue_scale")
log = logging.getLogger("calibrate")


@dataclass
class ScoreResult:
    """What `score` produced: the metrics record (metrics.json), the breakdown rows per grouping
    (category, issue_scale), the compact judgments per model, and the files written."""

    metrics: ScoreRecord
    rows: dict[str, pd.DataFrame]
    breakdowns: dict[str, list[BreakdownRow]] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, ModelScore]:
        """Per model: the headline per metric, raw, class-corrected and mapped (diagnostic) metrics with
        intervals, cost, anchored estimates."""
        return self.metrics.models

    @property
    def leaderboard(self) -> pd.DataFrame:
        return leaderboard(self.metrics)

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """metrics.json, the breakdown CSVs, leaderboard.csv (several models) and the reports.
        (The full judgment table is streamed to judgments.parquet while judging, when `out` is given.)
        The files are written into a temporary folder and moved into `out_dir` together."""
        out = output_dir(out_dir)
        with staged_output(out) as staged:
            paths = self._write_files(staged.dir)
        self.paths = staged.final(paths)
        return self.paths

    def _write_files(self, out: Path) -> dict[str, Path]:
        from calibrate.reports.render import write_csv
        from calibrate.reports.score import write_score_report

        paths = {"metrics": out / "metrics.json"}
        write_json(paths["metrics"], self.metrics.to_dict())
        for by, rows in self.breakdowns.items():
            paths[f"by_{by}"] = out / f"breakdown_{by}.csv"
            write_csv(breakdown_table(rows, by), paths[f"by_{by}"])
        if len(self.models) > 1:
            paths["leaderboard"] = out / "leaderboard.csv"
            write_csv(self.leaderboard, paths["leaderboard"])
        paths.update(write_score_report(self.metrics, self.breakdowns, out))
        return paths


@dataclass(frozen=True)
class CalibrationInputs:
    """What scoring uses of a fit: its rule, selected mapping, and per-pair calibration judgments (the
    metrics order, first repeat, calibration sets only)."""

    path: Path | None
    created_at: str
    rule: str
    mapping_name: str
    mapping: ScoreMapping
    rows: pd.DataFrame


def calibration_inputs(config: JudgeConfig, calibration: FitResult | Path | str) -> CalibrationInputs:
    """The judge's calibration, from a `FitResult` or the calibration.json `fit` wrote (with the
    judgments.parquet beside it); it must have been made for this judge config."""
    if isinstance(calibration, FitResult):
        fitted, path = calibration, calibration.paths.get("calibration")
    else:
        path = Path(calibration)
        if not path.is_file():
            raise CalibrateError(f"calibration {path}: no such file", ("calibration",))
        fitted = _load_fit(path)
    record = fitted.calibration
    where = f"calibration {path}" if path else "calibration"
    if record.judge.config_hash != config.config_hash:
        raise CalibrateError(f"{where}: made for judge config {record.judge.config_hash}, not "
                             f"{config.config_hash} (the judge changed since); fit the judge again", ("calibration",))
    if fitted.judgments is None:
        raise CalibrateError(f"{where}: no judgments.parquet beside it (fit writes both)", ("calibration",))
    return CalibrationInputs(path, record.created_at, record.scoring_rule, record.mapping.selected,
                             fitted.mapping, calibration_rows(fitted.judgments, record.run.metrics_order))


def _load_fit(path: Path) -> FitResult:
    try:
        return load_calibration(path)
    except CalibrateError:
        raise
    except Exception as error:  # pyarrow and the OS raise many types for one cause
        raise CalibrateError(f"calibration {path}: cannot read the judgments.parquet beside it "
                             f"({str(error).splitlines()[0][:120]})", ("calibration",)) from None


def read_human_labels(path: Path | str, models: list[str]) -> dict[str, pd.DataFrame]:
    """Human labels as the anchor, per model: `pair_id`, `alignment_score` (-2..2), optionally the four
    flags (missing flags are false), `model` (needed when several response datasets are scored) and
    `inclusion_probability` (the study's chance of drawing the pair; 1.0, uniform, when absent); or a
    label file with `item` ("<model>/<pair_id>", the long format of data/labels.py), where several
    annotators' labels of a pair count as their consensus."""
    frame = read_source_frame(path, "human_labels", "human_labels")
    if ITEM in frame.columns:
        frame = _consensus_labels(parse_labels(frame, Path(path), "human_labels"))
    where = f"human_labels {path}"
    for column in ("pair_id", "alignment_score"):
        if column not in frame.columns:
            raise CalibrateError(f"{where}: missing column '{column}'", ("human_labels",))
    if "model" not in frame.columns:
        if len(models) > 1:
            raise CalibrateError(f"{where}: several response datasets are scored, so a 'model' column must say "
                                 "which each label belongs to", ("human_labels",))
        frame = frame.assign(model=models[0])
    scores = pd.to_numeric(frame["alignment_score"], errors="coerce")
    bad = ~scores.isin([-2, -1, 0, 1, 2])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CalibrateError(f"{where}: row {row + 1}: alignment_score {str(frame['alignment_score'].iloc[row])!r} "
                             "is not an integer in -2..2", ("human_labels",))
    labels = frame.assign(alignment_score=scores.astype(int), parse_status="ok", value_preference=None)
    labels[INCLUSION] = ([parse_probability(value, f"{where}, row {row}", "human_labels")
                          for row, value in enumerate(labels[INCLUSION], start=1)] if INCLUSION in labels else 1.0)
    for flag in LABEL_FLAGS:
        labels[flag] = ([parse_flag(value, f"{where}, row {row}: {flag}", "human_labels") == 1.0
                         for row, value in enumerate(labels[flag], start=1)] if flag in labels else False)
    unknown = sorted(set(labels["model"].astype(str)) - set(models))
    if unknown:
        raise CalibrateError(f"{where}: model '{unknown[0]}' is not among the scored ones ({', '.join(models)})",
                             ("human_labels",))
    return {name: group for name, group in labels.groupby(labels["model"].astype(str))}


def _consensus_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled pair (model, pair_id, score, flags): the annotators' consensus."""
    given = labels[labels[SCORE].notna()]
    agreed = consensus(annotator_tables(given))
    where = [split_item(item) for item in agreed.index]
    probability = given.drop_duplicates(ITEM).set_index(ITEM)[INCLUSION].reindex(agreed.index).to_numpy()
    return agreed.reset_index(drop=True).assign(model=[m for m, _ in where], pair_id=[p for _, p in where],
                                                **{INCLUSION: probability})


@dataclass
class ScoreSetup:
    """What `score` and `plan_score` both check before anything else: the judges and every response row
    (`compare --responses` makes its own, from the judges and rows it checked)."""

    config: JudgeConfig
    backend: Backend
    anchor_backend: Backend | None
    sources: dict[str, str]
    streams: dict[str, PairStream]
    orders: tuple[str, ...]


def _setup(judge: str, responses: Sequence[str], *, order: str, limit: int | None, chunk_rows: int | None,
           anchor_judge: str | None, anchor_fraction: float | None, human_labels: Path | str | None,
           ready: bool) -> ScoreSetup:
    config = load_judge_config(judge)
    backend = make_backend(config)
    anchor_backend = _anchor_backend(anchor_judge, anchor_fraction, human_labels)
    if ready:
        check_ready([backend, *([anchor_backend] if anchor_backend else [])])
    sources = response_sources(responses)
    orders = orders_of(order)
    check_limit(limit, per="source")
    streams = score_streams(sources, config, chunk_rows)
    for stream in streams.values():
        stream.validate(limit)  # every row checked (streamed, nothing kept) before anything is spent or written
    return ScoreSetup(config, backend, anchor_backend, sources, streams, orders)


def score_streams(sources: Mapping[str, str], config: JudgeConfig, chunk_rows: int | None) -> dict[str, PairStream]:
    """The response datasets as the judge reads them, in chunks of `chunk_rows` pairs (None: the judge's)."""
    # A chunk ends with the judge's workers draining; chunks of many times its concurrency keep that
    # tail to a few percent of the time (at 256 in flight, 16,384 pairs a chunk)
    chunk_rows = chunk_rows or max(SCORE_CHUNK_ROWS, 64 * config.concurrency)
    return {name: stream_source(source, name, chunk_rows) for name, source in sources.items()}


def score(
    judge: str,
    responses: Sequence[str],
    *,
    calibration: FitResult | Path | str | None = None,
    rule: str | None = None,
    out: Path | str | None = None,
    order: str = "forward",
    limit: int | None = None,
    cache: Path | str | None = None,
    progress: ProgressCallback | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    chunk_rows: int | None = None,
    anchor_judge: str | None = None,
    anchor_fraction: float | None = None,
    human_labels: Path | str | None = None,
    max_cost: float | SpendBudget | None = None,
    cluster_by: str | None = None,
    families: Mapping[str, str] | None = None,
    breakdowns: bool = True,
    trust: bool = False,
) -> ScoreResult:
    """Judge every pair of every response dataset once (streamed in chunks, resumable through the
    cache) and report raw and calibrated metrics with intervals, breakdowns and a leaderboard.

    `calibration` (required): the judge's `fit`, as a `FitResult` or the path of its calibration.json.
    `limit`: at most N pairs per response dataset (its first N). With `anchor_judge` and
    `anchor_fraction`, a second judge also judges a seeded random fraction of the pairs, and its metrics
    are estimated by PPI / PPI++ from both; `human_labels` (a labels file, long or pair_id/alignment_score
    format) serves as the anchor instead. `max_cost`: stop before the spend (USD, list price, the anchor
    included) would pass it; `progress`: receives the judging's `JudgingProgress` events (one task per
    response dataset). `cluster_by`: the column whose pairs every benchmark interval resamples together (pairs
    of one article are correlated): default `article_title` when every response dataset has it, else
    `issue_description`; "none" resamples single pairs. With two or more datasets the record holds every
    model pair's paired differences and each model's rank (stats/leaderboard.py). `families`:
    dataset name -> model family, where its model id does not say (data/families.py); a judge scoring its own
    family is warned of (logged and in `metrics.warnings`). `breakdowns=False` leaves out the breakdowns by
    category and issue scale (each group's metrics and bootstrap intervals, most of a cached run's time; no
    breakdown CSVs or report section), for a caller that reads only the models' metrics. Files are written
    only into `out` (None: none)."""
    with trusting(trust), _collector_frozen():
        started = time.perf_counter()
        if calibration is None:  # scoring rests on a fit; which one (and where it lives) is the caller's choice
            raise CalibrateError("calibration is required: the judge's fit, as a FitResult or the path of the "
                                 "calibration.json it wrote", ("calibration",))
        budget = spend_budget(max_cost)
        setup = _setup(judge, responses, order=order, limit=limit, chunk_rows=chunk_rows, anchor_judge=anchor_judge,
                       anchor_fraction=anchor_fraction, human_labels=human_labels, ready=True)
        labels = read_human_labels(human_labels, list(setup.sources)) if human_labels else {}
        column = cluster_column(setup.streams, cluster_by)
        families = check_families(families, list(setup.sources))
        fitted = calibration_inputs(setup.config, calibration)
        rule = check_rule(rule or fitted.rule)
        if rule != fitted.rule:
            raise CalibrateError(f"rule {rule}: the calibration was fitted under rule {fitted.rule}; fit judge "
                                 f"'{setup.config.name}' again with rule {rule}", ("rule",))
        same_family = {name: _same_family(setup.config, name, stream, families)
                       for name, stream in setup.streams.items()}
        return score_checked(setup, fitted, rule=rule, column=column, same_family=same_family, labels=labels,
                             out=out, limit=limit, cache=cache, progress=progress, n_boot=n_boot, seed=seed,
                             anchor_fraction=anchor_fraction, human_labels=human_labels, budget=budget,
                             breakdowns=breakdowns, started=started)


def score_checked(setup: ScoreSetup, fitted: CalibrationInputs, *, rule: str, column: str | None,
                  same_family: Mapping[str, str | None], labels: dict[str, pd.DataFrame], out: Path | str | None,
                  limit: int | None, cache: Path | str | None, progress: ProgressCallback | None, n_boot: int,
                  seed: int, anchor_fraction: float | None, human_labels: Path | str | None,
                  budget: SpendBudget | None, breakdowns: bool, started: float) -> ScoreResult:
    """`score`'s work once its inputs are checked (every response row, the calibration, the rule, the cluster
    `column`; `same_family`: each dataset's same-family warning or None): every pair judged, the metrics.
    `compare --responses` calls it with the judges, calibrations and rows the comparison checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _collector_frozen():
        config, backend, anchor_backend, sources, streams, orders = (
            setup.config, setup.backend, setup.anchor_backend, setup.sources, setup.streams, setup.orders)
        warnings: list[str] = []
        calibration_rows = fitted.rows
        out_dir = output_dir(out)
        schema = arrow_schema({"model": pa.string()})
        rows: dict[str, pd.DataFrame] = {}
        anchors: dict[str, pd.DataFrame] = {}
        run: dict[str, ModelRun] = {}
        cache_file = cache_path(cache)
        # outputs go to a temporary folder inside out, moved into it only when the whole run succeeded
        with judgments_kept(cache_file, out_dir), \
                (staged_output(out_dir) if out_dir is not None else nullcontext()) as staged:
            judgments_path = staged.dir / "judgments.parquet" if staged is not None else None
            with JudgmentStore(cache_file) as store, \
                    (pq.ParquetWriter(judgments_path, schema) if judgments_path else nullcontext()) as writer:
                pending = open_batch_requests(store, config.config_hash)
                sizers: dict[str, RequestSizer] = {}  # one per judge for the whole run: priced alike chunk by chunk
                for name, stream in streams.items():
                    if same := same_family[name]:
                        log.warning(same)
                        warnings.append(same)
                    total = stream.total if limit is None or stream.total is None else min(limit, stream.total)
                    counts: dict[str, Any] = {"judged": 0, "failed": 0, "reused": 0, "items": 0, "requests": 0}
                    parts, anchor_parts = [], []
                    expected = None if total is None else total * len(orders) + int(total * (anchor_fraction or 0))
                    with ProgressCounter(progress, f"{name}: judging with {config.name}", expected,
                                         backend.pacing(), config.concurrency) as counter:
                        for chunk in first_pairs(stream, limit):
                            warn_if_in_open_batches(store, config, chunk, orders, pending)
                            table, chunk_counts = judge_pairs(backend, chunk, store, orders=orders, counter=counter,
                                                              budget=budget, sizers=sizers)
                            table["model"] = name
                            if writer is not None:
                                columns = table.reindex(columns=schema.names)
                                writer.write_table(pa.Table.from_pandas(columns, schema=schema, preserve_index=False))
                            parts.append(benchmark.compact(table, chunk, column))
                            counts = add_counts(counts, chunk_counts)
                            if anchor_backend and anchor_fraction is not None:
                                picked = [p for p in chunk
                                          if benchmark.anchor_selected(p.content_key, anchor_fraction, seed)]
                                if picked:
                                    anchor_table, _ = judge_pairs(anchor_backend, picked, store, orders=orders[:1],
                                                                  counter=counter, budget=budget, sizers=sizers)
                                    anchor_parts.append(benchmark.compact(anchor_table))
                    rows[name] = pd.concat(parts, ignore_index=True)
                    run[name] = ModelRun(**counts, source=portable_path(stream.source),
                                         files=[portable_path(f) for f in stream.files])
                    if anchor_backend:
                        anchors[name] = (pd.concat(anchor_parts, ignore_index=True) if anchor_parts
                                         else pd.DataFrame(columns=list(benchmark.COMPACT_COLUMNS)))
                    elif labels:
                        anchors[name] = labels.get(name, pd.DataFrame(columns=list(benchmark.COMPACT_COLUMNS)))
                quarantined = store.quarantined  # stored records that failed the integrity check, judged again
            models = {}
            primaries = {name: model_rows[model_rows["order"] == orders[0]] for name, model_rows in rows.items()}
            resamples = benchmark.calibration_resamples(calibration_rows, column, n_boot, seed)  # one for all
            for name, model_rows in rows.items():
                primary = primaries[name]
                raw = benchmark.raw_metrics(primary, rule, n_boot, seed)
                corrected = benchmark.class_correction(calibration_rows, primary, rule, n_boot, seed, column,
                                                       resamples=resamples)
                audit = (benchmark.transport_audit(calibration_rows, primary, labels[name])
                         if name in labels and corrected.metrics is not None else None)
                if audit and audit.verdict == "rejected":
                    corrected = dataclasses.replace(corrected, transport="rejected")
                cost = ModelCost(input_tokens=int(model_rows["input_tokens"].sum()),
                                 output_tokens=int(model_rows["output_tokens"].sum()),
                                 cost_usd=round(float(model_rows["cost_usd"].sum()), 6),
                                 cost_usd_this_run=round(float(model_rows["cost_usd_this_run"].sum()), 6))
                anchored = (_anchored(primary, anchors[name], rule, anchor_backend, anchor_fraction, human_labels, cost,
                                      corrected.predictions) if name in anchors else None)
                recommendation = benchmark.anchor_recommendation(primary, rule)
                models[name] = ModelScore(
                    source=portable_path(sources[name]), raw=raw,
                    mapped=benchmark.mapped_pac(fitted.mapping_name, fitted.mapping, calibration_rows, primary, rule,
                                                n_boot, seed),
                    class_corrected=corrected, cost=cost, run=run[name], anchored=anchored, audit=audit,
                    headline=benchmark.headline(raw, corrected, anchored,
                                                recommendation.labels if recommendation else None),
                    anchor_recommendation=None if anchored else recommendation)
            differences = None
            if len(models) > 1:
                compared = benchmark.compare_scores(models, primaries, anchors, calibration_rows, rule,
                                                    cluster_by=column, n_boot=n_boot, seed=seed, resamples=resamples)
                differences = compared.differences
                models = {name: dataclasses.replace(model, rank=compared.ranks.get(name))
                          for name, model in models.items()}
            groups = {by: [row for name, primary in primaries.items()
                           for row in benchmark.breakdown(primary, by, rule, fitted.mapping_name, fitted.mapping,
                                                          calibration_rows, name, n_boot, seed, column,
                                                          resamples=resamples)]
                      for by in (BREAKDOWNS if breakdowns else ())}
            metrics = ScoreRecord(
                schema_version=SCORE_SCHEMA_VERSION,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                judge=judge_record(config),
                scoring_rule=rule,
                calibration=ScoreCalibration(path=portable_path(fitted.path) if fitted.path else None,
                                             created_at=fitted.created_at, mapping=fitted.mapping_name,
                                             n_pairs=int(len(calibration_rows))),
                run=ScoreRun(orders=list(orders), metrics_order=orders[0], limit_per_source=limit,
                             quarantined=quarantined, bootstrap_resamples=n_boot, seed=seed, elapsed_s=None),
                models=models,
                package_versions=package_versions(),
                differences=differences,
                clustering=benchmark.clustering(primaries, column),
                warnings=warnings or None,
            )
            metrics = dataclasses.replace(metrics, run=dataclasses.replace(
                metrics.run, elapsed_s=round(time.perf_counter() - started, 3)))
            result = ScoreResult(metrics, rows, groups)
            if staged is not None:
                result.paths = staged.final({"judgments": staged.dir / "judgments.parquet",
                                             **result._write_files(staged.dir)})
        return result


def _same_family(config: JudgeConfig, name: str, stream: PairStream, families: Mapping[str, str]) -> str | None:
    """The warning when the judge's family is the response dataset's (read from its first row), else None."""
    if config.family is None:
        return None
    first = next(iter(stream))[0]
    return same_family_warning(config.name, config.family, dataset_model(name, first),
                               dataset_family(name, first, families))


@contextmanager
def _collector_frozen() -> Iterator[None]:
    """The objects that exist when scoring starts (the scientific stack, the caller's) frozen out of the
    garbage collector: otherwise each full collection (several per 100,000 pairs) rescans them all, 0.3 s
    of CPU in a cached score of 115,000 pairs. Left as it is when someone froze objects already."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def check_score_inputs(judge: str, responses: Sequence[str], *, order: str = "forward", limit: int | None = None,
                       chunk_rows: int | None = None, anchor_judge: str | None = None,
                       anchor_fraction: float | None = None, human_labels: Path | str | None = None,
                       cluster_by: str | None = None) -> None:
    """Every input `score` checks before its work, except the calibration, and without the cache or the
    network: for a caller that makes the calibration first (the CLI runs `fit`) and must not pay for
    it when a response file or label is bad."""
    setup = _setup(judge, responses, order=order, limit=limit, chunk_rows=chunk_rows, anchor_judge=anchor_judge,
                   anchor_fraction=anchor_fraction, human_labels=human_labels, ready=False)
    if human_labels:
        read_human_labels(human_labels, list(setup.sources))
    cluster_column(setup.streams, cluster_by)


def plan_score(
    judge: str,
    responses: Sequence[str],
    *,
    order: str = "forward",
    limit: int | None = None,
    cache: Path | str | None = None,
    seed: int = 0,
    chunk_rows: int | None = None,
    anchor_judge: str | None = None,
    anchor_fraction: float | None = None,
    human_labels: Path | str | None = None,
    cluster_by: str | None = None,
    trust: bool = False,
    probe: int = 0,
    max_cost: float | SpendBudget | None = None,
    progress: ProgressCallback | None = None,
    on_quote: Callable[[list[ProbeQuote]], None] | None = None,
) -> RunPlan:
    """What `score` would send, its input loaded and checked as `score` does, with no key or network
    touched: every pair not cached, and the anchor judge's share. (A `fit` the calibration still needs
    is planned by `plan_fit`.) With `probe` N, N requests are sent first to each judge, picked from the
    first chunk of every response source, and the plan extrapolates from them (as `plan_fit`)."""
    with trusting(trust):
        setup = _setup(judge, responses, order=order, limit=limit, chunk_rows=chunk_rows, anchor_judge=anchor_judge,
                       anchor_fraction=anchor_fraction, human_labels=human_labels, ready=False)
        cluster_column(setup.streams, cluster_by)
        estimates = []
        sizers: dict[str, RequestSizer] = {}  # one per judge for the whole plan: every chunk sized alike
        probes = []
        if probe:
            firsts = [pair for stream in setup.streams.values() for pair in next(first_pairs(stream, limit), [])]
            targets = [(setup.backend, firsts, setup.orders)]
            if setup.anchor_backend and anchor_fraction is not None:
                targets.append((setup.anchor_backend, [p for p in firsts if benchmark.anchor_selected(
                    p.content_key, anchor_fraction, seed)], setup.orders[:1]))
            probes = probe_judging(targets, probe, cache=cache, budget=spend_budget(max_cost), sizers=sizers,
                                   progress=progress, on_quote=on_quote)
        with plan_store(cache) as store:
            for stream in setup.streams.values():
                for chunk in first_pairs(stream, limit):
                    estimates.extend(estimate_judging(setup.backend, chunk, store, setup.orders, sizers=sizers))
                    if setup.anchor_backend and anchor_fraction is not None:
                        picked = [p for p in chunk if benchmark.anchor_selected(p.content_key, anchor_fraction, seed)]
                        estimates.extend(estimate_judging(setup.anchor_backend, picked, store, setup.orders[:1],
                                                          sizers=sizers))
        return RunPlan("score", combined(estimates), probes=probes)


CLUSTER_DEFAULTS = ("article_title", "issue_description")  # the default cluster column: the first all datasets have
NO_CLUSTERS = "none"


def cluster_column(streams: dict[str, PairStream], cluster_by: str | None) -> str | None:
    """The column whose pairs the benchmark intervals resample together, checked against the first chunk of
    every response dataset before anything is judged: `cluster_by` (None: the first of CLUSTER_DEFAULTS that
    every dataset has; NO_CLUSTERS: single pairs, None)."""
    if cluster_by == NO_CLUSTERS:
        return None
    firsts = {name: next(iter(stream), []) for name, stream in streams.items()}

    def has(pairs: list[Pair], column: str) -> bool:
        return any(column in pair.extras or hasattr(pair, column) for pair in pairs)

    if cluster_by is None:
        return next(column for column in CLUSTER_DEFAULTS if all(has(pairs, column) for pairs in firsts.values()))
    for name, pairs in firsts.items():
        if not has(pairs, cluster_by):
            raise CalibrateError(f"cluster_by: response dataset '{name}' has no column '{cluster_by}' (name a "
                                 f"column of the data, or '{NO_CLUSTERS}' to resample single pairs)", ("cluster_by",))
    return cluster_by


def _anchor_backend(anchor_judge: str | None, fraction: float | None, labels: Path | str | None) -> Backend | None:
    """The anchor judge's backend (checked with the judge's, before any work), or None."""
    if anchor_judge and labels:
        raise CalibrateError("anchor_judge and human_labels: give one anchor, not both",
                             ("anchor_judge", "human_labels"))
    if anchor_judge is None:
        if fraction is not None:
            raise CalibrateError("anchor_fraction needs anchor_judge", ("anchor_fraction", "anchor_judge"))
        return None
    if fraction is None or not 0 < fraction <= 1:
        raise CalibrateError("anchor_fraction must be a number in (0, 1] with anchor_judge",
                             ("anchor_fraction", "anchor_judge"))
    return make_backend(load_judge_config(anchor_judge))


def _anchored(primary: pd.DataFrame, anchor: pd.DataFrame, rule: str, backend: Backend | None,
              fraction: float | None, labels: Path | str | None, cheap_cost: ModelCost,
              predictions: dict[str, dict[str, float | None]] | None) -> benchmark.Anchored:
    """The anchor's metrics by PPI (on the judge's raw and calibrated predictions), and what the cheap
    judge saved against running the anchor on every pair."""
    estimates = benchmark.anchored_estimates(
        primary, anchor, rule, anchor_name=backend.config.name if backend else f"human labels ({labels})",
        basis=benchmark.BASIS_ANCHOR_JUDGE if backend else benchmark.BASIS_HUMAN, fraction=fraction,
        predictions=predictions)
    if backend is None or not len(anchor):
        return estimates
    per_pair = float(anchor["cost_usd"].mean())
    total_pairs = estimates.n_labeled + estimates.n_unlabeled
    spent = float(anchor["cost_usd"].sum())
    return dataclasses.replace(estimates, cost=AnchorCost(
        anchor_usd=round(spent, 6), anchor_on_every_pair_usd=round(per_pair * total_pairs, 6),
        cheap_usd=cheap_cost.cost_usd, saved_usd=round(per_pair * total_pairs - spent - cheap_cost.cost_usd, 6)))


def plan_labels(metrics: Path | str, *, half_width: float = 5.0, price_per_label: float | None = None
                ) -> benchmark.LabelPlan:
    """How many human labels would give each model's PAC and REF within +-half_width points, drawn at random
    or stratified by the judge's judged class, and their cost at `price_per_label` (benchmark.label_budget),
    from a score run's metrics.json (`metrics`: the file or its folder)."""
    import json

    if not half_width > 0:
        raise CalibrateError("half_width must be a positive number of points", ("half_width",))
    if price_per_label is not None and not price_per_label >= 0:
        raise CalibrateError("price_per_label must be a non-negative amount", ("price_per_label",))
    path = Path(metrics)
    path = path / "metrics.json" if path.is_dir() else path
    try:
        record = benchmark.ScoreRecord.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CalibrateError(f"metrics {path}: no such file (a `score` run's metrics.json)", ("metrics",)) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CalibrateError(f"metrics {path}: not a score run's metrics.json ({str(error)[:120]})",
                             ("metrics",)) from None
    return benchmark.label_plan(record, half_width, price_per_label)
