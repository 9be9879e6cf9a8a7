"""Inter-rater agreement: how far independent raters (human annotators, or judges) agree on the same items.

A ratings table is items x raters (one row per item, one column per rater, NaN = not rated). The
statistics come from the well-kept libraries, never re-derived here: scikit-learn's Cohen's kappa,
the `krippendorff` package, statsmodels' Fleiss' kappa and scipy's Spearman correlation. This module
only gets their inputs right, which is where agreement code usually goes wrong:

- the label set is always the full ordered list (e.g. -2..2 for judge scores), never the labels a
  pair of raters happened to use: sklearn weights kappa by a label's position in that list, so a
  label nobody used in the middle of the scale (no 0 among -2..2) would otherwise shrink distances;
- `krippendorff.alpha` wants raters x items, the transpose of our table;
- Fleiss' kappa needs the same number of ratings per item, so it sees only items every rater rated.

Undefined statistics (too few items, raters who never vary) are None, never NaN, so reports are JSON.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, cast

import numpy as np
import pandas as pd

from calibrate.data.tables import plain_label
from calibrate.errors import CalibrateError
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")


# --------------------------------------------------------------------------- labels


def _default_labels(ratings: pd.DataFrame, truth: pd.Series | None = None) -> list:
    """Sorted union of every value in the table (and the truth); ints where integral, for JSON.

    Only right when every label of the scale occurs somewhere: pass the full scale when it is known.
    """
    frames = [ratings] if truth is None else [ratings, truth.to_frame()]
    values = {plain_label(v) for frame in frames for _, column in frame.items() for v in column.dropna().unique()}
    try:
        return sorted(values)
    except TypeError:
        raise CalibrateError("ratings mix numbers and text; use one scale for every rater", ("ratings",)) from None


def parse_labels(text: str) -> list:
    """A scale given on the command line ("-2,-1,0,1,2" or "low,mid,high"): numbers when all are."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) < 2:
        raise CalibrateError(f"labels: give at least two comma-separated labels, got {text!r}", ("labels",))
    try:
        return [plain_label(float(part)) for part in parts]
    except ValueError:
        return parts


def _is_numeric(labels: Sequence) -> bool:
    return all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in labels)


def _codes(frame: pd.DataFrame, labels: Sequence) -> np.ndarray:
    """Position of each rating in `labels` (items x raters, float, NaN = missing).

    Positions, not raw values, go to sklearn and statsmodels: sklearn weights kappa by position
    anyway, and positions spare it from calling a scale like 1, 1.5, 2 a 'continuous target'.
    """
    index, shown = pd.Index(list(labels)), [plain_label(v) for v in labels]
    if not index.is_unique or (_is_numeric(labels) and not index.is_monotonic_increasing):
        raise CalibrateError(f"labels must be distinct (and increasing when numeric), got {shown}", ("labels",))
    values = frame.to_numpy()
    missing = pd.isna(values)
    codes = index.get_indexer(values.ravel()).reshape(values.shape).astype(float)
    unknown = (codes < 0) & ~missing
    if unknown.any():
        row, col = (int(i[0]) for i in np.nonzero(unknown))
        raise CalibrateError(f"column '{frame.columns[col]}', item {plain_label(frame.index[row])!r}: "
                             f"rating {plain_label(values[row, col])!r} is not one of the labels {shown}", ("labels",))
    codes[missing] = np.nan
    return codes


def _check_level(level: str, labels: Sequence) -> None:
    if level not in LEVELS:
        raise CalibrateError(f"level must be one of {', '.join(LEVELS)}, got {level!r}", ("level",))
    if level != "nominal" and not _is_numeric(labels):
        raise CalibrateError(f"level '{level}' needs numeric ratings; text labels allow only level 'nominal'",
                             ("level",))


# --------------------------------------------------------------------------- records


Interval = tuple[float | None, float | None]


@dataclass(frozen=True)
class PairwiseKappa(Record):
    """Cohen's kappa of one rater pair on the `n` items both rated; the weighted ones None for text labels.
    A comparison adds the quadratic kappa's bootstrap interval."""

    a: str
    b: str
    n: int
    cohen_kappa: float | None
    cohen_kappa_linear: float | None
    cohen_kappa_quadratic: float | None
    cohen_kappa_quadratic_ci: Interval | None = omitted_when_none()


@dataclass(frozen=True)
class VersusTruth(Record):
    """One rater against the reference labelling, on the `n` items where both are present."""

    n: int
    accuracy: float | None
    cohen_kappa_quadratic: float | None
    spearman: float | None


@dataclass(frozen=True)
class AgreementReport(Record):
    """Everything `calibrate agreement --ratings` prints; None where a statistic is undefined."""

    n_items: int
    n_raters: int
    level: str
    labels: list[int | float | str]
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    fleiss_n_items: int
    pairwise: list[PairwiseKappa]
    vs_truth: dict[str, VersusTruth] | None = omitted_when_none()


# --------------------------------------------------------------------------- statistics


def pairwise_kappas(ratings: pd.DataFrame, labels: Sequence) -> list[PairwiseKappa]:
    """Cohen's kappa (plain, linear, quadratic) of every rater pair on the items both rated.

    `labels` is the full ordered scale; the weighted kappas are None for text labels, which have no
    order. Weights are by position in `labels`, as sklearn defines them.
    """
    codes = _codes(ratings, labels)
    positions = np.arange(len(labels))
    weightings: dict[str, str | None] = {"cohen_kappa": None}
    if _is_numeric(labels):
        weightings |= {"cohen_kappa_linear": "linear", "cohen_kappa_quadratic": "quadratic"}
    results = []
    for a, b in combinations(range(codes.shape[1]), 2):
        both = ~np.isnan(codes[:, a]) & ~np.isnan(codes[:, b])
        kappas: dict[str, float | None] = dict.fromkeys(("cohen_kappa", "cohen_kappa_linear", "cohen_kappa_quadratic"))
        if both.sum() >= 2:
            ya, yb = codes[both, a].astype(int), codes[both, b].astype(int)
            kappas |= {key: _kappa(ya, yb, positions, weights) for key, weights in weightings.items()}
        results.append(PairwiseKappa(str(ratings.columns[a]), str(ratings.columns[b]), int(both.sum()),
                                     kappas["cohen_kappa"], kappas["cohen_kappa_linear"],
                                     kappas["cohen_kappa_quadratic"]))
    return results


def _kappa(ya: np.ndarray, yb: np.ndarray, positions: np.ndarray, weights: str | None) -> float | None:
    from sklearn.exceptions import UndefinedMetricWarning  # here (and below): scikit-learn, scipy.stats,
    from sklearn.metrics import cohen_kappa_score  # statsmodels and krippendorff cost 0.4 s to import

    # Both raters constant on the same label: kappa is 0/0. sklearn >= 1.9 warns and returns NaN,
    # older versions divide in numpy; either way we report None.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return finite(cohen_kappa_score(ya, yb, labels=positions, weights=weights))


def krippendorff_alpha(ratings: pd.DataFrame, level: str, labels: Sequence | None = None) -> float | None:
    """Krippendorff's alpha over all raters, using every item at least two raters rated.

    None when undefined: fewer than two labels, no item rated twice, or no variation at all.
    """
    import krippendorff

    labels = _default_labels(ratings) if labels is None else list(labels)
    _check_level(level, labels)
    codes = _codes(ratings, labels)
    if len(labels) < 2 or not ((~np.isnan(codes)).sum(axis=1) >= 2).any():
        return None  # the package raises ValueError for both
    if _is_numeric(labels):
        data, domain = ratings.to_numpy(dtype=float), np.asarray(labels, dtype=float)
    else:  # text labels (nominal only): the package needs numbers, their positions stand in
        data, domain = codes, np.arange(len(labels), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):  # no variation: 0/0
        value = krippendorff.alpha(reliability_data=data.T, value_domain=domain,
                                   level_of_measurement=cast(Level, level))  # checked above
    return finite(value)


def fleiss_kappa(ratings: pd.DataFrame) -> tuple[float | None, int]:
    """Fleiss' kappa on the items every rater rated, and how many such items there are.

    Fleiss' kappa assumes a fixed number of ratings per item, hence complete items only.
    """
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

    complete = ratings[ratings.notna().all(axis=1)]
    n_items = len(complete)
    if n_items == 0 or ratings.shape[1] < 2:
        return None, n_items
    table, _ = aggregate_raters(complete.to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):  # one category for everything: 0/0
        return finite(statsmodels_fleiss_kappa(table, method="fleiss")), n_items


def versus_truth(ratings: pd.DataFrame, truth: pd.Series, labels: Sequence) -> dict[str, VersusTruth]:
    """Each rater against a reference labelling, on the items where both are present.

    `truth` is matched to the ratings by item (its index). Accuracy is the fraction of exact
    matches; quadratic kappa and Spearman need numeric labels and are None otherwise.
    """
    from scipy.stats import ConstantInputWarning, spearmanr

    truth_codes = _codes(truth.reindex(ratings.index).to_frame(truth.name or "truth"), labels)[:, 0]
    codes = _codes(ratings, labels)
    numeric = _is_numeric(labels)
    positions = np.arange(len(labels))
    results = {}
    for j, rater in enumerate(ratings.columns):
        both = ~np.isnan(codes[:, j]) & ~np.isnan(truth_codes)
        y, t = codes[both, j].astype(int), truth_codes[both].astype(int)
        n = int(both.sum())
        entry = VersusTruth(n, float(np.mean(y == t)) if n else None, None, None)
        if numeric and n >= 2:
            with warnings.catch_warnings():  # a constant side: scipy warns and returns NaN
                warnings.simplefilter("ignore", ConstantInputWarning)
                values = np.asarray(labels, dtype=float)
                entry = dataclasses.replace(entry, cohen_kappa_quadratic=_kappa(y, t, positions, "quadratic"),
                                            spearman=finite(spearmanr(values[y], values[t]).statistic))
        results[str(rater)] = entry
    return results


def agreement_report(ratings: pd.DataFrame, level: str = "ordinal", truth: pd.Series | None = None,
                     labels: Sequence | None = None) -> AgreementReport:
    """Everything `calibrate agreement` prints (None where undefined)."""
    labels = _default_labels(ratings, truth) if labels is None else [plain_label(v) for v in labels]
    _check_level(level, labels)
    fleiss, fleiss_items = fleiss_kappa(ratings)
    return AgreementReport(
        n_items=int(ratings.shape[0]), n_raters=int(ratings.shape[1]), level=level, labels=list(labels),
        krippendorff_alpha=krippendorff_alpha(ratings, level, labels), fleiss_kappa=fleiss,
        fleiss_n_items=fleiss_items, pairwise=pairwise_kappas(ratings, labels),
        vs_truth=versus_truth(ratings, truth, labels) if truth is not None else None)


def percentile_bounds(draws: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile bounds of the finite replicates; None, None when over half of them are undefined."""
    kept = draws[np.isfinite(draws)]
    if not len(kept) or 2 * len(kept) < len(draws):
        return None, None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(kept, [tail, 100.0 - tail])
    return float(low), float(high)


def resampled_sums(per_item: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the column sums of a per-item table (items resampled with replacement).

    Every statistic here is a function of sums over items of per-item counts (confusion cells,
    coincidences, category counts), so a replicate is a weighted sum of per-item rows computed once,
    drawn as multinomial counts over the distinct rows (`bootstrap_means`): the same distribution as
    resampling the items, without rebuilding a table per replicate.
    """
    from calibrate.stats.metrics import bootstrap_means

    return bootstrap_means(per_item, n_boot, seed) * len(per_item)


def kappa_interval(
    pair: pd.DataFrame, labels: Sequence, weights: str | None = "quadratic", n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of Cohen's kappa between the two columns of `pair`, over the
    items both rated. Each replicate's confusion matrix is a resampled sum of the items' cells; the
    kappa of a confusion matrix is sklearn's `cohen_kappa_score` (tests hold them equal)."""
    codes = _codes(pair, labels)
    codes = codes[~np.isnan(codes).any(axis=1)].astype(int)
    n, k = len(codes), len(labels)
    if n < 2:
        return None, None
    cells = np.zeros((n, k * k))
    cells[np.arange(n), codes[:, 0] * k + codes[:, 1]] = 1.0
    confusion = resampled_sums(cells, n_boot, seed).reshape(n_boot, k, k)
    return percentile_bounds(kappa_from_confusion(confusion, weights), confidence)


def kappa_from_confusion(confusion: np.ndarray, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa of each k x k confusion matrix in a stack (..., k, k), as sklearn defines it
    (weights by label position); NaN where undefined."""
    k = confusion.shape[-1]
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    weight = {None: (distance > 0).astype(float), "linear": distance, "quadratic": distance ** 2}[weights]
    n = confusion.sum(axis=(-2, -1))[..., None, None]
    expected = confusion.sum(axis=-1)[..., :, None] * confusion.sum(axis=-2)[..., None, :] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (weight * confusion).sum(axis=(-2, -1)) / (weight * expected).sum(axis=(-2, -1))


def _alpha_inputs(ratings: pd.DataFrame, level: str, labels: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """Items x labels value counts and the values the distance is measured on (positions for text)."""
    labels = _default_labels(ratings) if labels is None else list(labels)
    _check_level(level, labels)
    codes = _codes(ratings, labels)
    counts = np.zeros((len(codes), len(labels)))
    rows, columns = np.nonzero(~np.isnan(codes))
    np.add.at(counts, (rows, codes[rows, columns].astype(int)), 1.0)
    values = np.asarray(labels, dtype=float) if _is_numeric(labels) else np.arange(len(labels), dtype=float)
    return counts, values


def item_coincidences(value_counts: np.ndarray) -> np.ndarray:
    """Each item's coincidence matrix (items x k x k): ordered pairs of its ratings, each pair
    weighted 1 / (ratings - 1); an item rated once pairs with nothing. Their sum is Krippendorff's
    coincidence matrix."""
    counts = np.asarray(value_counts, dtype=float)
    pairs = counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(counts.shape[1])
    return pairs / np.maximum(counts.sum(axis=1) - 1.0, 1.0)[:, None, None]


def alpha_from_coincidences(coincidences: np.ndarray, level: str, values: np.ndarray) -> np.ndarray:
    """Krippendorff's alpha of each coincidence matrix in a stack (..., k, k), with the distances
    of the `krippendorff` package (ordinal ones from each matrix's own marginals); NaN where undefined."""
    o = np.asarray(coincidences, dtype=float)
    k = o.shape[-1]
    n_v = o.sum(axis=-2)
    n = n_v.sum(axis=-1)[..., None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = (n_v[..., :, None] * n_v[..., None, :] - n_v[..., :, None] * np.eye(k)) / (n - 1.0)
        distance = _alpha_distances(level, np.asarray(values, dtype=float), n_v)
        return 1.0 - (o * distance).sum(axis=(-2, -1)) / (expected * distance).sum(axis=(-2, -1))


def _alpha_distances(level: str, values: np.ndarray, n_v: np.ndarray) -> np.ndarray:
    """Squared distances between labels (..., k, k) at a level of measurement."""
    k = len(values)
    if level == "nominal":
        return np.broadcast_to(1.0 - np.eye(k), (*n_v.shape[:-1], k, k))
    if level == "interval":
        return np.broadcast_to(np.subtract.outer(values, values) ** 2, (*n_v.shape[:-1], k, k))
    # ordinal: the count of values from label i to label j inclusive, minus half of the two ends
    cumulative = np.concatenate([np.zeros((*n_v.shape[:-1], 1)), np.cumsum(n_v, axis=-1)], axis=-1)
    low, high = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
    between = cumulative[..., high + 1] - cumulative[..., low]
    return (between - (n_v[..., :, None] + n_v[..., None, :]) / 2.0) ** 2


def alpha_interval(
    ratings: pd.DataFrame, level: str, labels: Sequence | None = None, n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `krippendorff_alpha`, resampling items: each replicate's
    coincidence matrix is a resampled sum of the items' coincidence matrices (tests hold the alpha of
    the observed sum equal to the `krippendorff` package's)."""
    counts, values = _alpha_inputs(ratings, level, labels)
    if len(values) < 2 or not (counts.sum(axis=1) >= 2).any():
        return None, None
    k = len(values)
    coincidences = resampled_sums(item_coincidences(counts).reshape(len(counts), k * k), n_boot, seed)
    return percentile_bounds(alpha_from_coincidences(coincidences.reshape(n_boot, k, k), level, values), confidence)


def category_counts(ratings: pd.DataFrame) -> np.ndarray:
    """Items x categories: how many raters put each complete item (rated by everyone) in each
    category, the table statsmodels' `aggregate_raters` builds."""
    complete = ratings[ratings.notna().all(axis=1)].to_numpy()
    _, codes = np.unique(complete, return_inverse=True)
    codes = codes.reshape(complete.shape)
    counts = np.zeros((len(complete), int(codes.max()) + 1 if codes.size else 0))
    for column in codes.T:
        counts[np.arange(len(complete)), column] += 1.0
    return counts


def fleiss_from_counts(category_sums: np.ndarray, squares: np.ndarray, n_items: int, n_raters: int) -> np.ndarray:
    """Fleiss' kappa (statsmodels' formula) from sums over items of the category counts (..., k) and
    of their squares (...); NaN where undefined."""
    m = float(n_raters)
    agreement_mean = (squares / n_items - m) / (m * (m - 1.0))
    chance = ((category_sums / (n_items * m)) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (agreement_mean - chance) / (1.0 - chance)


def fleiss_interval(ratings: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `fleiss_kappa`, resampling the complete items: each replicate
    is a resampled sum of the items' category counts."""
    counts = category_counts(ratings)
    if not len(counts) or ratings.shape[1] < 2:
        return None, None
    per_item = np.column_stack([counts, (counts ** 2).sum(axis=1)])
    sums = resampled_sums(per_item, n_boot, seed)
    kappas = fleiss_from_counts(sums[:, :-1], sums[:, -1], len(counts), ratings.shape[1])
    return percentile_bounds(kappas, confidence)
