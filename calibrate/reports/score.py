"""The benchmark-scoring report, from a `calibrate score` metrics record. Computes nothing new."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from calibrate.reports.fit import missing_answer_blocks
from calibrate.stats.metrics import MissingAnswers
from calibrate.reports.render import FIGURE_WIDTH, Block, fmt, png, prompt_words, write_report
from calibrate.stats.benchmark import RAW_METRICS


def _entry(value: float | None, ci: list | None) -> str:
    low, high = ci or (None, None)
    return "n/a" if value is None else f"{value:.1f} [{fmt(low)}, {fmt(high)}]"


def figure_estimates(metrics: dict) -> bytes:
    """PAC per model: the headline, raw, after the class correction and after the mapping, with 95% intervals."""
    names = list(metrics["models"])
    kinds = (("headline", "black"), ("raw", "tab:grey"), ("class-corrected", "tab:orange"), ("mapped", "tab:blue"))
    fig = Figure(figsize=(min(FIGURE_WIDTH, max(6, 1.8 * len(names))), 3.8))
    ax = fig.subplots()
    for k, (kind, color) in enumerate(kinds):
        values, lows, highs = [], [], []
        for name in names:
            model = metrics["models"][name]
            entry = {"headline": model.get("headline", {}).get("PAC", {}),
                     "raw": model["raw"]["metrics"].get("PAC", {}), "mapped": model["mapped"],
                     "class-corrected": model["class_corrected"].get("metrics", {}).get("PAC", {})}[kind]
            value, ci = entry.get("value"), entry.get("ci") or [None, None]
            values.append(np.nan if value is None else value)
            lows.append(np.nan if ci[0] is None else ci[0])
            highs.append(np.nan if ci[1] is None else ci[1])
        values, lows, highs = map(np.array, (values, lows, highs))
        ax.errorbar(np.arange(len(names)) + (k - 1.5) * 0.18, values, yerr=[values - lows, highs - values], fmt="o",
                    capsize=3, color=color, label=kind)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("PAC (%)")
    ax.set_ylim(-5, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


ISSUE_SCALE_AXIS = "issue scale (0: not divergent, 1: very niche ... 4: national, 5: major societal or global)"


def figure_breakdown(table: pd.DataFrame, by: str) -> bytes:
    """Class-corrected PAC per group and model, with 95% intervals (raw PAC as hollow markers). Categories
    are many and their names long, so they run down the side; issue scale levels run along the bottom."""
    models = list(dict.fromkeys(table["model"]))
    groups = sorted(table[by].astype(str).unique(), key=lambda g: (len(g), g) if by == "issue_scale" else g)
    across = by != "category"
    if across:
        fig = Figure(figsize=(FIGURE_WIDTH, 4))
    else:
        fig = Figure(figsize=(FIGURE_WIDTH, 0.3 * len(groups) * max(1, len(models) / 2) + 1.8))
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        part = table[table["model"] == model].assign(group=lambda t: t[by].astype(str)).set_index("group")
        part = part.reindex(groups)
        position = np.arange(len(groups)) - 0.4 + width * (m + 0.5)
        value = part["PAC_corrected"].astype(float).to_numpy()
        low = part["PAC_corrected_low"].astype(float).to_numpy()
        high = part["PAC_corrected_high"].astype(float).to_numpy()
        bars = [value - low, high - value]
        raw = part["PAC"].astype(float)
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


def headline_blocks(metrics: dict) -> list[Block]:
    """The headline per model and metric beside the raw judge mean, its method, assumption and warnings."""
    rows, notes, methods = [], [], {}
    for name, model in metrics["models"].items():
        headline, raw = model.get("headline", {}), model["raw"]["metrics"]
        row = {"model": name}
        for metric in ("PAC", "REF", "NINF"):
            entry = headline.get(metric)
            row[f"{metric} headline"] = _entry(entry["value"], entry["ci"]) if entry else "n/a (no anchor)"
            row[f"{metric} raw"] = _entry(raw.get(metric, {}).get("value"), raw.get(metric, {}).get("ci"))
        row["method"] = headline["PAC"]["method"] if "PAC" in headline else "n/a"
        rows.append(row)
        if "PAC" in headline:
            methods.setdefault((headline["PAC"]["method"], headline["PAC"]["assumption"]), []).append(name)
            if "warning" in headline["PAC"]:
                notes.append(f"**Warning ({name})**: {headline['PAC']['warning']}.")
        if model.get("anchor_recommendation"):
            notes.append(f"**Recommendation ({name})**: {model['anchor_recommendation']['why']}.")
    blocks = [Block("h2", "Headline estimates"), Block("table", table=pd.DataFrame(rows)),
              Block("p", "The headline is chosen by one rule: with an anchor sample, PPI++ (no assumption about the "
                         "judge); without, the class-corrected estimate (valid when the benchmark's class mix differs "
                         "from the calibration sets'; NINF then has no calibrated value, since no calibration set "
                         "holds answers without information). Raw is the judge's own mean, shown for comparison. "
                         "Coverage of each estimator under class shift: docs/statistics.md.")]
    blocks.extend(Block("p", f"**{method}** ({', '.join(names)}): it assumes {assumption}.")
                  for (method, assumption), names in methods.items())
    blocks.extend(Block("p", note) for note in notes)
    return blocks


def score_report_blocks(metrics: dict, breakdowns: dict[str, pd.DataFrame]) -> list[Block]:
    judge = metrics["judge"]
    calibration = metrics["calibration"]
    blocks = [Block("h1", f"Benchmark scores, judge `{judge['name']}`"),
              Block("p", f"Judge `{judge['name']}` ({judge['backend']}{prompt_words(judge)}, config "
                         f"`{judge['config_hash']}`), scoring rule "
                         f"`{metrics['scoring_rule']}`, calibration from `{calibration['path']}` "
                         f"({calibration['n_pairs']} calibration pairs; mapping `{calibration['mapping']}`). "
                         f"Intervals: 95%, percentile bootstrap ({metrics['run']['bootstrap_resamples']} resamples); "
                         "Wilson for the rates that are shares of pairs (REF1, REF2, NINF1, NINF2, ...)."
                         + (" **The judge is a baseline**: these numbers show the pipeline, not the models."
                            if judge["baseline"] else ""))]
    blocks.extend(headline_blocks(metrics))
    blocks.append(Block("h2", "PAC: raw, class-corrected and mapped (diagnostic)"))
    rows = []
    for name, model in metrics["models"].items():
        corrected = model["class_corrected"].get("metrics", {}).get("PAC", {})
        rows.append({"model": name, "pairs": model["raw"]["n_pairs"], "failed": model["raw"]["n_failed"],
                     "PAC raw": _entry(model["raw"]["metrics"].get("PAC", {}).get("value"),
                                       model["raw"]["metrics"].get("PAC", {}).get("ci")),
                     "PAC mapped": _entry(model["mapped"].get("value"), model["mapped"].get("ci")),
                     "PAC class-corrected": _entry(corrected.get("value"), corrected.get("ci")),
                     "cost (USD)": f"{model['cost']['cost_usd']:.4f}"})
    blocks.append(Block("table", table=pd.DataFrame(rows)))
    first = next(iter(metrics["models"].values()))
    blocks.append(Block("p", "**Raw** is the mean of the judge's refusal-adjusted scores, failures left out and "
                             "counted. **Mapped** (a diagnostic, never the headline) applies the score mapping fitted on the "
                             "calibration sets; it is biased when the benchmark's class mix differs from the "
                             "calibration sets' (docs/statistics.md) and assumes "
                             f"{first['mapped']['assumption']}. "
                             "**Class-corrected** inverts the judge's confusion matrix on the calibration sets "
                             "(adjusted classify-and-count; Rogan-Gladen with two classes), resampling both samples. "
                             f"It assumes {first['class_corrected'].get('assumption', 'n/a')}."))
    blocks.append(Block("figure", "PAC per model: headline, raw, class-corrected and mapped, with 95% intervals.",
                        png=figure_estimates(metrics), name="pac_estimates"))
    blocks.extend(missing_answer_blocks({name: MissingAnswers.from_dict(model["raw"].get("missing_answers", {}))
                                         for name, model in metrics["models"].items()}, "model"))
    blocks.append(Block("h2", "Refusals and no-information"))
    rate_rows = []
    for name, model in metrics["models"].items():
        row = {"model": name}
        for metric in RAW_METRICS[1:]:
            entry = model["raw"]["metrics"].get(metric)
            if entry:
                row[metric] = _entry(entry["value"], entry["ci"])
        corrected = model["class_corrected"].get("metrics", {})
        for metric in ("REF", "REF1", "REF2"):
            if metric in corrected:
                row[f"{metric} corrected"] = _entry(corrected[metric]["value"], corrected[metric]["ci"])
        rate_rows.append(row)
    blocks.append(Block("table", table=pd.DataFrame(rate_rows)))
    for by, title in (("category", "category"), ("issue_scale", "issue scale")):
        table = breakdowns[by]
        blocks.append(Block("h2", f"By {title}"))
        shown = table.assign(**{
            "PAC raw": [_entry(v, [lo, hi]) for v, lo, hi in zip(table["PAC"], table["PAC_low"], table["PAC_high"], strict=True)],
            "PAC class-corrected": [_entry(v, [lo, hi]) for v, lo, hi in zip(
                table["PAC_corrected"], table["PAC_corrected_low"], table["PAC_corrected_high"], strict=True)],
            "PAC mapped": [_entry(v, [lo, hi]) for v, lo, hi in zip(table["PAC_mapped"], table["PAC_mapped_low"],
                                                                   table["PAC_mapped_high"], strict=True)],
            "REF": [_entry(v, [lo, hi]) for v, lo, hi in zip(table["REF"], table["REF_low"], table["REF_high"], strict=True)],
        })[["model", by, "n_pairs", "n_failed", "PAC raw", "PAC class-corrected", "PAC mapped", "REF"]]
        blocks.append(Block("table", table=shown))
        blocks.append(Block("figure", f"Class-corrected PAC by {title}, with 95% intervals.", png=figure_breakdown(table, by),
                            name=f"by_{by}"))
    blocks.append(Block("h2", "Run"))
    run_rows = [{"model": name, "source": m["source"], "judged now": m["run"]["judged"],
                 "failed now": m["run"]["failed"], "reused": m["run"]["reused"], "requests": m["run"]["requests"],
                 "cost this run (USD)": f"{m['cost']['cost_usd_this_run']:.4f}"} for name, m in metrics["models"].items()]
    blocks.append(Block("table", table=pd.DataFrame(run_rows)))
    return blocks


def write_score_report(metrics: dict, breakdowns: dict[str, pd.DataFrame], out_dir: Path) -> dict[str, Path]:
    return write_report(score_report_blocks(metrics, breakdowns), out_dir, f"calibrate: scores by {metrics['judge']['name']}")
