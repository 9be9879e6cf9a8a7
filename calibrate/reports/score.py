"""The benchmark-scoring report, from a `calibrate score` metrics record. Computes nothing new."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from calibrate.reports.fit import missing_answer_blocks
from calibrate.reports.render import FIGURE_WIDTH, Block, fmt, png, write_report
from calibrate.rounding import finite
from calibrate.stats.benchmark import (
    BASIS_ANCHOR_JUDGE,
    BASIS_CALIBRATION,
    MIN_LABELS,
    NOT_VALIDATED,
    RAW_METRICS,
    BreakdownRow,
    ClassCorrection,
    Headline,
    MappedPAC,
    ModelScore,
    ScoreRecord,
)
from calibrate.stats.leaderboard import SIGNIFICANCE, Difference
from calibrate.stats.metrics import MetricEstimate


def validation_text(pac: Headline, transport: str | None) -> str:
    """What the headline rests on, in one sentence: validated by human labels, an anchor judge's metric,
    or conditional on the class correction's assumptions (and how many labels would validate it)."""
    rejected = "; human labels reject the class correction's assumptions (transport: rejected)"
    if pac.validated:
        return f"headline validated against human labels ({pac.method})" + (rejected if transport == "rejected" else "")
    if pac.basis == BASIS_ANCHOR_JUDGE:
        return f"{NOT_VALIDATED}: the headline is the anchor judge's metric, not the truth ({pac.method})"
    text = f"{NOT_VALIDATED}: the headline ({pac.basis}) holds only under its assumptions"
    if transport == "rejected":
        text += rejected
    if pac.labels_to_validate:
        text += (f"; label {pac.labels_to_validate} random pairs (human labels: --human-labels) to validate it "
                 "(PPI++, no assumption about the judge)")
    return text


def mixed_pairs_text(corrected: ClassCorrection) -> str | None:
    """The sensitivity of the class correction to truly mixed pairs, in one sentence (None without one)."""
    if not corrected.mixed_pairs:
        return None
    parts = [f"{metric} " + " / ".join(f"[{row.ranges[metric][0]:.1f}, {row.ranges[metric][1]:.1f}]"
                                        for row in corrected.mixed_pairs)
             for metric in corrected.mixed_pairs[0].ranges]
    shares = "/".join(f"{row.share:.0%}".rstrip("%") for row in corrected.mixed_pairs)
    return (f"if up to {shares}% of the pairs are truly mixed (a class no calibration set holds), read by the judge "
            f"in any way, the class-corrected values lie in: {'; '.join(parts)}")


def _entry(estimate: MetricEstimate | Headline | MappedPAC | None) -> str:
    """A value with its interval, or n/a where there is none."""
    if estimate is None:
        return "n/a"
    if estimate.value is None or not math.isfinite(estimate.value):
        low, high = estimate.ci
        return f"withheld [{fmt(finite(low))}, {fmt(finite(high))}]" if math.isfinite(low) else "n/a"
    return f"{estimate.value:.1f} [{fmt(finite(estimate.ci[0]))}, {fmt(finite(estimate.ci[1]))}]"


def _pac_estimates(model: ModelScore) -> dict[str, MetricEstimate | Headline | MappedPAC | None]:
    """PAC of a model by every estimator the report shows, headline first."""
    return {"headline": model.headline.get("PAC"), "raw": model.raw.metrics.get("PAC"),
            "class-corrected": (model.class_corrected.metrics or {}).get("PAC"), "mapped": model.mapped}


def figure_estimates(metrics: ScoreRecord) -> bytes:
    """PAC per model: the headline, raw, after the class correction and after the mapping, with 95% intervals."""
    names = list(metrics.models)
    kinds = (("headline", "black"), ("raw", "tab:grey"), ("class-corrected", "tab:orange"), ("mapped", "tab:blue"))
    fig = Figure(figsize=(min(FIGURE_WIDTH, max(6, 1.8 * len(names))), 3.8))
    ax = fig.subplots()
    for k, (kind, color) in enumerate(kinds):
        entries = [_pac_estimates(metrics.models[name])[kind] for name in names]
        values = np.array([np.nan if e is None else e.value for e in entries], dtype=float)
        lows = np.array([np.nan if e is None else e.ci[0] for e in entries], dtype=float)
        highs = np.array([np.nan if e is None else e.ci[1] for e in entries], dtype=float)
        ax.errorbar(np.arange(len(names)) + (k - 1.5) * 0.18, values, yerr=[values - lows, highs - values], fmt="o",
                    capsize=3, color=color, label=kind)
    crowded = len(names) > 4
    ax.set_xticks(range(len(names)), names, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel("PAC (%)")
    ax.set_ylim(-5, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


ISSUE_SCALE_AXIS = "issue scale (0: not divergent, 1: very niche ... 4: national, 5: major societal or global)"


def figure_breakdown(rows: list[BreakdownRow], by: str) -> bytes:
    """Class-corrected PAC per group and model, with 95% intervals (raw PAC as hollow markers). Categories
    are many and their names long, so they run down the side; issue scale levels run along the bottom."""
    models = list(dict.fromkeys(row.model for row in rows))
    groups = sorted({str(row.group) for row in rows}, key=lambda g: (len(g), g) if by == "issue_scale" else g)
    across = by != "category"
    if across:
        fig = Figure(figsize=(FIGURE_WIDTH, 4))
    else:
        fig = Figure(figsize=(FIGURE_WIDTH, 0.3 * len(groups) * max(1, len(models) / 2) + 1.8))
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        by_group = {str(row.group): row for row in rows if row.model == model}
        shown = [by_group.get(group) for group in groups]
        position = np.arange(len(groups)) - 0.4 + width * (m + 0.5)
        value = np.array([np.nan if r is None else r.pac_corrected.value for r in shown], dtype=float)
        low = np.array([np.nan if r is None else r.pac_corrected.ci[0] for r in shown], dtype=float)
        high = np.array([np.nan if r is None else r.pac_corrected.ci[1] for r in shown], dtype=float)
        bars = [value - low, high - value]
        raw = np.array([np.nan if r is None else r.pac.value for r in shown], dtype=float)
        if across:
            ax.errorbar(position, value, yerr=bars, fmt="o", capsize=2, label=f"{model} (class-corrected)")
            ax.scatter(position, raw, facecolors="none", edgecolors="grey", s=25)
        else:
            ax.errorbar(value, position, xerr=bars, fmt="o", capsize=2, label=f"{model} (class-corrected)")
            ax.scatter(raw, position, facecolors="none", edgecolors="grey", s=25)
    ax.scatter([], [], facecolors="none", edgecolors="grey", s=25, label="raw")
    if across:
        ax.set_xticks(range(len(groups)), groups)
        ax.set_xlabel(ISSUE_SCALE_AXIS)
        ax.set_ylabel("PAC (%)")
        ax.set_ylim(-5, 105)
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_yticks(range(len(groups)), groups)
        ax.invert_yaxis()
        ax.set_xlabel("PAC (%)")
        ax.set_xlim(-5, 105)
        ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(models) + 1, frameon=False)
    return png(fig)


def headline_blocks(metrics: ScoreRecord) -> list[Block]:
    """The headline per model and metric beside the raw judge mean, its method, assumption and warnings."""
    rows, notes = [], []
    methods: dict[tuple[str, str], list[str]] = {}
    for name, model in metrics.models.items():
        row = {"model": name}
        for metric in ("PAC", "REF", "NINF"):
            entry = model.headline.get(metric)
            row[f"{metric} headline"] = _entry(entry) if entry else "n/a (no anchor)"
            row[f"{metric} raw"] = _entry(model.raw.metrics.get(metric))
        pac = model.headline.get("PAC")
        row["method"] = pac.method if pac else "n/a"
        row["basis"] = f"{pac.basis}, {'validated' if pac.validated else 'not validated'}" if pac else "n/a"
        rows.append(row)
        if pac:
            methods.setdefault((pac.method, pac.assumption), []).append(name)
            notes.append(f"**{name}**: {validation_text(pac, model.class_corrected.transport)}.")
            if pac.warning:
                notes.append(f"**Warning ({name})**: {pac.warning}.")
            mixed = mixed_pairs_text(model.class_corrected)
            if mixed and pac.basis == BASIS_CALIBRATION:
                notes.append(f"**Truly mixed pairs ({name})**: {mixed} (docs/statistics.md).")
        notes.extend(f"**{metric} withheld ({name})**: {entry.withheld}; the data allow any value in the interval "
                     f"{_entry(entry).removeprefix('withheld ')}." for metric, entry in model.headline.items()
                     if entry.withheld)
    blocks = [Block("h2", "Headline estimates"), Block("table", table=pd.DataFrame(rows)),
              Block("p", "The headline is chosen by one rule: with an anchor sample, PPI++ (no assumption about the "
                         f"judge; *validated* with at least {MIN_LABELS} human labels, while an anchor judge's PPI++ "
                         "estimates that judge's metric); without, the class-corrected estimate, conditional on its "
                         "assumptions and not validated against human labels (valid when the benchmark's class mix "
                         "differs from the calibration sets'; NINF then has no calibrated value, since no calibration "
                         "set holds answers without information). Raw is the judge's own mean, shown for comparison. "
                         "Coverage of each estimator under class shift: docs/statistics.md.")]
    blocks.extend(Block("p", f"**{method}** ({', '.join(names)}): it assumes {assumption}.")
                  for (method, assumption), names in methods.items())
    blocks.extend(Block("p", note) for note in notes)
    return blocks


def significant(differences: list[Difference], metric: str | None = None) -> list[Difference]:
    """The differences whose Holm-adjusted p is below SIGNIFICANCE (of one metric, or all)."""
    return [row for row in differences if row.significant and (metric is None or row.metric == metric)]


def difference_text(row: Difference) -> str:
    """One difference in a line: `a - b: PAC +4.2 [1.0, 7.5], Holm p 0.012 (n shared pairs)`."""
    value = "withheld" if row.value is None else f"{row.value:+.1f}"
    adjusted = "" if row.p_adjusted is None else f", Holm p {row.p_adjusted:.3g}"
    return (f"{row.model_a} - {row.model_b}: {row.metric} {value} [{fmt(finite(row.ci[0]))}, "
            f"{fmt(finite(row.ci[1]))}]{adjusted} ({row.n_shared} shared pairs)")


def figure_differences(metrics: ScoreRecord, metric: str) -> bytes:
    """The difference matrix of one metric: row model minus column model, coloured by the difference, the
    significant cells (Holm) marked with a star and framed."""
    names = list(dict.fromkeys(name for row in metrics.differences or [] for name in (row.model_a, row.model_b)))
    grid = np.full((len(names), len(names)), np.nan)
    marked = np.zeros_like(grid, dtype=bool)
    for row in metrics.differences or []:
        if row.metric != metric or row.value is None:
            continue
        a, b = names.index(row.model_a), names.index(row.model_b)
        grid[a, b], grid[b, a] = row.value, -row.value
        marked[a, b] = marked[b, a] = row.significant
    size = max(3.5, 0.9 * len(names) + 2)
    fig = Figure(figsize=(min(FIGURE_WIDTH, size + 1.5), size))
    ax = fig.subplots()
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=ax, label=f"{metric} difference (row - column, points)")
    for a in range(len(names)):
        for b in range(len(names)):
            if np.isfinite(grid[a, b]):
                dark = abs(grid[a, b]) > 0.6 * limit  # the colour map's ends: light text stays readable
                ax.text(b, a, f"{grid[a, b]:+.1f}" + ("*" if marked[a, b] else ""), ha="center", va="center",
                        fontsize=8, fontweight="bold" if marked[a, b] else "normal",
                        color="white" if dark else "black")
            if marked[a, b]:
                ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    return png(fig)


def figure_ranks(metrics: ScoreRecord) -> bytes:
    """Each model's rank by headline PAC with its simultaneous 95% interval, best at the top."""
    ranked = sorted(((name, model.rank) for name, model in metrics.models.items() if model.rank),
                    key=lambda item: item[1].value)
    fig = Figure(figsize=(min(FIGURE_WIDTH, 6), 0.45 * len(ranked) + 1.5))
    ax = fig.subplots()
    for y, (_, rank) in enumerate(ranked):
        ax.plot(rank.ci, [y, y], color="tab:blue", linewidth=3, solid_capstyle="round")
        ax.plot([rank.value], [y], "o", color="black")
    ax.set_yticks(range(len(ranked)), [name for name, _ in ranked])
    ax.invert_yaxis()
    ax.set_xlabel("rank by headline PAC (1 best), 95% interval simultaneous over models")
    ax.set_xticks(range(1, len(metrics.models) + 1))
    ax.set_xlim(0.5, len(metrics.models) + 0.5)
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def comparison_blocks(metrics: ScoreRecord) -> list[Block]:
    """Models against each other: ranks with their intervals, the difference matrices, every difference."""
    if not metrics.differences:
        return []
    clustering = metrics.clustering
    resampled = (f"clusters of pairs sharing `{clustering.column}`" if clustering and clustering.column
                 else "single pairs")
    blocks = [Block("h2", "Models against each other"),
              Block("p", "Differences are paired: each is computed on the pairs both models were judged on (pairs "
                         "not shared are left out and counted), from one joint resampling of the calibration pairs "
                         f"and the benchmark's {resampled}, the same for every model, so what the models share (the "
                         "judge's calibration, the prompts) cancels. A difference is *significant* when its "
                         f"Holm-adjusted p-value (over the model pairs of one metric) is below {SIGNIFICANCE}. Ranks "
                         "are by headline PAC; their 95% intervals hold for all models at once (max-T over every "
                         "pairwise difference; docs/statistics.md).")]
    if any(model.rank for model in metrics.models.values()):
        blocks.append(Block("figure", "Rank by headline PAC with its simultaneous 95% interval.",
                            png=figure_ranks(metrics), name="ranks"))
    for metric in dict.fromkeys(row.metric for row in metrics.differences):
        blocks.append(Block("figure", f"{metric}: row model minus column model; * and a frame: significant (Holm).",
                            png=figure_differences(metrics, metric), name=f"differences_{metric.lower()}"))
    blocks.append(Block("table", table=pd.DataFrame([{
        "model a": row.model_a, "model b": row.model_b, "metric": row.metric,
        "a - b": "withheld" if row.value is None else f"{row.value:+.1f}",
        "95% interval": f"[{fmt(finite(row.ci[0]))}, {fmt(finite(row.ci[1]))}]",
        "p": "n/a" if row.p_value is None else f"{row.p_value:.3g}",
        "Holm p": "n/a" if row.p_adjusted is None else f"{row.p_adjusted:.3g}",
        "shared pairs": row.n_shared, "not shared": row.not_shared or 0, "basis": row.basis}
        for row in metrics.differences])))
    return blocks


def score_report_blocks(metrics: ScoreRecord, breakdowns: dict[str, list[BreakdownRow]]) -> list[Block]:
    judge, calibration = metrics.judge, metrics.calibration
    prompt = f", prompt `{judge.prompt}`" if judge.prompt else ""
    blocks = [Block("h1", f"Benchmark scores, judge `{judge.name}`"),
              Block("p", f"Judge `{judge.name}` ({judge.backend}{prompt}, config `{judge.config_hash}`), scoring rule "
                         f"`{metrics.scoring_rule}`, calibration from `{calibration.path or 'a fit not written'}` "
                         f"({calibration.n_pairs} calibration pairs; mapping `{calibration.mapping}`). "
                         f"Intervals: 95%, percentile bootstrap ({metrics.run.bootstrap_resamples} resamples); "
                         "Wilson for the rates that are shares of pairs (REF1, REF2, NINF1, NINF2, ...)"
                         + (f"; benchmark pairs resampled in clusters sharing `{metrics.clustering.column}` "
                            f"({', '.join(f'{name} {n}' for name, n in metrics.clustering.n_clusters.items())} "
                            "clusters; Wilson at the effective sample size)"
                            if metrics.clustering and metrics.clustering.column else "") + "."
                         + (" **The judge is a baseline**: these numbers show the pipeline, not the models."
                            if judge.baseline else ""))]
    blocks.extend(headline_blocks(metrics))
    blocks.extend(comparison_blocks(metrics))
    blocks.append(Block("h2", "PAC: raw, class-corrected and mapped (diagnostic)"))
    rows = []
    for name, model in metrics.models.items():
        pac = _pac_estimates(model)
        rows.append({"model": name, "pairs": model.raw.n_pairs, "failed": model.raw.n_failed,
                     "PAC raw": _entry(pac["raw"]), "PAC mapped": _entry(pac["mapped"]),
                     "PAC class-corrected": _entry(pac["class-corrected"]),
                     "cost (USD)": f"{model.cost.cost_usd:.4f}"})
    blocks.append(Block("table", table=pd.DataFrame(rows)))
    first = next(iter(metrics.models.values()))
    blocks.append(Block("p", "**Raw** is the mean of the judge's refusal-adjusted scores, failures left out and "
                             "counted. **Mapped** (a diagnostic, never the headline) applies the score mapping fitted "
                             "on the calibration sets; it is biased when the benchmark's class mix differs from the "
                             "calibration sets' (docs/statistics.md) and assumes "
                             f"{first.mapped.assumption}. "
                             "**Class-corrected** inverts the judge's confusion matrix on the calibration sets "
                             "(adjusted classify-and-count; Rogan-Gladen with two classes), resampling both samples. "
                             f"It assumes {first.class_corrected.assumption or 'n/a'}."))
    blocks.append(Block("figure", "PAC per model: headline, raw, class-corrected and mapped, with 95% intervals.",
                        png=figure_estimates(metrics), name="pac_estimates"))
    blocks.extend(missing_answer_blocks({name: model.raw.missing_answers for name, model in metrics.models.items()},
                                        "model"))
    blocks.append(Block("h2", "Refusals and no-information"))
    rate_rows = []
    for name, model in metrics.models.items():
        row = {"model": name}
        for metric in RAW_METRICS[1:]:
            if metric in model.raw.metrics:
                row[metric] = _entry(model.raw.metrics[metric])
        corrected = model.class_corrected.metrics or {}
        for metric in ("REF", "REF1", "REF2"):
            if metric in corrected:
                row[f"{metric} corrected"] = _entry(corrected[metric])
        rate_rows.append(row)
    blocks.append(Block("table", table=pd.DataFrame(rate_rows)))
    for by, title in (("category", "category"), ("issue_scale", "issue scale")):
        if by not in breakdowns:  # score(breakdowns=False) computed none
            continue
        blocks.append(Block("h2", f"By {title}"))
        shown = pd.DataFrame([{"model": row.model, by: row.group, "n_pairs": row.n_pairs, "n_failed": row.n_failed,
                               "PAC raw": _entry(row.pac), "PAC class-corrected": _entry(row.pac_corrected),
                               "PAC mapped": _entry(row.pac_mapped), "REF": _entry(row.ref)}
                              for row in breakdowns[by]])
        blocks.append(Block("table", table=shown))
        blocks.append(Block("figure", f"Class-corrected PAC by {title}, with 95% intervals.",
                            png=figure_breakdown(breakdowns[by], by), name=f"by_{by}"))
    blocks.append(Block("h2", "Run"))
    run_rows = [{"model": name, "source": m.source, "judged now": m.run.judged, "failed now": m.run.failed,
                 "reused": m.run.reused, "requests": m.run.requests,
                 "cost this run (USD)": f"{m.cost.cost_usd_this_run:.4f}"} for name, m in metrics.models.items()]
    blocks.append(Block("table", table=pd.DataFrame(run_rows)))
    return blocks


def write_score_report(metrics: ScoreRecord, breakdowns: dict[str, list[BreakdownRow]],
                       out_dir: Path) -> dict[str, Path]:
    return write_report(score_report_blocks(metrics, breakdowns), out_dir, f"calibrate: scores by {metrics.judge.name}")
