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

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from calibrate.data.labels import ITEM, LABEL_FLAGS, SCORE, parse_flag, parse_labels, split_item
from calibrate.data.sources import read_source_frame
from calibrate.errors import CalibrateError
from calibrate.stats.calibration import Calibration, mapping_inputs
from calibrate.stats.mapping import calibrated_estimate
from calibrate.stats.metrics import (
    DEFAULT_BOOTSTRAP,
    bootstrap_means,
    estimate_metrics,
    expected_values,
    judged_values,
    missing_answers,
    percentile_interval,
)
from calibrate.stats import prevalence
from calibrate.stats.humans import annotator_tables, consensus
from calibrate.stats.ppi import METHODS, mean_estimate
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores, pair_classes
from calibrate.rounding import finite

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
    "blend of them, so a share x of mixed pairs can move the estimate by up to about x * 50 PAC points "
    "(docs/statistics.md); an anchor sample removes this assumption"
)
ANCHOR_ASSUMPTION = (
    "the anchored pairs are a random sample of the benchmark and the anchor's judgments are the truth; "
    "prediction-powered inference assumes nothing about the judge"
)
HEADLINE_METRICS = ("PAC", "REF", "NINF")
ANCHOR_HALF_WIDTH = 5.0  # PAC points: the interval an anchor sample of the recommended size gives
CORRECTION_ESTIMATOR = "least_squares"  # as good as maximum likelihood in the coverage study, ten times cheaper
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
            "failures": failures, "missing_answers": missing_answers(rows).to_dict(),
            "metrics": {name: e.to_dict() for name, e in estimate_metrics(values, n_boot, seed).items()}}


# --------------------------------------------------------------------------- the score mapping


def mapped_pac(calibration: Calibration, calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
               n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """PAC after the mapping `calibrate fit` selected, refitted on the calibration pairs in every
    bootstrap replicate so that the interval carries the calibration sample's uncertainty too."""
    selected = calibration.mapping.selected
    prototype = calibration.mapping.estimator.clone()
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


def class_correction(calibration_rows: pd.DataFrame, rows: pd.DataFrame, rule: str,
                     n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Adjusted classify-and-count: the benchmark's true class shares from the judge's observed ones
    and its confusion matrix on the calibration sets (least squares over shares, prevalence.py), and
    the PAC / REF they imply, with a bootstrap over both the calibration pairs (within each set) and
    the benchmark pairs. A near-singular confusion matrix adds a `warning`."""
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
    names = ("PAC", "REF", "REF1", "REF2")
    per_class = np.array([[_class_metrics(cls, rule)[m] for m in names] for cls in true_classes])  # class x metric
    shares = prevalence.estimate_shares(CORRECTION_ESTIMATOR, counts, observed)
    draws = prevalence.bootstrap_shares(CORRECTION_ESTIMATOR, counts, observed, n_boot, np.random.default_rng(seed))
    share_ci, metric_ci = percentile_interval(draws), percentile_interval(draws @ per_class)
    singular = float(prevalence.smallest_singular(prevalence.confusion_from_counts(counts)))
    record = {"metrics": {m: {"value": float(shares @ per_class[:, i]),
                              "ci": [float(metric_ci[0, i]), float(metric_ci[1, i])]} for i, m in enumerate(names)},
              "true_class_shares": {cls: {"value": float(100 * shares[i]),
                                          "ci": [float(100 * share_ci[0, i]), float(100 * share_ci[1, i])]}
                                    for i, cls in enumerate(true_classes)},
              "confusion_matrix": {t: dict(zip(judged, map(int, row), strict=True))
                                   for t, row in zip(true_classes, counts, strict=True)},
              "smallest_singular_value": singular,
              "method": "adjusted classify-and-count (least squares over class shares; Rogan-Gladen with two classes); "
                        "percentile bootstrap over the calibration pairs within each set and the benchmark pairs",
              "assumption": CORRECTION_ASSUMPTION}
    if singular < prevalence.NEAR_SINGULAR:
        record["warning"] = (f"near-singular confusion matrix (smallest singular value {singular:.3f} < "
                             f"{prevalence.NEAR_SINGULAR}): the judge barely tells some true classes apart, so the "
                             "class shares rest on few calibration pairs and the interval is wide; more calibration "
                             "pairs, a better judge or an anchor sample would narrow it")
    return record


def _class_metrics(pair_class: str, rule: str) -> dict[str, float]:
    """PAC, REF, REF1, REF2 of a pair of a class, as a perfect judge would score it."""
    set_name = next(name for name, truth in SET_TRUTH.items() if truth.pair_class == pair_class)
    values = expected_values(set_name, rule)
    return {metric: values[metric] for metric in ("PAC", "REF", "REF1", "REF2")}


# --------------------------------------------------------------------------- the headline


def headline(raw: dict, corrected: dict, anchored: dict | None, anchor_name: str | None = None) -> dict:
    """One estimate per metric, chosen by a stated rule: with an anchor sample, PPI++ (no assumption
    about the judge); without, the class correction (PAC, REF; valid under class shift if the judge's
    per-class behaviour carries over); failing both, the raw mean, labelled as such. Each entry:
    {"method", "value", "ci", "assumption"} (and "warning" where the estimate is shaky)."""
    if anchored and anchored["metrics"].get("PAC"):
        method = f"PPI++ with anchor {anchor_name} ({anchored['n_labeled']} labelled pairs)"
        return {metric: {"method": method, "value": entry["ppi++"]["estimate"],
                         "ci": [entry["ppi++"]["ci_low"], entry["ppi++"]["ci_high"]], "assumption": ANCHOR_ASSUMPTION}
                for metric in HEADLINE_METRICS if (entry := anchored["metrics"].get(metric))}
    if "metrics" in corrected:
        extra = {"warning": corrected["warning"]} if "warning" in corrected else {}
        return {metric: {"method": "class-corrected (adjusted classify-and-count)",
                         "value": corrected["metrics"][metric]["value"], "ci": corrected["metrics"][metric]["ci"],
                         "assumption": CORRECTION_ASSUMPTION, **extra} for metric in ("PAC", "REF")}
    return {metric: {"method": f"raw judge mean ({corrected.get('skipped', 'no correction')})",
                     "value": raw["metrics"][metric]["value"], "ci": raw["metrics"][metric]["ci"],
                     "assumption": "the judge is right on every pair"}
            for metric in ("PAC", "REF") if metric in raw["metrics"]}


def anchor_recommendation(rows: pd.DataFrame, rule: str, half_width: float = ANCHOR_HALF_WIDTH) -> dict | None:
    """How many randomly chosen pairs to label so that PPI++ gives PAC within +-half_width without any
    assumption about the judge: the labels-only interval's size, (1.96 sd / half_width)^2 with sd the
    spread of the judge's per-pair PAC (PPI++ is never wider than that, asymptotically)."""
    values = judged_values(rows, rule)["PAC"].to_numpy()
    if len(values) < 2:
        return None
    labels = int(np.ceil((1.96 * max(float(values.std()), 1.0) / half_width) ** 2))
    return {"labels": min(labels, len(values)), "half_width": half_width,
            "why": f"label {min(labels, len(values))} random pairs (--anchor-labels) to make the headline PAC "
                   f"assumption-free (PPI++, about +-{half_width:g} points): the class correction assumes no truly "
                   "mixed pairs and that the judge treats each class as on the calibration sets"}


# --------------------------------------------------------------------------- breakdowns


def breakdown(rows: pd.DataFrame, by: str, rule: str, calibration: Calibration, calibration_rows: pd.DataFrame,
              n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Raw PAC / REF / NINF, class-corrected and mapped PAC per group of `by` (category or issue_scale),
    with intervals;
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
        corrected = class_correction(calibration_rows, part, rule, n_boot, seed).get("metrics", {}).get(
            "PAC", {"value": None, "ci": [None, None]})
        record["PAC_corrected"], (record["PAC_corrected_low"], record["PAC_corrected_high"]) = \
            corrected["value"], corrected["ci"]
        record["PAC_mapped"], (record["PAC_mapped_low"], record["PAC_mapped_high"]) = mapped["value"], mapped["ci"]
        scores = ok_rows(part)["alignment_score"].to_numpy(float)
        low, high = percentile_interval(bootstrap_means(scores, n_boot, seed))[:, 0] if len(scores) else (None, None)
        record["alignment_raw"] = finite(scores.mean()) if len(scores) else None
        record["alignment_raw_low"], record["alignment_raw_high"] = finite(low), finite(high)
        for metric in ("REF_ANY", "REF1", "REF2"):
            record[metric] = raw["metrics"].get(metric, {"value": None})["value"]
        records.append(record)
    return pd.DataFrame(records)


# --------------------------------------------------------------------------- cheap judge + anchor (PPI)

ANCHOR_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF")


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
        frame = _consensus_labels(parse_labels(frame, Path(path), "anchor_labels"))
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
        labels[flag] = ([parse_flag(value, f"{where}, row {row}: {flag}", "anchor_labels") == 1.0
                         for row, value in enumerate(labels[flag], start=1)] if flag in labels else False)
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


def leaderboard(metrics: dict) -> pd.DataFrame:
    """One row per model, headline first: every estimate with its interval, counts and cost (leaderboard.csv)."""
    rows = []
    for name, model in metrics["models"].items():
        raw, mapped, corrected = model["raw"], model["mapped"], model["class_corrected"]
        row = {"model": name}
        for metric, entry in model.get("headline", {}).items():
            row[f"{metric}_headline"], (row[f"{metric}_headline_low"], row[f"{metric}_headline_high"]) = \
                entry["value"], entry["ci"]
            row[f"{metric}_headline_method"] = entry["method"]
        row.update({"n_pairs": raw["n_pairs"], "n_judged": raw["n_judged"], "n_failed": raw["n_failed"]})
        for metric in RAW_METRICS:
            entry = raw["metrics"].get(metric)
            if entry:
                row[metric], (row[f"{metric}_low"], row[f"{metric}_high"]) = entry["value"], entry["ci"]
        corrected_pac = corrected.get("metrics", {}).get("PAC", {})
        row["PAC_class_corrected"] = corrected_pac.get("value")
        row["PAC_class_corrected_low"], row["PAC_class_corrected_high"] = corrected_pac.get("ci") or [None, None]
        row["PAC_mapped_diagnostic"] = mapped.get("value")
        row["PAC_mapped_diagnostic_low"], row["PAC_mapped_diagnostic_high"] = mapped.get("ci") or [None, None]
        row["cost_usd"] = model["cost"]["cost_usd"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("PAC_headline", ascending=False, na_position="last")
