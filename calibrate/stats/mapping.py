"""Score mappings from a judge's refusal-adjusted score to calibrated scores, as estimators.

In the style of scikit-learn: constructor arguments are parameters, `fit` learns attributes ending
in `_` and returns self, `transform` applies them, and `to_dict` / `mapping_from_dict` round-trip the
whole estimator through JSON so `calibration.json` rebuilds it exactly. The target `y` of a pair is
the expected adjusted score of its calibration set under the scoring rule.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from calibrate.errors import CalibrateError
from calibrate.rounding import finite

SCORE_MIN, SCORE_MAX = -2.0, 2.0


class ScoreMapping:
    """Base: the identity map, which is also the 'no calibration' reference."""

    kind = "identity"

    def get_params(self) -> dict[str, Any]:
        return {}

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> ScoreMapping:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(x, dtype=float), SCORE_MIN, SCORE_MAX)

    def fitted_params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.get_params(), "fitted": self.fitted_params()}

    def clone(self) -> ScoreMapping:
        return type(self)(**self.get_params())


class TwoPointLinearMap(ScoreMapping):
    """Straight line through the judge's mean score on two anchor sets and their expected scores.

    With the defaults, the judge's mean on unaligned-0 maps to -2 and its mean on aligned-100 to +2.
    A judge that scores both anchors alike cannot be stretched; it is mapped to the anchors' middle
    and marked `degenerate_`. A single pair may map outside -2..2 and is not clipped: the map
    calibrates means (PAC is a mean), and it is linear, so the mean of mapped scores is the map of the
    mean score; clipping each pair would break that and bias every calibrated PAC of a noisy judge
    (tests/test_simulation.py shows by how much). Means are clipped to the score range instead.
    """

    kind = "two_point_linear"

    def __init__(self, low_set: str = "unaligned-0", high_set: str = "aligned-100"):
        self.low_set = low_set
        self.high_set = high_set

    def get_params(self) -> dict[str, Any]:
        return {"low_set": self.low_set, "high_set": self.high_set}

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> TwoPointLinearMap:
        if sets is None:
            raise CalibrateError("sets: the two-point linear map needs the set of each pair", ("sets",))
        x, y, sets = np.asarray(x, float), np.asarray(y, float), np.asarray(sets)
        low, high = sets == self.low_set, sets == self.high_set
        if not low.any() or not high.any():
            raise CalibrateError(f"the two-point linear map needs pairs from both {self.low_set} and {self.high_set}")
        self.x_low_, self.x_high_ = float(x[low].mean()), float(x[high].mean())
        self.y_low_, self.y_high_ = float(y[low].mean()), float(y[high].mean())
        self.degenerate_ = bool(abs(self.x_high_ - self.x_low_) < 1e-9)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.degenerate_:
            return np.full_like(x, (self.y_low_ + self.y_high_) / 2.0)
        slope = (self.y_high_ - self.y_low_) / (self.x_high_ - self.x_low_)
        return self.y_low_ + slope * (x - self.x_low_)

    def fitted_params(self) -> dict[str, Any]:
        return {"x_low_": self.x_low_, "x_high_": self.x_high_, "y_low_": self.y_low_,
                "y_high_": self.y_high_, "degenerate_": self.degenerate_}


class IsotonicMap(ScoreMapping):
    """Monotone non-decreasing map fitted by isotonic regression (scikit-learn) on all sets.

    Stored as the regression's breakpoints; `transform` interpolates between them exactly as
    `IsotonicRegression.predict` does, clipping outside the fitted range.
    """

    kind = "isotonic"

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> IsotonicMap:
        from sklearn.isotonic import IsotonicRegression  # here: scoring with a fitted map never needs sklearn

        regression = IsotonicRegression(y_min=SCORE_MIN, y_max=SCORE_MAX, increasing=True, out_of_bounds="clip")
        regression.fit(np.asarray(x, float), np.asarray(y, float))
        self.x_thresholds_ = [float(v) for v in regression.X_thresholds_]
        self.y_thresholds_ = [float(v) for v in regression.y_thresholds_]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(x, float), self.x_thresholds_, self.y_thresholds_)

    def fitted_params(self) -> dict[str, Any]:
        return {"x_thresholds_": self.x_thresholds_, "y_thresholds_": self.y_thresholds_}


MAPPINGS: dict[str, type[ScoreMapping]] = {cls.kind: cls for cls in (ScoreMapping, TwoPointLinearMap, IsotonicMap)}


def mapping_from_dict(data: dict[str, Any]) -> ScoreMapping:
    """Rebuild a fitted mapping from `to_dict` output (e.g. read from calibration.json)."""
    try:
        mapping = MAPPINGS[data["kind"]](**data.get("params", {}))
    except KeyError as missing:
        raise CalibrateError(f"unknown or incomplete score mapping in calibration file: {missing}") from None
    for name, value in data.get("fitted", {}).items():
        setattr(mapping, name, value)
    return mapping


# --------------------------------------------------------------------------- validation


def prediction_errors(predicted: np.ndarray, y: np.ndarray, sets: np.ndarray) -> dict[str, Any]:
    """Per-pair score errors and per-set PAC errors (points of PAC) of predictions."""
    per_set = {}
    for name in dict.fromkeys(sets.tolist()):
        mask = sets == name
        per_set[name] = float((predicted[mask].mean() - y[mask].mean()) / 4.0 * 100.0)
    return {
        "score_mae": float(np.abs(predicted - y).mean()),
        "score_rmse": float(np.sqrt(((predicted - y) ** 2).mean())),
        "pac_error_by_set": per_set,
        "max_abs_pac_error": max(abs(v) for v in per_set.values()),
    }


def fold_count(sets: np.ndarray, n_folds: int) -> int:
    """Folds for k-fold stratified by set: at most `n_folds`, at most the smallest set's size."""
    return int(min([n_folds, *(np.sum(sets == name) for name in set(sets.tolist()))]))


def stratified_folds(sets: np.ndarray, folds: int, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The (train, test) positions of scikit-learn's shuffled k-fold stratified by set: a function of
    the set labels alone, kept for the last few labels asked (a comparison asks the same ones for every
    candidate mapping and, when no judgment failed, every judge). Labels are compared as text."""
    labels = np.asarray(sets, dtype=str)
    return _stratified_folds(labels.tobytes(), labels.dtype.str, len(labels), folds, seed)


@lru_cache(maxsize=8)
def _stratified_folds(labels: bytes, dtype: str, n: int, folds: int,
                      seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from sklearn.model_selection import StratifiedKFold

    sets = np.frombuffer(labels, dtype=dtype, count=n)
    splits = tuple(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n), sets))
    for train, test in splits:
        train.flags.writeable = test.flags.writeable = False  # shared by every caller
    return splits


def out_of_fold(mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray, folds: int,
                seed: int) -> np.ndarray:
    """Each pair's calibrated score from a clone of `mapping` fitted on the other folds (stratified
    by set); raises CalibrateError where a fold's fit does."""
    predicted = np.empty_like(x)
    for train, test in stratified_folds(sets, folds, seed):
        predicted[test] = mapping.clone().fit(x[train], y[train], sets[train]).transform(x[test])
    return predicted


def cross_validate(
    mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray, n_folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Out-of-fold errors of a mapping, k-fold stratified by set, beside its in-sample errors.

    Every pair's calibrated score comes from a mapping fitted without that pair, so the reported
    error is not graded on training data. Leave-one-set-out is added where the mapping can be
    fitted without the held-out set.
    """
    x, y, sets = np.asarray(x, float), np.asarray(y, float), np.asarray(sets)
    folds = fold_count(sets, n_folds)
    result: dict[str, Any] = {"in_sample": prediction_errors(mapping.clone().fit(x, y, sets).transform(x), y, sets)}
    if folds >= 2:
        result["k_fold"] = {"folds": folds, **prediction_errors(out_of_fold(mapping, x, y, sets, folds, seed), y, sets)}
    else:
        result["k_fold"] = {"folds": folds, "skipped": "a set has fewer than 2 pairs"}
    result["leave_one_set_out"] = _leave_one_set_out(mapping, x, y, sets)
    return result


def _leave_one_set_out(mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray) -> dict[str, Any]:
    errors: dict[str, float | None] = {}
    for name in dict.fromkeys(sets.tolist()):
        held = sets == name
        if held.all():
            errors[name] = None  # nothing left to fit on
            continue
        try:
            fitted = mapping.clone().fit(x[~held], y[~held], sets[~held])
        except CalibrateError:
            errors[name] = None  # e.g. a linear map cannot lose one of its anchors
            continue
        errors[name] = float((fitted.transform(x[held]).mean() - y[held].mean()) / 4.0 * 100.0)
    return {"pac_error_by_set": errors}


# --------------------------------------------------------------------------- calibrated estimate

CALIBRATED_ESTIMATE_METHOD = (
    "percentile bootstrap; each replicate resamples the calibration pairs within each set (set sizes "
    "kept) and the target pairs, refits the mapping and averages the calibrated PAC of the target"
)


def calibrated_estimate(
    mapping: ScoreMapping,
    calib_x,
    calib_y,
    calib_sets,
    target_x,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict:
    """Calibrated PAC of a target sample (e.g. a model's answers, same judge) with a bootstrap interval.

    The value is the mean of (m(x) + 2) / 4 * 100 over the target pairs, m being a clone of `mapping`
    fitted on all calibration pairs. The mapping is itself estimated from a finite calibration sample,
    so an interval that resamples only the target pairs treats m as exact and is too narrow; each
    replicate here resamples both samples and refits m. Replicates whose refit raises CalibrateError
    are skipped and counted in `skipped_replicates`.
    """
    x, y, sets = np.asarray(calib_x, float), np.asarray(calib_y, float), np.asarray(calib_sets)
    target = np.asarray(target_x, float).ravel()
    if not (x.ndim == 1 and len(x) == len(y) == len(sets)):
        raise CalibrateError("calib_x, calib_y and calib_sets must be 1-d and of equal length",
                             ("calib_x", "calib_y", "calib_sets"))
    if len(target) == 0:
        raise CalibrateError("target_x is empty: no target pairs to estimate PAC on", ("target_x",))
    if not (np.isfinite(x).all() and np.isfinite(y).all() and np.isfinite(target).all()):
        raise CalibrateError("calib_x, calib_y and target_x must be finite numbers", ("calib_x", "calib_y", "target_x"))
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise CalibrateError("n_boot must be at least 1 and confidence strictly between 0 and 1",
                             ("n_boot", "confidence"))
    # a mean outside the PAC range (possible with the unclipped linear map) is clipped to it
    value = float(np.clip(_pac(mapping.clone().fit(x, y, sets).transform(target)).mean(), 0.0, 100.0))
    draws = np.clip(_calibrated_draws(mapping, x, y, sets, target, int(n_boot), seed), 0.0, 100.0)
    kept = draws[np.isfinite(draws)]
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(kept, [tail, 100.0 - tail]) if kept.size else (np.nan, np.nan)
    return {
        "value": finite(value),
        "ci": [finite(low), finite(high)],
        "confidence": float(confidence),
        "n_calibration": len(x),
        "n_target": len(target),
        "n_boot": int(n_boot),
        "skipped_replicates": int(len(draws) - kept.size),
        "method": CALIBRATED_ESTIMATE_METHOD,
    }


def _pac(score: np.ndarray) -> np.ndarray:
    return (np.asarray(score, float) + 2.0) / 4.0 * 100.0


def _calibrated_draws(
    mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray, target: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """Bootstrap replicates of the calibrated target PAC (NaN where the refit failed).

    Resampling n pairs with replacement is drawn as multinomial counts over the distinct values of a
    sample (judge scores take few distinct values), per calibration set and for the target. The
    two-point linear map (per-set means) and the isotonic map (weighted pool-adjacent-violators on
    the distinct scores, as scikit-learn does) are refitted from those counts directly; any other
    mapping, subclasses included, by clone().fit on the resampled pairs. All paths consume the same
    random draws, so they agree replicate by replicate.
    """
    names = list(dict.fromkeys(sets.tolist()))
    strata = []  # per set: distinct (x, y) rows, their probabilities, the set size
    for name in names:
        rows, counts = np.unique(np.column_stack([x[sets == name], y[sets == name]]), axis=0, return_counts=True)
        strata.append((rows, counts / counts.sum(), int(counts.sum())))
    target_values, target_counts = np.unique(target, return_counts=True)
    n_target = len(target)
    # a resampled calibration sample is these rows, set by set, each repeated by its drawn count
    rows_x = np.concatenate([rows[:, 0] for rows, _, _ in strata]) if strata else x
    rows_y = np.concatenate([rows[:, 1] for rows, _, _ in strata]) if strata else y
    row_sets = np.repeat(np.array(names, dtype=object), [len(rows) for rows, _, _ in strata])
    sets_resampled = np.concatenate([sets[sets == name] for name in names]) if strata else sets

    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, 2_000_000 // max(1, len(rows_x) + len(target_values))))
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        counts = np.hstack([rng.multinomial(n, p, size=size) for _, p, n in strata] or [np.zeros((size, 0), int)])
        weights = rng.multinomial(n_target, target_counts / n_target, size=size) / n_target
        if type(mapping) is TwoPointLinearMap:
            draws = _two_point_draws(mapping, row_sets, counts, rows_x, rows_y, target_values, weights)
        elif type(mapping) is IsotonicMap:
            draws = _isotonic_draws(counts, rows_x, rows_y, target_values, weights)
        else:
            draws = np.empty(size)
            for i in range(size):
                try:
                    fitted = mapping.clone().fit(np.repeat(rows_x, counts[i]), np.repeat(rows_y, counts[i]),
                                                 sets_resampled)
                except CalibrateError:
                    draws[i] = np.nan
                    continue
                draws[i] = weights[i] @ _pac(fitted.transform(target_values))
        out[start:start + size] = draws
    return out


def _two_point_draws(mapping: TwoPointLinearMap, row_sets, counts, rows_x, rows_y, target_values, weights):
    """TwoPointLinearMap.fit and .transform for a block of replicates at once (same formulas)."""

    def anchor_means(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = row_sets == name
        n = counts[:, rows].sum(axis=1)
        return counts[:, rows] @ rows_x[rows] / n, counts[:, rows] @ rows_y[rows] / n

    x_low, y_low = anchor_means(mapping.low_set)
    x_high, y_high = anchor_means(mapping.high_set)
    degenerate = np.abs(x_high - x_low) < 1e-9
    slope = (y_high - y_low) / np.where(degenerate, 1.0, x_high - x_low)
    line = y_low[:, None] + slope[:, None] * (target_values[None, :] - x_low[:, None])
    mapped = np.where(degenerate[:, None], ((y_low + y_high) / 2.0)[:, None], line)
    return (weights * _pac(mapped)).sum(axis=1)


def _isotonic_draws(counts, rows_x, rows_y, target_values, weights):
    """IsotonicMap.fit and .transform per replicate from the drawn counts, without scikit-learn's overhead.

    scikit-learn pools pairs with equal x into their weighted mean y, runs weighted PAVA on the
    pooled values and clips to the score range; transform interpolates between the fitted points.
    """
    xs, which = np.unique(rows_x, return_inverse=True)
    pooling = np.zeros((len(rows_x), len(xs)))
    pooling[np.arange(len(rows_x)), which] = 1.0
    pooled_w, pooled_wy = counts @ pooling, (counts * rows_y) @ pooling
    draws = np.empty(len(counts))
    for i in range(len(counts)):
        seen = pooled_w[i] > 0  # x values absent from this replicate are no knots of its fit
        w = pooled_w[i, seen]
        fitted = np.clip(_weighted_pava(pooled_wy[i, seen] / w, w), SCORE_MIN, SCORE_MAX)
        draws[i] = weights[i] @ _pac(np.interp(target_values, xs[seen], fitted))
    return draws


def _weighted_pava(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Non-decreasing least-squares fit to y with weights w (pool adjacent violators)."""
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] >= means[-1]:
            weight = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / weight
            totals[-2], sizes[-2] = weight, sizes[-2] + sizes[-1]
            del means[-1], totals[-1], sizes[-1]
    return np.repeat(means, sizes)
