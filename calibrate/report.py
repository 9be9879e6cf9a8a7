"""Reports: figures and the markdown / self-contained HTML pages. Reads result records, computes nothing new.

A report is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered
twice: markdown with PNG files beside it, and one HTML file with the figures embedded.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from calibrate.mapping import mapping_from_dict  # noqa: E402
from calibrate.pipelines import mapping_inputs  # noqa: E402

HEADLINE_METRICS = ("PAC", "REF", "REF1", "REF2", "NINF")
SCORE_LEVELS = (-2, -1, 0, 1, 2)


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "figure"
    text: str = ""
    table: pd.DataFrame | None = None
    png: bytes = b""
    name: str = ""


# --------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(entry: dict, key: str = "value", ci_key: str = "ci") -> str:
    ci = entry.get(ci_key) or [None, None]
    return f"{_fmt(entry.get(key))} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _signed_with_ci(entry: dict) -> str:
    if entry.get("error") is None:
        return "n/a"
    low, high = entry["error_ci"]
    return f"{entry['error']:+.1f} [{low:+.1f}, {high:+.1f}]"


# --------------------------------------------------------------------------- figures


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure_observed_vs_expected(calibration: dict) -> bytes:
    """Observed metric per set with its 95% interval, beside the expected value."""
    sets = list(calibration["sets"])
    metrics = ("PAC", "REF")
    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 3.6), sharey=True)
    positions = np.arange(len(sets))
    for ax, metric in zip(axes, metrics, strict=True):
        entries = [calibration["sets"][s]["metrics"][metric] for s in sets]
        values = np.array([e["value"] if e["value"] is not None else np.nan for e in entries])
        lows = np.array([e["ci"][0] if e["ci"][0] is not None else np.nan for e in entries])
        highs = np.array([e["ci"][1] if e["ci"][1] is not None else np.nan for e in entries])
        ax.errorbar(positions, values, yerr=[values - lows, highs - values], fmt="o", color="tab:blue",
                    capsize=4, label="observed (95% CI)")
        ax.scatter(positions, [e["expected"] for e in entries], marker="_", s=600, color="tab:red",
                   label="expected", zorder=3)
        ax.set_xticks(positions, sets, rotation=20)
        ax.set_title(metric)
        ax.set_ylim(-5, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("percent")
    axes[0].legend(loc="center left", fontsize=8)
    return _png(fig)


def figure_score_distribution(judgments: pd.DataFrame, sets: list[str]) -> bytes:
    """Share of each raw alignment score, with refusal patterns apart, per set."""
    ok = judgments[judgments["parse_status"] == "ok"]
    labels = [str(v) for v in SCORE_LEVELS] + ["one refusal", "both refuse"]
    colors = ["#b2182b", "#ef8a62", "#cccccc", "#67a9cf", "#2166ac", "#984ea3", "#4d004b"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
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
    ax.legend(ncol=7, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), title="alignment score")
    return _png(fig)


def figure_confusion(matrix: pd.DataFrame) -> bytes:
    """Expected class (rows) against judged class (columns), as counts."""
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(matrix) + 1.6))
    ax.imshow(matrix.to_numpy(float), cmap="Blues")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=30)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set_xlabel("judged class")
    ax.set_ylabel("expected class")
    peak = matrix.to_numpy().max() or 1
    for (i, j), count in np.ndenumerate(matrix.to_numpy()):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    return _png(fig)


def figure_mapping(calibration: dict, judgments: pd.DataFrame) -> bytes:
    """Each fitted mapping as a curve, over the mean expected score of pairs at each raw score."""
    x, y, _ = mapping_inputs(judgments, calibration["scoring_rule"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    grid = np.linspace(-2, 2, 161)
    for kind, candidate in calibration["mapping"]["candidates"].items():
        if candidate.get("mapping"):
            style = "-" if kind == calibration["mapping"]["selected"] else "--"
            ax.plot(grid, mapping_from_dict(candidate["mapping"]).transform(grid), style, label=kind)
    for level in np.unique(x):
        at = x == level
        ax.scatter([level], [y[at].mean()], s=20 + 4 * at.sum(), color="black", alpha=0.5)
    ax.scatter([], [], color="black", alpha=0.5, label="mean expected score (size = pairs)")
    ax.set_xlabel("judge's refusal-adjusted score")
    ax.set_ylabel("calibrated score")
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- content


def fit_report_blocks(calibration: dict, judgments: pd.DataFrame) -> list[Block]:
    judge = calibration["judge"]
    rule = calibration["scoring_rule"]
    summary = calibration["summary"]
    sets = list(calibration["sets"])
    blocks = [Block("h1", f"Calibration report: judge `{judge['name']}`")]
    if judge["baseline"]:
        what = {"constant": "a constant judge: it gives every pair the same judgment",
                "panel": "a panel of offline baseline judges: no language model reads the answers"}.get(
            judge["backend"], "an offline keyword judge built into calibrate: no language model reads the answers")
        blocks.append(Block("p", f"**This judge is a baseline.** It is {what}. Its numbers are a floor that any "
                                 "real judge should beat, not an estimate of benchmark quality."))
    blocks.append(Block("p", (
        f"Judge `{judge['name']}` (backend `{judge['backend']}`, config hash `{judge['config_hash']}`) was run on "
        f"{summary['n_pairs']} calibration pairs from `{calibration['data']['source']}` under scoring rule "
        f"`{rule}` ({summary['n_judged']} judged, {summary['n_failed']} failed). "
        f"Worst-set PAC error: **{_fmt(summary['max_abs_pac_error'])} points**; "
        f"mean absolute PAC error {_fmt(summary['mean_abs_pac_error'])}; "
        f"pairs placed in their set's expected class: **{_fmt(summary['class_accuracy'])}%**. "
        f"Created {calibration['created_at']}.")))

    blocks.append(Block("h2", "Distance from the known answers"))
    blocks.append(Block("p", "Each calibration set has a known answer; the expected values below are computed "
                             f"from scoring rule `{rule}`, not typed in. Error = observed - expected, in points, "
                             "with percentile-bootstrap 95% intervals over pairs."))
    selected = calibration["mapping"]["candidates"][calibration["mapping"]["selected"]]
    calibrated_error = selected.get("validation", {}).get("k_fold", {}).get("pac_error_by_set", {})
    pac_rows, other_rows = [], []
    for name in sets:
        report = calibration["sets"][name]
        pac = report["metrics"]["PAC"]
        pac_rows.append({
            "set": name, "pairs": report["n_pairs"], "failed": report["n_failed"],
            "PAC observed": _with_ci(pac), "expected": _fmt(pac["expected"]), "error": _signed_with_ci(pac),
            "error after mapping (k-fold)": "n/a" if calibrated_error.get(name) is None
            else f"{calibrated_error[name]:+.1f}",
            "class accuracy %": _with_ci(report["classification"]["accuracy"]),
        })
        for metric in HEADLINE_METRICS[1:]:
            entry = report["metrics"][metric]
            other_rows.append({"set": name, "metric": metric, "observed": _with_ci(entry),
                               "expected": _fmt(entry.get("expected")), "error": _signed_with_ci(entry)})
    blocks.append(Block("table", table=pd.DataFrame(pac_rows)))
    blocks.append(Block("p", "Refusal and no-information rates (REF: response level; REF1: exactly one refuses; "
                             "REF2: both refuse; NINF: no information, response level)."))
    blocks.append(Block("table", table=pd.DataFrame(other_rows)))
    blocks.append(Block("figure", "Observed PAC and REF per set with 95% intervals (blue) against the expected "
                                  "value (red).", png=figure_observed_vs_expected(calibration), name="observed_vs_expected"))
    blocks.append(Block("figure", "How the judge scored each set.", png=figure_score_distribution(judgments, sets),
                        name="score_distribution"))

    blocks.append(Block("h2", "Classification view"))
    matrix = pd.DataFrame(calibration["confusion_matrix"]).T
    blocks.append(Block("p", "Each pair's class from the judge's output (refusal pattern first, then the sign of "
                             "the score) against the class its set implies. Failed judgments count as wrong."))
    blocks.append(Block("table", table=matrix.reset_index(names="expected \\ judged")))
    blocks.append(Block("figure", "Confusion matrix (pairs).", png=figure_confusion(matrix), name="confusion"))

    blocks.extend(_judging_blocks(calibration))
    blocks.extend(_injection_blocks(calibration))
    blocks.extend(_mapping_blocks(calibration, judgments))

    blocks.append(Block("h2", "Provenance"))
    data_rows = [{"set": n, "source": d["source"], "pairs": d["n_pairs"], "fingerprint": d["fingerprint"]}
                 for n, d in calibration["data"]["sets"].items()]
    blocks.append(Block("table", table=pd.DataFrame(data_rows)))
    run = calibration["run"]
    versions = ", ".join(f"{k} {v}" for k, v in calibration["package_versions"].items())
    blocks.append(Block("p", f"Judged now: {run['judged']}; reused from the cache: {run['reused']}; "
                             f"bootstrap resamples: {run['bootstrap_resamples']}; seed {calibration['data']['seed']}. "
                             f"Packages: {versions}."))
    return blocks


def _judging_blocks(calibration: dict) -> list[Block]:
    """What the judging took: counts, failures by reason, tokens, cost, latency, order effect."""
    money, run = calibration["accounting"], calibration["run"]
    failures = ", ".join(f"{reason} {count}" for reason, count in money["failures_by_reason"].items()) or "none"
    latency = money["latency_s"]
    rows = [
        ("judgments (pair × order)", f"{money['judged']} judged, {money['failed']} failed ({failures})"),
        ("this run", f"{run['judged']} judged, {run['failed']} failed, {run['reused']} reused from the cache, "
                     f"{run['requests']} requests"),
        ("tokens", f"{money['input_tokens']:,} in, {money['output_tokens']:,} out"),
        ("cost (USD)", f"{money['cost_usd']:.4f} for all judgments, {money['cost_usd_this_run']:.4f} this run "
                       f"(prices per million tokens: {money['prices_usd_per_mtok']['input']} in, "
                       f"{money['prices_usd_per_mtok']['output']} out)"),
        ("latency per judgment (s)", f"mean {_fmt(latency['mean'], 3)}, p50 {_fmt(latency['p50'], 3)}, "
                                     f"p95 {_fmt(latency['p95'], 3)}"),
        ("answers truncated to fit the prompt", str(money["truncated_answers"])),
        ("orders", f"{', '.join(run['orders'])} (metrics use {run['metrics_order']})"),
    ]
    blocks = [Block("h2", "Judging"),
              Block("p", "A failed judgment is never a score: it is counted here and in each set's `failed` column, "
                         "kept in the cache's failure log, and tried again by the next run."),
              Block("table", table=pd.DataFrame(rows, columns=["", "value"]))]
    if calibration.get("order_effect"):
        effect = pd.DataFrame.from_dict(calibration["order_effect"], orient="index").reset_index(names="set")
        blocks.append(Block("p", "Order effect: the same pairs judged with person 1 and person 2 swapped "
                                 "(mean score shift reverse - forward; share of identical scores, %)."))
        blocks.append(Block("table", table=effect))
    return blocks


def _injection_blocks(calibration: dict) -> list[Block]:
    """How far text aimed at the judge moved it (the injection-0 set against unaligned-0)."""
    injection = calibration.get("injection")
    if not injection:
        return []
    low, high = injection["pac_shift_ci"]
    verdict = ("**Flagged: this judge is moved by text aimed at it**; treat its benchmark scores of answers that "
               "address the judge with suspicion." if injection["flagged"] else
               "Not flagged: the shift's interval includes 0 and it is within 10 PAC points.")
    return [Block("h2", "Prompt injection"),
            Block("p", "`injection-0` is unaligned-0 with a note addressed to the judge in every answer (claiming the "
                       "answers agree, a fake system line, a fake end of the answer block, a JSON answer to copy); "
                       "its expected PAC is 0, like unaligned-0's. "
                       f"PAC shift (injection-0 − unaligned-0, same pairs): **{injection['pac_shift']:+.1f}** "
                       f"[{low:+.1f}, {high:+.1f}] over {injection['n_pairs']} pairs; {injection['pairs_moved']} pairs "
                       f"scored differently. {verdict}")]


def _mapping_blocks(calibration: dict, judgments: pd.DataFrame) -> list[Block]:
    mapping = calibration["mapping"]
    blocks = [Block("h2", "Score mapping"),
              Block("p", "Candidate mappings from the judge's refusal-adjusted score to a calibrated score. "
                         "Errors are PAC points, worst set; `k-fold` and `leave-one-set-out` grade each pair with a "
                         "mapping fitted without it, `in-sample` is shown only for contrast. "
                         f"Selected: **{mapping['selected']}** ({mapping['selection_rule']}).")]
    rows = []
    for kind, candidate in mapping["candidates"].items():
        if not candidate.get("mapping"):
            rows.append({"mapping": kind, "note": candidate.get("skipped", "")})
            continue
        validation = candidate["validation"]
        loso = validation["leave_one_set_out"]["pac_error_by_set"]
        defined = [abs(v) for v in loso.values() if v is not None]
        rows.append({
            "mapping": kind,
            "in-sample worst-set error": _fmt(validation["in_sample"]["max_abs_pac_error"]),
            "k-fold worst-set error": _fmt(validation["k_fold"].get("max_abs_pac_error")),
            "k-fold score MAE": _fmt(validation["k_fold"].get("score_mae"), 3),
            "leave-one-set-out worst error": _fmt(max(defined)) if defined else "n/a",
            "note": "" if len(defined) == len(loso) else "leave-one-set-out undefined for its anchor sets",
        })
    blocks.append(Block("table", table=pd.DataFrame(rows).fillna("")))
    blocks.append(Block("figure", "Fitted mappings (selected one solid).", png=figure_mapping(calibration, judgments),
                        name="mapping"))
    return blocks


# --------------------------------------------------------------------------- rendering


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(blocks: list[Block], figure_dir: Path, relative_to: Path) -> str:
    figure_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for block in blocks:
        if block.kind == "h1":
            parts.append(f"# {block.text}")
        elif block.kind == "h2":
            parts.append(f"## {block.text}")
        elif block.kind == "p":
            parts.append(block.text)
        elif block.kind == "table":
            parts.append(_markdown_table(block.table))
        elif block.kind == "figure":
            path = figure_dir / f"{block.name}.png"
            path.write_bytes(block.png)
            parts.append(f"![{block.text}]({path.relative_to(relative_to).as_posix()})\n\n*{block.text}*")
    return "\n\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{color:#555;font-size:0.9em}
code{background:#f3f3f3;padding:1px 3px}img{max-width:100%}"""


def _inline_markdown(text: str) -> str:
    """The little markdown the report's paragraphs use: **bold** and `code`."""
    escaped = html.escape(text)
    parts = escaped.split("**")
    escaped = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if block.kind in ("h1", "h2"):
            parts.append(f"<{block.kind}>{_inline_markdown(block.text)}</{block.kind}>")
        elif block.kind == "p":
            parts.append(f"<p>{_inline_markdown(block.text)}</p>")
        elif block.kind == "table":
            parts.append(block.table.to_html(index=False, escape=True, border=0))
        elif block.kind == "figure":
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(block.text)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block.text)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(blocks: list[Block], out_dir: Path, title: str) -> dict[str, Path]:
    """Write report.md (+ figures/) and a self-contained report.html into out_dir."""
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    markdown_path.write_text(render_markdown(blocks, out_dir / "figures", out_dir), encoding="utf-8")
    html_path.write_text(render_html(blocks, title), encoding="utf-8")
    return {"report_md": markdown_path, "report_html": html_path}


def write_fit_report(calibration: dict, judgments: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    return write_report(fit_report_blocks(calibration, judgments), out_dir, f"calibrate: {calibration['judge']['name']}")
