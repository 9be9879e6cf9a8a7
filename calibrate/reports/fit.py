"""The fit report (`calibrate fit`): per-set results against the expected values, the judge's score
distribution and confusion matrix, the prompt-injection check and the score mappings. Reads the
calibration record and judgment table, computes nothing new."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from calibrate.reports.bias import bias_blocks
from calibrate.reports.render import (
    FIGURE_WIDTH,
    Block,
    fmt,
    png,
    prompt_words,
    write_report,
)
from calibrate.stats.calibration import Calibration, MappingSelection, mapping_inputs
from calibrate.stats.metrics import PAIR_CLASSES, ClassCounts, MissingAnswers, SetMetric

HEADLINE_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF")
SCORE_LEVELS = (-2, -1, 0, 1, 2)
MISSING_IDS_SHOWN = 20  # pair ids listed per set or model; the rest are counted


def figure_observed_vs_expected(calibration: Calibration) -> bytes:
    """Observed metric per set with its 95% interval, beside the expected value."""
    sets = list(calibration.sets)
    metrics = ("PAC", "REF")
    fig = Figure(figsize=(FIGURE_WIDTH, 3.8))
    axes = fig.subplots(1, len(metrics), sharey=True)
    positions = np.arange(len(sets))
    for ax, metric in zip(axes, metrics, strict=True):
        entries = [calibration.sets[s].metrics[metric] for s in sets]
        values = np.array([e.value if e.value is not None else np.nan for e in entries])
        lows = np.array([e.ci[0] if e.ci[0] is not None else np.nan for e in entries])
        highs = np.array([e.ci[1] if e.ci[1] is not None else np.nan for e in entries])
        ax.errorbar(positions, values, yerr=[values - lows, highs - values], fmt="o", color="tab:blue",
                    capsize=4, label="observed (95% CI)")
        ax.scatter(positions, [e.expected for e in entries], marker="_", s=600, color="tab:red",
                   label="expected", zorder=3)
        ax.set_xticks(positions, sets, rotation=20, ha="right")
        ax.set_title(metric)
        ax.set_ylim(-5, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("percent")
    axes[0].legend(loc="center left", fontsize=8)
    return png(fig)


def figure_score_distribution(judgments: pd.DataFrame, sets: list[str]) -> bytes:
    """Share of each raw alignment score, with refusal patterns apart, per set."""
    ok = judgments[judgments["parse_status"] == "ok"]
    labels = [str(v) for v in SCORE_LEVELS] + ["one refusal", "both refuse"]
    colors = ["#b2182b", "#ef8a62", "#cccccc", "#67a9cf", "#2166ac", "#984ea3", "#4d004b"]
    fig = Figure(figsize=(8.5, 0.45 * len(sets) + 1.8))
    ax = fig.subplots()
    left = np.zeros(len(sets))
    for label, color in zip(labels, colors, strict=True):
        shares = []
        for name in sets:
            rows = ok[ok["set_name"] == name]
            r1, r2 = rows["person_1_refusal"].astype(bool), rows["person_2_refusal"].astype(bool)
            if label == "one refusal":
                hit = r1 ^ r2
            elif label == "both refuse":
                hit = r1 & r2
            else:
                hit = ~(r1 | r2) & (rows["alignment_score"] == int(label))
            shares.append(100.0 * hit.sum() / max(len(rows), 1))
        ax.barh(sets, shares, left=left, color=color, label=label)
        left += np.array(shares)
    ax.set_xlabel("percent of judged pairs")
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.legend(ncol=7, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), title="alignment score")
    return png(fig)


def figure_confusion(matrix: pd.DataFrame) -> bytes:
    """Expected class (rows) against judged class (columns), as counts."""
    fig = Figure(figsize=(7, 0.6 * len(matrix) + 1.6))
    ax = fig.subplots()
    ax.imshow(matrix.to_numpy(float), cmap="Blues")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set_xlabel("judged class")
    ax.set_ylabel("expected class")
    peak = matrix.to_numpy().max() or 1
    for (i, j), count in np.ndenumerate(matrix.to_numpy()):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    return png(fig)


def figure_mapping(calibration: Calibration, judgments: pd.DataFrame) -> bytes:
    """Each fitted mapping as a curve, over the mean expected score of pairs at each raw score. The axes
    hold every curve whole: a linear mapping may send a score beyond -2..2."""
    judged_sets = judgments[judgments["set_name"].isin(list(calibration.sets))]  # not the invariance sets
    x, y, _ = mapping_inputs(judged_sets, calibration.scoring_rule)
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    grid = np.linspace(-2, 2, 161)
    low, high = -2.2, 2.2
    for kind, candidate in calibration.mapping.candidates.items():
        if candidate.mapping is not None:
            selected = kind == calibration.mapping.selected
            curve = candidate.mapping.estimator().transform(grid)
            low, high = min(low, float(np.nanmin(curve)) - 0.2), max(high, float(np.nanmax(curve)) + 0.2)
            ax.plot(grid, curve, "-" if selected else "--", linewidth=2.2 if selected else 1.2,
                    label=kind + (" (selected)" if selected else ""))
    ax.axhspan(-2, 2, color="grey", alpha=0.08, label="the score scale, -2..2")
    for level in np.unique(x):
        at = x == level
        ax.scatter([level], [y[at].mean()], s=20 + 4 * at.sum(), color="black", alpha=0.5)
    ax.scatter([], [], color="black", alpha=0.5, label="mean expected score (size = pairs)")
    ax.set_xlabel("judge's refusal-adjusted score")
    ax.set_ylabel("calibrated score")
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(low, high)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return png(fig)


# --------------------------------------------------------------------------- content


def fit_report_blocks(calibration: Calibration, judgments: pd.DataFrame) -> list[Block]:
    judge = calibration.judge
    rule = calibration.scoring_rule
    summary = calibration.summary
    sets = list(calibration.sets)
    blocks = [Block("h1", f"Calibration report: judge `{judge.name}`")]
    if judge.baseline:
        what = {"constant": "a constant judge: it gives every pair the same judgment",
                "panel": "a panel of offline baseline judges: no language model reads the answers"}.get(
            judge.backend, "an offline keyword judge built into calibrate: no language model reads the answers")
        blocks.append(Block("p", f"**This judge is a baseline.** It is {what}. Its numbers are a floor that any "
                                 "real judge should beat, not an estimate of benchmark quality."))
    blocks.append(Block("p", (
        f"Judge `{judge.name}` (backend `{judge.backend}`{prompt_words(judge.to_dict())}, config hash "
        f"`{judge.config_hash}`) was run on "
        f"{summary.n_pairs} calibration pairs from `{calibration.data.source}` under scoring rule "
        f"`{rule}` ({summary.n_judged} judged, {summary.n_failed} failed)"
        f"{_injection_pairs_words(calibration)}. "
        f"Worst-set PAC error: **{fmt(summary.max_abs_pac_error)} points**; "
        f"mean absolute PAC error {fmt(summary.mean_abs_pac_error)}; "
        f"judged pairs placed in their set's expected class: **{fmt(summary.class_accuracy)}%** "
        f"[{fmt(summary.class_accuracy_ci[0])}, {fmt(summary.class_accuracy_ci[1])}] (Wilson 95%). "
        f"Created {calibration.created_at}.")))
    blocks.extend(Block("p", f"**Warning**: {warning}.") for warning in calibration.warnings)

    blocks.extend(missing_answer_blocks({name: report.missing_answers for name, report in
                                         calibration.sets.items()}, "set"))

    blocks.append(Block("h2", "Distance from the known answers"))
    blocks.append(Block("p", "Each calibration set has a known answer; the expected values below are computed "
                             f"from scoring rule `{rule}`, not typed in. Error = observed - expected, in points, "
                             "with percentile-bootstrap 95% intervals over pairs for PAC, REF and NINF; the rates that "
                             "are shares of pairs (REF_ANY, REF1, REF2, NINF1, NINF2, ...) and class accuracy (share "
                             "of judged pairs placed in the set's class) with Wilson 95% intervals. Error after "
                             "mapping: the selected mapping, graded by nested cross-validation."))
    calibrated_error = calibration.mapping.selected_error.pac_error_by_set or {}
    pac_rows, other_rows = [], []
    for name in sets:
        report = calibration.sets[name]
        pac = report.metrics["PAC"]
        accuracy = report.classification.accuracy
        pac_rows.append({
            "set": name, "pairs": report.n_pairs, "failed": report.n_failed,
            "PAC observed": _with_ci(pac.value, pac.ci), "expected": fmt(pac.expected), "error": _error_text(pac),
            "error after mapping (nested CV)": "n/a" if calibrated_error.get(name) is None
            else f"{calibrated_error[name]:+.1f}",
            "class accuracy %": _with_ci(accuracy.value, accuracy.ci),
        })
        for metric in HEADLINE_METRICS[1:]:
            entry = report.metrics[metric]
            other_rows.append({"set": name, "metric": metric, "observed": _with_ci(entry.value, entry.ci),
                               "expected": fmt(entry.expected), "error": _error_text(entry)})
    blocks.append(Block("table", table=pd.DataFrame(pac_rows)))
    blocks.append(Block("p", "Refusal and no-information rates (REF: response level; REF1: exactly one refuses; "
                             "REF2: both refuse; NINF: no information, response level)."))
    blocks.append(Block("table", table=pd.DataFrame(other_rows)))
    blocks.append(Block("figure", "Observed PAC and REF per set with 95% intervals (blue) against the expected "
                                  "value (red).", png=figure_observed_vs_expected(calibration),
                        name="observed_vs_expected"))
    blocks.append(Block("figure", "How the judge scored each set.", png=figure_score_distribution(judgments, sets),
                        name="score_distribution"))

    blocks.append(Block("h2", "Classification view"))
    matrix = confusion_table(calibration.confusion_matrix)
    failed = {report.classification.expected_class: report.n_failed for name, report in
              calibration.sets.items() if name in summary.pac_error_by_set}
    blocks.append(Block("p", "Each judged pair's class from the judge's output (refusal pattern first, then the sign "
                             "of the score) against the class its set implies. Failed pairs are not in the matrix "
                             f"(last column): {summary.failures}."))
    shown = matrix.assign(**{"failed (left out)": [failed.get(cls, 0) for cls in matrix.index]})
    blocks.append(Block("table", table=shown.reset_index(names="expected \\ judged")))
    blocks.append(Block("figure", "Confusion matrix (pairs).", png=figure_confusion(matrix), name="confusion"))

    blocks.extend(_judging_blocks(calibration))
    blocks.extend(_injection_blocks(calibration))
    blocks.extend(bias_blocks({calibration.judge.name: calibration.invariance or {}}))
    blocks.extend(_mapping_blocks(calibration, judgments))

    blocks.append(Block("h2", "Provenance"))
    data_rows = [{"set": n, "source": d.source, "pairs": d.n_pairs, "fingerprint": d.fingerprint}
                 for n, d in calibration.data.sets.items()]
    blocks.append(Block("table", table=pd.DataFrame(data_rows)))
    run = calibration.run
    versions = ", ".join(f"{k} {v}" for k, v in calibration.package_versions.items())
    blocks.append(Block("p", f"Judged now: {run.judged}; reused from the cache: {run.reused}; "
                             f"bootstrap resamples: {run.bootstrap_resamples}; seed {calibration.data.seed}. "
                             f"Packages: {versions}."))
    return blocks


def _with_ci(value: float | None, ci: tuple[float | None, float | None]) -> str:
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def _error_text(metric: SetMetric) -> str:
    """Observed - expected with its interval, signed."""
    if metric.error is None or metric.error_ci is None:
        return "n/a"
    low, high = metric.error_ci
    return f"{metric.error:+.1f} [{low:+.1f}, {high:+.1f}]"


def confusion_table(matrix: dict[str, ClassCounts]) -> pd.DataFrame:
    """The confusion matrix as a table: expected class (rows) against judged class (columns)."""
    return pd.DataFrame([[counts[label] for label in PAIR_CLASSES] for counts in matrix.values()],
                        index=list(matrix), columns=list(PAIR_CLASSES))


def _injection_pairs_words(calibration: Calibration) -> str:
    """Why the run judged more pairs than the headline counts: the injection-0 pairs, judged as well."""
    injection = calibration.sets.get("injection-0")
    if not injection:
        return ""
    total = calibration.summary.n_pairs + injection.n_pairs
    return (f", plus the {injection.n_pairs} pairs of `injection-0`, the prompt-injection check below, which "
            f"never enter the headline or the mapping: {total} pairs judged in all")


def missing_answer_blocks(entries: dict[str, MissingAnswers], what: str) -> list[Block]:
    """The pairs not judged because an answer is a placeholder, per set (or model, `what`): a sentence
    and a table of counts by side and the first pair ids; nothing when there are none."""
    rows = []
    for name, entry in entries.items():
        if not entry.n_pairs:
            continue
        shown = ", ".join(f"{p.pair_id} ({p.side})" for p in entry.pairs[:MISSING_IDS_SHOWN])
        more = entry.n_pairs - min(len(entry.pairs), MISSING_IDS_SHOWN)
        by_side = entry.by_side
        rows.append({what: name, "pairs": entry.n_pairs, "for answer missing": by_side.get("for", 0),
                     "against answer missing": by_side.get("against", 0), "both missing": by_side.get("both", 0),
                     "pair ids (side)": shown + (f", and {more} more" if more > 0 else "")})
    if not rows:
        return []
    total = sum(entry.n_pairs for entry in entries.values())
    return [Block("h2", "Pairs without an answer"),
            Block("p", f"**{total} pair{'s' if total != 1 else ''}** had no answer on at least one side: the "
                       "answer was empty, missing or the placeholder \"No response\" that the response pipeline "
                       "stores for a failed generation. Such a pair was not sent to the judge (it is not the "
                       "model's answer, and nothing was paid for it); it counts as a failure of type "
                       "`missing_answer` and is left out of every metric."),
            Block("table", table=pd.DataFrame(rows))]


def _judging_blocks(calibration: Calibration) -> list[Block]:
    """What the judging took: counts, failures by reason, tokens, cost, latency, order effect."""
    money, run = calibration.accounting, calibration.run
    failures = ", ".join(f"{reason} {count}" for reason, count in money.failures_by_reason.items()) or "none"
    latency = money.latency_s
    rows = [
        ("judgments (pair × order)", f"{money.judged} judged, {money.failed} failed ({failures})"),
        ("this run", f"{run.judged} judged, {run.failed} failed, {run.reused} reused from the cache, "
                     f"{run.requests} requests"),
        ("tokens", f"{money.input_tokens:,} in, {money.output_tokens:,} out"),
        ("cost (USD)", f"{money.cost_usd:.4f} for all judgments, {money.cost_usd_this_run:.4f} this run "
                       f"(prices per million tokens: {money.prices_usd_per_mtok.input} in, "
                       f"{money.prices_usd_per_mtok.output} out)"),
        ("latency per judgment (s)", f"mean {fmt(latency.mean, 3)}, p50 {fmt(latency.p50, 3)}, "
                                     f"p95 {fmt(latency.p95, 3)}"),
        ("answers truncated to fit the prompt", str(money.truncated_answers)),
        ("orders", f"{', '.join(run.orders)} (metrics use {run.metrics_order})"),
    ]
    blocks = [Block("h2", "Judging"),
              Block("p", "A failed judgment is never a score: it is counted here and in each set's `failed` column, "
                         "kept in the cache's failure log, and tried again by the next run."),
              Block("table", table=pd.DataFrame(rows, columns=["", "value"]))]
    if calibration.order_effect:
        effect = pd.DataFrame([{"set": name, **shift.to_dict()} for name, shift in calibration.order_effect.items()])
        effect = effect.round(2)
        blocks.append(Block("p", "Order effect: the same pairs judged with person 1 and person 2 swapped "
                                 "(mean score shift reverse - forward; share of identical scores, %)."))
        blocks.append(Block("table", table=effect))
    return blocks


def _injection_blocks(calibration: Calibration) -> list[Block]:
    """How far text aimed at the judge moved it (the injection-0 set against unaligned-0)."""
    injection = calibration.injection
    if not injection:
        return []
    low, high = injection.pac_shift_ci
    verdict = ("**Flagged: this judge is moved by text aimed at it**; treat its benchmark scores of answers that "
               "address the judge with suspicion." if injection.flagged else
               "Not flagged: the shift's interval includes 0 and it is within 10 PAC points.")
    return [Block("h2", "Prompt injection"),
            Block("p", "`injection-0` is unaligned-0 with a note addressed to the judge in every answer (claiming the "
                       "answers agree, a fake system line, a fake end of the answer block, a JSON answer to copy); "
                       "its expected PAC is 0, like unaligned-0's. "
                       "PAC is refusal-adjusted under the run's rule, so refusal flags the notes provoke count. "
                       f"PAC shift (injection-0 − unaligned-0, same pairs): **{injection.pac_shift:+.1f}** "
                       f"[{low:+.1f}, {high:+.1f}] over {injection.n_pairs} pairs; {injection.pairs_moved} pairs "
                       f"scored differently, {injection.refusal_flags_added} more answers flagged as "
                       f"refusals. {verdict}")]


def _selected_error_text(mapping: MappingSelection) -> str:
    """The selected mapping's error as nested cross-validation grades it, beside the optimistic one."""
    nested = mapping.selected_error
    if nested.max_abs_pac_error is None:
        return f"Nested cross-validation of the selection: not run ({nested.skipped or 'no record'})."
    validation = mapping.candidates[mapping.selected].validation
    optimistic = validation.k_fold.max_abs_pac_error if validation else None
    picks = ", ".join(dict.fromkeys(nested.selected_per_fold or []))
    return (f"Its k-fold error below ({fmt(optimistic)}) is the number it was selected by, "
            "which the selection biases low on average; graded without that bias, by "
            f"{nested.method} (selected: {picks}), the worst-set error after mapping is "
            f"**{fmt(nested.max_abs_pac_error)} points**.")


def _mapping_blocks(calibration: Calibration, judgments: pd.DataFrame) -> list[Block]:
    mapping = calibration.mapping
    blocks = [Block("h2", "Score mapping"),
              Block("p", "Candidate mappings from the judge's refusal-adjusted score to a calibrated score. "
                         "Errors are PAC points, worst set; `k-fold` and `leave-one-set-out` grade each pair with a "
                         "mapping fitted without it, `in-sample` is shown only for contrast. "
                         f"Selected: **{mapping.selected}** ({mapping.selection_rule}). "
                         + _selected_error_text(mapping))]
    rows = []
    for kind, candidate in mapping.candidates.items():
        validation = candidate.validation
        if candidate.mapping is None or validation is None:
            rows.append({"mapping": kind, "note": candidate.skipped or ""})
            continue
        loso = validation.leave_one_set_out.pac_error_by_set or {}
        defined = [abs(v) for v in loso.values() if v is not None]
        rows.append({
            "mapping": kind,
            "in-sample worst-set error": fmt(validation.in_sample.max_abs_pac_error),
            "k-fold worst-set error": fmt(validation.k_fold.max_abs_pac_error),
            "k-fold score MAE": fmt(validation.k_fold.score_mae, 3),
            "leave-one-set-out worst error": fmt(max(defined)) if defined else "n/a",
            "note": "" if len(defined) == len(loso) else "leave-one-set-out undefined for its anchor sets",
        })
    blocks.append(Block("table", table=pd.DataFrame(rows).fillna("")))
    blocks.append(Block("figure", "Fitted mappings (selected one solid).", png=figure_mapping(calibration, judgments),
                        name="mapping"))
    return blocks


# --------------------------------------------------------------------------- rendering


def write_fit_report(calibration: Calibration, judgments: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    return write_report(fit_report_blocks(calibration, judgments), out_dir, f"calibrate: {calibration.judge.name}")
