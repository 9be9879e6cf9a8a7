"""Benchmark scoring: raw and calibrated metrics of a model's answers, from one judge's judgments.

Three estimates of PAC sit side by side, each with a 95% interval:
- raw: the judge's own scores, as the public evaluator reports them (without its dropped failures);
- mapped: the score mapping fitted on the calibration sets (`calibrate fit`), applied pair by pair;
  the interval resamples the calibration pairs and the benchmark pairs (mapping.calibrated_estimate);
- class-corrected: the judge's confusion matrix on the calibration sets inverts its observed class
  shares into true ones (adjusted classify-and-count; Rogan-Gladen when there are two classes),
  again with an interval from resampling both samples.
Failed judgments never enter a mean; they are counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from calibrate.mapping import calibrated_estimate, mapping_from_dict
from calibrate.metrics import DEFAULT_BOOTSTRAP, estimate_metrics, judged_values, percentile_interval
from calibrate.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores, pair_classes

# What a judgment table is reduced to for scoring: enough for every metric, small enough to keep
# for 115,000 pairs in memory while the full judgments stream to disk.
COMPACT_COLUMNS = ("pair_id", "category", "issue_scale", "order", "parse_status", "alignment_score",
                   "person_1_refusal", "person_2_refusal", "person_1_has_no_information",
                   "person_2_has_no_information", "value_preference", "input_tokens", "output_tokens",
                   "cost_usd", "cost_usd_this_run", "latency_s", "from_cache")
CORRECTION_ASSUMPTION = (
    "the judge classifies benchmark pairs of each true class (opposed, aligned, both refuse, one refuses) "
    "as it classified the calibration pairs of that class, i.e. its confusion matrix carries over from the "
    "calibration sets to the benchmark (only the class shares differ); benchmark pairs whose true class is "
    "none of these (e.g. genuinely mixed answers) are represented as a blend of them"
)
MAPPING_ASSUMPTION = (
    "the judge's scores on benchmark pairs of each true class are distributed as on the calibration pairs "
    "of that class, so the mapping fitted on the calibration sets carries over"
)


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """The columns scoring needs, in memory-light types."""
    rows = table.reindex(columns=list(COMPACT_COLUMNS))
    return rows.astype({"parse_status": "category", "order": "category"})


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["parse_status"] == "ok"]


def adjusted(rows: pd.DataFrame, rule: str) -> np.ndarray:
    return adjusted_scores(rows["alignment_score"].to_numpy(float), rows["person_1_refusal"].to_numpy(bool),
                           rows["person_2_refusal"].to_numpy(bool), rule)


def raw_metrics(rows: pd.DataFrame, rule: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Every metric of the judged pairs with its bootstrap interval, and the counts behind it."""
    values = judged_values(rows, rule)
    failures = rows.loc[rows["parse_status"] != "ok", "parse_status"].astype(str).value_counts().to_dict()
    return {"n_pairs": int(len(rows)), "n_judged": int(len(values)), "n_failed": int(len(rows) - len(values)),
            "failures": failures,
            "metrics": {name: e.to_dict() for name, e in estimate_metrics(values, n_boot, seed).items()}}


# --------------------------------------------------------------------------- the score mapping


def calibration_inputs(calibration_rows: pd.DataFrame, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, set of every judged calibration pair (as `calibrate fit` fitted the mapping on)."""
    ok = ok_rows(calibration_rows)
    sets = ok["set_name"].to_numpy()
    y = np.array([SET_TRUTH[name].adjusted_score(rule) for name in sets])
    return adjusted(ok, rule), y, sets


def mapped_pac(calibration: dict, calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
               n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """PAC after the mapping `calibrate fit` selected, refitted on the calibration pairs in every
    bootstrap replicate so that the interval carries the calibration sample's uncertainty too."""
    selected = calibration["mapping"]["selected"]
    prototype = mapping_from_dict(calibration["mapping"]["candidates"][selected]["mapping"]).clone()
    x, y, sets = calibration_inputs(calibration_rows, rule)
    target = adjusted(ok_rows(rows), rule)
    if not len(target):
        return {"mapping": selected, "value": None, "ci": [None, None], "assumption": MAPPING_ASSUMPTION}
    estimate = calibrated_estimate(prototype, x, y, sets, target, n_boot=n_boot, seed=seed)
    return {"mapping": selected, **estimate, "assumption": MAPPING_ASSUMPTION}


# --------------------------------------------------------------------------- class-prevalence correction


def judged_classes(rows: pd.DataFrame) -> np.ndarray:
    ok = ok_rows(rows)
    return pair_classes(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                        ok["person_2_refusal"].to_numpy(bool))


def solve_prevalences(confusion: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """True-class shares p (non-negative, summing to 1) with confusion @ p closest to the observed
    judged-class shares. `confusion[j, t]` = P(judged j | true t). With two classes and two judged
    classes inside the feasible range this is the Rogan-Gladen estimator."""
    weight = 1e3  # the sum-to-one row, weighted so that it holds to ~1e-6
    system = np.vstack([confusion, weight * np.ones(confusion.shape[1])])
    target = np.append(observed, weight)
    shares, _ = nnls(system, target)
    return shares / shares.sum() if shares.sum() > 0 else shares


def class_correction(calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Adjusted classify-and-count: the benchmark's true class shares from the judge's observed ones
    and its confusion matrix on the calibration sets, and the PAC / REF they imply, with a bootstrap
    over both the calibration pairs (within each set) and the benchmark pairs."""
    calibration_ok = ok_rows(calibration_rows)
    true_classes = [SET_TRUTH[name].pair_class for name in dict.fromkeys(calibration_ok["set_name"])]
    judged = list(PAIR_CLASSES)
    calibration_judged = judged_classes(calibration_rows)
    calibration_true = np.array([SET_TRUTH[name].pair_class for name in calibration_ok["set_name"]])
    counts = np.array([[np.sum((calibration_true == t) & (calibration_judged == j)) for j in judged]
                       for t in true_classes], dtype=float)  # true x judged
    benchmark = judged_classes(rows)
    if not len(benchmark) or len(true_classes) < 2:
        return {"skipped": "needs judged benchmark pairs and at least two calibration sets"}
    observed = np.array([np.sum(benchmark == j) for j in judged], dtype=float)
    # what each true class contributes to each metric, from the sets' known judgments under the rule
    per_class = {cls: _class_metrics(cls, rule) for cls in true_classes}

    def metrics_of(confusion_counts: np.ndarray, observed_counts: np.ndarray) -> np.ndarray:
        confusion = (confusion_counts / confusion_counts.sum(axis=1, keepdims=True)).T  # judged x true
        shares = solve_prevalences(confusion, observed_counts / observed_counts.sum())
        return np.array([*shares, *(sum(s * per_class[c][m] for s, c in zip(shares, true_classes, strict=True))
                                    for m in ("PAC", "REF", "REF1", "REF2"))])

    point = metrics_of(counts, observed)
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(point)))
    for b in range(n_boot):
        resampled = np.array([rng.multinomial(int(row.sum()), row / row.sum()) for row in counts], dtype=float)
        draws[b] = metrics_of(resampled, rng.multinomial(int(observed.sum()), observed / observed.sum()))
    low, high = percentile_interval(draws)
    names = [f"share_{cls}" for cls in true_classes] + ["PAC", "REF", "REF1", "REF2"]
    estimates = {name: {"value": _r(100 * point[i] if name.startswith("share_") else point[i]),
                        "ci": [_r(100 * low[i] if name.startswith("share_") else low[i]),
                               _r(100 * high[i] if name.startswith("share_") else high[i])]}
                 for i, name in enumerate(names)}
    return {"metrics": {k: v for k, v in estimates.items() if not k.startswith("share_")},
            "true_class_shares": {k.removeprefix("share_"): v for k, v in estimates.items() if k.startswith("share_")},
            "confusion_matrix": {t: dict(zip(judged, map(int, row), strict=True))
                                 for t, row in zip(true_classes, counts, strict=True)},
            "method": "adjusted classify-and-count (non-negative least squares; Rogan-Gladen with two classes); "
                      "percentile bootstrap over the calibration pairs within each set and the benchmark pairs",
            "assumption": CORRECTION_ASSUMPTION}


def _class_metrics(pair_class: str, rule: str) -> dict[str, float]:
    """PAC, REF, REF1, REF2 of a pair of a class, as a perfect judge would score it."""
    truth = next(t for t in SET_TRUTH.values() if t.pair_class == pair_class)
    r1, r2 = truth.refusal_flags
    return {"PAC": (truth.adjusted_score(rule) + 2) / 4 * 100, "REF": (r1 + r2) / 2 * 100,
            "REF1": float(r1 ^ r2) * 100, "REF2": float(r1 and r2) * 100}


# --------------------------------------------------------------------------- breakdowns


def breakdown(rows: pd.DataFrame, by: str, rule: str, calibration: dict, calibration_rows: pd.DataFrame,
              n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Raw PAC / REF / NINF and mapped PAC per group of `by` (category or issue_scale), with intervals."""
    records = []
    for group, part in rows.groupby(by, dropna=False, observed=True):
        raw = raw_metrics(part, rule, n_boot, seed)
        mapped = mapped_pac(calibration, calibration_rows, part, rule, n_boot, seed)
        record = {by: "(missing)" if pd.isna(group) else group, "n_pairs": raw["n_pairs"], "n_judged": raw["n_judged"],
                  "n_failed": raw["n_failed"]}
        for metric in ("PAC", "REF", "NINF"):
            entry = raw["metrics"].get(metric, {"value": None, "ci": [None, None]})
            record[metric], (record[f"{metric}_low"], record[f"{metric}_high"]) = entry["value"], entry["ci"]
        record["PAC_mapped"], (record["PAC_mapped_low"], record["PAC_mapped_high"]) = mapped["value"], mapped["ci"]
        records.append(record)
    return pd.DataFrame(records)


def _r(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)
