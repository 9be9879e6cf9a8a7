"""Prediction-powered inference (PPI / PPI++) for a mean: the anchor's mean with a valid interval.

A cheap judge scores every pair; an expensive anchor judge (or humans) scores a random fraction. The
anchor's mean (its PAC, its refusal rate, ...) is what we want. Averaging only the anchored rows
("classical") wastes the cheap predictions; averaging the cheap predictions is biased. PPI uses both:

    estimate = lam * mean(pred on unlabelled rows) + mean(truth - lam * pred on labelled rows)

The second term measures and removes the cheap judge's bias on the labelled rows, so the estimate
is unbiased for any fixed lam; the cheap predictions on the many unlabelled rows carry the precision.
lam = 1 is PPI (Angelopoulos et al. 2023, "Prediction-powered inference"); PPI++ (Angelopoulos,
Duchi, Zrnic 2023, "PPI++: Efficient prediction-powered inference") picks the lam that minimises
the estimate's variance, clipped to [0, 1], so that useless predictions fall back to lam ~ 0, the
classical interval, instead of widening it.

The numbers match the reference implementation `ppi-python` (import `ppi_py`, checked against
0.2.3): `ppi_mean_pointestimate`, `ppi_mean_ci` (lam=1 for "ppi", lam=None for "ppi++") and
`classical_mean_ci`, all with normal (z) intervals and population (ddof=0) standard deviations.
One deliberate difference: when every prediction is identical, ppi_py's tuned lam is 0/0 = NaN;
here it is 0 (constant predictions carry no information), which gives the classical interval.
`ppi_py` is not needed at run time; the tests compare against it when it is installed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from calibrate.data.tables import PredictionTable
from calibrate.errors import CalibrateError
from calibrate.rounding import finite

METHODS: tuple[str, ...] = ("ppi", "ppi++", "classical")
DEFAULT_METHOD = "ppi++"
DEFAULT_ALPHA = 0.05
MIN_LABELED = 2  # with one labelled row the spread of truth - pred is unknown (ddof=0 gives 0)


# --------------------------------------------------------------------------- estimation


def mean_estimate(
    labeled_truth: Iterable[float],
    labeled_pred: Iterable[float],
    unlabeled_pred: Iterable[float] | None,
    method: str = DEFAULT_METHOD,
    alpha: float = DEFAULT_ALPHA,
) -> dict:
    """The mean of the truth with a two-sided (1 - alpha) normal interval.

    `labeled_truth[i]` and `labeled_pred[i]` are the anchor's and the cheap judge's values for the
    same labelled row; `unlabeled_pred` holds the cheap judge's values on the other rows (it may be
    empty or None only for "classical", which ignores the predictions).

    Returns plain, JSON-safe values: {"method", "estimate", "ci_low", "ci_high", "n_labeled",
    "n_unlabeled", "alpha", "lam"}; lam is the weight given to the predictions (1 for "ppi", the
    tuned value for "ppi++", None for "classical"). Bad input raises CalibrateError.
    """
    _check_method(method)
    alpha = _check_alpha(alpha)
    truth = _vector(labeled_truth, "labeled_truth")
    pred = _vector(labeled_pred, "labeled_pred")
    unlabeled = _vector([] if unlabeled_pred is None else unlabeled_pred, "unlabeled_pred")
    if len(truth) != len(pred):
        raise CalibrateError(f"labeled_truth and labeled_pred differ in length ({len(truth)} vs {len(pred)})",
                             ("labeled_truth", "labeled_pred"))
    if len(truth) < MIN_LABELED:
        raise CalibrateError(f"labeled_truth: need at least {MIN_LABELED} labeled rows for an interval, "
                             f"got {len(truth)}",
                             ("labeled_truth",))
    if method != "classical" and len(unlabeled) == 0:
        raise CalibrateError(f"method '{method}' needs unlabeled predictions (got none); "
                             "use method 'classical' for the labeled rows alone", ("method", "unlabeled_pred"))

    if method == "classical":
        lam = None
        estimate, std_error = classical_mean(truth)
    else:
        lam = 1.0 if method == "ppi" else tuned_lambda(truth, pred, unlabeled)
        estimate, std_error = ppi_mean(truth, pred, unlabeled, lam)
    low, high = normal_interval(estimate, std_error, alpha)
    return {
        "method": method,
        "estimate": finite(estimate),
        "ci_low": finite(low),
        "ci_high": finite(high),
        "n_labeled": len(truth),
        "n_unlabeled": len(unlabeled),
        "alpha": float(alpha),
        "lam": None if lam is None else finite(lam),
    }


def small_sample_estimate(labeled_truth: Iterable[float], labeled_pred: Iterable[float],
                          unlabeled_pred: Iterable[float], alpha: float = DEFAULT_ALPHA,
                          bounds: tuple[float, float] = (0.0, 100.0)) -> dict:
    """PPI++ with an interval that holds with few labels and near the ends of the scale: as mean_estimate's
    "ppi++", but the rectifier's variance gets z^2 pseudo-pairs, half at either end of its half-range
    ((high - low) / 2 around its mean; Agresti-Coull's device), so that labels that happen to show no
    disagreement (every label equal to its prediction) leave an interval as wide as one such pair would
    make it, instead of none; the interval is then clipped to `bounds`. Labels in their hundreds barely
    change (the pseudo-pairs' weight falls as z^2 / (n + z^2)); docs/statistics.md shows the coverage."""
    alpha = _check_alpha(alpha)
    truth = _vector(labeled_truth, "labeled_truth")
    pred = _vector(labeled_pred, "labeled_pred")
    unlabeled = _vector(unlabeled_pred, "unlabeled_pred")
    if len(truth) < MIN_LABELED or len(truth) != len(pred) or not len(unlabeled):
        raise CalibrateError(f"labeled_truth: need at least {MIN_LABELED} labeled rows with predictions and some "
                             "unlabeled predictions", ("labeled_truth", "labeled_pred", "unlabeled_pred"))
    lam = tuned_lambda(truth, pred, unlabeled)
    estimate, _ = ppi_mean(truth, pred, unlabeled, lam)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    n, pseudo = len(truth), z * z
    rectifier = truth - lam * pred
    half_range = (bounds[1] - bounds[0]) / 2
    variance = (n * rectifier.var() + pseudo * half_range ** 2) / (n + pseudo)
    std_error = math.sqrt((lam * unlabeled).var() / len(unlabeled) + variance / n)
    low, high = normal_interval(estimate, std_error, alpha)
    return {"method": "ppi++", "estimate": finite(estimate), "ci_low": finite(max(low, bounds[0])),
            "ci_high": finite(min(high, bounds[1])), "n_labeled": n, "n_unlabeled": len(unlabeled),
            "alpha": float(alpha), "lam": finite(lam)}


def weighted_estimate(labeled_truth: Iterable[float], labeled_pred: Iterable[float],
                      inclusion_probability: Iterable[float], all_pred: Iterable[float], *,
                      lam: float | None = None, alpha: float = DEFAULT_ALPHA, small_sample: bool = False,
                      bounds: tuple[float, float] = (0.0, 100.0)) -> dict:
    """PPI++ for labels drawn with unequal, known inclusion probabilities (a stratified or uncertainty-led
    study): the mean of the predictions over *all* N pairs plus the inverse-probability-weighted mean of
    the rectifier over the labelled ones,

        estimate = lam * mean(all_pred) + sum_i w_i (truth_i - lam * pred_i) / sum_i w_i,   w_i = 1 / pi_i.

    The unlabelled pairs alone would not do: selection that depends on the judge's output leaves them a
    biased sample. For a fixed-size stratified draw (pi = n_h / N_h, so sum w = N) the rectifier's mean is
    the Horvitz-Thompson estimate; it is ppi_py's weighted `ppi_mean_ci` with `w = 1 / pi` and
    `Yhat_unlabeled = all_pred` (normal interval, ddof 0; lam tuned as ppi_py tunes it when None), and with
    equal probabilities ppi_py's unweighted one. `small_sample`: the rectifier's variance gets
    small_sample_estimate's z^2 pseudo-pairs and the interval is clipped to `bounds`."""
    alpha = _check_alpha(alpha)
    truth = _vector(labeled_truth, "labeled_truth")
    pred = _vector(labeled_pred, "labeled_pred")
    probability = _vector(inclusion_probability, "inclusion_probability")
    everything = _vector(all_pred, "all_pred")
    if len(truth) < MIN_LABELED or not len(truth) == len(pred) == len(probability) or len(everything) < len(truth):
        raise CalibrateError(f"labeled_truth: need at least {MIN_LABELED} labeled rows, each with a prediction and "
                             "an inclusion probability, and the predictions of all pairs",
                             ("labeled_truth", "labeled_pred", "inclusion_probability", "all_pred"))
    if not ((probability > 0) & (probability <= 1)).all():
        raise CalibrateError("inclusion_probability must be in (0, 1]", ("inclusion_probability",))
    n, big_n = len(truth), len(everything)
    weights = (1 / probability) / (1 / probability).sum() * n  # mean 1, as ppi_py normalises them
    if lam is None:
        first = float(everything.mean() + (weights * (truth - pred)).mean())
        grads, grads_hat = weights * (truth - first), weights * (pred - first)
        covariance = float(np.mean((grads - grads.mean()) * (grads_hat - grads_hat.mean())))
        variance = float(np.var(np.concatenate([grads_hat, everything - first]), ddof=1))
        lam = 0.0 if not variance > 0 else float(min(max(covariance / ((1 + n / big_n) * variance), 0.0), 1.0))
    rectifier = weights * (truth - lam * pred)
    estimate = float(lam * everything.mean() + rectifier.mean())
    variance = rectifier.var()
    z = NormalDist().inv_cdf(1 - alpha / 2)
    if small_sample:
        half_range = (bounds[1] - bounds[0]) / 2
        variance = (n * variance + z * z * half_range ** 2) / (n + z * z)
    std_error = math.sqrt((lam * everything).var() / big_n + variance / n)
    low, high = normal_interval(estimate, std_error, alpha)
    if small_sample:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"method": "ppi++", "estimate": finite(estimate), "ci_low": finite(low), "ci_high": finite(high),
            "n_labeled": n, "n_unlabeled": big_n - n, "alpha": float(alpha), "lam": finite(lam)}


def classical_mean(truth: np.ndarray) -> tuple[float, float]:
    """The labelled mean and its standard error std/sqrt(n), ddof=0 as ppi_py.classical_mean_ci."""
    return float(truth.mean()), float(truth.std() / math.sqrt(len(truth)))


def ppi_mean(truth: np.ndarray, pred: np.ndarray, unlabeled: np.ndarray, lam: float) -> tuple[float, float]:
    """The PPI point estimate for a given lam and its standard error, as ppi_py.ppi_mean_ci.

    estimate = mean(lam * unlabeled) + mean(truth - lam * pred): the imputed mean plus the
    "rectifier" that removes the predictions' bias. The two terms come from disjoint rows, so
    their variances add: se^2 = std(lam * unlabeled)^2 / N + std(truth - lam * pred)^2 / n (ddof=0).
    """
    imputed = lam * unlabeled
    rectifier = truth - lam * pred
    estimate = imputed.mean() + rectifier.mean()
    std_error = math.sqrt(imputed.std() ** 2 / len(unlabeled) + rectifier.std() ** 2 / len(truth))
    return float(estimate), std_error


def tuned_lambda(truth: np.ndarray, pred: np.ndarray, unlabeled: np.ndarray) -> float:
    """PPI++'s variance-minimising lam for a mean, clipped to [0, 1], as ppi_py computes it.

    ppi_py's `_calc_lam_glm` with identity Hessian and clip=True reduces, for a scalar mean, to

        lam = cov(truth, pred) / ((1 + n / N) * var(pred on all n + N rows))

    with cov over the labelled rows with divisor n, and var with divisor n + N - 1 (np.cov).
    Unclipped, this minimises var(estimate) = lam^2 var(pred) (1/N + 1/n) - 2 lam cov / n + const.
    Clipping keeps lam in [0, 1]: never trust the predictions more than PPI does, and never
    use them with a negative sign. Constant predictions (var 0) give lam = 0, the classical estimate.
    """
    n, big_n = len(truth), len(unlabeled)
    covariance = float(np.mean((truth - truth.mean()) * (pred - pred.mean())))
    variance = float(np.var(np.concatenate([pred, unlabeled]), ddof=1))
    if not variance > 0:
        return 0.0
    lam = covariance / ((1 + n / big_n) * variance)
    return float(min(max(lam, 0.0), 1.0))


def normal_interval(estimate: float, std_error: float, alpha: float) -> tuple[float, float]:
    """Two-sided z interval, estimate -+ z_{1-alpha/2} se (statsmodels' _zconfint_generic)."""
    z = NormalDist().inv_cdf(1 - alpha / 2)  # the stdlib's, to ~1e-16 of scipy's norm.ppf, without its import
    return estimate - z * std_error, estimate + z * std_error


# --------------------------------------------------------------------------- drawing the labelled pairs


def allocate(sizes: dict[str, int], weights: dict[str, float], size: int) -> dict[str, int]:
    """Labels per stratum in proportion to size x weight, capped at the stratum's size (the rest goes to
    the others), whole numbers by largest remainders."""
    counts = {key: 0 for key in sizes}
    open_keys = list(sizes)
    left = size
    while left > 0 and open_keys:
        total = sum(sizes[k] * weights[k] for k in open_keys)
        shares = {k: left * sizes[k] * weights[k] / total for k in open_keys}
        capped = [k for k in open_keys if counts[k] + shares[k] >= sizes[k]]
        if capped:
            for k in capped:
                left -= sizes[k] - counts[k]
                counts[k] = sizes[k]
                open_keys.remove(k)
            continue
        whole = {k: int(shares[k]) for k in open_keys}
        for k in sorted(open_keys, key=lambda k: (whole[k] - shares[k], k))[: left - sum(whole.values())]:
            whole[k] += 1
        for k in open_keys:
            counts[k] += whole[k]
        left = 0
    return counts


def sqrt_weights(keys: Sequence[str]) -> dict[str, float]:
    """Square-root allocation (each stratum's labels in proportion to the square root of its size), as
    weights for `allocate`: rare strata (a judge's refusal classes) get labels to measure the judge's error
    on, at a modest cost in the weights' spread."""
    sizes = {key: 0 for key in keys}
    for key in keys:
        sizes[key] += 1
    return {key: 1 / math.sqrt(size) for key, size in sizes.items()}


# --------------------------------------------------------------------------- tables


def estimate_table(table: PredictionTable, method: str = DEFAULT_METHOD, alpha: float = DEFAULT_ALPHA) -> dict:
    """mean_estimate() of a truth / prediction table (`data.tables.read_prediction_table`): a row with
    a truth is labelled, a row without one unlabelled. Errors name the table's file and column."""
    _check_method(method)
    _check_alpha(alpha)
    labeled_truth = [truth for truth in table.truth if truth is not None]
    labeled_pred = [pred for truth, pred in zip(table.truth, table.pred, strict=True) if truth is not None]
    unlabeled_pred = [pred for truth, pred in zip(table.truth, table.pred, strict=True) if truth is None]
    if len(labeled_truth) < MIN_LABELED:
        raise CalibrateError(f"{table.origin}: need at least {MIN_LABELED} rows with a value in column "
                             f"'{table.truth_column}', found {len(labeled_truth)}")
    if method != "classical" and not unlabeled_pred:
        raise CalibrateError(f"{table.origin}: method '{method}' needs unlabelled rows (an empty "
                             f"'{table.truth_column}'), but every row has one; use method 'classical'", ("method",))
    return mean_estimate(labeled_truth, labeled_pred, unlabeled_pred, method=method, alpha=alpha)


# --------------------------------------------------------------------------- checks


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise CalibrateError(f"unknown method {method!r} (use {', '.join(METHODS)})", ("method",))


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) < 1:
        raise CalibrateError(f"alpha must be a number in (0, 1), got {alpha!r}", ("alpha",))
    return float(alpha)


def _vector(values: Any, name: str) -> np.ndarray:
    """A 1-D float array of finite values; booleans count as 1/0; text and missing values are errors."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise CalibrateError(f"{name} must be a one-dimensional list of numbers, got shape {array.shape}", (name,))
    if array.dtype.kind in "USa":
        raise CalibrateError(f"{name} must hold numbers, not text", (name,))
    try:
        array = array.astype(float)
    except (TypeError, ValueError):
        raise CalibrateError(f"{name} must hold numbers only", (name,)) from None
    if not np.isfinite(array).all():
        position = int(np.argmin(np.isfinite(array)))
        raise CalibrateError(f"{name} has a non-finite value at position {position}: {array[position]}", (name,))
    return array
