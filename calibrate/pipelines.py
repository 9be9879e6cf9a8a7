"""Pipelines compose the layers: one function per command, callable from notebooks too."""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from calibrate import __version__, scoring
from calibrate.data import CALIBRATION_SETS, LoadedSet, Pair, load_calibration_sets
from calibrate.errors import CalibrateError
from calibrate.injection import INJECTION_BASE, INJECTION_SET, injection_shift
from calibrate.judging.backends import make_backend
from calibrate.judging.config import JudgeConfig, load_judge_config
from calibrate.judging.runner import judge_pairs
from calibrate.mapping import (
    IsotonicMap,
    ScoreMapping,
    TwoPointLinearMap,
    cross_validate,
)
from calibrate.metrics import (
    DEFAULT_BOOTSTRAP,
    confusion_matrix,
    order_effect,
    set_report,
)
from calibrate.provider_batch import open_batch_requests, warn_if_in_open_batches
from calibrate.rules import SET_TRUTH, adjusted_scores, check_rule
from calibrate.store import JudgmentStore, default_cache_path

CALIBRATION_SCHEMA_VERSION = 1
COMPARISON_SCHEMA_VERSION = 1
BASELINE_BACKENDS = ("heuristic", "constant")
MAPPING_SELECTION_RULE = (
    "lowest k-fold cross-validated worst-set PAC error; ties go to the simpler mapping "
    "(identity, then two-point linear, then isotonic)"
)
log = logging.getLogger("calibrate")
REPORTED_PACKAGES = ("calibrate", "numpy", "pandas", "scikit-learn", "datasets", "pyarrow", "matplotlib")


@dataclass
class FitResult:
    """Everything `calibrate fit` produced: the calibration record, the judgment table, file paths."""

    calibration: dict
    judgments: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)


FIT_SETS = (*CALIBRATION_SETS, INJECTION_SET)


def fit(
    judge: str,
    data: str = "sample",
    sets: Sequence[str] = FIT_SETS,
    rule: str | None = None,
    out: Path | str | None = None,
    limit: int | None = None,
    seed: int = 0,
    cache: Path | str | None = None,
    show_progress: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
    n_folds: int = 5,
    order: str = "forward",
) -> FitResult:
    """Judge the calibration sets, measure each set against its expected values, fit score mappings.

    Loads and validates every set before any judging; writes calibration.json, judgments.parquet,
    report.md and report.html into `out` (default reports/<judge>/).
    """
    started = time.perf_counter()
    config = load_judge_config(judge)
    backend = make_backend(config)
    backend.preflight()  # a missing API key fails here, before any work
    rule = check_rule(rule or config.rule)
    orders = orders_of(order)
    loaded = _load_sets(data, sets, limit, seed)
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs]
    out_dir = _output_dir(Path(out) if out else Path("reports") / config.name)
    cache_path = Path(cache) if cache else default_cache_path()
    with JudgmentStore(cache_path) as store:
        warn_if_in_open_batches(store, config, pairs, orders, open_batch_requests(store, config.config_hash))
        table, counts = judge_pairs(backend, pairs, store, orders=orders, show_progress=show_progress)

    # Metrics use one order per pair (forward when it was run); both orders feed the order effect.
    primary = table[table["order"] == orders[0]]
    set_reports = {
        name: set_report(primary[primary["set_name"] == name], name, rule, n_boot, seed)
        for name in loaded
    }
    # Robustness sets are reported, but the headline and the mapping rest on the calibration sets.
    calibration_reports = {name: report for name, report in set_reports.items() if name in CALIBRATION_SETS}
    calibration_rows = primary[primary["set_name"].isin(CALIBRATION_SETS)]
    if not (calibration_rows["parse_status"] == "ok").any():
        # nothing to measure or fit: keep the paid-for failures visible, and stop with one line
        table.to_parquet(out_dir / "judgments.parquet", index=False)
        reasons = ", ".join(f"{k} {v}" for k, v in table["parse_status"].value_counts().items())
        raise CalibrateError(f"judge '{config.name}': none of the {len(calibration_rows)} calibration pairs was judged "
                             f"({reasons}); the failures and their reasons are in {out_dir / 'judgments.parquet'} "
                             "and the cache's failure log; fix the judge (or its server) and run again")
    calibration = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "judge": _judge_record(config),
        "scoring_rule": rule,
        "data": {
            "source": data, "limit_per_set": limit, "seed": seed,
            "sets": {name: {"source": s.source, "files": s.files, "fingerprint": s.fingerprint,
                            "n_pairs": len(s.pairs)} for name, s in loaded.items()},
        },
        "run": {**counts, "orders": list(orders), "metrics_order": orders[0], "cache": str(cache_path),
                "bootstrap_resamples": n_boot, "elapsed_s": None},
        "accounting": accounting(table, config, counts["requests"]),
        "sets": set_reports,
        "summary": summarise(calibration_reports),
        "confusion_matrix": confusion_matrix(calibration_reports).to_dict(orient="index"),
        "order_effect": order_effect(table) if len(orders) == 2 else None,
        "injection": injection_shift(primary, n_boot, seed),
        "mapping": fit_mappings(calibration_rows, rule, n_folds, seed),
        "package_versions": _package_versions(),
    }
    calibration["run"]["elapsed_s"] = round(time.perf_counter() - started, 3)
    result = FitResult(calibration=calibration, judgments=table)
    result.paths = write_fit_outputs(result, out_dir)
    return result


def _output_dir(out_dir: Path) -> Path:
    """Create the output folder before any judging, so a bad --out costs nothing."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CalibrateError(f"--out {out_dir}: cannot create it ({error.strerror})") from None
    return out_dir


def _load_sets(data: str, sets: Sequence[str], limit: int | None, seed: int) -> dict[str, LoadedSet]:
    """Load and validate the sets; with a limit keep a seeded random `limit` pairs per set, in order."""
    if limit is not None and limit < 1:
        raise CalibrateError("--limit must be a positive number of pairs per set")
    if not any(name in CALIBRATION_SETS for name in sets):
        raise CalibrateError(f"--sets: name at least one calibration set ({', '.join(CALIBRATION_SETS)})")
    loaded = load_calibration_sets(data, sets)
    if limit is None:
        return loaded
    for loaded_set in loaded.values():
        # one generator per set, so a set's pairs do not depend on which other sets were asked for;
        # the injection set keeps the same pairs as the unaligned-0 it was built from
        name = INJECTION_BASE if loaded_set.name == INJECTION_SET else loaded_set.name
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if len(loaded_set.pairs) > limit:
            keep = sorted(rng.choice(len(loaded_set.pairs), size=limit, replace=False))
            loaded_set.pairs = [loaded_set.pairs[i] for i in keep]
    return loaded


def _judge_record(config: JudgeConfig) -> dict:
    return {
        "name": config.name, "backend": config.backend, "config_hash": config.config_hash,
        "config_path": str(config.path), "description": config.description, "judge_rule": config.rule,
        "baseline": is_baseline(config),
    }


def is_baseline(config: JudgeConfig) -> bool:
    """Offline judges (keyword heuristics, constants) and panels made only of them are baselines."""
    if config.backend == "panel":
        return all(is_baseline(member.config) for member in make_backend(config).members)
    return config.backend in BASELINE_BACKENDS


def orders_of(order: str) -> tuple[str, ...]:
    """`--order forward|reverse|both` as the orders to run, the metrics order first."""
    choices = {"forward": ("forward",), "reverse": ("reverse",), "both": ("forward", "reverse")}
    if order not in choices:
        raise CalibrateError(f"--order must be forward, reverse or both, got {order!r}")
    return choices[order]


def accounting(table: pd.DataFrame, config: JudgeConfig, requests_this_run: int) -> dict:
    """Tokens, cost at the judges' prices, latency and failures, for all judgments and for this run."""
    unique = table.drop_duplicates(["item_key", "order", "repeat"])
    latency = unique.loc[unique["parse_status"] == "ok", "latency_s"]
    return {
        "input_tokens": int(unique["input_tokens"].sum()),
        "output_tokens": int(unique["output_tokens"].sum()),
        "cost_usd": round(float(unique["cost_usd"].sum()), 6),
        "cost_usd_this_run": round(float(unique["cost_usd_this_run"].sum()), 6),
        "requests_this_run": int(requests_this_run),
        "mean_cost_usd_per_judgment": round(float(unique["cost_usd"].mean()), 8) if len(unique) else None,
        "latency_s": {"mean": _stat(latency.mean()), "p50": _stat(latency.quantile(0.5)),
                      "p95": _stat(latency.quantile(0.95))},
        "judged": int((unique["parse_status"] == "ok").sum()),
        "failed": int((unique["parse_status"] != "ok").sum()),
        "failures_by_reason": unique.loc[unique["parse_status"] != "ok", "parse_status"].value_counts().to_dict(),
        "truncated_answers": int((unique["truncated_chars"] > 0).sum()),
        "prices_usd_per_mtok": {"input": config.price_input_per_mtok, "output": config.price_output_per_mtok},
    }


def _stat(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 6)


def summarise(set_reports: dict[str, dict]) -> dict:
    """Headline numbers: how far the judge lands from the known answers over all sets."""
    pac_errors = {name: r["metrics"]["PAC"].get("error") for name, r in set_reports.items()}
    finite = [abs(e) for e in pac_errors.values() if e is not None]
    judged = sum(r["n_judged"] for r in set_reports.values())
    correct = sum(r["classification"]["judged_counts"][r["classification"]["expected_class"]]
                  for r in set_reports.values())
    total = sum(r["n_pairs"] for r in set_reports.values())
    return {
        "pac_error_by_set": pac_errors,
        "max_abs_pac_error": max(finite) if finite else None,
        "mean_abs_pac_error": round(float(np.mean(finite)), 4) if finite else None,
        "class_accuracy": round(100.0 * correct / total, 4) if total else None,
        "n_pairs": total,
        "n_judged": judged,
        "n_failed": total - judged,
    }


def mapping_inputs(table: pd.DataFrame, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x: the judge's refusal-adjusted score; y: its set's expected adjusted score; the set names."""
    ok = table[table["parse_status"] == "ok"]
    x = adjusted_scores(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                        ok["person_2_refusal"].to_numpy(bool), rule)
    sets = ok["set_name"].to_numpy()
    y = np.array([SET_TRUTH[name].adjusted_score(rule) for name in sets])
    return x, y, sets


def fit_mappings(table: pd.DataFrame, rule: str, n_folds: int = 5, seed: int = 0) -> dict:
    """Fit each candidate mapping on all calibration judgments, validate it, select one."""
    x, y, sets = mapping_inputs(table, rule)
    candidates: dict[str, dict] = {}
    for mapping in (ScoreMapping(), TwoPointLinearMap(), IsotonicMap()):
        try:
            fitted = mapping.clone().fit(x, y, sets)
            candidates[mapping.kind] = {"mapping": fitted.to_dict(),
                                        "validation": cross_validate(mapping, x, y, sets, n_folds, seed)}
        except CalibrateError as reason:
            candidates[mapping.kind] = {"mapping": None, "skipped": str(reason)}
    scored = [(c["validation"]["k_fold"].get("max_abs_pac_error"), order, kind)
              for order, (kind, c) in enumerate(candidates.items()) if c.get("mapping")]
    scored = [s for s in scored if s[0] is not None]
    selected = min(scored)[2] if scored else "identity"
    return {"selected": selected, "selection_rule": MAPPING_SELECTION_RULE, "n_pairs": int(len(x)),
            "candidates": candidates}


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = __version__ if name == "calibrate" else "not installed"
    return versions


def write_fit_outputs(result: FitResult, out_dir: Path) -> dict[str, Path]:
    """Write calibration.json, judgments.parquet and the reports; returns their paths."""
    from calibrate.report import write_fit_report

    paths = {"calibration": out_dir / "calibration.json", "judgments": out_dir / "judgments.parquet"}
    paths["calibration"].write_text(json.dumps(result.calibration, indent=2, ensure_ascii=False) + "\n")
    result.judgments.to_parquet(paths["judgments"], index=False)
    paths.update(write_fit_report(result.calibration, result.judgments, out_dir))
    return paths


DEFAULT_BASELINES = ("always-0", "always-aligned", "heuristic")
COMPARISON_SETS = FIT_SETS


@dataclass
class CompareResult:
    """What `calibrate compare` produced: the comparison record, each judge's judgment table, file paths."""

    comparison: dict
    judgments: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)


def compare(
    judges: Sequence[str],
    data: str = "sample",
    sets: Sequence[str] = COMPARISON_SETS,
    rule: str = "v2",
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

    Every config is loaded and every API key checked before any judging; writes comparison.json,
    comparison.csv, judgments.parquet, report.md and report.html into `out` (default reports/comparison/).
    """
    from calibrate import comparison as cmp

    started = time.perf_counter()
    rule = check_rule(rule)
    if repeats < 1:
        raise CalibrateError("--repeats must be at least 1")
    if not judges:
        raise CalibrateError("--judges: name at least one judge to compare")
    names = list(dict.fromkeys([*judges, *(DEFAULT_BASELINES if baselines else ())]))
    if len(names) < 2:
        raise CalibrateError("--judges: a comparison needs two judges or more (with --no-baselines, name them all)")
    configs = [load_judge_config(name) for name in names]
    seen: dict[str, str] = {}
    for config in configs:
        if config.name in seen:
            raise CalibrateError(f"--judges: two judges are named '{config.name}' ({seen[config.name]}, {config.path})")
        seen[config.name] = str(config.path)
    backends = [make_backend(config) for config in configs]
    for backend in backends:
        backend.preflight()  # every missing key is found before anything is spent
    labels = cmp.load_human_labels(human) if human else None
    orders = orders_of(order)
    loaded = _load_sets(data, sets, limit, seed)
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs]
    out_dir = _output_dir(Path(out) if out else Path("reports") / "comparison")
    cache_path = Path(cache) if cache else default_cache_path()
    runs = []
    with JudgmentStore(cache_path) as store:
        for config, backend in zip(configs, backends, strict=True):
            table, counts = judge_pairs(backend, pairs, store, orders=orders, show_progress=show_progress,
                                        repeats=repeats)
            runs.append(cmp.JudgeRun(config, table, counts, baseline=is_baseline(config)))
    set_names = list(loaded)
    calibration_sets = [name for name in set_names if name in CALIBRATION_SETS]
    per_judge = {run.name: cmp.judge_summary(run, rule, set_names, orders, n_boot, seed) for run in runs}
    comparison = {
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scoring_rule": rule,
        "data": {"source": data, "limit_per_set": limit, "seed": seed,
                 "sets": {name: {"source": s.source, "fingerprint": s.fingerprint, "n_pairs": len(s.pairs)}
                          for name, s in loaded.items()}},
        "run": {"orders": list(orders), "metrics_order": orders[0], "repeats": repeats, "cache": str(cache_path),
                "bootstrap_resamples": n_boot, "elapsed_s": None,
                "counts": {run.name: run.counts for run in runs}},
        "judges": per_judge,
        "between_judges": cmp.between_judges(runs, orders[0], calibration_sets, n_boot, seed),
        "humans": cmp.against_humans(runs, labels, orders[0], n_boot, seed) if labels is not None else None,
        "recommendation": cmp.recommend(per_judge),
        "package_versions": _package_versions(),
    }
    comparison["run"]["elapsed_s"] = round(time.perf_counter() - started, 3)
    result = CompareResult(comparison, pd.concat([run.table for run in runs], ignore_index=True))
    result.paths = write_compare_outputs(result, out_dir)
    return result


def write_compare_outputs(result: CompareResult, out_dir: Path) -> dict[str, Path]:
    """Write comparison.json, comparison.csv, judgments.parquet and the reports; returns their paths."""
    from calibrate.compare_report import write_compare_report
    from calibrate.comparison import leaderboard

    paths = {"comparison": out_dir / "comparison.json", "leaderboard": out_dir / "comparison.csv",
             "judgments": out_dir / "judgments.parquet"}
    paths["comparison"].write_text(json.dumps(result.comparison, indent=2, ensure_ascii=False) + "\n")
    leaderboard(result.comparison["judges"]).to_csv(paths["leaderboard"], index=False)
    result.judgments.to_parquet(paths["judgments"], index=False)
    paths.update(write_compare_report(result.comparison, out_dir))
    return paths


SCORE_SCHEMA_VERSION = 1
SCORE_CHUNK_ROWS = 2000  # at least; more for judges with many requests in flight


@dataclass
class ScoreResult:
    """What `calibrate score` produced: the metrics record, the compact judgments per model, file paths."""

    metrics: dict
    rows: dict[str, pd.DataFrame]
    paths: dict[str, Path] = field(default_factory=dict)


def response_sources(sources: Sequence[str]) -> dict[str, str]:
    """Model name -> source, for `--responses`; `sample` stands for every bundled sample model."""
    from calibrate.data import sample_path, sample_response_models

    named: dict[str, str] = {}
    for source in sources:
        expanded = ([(m, str(sample_path("responses", m))) for m in sample_response_models()] if source == "sample"
                    else [(_source_name(source), source)])
        for name, path in expanded:
            if name in named:
                raise CalibrateError(f"--responses: two sources are named '{name}' ({named[name]}, {path}); "
                                     "rename one file or folder")
            named[name] = path
    if not named:
        raise CalibrateError("--responses: name at least one response dataset")
    return named


def _source_name(source: str) -> str:
    path = Path(source.rstrip("/"))
    return path.stem if path.suffix else path.name


def calibration_for(config: JudgeConfig, calibration: Path | str | None, cache: Path | str | None,
                    show_progress: bool) -> tuple[dict, pd.DataFrame, Path]:
    """The judge's calibration record and per-pair calibration judgments. Without --calibration, the
    one `calibrate fit` writes to reports/<judge>/ is used, and made first if it does not exist."""
    path = Path(calibration) if calibration else Path("reports") / config.name / "calibration.json"
    if not path.exists():
        if calibration:
            raise CalibrateError(f"--calibration {path}: no such file")
        log.warning("no calibration for judge '%s' at %s: running `calibrate fit --judge %s` first",
                    config.name, path, config.name)
        fit(str(config.path), out=path.parent, cache=cache, show_progress=show_progress)
    record = load_calibration(path)
    if record["judge"]["config_hash"] != config.config_hash:
        raise CalibrateError(f"--calibration {path}: made for judge config {record['judge']['config_hash']}, "
                             f"not {config.config_hash} (the judge changed since); run `calibrate fit` again")
    judgments = path.parent / "judgments.parquet"
    try:
        rows = pd.read_parquet(judgments)
    except Exception as error:  # pyarrow and the OS raise many types for one cause
        raise CalibrateError(f"--calibration: cannot read {judgments}, written beside it by `calibrate fit` "
                             f"({str(error).splitlines()[0][:120]})") from None
    keep = (rows["order"] == record["run"]["metrics_order"]) & rows["set_name"].isin(CALIBRATION_SETS)
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
) -> ScoreResult:
    """Judge every pair of every response dataset once (streamed in chunks, resumable through the
    cache) and report raw and calibrated metrics with intervals, breakdowns and a leaderboard.

    With `anchor_judge` and `anchor_fraction`, a second judge also judges a seeded random fraction of
    the pairs, and its metrics are estimated by PPI / PPI++ from both; `anchor_labels` (human labels
    of some pairs) serves as the anchor instead."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calibrate.data import stream_source
    from calibrate.judging.runner import arrow_schema, progress_bar

    started = time.perf_counter()
    config = load_judge_config(judge)
    backend = make_backend(config)
    backend.preflight()
    sources = response_sources(responses)
    orders = orders_of(order)
    if limit is not None and limit < 1:
        raise CalibrateError("--limit must be a positive number of pairs per source")
    # A chunk ends with the judge's workers draining; chunks of many times its concurrency keep that
    # tail to a few percent of the time (at 256 in flight, 16,384 pairs a chunk)
    chunk_rows = chunk_rows or max(SCORE_CHUNK_ROWS, 64 * config.concurrency)
    streams = {name: stream_source(source, name, chunk_rows) for name, source in sources.items()}
    anchor_backend = _anchor_backend(anchor_judge, anchor_fraction, anchor_labels)
    labels = scoring.load_anchor_labels(Path(anchor_labels), list(sources)) if anchor_labels else {}
    out_dir = _output_dir(Path(out) if out else Path("reports") / f"score-{config.name}")
    record, calibration_rows, calibration_path = calibration_for(config, calibration, cache, show_progress)
    rule = check_rule(rule or record["scoring_rule"])
    if rule != record["scoring_rule"]:
        raise CalibrateError(f"--rule {rule}: the calibration at {calibration_path} was fitted under rule "
                             f"{record['scoring_rule']}; run `calibrate fit --judge {config.name} --rule {rule}`")
    schema = arrow_schema({"model": pa.string()})
    rows: dict[str, pd.DataFrame] = {}
    anchors: dict[str, pd.DataFrame] = {}
    run: dict[str, dict] = {}
    judgments_path = out_dir / "judgments.parquet"
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store, \
            pq.ParquetWriter(judgments_path, schema) as writer:
        pending = open_batch_requests(store, config.config_hash)
        for name, stream in streams.items():
            total = stream.total if limit is None or stream.total is None else min(limit, stream.total)
            counts = {"judged": 0, "failed": 0, "reused": 0, "items": 0, "requests": 0}
            parts, anchor_parts = [], []
            expected = None if total is None else total * len(orders) + int(total * (anchor_fraction or 0))
            with progress_bar(show_progress, f"{name}: judging with {config.name}", expected) as show:
                for chunk in _first_pairs(stream, limit):
                    warn_if_in_open_batches(store, config, chunk, orders, pending)
                    table, chunk_counts = judge_pairs(backend, chunk, store, orders=orders, progress=show)
                    table["model"] = name
                    writer.write_table(pa.Table.from_pandas(table.reindex(columns=schema.names), schema=schema,
                                                            preserve_index=False))
                    parts.append(scoring.compact(table))
                    counts = {key: counts[key] + chunk_counts[key] for key in counts}
                    if anchor_backend:
                        picked = [p for p in chunk if scoring.anchor_selected(p.content_key, anchor_fraction, seed)]
                        if picked:
                            anchor_table, _ = judge_pairs(anchor_backend, picked, store, orders=orders[:1], progress=show)
                            anchor_parts.append(scoring.compact(anchor_table))
            rows[name] = pd.concat(parts, ignore_index=True)
            run[name] = {**counts, "source": stream.source, "files": stream.files}
            if anchor_backend:
                anchors[name] = (pd.concat(anchor_parts, ignore_index=True) if anchor_parts
                                 else pd.DataFrame(columns=list(scoring.COMPACT_COLUMNS)))
            elif labels:
                anchors[name] = labels.get(name, pd.DataFrame(columns=list(scoring.COMPACT_COLUMNS)))
    models = {}
    for name, model_rows in rows.items():
        primary = model_rows[model_rows["order"] == orders[0]]
        models[name] = {
            "source": sources[name],
            "raw": scoring.raw_metrics(primary, rule, n_boot, seed),
            "mapped": scoring.mapped_pac(record, calibration_rows, primary, rule, n_boot, seed),
            "class_corrected": scoring.class_correction(calibration_rows, primary, rule, n_boot, seed),
            "cost": {"input_tokens": int(model_rows["input_tokens"].sum()),
                     "output_tokens": int(model_rows["output_tokens"].sum()),
                     "cost_usd": round(float(model_rows["cost_usd"].sum()), 6),
                     "cost_usd_this_run": round(float(model_rows["cost_usd_this_run"].sum()), 6)},
            "run": run[name],
        }
        if name in anchors:
            models[name]["anchored"] = _anchored_record(primary, anchors[name], rule, anchor_backend,
                                                        anchor_fraction, anchor_labels, models[name]["cost"])
    breakdowns = {by: pd.concat([scoring.breakdown(r[r["order"] == orders[0]], by, rule, record, calibration_rows,
                                                   n_boot, seed).assign(model=name)
                                 for name, r in rows.items()], ignore_index=True)
                  for by in ("category", "issue_scale")}
    metrics = {
        "schema_version": SCORE_SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "judge": _judge_record(config),
        "scoring_rule": rule,
        "calibration": {"path": str(calibration_path), "created_at": record["created_at"],
                        "mapping": record["mapping"]["selected"], "n_pairs": int(len(calibration_rows))},
        "run": {"orders": list(orders), "metrics_order": orders[0], "limit_per_source": limit,
                "bootstrap_resamples": n_boot, "seed": seed, "elapsed_s": None},
        "models": models,
        "package_versions": _package_versions(),
    }
    metrics["run"]["elapsed_s"] = round(time.perf_counter() - started, 3)
    result = ScoreResult(metrics, rows)
    result.paths = {"judgments": judgments_path, **write_score_outputs(result, breakdowns, out_dir)}
    return result


def _anchor_backend(anchor_judge: str | None, fraction: float | None, labels: Path | str | None):
    """The anchor judge's backend (keys checked now, before any work), or None."""
    if anchor_judge and labels:
        raise CalibrateError("--anchor-judge and --anchor-labels: give one anchor, not both")
    if anchor_judge is None:
        if fraction is not None:
            raise CalibrateError("--anchor-fraction needs --anchor-judge")
        return None
    if fraction is None or not 0 < fraction <= 1:
        raise CalibrateError("--anchor-fraction must be a number in (0, 1] with --anchor-judge")
    backend = make_backend(load_judge_config(anchor_judge))
    backend.preflight()
    return backend


def _anchored_record(primary: pd.DataFrame, anchor: pd.DataFrame, rule: str, backend,
                     fraction: float | None, labels: Path | str | None, cheap_cost: dict) -> dict:
    """The anchor's metrics by PPI, and what the cheap judge saved against running the anchor on every pair."""
    estimates = scoring.anchored_estimates(primary, anchor, rule)
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


def write_score_outputs(result: ScoreResult, breakdowns: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    """metrics.json, the breakdown CSVs, leaderboard.csv (several models) and the reports."""
    from calibrate.score_report import leaderboard, write_score_report

    paths = {"metrics": out_dir / "metrics.json"}
    paths["metrics"].write_text(json.dumps(result.metrics, indent=2, ensure_ascii=False) + "\n")
    for by, table in breakdowns.items():
        paths[f"by_{by}"] = out_dir / f"breakdown_{by}.csv"
        table.to_csv(paths[f"by_{by}"], index=False)
    if len(result.metrics["models"]) > 1:
        paths["leaderboard"] = out_dir / "leaderboard.csv"
        leaderboard(result.metrics).to_csv(paths["leaderboard"], index=False)
    paths.update(write_score_report(result.metrics, breakdowns, out_dir))
    return paths


def batch_export(judge: str, out_file: Path | str, data: str = "sample", sets: Sequence[str] = FIT_SETS,
                 order: str = "forward", limit: int | None = None, seed: int = 0,
                 cache: Path | str | None = None) -> dict[str, int]:
    """Write an OpenAI Batch API request file for every (pair, order) the cache does not hold yet."""
    from calibrate.batch import export_requests

    config = load_judge_config(judge)
    loaded = _load_sets(data, sets, limit, seed)
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs]
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return export_requests(config, pairs, orders_of(order), store, Path(out_file))


def batch_import(judge: str, results_file: Path | str, cache: Path | str | None = None) -> dict:
    """Load a Batch API (or vLLM run_batch) output file into the judgment cache, validated."""
    from calibrate.batch import import_results

    config = load_judge_config(judge)
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return import_results(config, Path(results_file), store).to_dict()


def _remote_backend(judge: str):
    """A judge's backend, checked to have its key before any provider call."""
    backend = make_backend(load_judge_config(judge))
    backend.preflight()
    return backend


def batch_submit(judge: str, data: str = "sample", sets: Sequence[str] = FIT_SETS,
                 responses: Sequence[str] | None = None, order: str = "forward", limit: int | None = None,
                 seed: int = 0, cache: Path | str | None = None) -> dict:
    """Submit a provider batch job (OpenAI Batch API or Anthropic Message Batches) for every pair and
    order not yet cached: the calibration sets `fit` would judge, or with `responses` the response
    datasets `score` would judge (`limit` pairs per set or source)."""
    from calibrate import provider_batch
    from calibrate.data import stream_source

    backend = _remote_backend(judge)
    orders = orders_of(order)
    if responses:
        if limit is not None and limit < 1:
            raise CalibrateError("--limit must be a positive number of pairs per source")
        streams = [stream_source(source, name) for name, source in response_sources(responses).items()]
        chunks = (chunk for stream in streams for chunk in _first_pairs(stream, limit))
    else:
        chunks = iter([[pair for loaded in _load_sets(data, sets, limit, seed).values() for pair in loaded.pairs]])
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return provider_batch.submit(backend, chunks, orders, store)


def _first_pairs(chunks: Iterable[list[Pair]], limit: int | None) -> Iterator[list[Pair]]:
    """The chunks of a stream, cut after `limit` pairs (None: all)."""
    taken = 0
    for chunk in chunks:
        chunk = chunk[: limit - taken] if limit is not None else chunk
        if not chunk:
            return
        taken += len(chunk)
        yield chunk


def batch_status(judge: str, cache: Path | str | None = None) -> list[dict]:
    """The judge's provider batches recorded in the cache, the open ones polled."""
    from calibrate import provider_batch

    backend = _remote_backend(judge)
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return provider_batch.status(backend, store)


def batch_adopt(judge: str, batch_id: str, cache: Path | str | None = None) -> dict:
    """Record which provider batch a submit sent when the provider could not say (see provider_batch)."""
    from calibrate import provider_batch

    backend = _remote_backend(judge)
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return provider_batch.adopt(backend, store, batch_id)


def batch_collect(judge: str, cache: Path | str | None = None, wait: bool = False, poll_s: float = 30.0,
                  on_wait=None) -> dict:
    """Load every ended batch of the judge into the cache, validated; with `wait`, poll until all have ended."""
    from calibrate import provider_batch

    backend = _remote_backend(judge)
    with JudgmentStore(Path(cache) if cache else default_cache_path()) as store:
        return provider_batch.collect(backend, store, wait=wait, poll_s=poll_s, on_wait=on_wait)


def load_calibration(path: Path | str) -> dict:
    """Read a calibration.json written by `fit`, checking its schema version."""
    path = Path(path)
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CalibrateError(f"calibration file {path}: cannot read it ({error})") from None
    if calibration.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise CalibrateError(f"calibration file {path}: schema version {calibration.get('schema_version')!r}, "
                             f"expected {CALIBRATION_SCHEMA_VERSION}")
    return calibration


def selected_mapping(calibration: dict) -> ScoreMapping:
    """The mapping `fit` selected, rebuilt from a calibration record."""
    from calibrate.mapping import mapping_from_dict

    mapping = calibration["mapping"]
    return mapping_from_dict(mapping["candidates"][mapping["selected"]]["mapping"])


def parse_sets(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return list(CALIBRATION_SETS)
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    return [n for n in names if n]
