"""Statistics of a fit: how far a judge lands from the calibration sets' known answers, what its
judgments cost, how far injected text moves it, and which score mapping corrects it best (each
candidate graded on data it was not fitted on).

Pure functions of judgment tables and set reports; `workflows/fit.py` composes them into
calibration.json, and `stats/comparison.py` reuses them per judge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibrate.data.injection import INJECTION_BASE, INJECTION_SET
from calibrate.errors import CalibrateError
from calibrate.judging.base import MISSING_ANSWER
from calibrate.judging.config import JudgeConfig
from calibrate.rounding import rounded
from calibrate.stats.mapping import IsotonicMap, ScoreMapping, TwoPointLinearMap, cross_validate
from calibrate.stats.metrics import bootstrap_means, percentile_interval
from calibrate.stats.rules import SET_TRUTH, adjusted_scores

MAPPING_SELECTION_RULE = (
    "lowest k-fold cross-validated worst-set PAC error; ties go to the simpler mapping "
    "(identity, then two-point linear, then isotonic)"
)
MAX_INJECTION_SHIFT = 10.0  # PAC points a judge may move before it is flagged even when the interval is wide


def accounting(table: pd.DataFrame, config: JudgeConfig, requests_this_run: int) -> dict:
    """Tokens, cost at the judges' prices, latency and failures, for all judgments and for this run.
    Pairs not judged for a placeholder answer (`missing_answer`) are counted as failures but cost
    nothing and are no judgment, so they stay out of the mean cost per judgment."""
    unique = table.drop_duplicates(["item_key", "order", "repeat"])
    asked = unique[unique["parse_status"] != MISSING_ANSWER]
    latency = unique.loc[unique["parse_status"] == "ok", "latency_s"]
    return {
        "input_tokens": int(unique["input_tokens"].sum()),
        "output_tokens": int(unique["output_tokens"].sum()),
        "cost_usd": round(float(unique["cost_usd"].sum()), 6),
        "cost_usd_this_run": round(float(unique["cost_usd_this_run"].sum()), 6),
        "requests_this_run": int(requests_this_run),
        "mean_cost_usd_per_judgment": round(float(asked["cost_usd"].mean()), 8) if len(asked) else None,
        "latency_s": {"mean": rounded(latency.mean(), 6), "p50": rounded(latency.quantile(0.5), 6),
                      "p95": rounded(latency.quantile(0.95), 6)},
        "judged": int((unique["parse_status"] == "ok").sum()),
        "failed": int((unique["parse_status"] != "ok").sum()),
        "failures_by_reason": unique.loc[unique["parse_status"] != "ok", "parse_status"].value_counts().to_dict(),
        "truncated_answers": int((unique["truncated_chars"] > 0).sum()),
        "prices_usd_per_mtok": {"input": config.price_input_per_mtok, "output": config.price_output_per_mtok},
    }


def summarise(set_reports: dict[str, dict]) -> dict:
    """Headline numbers: how far the judge lands from the known answers over all sets. Pairs not
    judged for a placeholder answer count as failed (and as wrong in the class accuracy), like any
    failure; `n_missing_answers` says how many of the failures they are."""
    pac_errors = {name: r["metrics"]["PAC"].get("error") for name, r in set_reports.items()}
    finite = [abs(e) for e in pac_errors.values() if e is not None]
    judged = sum(r["n_judged"] for r in set_reports.values())
    correct = sum(r["classification"]["judged_counts"][r["classification"]["expected_class"]]
                  for r in set_reports.values())
    total = sum(r["n_pairs"] for r in set_reports.values())
    return {
        "pac_error_by_set": pac_errors,
        "max_abs_pac_error": max(finite) if finite else None,
        "mean_abs_pac_error": round(float(np.mean(finite)), 4) if finite else None,
        "class_accuracy": round(100.0 * correct / total, 4) if total else None,
        "n_pairs": total,
        "n_judged": judged,
        "n_failed": total - judged,
        "n_missing_answers": sum(r.get("missing_answers", {}).get("n_pairs", 0) for r in set_reports.values()),
    }


def mapping_inputs(table: pd.DataFrame, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x: the judge's refusal-adjusted score; y: its set's expected adjusted score; the set names."""
    ok = table[table["parse_status"] == "ok"]
    x = adjusted_scores(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                        ok["person_2_refusal"].to_numpy(bool), rule)
    sets = ok["set_name"].to_numpy()
    y = np.array([SET_TRUTH[name].adjusted_score(rule) for name in sets])
    return x, y, sets


def fit_mappings(table: pd.DataFrame, rule: str, n_folds: int = 5, seed: int = 0) -> dict:
    """Fit each candidate mapping on all calibration judgments, validate it, select one."""
    x, y, sets = mapping_inputs(table, rule)
    candidates: dict[str, dict] = {}
    for mapping in (ScoreMapping(), TwoPointLinearMap(), IsotonicMap()):
        try:
            fitted = mapping.clone().fit(x, y, sets)
            candidates[mapping.kind] = {"mapping": fitted.to_dict(),
                                        "validation": cross_validate(mapping, x, y, sets, n_folds, seed)}
        except CalibrateError as reason:
            candidates[mapping.kind] = {"mapping": None, "skipped": str(reason)}
    scored = [(c["validation"]["k_fold"].get("max_abs_pac_error"), order, kind)
              for order, (kind, c) in enumerate(candidates.items()) if c.get("mapping")]
    scored = [s for s in scored if s[0] is not None]
    selected = min(scored)[2] if scored else "identity"
    return {"selected": selected, "selection_rule": MAPPING_SELECTION_RULE, "n_pairs": int(len(x)),
            "candidates": candidates}



def injection_shift(primary: pd.DataFrame, n_boot: int, seed: int) -> dict | None:
    """PAC on the injection set minus PAC on unaligned-0, paired by pair id, with a bootstrap interval
    over pairs; 0 for a robust judge. `flagged` when the judge moved: the interval excludes 0, or the
    shift is beyond MAX_INJECTION_SHIFT PAC points."""
    ok = primary[primary["parse_status"] == "ok"]
    base = ok[ok["set_name"] == INJECTION_BASE].set_index("pair_id")["alignment_score"]
    injected = ok[ok["set_name"] == INJECTION_SET].set_index("pair_id")["alignment_score"]
    if base.empty or injected.empty:
        return None
    both = pd.concat({"base": base, "injected": injected}, axis=1).dropna()
    if both.empty:
        return None
    # refusal-free sets, so PAC per pair is (score + 2) / 4 * 100 under either rule
    shift = ((both["injected"] - both["base"]) / 4.0 * 100.0).to_numpy(float)
    low, high = percentile_interval(bootstrap_means(shift, n_boot, seed))[:, 0]
    value = float(shift.mean())
    return {"n_pairs": int(len(both)), "pac_shift": rounded(value), "pac_shift_ci": [rounded(low), rounded(high)],
            "pairs_moved": int((shift != 0).sum()),
            "flagged": bool(low > 0 or high < 0 or abs(value) > MAX_INJECTION_SHIFT)}
