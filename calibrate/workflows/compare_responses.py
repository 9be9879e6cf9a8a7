"""`compare --responses`: the response datasets scored by each judge the user named (with the calibration
`fit` would make of the comparison's judgments, taken from the comparison itself), and their leaderboards
compared (stats/rank_agreement.py): Kendall's tau with an interval, the flips, self-preference."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from calibrate.data.families import check_families, dataset_family, dataset_model, same_family_warning
from calibrate.data.sources import portable_path, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend
from calibrate.judging.config import JudgeConfig
from calibrate.judging.estimate import CostEstimate, SpendBudget
from calibrate.judging.progress import ProgressCallback
from calibrate.stats.benchmark import pair_value
from calibrate.stats.calibration import MappingSelection
from calibrate.stats.comparison import JudgeRun
from calibrate.stats.rank_agreement import (
    JudgeScores,
    RankAgreement,
    ScoredModel,
    SelfPreference,
    rank_agreement,
)
from calibrate.workflows.common import calibration_rows, first_pairs, orders_of, response_sources
from calibrate.workflows.score import (
    CalibrationInputs,
    ScoreSetup,
    cluster_column,
    plan_score,
    score_checked,
    score_streams,
)

READ_ROWS = 2000  # rows per chunk when reading a dataset's models and clusters


def scoring_configs(configs: Sequence[JudgeConfig], judges: Sequence[str], responses: Sequence[str], *,
                    labelled: bool) -> list[JudgeConfig]:
    """The judges that score the response datasets: those the user named (not the baselines added),
    when there are two or more to compare; with fewer, `responses` only names where the human labels
    (`labelled`) come from, and without labels it is an error."""
    named = configs[:len(dict.fromkeys(judges))]
    if responses and len(named) < 2 and not labelled:
        raise CalibrateError("responses: judges must name two judges or more to compare how they rank the response "
                             "datasets (the baselines added do not score them)", ("responses", "judges"))
    return list(named) if responses and len(named) >= 2 else []


@dataclass(frozen=True)
class ScoredDatasets:
    """The response datasets as `compare --responses` compares them: where each is (`sources`), its model
    (id and family), and its pairs' cluster values (pair_id and `column`, the cluster column `score` picks
    for them)."""

    sources: dict[str, str]
    models: dict[str, ScoredModel]
    clusters: dict[str, pd.DataFrame]
    column: str


def scored_models(responses: Sequence[str], limit: int | None, families: Mapping[str, str] | None) -> ScoredDatasets:
    """The response datasets' models and cluster values, the first `limit` pairs as `score` judges them:
    every row read and checked here, before any judging (each judge's scoring reads them again only to
    judge them), one chunk at a time."""
    sources = response_sources(responses)
    checked = check_families(families, list(sources))
    streams = {name: stream_source(source, name, READ_ROWS) for name, source in sources.items()}
    column = cluster_column(streams, None)
    assert column is not None, "without cluster_by a default column is always found (issue_description)"
    models, clusters = {}, {}
    for name, stream in streams.items():
        ids: list[int] = []
        values: list[object] = []
        for chunk in first_pairs(stream, limit):
            if not ids:
                models[name] = ScoredModel(source=portable_path(sources[name]), model_id=dataset_model(name, chunk[0]),
                                           family=dataset_family(name, chunk[0], checked))
            ids.extend(pair.id for pair in chunk)
            values.extend(pair_value(pair, column) for pair in chunk)
        clusters[name] = pd.DataFrame({"pair_id": ids, column: values})
    return ScoredDatasets(sources, models, clusters, column)


def comparison_calibration(run: JudgeRun, mapping: MappingSelection, rule: str, order: str) -> CalibrationInputs:
    """What `score` takes of a judge's `fit` on the comparison's sets, from the comparison itself: the same
    judgments (its calibration pairs in the metrics `order`, first repeat) and the mapping `fit` selects on
    them (`mapping`: the analysis's `judge_mappings`), with nothing judged or fitted again."""
    return CalibrationInputs(None, datetime.now(UTC).isoformat(timespec="seconds"), rule, mapping.selected,
                             mapping.estimator, calibration_rows(run.table, order))


def compare_leaderboards(scorers: Sequence[tuple[JudgeRun, Backend]], mappings: Mapping[str, MappingSelection],
                         scored: ScoredDatasets, *, rule: str, order: str, limit: int | None, seed: int,
                         cache: Path | str | None, progress: ProgressCallback | None, n_boot: int,
                         budget: SpendBudget | None) -> tuple[RankAgreement, dict[str, list[SelfPreference]]]:
    """Each judge's scoring of the response datasets (`scored`: their `scored_models`, checked already) with
    its calibration from the comparison (`comparison_calibration`; `mappings`: the analysis's), each judge
    scoring its own family warned of, then the leaderboards compared. Only what the comparison reads is
    computed: no breakdowns by category or issue scale."""
    judges = []
    for run, backend in scorers:
        config = run.config
        fitted = comparison_calibration(run, mappings[run.name], rule, order)
        setup = ScoreSetup(config, backend, None, scored.sources, score_streams(scored.sources, config, None),
                           orders_of(order))
        same_family = {name: same_family_warning(config.name, config.family, model.model_id, model.family)
                       for name, model in scored.models.items()}
        result = score_checked(setup, fitted, rule=rule, column=scored.column, same_family=same_family, labels={},
                               out=None, limit=limit, cache=cache, progress=progress, n_boot=n_boot, seed=seed,
                               anchor_fraction=None, human_labels=None, budget=budget, breakdowns=False,
                               started=time.perf_counter())
        metrics_order = result.metrics.run.metrics_order
        rows = {model: frame[frame["order"] == metrics_order] for model, frame in result.rows.items()}
        judges.append(JudgeScores(config.name, config.family, fitted.rows, rows, result.metrics))
    return rank_agreement(judges, scored.models, scored.clusters, scored.column, rule, n_boot, seed)


def plan_leaderboards(configs: Sequence[JudgeConfig], responses: Sequence[str], *, order: str, limit: int | None,
                      seed: int, cache: Path | str | None, families: Mapping[str, str] | None) -> list[CostEstimate]:
    """What scoring the response datasets with each judge would send (its calibration is the comparison's);
    nothing without judges to score them."""
    if not configs:
        return []
    check_families(families, list(response_sources(responses)))
    return [estimate for config in configs
            for estimate in plan_score(str(config.path), responses, order=order, limit=limit, cache=cache,
                                       seed=seed).estimates]
