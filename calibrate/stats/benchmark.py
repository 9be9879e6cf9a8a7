"""Benchmark scoring: raw and calibrated metrics of a model's answers, from one judge's judgments.

Three estimates of PAC sit side by side, each with a 95% interval:
- raw: the judge's own scores, as the public evaluator reports them (without its dropped failures);
- mapped: the score mapping fitted on the calibration sets (`calibrate fit`), applied pair by pair;
  the interval resamples the calibration pairs and the benchmark pairs (mapping.calibrated_estimate);
- class-corrected: the judge's confusion matrix on the calibration sets inverts its observed class
  shares into true ones (adjusted classify-and-count; Rogan-Gladen when there are two classes),
  again with an interval from resampling both samples.
With an anchor (a second, expensive judge on a random fraction of the pairs, or human labels), the
anchor's own metrics are estimated by prediction-powered inference (ppi.py) from both judges.
Failed judgments never enter a mean; they are counted by type, `missing_answer` (a pair whose answer
is a placeholder such as "No response", never judged) among them, and such pairs are listed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from calibrate.data.labels import ITEM, SCORE, read_labels, split_item
from calibrate.data.sources import read_source_frame
from calibrate.errors import CalibrateError
from calibrate.stats.calibration import mapping_inputs
from calibrate.stats.mapping import calibrated_estimate, mapping_from_dict
from calibrate.stats.metrics import (
    DEFAULT_BOOTSTRAP,
    bootstrap_means,
    estimate_metrics,
    judged_values,
    missing_answers,
    percentile_interval,
)
from calibrate.stats.humans import annotator_tables, consensus
from calibrate.stats.ppi import METHODS, mean_estimate
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores, pair_classes
from calibrate.rounding import rounded

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
    return rows.astype({"parse_status": "category", "order": "category", "missing_side": "category"})


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["parse_status"] == "ok"]


def adjusted(rows: pd.DataFrame, rule: str) -> np.ndarray:
    return adjusted_scores(rows["alignment_score"].to_numpy(float), rows["person_1_refusal"].to_numpy(bool),
                           rows["person_2_refusal"].to_numpy(bool), rule)


def raw_metrics(rows: pd.DataFrame, rule: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Every metric of the judged pairs with its bootstrap interval, and the counts behind it (failures
    by type, and the pairs not judged because an answer is a placeholder)."""
    values = judged_values(rows, rule)
    failures = rows.loc[rows["parse_status"] != "ok", "parse_status"].astype(str).value_counts().to_dict()
    return {"n_pairs": int(len(rows)), "n_judged": int(len(values)), "n_failed": int(len(rows) - len(values)),
            "failures": failures, "missing_answers": missing_answers(rows),
            "metrics": {name: e.to_dict() for name, e in estimate_metrics(values, n_boot, seed).items()}}


# --------------------------------------------------------------------------- the score mapping


def mapped_pac(calibration: dict, calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
               n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """PAC after the mapping `calibrate fit` selected, refitted on the calibration pairs in every
    bootstrap replicate so that the interval carries the calibration sample's uncertainty too."""
    selected = calibration["mapping"]["selected"]
    prototype = mapping_from_dict(calibration["mapping"]["candidates"][selected]["mapping"]).clone()
    x, y, sets = mapping_inputs(calibration_rows, rule)
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
    from scipy.optimize import nnls  # here: importing scipy.optimize costs 0.4 s that most commands never need

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
    estimates = {name: {"value": rounded(100 * point[i] if name.startswith("share_") else point[i]),
                        "ci": [rounded(100 * low[i] if name.startswith("share_") else low[i]),
                               rounded(100 * high[i] if name.startswith("share_") else high[i])]}
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
    """Raw PAC / REF / NINF and mapped PAC per group of `by` (category or issue_scale), with intervals;
    beside them the public evaluator's own breakdown quantities, so its plots can be reproduced: the
    mean raw alignment score (-2..2, before the refusal adjustment) and the issue-level refusal rates
    (any, exactly one, both refuse)."""
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
        scores = ok_rows(part)["alignment_score"].to_numpy(float)
        low, high = percentile_interval(bootstrap_means(scores, n_boot, seed))[:, 0] if len(scores) else (None, None)
        record["alignment_raw"] = rounded(scores.mean()) if len(scores) else None
        record["alignment_raw_low"], record["alignment_raw_high"] = rounded(low), rounded(high)
        for metric in ("REF_ANY", "REF1", "REF2"):
            record[metric] = raw["metrics"].get(metric, {"value": None})["value"]
        records.append(record)
    return pd.DataFrame(records)


# --------------------------------------------------------------------------- cheap judge + anchor (PPI)

ANCHOR_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF")
LABEL_FLAGS = ("person_1_refusal", "person_2_refusal", "person_1_has_no_information", "person_2_has_no_information")


def anchor_selected(item_key: str, fraction: float, seed: int) -> bool:
    """Whether a pair goes to the anchor: a seeded hash of its content, so the same pairs are chosen
    on every run (and their anchor judgments come back from the cache) wherever they sit in the data."""
    digest = hashlib.sha256(f"{seed}:{item_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def anchored_estimates(cheap: pd.DataFrame, anchor: pd.DataFrame, rule: str, alpha: float = 0.05) -> dict:
    """The anchor's PAC, REF, REF1, REF2 and NINF from the cheap judge's judgments of every pair and
    the anchor's judgments of a random subset: PPI++, plain PPI and classical (anchor rows only).

    Rows are matched on pair_id; pairs the cheap judge failed on are left out (no prediction), and
    anchored pairs the anchor failed on count as unlabelled; both are counted in the result.
    """
    cheap_ok = ok_rows(cheap).drop_duplicates("pair_id").set_index("pair_id")
    anchor_ok = ok_rows(anchor).drop_duplicates("pair_id").set_index("pair_id")
    labeled = cheap_ok.index.intersection(anchor_ok.index)
    unlabeled = cheap_ok.index.difference(labeled)
    predictions = judged_values(cheap_ok.reset_index(), rule).set_axis(cheap_ok.index)
    truths = judged_values(anchor_ok.reset_index(), rule).set_axis(anchor_ok.index)
    estimates = {}
    for metric in ANCHOR_METRICS:
        estimates[metric] = {method: mean_estimate(truths.loc[labeled, metric], predictions.loc[labeled, metric],
                                                   predictions.loc[unlabeled, metric], method, alpha)
                             for method in METHODS} if len(labeled) >= 2 else None
    return {"n_labeled": int(len(labeled)), "n_unlabeled": int(len(unlabeled)),
            "n_cheap_failed": int(len(cheap.drop_duplicates("pair_id")) - len(cheap_ok)),
            "n_anchor_failed": int(len(anchor.drop_duplicates("pair_id")) - len(anchor_ok)),
            "metrics": estimates}


def load_anchor_labels(path: Path, models: list[str]) -> dict[str, pd.DataFrame]:
    """Human labels as the anchor: `pair_id`, `alignment_score` (-2..2), optionally the four flags
    (missing flags are false) and `model` (needed when several response datasets are scored); or a
    label file with `item` ("<model>/<pair_id>", the long format of data/labels.py), where several
    annotators' labels of a pair count as their consensus."""
    frame = read_source_frame(path, "anchor_labels", "anchor_labels")
    if ITEM in frame.columns:
        frame = _consensus_labels(read_labels(path, "anchor_labels"))
    where = f"anchor_labels {path}"
    for column in ("pair_id", "alignment_score"):
        if column not in frame.columns:
            raise CalibrateError(f"{where}: missing column '{column}'", ("anchor_labels",))
    if "model" not in frame.columns:
        if len(models) > 1:
            raise CalibrateError(f"{where}: several response datasets are scored, so a 'model' column must say "
                                 "which each label belongs to", ("anchor_labels",))
        frame = frame.assign(model=models[0])
    scores = pd.to_numeric(frame["alignment_score"], errors="coerce")
    bad = ~scores.isin([-2, -1, 0, 1, 2])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CalibrateError(f"{where}: row {row + 1}: alignment_score {str(frame['alignment_score'].iloc[row])!r} "
                             "is not an integer in -2..2", ("anchor_labels",))
    labels = frame.assign(alignment_score=scores.astype(int), parse_status="ok", value_preference=None)
    for flag in LABEL_FLAGS:
        labels[flag] = labels[flag].map(_flag) if flag in labels else False
    unknown = sorted(set(labels["model"].astype(str)) - set(models))
    if unknown:
        raise CalibrateError(f"{where}: model '{unknown[0]}' is not among the scored ones ({', '.join(models)})",
                             ("anchor_labels",))
    return {name: group for name, group in labels.groupby(labels["model"].astype(str))}


def _consensus_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled pair (model, pair_id, score, flags): the annotators' consensus."""
    agreed = consensus(annotator_tables(labels[labels[SCORE].notna()]))
    where = [split_item(item) for item in agreed.index]
    return agreed.reset_index(drop=True).assign(model=[m for m, _ in where], pair_id=[p for _, p in where])


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if value is not None and not pd.isna(value) else False


def leaderboard(metrics: dict) -> pd.DataFrame:
    """One row per model: every estimate with its interval, counts and cost (leaderboard.csv)."""
    rows = []
    for name, model in metrics["models"].items():
        raw, mapped, corrected = model["raw"], model["mapped"], model["class_corrected"]
        row = {"model": name, "n_pairs": raw["n_pairs"], "n_judged": raw["n_judged"], "n_failed": raw["n_failed"],
               "PAC_mapped": mapped.get("value"), "PAC_mapped_low": (mapped.get("ci") or [None, None])[0],
               "PAC_mapped_high": (mapped.get("ci") or [None, None])[1]}
        corrected_pac = corrected.get("metrics", {}).get("PAC", {})
        row["PAC_class_corrected"] = corrected_pac.get("value")
        row["PAC_class_corrected_low"], row["PAC_class_corrected_high"] = corrected_pac.get("ci") or [None, None]
        for metric in RAW_METRICS:
            entry = raw["metrics"].get(metric)
            if entry:
                row[metric], (row[f"{metric}_low"], row[f"{metric}_high"]) = entry["value"], entry["ci"]
        row["cost_usd"] = model["cost"]["cost_usd"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("PAC_mapped", ascending=False, na_position="last")
