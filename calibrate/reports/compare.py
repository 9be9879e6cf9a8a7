"""The judge-comparison report: tables and figures from a comparison record. Computes nothing new.

Rendered with the same blocks as the calibration report (render.py): report.md with PNG figures
beside it, and one self-contained report.html.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from calibrate.reports.bias import bias_blocks
from calibrate.reports.render import FIGURE_WIDTH, Block, fmt, png, write_report
from calibrate.stats.agreement import Interval
from calibrate.stats.comparison import AgreementEstimate, BetweenJudges, Comparison
from calibrate.stats.humans import HumanAgreement
from calibrate.stats.leaderboard import SIGNIFICANCE
from calibrate.stats.rank_agreement import Flip, RankAgreement, RankTau, SelfPreference

MARKERS = "osD^vP*Xhp<>"


def _judge_colors(names: list[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(names)}


def ci_text(value: float | None, ci: Interval | None, digits: int = 1, signed: bool = False) -> str:
    """A value with its interval, "0.71 [0.60, 0.80]"; shared by the reports and the terminal tables."""
    if value is None:
        return "n/a"
    low, high = ci or (None, None)
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    bounds = "" if low is None or high is None else f" [{form.format(low)}, {form.format(high)}]"
    return form.format(value) + bounds


# --------------------------------------------------------------------------- figures


def _number(value: float | None) -> float:
    return np.nan if value is None else value


def figure_set_errors(comparison: Comparison) -> bytes:
    """PAC error per set with 95% intervals, one marker per judge, side by side."""
    rows = comparison.leaderboard.judges
    sets = list(rows[0].pac_error)
    colors = _judge_colors(list(comparison.judges))
    fig = Figure(figsize=(FIGURE_WIDTH - 2, 4))  # the legend beside it takes the rest of the column
    ax = fig.subplots()
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        offsets = np.arange(len(sets)) - 0.4 + width * (i + 0.5)
        entries = [row.pac_error[s] for s in sets]
        errors = np.array([_number(e.value) for e in entries])
        lows = np.array([_number(e.ci[0]) for e in entries])
        highs = np.array([_number(e.ci[1]) for e in entries])
        ax.errorbar(offsets, errors, yerr=[errors - lows, highs - errors], fmt=MARKERS[i % len(MARKERS)],
                    color=colors[row.judge], capsize=3, label=row.judge + (" (baseline)" if row.baseline else ""))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.set_ylabel("PAC error (observed - expected), points")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="judge, best first")
    return png(fig)


def figure_agreement_heatmap(between: BetweenJudges) -> bytes:
    """Pairwise quadratic-weighted Cohen's kappa between judges."""
    names = between.judges
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for entry in between.pairwise or []:
        matrix.loc[entry.a, entry.b] = matrix.loc[entry.b, entry.a] = _number(entry.cohen_kappa_quadratic)
    side = min(FIGURE_WIDTH - 2.5, 0.8 * len(names) + 2.2)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(float), vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), value in np.ndenumerate(matrix.to_numpy(float)):
        ax.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=9,
                color="white" if abs(value) > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="quadratic-weighted kappa")
    return png(fig)


def figure_order_bias(comparison: Comparison) -> bytes:
    """Mean score with person 1 / person 2 swapped against the forward order, per judge (colour) and
    set (marker)."""
    judges = {name: j.order_bias for name, j in comparison.judges.items() if j.order_bias}
    colors = _judge_colors(list(comparison.judges))
    sets = list(dict.fromkeys(s for bias in judges.values() for s in bias.by_set))
    markers = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(sets)}
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    ax.plot([-2, 2], [-2, 2], color="grey", linewidth=0.8, linestyle="--")
    for name, bias in judges.items():
        for set_name, point in bias.by_set.items():
            ax.scatter([_number(point.mean_forward)], [_number(point.mean_reverse)], color=colors[name],
                       marker=markers[set_name],
                       s=55, alpha=0.85, edgecolors="black", linewidths=0.4)
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
    ax.set_aspect("equal")
    ax.set_xlabel("mean score, forward order")
    ax.set_ylabel("mean score, reverse order")
    ax.grid(alpha=0.3)
    judge_handles = [Line2D([], [], color=colors[name], marker="o", linestyle="", label=name) for name in judges]
    set_handles = [Line2D([], [], color="grey", marker=markers[name], linestyle="", label=name) for name in sets]
    line = Line2D([], [], color="grey", linewidth=0.8, linestyle="--", label="no order effect")
    judge_legend = ax.legend(handles=judge_handles, fontsize=8, title="judge (colour)", loc="upper left",
                             bbox_to_anchor=(1.02, 1))
    ax.add_artist(judge_legend)
    ax.legend(handles=[*set_handles, line], fontsize=8, title="set (marker)", loc="lower left",
              bbox_to_anchor=(1.02, 0))
    return png(fig)


def figure_cost_vs_error(comparison: Comparison) -> bytes:
    """Worst-set PAC error against cost per 1,000 judgments; when every judge costs the same (offline
    judges cost nothing), the error alone, one bar per judge."""
    rows = [row for row in comparison.leaderboard.judges if row.max_abs_pac_error is not None]
    colors = _judge_colors(list(comparison.judges))
    names = [row.judge for row in rows]
    costs = {row.judge: (row.cost_usd_per_pair or 0.0) * 1000 for row in rows}
    errors = {row.judge: row.max_abs_pac_error or 0.0 for row in rows}
    if len(set(costs.values())) <= 1:
        fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.4))
        ax = fig.subplots()
        ax.barh(names, [errors[n] for n in names], color=[colors[n] for n in names])
        for i, name in enumerate(names):
            ax.text(errors[name], i, f" {errors[name]:.1f}", va="center", fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel("worst-set PAC error (points)")
        ax.set_xlim(0, max(errors.values(), default=1) * 1.15 or 1)
        cost = next(iter(costs.values()), 0.0)
        ax.set_title(f"every judge costs ${cost:.3f} per 1,000 judgments: error only", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        return png(fig)
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, name in enumerate(names):
        ax.scatter([costs[name]], [errors[name]], color=colors[name], marker=MARKERS[i % len(MARKERS)], s=60,
                   label=f"{name} ({errors[name]:.1f})")
    ax.set_xlim(0, max(costs.values()) * 1.1)
    ax.set_ylim(0, max(errors.values()) * 1.1 or 1)
    ax.set_xlabel("cost per 1,000 judgments (USD, at the configs' prices)")
    ax.set_ylabel("worst-set PAC error (points)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), title="judge (error)")
    return png(fig)


# --------------------------------------------------------------------------- content


def compare_report_blocks(comparison: Comparison) -> list[Block]:
    judges = comparison.judges
    recommendation = comparison.recommendation
    run = comparison.run
    board = comparison.leaderboard.judges
    chosen = recommendation.recommended
    data = comparison.data
    blocks = [Block("h1", "Judge comparison"),
              Block("p", f"{len(judges)} judges on {sum(s.n_pairs for s in data.sets.values())} pairs "
                         f"from `{data.source}` (sets: {', '.join(data.sets)}), "
                         f"scoring rule `{comparison.scoring_rule}`, orders {', '.join(run.orders)}, "
                         f"{run.repeats} repeat(s). Intervals are percentile-bootstrap 95% intervals "
                         f"({run.bootstrap_resamples} resamples over pairs). Created {comparison.created_at}."),
              Block("h2", "Recommendation"),
              Block("p", (f"**Recommended judge: `{chosen}`** (worst-set PAC error "
                          f"{fmt(recommendation.worst_set_error)} points)." if chosen else
                          "**No judge is recommended** on this evidence.")
                    + f" Rule: {recommendation.rule}."),
              Block("table", table=pd.DataFrame(
                  [{"judge": name, "status": "eligible", "worst-set error": fmt(error)}
                   for name, error in recommendation.eligible.items()]
                  + [{"judge": row.judge, "status": f"excluded: {recommendation.excluded[row.judge]}",
                      "worst-set error": fmt(row.max_abs_pac_error)}
                     for row in board if row.judge in recommendation.excluded]))]

    blocks.append(Block("h2", "Leaderboard"))
    blocks.append(Block("p", "Best first, by worst-set PAC error on the calibration sets."))
    blocks.append(Block("table", table=pd.DataFrame([{
        "judge": row.judge + (" (baseline)" if row.baseline else ""),
        "worst-set PAC error": fmt(row.max_abs_pac_error),
        "after mapping (nested CV)": fmt(row.calibrated_k_fold_max_abs_pac_error),
        "class accuracy %": fmt(row.class_accuracy),
        "failed %": f"{row.failure_rate:.1f} (parse {row.parse_failure_rate:.1f}, call {row.call_failure_rate:.1f})",
        "order shift": _estimate_text(row.order_shift, 2, True),
        "order agreement %": fmt(row.order_exact_agreement),
        "repeat alpha": _estimate_text(row.repeat_alpha, 2),
        "injection shift (PAC)": _estimate_text(row.injection_shift, 1, True),
        "USD / 1k judgments": f"{(row.cost_usd_per_pair or 0.0) * 1000:.3f}",
    } for row in board])))
    blocks.append(Block("p", "Order shift: mean score with person 1 and 2 swapped minus forward (score points, -4..4), "
                             "on calibration pairs judged both ways. Repeat alpha: Krippendorff's alpha (ordinal) of "
                             "the judge with itself across repeats. Injection shift: PAC on `injection-0` (unaligned-0 "
                             "with notes to the judge in the answers) minus PAC on `unaligned-0`, refusal-adjusted "
                             "under the run's rule; a robust judge shows 0. After mapping: worst-set PAC error of the "
                             "selected score mapping, graded by nested cross-validation (the selection itself is "
                             "cross-validated; the number the mapping was selected by is biased low by the selection). "
                             "Class accuracy: share of judged pairs placed in their set's class; failed pairs are left "
                             "out of it and counted in `failed %`. n/a: not measured in this run (`--order both`, "
                             "`--repeats K`)."))

    blocks.append(Block("h2", "Distance from the known answers, per set"))
    blocks.append(Block("table", table=pd.DataFrame(
        [{"judge": row.judge, **{set_name: ci_text(error.value, error.ci, 1, True)
                                 for set_name, error in row.pac_error.items()}} for row in board])))
    blocks.append(Block("figure", "PAC error per set and judge, with 95% intervals.", png=figure_set_errors(comparison),
                        name="set_errors"))

    blocks.extend(_agreement_blocks(comparison.between_judges))
    if comparison.humans:
        blocks.extend(human_blocks(comparison.humans))
    if any(j.order_bias for j in judges.values()):
        blocks.append(Block("h2", "Order bias"))
        blocks.append(Block("figure", "Mean score per set, forward against reverse order; points off the diagonal "
                                      "move when the answers swap places.", png=figure_order_bias(comparison),
                            name="order_bias"))
    blocks.extend(bias_blocks({row.judge: judges[row.judge].invariance or {} for row in board}))
    if comparison.rank_agreement:
        blocks.extend(rank_agreement_blocks(comparison.rank_agreement, comparison.self_preference or {}))
    blocks.append(Block("h2", "Cost"))
    blocks.append(Block("table", table=pd.DataFrame([
        {"judge": row.judge, "USD / 1k judgments": f"{(row.cost_usd_per_pair or 0.0) * 1000:.3f}",
         "tokens / judgment": fmt(row.tokens_per_pair, 0), "latency p50 s": fmt(row.latency_p50_s, 3)}
        for row in board])))
    blocks.append(Block("figure", "Worst-set PAC error against cost.", png=figure_cost_vs_error(comparison),
                        name="cost_vs_error"))
    versions = ", ".join(f"{k} {v}" for k, v in comparison.package_versions.items())
    blocks.append(Block("h2", "Provenance"))
    blocks.append(Block("table", table=pd.DataFrame(
        [{"set": n, "source": d.source, "pairs": d.n_pairs, "fingerprint": d.fingerprint}
         for n, d in data.sets.items()])))
    blocks.append(Block("p", "Judge configs: " + "; ".join(f"`{n}` {j.backend} {j.config_hash}"
                                                         for n, j in judges.items()) + f". Packages: {versions}."))
    return blocks


def _estimate_text(estimate: AgreementEstimate | None, digits: int, signed: bool = False) -> str:
    return "n/a" if estimate is None else ci_text(estimate.value, estimate.ci, digits, signed)


def _agreement_blocks(between: BetweenJudges) -> list[Block]:
    blocks = [Block("h2", "Agreement between judges")]
    if between.skipped or between.krippendorff_alpha is None or between.fleiss_kappa is None or between.flags is None:
        return [*blocks, Block("p", f"Not computed: {between.skipped} ({between.note}).")]
    alpha, fleiss, flags = between.krippendorff_alpha, between.fleiss_kappa, between.flags
    blocks.append(Block("p", (
        f"On {between.n_items} calibration pairs; {between.note}. Krippendorff's alpha over "
        f"{', '.join(between.judges)}: scores (ordinal) {_estimate_text(alpha, 3)}; "
        f"refusal flags (nominal) {_estimate_text(flags['refusal'], 3)}; "
        f"no-information flags (nominal) {_estimate_text(flags['no_information'], 3)}. "
        f"Fleiss' kappa on scores ({fleiss.n_items} pairs every judge scored): {_estimate_text(fleiss, 3)}.")))
    blocks.append(Block("table", table=pd.DataFrame([
        {"judge A": e.a, "judge B": e.b, "pairs": e.n, "kappa": fmt(e.cohen_kappa, 3),
         "linear": fmt(e.cohen_kappa_linear, 3),
         "quadratic [95% CI]": ci_text(e.cohen_kappa_quadratic, e.cohen_kappa_quadratic_ci, 3)}
        for e in between.pairwise or []])))
    blocks.append(Block("figure", "Quadratic-weighted Cohen's kappa between judges (labels -2..2).",
                        png=figure_agreement_heatmap(between), name="agreement_heatmap"))
    return blocks


def human_blocks(humans: HumanAgreement) -> list[Block]:
    """The paper's Table 4 from the run's labels: every rater pair on the score and the two flags, PAC
    per rater, and the paper's published figures beside them for orientation."""
    blocks = [Block("h2", "Agreement with human labels (Table 4)"),
              Block("p", f"{humans.n_items} labelled pairs judged here, labelled by {', '.join(humans.annotators)}"
                         + (f"; consensus: {humans.consensus}" if humans.consensus else "")
                         + ". Score: Cohen's kappa on -2..2 (quadratic-weighted and unweighted), per pair; flags: "
                           "agreement and kappa per (pair, person). Brackets: 95% bootstrap intervals over pairs. "
                           "Constant baselines are left out (they agree with nothing by construction).")]
    rows = []
    for (a, b), fields in humans.pairs().items():
        score, refusal, no_info = fields["score"], fields["refusal"], fields["no_information"]
        rows.append({"rater A": a, "rater B": b, "pairs": score.n,
                     "score kappa quadratic": ci_text(score.kappa_quadratic, score.ci["kappa_quadratic"], 2),
                     "score kappa": ci_text(score.kappa, score.ci["kappa"], 2),
                     "score agreement %": ci_text(score.agreement, score.ci["agreement"], 0),
                     "refusal agreement %": ci_text(refusal.agreement, refusal.ci["agreement"], 0),
                     "refusal kappa": ci_text(refusal.kappa, refusal.ci["kappa"], 2),
                     "no-info agreement %": ci_text(no_info.agreement, no_info.ci["agreement"], 0),
                     "no-info kappa": ci_text(no_info.kappa, no_info.ci["kappa"], 2)})
    paper = humans.paper
    for entry, label in ((paper.human_human, "paper: human"), (paper.human_judge, "paper: judge")):
        rows.append({"rater A": label, "rater B": "human", "pairs": 200,
                     "score kappa quadratic": _paper(entry.score["kappa_quadratic"]),
                     "refusal agreement %": _paper(entry.refusal["agreement"], 0),
                     "refusal kappa": _paper(entry.refusal["kappa"]),
                     "no-info agreement %": _paper(entry.no_information["agreement"], 0),
                     "no-info kappa": _paper(entry.no_information["kappa"])})
    blocks.append(Block("table", table=pd.DataFrame(rows).fillna("")))
    blocks.append(Block("p", f"Paper rows: {paper.source} (two judges: both figures given), for orientation only; "
                             f"their pairs are not ours. PAC there: judge {paper.pac['judge']}, humans "
                             f"{paper.pac['humans']}."))
    if humans.leaderboard:
        blocks.append(Block("p", "Judges against the humans (against the consensus, or the one annotator), with "
                                 "the humans' own agreement as the ceiling a judge is measured against:"))
        blocks.append(Block("table", table=pd.DataFrame(
            [{"rater": e.rater, "score kappa quadratic": fmt(e.human_score_kappa_quadratic, 2),
              "score agreement %": fmt(e.human_score_agreement, 0),
              "refusal kappa": fmt(e.human_refusal_kappa, 2), "no-info kappa": fmt(e.human_no_information_kappa, 2),
              "PAC": fmt(e.human_pac, 1)} for e in humans.leaderboard])))
    blocks.append(Block("table", table=pd.DataFrame(
        [{"rater": name, "pairs": humans.pac_n[name],
          f"PAC (rule {humans.rule}) [95% CI]": ci_text(value, humans.pac_ci[name], 1)}
         for name, value in humans.pac.items()])))
    return blocks


SIGNIFICANCE_TEXT = {"both": "significant under both judges", "one": "significant under one judge only",
                     "neither": "significant under neither judge", "unknown": "significance unknown"}


def flip_text(flip: Flip) -> str:
    """One flip as the report and the terminal list it: who leads under each judge, and its significance."""
    return (f"{flip.first_a} above {flip.first_b} by {flip.judge_a} ({flip.lead_a:.1f} PAC points), "
            f"{flip.first_b} above {flip.first_a} by {flip.judge_b} ({flip.lead_b:.1f}); "
            f"{SIGNIFICANCE_TEXT[flip.significance]}")


def open_pairs_text(row: RankTau) -> str:
    """How many model pairs the data leave unordered (what widens tau's interval); empty when none."""
    if not row.open_pairs:
        return ""
    return (f"; {row.open_pairs} of {row.n_models * (row.n_models - 1) // 2} model pairs not ordered by the data "
            "under one judge or both")


def self_preference_text(judge: str, row: SelfPreference) -> str:
    """A judge's PAC of its own family's models against another judge's, one line."""
    verdict = ("it favours its own family" if row.favours_own else
               "no sign it favours its own family" if row.ci[1] is None or row.ci[1] >= 0 else
               "it scores its own family lower")
    return (f"{judge} ({row.family}) on {', '.join(row.models)}: PAC {ci_text(row.difference, row.ci, 1, True)} "
            f"points against {row.versus} ({row.versus_family or 'no family'}); {verdict}")


def rank_agreement_blocks(ranks: RankAgreement, preference: dict[str, list[SelfPreference]]) -> list[Block]:
    """The section of `compare --responses`: each judge's leaderboard, Kendall's tau between them, the flips,
    self-preference."""
    names = list(ranks.models)
    blocks = [Block("h2", "How the judges rank the models"),
              Block("p", f"Each judge scored {len(names)} response datasets ({', '.join(names)}) with its own "
                         "calibration; its leaderboard orders them by headline PAC. Kendall's tau (tau-b) compares "
                         "two leaderboards: 1 the same order, -1 reversed. Its 95% interval comes from one joint "
                         f"resampling for every judge and model ({ranks.resamples} resamples of the calibration "
                         f"pairs within each set and of the {ranks.n_clusters} benchmark clusters by "
                         f"`{ranks.cluster_by}`): the pairs of models whose order the data settle under both judges "
                         "at once count as they stand, every other pair may be concordant or not, so the interval "
                         "runs over all of them (docs/statistics.md has its coverage study). A flip is a pair of "
                         "models two judges order oppositely; it is significant under a judge when that judge's "
                         f"paired difference has a Holm-adjusted p below {SIGNIFICANCE} (its score's rule)."),
              Block("table", table=pd.DataFrame([
                  {"model": model, "model id": ranks.models[model].model_id,
                   "family": ranks.models[model].family or "-",
                   **{f"{judge} PAC": fmt(board.pac[model]) for judge, board in ranks.judges.items()}}
                  for model in names])),
              Block("table", table=pd.DataFrame([
                  {"judges": f"{row.judge_a} vs {row.judge_b}", "models": row.n_models,
                   "Kendall's tau": ci_text(row.tau, row.ci, 2, True),
                   "model pairs the data leave unordered": "-" if row.open_pairs is None else
                   f"{row.open_pairs} of {row.n_models * (row.n_models - 1) // 2}"} for row in ranks.tau]))]
    if ranks.flips:
        blocks.append(Block("p", "Flips: " + "; ".join(f"{flip_text(flip)}." for flip in ranks.flips)))
    else:
        blocks.append(Block("p", "No pair of models flips between the judges."))
    same = {judge: board.same_family for judge, board in ranks.judges.items() if board.same_family}
    if same or preference:
        blocks.append(Block("h2", "Self-preference"))
        blocks.append(Block("p", "Judges that scored models of their own family: " + "; ".join(
            f"{judge} ({ranks.judges[judge].family}): {', '.join(models)}" for judge, models in same.items())
            + ". Each judge's PAC of those models minus a judge of another family's (the mean over them); "
              "above 0 with the interval, the judge favours its own family."
            + ("" if preference else " No judge of another family scored them, so this is not measured.")))
        blocks.extend(Block("p", self_preference_text(judge, row)) for judge, rows in preference.items()
                      for row in rows)
    return blocks


def _paper(value: float | list[float], digits: int = 2) -> str:
    values = value if isinstance(value, list) else [value]
    return " / ".join(f"{v:.{digits}f}" for v in values)


def write_compare_report(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    return write_report(compare_report_blocks(comparison), out_dir, "calibrate: judge comparison")
