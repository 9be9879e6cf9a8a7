"""How the judge moves the ranking: the same response datasets scored by several judges, their
leaderboards (by headline PAC) compared.

- Kendall's tau (tau-b) between every two judges' leaderboards, with a 95% interval from one joint
  resampling: in each replicate the calibration pairs are drawn once (within each set) and the benchmark
  clusters once (by the column the judges' scores clustered by: `workflows.score.cluster_column`), the same draws for
  every judge and every model, and each judge's headline PAC of each model is computed again from them
  (the class correction on the replicate's counts, or the raw mean where the headline is the raw mean).
  The interval is not the replicates' percentiles of tau (tau is discrete and jumps where two models are
  close, and there its percentile interval missed a true tau of 1 in up to half the datasets of the
  study, docs/statistics.md): it is the projection of a simultaneous confidence set for the order of every
  model pair under both judges (max-T over every pairwise PAC difference of both judges at once, as the
  rank intervals of stats/leaderboard.py; Mogstad, Romano, Shaikh and Wilhelm 2024). A pair whose order
  either judge's data leave open may be concordant or not, so tau runs from every open pair discordant to
  every open pair concordant; `open_pairs` counts them.
- The model pairs whose order flips between two judges, and for each judge whether its paired difference
  for the pair (`ScoreRecord.differences`, stats/leaderboard.py) is significant (Holm-adjusted p below
  0.05, the score's own rule); "unknown" where the judge's scores carry no differences.
- Self-preference: per judge, its PAC of the models of its own family minus a cross-family judge's PAC of
  the same models (the mean over them), with an interval from the same replicates; `favours_own` when
  the interval lies above 0. The headline is calibrated per judge, so a judge's general leniency is
  corrected before the two are compared; what remains is how it treats these models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Protocol

import numpy as np
import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite
from calibrate.stats import prevalence
from calibrate.stats.benchmark import BASIS_CALIBRATION, CORRECTION_ESTIMATOR, Headline, judged_classes
from calibrate.stats.leaderboard import Difference
from calibrate.stats.metrics import CONFIDENCE, Interval, expected_values, judged_values, percentile_interval
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH

METRIC = "PAC"
SIGNIFICANCE = ("both", "one", "neither", "unknown")
METHOD = ("one joint resampling for every judge and model (the calibration pairs within each set and the benchmark "
          "clusters, each judge's headline PAC recomputed per replicate); tau: the range over the model pairs' "
          "orders a simultaneous 95% max-T set for both judges' pairwise differences leaves open; "
          "self-preference: percentile interval")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class ScoredModel(Record):
    """A response dataset the judges scored: where from, the model id, its family (data/families.py)."""

    source: str
    model_id: str
    family: str | None


@dataclass(frozen=True, kw_only=True)
class JudgeLeaderboard(Record):
    """One judge's leaderboard: headline PAC per model (None where withheld), the models best first, its
    family and the models of that family it scored (each warned of); `differences_known`: whether its
    scores carry paired differences (what a flip's significance reads)."""

    family: str | None
    pac: dict[str, float | None]
    ranking: list[str]
    same_family: list[str]
    differences_known: bool


@dataclass(frozen=True, kw_only=True)
class RankTau(Record):
    """Kendall's tau-b between two judges' leaderboards on the models both rank, with its 95% interval;
    `open_pairs`: of the model pairs, those whose order under one judge or both the data do not settle
    (each may be concordant or not: what widens the interval)."""

    judge_a: str
    judge_b: str
    n_models: int
    tau: float | None
    ci: Interval
    open_pairs: int | None = omitted_when_none()


@dataclass(frozen=True, kw_only=True)
class Flip(Record):
    """Two models the judges order oppositely: `first_a` is ahead under `judge_a`, `first_b` under
    `judge_b`, each by `lead_a` / `lead_b` PAC points; `significant_a` / `_b`: that judge's
    paired-difference interval excludes 0 (None: unknown); `significance` (SIGNIFICANCE): under both
    judges (a real reversal), one, neither, or unknown."""

    judge_a: str
    judge_b: str
    first_a: str
    first_b: str
    lead_a: float
    lead_b: float
    significant_a: bool | None
    significant_b: bool | None
    significance: str


@dataclass(frozen=True, kw_only=True)
class RankAgreement(Record):
    """comparison.json `rank_agreement`: the models scored, each judge's leaderboard, tau between every two
    judges, the flips; how the intervals were made (clusters, resamples)."""

    metric: str
    method: str
    cluster_by: str
    n_clusters: int
    resamples: int
    models: dict[str, ScoredModel]
    judges: dict[str, JudgeLeaderboard]
    tau: list[RankTau]
    flips: list[Flip]


@dataclass(frozen=True, kw_only=True)
class SelfPreference(Record):
    """comparison.json `self_preference.<judge>[]`: the judge's PAC of its own family's `models` minus
    `versus`'s (a judge of another family, or of none), the mean over them, with its 95% interval;
    `favours_own` when the interval lies above 0."""

    family: str
    models: list[str]
    versus: str
    versus_family: str | None
    difference: float | None
    ci: Interval
    favours_own: bool


# --------------------------------------------------------------------------- inputs


class Headlined(Protocol):
    """What the comparison reads of a scored model (a ModelScore has it): its headline per metric."""

    @property
    def headline(self) -> dict[str, Headline]: ...


class Scores(Protocol):
    """What the comparison reads of a judge's scores (a ScoreRecord has it; so does the simulation's
    stand-in, stats/rank_agreement_simulation.py): each model's headline, the paired differences."""

    @property
    def models(self) -> Mapping[str, Headlined]: ...
    @property
    def differences(self) -> list[Difference] | None: ...


@dataclass(frozen=True)
class JudgeScores:
    """One judge's scoring of the response datasets: its family, its calibration judgments (the rows the
    score rests on), the compact judged rows per model (the metrics order) and the score record."""

    name: str
    family: str | None
    calibration_rows: pd.DataFrame
    rows: dict[str, pd.DataFrame]
    record: Scores


# --------------------------------------------------------------------------- Kendall's tau


def kendall_tau(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of x and y along the last axis (batched over the leading ones): the concordant minus
    discordant pairs over the root of the pairs untied in x times those untied in y; NaN where either is
    all ties."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(x.shape[-1], k=1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    denominator = np.sqrt((sx**2).sum(axis=-1) * (sy**2).sum(axis=-1))
    return np.divide((sx * sy).sum(axis=-1), denominator, out=np.full(denominator.shape, np.nan),
                     where=denominator > 0)


def settled_orders(points: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """Each judge's order of each model pair (the pairs of np.triu_indices) as far as the data settle it,
    simultaneously for every judge and pair at 95%: +1 (the first model above), -1, or 0 (open). From the
    points (judge x model) and the joint replicates (replicate x judge x model): max-T over every pairwise
    difference, c the 95% quantile over replicates of max |d* - d| / se(d*); settled where |d| > c se.
    Replicates with a missing value are left out; with none, nothing is settled."""
    i, j = np.triu_indices(points.shape[-1], k=1)
    difference = points[:, i] - points[:, j]  # judge x pair
    replicate = replicates[..., i] - replicates[..., j]
    replicate = replicate[np.isfinite(replicate).all(axis=(1, 2))]
    if not len(replicate):
        return np.zeros(difference.shape, dtype=int)
    se = replicate.std(axis=0)
    spread = se > 0
    critical = float(np.quantile((np.abs(replicate[:, spread] - difference[spread]) / se[spread]).max(axis=1),
                                 CONFIDENCE)) if spread.any() else 0.0
    return np.where(np.abs(difference) > critical * se, np.sign(difference), 0).astype(int)


def tau_interval(points: np.ndarray, replicates: np.ndarray) -> tuple[Interval, int]:
    """Tau's 95% interval between two judges (`settled_orders`' points and replicates, the judges' two rows)
    and the model pairs left open: a settled pair counts as the data order it, an open one (under either
    judge) may be concordant or discordant, so tau runs from all open pairs discordant to all concordant.
    It covers when the simultaneous set does (at least 95%) and the population has no tied models."""
    orders = settled_orders(points, replicates)
    concordant = orders[0] * orders[1]
    open_pairs = int(np.sum(concordant == 0))
    n_pairs = len(concordant)
    return ((float(concordant.sum() - open_pairs) / n_pairs, float(concordant.sum() + open_pairs) / n_pairs),
            open_pairs)


# --------------------------------------------------------------------------- the joint resampling


@dataclass(frozen=True)
class Draws:
    """Replicate weights: how often each calibration pair and each benchmark cluster is drawn."""

    calibration: np.ndarray  # replicate x calibration pair
    calibration_keys: pd.MultiIndex  # (set_name, pair_id) of the columns
    clusters: np.ndarray  # replicate x cluster
    cluster_index: dict[str, dict[int, int]]  # model -> pair_id -> cluster column


def joint_draws(judges: Sequence[JudgeScores], clusters: dict[str, pd.DataFrame], column: str, n_boot: int,
                seed: int) -> Draws:
    """Weights of n_boot replicates drawn once for every judge: the calibration pairs within each set, the
    benchmark clusters (`column`'s values, shared across models) over all models."""
    rng = np.random.default_rng(seed)
    keys = pd.MultiIndex.from_frame(pd.concat(
        [judge.calibration_rows[["set_name", "pair_id"]] for judge in judges]).drop_duplicates().sort_values(
        ["set_name", "pair_id"]))
    calibration = np.zeros((n_boot, len(keys)))
    sets = keys.get_level_values("set_name")
    for name in dict.fromkeys(sets):
        where = np.flatnonzero(sets == name)
        calibration[:, where] = rng.multinomial(len(where), np.full(len(where), 1 / len(where)), size=n_boot)
    values = pd.concat([frame[column].astype(str) for frame in clusters.values()]).unique()
    position = {value: k for k, value in enumerate(values)}
    weights = rng.multinomial(len(values), np.full(len(values), 1 / len(values)), size=n_boot).astype(float)
    index = {model: {int(pid): position[str(value)] for pid, value in zip(frame["pair_id"], frame[column],
                                                                          strict=True)}
             for model, frame in clusters.items()}
    return Draws(calibration.astype(float), keys, weights, index)


def replicate_pac(judge: JudgeScores, models: Sequence[str], rule: str, draws: Draws) -> np.ndarray:
    """The judge's headline PAC of each model in every replicate (replicate x model), computed as the
    headline was: the class correction (stats/benchmark.class_correction's estimator and identification)
    on the replicate's calibration and benchmark counts, or the raw mean where the headline is raw; NaN
    where the headline is withheld."""
    out = np.full((draws.clusters.shape[0], len(models)), np.nan)
    correction = _calibration_counts(judge.calibration_rows, rule, draws)
    for k, model in enumerate(models):
        headline = judge.record.models[model].headline.get(METRIC)
        rows = judge.rows[model]
        if headline is None or headline.value is None:
            continue
        ok = rows[rows["parse_status"] == "ok"]
        weights = draws.clusters[:, [draws.cluster_index[model][int(pid)] for pid in ok["pair_id"]]]
        if headline.basis == BASIS_CALIBRATION:
            pooled, groups, lowest = correction
            judged = judged_classes(rows)
            observed = weights @ (judged[:, None] == np.array(PAIR_CLASSES)[None, :]).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = prevalence.estimate_shares(CORRECTION_ESTIMATOR, pooled, observed)
            out[:, k] = shares @ lowest
        else:
            values = judged_values(ok, rule)[METRIC].to_numpy(float)
            totals = weights.sum(axis=1)
            out[:, k] = np.divide(weights @ values, totals, out=np.full(totals.shape, np.nan), where=totals > 0)
    return out


def _calibration_counts(rows: pd.DataFrame, rule: str, draws: Draws) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """Per replicate, the judge's calibration counts (true x judged) with the classes it confuses pooled as
    the class correction pools them, and each pooled group's PAC (its lowest, the identified value)."""
    ok = rows[rows["parse_status"] == "ok"]
    set_names = [name for name in dict.fromkeys(ok["set_name"]) if name in CALIBRATION_SETS]
    true_classes = [SET_TRUTH[name].pair_class for name in set_names]
    judged = judged_classes(rows)
    cells = np.zeros((len(draws.calibration_keys), len(set_names) * len(PAIR_CLASSES)))
    columns = draws.calibration_keys.get_indexer(pd.MultiIndex.from_frame(ok[["set_name", "pair_id"]]))
    for row, (set_name, judged_class) in enumerate(zip(ok["set_name"], judged, strict=True)):
        if set_name in set_names:
            cells[columns[row], set_names.index(set_name) * len(PAIR_CLASSES) + PAIR_CLASSES.index(judged_class)] += 1
    counts = cells.sum(axis=0).reshape(len(set_names), len(PAIR_CLASSES))
    groups = prevalence.confused_groups(prevalence.confused_classes(counts, true_classes), true_classes)
    replicate_counts = (draws.calibration @ cells).reshape(-1, len(set_names), len(PAIR_CLASSES))
    class_pac = np.array([expected_values(name, rule)[METRIC] for name in set_names])
    return prevalence.merged_counts(replicate_counts, groups), groups, np.array([class_pac[g].min() for g in groups])


# --------------------------------------------------------------------------- the comparison


def rank_agreement(judges: Sequence[JudgeScores], models: dict[str, ScoredModel], clusters: dict[str, pd.DataFrame],
                   column: str, rule: str, n_boot: int,
                   seed: int) -> tuple[RankAgreement, dict[str, list[SelfPreference]]]:
    """Tau between every two judges' leaderboards with its interval, the flips, and each judge's
    self-preference, all from one joint resampling (`clusters`: per model, its pairs' pair_id and
    `column`, the cluster column their scores resampled)."""
    names = list(models)
    draws = joint_draws(judges, clusters, column, n_boot, seed)
    point = {judge.name: np.array([np.nan if (h := judge.record.models[m].headline.get(METRIC)) is None
                                   or h.value is None else h.value for m in names]) for judge in judges}
    replicates = {judge.name: replicate_pac(judge, names, rule, draws) for judge in judges}
    boards = {judge.name: _leaderboard(judge, names, point[judge.name], models) for judge in judges}
    taus, flips = [], []
    for a, b in combinations(judges, 2):
        both = np.isfinite(point[a.name]) & np.isfinite(point[b.name])
        tau = finite(float(kendall_tau(point[a.name][both], point[b.name][both]))) if both.sum() >= 2 else None
        ci: Interval = (None, None)
        open_pairs = None
        if tau is not None:
            ci, open_pairs = tau_interval(np.stack([point[a.name][both], point[b.name][both]]),
                                          np.stack([replicates[a.name][:, both], replicates[b.name][:, both]], axis=1))
        taus.append(RankTau(judge_a=a.name, judge_b=b.name, n_models=int(both.sum()), tau=tau, ci=ci,
                            open_pairs=open_pairs))
        flips.extend(_flips(a, b, names, point))
    agreement = RankAgreement(metric=METRIC, method=METHOD, cluster_by=column, n_clusters=int(draws.clusters.shape[1]),
                              resamples=n_boot, models=models, judges=boards, tau=taus, flips=flips)
    return agreement, self_preference(judges, names, models, point, replicates)


def _leaderboard(judge: JudgeScores, names: list[str], pac: np.ndarray,
                 models: dict[str, ScoredModel]) -> JudgeLeaderboard:
    ranked = [names[k] for k in np.argsort(-np.where(np.isfinite(pac), pac, -np.inf), kind="stable")
              if np.isfinite(pac[k])]
    return JudgeLeaderboard(family=judge.family, pac={m: finite(float(v)) for m, v in zip(names, pac, strict=True)},
                            ranking=ranked,
                            same_family=[m for m in names if judge.family and models[m].family == judge.family],
                            differences_known=judge.record.differences is not None)


def _flips(a: JudgeScores, b: JudgeScores, names: list[str], point: dict[str, np.ndarray]) -> list[Flip]:
    flips = []
    for i, j in combinations(range(len(names)), 2):
        lead_a, lead_b = point[a.name][i] - point[a.name][j], point[b.name][i] - point[b.name][j]
        if not (np.isfinite(lead_a) and np.isfinite(lead_b)) or lead_a * lead_b >= 0:
            continue
        first_a, first_b = (names[i], names[j]) if lead_a > 0 else (names[j], names[i])
        significant = (flip_significant(a.record.differences, first_a, first_b),
                       flip_significant(b.record.differences, first_a, first_b))
        flips.append(Flip(judge_a=a.name, judge_b=b.name, first_a=first_a, first_b=first_b, lead_a=abs(float(lead_a)),
                          lead_b=abs(float(lead_b)), significant_a=significant[0], significant_b=significant[1],
                          significance=_significance(significant)))
    return flips


def flip_significant(differences: list[Difference] | None, model_a: str, model_b: str) -> bool | None:
    """Whether a judge's paired PAC difference between two models is significant (either order), by the
    rule of its score (`Difference.significant`: Holm-adjusted over its model pairs); None when its scores
    carry no differences or none for this pair."""
    for row in differences or ():
        if row.metric == METRIC and {row.model_a, row.model_b} == {model_a, model_b}:
            return row.significant
    return None


def _significance(significant: tuple[bool | None, bool | None]) -> str:
    if None in significant:
        return "unknown"
    return SIGNIFICANCE[2 - sum(bool(s) for s in significant)]


def self_preference(judges: Sequence[JudgeScores], names: list[str], models: dict[str, ScoredModel],
                    point: dict[str, np.ndarray], replicates: dict[str, np.ndarray]) -> dict[str, list[SelfPreference]]:
    """Per judge with a family and models of it: against every judge of another family (or of none), the
    mean over those models of its PAC minus the other's, with the replicates' interval."""
    found: dict[str, list[SelfPreference]] = {}
    for judge in judges:
        own = np.array([judge.family is not None and models[m].family == judge.family for m in names])
        if not own.any():
            continue
        for other in judges:
            if other.family == judge.family:
                continue
            both = own & np.isfinite(point[judge.name]) & np.isfinite(point[other.name])
            if not both.any():
                continue
            difference = float(np.mean(point[judge.name][both] - point[other.name][both]))
            spread = np.mean(replicates[judge.name][:, both] - replicates[other.name][:, both], axis=1)
            ci = _interval(spread)
            found.setdefault(judge.name, []).append(SelfPreference(
                family=str(judge.family), models=[m for m, keep in zip(names, both, strict=True) if keep],
                versus=other.name, versus_family=other.family, difference=difference, ci=ci,
                favours_own=ci[0] is not None and ci[0] > 0))
    return found


def _interval(draws: np.ndarray | None) -> Interval:
    if draws is None or not np.isfinite(draws).any():
        return (None, None)
    low, high = percentile_interval(draws[np.isfinite(draws)])
    return (finite(float(low)), finite(float(high)))
