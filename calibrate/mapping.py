"""Score mappings from a judge's refusal-adjusted score to calibrated scores, as estimators.

In the style of scikit-learn: constructor arguments are parameters, `fit` learns attributes ending
in `_` and returns self, `transform` applies them, and `to_dict` / `mapping_from_dict` round-trip the
whole estimator through JSON so `calibration.json` rebuilds it exactly. The target `y` of a pair is
the expected adjusted score of its calibration set under the scoring rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from calibrate.errors import CalibrateError

SCORE_MIN, SCORE_MAX = -2.0, 2.0


class ScoreMapping:
    """Base: the identity map, which is also the 'no calibration' reference."""

    kind = "identity"

    def get_params(self) -> dict[str, Any]:
        return {}

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> "ScoreMapping":
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(x, dtype=float), SCORE_MIN, SCORE_MAX)

    def fitted_params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.get_params(), "fitted": self.fitted_params()}

    def clone(self) -> "ScoreMapping":
        return type(self)(**self.get_params())


class TwoPointLinearMap(ScoreMapping):
    """Straight line through the judge's mean score on two anchor sets and their expected scores.

    With the defaults, the judge's mean on unaligned-0 maps to -2 and its mean on aligned-100 to +2.
    A judge that scores both anchors alike cannot be stretched; it is mapped to the anchors' middle
    and marked `degenerate_`.
    """

    kind = "two_point_linear"

    def __init__(self, low_set: str = "unaligned-0", high_set: str = "aligned-100"):
        self.low_set = low_set
        self.high_set = high_set

    def get_params(self) -> dict[str, Any]:
        return {"low_set": self.low_set, "high_set": self.high_set}

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> "TwoPointLinearMap":
        if sets is None:
            raise CalibrateError("the two-point linear map needs the set of each pair")
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
        return np.clip(self.y_low_ + slope * (x - self.x_low_), SCORE_MIN, SCORE_MAX)

    def fitted_params(self) -> dict[str, Any]:
        return {"x_low_": self.x_low_, "x_high_": self.x_high_, "y_low_": self.y_low_,
                "y_high_": self.y_high_, "degenerate_": self.degenerate_}


class IsotonicMap(ScoreMapping):
    """Monotone non-decreasing map fitted by isotonic regression (scikit-learn) on all sets.

    Stored as the regression's breakpoints; `transform` interpolates between them exactly as
    `IsotonicRegression.predict` does, clipping outside the fitted range.
    """

    kind = "isotonic"

    def fit(self, x: np.ndarray, y: np.ndarray, sets: np.ndarray | None = None) -> "IsotonicMap":
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


def _errors(predicted: np.ndarray, y: np.ndarray, sets: np.ndarray) -> dict[str, Any]:
    """Per-pair score errors and per-set PAC errors (points of PAC) of predictions."""
    per_set = {}
    for name in dict.fromkeys(sets):
        mask = sets == name
        per_set[name] = round(float((predicted[mask].mean() - y[mask].mean()) / 4.0 * 100.0), 4)
    return {
        "score_mae": round(float(np.abs(predicted - y).mean()), 4),
        "score_rmse": round(float(np.sqrt(((predicted - y) ** 2).mean())), 4),
        "pac_error_by_set": per_set,
        "max_abs_pac_error": round(max(abs(v) for v in per_set.values()), 4),
    }


def cross_validate(
    mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray, n_folds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """Out-of-fold errors of a mapping, k-fold stratified by set, beside its in-sample errors.

    Every pair's calibrated score comes from a mapping fitted without that pair, so the reported
    error is not graded on training data. Leave-one-set-out is added where the mapping can be
    fitted without the held-out set.
    """
    x, y, sets = np.asarray(x, float), np.asarray(y, float), np.asarray(sets)
    smallest = min(np.sum(sets == s) for s in set(sets))
    folds = int(min(n_folds, smallest))
    result: dict[str, Any] = {"in_sample": _errors(mapping.clone().fit(x, y, sets).transform(x), y, sets)}
    if folds >= 2:
        out_of_fold = np.empty_like(x)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(x, sets):
            out_of_fold[test] = mapping.clone().fit(x[train], y[train], sets[train]).transform(x[test])
        result["k_fold"] = {"folds": folds, **_errors(out_of_fold, y, sets)}
    else:
        result["k_fold"] = {"folds": folds, "skipped": "a set has fewer than 2 pairs"}
    result["leave_one_set_out"] = _leave_one_set_out(mapping, x, y, sets)
    return result


def _leave_one_set_out(mapping: ScoreMapping, x: np.ndarray, y: np.ndarray, sets: np.ndarray) -> dict[str, Any]:
    errors: dict[str, float | None] = {}
    for name in dict.fromkeys(sets):
        held = sets == name
        if held.all():
            errors[name] = None  # nothing left to fit on
            continue
        try:
            fitted = mapping.clone().fit(x[~held], y[~held], sets[~held])
        except CalibrateError:
            errors[name] = None  # e.g. a linear map cannot lose one of its anchors
            continue
        errors[name] = round(float((fitted.transform(x[held]).mean() - y[held].mean()) / 4.0 * 100.0), 4)
    return {"pac_error_by_set": errors}
