"""`compare --responses`: the response datasets scored by each judge the user named (its `fit` on the
comparison's sets and cache, then `score`), and their leaderboards compared (stats/rank_agreement.py):
Kendall's tau with an interval, the flips, self-preference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from calibrate.data.families import check_families, dataset_family, dataset_model
from calibrate.data.sources import portable_path, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.config import JudgeConfig
from calibrate.judging.estimate import CostEstimate, SpendBudget
from calibrate.judging.progress import ProgressCallback
from calibrate.stats.benchmark import pair_value
from calibrate.stats.rank_agreement import (
    JudgeScores,
    RankAgreement,
    ScoredModel,
    SelfPreference,
    rank_agreement,
)
from calibrate.workflows.common import first_pairs, response_sources
from calibrate.workflows.fit import fit
from calibrate.workflows.score import calibration_inputs, cluster_column, plan_score, score

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
    """The response datasets as `compare --responses` compares them: each one's model (id and family), and
    its pairs' cluster values (pair_id and `column`, the cluster column `score` picks for them)."""

    models: dict[str, ScoredModel]
    clusters: dict[str, pd.DataFrame]
    column: str


def scored_models(responses: Sequence[str], limit: int | None, families: Mapping[str, str] | None) -> ScoredDatasets:
    """The response datasets' models and cluster values, the first `limit` pairs as `score` judges them
    (every row read and checked before any judging)."""
    sources = response_sources(responses)
    checked = check_families(families, list(sources))
    streams = {name: stream_source(source, name, READ_ROWS) for name, source in sources.items()}
    column = cluster_column(streams, None)
    assert column is not None, "without cluster_by a default column is always found (issue_description)"
    models, clusters = {}, {}
    for name, stream in streams.items():
        pairs = [pair for chunk in first_pairs(stream, limit) for pair in chunk]
        models[name] = ScoredModel(source=portable_path(sources[name]), model_id=dataset_model(name, pairs[0]),
                                   family=dataset_family(name, pairs[0], checked))
        clusters[name] = pd.DataFrame({"pair_id": [pair.id for pair in pairs],
                                       column: [pair_value(pair, column) for pair in pairs]})
    return ScoredDatasets(models, clusters, column)


def compare_leaderboards(configs: Sequence[JudgeConfig], responses: Sequence[str],
                         scored: ScoredDatasets, *, data: str,
                         sets: Sequence[str] | str, rule: str, order: str, limit: int | None, seed: int,
                         cache: Path | str | None, progress: ProgressCallback | None, n_boot: int,
                         budget: SpendBudget | None, families: Mapping[str, str] | None
                         ) -> tuple[RankAgreement, dict[str, list[SelfPreference]]]:
    """Each judge's calibration (`fit` on the comparison's sets: its judgments are in the cache already),
    then `score` of the response datasets with it (each judge scoring its own family is warned of), and
    the leaderboards compared; `scored`: the datasets' `scored_models`."""
    judges = []
    for config in configs:
        fitted = fit(str(config.path), data=data, sets=sets, rule=rule, limit=limit, seed=seed, cache=cache,
                     progress=progress, n_boot=n_boot, order=order, max_cost=budget)
        result = score(str(config.path), responses, calibration=fitted, rule=rule, order=order, limit=limit,
                       cache=cache, progress=progress, n_boot=n_boot, seed=seed, max_cost=budget, families=families)
        metrics_order = result.metrics.run.metrics_order
        rows = {model: frame[frame["order"] == metrics_order] for model, frame in result.rows.items()}
        judges.append(JudgeScores(config.name, config.family, calibration_inputs(config, fitted).rows, rows,
                                  result.metrics))
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
