"""A leaderboard that can tell models apart: paired differences, rank intervals, one joint resampling.

Every model of a score run is scored by the same judge, with the same calibration, on (mostly) the same
prompts, so much of the width of each model's headline interval is shared. Resampling everything once
per replicate for all models cancels the shared part in a difference:
- the calibration pairs (the class correction's confusion matrix) once per replicate, for every model;
- the benchmark's clusters (the pairs of one Wikipedia article, or single pairs) once per replicate, the
  same clusters for every model (paired), each model's pairs in them counted (and its human labels or
  anchor judgments with them);
- each model's headline is recomputed on the replicate by its own basis (class correction, PPI++ with
  its lam fixed, or the judge's mean), on all its pairs (for ranks) and on the pairs it shares with each
  other model (for differences: pairs not shared are left out and counted).

A difference's interval is the percentile interval of the replicates' differences; its p-value the
two-sided bootstrap p of no difference; `p_adjusted` Holm's over all model pairs of one metric. Rank
intervals are simultaneous over models (Mogstad, Romano, Shaikh and Wilhelm 2024, "Inference for ranks"):
the max-T interval of every pairwise difference at once (the 95% quantile over replicates of the largest
studentised deviation), a model's rank running from 1 + the models significantly above it to n - the
models significantly below it. docs/statistics.md has the coverage study.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np
import pandas as pd

from calibrate.records import Record, omitted_when_none
from calibrate.stats import prevalence
from calibrate.stats.metrics import CONFIDENCE, cluster_sums, resampled_totals
from calibrate.stats.rules import PAIR_CLASSES

# --------------------------------------------------------------------------- the records (metrics.json)


SIGNIFICANCE = 0.05  # Holm-adjusted p below which a difference is called significant


@dataclass(frozen=True, kw_only=True)
class Difference(Record):
    """One metric of model_a minus model_b on the pairs both were judged on (matched by pair id): `value`
    (None where a model's metric is not identified; `ci` then holds every difference consistent with the
    data), its 95% interval from the joint resampling, the bootstrap p-value of no difference and Holm's
    adjustment over every model pair of the metric; `basis`: what the two headlines rest on."""

    model_a: str
    model_b: str
    metric: str
    value: float | None
    ci: tuple[float, float]
    p_value: float | None
    p_adjusted: float | None
    n_shared: int
    basis: str
    n_clusters: int | None = omitted_when_none()  # clusters among the shared pairs (when clustered)
    not_shared: int | None = omitted_when_none()  # pairs judged for only one of the two, left out

    @property
    def significant(self) -> bool:
        """Called significant where the Holm-adjusted p is below SIGNIFICANCE: the one rule the score report,
        the terminal and a flip's significance in `compare --responses` share."""
        return self.p_adjusted is not None and self.p_adjusted < SIGNIFICANCE


@dataclass(frozen=True, kw_only=True)
class Rank(Record):
    """A model's rank by headline PAC (1 best; tied models share the better rank) and its 95% interval,
    simultaneous over all models."""

    value: int
    ci: tuple[int, int]


@dataclass(frozen=True, kw_only=True)
class Clustering(Record):
    """What benchmark intervals resample: whole clusters of pairs sharing `column` (None: single pairs),
    and how many clusters each model's judged pairs form."""

    column: str | None
    n_clusters: dict[str, int]


# --------------------------------------------------------------------------- what the resampling reads

CLASS_CORRECTED, PPI, MEAN = "class-corrected", "ppi", "mean"
SAMPLE_COLUMNS = ("cluster", "judged")  # and per metric: value:<metric>, truth:<metric>, weight:<metric>


@dataclass(frozen=True)
class Estimator:
    """How one headline metric of a model is recomputed on a replicate: `kind` CLASS_CORRECTED (column
    `metric_index` of the correction's class values), PPI (lam fixed at the headline's; `weighted`: the
    predictions averaged over every pair and labels weighted by 1 / inclusion probability, else over the
    unlabelled pairs) or MEAN (the per-pair values' mean); `basis` as the headline states it."""

    kind: str
    basis: str
    metric_index: int = 0
    lam: float = 0.0
    weighted: bool = False


@dataclass
class ModelSample:
    """One model's judged pairs, indexed by pair id: `cluster` (int64 code; a pair alone has its own),
    `judged` (its judged class), and per metric `value:<m>` (what the estimator averages: the judge's value
    or its calibrated prediction), `truth:<m>` (the label, NaN where none) and `weight:<m>` (1 / inclusion
    probability of a label); `estimators` per headline metric."""

    pairs: pd.DataFrame
    estimators: dict[str, Estimator]


@dataclass
class CorrectionInputs:
    """The class correction's calibration: counts[true, judged], their joint resamples draws[b, true, judged],
    class_values[true, metric] for `metrics`, and the true classes in the counts' order."""

    counts: np.ndarray
    draws: np.ndarray
    class_values: np.ndarray
    true_classes: list[str]
    metrics: tuple[str, ...]
    groups: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.groups = prevalence.confused_groups(prevalence.confused_classes(self.counts, self.true_classes),
                                                 self.true_classes)


@dataclass
class Comparison:
    """What the joint resampling found: the differences (every model pair, every metric) and the ranks."""

    differences: list[Difference]
    ranks: dict[str, Rank]


# --------------------------------------------------------------------------- the joint resampling


def compare_models(samples: dict[str, ModelSample], correction: CorrectionInputs | None, *,
                   metrics: tuple[str, ...] = ("PAC", "REF"), rank_metric: str = "PAC", n_boot: int,
                   seed: int = 0, clustered: bool = True) -> Comparison:
    """Differences of every pair of models (in the order given, a - b) per metric, and ranks by
    `rank_metric`, from one joint resampling (module docstring). `correction.draws` must hold n_boot resamples."""
    names = list(samples)
    ids = {name: samples[name].pairs.index for name in names}
    units: dict[tuple[str, str | None], pd.Index] = {(name, None): ids[name] for name in names}
    for a, b in combinations(names, 2):
        shared = ids[a].intersection(ids[b])
        for name, other in ((a, b), (b, a)):
            if len(shared) < len(ids[name]):
                units[(name, other)] = shared
    universe = pd.Index(sorted(set().union(*(set(index) for index in ids.values()))))
    codes = np.full(len(universe), -1, dtype=np.int64)
    for name in names:
        codes[universe.get_indexer(ids[name])] = samples[name].pairs["cluster"].to_numpy(np.int64)
    blocks, spans, start = [], {}, 0
    for key, subset in units.items():
        columns = _columns(samples[key[0]], subset)
        block = np.zeros((len(universe), columns.shape[1]))
        block[universe.get_indexer(subset)] = columns
        blocks.append(cluster_sums(block, codes))  # every block in the same cluster order: paired
        spans[key] = start
        start += columns.shape[1]
    sums = np.hstack(blocks)
    totals = resampled_totals(sums, n_boot, np.random.default_rng(seed))
    point = sums.sum(axis=0, keepdims=True)
    calibration = (None, None) if correction is None else (correction.counts[None], correction.draws)
    found: dict[tuple[str, str | None], dict[str, tuple[np.ndarray, ...]]] = {}
    for key, start in spans.items():
        sample = samples[key[0]]
        layout = _layout(sample)
        found[key] = {}
        for metric, estimator in sample.estimators.items():
            if metric not in metrics and metric != rank_metric:
                continue
            where = layout["judged"] if estimator.kind == CLASS_CORRECTED else layout[metric]
            span = slice(start + where.start, start + where.stop)
            found[key][metric] = (*_values(estimator, point[:, span], correction, calibration[0]),
                                  *_values(estimator, totals[:, span], correction, calibration[1]))
    differences: list[Difference] = []
    for metric in metrics:
        rows: list[Difference] = []
        for a, b in combinations(names, 2):
            shared = ids[a].intersection(ids[b])
            if not len(shared) or metric not in found[(a, None)] or metric not in found[(b, None)]:
                continue
            first = found[(a, b) if (a, b) in found else (a, None)][metric]
            second = found[(b, a) if (b, a) in found else (b, None)][metric]
            value, ci, p_value = _difference(first, second)
            basis_a, basis_b = samples[a].estimators[metric].basis, samples[b].estimators[metric].basis
            shared_codes = samples[a].pairs.loc[shared, "cluster"].to_numpy(np.int64)
            rows.append(Difference(
                model_a=a, model_b=b, metric=metric, value=value, ci=ci, p_value=p_value, p_adjusted=None,
                n_shared=int(len(shared)), basis=basis_a if basis_a == basis_b else f"{basis_a} / {basis_b}",
                n_clusters=int(len(np.unique(shared_codes))) if clustered else None,
                not_shared=int(len(ids[a].symmetric_difference(ids[b]))) or None))
        adjusted = iter(holm([row.p_value for row in rows if row.p_value is not None]))
        differences.extend(row if row.p_value is None else replace(row, p_adjusted=next(adjusted)) for row in rows)
    ranked = {name: found[(name, None)][rank_metric] for name in names if rank_metric in found[(name, None)]}
    return Comparison(differences, simultaneous_ranks({  # a model whose metric is not identified is not ranked
        name: (float(low[0]), lows) for name, (low, high, lows, _) in ranked.items()
        if low[0] == high[0] and np.isfinite(low[0])}))


def _layout(sample: ModelSample) -> dict[str, slice]:
    """Where each estimator's columns sit in a model's block (`_columns`): "judged" for the judged-class
    counts the class correction reads, then one slice per metric averaged or PPI-estimated."""
    layout, start = {}, 0
    if any(estimator.kind == CLASS_CORRECTED for estimator in sample.estimators.values()):
        layout["judged"], start = slice(0, len(PAIR_CLASSES)), len(PAIR_CLASSES)
    for metric, estimator in sample.estimators.items():
        width = {MEAN: 2, PPI: 4}.get(estimator.kind, 0)
        if width:
            layout[metric], start = slice(start, start + width), start + width
    return layout


def _columns(sample: ModelSample, subset: pd.Index) -> np.ndarray:
    """The per-pair columns a model's estimators read, on `subset` of its pairs, as `_layout` places them:
    judged-class indicators; for a mean (1, value); for PPI (imputed?, imputed * prediction, label weight,
    label weight * rectifier), whose ratios of totals are the PPI estimate on any resample."""
    pairs = sample.pairs.loc[subset]
    columns = []
    if any(estimator.kind == CLASS_CORRECTED for estimator in sample.estimators.values()):
        columns.append((pairs["judged"].to_numpy()[:, None] == np.array(PAIR_CLASSES)[None, :]).astype(float))
    for metric, estimator in sample.estimators.items():
        if estimator.kind == CLASS_CORRECTED:
            continue
        value = pairs[f"value:{metric}"].to_numpy(float)
        if estimator.kind == MEAN:
            columns.append(np.column_stack([np.ones(len(pairs)), value]))
        elif estimator.kind == PPI:
            truth = pairs[f"truth:{metric}"].to_numpy(float)
            labelled = ~np.isnan(truth)
            imputed = np.ones(len(pairs)) if estimator.weighted else (~labelled).astype(float)
            weight = np.where(labelled, pairs[f"weight:{metric}"].to_numpy(float), 0.0)
            rectifier = np.where(labelled, truth - estimator.lam * np.nan_to_num(value), 0.0)
            columns.append(np.column_stack([imputed, imputed * value, weight, weight * rectifier]))
    return np.hstack(columns) if columns else np.zeros((len(pairs), 0))


def _values(estimator: Estimator, totals: np.ndarray, correction: CorrectionInputs | None,
            calibration: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a metric per row of `totals` (its estimator's columns), equal where it is identified;
    `calibration`: the calibration counts [row, true, judged] of each row (the class correction's)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if estimator.kind == MEAN:
            value = totals[:, 1] / totals[:, 0]
            return value, value
        if estimator.kind == PPI:
            value = estimator.lam * totals[:, 1] / totals[:, 0] + totals[:, 3] / totals[:, 2]
            return value, value
    assert correction is not None and calibration is not None, "a class-corrected headline needs the calibration"
    values = correction.class_values[:, estimator.metric_index]
    lowest = np.array([values[group].min() for group in correction.groups])
    highest = np.array([values[group].max() for group in correction.groups])
    pooled = prevalence.merged_counts(calibration, correction.groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = prevalence.least_squares_shares(prevalence.confusion_from_counts(pooled),
                                                 totals / totals.sum(axis=-1, keepdims=True))
    return shares @ lowest, shares @ highest


def _difference(first: tuple[np.ndarray, ...], second: tuple[np.ndarray, ...]
                ) -> tuple[float | None, tuple[float, float], float | None]:
    """a - b from each model's (point low, point high, replicate lows, replicate highs): the value, the 95%
    percentile interval and the two-sided bootstrap p-value; where either is not identified, no value, the
    interval from the lowest to the highest difference the replicates allow, and no p-value."""
    tail = (1 - CONFIDENCE) / 2 * 100
    (a_low, a_high, a_lows, a_highs), (b_low, b_high, b_lows, b_highs) = first, second
    if not (np.isfinite(a_low[0]) and np.isfinite(b_low[0])):
        return None, (float("nan"), float("nan")), None
    if a_low[0] != a_high[0] or b_low[0] != b_high[0]:
        return None, (float(np.nanpercentile(a_lows - b_highs, tail)),
                      float(np.nanpercentile(a_highs - b_lows, 100 - tail))), None
    draws = a_lows - b_lows
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return float(a_low[0] - b_low[0]), (float("nan"), float("nan")), None
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(a_low[0] - b_low[0]), (float(low), float(high)), bootstrap_p_value(draws)


def bootstrap_p_value(draws: np.ndarray) -> float:
    """Two-sided p-value of no difference from bootstrap draws of a difference: twice the smaller share of
    draws on either side of 0 (each counted with the +1 of a Monte Carlo p-value), at most 1."""
    n = len(draws)
    below, above = (1 + np.sum(draws <= 0)) / (n + 1), (1 + np.sum(draws >= 0)) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (in their order): the k-th smallest times
    (m - k + 1), made non-decreasing, at most 1 (statsmodels' multipletests(method="holm"))."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


def simultaneous_ranks(estimates: dict[str, tuple[float, np.ndarray]]) -> dict[str, Rank]:
    """Each model's rank (1 best, by larger value; ties share the better rank) with a 95% interval
    simultaneous over all models, from point values and paired replicates {model: (value, replicates)}:
    max-T over every pairwise difference (Mogstad, Romano, Shaikh and Wilhelm 2024): c is the 95% quantile
    over replicates of max |d* - d| / se(d*), and model j is above k when d_jk - c se > 0."""
    names = list(estimates)
    if len(names) < 2:
        return {}
    value = np.array([estimates[name][0] for name in names])
    draws = np.column_stack([estimates[name][1] for name in names])
    draws = draws[np.isfinite(draws).all(axis=1)]
    pairs = list(combinations(range(len(names)), 2))
    difference = np.array([value[j] - value[k] for j, k in pairs])
    replicate = np.column_stack([draws[:, j] - draws[:, k] for j, k in pairs])
    se = replicate.std(axis=0)
    spread = se > 0
    deviation = np.abs(replicate[:, spread] - difference[spread]) / se[spread]
    critical = float(np.quantile(deviation.max(axis=1), CONFIDENCE)) if spread.any() and len(draws) else np.inf
    above = np.zeros((len(names), len(names)), bool)  # above[j, k]: j significantly above k
    for (j, k), d, s in zip(pairs, difference, se, strict=True):
        margin = critical * s if s > 0 else 0.0
        above[j, k] = d - margin > 0
        above[k, j] = d + margin < 0
    n = len(names)
    return {name: Rank(value=int(1 + np.sum(value > value[m])),
                       ci=(int(1 + above[:, m].sum()), int(n - above[m, :].sum())))
            for m, name in enumerate(names)}
