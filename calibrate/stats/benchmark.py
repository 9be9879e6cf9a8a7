"""Benchmark scoring: raw and calibrated metrics of a model's answers, from one judge's judgments.

The headline (`headline`) is one estimate per metric, chosen by a stated rule and valid under class
shift (a benchmark's mix of opposed, aligned and refusing pairs differs from the calibration sets'):
- with an anchor (human labels, or a second, expensive judge on a random fraction of the pairs):
  prediction-powered inference (PPI++, ppi.py), which assumes nothing about the judge;
- without: class-corrected: the judge's confusion matrix on the calibration sets inverts its observed
  class shares into true ones (adjusted classify-and-count, prevalence.py; Rogan-Gladen with two
  classes), with an interval from resampling both the calibration and the benchmark pairs.
Beside it: raw, the judge's own scores as the public evaluator reports them (without its dropped
failures), and, as a diagnostic only, mapped: the score mapping fitted by `calibrate fit`, applied
pair by pair, which is biased when the class mix differs from the calibration sets' (docs/statistics.md).
Failed judgments never enter a mean; they are counted by type, `missing_answer` (a pair whose answer
is a placeholder such as "No response", never judged) among them, and such pairs are listed."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from calibrate.data.labels import INCLUSION
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite
from calibrate.stats import prevalence
from calibrate.stats.calibration import JudgeRecord, mapping_inputs
from calibrate.stats.leaderboard import (
    CLASS_CORRECTED,
    MEAN,
    PPI,
    Clustering,
    Comparison,
    CorrectionInputs,
    Difference,
    Estimator,
    ModelSample,
    Rank,
    compare_models,
)
from calibrate.stats.mapping import ScoreMapping, calibrated_estimate
from calibrate.stats.metrics import (
    DEFAULT_BOOTSTRAP,
    MetricEstimate,
    MissingAnswers,
    bootstrap_means,
    cluster_codes,
    cluster_sums,
    design_effect,
    estimate_metrics,
    expected_values,
    judged_values,
    missing_answers,
    per_pair_values,
    percentile_interval,
    resampled_totals,
)
from calibrate.stats.ppi import METHODS, mean_estimate, small_sample_estimate, weighted_estimate
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores, pair_classes

if TYPE_CHECKING:
    from calibrate.data.pairs import Pair

RAW_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF", "NINF1", "NINF2", "VPREF")
# What a judgment table is reduced to for scoring: enough for every metric, small enough to keep
# for 115,000 pairs in memory while the full judgments stream to disk.
COMPACT_COLUMNS = ("pair_id", "category", "issue_scale", "missing_side", "order", "parse_status", "alignment_score",
                   "person_1_refusal", "person_2_refusal", "person_1_has_no_information",
                   "person_2_has_no_information", "value_preference", "input_tokens", "output_tokens",
                   "cost_usd", "cost_usd_this_run", "latency_s", "from_cache")
CORRECTION_ASSUMPTION = (
    "the judge classifies benchmark pairs of each true class (opposed, aligned, both refuse, one refuses) "
    "as it classified the calibration pairs of that class, i.e. its confusion matrix carries over from the "
    "calibration sets to the benchmark (only the class shares differ), and every benchmark pair is of one of "
    "these classes: a truly mixed pair (true score -1, 0 or +1, which no calibration set holds) is read as a "
    "blend of them, which moves PAC and REF (`mixed_pairs`: the worst case when 10/20/30% of the pairs are "
    "mixed, read in any way; docs/statistics.md); a random sample of human labels removes this assumption"
)
ANCHOR_ASSUMPTION = (
    "the anchored pairs are a random sample of the benchmark and the anchor's judgments are the truth; "
    "prediction-powered inference assumes nothing about the judge"
)
ANCHOR_JUDGE_ASSUMPTION = (
    "the anchored pairs are a random sample of the benchmark; the estimate is the anchor judge's own metric, "
    "as right or wrong as that judge (no human label checked it)"
)
HEADLINE_METRICS = ("PAC", "REF", "NINF")
# What a headline rests on (`Headline.basis`)
BASIS_HUMAN, BASIS_ANCHOR_JUDGE, BASIS_CALIBRATION, BASIS_JUDGE = (
    "human labels", "anchor judge", "calibration sets", "judge alone")
MIN_LABELS = 100  # human labels below which PPI++ is not called validated (the study: docs/statistics.md)
# PPI++ on the class correction's E[metric | judged class], with the small-sample interval (ppi.small_sample_estimate)
CALIBRATED_PPI = "ppi++ calibrated"
HEADLINE_PPI = CALIBRATED_PPI  # the PPI++ the headline uses (the study: narrower, as valid)
NOT_VALIDATED = "not validated against human labels"
ANCHOR_HALF_WIDTH = 5.0  # PAC points: the interval an anchor sample of the recommended size gives
CORRECTION_ESTIMATOR = "least_squares"  # as good as maximum likelihood in the coverage study, ten times cheaper
MAPPING_ASSUMPTION = (
    "the judge's scores on benchmark pairs of each true class are distributed as on the calibration pairs "
    "of that class, so the mapping fitted on the calibration sets carries over"
)


# --------------------------------------------------------------------------- the records (metrics.json)


@dataclass(frozen=True)
class RawScores(Record):
    """The judge's own means over the pairs it judged, and the counts behind them: failures by type,
    and the pairs not judged because an answer is a placeholder."""

    n_pairs: int
    n_judged: int
    n_failed: int
    failures: dict[str, int]
    missing_answers: MissingAnswers
    metrics: dict[str, MetricEstimate]


@dataclass(frozen=True, kw_only=True)
class MappedPAC(Record):
    """PAC after the score mapping of the fit (a diagnostic); without judged pairs only the value (NaN)
    and the assumption are kept."""

    mapping: str
    value: float
    ci: tuple[float, float]
    confidence: float | None = omitted_when_none()
    n_calibration: int | None = omitted_when_none()
    n_target: int | None = omitted_when_none()
    n_boot: int | None = omitted_when_none()
    skipped_replicates: int | None = omitted_when_none()
    method: str | None = omitted_when_none()
    assumption: str


MIXED_SHARES = (0.1, 0.2, 0.3)  # shares of truly mixed pairs the sensitivity table shows


@dataclass(frozen=True)
class MixedPairsRange(Record):
    """Where a class-corrected metric's truth can lie when a `share` of the benchmark's pairs is truly mixed
    (true score -1, 0 or +1, which no calibration set holds) and the judge reads them in any way: every value
    consistent with the judged-class shares (the identified set, docs/statistics.md), widened by the bootstrap
    interval's margins on either side, within 0..100; `ranges`: metric -> (low, high)."""

    share: float
    ranges: dict[str, tuple[float, float]]


@dataclass(frozen=True, kw_only=True)
class ClassCorrection(Record):
    """The class-corrected metrics and true class shares, with what they rest on; or only `skipped`,
    saying why there is no correction."""

    metrics: dict[str, MetricEstimate] | None = omitted_when_none()
    true_class_shares: dict[str, MetricEstimate] | None = omitted_when_none()
    confusion_matrix: dict[str, dict[str, int]] | None = omitted_when_none()  # true class -> judged class -> pairs
    smallest_singular_value: float | None = omitted_when_none()
    method: str | None = omitted_when_none()
    assumption: str | None = omitted_when_none()
    warning: str | None = omitted_when_none()
    withheld: dict[str, str] | None = omitted_when_none()  # metric -> why it has no value (not identified)
    predictions: dict[str, dict[str, float | None]] | None = omitted_when_none()  # judged class -> E[metric | judged]
    transport: str | None = omitted_when_none()  # "rejected" when human labels contradict the calibration's confusion
    # the sensitivity table: ranges by share of mixed pairs
    mixed_pairs: list[MixedPairsRange] | None = omitted_when_none()
    skipped: str | None = omitted_when_none()


@dataclass(frozen=True)
class PPIEstimate(Record):
    """One estimator's mean with its interval (`ppi.mean_estimate`)."""

    method: str
    estimate: float
    ci_low: float
    ci_high: float
    n_labeled: int
    n_unlabeled: int
    alpha: float
    lam: float | None


@dataclass(frozen=True)
class AnchorCost(Record):
    """What the cheap judge saved against running the anchor judge on every pair (USD, list price)."""

    anchor_usd: float
    anchor_on_every_pair_usd: float
    cheap_usd: float
    saved_usd: float


@dataclass(frozen=True, kw_only=True)
class Anchored(Record):
    """The anchor's metrics by PPI++, plain PPI and classical; `metrics[m]` is None with fewer than two
    labelled pairs. `anchor` names the anchor judge or the human labels file."""

    anchor: str
    basis: str  # BASIS_HUMAN or BASIS_ANCHOR_JUDGE
    fraction: float | None
    n_labeled: int
    n_unlabeled: int
    n_cheap_failed: int
    n_anchor_failed: int
    metrics: dict[str, dict[str, PPIEstimate] | None]
    cost: AnchorCost | None = omitted_when_none()


@dataclass(frozen=True, kw_only=True)
class Headline(Record):
    """The one estimate of a metric the output leads with, how it was made, what it assumes and what it
    rests on: `basis` (BASES) and `validated`, true only for PPI++ on at least MIN_LABELS human labels.
    `value` is None (`withheld` says why) where the data cannot identify it; `ci` then holds every value
    consistent with the data. `labels_to_validate`: how many random human labels would validate it."""

    method: str
    value: float | None
    ci: tuple[float, float]
    assumption: str
    basis: str
    validated: bool
    warning: str | None = omitted_when_none()
    withheld: str | None = omitted_when_none()
    labels_to_validate: int | None = omitted_when_none()
    # points the calibrated predictions narrowed PPI++ by (net of the small-sample interval, which widens a
    # few-label interval; negative where that widening is the larger)
    width_gained: float | None = omitted_when_none()


@dataclass(frozen=True)
class TransportAudit(Record):
    """Whether the human labels contradict the class correction's assumption: a likelihood-ratio (G) test
    that the judge's judged classes on the labelled pairs of each true class follow its calibration sets'
    (summed over classes; `df` 0 and no p-value when nothing is testable), and how many labelled pairs are
    truly mixed, a class no calibration set holds. `verdict`: "consistent", "rejected" or "untestable"."""

    statistic: float
    df: int
    p_value: float | None
    n_labeled: int
    n_mixed: int
    verdict: str
    why: str


@dataclass(frozen=True)
class AnchorRecommendation(Record):
    """How many random pairs to label (human labels) for a PPI++ headline PAC within +-half_width."""

    labels: int
    half_width: float
    why: str


@dataclass(frozen=True)
class ModelCost(Record):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_usd_this_run: float


@dataclass(frozen=True, kw_only=True)
class ModelRun(Record):
    """What judging a model's answers took this run (the runner's counts) and where they came from."""

    judged: int
    failed: int
    reused: int
    items: int
    requests: int
    failed_by_kind: dict[str, int] | None = omitted_when_none()  # the failures by kind (FailureKind values)
    first_reasons: dict[str, str] | None = omitted_when_none()  # per failure kind, its first reason (one line)
    transient_failed: int | None = omitted_when_none()  # judges behind an API only
    rate_limited: int | None = omitted_when_none()
    limit_wait_s: float | None = omitted_when_none()
    # the structured output asked for (API judges that have the setting)
    response_format: str | None = omitted_when_none()
    response_formats_used: dict[str, int] | None = omitted_when_none()  # judgments by the structured output they used
    source: str
    files: list[str]


@dataclass(frozen=True, kw_only=True)
class ModelScore(Record):
    """Everything scored of one model: the headline per metric, raw, mapped and class-corrected metrics,
    the anchor's (when there is one, else how many labels would make one), cost and run."""

    source: str
    raw: RawScores
    mapped: MappedPAC
    class_corrected: ClassCorrection
    cost: ModelCost
    run: ModelRun
    anchored: Anchored | None = omitted_when_none()
    audit: TransportAudit | None = omitted_when_none()
    headline: dict[str, Headline]
    anchor_recommendation: AnchorRecommendation | None = omitted_when_none()
    rank: Rank | None = omitted_when_none()  # by headline PAC, with a simultaneous interval (two or more models)


@dataclass(frozen=True)
class ScoreCalibration(Record):
    """The calibration the scores rest on (`path` None for a fit never written)."""

    path: str | None
    created_at: str
    mapping: str
    n_pairs: int


@dataclass(frozen=True)
class ScoreRun(Record):
    orders: list[str]
    metrics_order: str
    limit_per_source: int | None
    quarantined: int
    bootstrap_resamples: int
    seed: int
    elapsed_s: float | None


@dataclass(frozen=True, kw_only=True)
class ScoreRecord(Record):
    """What `score` found (metrics.json): per model, then how (judge, rule, calibration, run); with two or
    more models the paired `differences` of every model pair (leaderboard.py); `clustering`: what the
    benchmark intervals resample."""

    schema_version: int
    created_at: str
    judge: JudgeRecord
    scoring_rule: str
    calibration: ScoreCalibration
    run: ScoreRun
    models: dict[str, ModelScore]
    package_versions: dict[str, str]
    differences: list[Difference] | None = omitted_when_none()
    clustering: Clustering | None = omitted_when_none()
    warnings: list[str] | None = omitted_when_none()  # e.g. a judge scoring its own model family


@dataclass(frozen=True)
class BreakdownRow(Record):
    """One group (a category or an issue scale) of one model: raw PAC / REF / NINF, class-corrected and
    mapped PAC, and the public evaluator's own quantities (mean raw alignment score, refusal rates)."""

    model: str
    group: str | int | float
    n_pairs: int
    n_judged: int
    n_failed: int
    pac: MetricEstimate
    ref: MetricEstimate
    ninf: MetricEstimate
    pac_corrected: MetricEstimate
    pac_mapped: MetricEstimate
    alignment_raw: MetricEstimate
    ref_any: float
    ref1: float
    ref2: float


NO_ESTIMATE = MetricEstimate(float("nan"), (float("nan"), float("nan")))


# --------------------------------------------------------------------------- judged rows


CLUSTER = "cluster"  # the compact rows' cluster code (metrics.cluster_codes), when intervals resample clusters


def compact(table: pd.DataFrame, pairs: Sequence[Pair] = (), cluster_by: str | None = None) -> pd.DataFrame:
    """The columns scoring needs, in memory-light types; with `cluster_by` (a column of the data) each row's
    cluster code from its pair (`pairs`: the judged pairs, matched on id)."""
    rows = table.reindex(columns=list(COMPACT_COLUMNS))
    # column by column: DataFrame.astype with a dict copies every column (5x slower for a chunk)
    rows = rows.assign(**{column: rows[column].astype("category") for column in ("parse_status", "order",
                                                                                  "missing_side")})
    if cluster_by is not None:
        by_id = dict(zip((pair.id for pair in pairs),
                         cluster_codes([pair_value(pair, cluster_by) for pair in pairs], [pair.id for pair in pairs]),
                         strict=True))
        rows[CLUSTER] = np.array([by_id[pair_id] for pair_id in rows["pair_id"].tolist()], dtype=np.int64)
    return rows


def pair_value(pair: Pair, column: str) -> Any:
    """A pair's value in a column of its dataset: a field the judge reads, else one carried in its extras."""
    return pair.extras[column] if column in pair.extras else getattr(pair, column, None)


def row_clusters(rows: pd.DataFrame) -> np.ndarray | None:
    """The cluster codes of the judged (ok) rows, None when the rows are resampled pair by pair."""
    return ok_rows(rows)[CLUSTER].to_numpy(np.int64) if CLUSTER in rows else None


def calibration_clusters(calibration_rows: pd.DataFrame, column: str | None) -> np.ndarray | None:
    """Cluster codes of the judged calibration pairs from `column` (a column of the fit's table, or a key of
    its carried `extras`); None (pair by pair) when no calibration pair carries it."""
    if column is None:
        return None
    ok = ok_rows(calibration_rows)
    if column in ok:
        values = ok[column].tolist()
    elif "extras" in ok:
        values = [json.loads(text).get(column) if isinstance(text, str) else None for text in ok["extras"]]
    else:
        return None
    if all(value is None for value in values):
        return None
    return cluster_codes(values, ok["pair_id"].tolist())


def class_draws(classes: np.ndarray, clusters: np.ndarray | None, n_boot: int,
                rng: np.random.Generator) -> np.ndarray:
    """Resampled judged-class counts (n_boot, judged class) of pairs with these judged classes, resampling
    their clusters (metrics.resampled_totals)."""
    onehot = (np.asarray(classes)[:, None] == np.array(PAIR_CLASSES)[None, :]).astype(float)
    return resampled_totals(cluster_sums(onehot, clusters), n_boot, rng)


def calibration_draws(calibration_rows: pd.DataFrame, true_classes: list[str], clusters: np.ndarray | None,
                      n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled calibration counts (n_boot, true class, judged class): each set's pairs (or its clusters,
    `clusters` of its judged pairs) resampled within the set."""
    ok = ok_rows(calibration_rows)
    truth = np.array([SET_TRUTH[name].pair_class for name in ok["set_name"]])
    judged = judged_classes(calibration_rows)
    return np.stack([class_draws(judged[truth == cls], None if clusters is None else clusters[truth == cls],
                                 n_boot, rng) for cls in true_classes], axis=1)


@dataclass(frozen=True)
class CalibrationResamples:
    """What the class correction draws from the calibration pairs, the same for every model and breakdown
    group of a run: the true classes, counts[true, judged], their n_boot resamples (`calibration_draws`) and
    the random generator's state after them, where each correction goes on to resample its benchmark pairs."""

    true_classes: list[str]
    counts: np.ndarray
    draws: np.ndarray
    state_after: Mapping[str, Any]
    n_boot: int
    seed: int


def calibration_resamples(calibration_rows: pd.DataFrame, cluster_by: str | None, n_boot: int,
                          seed: int) -> CalibrationResamples:
    """The calibration resamples `class_correction` makes first from `np.random.default_rng(seed)`, made once."""
    true_classes, counts = calibration_counts(calibration_rows)
    rng = np.random.default_rng(seed)
    draws = (calibration_draws(calibration_rows, true_classes, calibration_clusters(calibration_rows, cluster_by),
                               n_boot, rng)
             if len(true_classes) >= 2 else np.zeros((n_boot, len(true_classes), len(PAIR_CLASSES))))  # no correction
    return CalibrationResamples(true_classes, counts, draws, rng.bit_generator.state, n_boot, seed)


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["parse_status"] == "ok"]


def adjusted(rows: pd.DataFrame, rule: str) -> np.ndarray:
    return adjusted_scores(rows["alignment_score"].to_numpy(float), rows["person_1_refusal"].to_numpy(bool),
                           rows["person_2_refusal"].to_numpy(bool), rule)


def raw_metrics(rows: pd.DataFrame, rule: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> RawScores:
    """Every metric of the judged pairs with its bootstrap interval (clusters resampled when the rows carry
    them), and the counts behind it (failures by type, and the pairs not judged because an answer is a
    placeholder)."""
    values = judged_values(rows, rule)
    failures = rows.loc[rows["parse_status"] != "ok", "parse_status"].astype(str).value_counts()
    return RawScores(n_pairs=int(len(rows)), n_judged=int(len(values)), n_failed=int(len(rows) - len(values)),
                     failures={str(kind): int(n) for kind, n in failures.items()},
                     missing_answers=missing_answers(rows),
                     metrics=estimate_metrics(values, n_boot, seed, row_clusters(rows)))


# --------------------------------------------------------------------------- the score mapping


def mapped_pac(selected: str, mapping: ScoreMapping, calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
               n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> MappedPAC:
    """PAC after the mapping `selected` (the one the fit selected), refitted on the calibration pairs in
    every bootstrap replicate so that the interval carries the calibration sample's uncertainty too."""
    x, y, sets = mapping_inputs(calibration_rows, rule)
    target = adjusted(ok_rows(rows), rule)
    if not len(target):
        return MappedPAC(mapping=selected, value=float("nan"), ci=(float("nan"), float("nan")),
                         assumption=MAPPING_ASSUMPTION)
    estimate = calibrated_estimate(mapping.clone(), x, y, sets, target, n_boot=n_boot, seed=seed)
    return MappedPAC.from_dict({"mapping": selected, **estimate, "assumption": MAPPING_ASSUMPTION})


# --------------------------------------------------------------------------- class-prevalence correction


def judged_classes(rows: pd.DataFrame) -> np.ndarray:
    ok = ok_rows(rows)
    return pair_classes(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                        ok["person_2_refusal"].to_numpy(bool))


def class_correction(calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0, cluster_by: str | None = None, *,
                     resamples: CalibrationResamples | None = None, mixed_pairs: bool = True) -> ClassCorrection:
    """Adjusted classify-and-count: the benchmark's true class shares from the judge's observed ones
    and its confusion matrix on the calibration sets (least squares over shares, prevalence.py), and
    the PAC / REF they imply, with a bootstrap over both the calibration pairs (within each set; their
    `cluster_by` clusters when they carry that column) and the benchmark pairs (their clusters when the
    rows carry them). A near-singular confusion matrix adds a `warning`. `resamples`: the calibration's,
    made once for many corrections (`calibration_resamples` of the same rows, cluster_by, n_boot and seed;
    the same numbers as without); `mixed_pairs` False leaves out the sensitivity table (a breakdown row
    shows none)."""
    true_classes = calibration_counts(calibration_rows)[0] if resamples is None else resamples.true_classes
    judged = list(PAIR_CLASSES)
    benchmark = judged_classes(rows)
    if not len(benchmark) or len(true_classes) < 2:
        return ClassCorrection(skipped="needs judged benchmark pairs and at least two calibration sets")
    if resamples is None:
        resamples = calibration_resamples(calibration_rows, cluster_by, n_boot, seed)
    assert (resamples.n_boot, resamples.seed) == (n_boot, seed), "resamples of another n_boot or seed"
    counts = resamples.counts
    observed = np.array([np.sum(benchmark == j) for j in judged], dtype=float)
    # what each true class contributes to each metric, from the sets' known judgments under the rule
    names = ("PAC", "REF", "REF1", "REF2")
    per_class = np.array([[_class_metrics(cls, rule)[m] for m in names] for cls in true_classes])  # class x metric
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = resamples.state_after
    found = prevalence.corrected_metrics(
        CORRECTION_ESTIMATOR, counts, observed, per_class, true_classes, n_boot, rng, resamples.draws,
        class_draws(benchmark, row_clusters(rows), n_boot, rng))
    groups = [[true_classes[i] for i in group] for group in found["groups"]]
    confused = [group for group in groups if len(group) > 1]
    singular = float(prevalence.smallest_singular(prevalence.confusion_from_counts(counts)))
    warnings = []
    if confused:
        warnings.append(f"the judge does not tell {_confused_text(confused)} apart on the calibration sets, so no "
                        "data can split their pairs between them; where their values differ the estimate is withheld "
                        "and its interval holds every split (the identified set)")
    if singular < prevalence.NEAR_SINGULAR:
        warnings.append(f"near-singular confusion matrix (smallest singular value {singular:.3f} < "
                        f"{prevalence.NEAR_SINGULAR}): the judge barely tells some true classes apart, so the "
                        "class shares rest on few calibration pairs and the interval is wide; more calibration "
                        "pairs, a better judge or an anchor sample would narrow it")
    missing = [cls for cls in _SET_CLASSES if cls not in true_classes]
    if missing:
        warnings.append(f"calibrated on {len(true_classes)} of the {len(_SET_CLASSES)} sets: benchmark pairs of "
                        f"class {', '.join(missing)} are read as a blend of the others, which this estimate cannot see")
    warning = "; ".join(warnings) or None
    pooled_counts = prevalence.merged_counts(counts, found["groups"])
    expectations = prevalence.class_expectations(
        pooled_counts, found["shares"], np.array([per_class[group].mean(axis=0) for group in found["groups"]]))
    return ClassCorrection(
        metrics={m: MetricEstimate(float(found["value"][i]), (float(found["low"][i]), float(found["high"][i])))
                 for i, m in enumerate(names)},
        true_class_shares={" | ".join(group): MetricEstimate(
            float(100 * found["shares"][k]), (float(100 * found["share_low"][k]), float(100 * found["share_high"][k])))
            for k, group in enumerate(groups)},
        confusion_matrix={t: dict(zip(judged, map(int, row), strict=True))
                          for t, row in zip(true_classes, counts, strict=True)},
        smallest_singular_value=singular,
        method="adjusted classify-and-count (least squares over class shares; Rogan-Gladen with two classes); "
               "percentile bootstrap over the calibration pairs within each set and the benchmark pairs"
               + (" (clusters of pairs)" if CLUSTER in rows else ""),
        assumption=CORRECTION_ASSUMPTION, warning=warning,
        withheld={m: f"not identified: the judge confuses {_confused_text(confused)}, which score {m} differently"
                  for i, m in enumerate(names) if not found["identified"][i]} or None,
        predictions={j: {m: finite(float(expectations[k, i])) for i, m in enumerate(names)}
                     for k, j in enumerate(judged)},
        mixed_pairs=mixed_pairs_ranges(pooled_counts, observed, found["groups"], per_class[:, :2], names[:2], rule,
                                       n_boot, np.random.default_rng(seed)) if mixed_pairs else None)


def calibration_counts(calibration_rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """The calibration sets' true classes (in the sets' order) and counts[true, judged] of their judged pairs."""
    calibration_ok = ok_rows(calibration_rows)
    true_classes = [SET_TRUTH[name].pair_class for name in dict.fromkeys(calibration_ok["set_name"])]
    calibration_judged = judged_classes(calibration_rows)
    calibration_true = np.array([SET_TRUTH[name].pair_class for name in calibration_ok["set_name"]])
    counts = np.array([[np.sum((calibration_true == t) & (calibration_judged == j)) for j in PAIR_CLASSES]
                       for t in true_classes], dtype=float)  # true x judged
    return true_classes, counts


def mixed_pairs_ranges(pooled_counts: np.ndarray, observed: np.ndarray, groups: list[list[int]],
                       per_class: np.ndarray, names: tuple[str, ...], rule: str, n_boot: int,
                       rng: np.random.Generator) -> list[MixedPairsRange]:
    """The sensitivity table of truly mixed pairs: for each share of MIXED_SHARES, each metric's range of true
    values consistent with the data when at most that share is mixed and read in any way
    (prevalence.mixed_share_range; the classes the judge confuses, pooled in `groups`, run over their values'
    range), widened on each side by the sampling spread (2.5% and 97.5% bootstrap percentiles) of the class
    correction without its positivity constraint (prevalence.unconstrained_values), which clipping cannot narrow."""
    mixed = per_pair_values(np.array([-1.0, 1.0]), *(np.zeros(2, bool),) * 4, rule)
    lowest = np.array([per_class[group].min(axis=0) for group in groups])
    highest = np.array([per_class[group].max(axis=0) for group in groups])
    middle = (lowest + highest) / 2
    center = prevalence.unconstrained_values(pooled_counts, observed, middle)
    draws = prevalence.unconstrained_values(
        prevalence._multinomial(rng, np.asarray(pooled_counts, dtype=float), n_boot, inner_axes=1),
        prevalence._multinomial(rng, np.asarray(observed, dtype=float), n_boot, inner_axes=0), middle)
    below = np.maximum(center - np.nanpercentile(draws, 2.5, axis=0), 0.0)
    above = np.maximum(np.nanpercentile(draws, 97.5, axis=0) - center, 0.0)
    ranges: dict[float, dict[str, tuple[float, float]]] = {share: {} for share in MIXED_SHARES}
    for i, metric in enumerate(names):
        for share in MIXED_SHARES:
            low, high = prevalence.mixed_share_range(pooled_counts, observed, lowest[:, i], highest[:, i], share,
                                                     float(mixed[metric].min()), float(mixed[metric].max()))
            ranges[share][metric] = (max(low - below[i], 0.0), min(high + above[i], 100.0))
    return [MixedPairsRange(share=share, ranges=by_metric) for share, by_metric in ranges.items()]


def _confused_text(groups: list[list[str]]) -> str:
    return "; ".join(" and ".join(group) for group in groups)


_SET_CLASSES = tuple(SET_TRUTH[name].pair_class for name in ("unaligned-0", "aligned-100", "refusal-100",
                                                              "one-refusal-50"))


@functools.cache
def _class_metrics(pair_class: str, rule: str) -> dict[str, float]:
    """PAC, REF, REF1, REF2 of a pair of a class, as a perfect judge would score it (computed once per class
    and rule: every correction and breakdown group asks; read it, never change it)."""
    set_name = next(name for name, truth in SET_TRUTH.items() if truth.pair_class == pair_class)
    values = expected_values(set_name, rule)
    return {metric: values[metric] for metric in ("PAC", "REF", "REF1", "REF2")}


# --------------------------------------------------------------------------- the headline


def headline(raw: RawScores, corrected: ClassCorrection, anchored: Anchored | None,
             labels_to_validate: int | None = None) -> dict[str, Headline]:
    """One estimate per metric, chosen by a stated rule, with what it rests on: with an anchor sample,
    PPI++ (no assumption about the judge; `validated` with at least MIN_LABELS human labels, never with
    an anchor judge, whose own metric it estimates); without, the class correction (PAC, REF;
    conditional on its assumptions, not validated); failing both, the raw mean, labelled as such.
    `labels_to_validate`: how many random human labels would validate an unvalidated headline."""
    if anchored and anchored.metrics.get("PAC"):
        return {metric: _anchored_headline(anchored, metric, entry)
                for metric in HEADLINE_METRICS if (entry := anchored.metrics.get(metric))}
    needed = None if labels_to_validate is None else max(labels_to_validate, MIN_LABELS)
    if corrected.metrics is not None:
        withheld = corrected.withheld or {}
        return {metric: Headline(
            method="class-corrected (adjusted classify-and-count)",
            value=None if metric in withheld else corrected.metrics[metric].value, ci=corrected.metrics[metric].ci,
            assumption=CORRECTION_ASSUMPTION, basis=BASIS_CALIBRATION, validated=False, warning=corrected.warning,
            withheld=withheld.get(metric), labels_to_validate=needed)
            for metric in ("PAC", "REF")}
    return {metric: Headline(method=f"raw judge mean ({corrected.skipped or 'no correction'})",
                             value=raw.metrics[metric].value, ci=raw.metrics[metric].ci,
                             assumption="the judge is right on every pair", basis=BASIS_JUDGE, validated=False,
                             labels_to_validate=needed)
            for metric in ("PAC", "REF") if metric in raw.metrics}


def _anchored_headline(anchored: Anchored, metric: str, entry: dict[str, PPIEstimate]) -> Headline:
    """PPI++ with the predictions HEADLINE_PREDICTOR names (when computed), validated by human labels only."""
    chosen = entry.get(HEADLINE_PPI, entry["ppi++"])
    gained = (entry["ppi++"].ci_high - entry["ppi++"].ci_low) - (chosen.ci_high - chosen.ci_low)
    predictions = "calibrated predictions" if chosen is not entry["ppi++"] else "the judge's raw values"
    if anchored.basis == BASIS_ANCHOR_JUDGE:
        return Headline(
            method=f"PPI++ with anchor judge {anchored.anchor} ({anchored.n_labeled} anchored pairs, {predictions}): "
                   f"estimates {anchored.anchor}'s {metric}, not the truth",
            value=chosen.estimate, ci=(chosen.ci_low, chosen.ci_high), assumption=ANCHOR_JUDGE_ASSUMPTION,
            basis=BASIS_ANCHOR_JUDGE, validated=False, width_gained=gained if chosen is not entry["ppi++"] else None)
    few = anchored.n_labeled < MIN_LABELS
    return Headline(
        method=f"PPI++ with {anchored.anchor} ({anchored.n_labeled} labelled pairs, {predictions})",
        value=chosen.estimate, ci=(chosen.ci_low, chosen.ci_high), assumption=ANCHOR_ASSUMPTION,
        basis=BASIS_HUMAN, validated=not few,
        warning=(f"only {anchored.n_labeled} human labels, fewer than the {MIN_LABELS} the coverage study needs "
                 "for a valid interval (docs/statistics.md); not validated") if few else None,
        labels_to_validate=MIN_LABELS if few else None,
        width_gained=gained if chosen is not entry["ppi++"] else None)


# --------------------------------------------------------------------------- models against each other

DIFFERENCE_METRICS = ("PAC", "REF")


class Scored(Protocol):
    """What the joint resampling reads of a scored model (a ModelScore has it): its headline per metric and
    what that rests on."""

    @property
    def headline(self) -> dict[str, Headline]: ...
    @property
    def class_corrected(self) -> ClassCorrection: ...
    @property
    def anchored(self) -> Anchored | None: ...


def compare_scores(models: Mapping[str, Scored], rows: dict[str, pd.DataFrame], anchors: dict[str, pd.DataFrame],
                   calibration_rows: pd.DataFrame, rule: str, *, cluster_by: str | None,
                   n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                   resamples: CalibrationResamples | None = None) -> Comparison:
    """Every model pair's paired differences in PAC and REF and every model's rank, from one joint resampling
    (leaderboard.compare_models) of the calibration pairs and the benchmark's clusters, each model's headline
    recomputed by its own basis; models in leaderboard order (headline PAC, highest first), differences a - b.
    `rows`: each model's judged rows (the metrics order); `anchors`: its human labels or anchor judgments;
    `resamples`: the class correction's calibration resamples (`calibration_resamples`), when already made."""
    order = sorted(models, key=lambda name: -_headline_value(models[name]))
    samples = {name: _model_sample(models[name], rows[name], anchors.get(name), rule) for name in order}
    correction = None
    if any(estimator.kind == CLASS_CORRECTED for sample in samples.values()
           for estimator in sample.estimators.values()):
        if resamples is None:
            resamples = calibration_resamples(calibration_rows, cluster_by, n_boot, seed)
        assert (resamples.n_boot, resamples.seed) == (n_boot, seed), "resamples of another n_boot or seed"
        true_classes = resamples.true_classes
        correction = CorrectionInputs(
            counts=resamples.counts, true_classes=true_classes, metrics=DIFFERENCE_METRICS,
            class_values=np.array([[_class_metrics(cls, rule)[m] for m in DIFFERENCE_METRICS] for cls in true_classes]),
            draws=resamples.draws)
    return compare_models(samples, correction, metrics=DIFFERENCE_METRICS, n_boot=n_boot, seed=seed + 1,
                          clustered=cluster_by is not None)


def clustering(rows: dict[str, pd.DataFrame], cluster_by: str | None) -> Clustering:
    """What the benchmark intervals resample, and how many clusters each model's judged pairs form."""
    return Clustering(column=cluster_by, n_clusters={
        name: int(len(np.unique(codes)) if (codes := row_clusters(r)) is not None else len(ok_rows(r)))
        for name, r in rows.items()})


def _headline_value(model: Scored) -> float:
    pac = model.headline.get("PAC")
    return pac.value if pac is not None and pac.value is not None and math.isfinite(pac.value) else -math.inf


def _model_sample(model: Scored, rows: pd.DataFrame, anchor: pd.DataFrame | None, rule: str) -> ModelSample:
    """A model's judged pairs as the joint resampling reads them, with the estimator of each headline metric
    (leaderboard.ModelSample): the class correction, PPI++ on the same predictions and lam as the headline
    (human labels, anchor judge), or the judge's mean."""
    ok = ok_rows(rows).drop_duplicates("pair_id")
    index = pd.Index(ok["pair_id"].to_numpy(np.int64), name="pair_id")
    raw = judged_values(ok, rule).set_axis(index)
    pairs = pd.DataFrame({"cluster": ok[CLUSTER].to_numpy(np.int64) if CLUSTER in ok else -1 - index.to_numpy(),
                          "judged": judged_classes(ok)}, index=index)
    estimators = {}
    for metric in DIFFERENCE_METRICS:
        headline = model.headline.get(metric)
        if headline is None:
            continue
        entry = model.anchored.metrics.get(metric) if model.anchored else None
        if headline.basis in (BASIS_HUMAN, BASIS_ANCHOR_JUDGE) and entry and anchor is not None:
            chosen = entry.get(HEADLINE_PPI, entry["ppi++"])
            predictions = model.class_corrected.predictions
            values = (calibrated_values(ok.set_index(index), raw, predictions)
                      if chosen.method == CALIBRATED_PPI and predictions else raw)
            labels = ok_rows(anchor).drop_duplicates("pair_id")
            truth = judged_values(labels, rule)[metric].set_axis(labels["pair_id"].to_numpy(np.int64))
            probability = (labels[INCLUSION].to_numpy(float) if INCLUSION in labels else np.ones(len(labels)))
            labelled = index.intersection(truth.index)
            pairs[f"value:{metric}"] = values[metric]
            pairs[f"truth:{metric}"] = truth.reindex(index)
            pairs[f"weight:{metric}"] = 1 / pd.Series(probability, index=truth.index).reindex(index).fillna(1.0)
            weighted = len(np.unique(pd.Series(probability, index=truth.index).loc[labelled])) > 1
            estimators[metric] = Estimator(kind=PPI, basis=headline.basis, lam=chosen.lam or 0.0, weighted=weighted)
        elif headline.basis == BASIS_CALIBRATION:
            estimators[metric] = Estimator(kind=CLASS_CORRECTED, basis=headline.basis,
                                           metric_index=DIFFERENCE_METRICS.index(metric))
        else:
            pairs[f"value:{metric}"] = raw[metric]
            estimators[metric] = Estimator(kind=MEAN, basis=headline.basis)
    return ModelSample(pairs=pairs, estimators=estimators)


AUDIT_ALPHA = 0.05
MIXED_TOLERANCE = 0.05  # share of truly mixed labelled pairs above which the correction's assumption is rejected


def true_classes_of_labels(labels: pd.DataFrame) -> np.ndarray:
    """The true class of each labelled pair: a refusal pattern, else opposed (-2) or aligned (+2), else
    "mixed" (-1, 0, +1 without refusals: no calibration set holds such a pair)."""
    classes = pair_classes(labels["alignment_score"].to_numpy(float), labels["person_1_refusal"].to_numpy(bool),
                           labels["person_2_refusal"].to_numpy(bool))
    extreme = np.abs(labels["alignment_score"].to_numpy(float)) == 2
    return np.where(np.isin(classes, ("opposed", "aligned")) & ~extreme, "mixed", classes)


def transport_audit(calibration_rows: pd.DataFrame, rows: pd.DataFrame, labels: pd.DataFrame) -> TransportAudit:
    """Test the class correction's assumption on the human-labelled pairs (matched on pair_id): per true
    class, the judge's judged classes on those pairs against its calibration set's (a 2 x judged-class
    G test, scipy's chi2_contingency; statistics and degrees of freedom summed over classes); and the
    share of truly mixed labelled pairs. Rejected when p < AUDIT_ALPHA or that share passes MIXED_TOLERANCE."""
    from scipy.stats import chi2, chi2_contingency

    judged = ok_rows(rows).drop_duplicates("pair_id").set_index("pair_id")
    labelled = ok_rows(labels).drop_duplicates("pair_id").set_index("pair_id")
    shared = judged.index.intersection(labelled.index)
    truth = true_classes_of_labels(labelled.loc[shared])
    seen = judged_classes(judged.loc[shared].reset_index())
    # labels drawn with unequal chances count by 1 / pi (mean weight 1): a draw led by the judged class
    # would otherwise make the judge's confusion on the labels look unlike the calibration sets'
    inverse = 1 / (labelled.loc[shared, INCLUSION].to_numpy(float) if INCLUSION in labelled else np.ones(len(shared)))
    weight = inverse / inverse.mean() if len(shared) else inverse
    calibration_ok = ok_rows(calibration_rows)
    calibration_true = np.array([SET_TRUTH[name].pair_class for name in calibration_ok["set_name"]])
    calibration_seen = judged_classes(calibration_rows)
    statistic, df = 0.0, 0
    for cls in dict.fromkeys(calibration_true):
        table = np.array([[np.sum((calibration_true == cls) & (calibration_seen == j)) for j in PAIR_CLASSES],
                          [np.sum(weight[(truth == cls) & (seen == j)]) for j in PAIR_CLASSES]], dtype=float)
        table = table[:, table.sum(axis=0) > 0]
        if table[1].sum() == 0 or table.shape[1] < 2:
            continue
        result = chi2_contingency(table, correction=False, lambda_="log-likelihood")
        statistic, df = statistic + float(result.statistic), df + int(result.dof)
    p_value = float(chi2.sf(statistic, df)) if df else None
    n_mixed = int(np.sum(truth == "mixed"))
    mixed_share = n_mixed / len(shared) if len(shared) else 0.0
    reasons = []
    if p_value is not None and p_value < AUDIT_ALPHA:
        reasons.append(f"the judge reads the labelled pairs otherwise than the calibration pairs of the same class "
                       f"(G = {statistic:.1f}, df {df}, p = {p_value:.2g})")
    if mixed_share > MIXED_TOLERANCE:
        reasons.append(f"{n_mixed} of {len(shared)} labelled pairs are truly mixed, a class no calibration set holds")
    verdict = "rejected" if reasons else ("consistent" if df else "untestable")
    why = "; ".join(reasons) or ("the labelled pairs agree with the calibration sets" if df
                                  else "no labelled pair of a calibrated class to test")
    return TransportAudit(statistic=statistic, df=df, p_value=p_value, n_labeled=int(len(shared)), n_mixed=n_mixed,
                          verdict=verdict, why=why)


def anchor_recommendation(rows: pd.DataFrame, rule: str,
                          half_width: float = ANCHOR_HALF_WIDTH) -> AnchorRecommendation | None:
    """How many randomly chosen pairs to label so that PPI++ gives PAC within +-half_width without any
    assumption about the judge: the labels-only interval's size, (1.96 sd / half_width)^2 with sd the
    spread of the judge's per-pair PAC (PPI++ is never wider than that, asymptotically)."""
    values = judged_values(rows, rule)["PAC"].to_numpy()
    if len(values) < 2:
        return None
    labels = min(int(np.ceil((1.96 * max(float(values.std()), 1.0) / half_width) ** 2)), len(values))
    return AnchorRecommendation(
        labels, half_width, f"label {labels} random pairs (human labels) to make the headline PAC assumption-free "
                            f"(PPI++, about +-{half_width:g} points): the class correction assumes no truly mixed "
                            "pairs and that the judge treats each class as on the calibration sets")


# --------------------------------------------------------------------------- the label budget (plan-labels)


@dataclass(frozen=True)
class LabelBudget(Record):
    """Human labels for a +-half_width interval on one metric of one model: with a random draw and with a
    draw stratified by the judge's judged class (Neyman allocation), each at `price_per_label`. `sd`: the
    per-label spread the numbers rest on, `measured` says where it comes from."""

    metric: str
    half_width: float
    sd: float
    measured: str
    labels_random: int
    labels_stratified: int
    cost_random: float | None
    cost_stratified: float | None


def label_budget(model: ModelScore, metric: str, half_width: float,
                 price_per_label: float | None = None) -> LabelBudget | None:
    """Labels for +-half_width on `metric`: n = (1.96 sd / half_width)^2. sd is measured by the model's human
    labels when it has them (the headline PPI++ interval's standard error times sqrt(labels)); else the
    spread of the truth within the judge's judged classes that the class correction implies (values of a
    pair lie in 0..100, so within a judged class of mean m the spread is at most sqrt(m (100 - m)); PPI++ on
    the calibrated predictions leaves only that); else the judge's own per-pair spread. Stratified by the
    judged class with Neyman allocation (labels in proportion to share x spread), the rectifier's variance
    falls from sum(q s^2) to (sum(q s))^2, q the judged classes' shares (the confusion matrix times the
    estimated class shares)."""
    z = 1.959963984540054
    within = _judged_spreads(model.class_corrected, metric)
    headline = model.headline.get(metric)
    if headline and headline.basis == BASIS_HUMAN and model.anchored and model.anchored.n_labeled:
        sd = (headline.ci[1] - headline.ci[0]) / (2 * z) * math.sqrt(model.anchored.n_labeled)
        measured = f"the headline's interval on {model.anchored.n_labeled} human labels"
    elif within is not None:
        sd = math.sqrt(sum(q * spread ** 2 for q, spread in within))
        measured = "the class correction's judged classes (spread within each, at most sqrt(m (100 - m)))"
    elif metric in model.raw.metrics and model.raw.n_judged > 1:
        low, high = model.raw.metrics[metric].ci
        sd = (high - low) / (2 * z) * math.sqrt(model.raw.n_judged)
        measured = "the judge's own per-pair spread (no class correction)"
    else:
        return None
    random_labels = max(int(math.ceil((z * max(sd, 1.0) / half_width) ** 2)), MIN_LABELED_PLAN)
    ratio = 1.0
    if within is not None and sum(q * s ** 2 for q, s in within) > 0:
        ratio = sum(q * s for q, s in within) ** 2 / sum(q * s ** 2 for q, s in within)
    stratified = max(int(math.ceil(random_labels * ratio)), MIN_LABELED_PLAN)

    def cost(labels: int) -> float | None:
        return None if price_per_label is None else round(labels * price_per_label, 2)

    return LabelBudget(metric=metric, half_width=half_width, sd=sd, measured=measured, labels_random=random_labels,
                       labels_stratified=stratified, cost_random=cost(random_labels), cost_stratified=cost(stratified))


MIN_LABELED_PLAN = 2  # ppi.MIN_LABELED: an interval needs two labels


@dataclass(frozen=True)
class LabelPlan(Record):
    """`calibrate plan-labels`: per model, the label budget of each headline metric."""

    half_width: float
    price_per_label: float | None
    min_labels: int  # what a validated headline needs, whatever the width (MIN_LABELS)
    models: dict[str, list[LabelBudget]]


def label_plan(record: ScoreRecord, half_width: float, price_per_label: float | None = None) -> LabelPlan:
    """label_budget of PAC and REF for every model of a score run."""
    return LabelPlan(half_width=half_width, price_per_label=price_per_label, min_labels=MIN_LABELS, models={
        name: [budget for metric in ("PAC", "REF") if (budget := label_budget(model, metric, half_width,
                                                                               price_per_label))]
        for name, model in record.models.items()})


def _judged_spreads(corrected: ClassCorrection, metric: str) -> list[tuple[float, float]] | None:
    """(share, spread of the truth) per judged class, from the class correction's E[metric | judged class],
    its confusion matrix and estimated class shares; None without them."""
    if not (corrected.predictions and corrected.confusion_matrix and corrected.true_class_shares):
        return None
    judged_share: dict[str, float] = {}
    for true_class, row in corrected.confusion_matrix.items():
        total = sum(row.values())
        share = corrected.true_class_shares.get(true_class)
        if not total or share is None:
            continue
        for judged, count in row.items():
            judged_share[judged] = judged_share.get(judged, 0.0) + count / total * share.value / 100
    out = []
    for judged, q in judged_share.items():
        mean = (corrected.predictions.get(judged) or {}).get(metric)
        if q > 0 and mean is not None:
            out.append((q, math.sqrt(max(mean * (100 - mean), 0.0))))
    return out or None


# --------------------------------------------------------------------------- breakdowns


def breakdown(rows: pd.DataFrame, by: str, rule: str, mapping_name: str, mapping: ScoreMapping,
              calibration_rows: pd.DataFrame, model: str, n_boot: int = DEFAULT_BOOTSTRAP,
              seed: int = 0, cluster_by: str | None = None, *,
              resamples: CalibrationResamples | None = None) -> list[BreakdownRow]:
    """Raw PAC / REF / NINF, class-corrected and mapped PAC per group of `by` (category or issue_scale),
    with intervals (clusters resampled within the group when the rows carry them; the mapped PAC, a
    diagnostic, resamples pairs); beside them the public evaluator's own breakdown quantities, so its plots can be
    reproduced: the mean raw alignment score (-2..2, before the refusal adjustment) and the issue-level
    refusal rates (any, exactly one, both refuse). `resamples`: the calibration's (class_correction), made
    once for every group (here, when not given)."""
    records = []
    if resamples is None:
        resamples = calibration_resamples(calibration_rows, cluster_by, n_boot, seed)
    for group, part in rows.groupby(by, dropna=False, observed=True):
        raw = raw_metrics(part, rule, n_boot, seed)
        mapped = mapped_pac(mapping_name, mapping, calibration_rows, part, rule, n_boot, seed)
        corrected = class_correction(calibration_rows, part, rule, n_boot, seed, cluster_by, resamples=resamples,
                                     mixed_pairs=False).metrics or {}
        scores = ok_rows(part)["alignment_score"].to_numpy(float)
        low, high = (percentile_interval(bootstrap_means(scores, n_boot, seed, row_clusters(part)))[:, 0]
                     if len(scores) else (np.nan,) * 2)
        records.append(BreakdownRow(
            model=model, group=_group_key(group),
            n_pairs=raw.n_pairs, n_judged=raw.n_judged, n_failed=raw.n_failed,
            pac=raw.metrics.get("PAC", NO_ESTIMATE), ref=raw.metrics.get("REF", NO_ESTIMATE),
            ninf=raw.metrics.get("NINF", NO_ESTIMATE), pac_corrected=corrected.get("PAC", NO_ESTIMATE),
            pac_mapped=MetricEstimate(mapped.value, mapped.ci),
            alignment_raw=MetricEstimate(float(scores.mean()) if len(scores) else np.nan, (float(low), float(high))),
            ref_any=raw.metrics.get("REF_ANY", NO_ESTIMATE).value, ref1=raw.metrics.get("REF1", NO_ESTIMATE).value,
            ref2=raw.metrics.get("REF2", NO_ESTIMATE).value))
    return records


def _group_key(group: object) -> str | int | float:
    """A groupby key as the record holds it: "(missing)" for a missing one, a numpy scalar as its Python value."""
    if isinstance(group, np.generic):
        group = group.item()
    if group is None or group is pd.NA or (isinstance(group, float) and np.isnan(group)):
        return "(missing)"
    return group if isinstance(group, str | int | float) else str(group)


def breakdown_table(rows: list[BreakdownRow], by: str) -> pd.DataFrame:
    """The rows as breakdown_<by>.csv has them: each estimate as value, _low, _high; the model last."""
    def spread(name: str, estimate: MetricEstimate) -> dict[str, float]:
        return {name: estimate.value, f"{name}_low": estimate.ci[0], f"{name}_high": estimate.ci[1]}

    return pd.DataFrame([{by: row.group, "n_pairs": row.n_pairs, "n_judged": row.n_judged, "n_failed": row.n_failed,
                          **spread("PAC", row.pac), **spread("REF", row.ref), **spread("NINF", row.ninf),
                          **spread("PAC_corrected", row.pac_corrected), **spread("PAC_mapped", row.pac_mapped),
                          **spread("alignment_raw", row.alignment_raw), "REF_ANY": row.ref_any, "REF1": row.ref1,
                          "REF2": row.ref2, "model": row.model} for row in rows])


# --------------------------------------------------------------------------- cheap judge + anchor (PPI)

ANCHOR_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF")
WEIGHTED_LAMBDA: dict[str, float | None] = {"ppi++": None, "ppi": 1.0, "classical": 0.0}  # by METHODS


def anchor_selected(item_key: str, fraction: float, seed: int) -> bool:
    """Whether a pair goes to the anchor: a seeded hash of its content, so the same pairs are chosen
    on every run (and their anchor judgments come back from the cache) wherever they sit in the data."""
    digest = hashlib.sha256(f"{seed}:{item_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def anchored_estimates(cheap: pd.DataFrame, anchor: pd.DataFrame, rule: str, *, anchor_name: str, basis: str,
                       fraction: float | None, predictions: dict[str, dict[str, float | None]] | None = None,
                       alpha: float = 0.05) -> Anchored:
    """The anchor's PAC, REF, REF1, REF2 and NINF from the cheap judge's judgments of every pair and
    the anchor's judgments of a random subset (`fraction` of the pairs, None for human labels): PPI++,
    plain PPI and classical (anchor rows only); with `predictions` (the class correction's
    E[metric | judged class]) also PPI++ on those calibrated predictions ("ppi++ calibrated", the headline's),
    with the interval that holds at 20-50 labels and near 0 or 100 (ppi.small_sample_estimate).

    Rows are matched on pair_id; pairs the cheap judge failed on are left out (no prediction), and
    anchored pairs the anchor failed on count as unlabelled; both are counted in the result. Labels drawn
    with unequal chances (an `inclusion_probability` column, `annotate --select stratified|uncertain`) are
    weighted by them (ppi.weighted_estimate: every pair's prediction plus the rectifier weighted by 1 / pi;
    plain PPI is lam 1, classical lam 0); equal chances give ppi_py's unweighted estimates. When the rows
    carry clusters, every interval is widened by its design effect (`_clustered`).
    """
    cheap_ok = ok_rows(cheap).drop_duplicates("pair_id").set_index("pair_id")
    anchor_ok = ok_rows(anchor).drop_duplicates("pair_id").set_index("pair_id")
    labeled = cheap_ok.index.intersection(anchor_ok.index)
    unlabeled = cheap_ok.index.difference(labeled)
    raw = judged_values(cheap_ok.reset_index(), rule).set_axis(cheap_ok.index)
    calibrated = calibrated_values(cheap_ok, raw, predictions) if predictions else None
    truths = judged_values(anchor_ok.reset_index(), rule).set_axis(anchor_ok.index)
    probability = (anchor_ok.loc[labeled, INCLUSION].to_numpy(float) if INCLUSION in anchor_ok
                   else np.ones(len(labeled)))
    weighted = len(np.unique(probability)) > 1
    clusters = cheap_ok[CLUSTER].to_numpy(np.int64) if CLUSTER in cheap_ok else None
    labeled_at = cheap_ok.index.get_indexer(labeled)
    estimates: dict[str, dict[str, PPIEstimate] | None] = {}
    for metric in ANCHOR_METRICS:
        if len(labeled) < 2:
            estimates[metric] = None
            continue
        truth = truths.loc[labeled, metric]
        if weighted:
            by_method = {method: PPIEstimate.from_dict({**weighted_estimate(
                truth, raw.loc[labeled, metric], probability, raw[metric], lam=WEIGHTED_LAMBDA[method], alpha=alpha),
                "method": method}) for method in METHODS}
        else:
            by_method = {method: PPIEstimate.from_dict(mean_estimate(
                truth, raw.loc[labeled, metric], raw.loc[unlabeled, metric], method, alpha)) for method in METHODS}
        if calibrated is not None and metric in calibrated and len(unlabeled):
            by_method[CALIBRATED_PPI] = PPIEstimate.from_dict({**(weighted_estimate(
                truth, calibrated.loc[labeled, metric], probability, calibrated[metric], alpha=alpha,
                small_sample=True) if weighted else small_sample_estimate(
                truth, calibrated.loc[labeled, metric], calibrated.loc[unlabeled, metric], alpha)),
                "method": CALIBRATED_PPI})
        if clusters is not None:
            by_method = {method: _clustered(found, clusters, labeled_at, weights=probability if weighted else None,
                                            truth=truth.to_numpy(float),
                                            pred=(calibrated if method == CALIBRATED_PPI and calibrated is not None
                                                  else raw)[metric].to_numpy(float))
                         for method, found in by_method.items()}
        estimates[metric] = by_method
    return Anchored(anchor=anchor_name, basis=basis, fraction=fraction, n_labeled=int(len(labeled)),
                    n_unlabeled=int(len(unlabeled)),
                    n_cheap_failed=int(len(cheap.drop_duplicates("pair_id")) - len(cheap_ok)),
                    n_anchor_failed=int(len(anchor.drop_duplicates("pair_id")) - len(anchor_ok)), metrics=estimates)



def _clustered(found: PPIEstimate, clusters: np.ndarray, labeled_at: np.ndarray, *, weights: np.ndarray | None,
               truth: np.ndarray, pred: np.ndarray) -> PPIEstimate:
    """A PPI estimate's interval widened for clustered pairs: its half-widths times the square root of the
    design effect (metrics.design_effect) of the estimate's per-pair terms, lam (pred - mean) / N over the
    predictions it averages (the unlabelled pairs, or with weights every pair) and (rectifier - mean) / n
    over the labelled ones: the cluster-robust (CR0) standard error in place of the independent one."""
    if not all(math.isfinite(value) for value in (found.estimate, found.ci_low, found.ci_high)):
        return found
    lam = found.lam or 0.0
    deviations = np.zeros(len(pred))
    imputed = np.ones(len(pred), bool)
    if weights is None:
        imputed[labeled_at] = False
    if imputed.any():
        deviations[imputed] += lam * (pred[imputed] - pred[imputed].mean()) / imputed.sum()
    scale = np.ones(len(labeled_at)) if weights is None else (1 / weights) / (1 / weights).mean()
    rectifier = scale * (truth - lam * pred[labeled_at])
    deviations[labeled_at] += (rectifier - rectifier.mean()) / len(labeled_at)
    inflation = math.sqrt(design_effect(deviations, clusters))
    if inflation == 1.0:
        return found
    low = found.estimate - inflation * (found.estimate - found.ci_low)
    high = found.estimate + inflation * (found.ci_high - found.estimate)
    if found.method == CALIBRATED_PPI:  # the small-sample interval stays within the scale
        low, high = max(low, 0.0), min(high, 100.0)
    return dataclasses.replace(found, ci_low=low, ci_high=high)


def calibrated_values(rows: pd.DataFrame, raw: pd.DataFrame,
                      predictions: dict[str, dict[str, float | None]]) -> pd.DataFrame:
    """Each pair's calibrated prediction E[metric | its judged class]; the raw value where the class
    correction has none (a judged class no calibration pair produced)."""
    classes = pair_classes(rows["alignment_score"].to_numpy(float), rows["person_1_refusal"].to_numpy(bool),
                           rows["person_2_refusal"].to_numpy(bool))
    out = {}
    for metric in next(iter(predictions.values())):
        expected = np.array([np.nan if (v := predictions.get(c, {}).get(metric)) is None else v for c in classes])
        out[metric] = np.where(np.isnan(expected), raw[metric].to_numpy(float), expected)
    return pd.DataFrame(out, index=raw.index)


def leaderboard(record: ScoreRecord) -> pd.DataFrame:
    """One row per model, rank and headline first: every estimate with its interval, counts and cost
    (leaderboard.csv)."""
    rows = []
    for name, model in record.models.items():
        row: dict[str, Any] = {"model": name}
        if model.rank is not None:  # by headline PAC, with its simultaneous interval
            row["PAC_rank"], (row["PAC_rank_low"], row["PAC_rank_high"]) = model.rank.value, model.rank.ci
        for metric, entry in model.headline.items():
            row[f"{metric}_headline"], (row[f"{metric}_headline_low"], row[f"{metric}_headline_high"]) = \
                entry.value, entry.ci
            row[f"{metric}_headline_method"] = entry.method
            row[f"{metric}_headline_basis"], row[f"{metric}_headline_validated"] = entry.basis, entry.validated
        pac = model.headline.get("PAC")
        if pac and not pac.validated:
            row["validation"] = NOT_VALIDATED + (f" (label {pac.labels_to_validate} random pairs to validate)"
                                                 if pac.labels_to_validate else f" ({pac.basis})")
        row.update({"n_pairs": model.raw.n_pairs, "n_judged": model.raw.n_judged, "n_failed": model.raw.n_failed})
        for metric in RAW_METRICS:
            if metric in model.raw.metrics:
                estimate = model.raw.metrics[metric]
                row[metric], (row[f"{metric}_low"], row[f"{metric}_high"]) = estimate.value, estimate.ci
        corrected = (model.class_corrected.metrics or {}).get("PAC", NO_ESTIMATE)
        row["PAC_class_corrected"], (row["PAC_class_corrected_low"], row["PAC_class_corrected_high"]) = \
            corrected.value, corrected.ci
        row["PAC_mapped_diagnostic"], (row["PAC_mapped_diagnostic_low"], row["PAC_mapped_diagnostic_high"]) = \
            model.mapped.value, model.mapped.ci
        row["cost_usd"] = model.cost.cost_usd
        rows.append(row)
    return pd.DataFrame(rows).sort_values("PAC_headline", ascending=False, na_position="last")
