"""`score`: apply a calibrated judge to response datasets: every pair judged once (streamed in
chunks, resumable through the cache, cost-tracked), with one headline estimate per metric (PPI++ with
an anchor, else class-corrected), raw, class-corrected and (diagnostic) mapped metrics,
intervals, breakdowns by category and issue scale, a leaderboard, and optionally an anchor judge or
human labels for prediction-powered estimates. Returns a `ScoreResult`."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.data.sources import portable_path, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.config import JudgeConfig
from calibrate.judging.base import Backend
from calibrate.judging.estimate import RequestSizer, SpendBudget
from calibrate.judging.preflight import check_ready
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import add_counts, arrow_schema, judge_pairs, progress_bar
from calibrate.stats import benchmark
from calibrate.stats.benchmark import leaderboard
from calibrate.stats.calibration import Calibration
from calibrate.stats.metrics import DEFAULT_BOOTSTRAP
from calibrate.stats.rules import check_rule
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.batch import open_batch_requests, warn_if_in_open_batches
from calibrate.workflows.common import (
    REPORTS_DIR,
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
from calibrate.workflows.fit import fit, plan_fit, read_calibration_record
from calibrate.workflows.plan import RunPlan, combined, estimate_judging, plan_store, spend_budget

log = logging.getLogger("calibrate")
SCORE_SCHEMA_VERSION = 1
SCORE_CHUNK_ROWS = 2000  # at least; more for judges with many requests in flight


@dataclass
class ScoreResult:
    """What `calibrate score` produced: the metrics record, the compact judgments per model, file paths."""

    metrics: dict
    rows: dict[str, pd.DataFrame]
    breakdowns: dict[str, pd.DataFrame] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, dict]:
        """Per model: the headline per metric, raw, class-corrected and mapped (diagnostic) metrics with
        intervals, cost, anchored estimates."""
        return self.metrics["models"]

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
        from calibrate.reports.score import write_score_report

        paths = {"metrics": out / "metrics.json"}
        write_json(paths["metrics"], self.metrics)
        for by, table in self.breakdowns.items():
            paths[f"by_{by}"] = out / f"breakdown_{by}.csv"
            table.to_csv(paths[f"by_{by}"], index=False)
        if len(self.models) > 1:
            paths["leaderboard"] = out / "leaderboard.csv"
            self.leaderboard.to_csv(paths["leaderboard"], index=False)
        paths.update(write_score_report(self.metrics, self.breakdowns, out))
        return paths


def calibration_path(config: JudgeConfig, calibration: Path | str | None) -> Path:
    """Where the judge's calibration is: `calibration`, which must exist, or reports/<judge>/, where
    `calibrate fit` writes it (missing there: `score` runs `fit` first)."""
    path = Path(calibration) if calibration else REPORTS_DIR / config.name / "calibration.json"
    if calibration and not path.exists():
        raise CalibrateError(f"calibration {path}: no such file", ("calibration",))
    return path


def calibration_for(config: JudgeConfig, calibration: Path | str | None, cache: Path | str | None,
                    show_progress: bool, budget: SpendBudget | None = None) -> tuple[Calibration, pd.DataFrame, Path]:
    """The judge's calibration record and per-pair calibration judgments. Without --calibration, the
    one `calibrate fit` writes to reports/<judge>/ is used, and made first if it does not exist."""
    path = calibration_path(config, calibration)
    if not path.exists():
        log.warning("no calibration for judge '%s' at %s: running `calibrate fit --judge %s` first",
                    config.name, path, config.name)
        fit(str(config.path), out=path.parent, cache=cache, show_progress=show_progress, max_cost=budget)
    record = read_calibration_record(path)
    if record.judge.config_hash != config.config_hash:
        raise CalibrateError(f"calibration {path}: made for judge config {record.judge.config_hash}, "
                             f"not {config.config_hash} (the judge changed since); run `calibrate fit` again",
                             ("calibration",))
    judgments = path.parent / "judgments.parquet"
    try:
        rows = pd.read_parquet(judgments)
    except Exception as error:  # pyarrow and the OS raise many types for one cause
        raise CalibrateError(f"calibration: cannot read {judgments}, written beside it by `calibrate fit` "
                             f"({str(error).splitlines()[0][:120]})", ("calibration",)) from None
    keep = (rows["order"] == record.run.metrics_order) & rows["set_name"].isin(CALIBRATION_SETS)
    if "repeat" in rows:
        keep &= rows["repeat"] == 0
    return record, rows[keep], path


def score(
    judge: str,
    responses: Sequence[str],
    calibration: Path | str | None = None,
    rule: str | None = None,
    out: Path | str | None = None,
    order: str = "forward",
    limit: int | None = None,
    cache: Path | str | None = None,
    show_progress: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    chunk_rows: int | None = None,
    anchor_judge: str | None = None,
    anchor_fraction: float | None = None,
    anchor_labels: Path | str | None = None,
    max_cost: float | SpendBudget | None = None,
    dry_run: bool = False,
) -> ScoreResult | RunPlan:
    """Judge every pair of every response dataset once (streamed in chunks, resumable through the
    cache) and report raw and calibrated metrics with intervals, breakdowns and a leaderboard.

    With `anchor_judge` and `anchor_fraction`, a second judge also judges a seeded random fraction of
    the pairs, and its metrics are estimated by PPI / PPI++ from both; `anchor_labels` (human labels
    of some pairs) serves as the anchor instead. `max_cost`: stop before the spend (USD, list price,
    a `fit` run first and the anchor included) would pass it; `dry_run`: send nothing, return the `RunPlan`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    budget = spend_budget(max_cost)
    config = load_judge_config(judge)
    backend = make_backend(config)
    anchor_backend = _anchor_backend(anchor_judge, anchor_fraction, anchor_labels)
    if not dry_run:
        check_ready([backend, *([anchor_backend] if anchor_backend else [])])
    sources = response_sources(responses)
    orders = orders_of(order)
    check_limit(limit, per="source")
    # A chunk ends with the judge's workers draining; chunks of many times its concurrency keep that
    # tail to a few percent of the time (at 256 in flight, 16,384 pairs a chunk)
    chunk_rows = chunk_rows or max(SCORE_CHUNK_ROWS, 64 * config.concurrency)
    streams = {name: stream_source(source, name, chunk_rows) for name, source in sources.items()}
    for stream in streams.values():
        stream.validate(limit)  # every row checked (streamed, nothing kept) before anything is spent or written
    if dry_run:
        return _plan(config, backend, streams, limit, orders, calibration, cache, anchor_backend, anchor_fraction,
                     seed)
    labels = benchmark.load_anchor_labels(Path(anchor_labels), list(sources)) if anchor_labels else {}
    out_dir = output_dir(out)
    record, calibration_rows, calibration_path = calibration_for(config, calibration, cache, show_progress, budget)
    rule = check_rule(rule or record.scoring_rule)
    if rule != record.scoring_rule:
        raise CalibrateError(f"rule {rule}: the calibration at {calibration_path} was fitted under rule "
                             f"{record.scoring_rule}; fit judge '{config.name}' again with rule {rule}", ("rule",))
    schema = arrow_schema({"model": pa.string()})
    rows: dict[str, pd.DataFrame] = {}
    anchors: dict[str, pd.DataFrame] = {}
    run: dict[str, dict] = {}
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
                total = stream.total if limit is None or stream.total is None else min(limit, stream.total)
                counts = {"judged": 0, "failed": 0, "reused": 0, "items": 0, "requests": 0}
                parts, anchor_parts = [], []
                expected = None if total is None else total * len(orders) + int(total * (anchor_fraction or 0))
                with progress_bar(show_progress, f"{name}: judging with {config.name}", expected, backend.pacing()) as show:
                    for chunk in first_pairs(stream, limit):
                        warn_if_in_open_batches(store, config, chunk, orders, pending)
                        table, chunk_counts = judge_pairs(backend, chunk, store, orders=orders, progress=show,
                                                          budget=budget, sizers=sizers)
                        table["model"] = name
                        if writer is not None:
                            writer.write_table(pa.Table.from_pandas(table.reindex(columns=schema.names), schema=schema,
                                                                    preserve_index=False))
                        parts.append(benchmark.compact(table))
                        counts = add_counts(counts, chunk_counts)
                        if anchor_backend:
                            picked = [p for p in chunk
                                      if benchmark.anchor_selected(p.content_key, anchor_fraction, seed)]
                            if picked:
                                anchor_table, _ = judge_pairs(anchor_backend, picked, store, orders=orders[:1],
                                                              progress=show, budget=budget, sizers=sizers)
                                anchor_parts.append(benchmark.compact(anchor_table))
                rows[name] = pd.concat(parts, ignore_index=True)
                run[name] = {**counts, "source": portable_path(stream.source),
                             "files": [portable_path(f) for f in stream.files]}
                if anchor_backend:
                    anchors[name] = (pd.concat(anchor_parts, ignore_index=True) if anchor_parts
                                     else pd.DataFrame(columns=list(benchmark.COMPACT_COLUMNS)))
                elif labels:
                    anchors[name] = labels.get(name, pd.DataFrame(columns=list(benchmark.COMPACT_COLUMNS)))
            quarantined = store.quarantined  # stored records that failed the integrity check, judged again
        models = {}
        for name, model_rows in rows.items():
            primary = model_rows[model_rows["order"] == orders[0]]
            models[name] = {
                "source": portable_path(sources[name]),
                "raw": benchmark.raw_metrics(primary, rule, n_boot, seed),
                "mapped": benchmark.mapped_pac(record, calibration_rows, primary, rule, n_boot, seed),
                "class_corrected": benchmark.class_correction(calibration_rows, primary, rule, n_boot, seed),
                "cost": {"input_tokens": int(model_rows["input_tokens"].sum()),
                         "output_tokens": int(model_rows["output_tokens"].sum()),
                         "cost_usd": round(float(model_rows["cost_usd"].sum()), 6),
                         "cost_usd_this_run": round(float(model_rows["cost_usd_this_run"].sum()), 6)},
                "run": run[name],
            }
            if name in anchors:
                models[name]["anchored"] = _anchored_record(primary, anchors[name], rule, anchor_backend,
                                                            anchor_fraction, anchor_labels, models[name]["cost"])
            model = models[name]
            model["headline"] = benchmark.headline(model["raw"], model["class_corrected"], model.get("anchored"),
                                                   model.get("anchored", {}).get("anchor"))
            if "anchored" not in model:
                model["anchor_recommendation"] = benchmark.anchor_recommendation(primary, rule)
        breakdowns = {by: pd.concat([benchmark.breakdown(r[r["order"] == orders[0]], by, rule, record, calibration_rows,
                                                       n_boot, seed).assign(model=name)
                                     for name, r in rows.items()], ignore_index=True)
                      for by in ("category", "issue_scale")}
        metrics = {
            "schema_version": SCORE_SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "judge": judge_record(config).to_dict(),
            "scoring_rule": rule,
            "calibration": {"path": portable_path(calibration_path), "created_at": record.created_at,
                            "mapping": record.mapping.selected, "n_pairs": int(len(calibration_rows))},
            "run": {"orders": list(orders), "metrics_order": orders[0], "limit_per_source": limit,
                    "quarantined": quarantined, "bootstrap_resamples": n_boot, "seed": seed, "elapsed_s": None},
            "models": models,
            "package_versions": package_versions(),
        }
        metrics["run"]["elapsed_s"] = round(time.perf_counter() - started, 3)
        result = ScoreResult(metrics, rows, breakdowns)
        if staged is not None:
            result.paths = staged.final({"judgments": judgments_path, **result._write_files(staged.dir)})
    return result


def _anchor_backend(anchor_judge: str | None, fraction: float | None, labels: Path | str | None):
    """The anchor judge's backend (checked with the judge's, before any work), or None."""
    if anchor_judge and labels:
        raise CalibrateError("anchor_judge and anchor_labels: give one anchor, not both",
                             ("anchor_judge", "anchor_labels"))
    if anchor_judge is None:
        if fraction is not None:
            raise CalibrateError("anchor_fraction needs anchor_judge", ("anchor_fraction", "anchor_judge"))
        return None
    if fraction is None or not 0 < fraction <= 1:
        raise CalibrateError("anchor_fraction must be a number in (0, 1] with anchor_judge",
                             ("anchor_fraction", "anchor_judge"))
    return make_backend(load_judge_config(anchor_judge))


def _plan(config: JudgeConfig, backend: Backend, streams: dict, limit: int | None, orders: tuple[str, ...],
          calibration: Path | str | None, cache: Path | str | None, anchor_backend: Backend | None,
          anchor_fraction: float | None, seed: int) -> RunPlan:
    """What `score` would send: a `fit` first when the calibration is missing, every pair not cached,
    and the anchor judge's share."""
    estimates, notes = [], []
    path = calibration_path(config, calibration)
    if not path.exists():
        first = plan_fit(str(config.path), cache=cache)
        estimates.extend(first.estimates)
        notes.append(f"no calibration at {path}: `fit` runs first ({first.requests} of the requests)")
    sizers: dict[str, RequestSizer] = {}  # one per judge for the whole plan: every chunk sized alike
    with plan_store(cache) as store:
        for stream in streams.values():
            for chunk in first_pairs(stream, limit):
                estimates.extend(estimate_judging(backend, chunk, store, orders, sizers=sizers))
                if anchor_backend:
                    picked = [p for p in chunk if benchmark.anchor_selected(p.content_key, anchor_fraction, seed)]
                    estimates.extend(estimate_judging(anchor_backend, picked, store, orders[:1], sizers=sizers))
    return RunPlan("score", combined(estimates), notes)


def _anchored_record(primary: pd.DataFrame, anchor: pd.DataFrame, rule: str, backend,
                     fraction: float | None, labels: Path | str | None, cheap_cost: dict) -> dict:
    """The anchor's metrics by PPI, and what the cheap judge saved against running the anchor on every pair."""
    estimates = benchmark.anchored_estimates(primary, anchor, rule)
    record = {"anchor": backend.config.name if backend else f"human labels ({labels})", "fraction": fraction,
              **estimates}
    if backend is not None and len(anchor):
        per_pair = float(anchor["cost_usd"].mean())
        total_pairs = estimates["n_labeled"] + estimates["n_unlabeled"]
        record["cost"] = {"anchor_usd": round(float(anchor["cost_usd"].sum()), 6),
                          "anchor_on_every_pair_usd": round(per_pair * total_pairs, 6),
                          "cheap_usd": cheap_cost["cost_usd"],
                          "saved_usd": round(per_pair * total_pairs - float(anchor["cost_usd"].sum())
                                             - cheap_cost["cost_usd"], 6)}
    return record
