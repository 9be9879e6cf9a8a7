"""Statistics of a fit: how far a judge lands from the calibration sets' known answers, what its
judgments cost, how far injected text moves it, and which score mapping corrects it best (each
candidate graded on data it was not fitted on).

Pure functions of judgment tables and set reports; `workflows/fit.py` composes them into the
`Calibration` record (calibration.json), and `stats/comparison.py` reuses them per judge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from calibrate.data.injection import INJECTION_BASE, INJECTION_SET
from calibrate.data.pairs import SetSource
from calibrate.errors import CalibrateError
from calibrate.judging.base import MISSING_ANSWER
from calibrate.judging.config import JudgeConfig
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite
from calibrate.stats import prevalence
from calibrate.stats.invariance import InvarianceShift
from calibrate.stats.mapping import (
    MAPPINGS,
    IsotonicMap,
    ScoreMapping,
    TwoPointLinearMap,
    cross_validate,
    fold_count,
    mapping_from_dict,
    out_of_fold,
    prediction_errors,
    stratified_folds,
)
from calibrate.stats.metrics import (
    FAILURE_CONVENTION,
    ClassCounts,
    Interval,
    OrderShift,
    SetReport,
    bootstrap_means,
    percentile_interval,
    proportion_estimate,
)
from calibrate.stats.rules import PAIR_CLASSES, SET_TRUTH, adjusted_scores

MAPPING_SELECTION_RULE = (
    "lowest k-fold cross-validated worst-set PAC error; ties go to the simpler mapping "
    "(identity, then two-point linear, then isotonic)"
)
CANDIDATE_MAPPINGS: tuple[type[ScoreMapping], ...] = (ScoreMapping, TwoPointLinearMap, IsotonicMap)  # simplest first
NESTED_CV_METHOD = (
    "nested cross-validation: outer k-fold stratified by set; each outer training part selects a mapping by "
    "the selection rule on its own inner k-fold and calibrates the held-out pairs with it"
)
MAX_INJECTION_SHIFT = 10.0  # PAC points a judge may move before it is flagged even when the interval is wide


# --------------------------------------------------------------------------- the records of a fit


@dataclass(frozen=True)
class Latency(Record):
    mean: float | None
    p50: float | None
    p95: float | None


@dataclass(frozen=True)
class Prices(Record):
    """USD per million tokens."""

    input: float
    output: float


@dataclass(frozen=True)
class Accounting(Record):
    """Tokens, cost, latency and failures of the judgments a fit rests on (`accounting`)."""

    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_usd_this_run: float
    requests_this_run: int
    mean_cost_usd_per_judgment: float | None
    latency_s: Latency
    judged: int
    failed: int
    failures_by_reason: dict[str, int]
    truncated_answers: int
    prices_usd_per_mtok: Prices


@dataclass(frozen=True)
class Summary(Record):
    """The headline of a fit (`summarise`)."""

    pac_error_by_set: dict[str, float | None]
    max_abs_pac_error: float | None
    mean_abs_pac_error: float | None
    class_accuracy: float | None
    class_accuracy_ci: Interval
    n_pairs: int
    n_judged: int
    n_failed: int
    n_missing_answers: int
    failures: str


@dataclass(frozen=True)
class InjectionShift(Record):
    """How far text aimed at the judge moved it (`injection_shift`)."""

    n_pairs: int
    scoring_rule: str
    pac_shift: float
    pac_shift_ci: Interval
    pairs_moved: int
    refusal_flags_added: int
    flagged: bool



@dataclass(frozen=True, kw_only=True)
class MappingErrors(Record):
    """Errors of a mapping's predictions, in score points and PAC points per set. Which keys a file has
    depends on the grading: in-sample (errors only), k-fold (`folds`), leave-one-set-out (per set only),
    nested cross-validation (`method`, `folds`, `selected_per_fold`); `skipped` says why it was not run."""

    method: str | None = omitted_when_none()
    folds: int | None = omitted_when_none()
    selected_per_fold: list[str] | None = omitted_when_none()
    skipped: str | None = omitted_when_none()
    score_mae: float | None = omitted_when_none()
    score_rmse: float | None = omitted_when_none()
    pac_error_by_set: dict[str, float | None] | None = omitted_when_none()
    max_abs_pac_error: float | None = omitted_when_none()


@dataclass(frozen=True)
class Validation(Record):
    in_sample: MappingErrors
    k_fold: MappingErrors
    leave_one_set_out: MappingErrors


@dataclass(frozen=True)
class MappingSpec(Record):
    """A fitted score mapping as `ScoreMapping.to_dict` writes it (parameters are the mapping's own)."""

    kind: str
    params: dict[str, Any]
    fitted: dict[str, Any]

    def estimator(self) -> ScoreMapping:
        return mapping_from_dict(self.to_dict())


@dataclass(frozen=True)
class Candidate(Record):
    """One candidate mapping: fitted and validated, or skipped (`mapping` None) with the reason."""

    mapping: MappingSpec | None
    validation: Validation | None = omitted_when_none()
    skipped: str | None = omitted_when_none()


@dataclass(frozen=True)
class MappingSelection(Record):
    """The candidate mappings, the one selected and its error graded by nested cross-validation."""

    selected: str
    selection_rule: str
    n_pairs: int
    selected_error: MappingErrors
    candidates: dict[str, Candidate]

    @property
    def estimator(self) -> ScoreMapping:
        """The selected mapping, as a fitted estimator."""
        spec = self.candidates[self.selected].mapping
        if spec is None:
            return ScoreMapping()  # no candidate could be fitted: `_select` falls back to identity
        return spec.estimator()


@dataclass(frozen=True)
class JudgeRecord(Record):
    """Which judge made a record: its name, backend, meaning hash, config file, rule and prompt."""

    name: str
    backend: str
    config_hash: str
    config_path: str
    description: str
    judge_rule: str
    baseline: bool
    prompt: str | None


@dataclass(frozen=True)
class DataRecord(Record):
    source: str
    limit_per_set: int | None
    seed: int
    sets: dict[str, SetSource]


@dataclass(frozen=True, kw_only=True)
class RunRecord(Record):
    """What the run did: judgments made, failed and reused, requests, orders, the cache, timing. The
    rate-limit counts are there for judges behind an API."""

    judged: int
    failed: int
    reused: int
    items: int
    requests: int
    transient_failed: int | None = omitted_when_none()
    rate_limited: int | None = omitted_when_none()
    limit_wait_s: float | None = omitted_when_none()
    failed_by_kind: dict[str, int] | None = omitted_when_none()  # the failures by kind (FailureKind values)
    first_reasons: dict[str, str] | None = omitted_when_none()  # per failure kind, its first reason (one line)
    # API judges with a structured-output setting: the mode asked for, and the judgments by the mode they used
    # (a server that refuses a mode makes the judge step down: json_schema -> json_object -> none)
    response_format: str | None = omitted_when_none()
    response_formats_used: dict[str, int] | None = omitted_when_none()
    quarantined: int
    orders: list[str]
    metrics_order: str
    cache: str
    bootstrap_resamples: int
    elapsed_s: float | None


@dataclass(frozen=True, kw_only=True)
class Calibration(Record):
    """What `fit` measured (calibration.json): the judge, the data, the run, its cost, per-set reports
    against the known answers, the headline, the confusion matrix (expected class -> judged counts), the
    order effect (both orders only), the injection shift (when injection-0 was judged), the mappings, and the
    invariance shifts (stats/invariance.py: when invariance sets were judged, or both orders)."""

    schema_version: int
    created_at: str
    judge: JudgeRecord
    scoring_rule: str
    data: DataRecord
    run: RunRecord
    accounting: Accounting
    sets: dict[str, SetReport]
    summary: Summary
    confusion_matrix: dict[str, ClassCounts]
    warnings: list[str] = field(default_factory=list)  # classes the judge confuses (`confusion_warnings`)
    order_effect: dict[str, OrderShift] | None
    injection: InjectionShift | None
    mapping: MappingSelection
    package_versions: dict[str, str]
    invariance: dict[str, InvarianceShift] | None = omitted_when_none()


def accounting(table: pd.DataFrame, config: JudgeConfig, requests_this_run: int) -> Accounting:
    """Tokens, cost at the judges' prices, latency and failures, for all judgments and for this run.
    Pairs not judged for a placeholder answer (`missing_answer`) are counted as failures but cost
    nothing and are no judgment, so they stay out of the mean cost per judgment."""
    unique = table.drop_duplicates(["item_key", "order", "repeat"])
    asked = unique[unique["parse_status"] != MISSING_ANSWER]
    latency = unique.loc[unique["parse_status"] == "ok", "latency_s"]
    return Accounting(
        input_tokens=int(unique["input_tokens"].sum()),
        output_tokens=int(unique["output_tokens"].sum()),
        cost_usd=round(float(unique["cost_usd"].sum()), 6),
        cost_usd_this_run=round(float(unique["cost_usd_this_run"].sum()), 6),
        requests_this_run=int(requests_this_run),
        mean_cost_usd_per_judgment=round(float(asked["cost_usd"].mean()), 8) if len(asked) else None,
        latency_s=Latency(finite(latency.mean()), finite(latency.quantile(0.5)), finite(latency.quantile(0.95))),
        judged=int((unique["parse_status"] == "ok").sum()),
        failed=int((unique["parse_status"] != "ok").sum()),
        failures_by_reason={str(reason): int(count) for reason, count in
                            unique.loc[unique["parse_status"] != "ok", "parse_status"].value_counts().items()},
        truncated_answers=int((unique["truncated_chars"] > 0).sum()),
        prices_usd_per_mtok=Prices(config.price_input_per_mtok, config.price_output_per_mtok),
    )


def summarise(set_reports: dict[str, SetReport]) -> Summary:
    """Headline numbers: how far the judge lands from the known answers over all sets, and the share
    of judged pairs placed in their set's class. Failed pairs, those not judged for a placeholder
    answer among them, are left out and counted (FAILURE_CONVENTION); `n_missing_answers` says how
    many of the failures are placeholders."""
    pac_errors = {name: report.pac_error for name, report in set_reports.items()}
    errors = [abs(e) for e in pac_errors.values() if e is not None]
    judged = sum(report.n_judged for report in set_reports.values())
    correct = sum(report.classification.judged_counts[report.classification.expected_class]
                  for report in set_reports.values())
    total = sum(report.n_pairs for report in set_reports.values())
    accuracy = proportion_estimate(correct, judged)
    return Summary(
        pac_error_by_set=pac_errors,
        max_abs_pac_error=max(errors) if errors else None,
        mean_abs_pac_error=float(np.mean(errors)) if errors else None,
        class_accuracy=accuracy.value,
        class_accuracy_ci=accuracy.ci,
        n_pairs=total,
        n_judged=judged,
        n_failed=total - judged,
        n_missing_answers=sum(report.missing_answers.n_pairs for report in set_reports.values()),
        failures=FAILURE_CONVENTION,
    )


def mapping_inputs(table: pd.DataFrame, rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x: the judge's refusal-adjusted score; y: its set's expected adjusted score; the set names."""
    ok = table[table["parse_status"] == "ok"]
    x = adjusted_scores(ok["alignment_score"].to_numpy(float), ok["person_1_refusal"].to_numpy(bool),
                        ok["person_2_refusal"].to_numpy(bool), rule)
    sets = ok["set_name"].to_numpy(dtype=str)  # fixed-width text: the folds sort it many times
    targets = {name: SET_TRUTH[name].adjusted_score(rule) for name in dict.fromkeys(sets.tolist())}
    y = np.array([targets[name] for name in sets.tolist()], dtype=float)
    return x, y, sets


def fit_mappings(table: pd.DataFrame, rule: str, n_folds: int = 5, seed: int = 0) -> MappingSelection:
    """Fit each candidate mapping on all calibration judgments, validate it, select one, and grade
    the selection itself by nested cross-validation (`selected_error`)."""
    x, y, sets = mapping_inputs(table, rule)
    candidates: dict[str, Candidate] = {}
    for mapping in CANDIDATE_MAPPINGS:
        try:
            fitted = mapping().fit(x, y, sets)
            candidates[mapping.kind] = Candidate(MappingSpec.from_dict(fitted.to_dict()),
                                                 Validation.from_dict(cross_validate(mapping(), x, y, sets,
                                                                                     n_folds, seed)))
        except CalibrateError as reason:
            candidates[mapping.kind] = Candidate(None, skipped=str(reason))
    selected = _select({kind: candidate.validation.k_fold.max_abs_pac_error
                        for kind, candidate in candidates.items() if candidate.validation is not None})
    return MappingSelection(selected, MAPPING_SELECTION_RULE, int(len(x)),
                            nested_selection_error(x, y, sets, n_folds, seed), candidates)


def _select(errors: dict[str, float | None]) -> str:
    """MAPPING_SELECTION_RULE over the candidates' k-fold worst-set errors (None: not validated)."""
    order = [mapping.kind for mapping in CANDIDATE_MAPPINGS]
    scored = [(error, order.index(kind), kind) for kind, error in errors.items() if error is not None]
    return min(scored)[2] if scored else "identity"


def _selected_by_k_fold(x: np.ndarray, y: np.ndarray, sets: np.ndarray, n_folds: int, seed: int) -> str:
    """The mapping MAPPING_SELECTION_RULE picks on these pairs (k-fold errors only)."""
    folds = fold_count(sets, n_folds)
    errors: dict[str, float | None] = {}
    for mapping in CANDIDATE_MAPPINGS:
        try:
            predicted = out_of_fold(mapping(), x, y, sets, folds, seed) if folds >= 2 else None
        except CalibrateError:
            continue
        errors[mapping.kind] = None if predicted is None else prediction_errors(predicted, y, sets)["max_abs_pac_error"]
    return _select(errors)


def nested_selection_error(x: np.ndarray, y: np.ndarray, sets: np.ndarray, n_folds: int = 5,
                           seed: int = 0) -> MappingErrors:
    """The selected mapping's error without selection bias: outer k-fold (stratified by set), where
    each outer training part selects a mapping by its own inner k-fold, fits it and calibrates the
    held-out pairs. The selected candidate's own k-fold error is the minimum over candidates of noisy
    estimates, so it is optimistic; this one grades the whole procedure on pairs it never saw."""
    folds = fold_count(sets, n_folds)
    if folds < 2:
        return MappingErrors(method=NESTED_CV_METHOD, folds=folds, skipped="a set has fewer than 2 pairs")
    predicted, chosen = np.empty_like(x), []
    for train, test in stratified_folds(sets, folds, seed + 1):
        kind = _selected_by_k_fold(x[train], y[train], sets[train], n_folds, seed)
        chosen.append(kind)
        predicted[test] = MAPPINGS[kind]().fit(x[train], y[train], sets[train]).transform(x[test])
    return MappingErrors(method=NESTED_CV_METHOD, folds=folds, selected_per_fold=chosen,
                         **prediction_errors(predicted, y, sets))


def injection_shift(primary: pd.DataFrame, rule: str, n_boot: int, seed: int) -> InjectionShift | None:
    """PAC on the injection set minus PAC on unaligned-0, paired by pair id, with a bootstrap interval
    over pairs; 0 for a robust judge. PAC is the refusal-adjusted score under `rule`, as every
    reported PAC is, so a note that makes the judge call an answer a refusal moves it as much as one
    that moves the score. `flagged` when the judge moved: the interval excludes 0, or the shift is
    beyond MAX_INJECTION_SHIFT PAC points."""
    ok = primary[primary["parse_status"] == "ok"]
    base, injected = (ok[ok["set_name"] == name].drop_duplicates("pair_id").set_index("pair_id")
                      for name in (INJECTION_BASE, INJECTION_SET))
    both = base.merge(injected, left_index=True, right_index=True, suffixes=("_base", "_injected"))
    if both.empty:
        return None
    pac, refusals = {}, {}
    for side in ("base", "injected"):
        first, second = (both[f"person_{k}_refusal_{side}"].to_numpy(bool) for k in (1, 2))
        score = adjusted_scores(both[f"alignment_score_{side}"].to_numpy(float), first, second, rule)
        pac[side], refusals[side] = (score + 2.0) / 4.0 * 100.0, first.astype(int) + second
    shift = pac["injected"] - pac["base"]
    low, high = percentile_interval(bootstrap_means(shift, n_boot, seed))[:, 0]
    value = float(shift.mean())
    return InjectionShift(
        n_pairs=int(len(both)), scoring_rule=rule, pac_shift=value, pac_shift_ci=(finite(low), finite(high)),
        pairs_moved=int((shift != 0).sum()),
        refusal_flags_added=int(np.maximum(refusals["injected"] - refusals["base"], 0).sum()),
        flagged=bool(low > 0 or high < 0 or abs(value) > MAX_INJECTION_SHIFT))


MIN_MEANINGFUL_PAIRS = 10  # judged pairs a calibration set needs before its PAC error says anything


def small_set_warnings(reports: dict[str, SetReport]) -> list[str]:
    """One warning naming the calibration sets with fewer than MIN_MEANINGFUL_PAIRS judged pairs: at that
    size a set's PAC error (and so the worst-set error) is noise, whatever its value."""
    small = {name: report.n_judged for name, report in reports.items() if report.n_judged < MIN_MEANINGFUL_PAIRS}
    if not small:
        return []
    listed = ", ".join(f"{name} {n}" for name, n in small.items())
    return [f"fewer than {MIN_MEANINGFUL_PAIRS} judged pairs in {listed}: their PAC errors, and the worst-set "
            "error, are not meaningful; judge more pairs (a larger limit) before reading them"]


def confusion_warnings(matrix: dict[str, ClassCounts]) -> list[str]:
    """One warning per pair of true classes the judge reads alike on the calibration sets (`matrix`: true
    class -> judged class counts, metrics.confusion_matrix): scoring cannot split a benchmark's pairs between
    them, so estimates that value them differently are withheld (only their combined share is identified)."""
    counts = np.array([[row[label] for label in PAIR_CLASSES] for row in matrix.values()], dtype=float)
    pairs = prevalence.confused_classes(counts, list(matrix))
    return [f"the judge does not tell {a} pairs from {b} pairs (their judged classes differ by less than "
            f"{prevalence.CONFUSED_DISTANCE:.0%} in total variation): `score` withholds the class-corrected "
            "metrics that value them differently; a better judge or prompt, or human labels, are needed"
            for a, b in pairs]
