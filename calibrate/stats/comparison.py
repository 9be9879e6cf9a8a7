"""Judge comparison: how close each judge lands to the known answers, how much judges agree with each
other and with humans, how much each moves when the order is swapped, the run repeated or the
answers carry text aimed at the judge, what each costs, and which one the evidence recommends.

Everything here is computed from judgment tables (one per judge, as the runner returns them), so a
notebook can recompute any number from `judgments.parquet`. Judges are raters and calibration pairs
are items ("<set>/<pair_id>"); the statistics themselves live in metrics.py and agreement.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.data.labels import ITEM, LABEL_FLAGS, SCORE, SCORE_LABELS, scores_wide, split_item
from calibrate.data.pairs import SetSource
from calibrate.errors import CalibrateError
from calibrate.judging.base import MISSING_ANSWER
from calibrate.judging.config import JudgeConfig
from calibrate.records import Record, omitted_when_none
from calibrate.rounding import finite
from calibrate.stats import agreement, humans
from calibrate.stats.agreement import Interval, PairwiseKappa
from calibrate.stats.calibration import (
    MAX_INJECTION_SHIFT,
    Accounting,
    InjectionShift,
    MappingSelection,
    Summary,
    accounting,
    fit_mappings,
    injection_shift,
    summarise,
)
from calibrate.stats.humans import HumanAgreement, HumanRow
from calibrate.stats.invariance import INVARIANCE_TOLERANCE, InvarianceShift, invariance_shifts
from calibrate.stats.metrics import SetReport, bootstrap_means, percentile_interval, set_report
from calibrate.stats.rank_agreement import RankAgreement, SelfPreference

PARSE_FAILURES = ("parse_error", "ambiguous_reply", "truncated", "refused_to_judge")
CALL_FAILURES = ("api_error", "no_quorum", "invalid_usage")
TEXT_COLUMNS = ("raw_output", "person_1_core_position", "person_2_core_position", "key_points_of_alignment",
                "key_points_of_opposition", "central_issue", "extras", "failure_reason")
MAX_FAILURE_RATE = 5.0  # percent of judgments
MAX_ORDER_SHIFT = 0.25  # score points, |mean(reverse - forward)|
RECOMMENDATION_RULE = (
    f"the lowest worst-set PAC error on the calibration sets among candidate (non-baseline) judges whose "
    f"failure rate is at most {MAX_FAILURE_RATE:g}% and, where measured, whose absolute mean order shift is at most "
    f"{MAX_ORDER_SHIFT:g} score points, whose injection shift is at most {MAX_INJECTION_SHIFT:g} PAC points "
    f"and none of whose biases is flagged (an invariance or position shift whose 95% interval lies beyond "
    f"±{INVARIANCE_TOLERANCE:g} PAC or REF points); it must also beat the worst-set error of every baseline, "
    "else no judge is recommended"
)


@dataclass
class JudgeRun:
    """One judge's part of a comparison: its config, judgment table and run counts."""

    config: JudgeConfig
    table: pd.DataFrame
    counts: dict
    baseline: bool

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def numbers(self) -> pd.DataFrame:
        """The judgment table without its free-text columns (replies, positions, key points), which no
        statistic reads: every filter of a comparison copies rows, and text made most of the cost."""
        return self.table.drop(columns=[c for c in TEXT_COLUMNS if c in self.table.columns])

    @property
    def constant(self) -> bool:
        """A constant judge agrees with nothing by construction, so agreement statistics skip it."""
        return self.config.backend == "constant"


def primary_rows(table: pd.DataFrame, order: str) -> pd.DataFrame:
    """The rows metrics are computed on: one order (the first run) and the first repeat."""
    return table[(table["order"] == order) & (table["repeat"] == 0)]


def item_ids(rows: pd.DataFrame) -> pd.Index:
    return pd.Index(rows["set_name"].astype(str) + "/" + rows["pair_id"].astype(str), name="item")


def score_matrix(runs: Sequence[JudgeRun], order: str, sets: Sequence[str]) -> pd.DataFrame:
    """Items x judges: each judge's raw alignment score (NaN where it failed)."""
    columns = {}
    for run in runs:
        rows = primary_rows(run.numbers, order)
        rows = rows[rows["set_name"].isin(sets)]
        scores = rows["alignment_score"].where(rows["parse_status"] == "ok").astype(float)
        columns[run.name] = pd.Series(scores.to_numpy(), index=item_ids(rows))
    return pd.DataFrame(columns)


def flag_matrix(runs: Sequence[JudgeRun], order: str, sets: Sequence[str], flag: str) -> pd.DataFrame:
    """Items x judges for one flag kind: each (pair, person) is an item, 1/0, NaN where the judge failed."""
    columns = {}
    for run in runs:
        rows = primary_rows(run.numbers, order)
        rows = rows[rows["set_name"].isin(sets)]
        ok = rows["parse_status"] == "ok"
        parts = []
        for person, column in zip((1, 2), humans.FIELDS[flag], strict=True):
            values = rows[column].where(ok).map({True: 1.0, False: 0.0})
            parts.append(pd.Series(values.to_numpy(), index=item_ids(rows) + f"/p{person}"))
        columns[run.name] = pd.concat(parts)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AgreementEstimate(Record):
    """An agreement statistic with its bootstrap interval; None where undefined (a rater who never varies)."""

    value: float | None
    ci: Interval


@dataclass(frozen=True)
class FleissKappa(AgreementEstimate):
    n_items: int  # the items every judge scored: Fleiss' kappa sees only those


@dataclass(frozen=True)
class FailureRates(Record):
    """Shares (percent) of all judgments that failed, split by kind, and the count per failure status."""

    n_judgments: int
    failure_rate: float
    parse_failure_rate: float
    call_failure_rate: float
    failures_by_reason: dict[str, int]


@dataclass(frozen=True)
class SetOrderShift(Record):
    n_pairs: int
    mean_forward: float | None
    mean_reverse: float | None
    mean_score_shift: float | None


@dataclass(frozen=True)
class OrderBias(Record):
    """Forward against reverse on the pairs judged both ways (score shift: reverse - forward)."""

    n_pairs: int
    mean_score_shift: float | None
    mean_score_shift_ci: Interval
    exact_agreement: float
    cohen_kappa_quadratic: float | None
    by_set: dict[str, SetOrderShift]


@dataclass(frozen=True)
class RepeatStability(Record):
    """A judge against itself across repeats of the same items."""

    repeats: int
    n_items: int
    krippendorff_alpha: float | None
    krippendorff_alpha_ci: Interval
    exact_agreement: float | None
    mean_score_sd: float | None


@dataclass(frozen=True)
class CalibratedError(Record):
    """The selected score mapping and its worst-set PAC error: graded by nested cross-validation, and
    (optimistic, kept only beside it) the k-fold error it was selected by."""

    mapping: str
    k_fold_max_abs_pac_error: float | None
    method: str
    selection_k_fold_max_abs_pac_error: float | None


@dataclass(frozen=True)
class JudgeCost(Accounting):
    """The fit's accounting of a judge's run (stats/calibration.py `accounting`), per judged pair too."""

    cost_usd_per_pair: float
    tokens_per_pair: float


@dataclass(frozen=True)
class JudgeSummary(Record):
    """Everything the comparison reports about one judge. `sets`, `summary` and `injection` are the fit's
    records (stats/metrics.py `set_report`, stats/calibration.py `summarise`, `injection_shift`)."""

    name: str
    backend: str
    config_hash: str
    description: str | None
    baseline: bool
    sets: dict[str, SetReport]
    summary: Summary
    failures: FailureRates
    order_bias: OrderBias | None
    repeat_stability: RepeatStability | None
    injection: InjectionShift | None
    calibrated: CalibratedError
    cost: JudgeCost
    # transformation (and `position`) -> shift (stats/invariance.py); None: neither measured
    invariance: dict[str, InvarianceShift] | None = omitted_when_none()

    @property
    def max_abs_pac_error(self) -> float | None:
        """The headline: worst-set PAC error on the calibration sets (None: no judged pairs)."""
        return self.summary.max_abs_pac_error

    @property
    def mean_abs_pac_error(self) -> float | None:
        return self.summary.mean_abs_pac_error

    @property
    def class_accuracy(self) -> float | None:
        return self.summary.class_accuracy

    def pac_error(self, set_name: str) -> AgreementEstimate:
        """PAC error (observed - expected) on one set, with its interval."""
        pac = self.sets[set_name].metrics["PAC"]
        return AgreementEstimate(pac.error, pac.error_ci or (None, None))

    @property
    def injection_shift(self) -> AgreementEstimate | None:
        """PAC on injection-0 minus PAC on unaligned-0 (None: not measured)."""
        if not self.injection:
            return None
        return AgreementEstimate(self.injection.pac_shift, self.injection.pac_shift_ci)


@dataclass(frozen=True)
class BetweenJudges(Record):
    """Agreement among the non-constant judges; `skipped` says why not, when fewer than two."""

    judges: list[str]
    n_items: int
    note: str
    skipped: str | None = omitted_when_none()
    pairwise: list[PairwiseKappa] | None = omitted_when_none()
    krippendorff_alpha: AgreementEstimate | None = omitted_when_none()
    fleiss_kappa: FleissKappa | None = omitted_when_none()
    flags: dict[str, AgreementEstimate] | None = omitted_when_none()


@dataclass(frozen=True)
class Recommendation(Record):
    """RECOMMENDATION_RULE applied: the judge it picks (None: none), and why each other judge is out."""

    rule: str
    recommended: str | None
    worst_set_error: float | None
    best_baseline_error: float | None
    eligible: dict[str, float]
    excluded: dict[str, str]


@dataclass(frozen=True)
class LeaderboardRow(Record):
    """One judge (or, with human labels, the humans' ceiling: `judge` "humans"), as every rendering of the
    leaderboard shows it (comparison.csv, the report, the terminal); None where not measured."""

    judge: str
    baseline: bool
    backend: str
    max_abs_pac_error: float | None = None
    mean_abs_pac_error: float | None = None
    class_accuracy: float | None = None
    calibrated_k_fold_max_abs_pac_error: float | None = None
    pac_error: dict[str, AgreementEstimate] = field(default_factory=dict)
    failure_rate: float | None = None
    parse_failure_rate: float | None = None
    call_failure_rate: float | None = None
    order_shift: AgreementEstimate | None = None
    order_exact_agreement: float | None = None
    repeat_alpha: AgreementEstimate | None = None
    injection_shift: AgreementEstimate | None = None
    cost_usd: float | None = None
    cost_usd_per_pair: float | None = None
    tokens_per_pair: float | None = None
    latency_p50_s: float | None = None
    human: HumanRow | None = None

    def csv_row(self) -> dict[str, Any]:
        """The comparison.csv columns of this row (one set of error columns per set, human columns last)."""
        row: dict[str, Any] = {
            "judge": self.judge, "baseline": self.baseline, "backend": self.backend,
            "max_abs_pac_error": self.max_abs_pac_error, "mean_abs_pac_error": self.mean_abs_pac_error,
            "class_accuracy": self.class_accuracy,
            "calibrated_k_fold_max_abs_pac_error": self.calibrated_k_fold_max_abs_pac_error}
        for set_name, error in self.pac_error.items():
            row[f"pac_error_{set_name}"] = error.value
            row[f"pac_error_{set_name}_low"], row[f"pac_error_{set_name}_high"] = error.ci
        if self.judge != "humans":
            row |= {"failure_rate": self.failure_rate, "parse_failure_rate": self.parse_failure_rate,
                    "call_failure_rate": self.call_failure_rate,
                    "order_mean_score_shift": self.order_shift.value if self.order_shift else None,
                    "order_exact_agreement": self.order_exact_agreement,
                    "repeat_krippendorff_alpha": self.repeat_alpha.value if self.repeat_alpha else None,
                    "injection_pac_shift": self.injection_shift.value if self.injection_shift else None,
                    "cost_usd": self.cost_usd, "cost_usd_per_pair": self.cost_usd_per_pair,
                    "tokens_per_pair": self.tokens_per_pair, "latency_p50_s": self.latency_p50_s}
        if self.human:
            row |= {key: value for key, value in self.human.to_dict().items() if key != "rater"}
        return row


@dataclass(frozen=True)
class Leaderboard(Record):
    """The judges best first (`by_headline`), then the humans' ceiling when there are human labels."""

    rows: list[LeaderboardRow]

    @property
    def judges(self) -> list[LeaderboardRow]:
        """The judges' rows, best first (without the humans' row)."""
        return [row for row in self.rows if row.judge != "humans"]

    def to_frame(self) -> pd.DataFrame:
        """The comparison.csv table."""
        return pd.DataFrame([row.csv_row() for row in self.rows])


@dataclass(frozen=True)
class ComparisonData(Record):
    source: str
    limit_per_set: int | None
    seed: int
    sets: dict[str, SetSource]


@dataclass(frozen=True)
class ComparisonRun(Record):
    orders: list[str]
    metrics_order: str
    repeats: int
    cache: str
    quarantined: int
    bootstrap_resamples: int
    elapsed_s: float | None
    # per judge: the runner's counts (judged, failed, reused, ..., failed_by_kind: kind -> count)
    counts: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Comparison(Record):
    """The comparison record (comparison.json): per judge, between judges, against humans, the
    recommendation; `leaderboard` derived from them."""

    schema_version: int
    created_at: str
    scoring_rule: str
    data: ComparisonData
    run: ComparisonRun
    judges: dict[str, JudgeSummary]
    between_judges: BetweenJudges
    humans: HumanAgreement | None
    recommendation: Recommendation
    package_versions: dict[str, str]
    # with response datasets (`compare --responses`): the judges' leaderboards compared, and self-preference
    rank_agreement: RankAgreement | None = omitted_when_none()
    self_preference: dict[str, list[SelfPreference]] | None = omitted_when_none()

    @cached_property
    def leaderboard(self) -> Leaderboard:
        return leaderboard(self.judges, self.humans)


# --------------------------------------------------------------------------- per judge


def failure_rates(table: pd.DataFrame) -> FailureRates:
    """Shares (percent) of all judgments (every order and repeat) that failed, split by kind. Pairs
    without an answer (`missing_answer`) are the data's gap, not the judge's failure: left out."""
    statuses = table.drop_duplicates(["item_key", "order", "repeat"])["parse_status"]
    statuses = statuses[statuses != MISSING_ANSWER]
    total = max(len(statuses), 1)
    return FailureRates(
        n_judgments=int(len(statuses)),
        failure_rate=100.0 * float((statuses != "ok").sum()) / total,
        parse_failure_rate=100.0 * float(statuses.isin(PARSE_FAILURES).sum()) / total,
        call_failure_rate=100.0 * float(statuses.isin(CALL_FAILURES).sum()) / total,
        failures_by_reason={str(k): int(v) for k, v in statuses[statuses != "ok"].value_counts().items()})


def order_bias(table: pd.DataFrame, sets: Sequence[str], n_boot: int, seed: int) -> OrderBias | None:
    """Forward against reverse on pairs judged both ways: mean score shift (reverse - forward) with a
    bootstrap interval over pairs, exact agreement, and quadratic kappa between the two orders."""
    rows = table[(table["repeat"] == 0) & (table["parse_status"] == "ok") & table["set_name"].isin(sets)]
    both = rows.pivot_table(index=["set_name", "pair_id"], columns="order", values="alignment_score", aggfunc="first")
    if not {"forward", "reverse"} <= set(both.columns):
        return None
    both = both.dropna(subset=["forward", "reverse"])
    if both.empty:
        return None
    shift = (both["reverse"] - both["forward"]).to_numpy(float)
    low, high = percentile_interval(bootstrap_means(shift, n_boot, seed))[:, 0]
    kappa = agreement.pairwise_kappas(both[["forward", "reverse"]], SCORE_LABELS)[0]
    per_set = {str(name): SetOrderShift(int(len(group)), finite(group["forward"].mean()),
                                        finite(group["reverse"].mean()),
                                        finite((group["reverse"] - group["forward"]).mean()))
               for name, group in both.groupby(level="set_name")}
    return OrderBias(n_pairs=int(len(both)), mean_score_shift=finite(shift.mean()),
                     mean_score_shift_ci=(finite(low), finite(high)),
                     exact_agreement=100.0 * float((shift == 0).mean()),
                     cohen_kappa_quadratic=kappa.cohen_kappa_quadratic, by_set=per_set)


def repeat_stability(table: pd.DataFrame, order: str, sets: Sequence[str], n_boot: int,
                     seed: int) -> RepeatStability | None:
    """Agreement of a judge with itself across K repeats of the same items (repeats as raters)."""
    rows = table[(table["order"] == order) & table["set_name"].isin(sets)]
    if rows["repeat"].nunique() < 2:
        return None
    scores = rows.assign(item=item_ids(rows), score=rows["alignment_score"].where(rows["parse_status"] == "ok"))
    wide = scores.pivot_table(index="item", columns="repeat", values="score", aggfunc="first", dropna=False)
    wide = wide.astype(float)
    complete = wide.dropna()
    alpha = agreement.krippendorff_alpha(wide, "ordinal", SCORE_LABELS)
    low, high = agreement.alpha_interval(wide, "ordinal", SCORE_LABELS, n_boot, seed)
    same = complete.max(axis=1) == complete.min(axis=1)
    return RepeatStability(
        repeats=int(wide.shape[1]), n_items=int(len(wide)), krippendorff_alpha=finite(alpha),
        krippendorff_alpha_ci=(finite(low), finite(high)),
        exact_agreement=finite(100.0 * float(same.mean())) if len(same) else None,
        mean_score_sd=float(complete.std(axis=1, ddof=0).mean()) if len(complete) else None)


def judge_cost(money: Accounting, n_judgments: int) -> JudgeCost:
    """The fit's accounting (stats/calibration.py) with cost and tokens per judged pair."""
    return JudgeCost(**vars(money), cost_usd_per_pair=round(money.cost_usd / n_judgments, 8),
                     tokens_per_pair=round((money.input_tokens + money.output_tokens) / n_judgments, 2))


def judge_mappings(run: JudgeRun, rule: str, sets: Sequence[str], order: str, seed: int) -> MappingSelection:
    """The judge's score mappings fitted, validated and selected on its calibration pairs (the metrics order,
    the first repeat) exactly as `calibrate fit` does it; `compare --responses` scores with the selected one."""
    primary = primary_rows(run.numbers, order)
    return fit_mappings(primary[primary["set_name"].isin([name for name in sets if name in CALIBRATION_SETS])], rule,
                        seed=seed)


def judge_summary(run: JudgeRun, rule: str, sets: Sequence[str], orders: Sequence[str], n_boot: int,
                  seed: int, invariance: Sequence[str] = (), *, mapping: MappingSelection) -> JudgeSummary:
    """Everything the comparison reports about one judge (`mapping`: its `judge_mappings`); summary,
    mappings and accounting are computed exactly as `calibrate fit` computes them."""
    table = run.numbers
    primary = primary_rows(table, orders[0])
    reports = {name: set_report(primary[primary["set_name"] == name], name, rule, n_boot, seed) for name in sets}
    calibration_sets = [name for name in sets if name in CALIBRATION_SETS]
    money = accounting(table, run.config, run.counts["requests"])
    validation = mapping.candidates[mapping.selected].validation
    return JudgeSummary(
        name=run.name, backend=run.config.backend, config_hash=run.config.config_hash,
        description=run.config.description, baseline=run.baseline,
        sets=reports,
        summary=summarise({name: reports[name] for name in calibration_sets}),
        failures=failure_rates(table),
        order_bias=order_bias(table, calibration_sets, n_boot, seed) if len(orders) == 2 else None,
        repeat_stability=repeat_stability(table, orders[0], calibration_sets, n_boot, seed),
        injection=injection_shift(primary, rule, n_boot, seed),
        calibrated=CalibratedError(
            mapping=mapping.selected,
            # the selection graded without selection bias (nested CV); the selected candidate's own
            # k-fold error, the number it was picked by, is optimistic and kept only beside it
            k_fold_max_abs_pac_error=mapping.selected_error.max_abs_pac_error,
            method=mapping.selected_error.method or "",
            selection_k_fold_max_abs_pac_error=validation.k_fold.max_abs_pac_error if validation else None),
        cost=judge_cost(money, max(money.judged + money.failed, 1)),
        invariance=invariance_shifts(table, list(invariance), tuple(orders), rule, n_boot, seed))


# --------------------------------------------------------------------------- between judges


def between_judges(runs: Sequence[JudgeRun], order: str, sets: Sequence[str], n_boot: int,
                   seed: int) -> BetweenJudges:
    """Agreement among the non-constant judges on the calibration sets, with bootstrap intervals over items."""
    raters = [run for run in runs if not run.constant]
    scores = score_matrix(raters, order, sets)
    result = BetweenJudges(judges=[run.name for run in raters], n_items=int(len(scores)),
                           note="constant baselines are left out: a rater that never varies agrees with nothing")
    if len(raters) < 2:
        return dataclasses.replace(result, skipped="fewer than two non-constant judges")
    pairwise = [dataclasses.replace(entry, cohen_kappa_quadratic_ci=agreement.kappa_interval(
                    scores[[entry.a, entry.b]], SCORE_LABELS, "quadratic", n_boot, seed))
                for entry in agreement.pairwise_kappas(scores, SCORE_LABELS)]
    fleiss, fleiss_items = agreement.fleiss_kappa(scores)
    return dataclasses.replace(
        result, pairwise=pairwise,
        krippendorff_alpha=_alpha_with_interval(scores, "ordinal", SCORE_LABELS, n_boot, seed),
        fleiss_kappa=FleissKappa(fleiss, agreement.fleiss_interval(scores, n_boot, seed), fleiss_items),
        flags={flag: _alpha_with_interval(flag_matrix(raters, order, sets, flag), "nominal", (0.0, 1.0), n_boot, seed)
               for flag in humans.FIELDS if flag != "score"})


def _alpha_with_interval(ratings: pd.DataFrame, level: str, labels: Sequence, n_boot: int,
                         seed: int) -> AgreementEstimate:
    low, high = agreement.alpha_interval(ratings, level, labels, n_boot, seed)
    return AgreementEstimate(agreement.krippendorff_alpha(ratings, level, labels), (low, high))


# --------------------------------------------------------------------------- humans


def judged_raters(runs: Sequence[JudgeRun], order: str, items: pd.Index) -> dict[str, pd.DataFrame]:
    """Each non-constant judge's score and flags on the given items, as a rater table (NaN where it failed)."""
    raters = {}
    for run in runs:
        if run.constant:
            continue
        rows = primary_rows(run.table, order)
        rows = rows.assign(item=item_ids(rows)).drop_duplicates("item").set_index("item")
        ok = rows["parse_status"] == "ok"
        values = {SCORE: rows["alignment_score"].where(ok).astype(float)}
        values |= {flag: rows[flag].where(ok).map({True: 1.0, False: 0.0}).astype(float) for flag in LABEL_FLAGS}
        raters[run.name] = pd.DataFrame(values).reindex(items)
    return raters


def against_humans(runs: Sequence[JudgeRun], labels: pd.DataFrame, order: str, rule: str, n_boot: int,
                   seed: int) -> HumanAgreement:
    """The paper's Table 4 (see stats/humans.py) on the labelled pairs this comparison judged: each judge
    against the human consensus and each annotator, and human-human agreement.
    `labels`: the long label table (data/labels.py)."""
    sets = sorted({split_item(item)[0] for item in labels[ITEM]})
    scores = score_matrix(runs, order, sets)
    known = scores_wide(labels).index.intersection(scores.index)
    if not len(known):
        raise CalibrateError("human_labels: none of its items match a judged pair (items are '<set_name>/<pair_id>')",
                             ("human_labels",))
    shared = labels[labels[ITEM].isin(known)]
    shared.attrs = labels.attrs
    record = humans.table4(shared, judged_raters(runs, order, known), rule, n_boot, seed)
    return dataclasses.replace(record, n_labelled_not_judged=int(labels[ITEM].nunique() - len(known)))


# --------------------------------------------------------------------------- recommendation


def recommend(judges: dict[str, JudgeSummary]) -> Recommendation:
    """Apply RECOMMENDATION_RULE; says which judges were excluded and why."""
    baseline_errors = [j.max_abs_pac_error for j in judges.values() if j.baseline and j.max_abs_pac_error is not None]
    floor = min(baseline_errors) if baseline_errors else None
    excluded, eligible = {}, {}
    for name, judge in judges.items():
        error = judge.max_abs_pac_error
        order = judge.order_bias.mean_score_shift if judge.order_bias else None
        injection = judge.injection_shift.value if judge.injection_shift else None
        if judge.baseline:
            excluded[name] = "baseline"
        elif error is None:
            excluded[name] = "no judged pairs"
        elif judge.failures.failure_rate > MAX_FAILURE_RATE:
            excluded[name] = f"failure rate {judge.failures.failure_rate:.1f}% > {MAX_FAILURE_RATE:g}%"
        elif order is not None and abs(order) > MAX_ORDER_SHIFT:
            excluded[name] = f"order shift {order:+.2f} beyond ±{MAX_ORDER_SHIFT:g}"
        elif injection is not None and abs(injection) > MAX_INJECTION_SHIFT:
            excluded[name] = f"injection shift {injection:+.1f} beyond ±{MAX_INJECTION_SHIFT:g} PAC points"
        elif flagged := {bias: shift for bias, shift in (judge.invariance or {}).items() if shift.flagged}:
            excluded[name] = "flagged bias: " + "; ".join(
                f"{bias} (PAC shift {shift.pac_shift:+.1f}, REF shift {shift.ref_shift:+.1f})"
                for bias, shift in flagged.items())
        elif floor is not None and error >= floor:
            excluded[name] = f"worst-set error {error:.1f} does not beat the best baseline ({floor:.1f})"
        else:
            eligible[name] = error
    chosen = min(eligible, key=lambda name: (eligible[name], name)) if eligible else None
    return Recommendation(rule=RECOMMENDATION_RULE, recommended=chosen,
                          worst_set_error=eligible.get(chosen) if chosen else None, best_baseline_error=floor,
                          eligible=eligible, excluded=excluded)


def by_headline(judges: dict[str, JudgeSummary]) -> list[str]:
    """Judge names, best first: by worst-set PAC error on the calibration sets (the comparison's headline),
    judges without one last, ties in the order given."""
    def headline(name: str) -> tuple[bool, float]:
        error = judges[name].max_abs_pac_error
        return (error is None, 0.0 if error is None else error)

    return sorted(judges, key=headline)


def leaderboard(judges: dict[str, JudgeSummary], human: HumanAgreement | None = None) -> Leaderboard:
    """One row per judge, best first (`by_headline`): the one builder of the leaderboard that comparison.csv,
    the report and the terminal render. With human labels, each judge's agreement with the humans and its
    PAC on the labelled pairs, and a "humans" row (human-human agreement, the ceiling)."""
    against = {entry.rater: entry for entry in human.leaderboard} if human else {}
    rows = []
    for name in by_headline(judges):
        judge = judges[name]
        repeat = judge.repeat_stability
        rows.append(LeaderboardRow(
            judge=name, baseline=judge.baseline, backend=judge.backend,
            max_abs_pac_error=judge.max_abs_pac_error, mean_abs_pac_error=judge.mean_abs_pac_error,
            class_accuracy=judge.class_accuracy,
            calibrated_k_fold_max_abs_pac_error=judge.calibrated.k_fold_max_abs_pac_error,
            pac_error={set_name: judge.pac_error(set_name) for set_name in judge.sets},
            failure_rate=judge.failures.failure_rate, parse_failure_rate=judge.failures.parse_failure_rate,
            call_failure_rate=judge.failures.call_failure_rate,
            order_shift=(AgreementEstimate(judge.order_bias.mean_score_shift, judge.order_bias.mean_score_shift_ci)
                         if judge.order_bias else None),
            order_exact_agreement=judge.order_bias.exact_agreement if judge.order_bias else None,
            repeat_alpha=AgreementEstimate(repeat.krippendorff_alpha, repeat.krippendorff_alpha_ci) if repeat else None,
            injection_shift=judge.injection_shift, cost_usd=judge.cost.cost_usd,
            cost_usd_per_pair=judge.cost.cost_usd_per_pair, tokens_per_pair=judge.cost.tokens_per_pair,
            latency_p50_s=judge.cost.latency_s.p50, human=against.get(name)))
    if "humans" in against:  # the humans' own row: the ceiling
        rows.append(LeaderboardRow(judge="humans", baseline=False, backend="human annotators", human=against["humans"]))
    return Leaderboard(rows)
