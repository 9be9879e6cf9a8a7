"""Command line: parses arguments, calls the workflows, prints. No statistics live here.

Library errors name parameters (`limit must be ...`); `main` rewords them as flags (`--limit ...`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import click
from rich.console import Console

from calibrate.cli import options as opt
from calibrate.cli.tables import print_table
from calibrate.data.calibration import parse_sets
from calibrate.errors import CalibrateError, is_disk_full
from calibrate.judging.base import judgment_schema
from calibrate.judging.config import available_judges
from calibrate.judging.estimate import CostEstimate, key_is_set
from calibrate.judging.preflight import key_variables, remote_members
from calibrate.judging.published import compare_with_published, read_published_evaluator
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.remote import RemoteBackend
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.version import __version__
from calibrate.workflows.annotate_options import DEFAULT_HOST, DEFAULT_PORT, SELECTIONS, STRATA

if TYPE_CHECKING:
    from calibrate.records import Record
    from calibrate.stats.benchmark import Headline, ScoreRecord
    from calibrate.stats.calibration import Calibration
    from calibrate.stats.comparison import Comparison
    from calibrate.stats.humans import HumanAgreement, RaterAgreement
    from calibrate.stats.metrics import MetricEstimate
    from calibrate.stats.rank_agreement import RankAgreement, SelfPreference
    from calibrate.workflows.batch import BatchInfo
    from calibrate.workflows.plan import Probe, ProbeQuote, RunPlan
    from calibrate.workflows.score import ScoreResult

# The workflows and statistics (pandas, numpy, aiohttp) are imported by the commands that run them, so
# that `calibrate --help`, `calibrate judges` and a mistyped flag answer at once.

console = Console(stderr=True)


class ScoreInputs(TypedDict):
    """The options `score` passes alike to the scoring, its plan and its input check."""

    order: str
    limit: int | None
    anchor_judge: str | None
    anchor_fraction: float | None
    human_labels: Path | None
    cluster_by: str | None


@click.group()
@click.version_option(__version__, prog_name="calibrate")
@click.option("--trust-judges", is_flag=True,
              help="Trust every judge and model config of this run, also those from ./judges, $CALIBRATE_JUDGES_DIR "
                   "or a path that would otherwise need `calibrate judges trust` (for CI runs of your own configs).")
@click.pass_context
def cli(ctx: click.Context, trust_judges: bool) -> None:
    """Calibrate and validate LLM judges for VAL-Bench."""
    if trust_judges:
        from calibrate.judging.trust import trusting

        ctx.with_resource(trusting())


@cli.command()
@opt.options(opt.judge(), opt.data(), opt.sets(), opt.rule(), opt.out("reports/<judge>/"), opt.limit(), opt.seed(),
             opt.cache(), opt.bootstrap(), opt.order(), opt.invariance(), opt.no_progress(), opt.dry_run(),
             opt.probe(), opt.max_cost(), opt.yes(), opt.max_failed_share())
def fit(judge: str, data: str, sets: str, rule: str | None, out: Path | None, limit: int | None, seed: int,
        cache: Path | None, n_boot: int, order: str, invariance: str | None, no_progress: bool, dry_run: bool,
        probe: int | None, max_cost: float | None, yes: bool, max_failed_share: float) -> None:
    """Run a judge on the calibration sets, measure its error, fit a score mapping."""
    from calibrate.workflows.common import default_out_dir
    from calibrate.workflows.fit import fit as fit_judge
    from calibrate.workflows.fit import plan_fit

    inputs: dict[str, Any] = dict(data=data, sets=parse_sets(sets), limit=limit, seed=seed, cache=cache, order=order,
                                  invariance=invariance)
    result = planned(partial(fit_judge, judge, **inputs, rule=rule, out=out or default_out_dir(judge),
                             progress=opt.progress_bars(no_progress), n_boot=n_boot),
                     dry_run, max_cost, yes, plan_run=partial(plan_fit, judge, **inputs,
                                                              **probing(probe, dry_run, max_cost, no_progress)))
    if result is not None:
        print_fit_summary(result.calibration, result.paths)
        report_failures({judge: result.calibration.run.to_dict()}, max_failed_share)


def stepped_down_line(asked: str | None, used: dict[str, int] | None) -> str:
    """What the judgments used when the server refused the structured output asked for ("" when none stepped down)."""
    other = {mode: n for mode, n in (used or {}).items() if mode != asked}
    if not other:
        return ""
    return (f"the server refused {asked}; judgments used " + ", ".join(f"{mode} ({n})" for mode, n in other.items())
            + " (recorded as response_formats_used)")


def report_failures(runs: dict[str, dict], max_failed_share: float) -> None:
    """Say what rate limits cost (429s, time held back) and, plainly, how many judgments failed this run, per
    failure kind with its first reason; exit 3 when their share of the items passes `max_failed_share`, so
    that a script can tell a complete run from a broken one. Every failure counts (transient, unparseable,
    truncated, refused), never `missing_answer` (the model's, not the judge's); a rerun asks again for
    exactly the failed ones."""
    limited = sum(run.get("rate_limited", 0) for run in runs.values())
    waited = sum(run.get("limit_wait_s", 0.0) for run in runs.values())
    if limited or waited:
        console.print(f"rate limits: {limited} requests answered 429; {waited:.1f}s spent waiting on limits")
    by_kind: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for run in runs.values():
        for kind, count in (run.get("failed_by_kind") or {}).items():
            by_kind[kind] = by_kind.get(kind, 0) + count
        for kind, reason in (run.get("first_reasons") or {}).items():
            reasons.setdefault(kind, reason)
    failed = sum(by_kind.values())
    items = sum(run.get("items", 0) for run in runs.values())
    if not failed:
        return
    share = failed / max(items, 1)
    console.print(f"{failed} of {items} judgments ({share:.1%}) failed this run; they are not cached as judgments: "
                  "run the same command again to ask for exactly those", markup=False)
    for kind, count in sorted(by_kind.items(), key=lambda item: -item[1]):
        console.print(f"  {kind} {count}: {reasons.get(kind, '')}".rstrip(), markup=False, soft_wrap=True)
    if share > max_failed_share:
        counted = ", ".join(f"{kind} {count}" for kind, count in sorted(by_kind.items(), key=lambda item: -item[1]))
        console.print(f"incomplete run: more than --max-failed-share {max_failed_share:g} of the judgments failed "
                      f"({counted})", markup=False)
        sys.exit(3)


def planned(run: Callable[..., Any], dry_run: bool, max_cost: float | None, yes: bool,
            plan_run: Callable[[], RunPlan]) -> Any:
    """`run` (a workflow with its arguments) as the flags say: with --dry-run only its plan (`plan_run`, the
    workflow's plan_ function with the same arguments), printed (None is returned); without a cap, on a
    terminal, it asks first when the estimate passes CONFIRM_ABOVE_USD (unless --yes); then the run itself,
    held to --max-cost."""
    if dry_run:
        print_plan(plan_run())
        return None
    if max_cost is None and not yes and sys.stdin.isatty():
        plan = plan_run()
        if plan.cost_usd > opt.CONFIRM_ABOVE_USD:
            print_plan(plan)
            if not click.confirm(f"This run is estimated at ${plan.cost_usd:.2f} at list price. Go ahead?",
                                 default=False, err=True):
                raise CalibrateError("not confirmed: nothing was sent (max_cost caps a run; yes skips this question)",
                                     ("max_cost", "yes"))
    return run(max_cost=max_cost) if max_cost is not None else run()


def probing(probe: int | None, dry_run: bool, max_cost: float | None, no_progress: bool,
            answers: bool = False) -> dict[str, Any]:
    """The plan_ function's arguments for --probe N: the probe, its cap, its progress bars, and its price
    printed before anything is sent (none without --probe); `answers`: probing `respond`'s model."""
    if not probe:
        return {}
    if not dry_run:
        raise CalibrateError("probe measures a dry run: add dry_run (a run itself measures what it sends)",
                             ("probe", "dry_run"))
    return {"probe": probe, "max_cost": max_cost, "progress": opt.progress_bars(no_progress),
            "on_quote": partial(print_quote, answers=answers)}


def print_quote(quotes: list[ProbeQuote], answers: bool = False) -> None:
    """What a probe is about to send, and its price, before it is sent; `answers`: questions to `respond`'s
    model. A judge (or model) with nothing left to send gets no line: the probe's result says so."""
    for quote in (quote for quote in quotes if quote.requests):
        price = f"${quote.cost_usd:.4f} at list price" if quote.cost_usd else "at no cost (no price in its config)"
        console.print(f"probe: judging {quote.requests} pairs with '{quote.judge}' here (offline: nothing is sent)"
                      if quote.offline else
                      f"probe: sending {quote.requests} questions to model '{quote.judge}', {price} (their answers "
                      "are kept in the cache; the run reuses them)" if answers else
                      f"probe: sending {quote.requests} requests to judge '{quote.judge}', {price} (their judgments "
                      "are kept in the cache; the run reuses them)", markup=False, soft_wrap=True)


def probe_line(probe: Probe, estimate: CostEstimate, answers: bool = False) -> str:
    """What a probe of one judge (`answers`: of `respond`'s model) measured, and the failures its parse
    rate makes likely in the run."""
    if not probe.n_sent:
        return f"probe of {probe.judge}: nothing to send, every request of this run is cached"
    latency = "-" if probe.median_latency_s is None else f"{probe.median_latency_s:.3g}s"
    if probe.offline:
        return (f"probe of {probe.judge}: {probe.n_sent} judged here (offline, nothing sent or paid), "
                f"median {latency} each; the time is extrapolated from it")
    failures = "".join(f"; {kind} {count}: {probe.first_reasons.get(kind, '')}".rstrip()
                       for kind, count in probe.failures_by_kind.items())
    tokens = ("" if probe.mean_input_tokens is None else
              f", {probe.mean_input_tokens:,.0f} input and {probe.mean_output_tokens or 0:,.0f} output tokens")
    parsed, per = ("answered", "answer") if answers else ("parsed", "judgment")
    line = (f"probe of {probe.judge}: {probe.n_parsed} of {probe.n_sent} {parsed} ({probe.parse_rate:.0%}){failures}; "
            f"median latency {latency}{tokens} per {per}; {probe.requests} requests"
            + (f", ${probe.cost_usd:.4f} spent (quoted ${probe.quoted_usd:.4f})" if probe.quoted_usd else ""))
    if probe.n_parsed < probe.n_sent and estimate.requests:
        line += (f"; at that rate about {round(estimate.requests * (1 - probe.parse_rate)):,} of the "
                 f"{estimate.requests:,} requests left would fail (a rerun asks again for those)")
    return line


def duration(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12m 05s, 3h 20m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def print_plan(plan: RunPlan) -> None:
    """What a run would send, per judge, and what it would cost; says plainly that nothing was sent (or only
    the probe's requests), where each judge's latency comes from, and what a probe measured."""
    out = Console()

    def usd(value: float | None) -> str:
        return "-" if value is None else "0" if value == 0 else f"{value:,.2f}" if value >= 0.1 else f"{value:.4f}"

    rows = [[e.name, "offline" if e.offline else f"{e.requests:,}", f"{e.cached:,}", f"{e.input_tokens:,}",
             f"{e.output_tokens:,}", usd(e.cost_usd), usd(e.batch_cost_usd), duration(e.time_s)]
            for e in plan.estimates]
    if len(plan.estimates) > 1:
        rows.append(["total", f"{plan.requests:,}", "", "", "", usd(plan.cost_usd), usd(plan.batch_cost_usd),
                     duration(plan.time_s)])
    sent = sum(probe.requests for probe in plan.probes if not probe.offline)
    what = f"{sent} probe requests sent (now cached), nothing else" if plan.probes else "nothing was sent"
    print_table(out, f"dry run of `calibrate {plan.command}`: {what}",
                ["judge" if plan.command != "respond" else "model", "requests", "cached", "in tokens", "out tokens",
                 "$ list", "$ batch", "time"], rows)
    probed = {probe.judge: probe for probe in plan.probes}
    for e in plan.estimates:
        if (probe := probed.get(e.name)) is not None:
            out.print(probe_line(probe, e, answers=plan.command == "respond"), markup=False, soft_wrap=True)
        if e.offline or not e.requests:
            continue
        out.print(f"{e.name} ({e.model}): {e.input_tokens / e.requests:,.0f} input tokens per request "
                  "(the prompt as rendered"
                  + ("" if e.input_ratio == 1.0 else f", x{e.input_ratio:.2f} as measured")
                  + f"), {e.output_tokens_per_request:,.0f} output ({e.output_basis}); prices per million tokens "
                  f"${e.price_input_per_mtok:g} in, ${e.price_output_per_mtok:g} out; time at {e.time_basis}"
                  + ("" if not e.not_sent else f"; {e.not_sent} without an answer, never sent")
                  + ("" if probe is not None or plan.command not in ("fit", "compare", "score", "respond") else
                     "; --probe 5 measures the latency with 5 real requests"), markup=False)
    for note in plan.notes:
        out.print(note)
    if plan.command == "batch submit":
        out.print("provider batches finish within 24 hours, at the batch price")
    for variable in plan.missing_keys:
        out.print(f"{variable} is not set: the run itself needs it")


def print_fit_summary(calibration: Calibration, paths: dict[str, Path]) -> None:
    """One screen: per-set observed vs expected with intervals, the headline, and where files went."""
    from calibrate.stats.calibration import MIN_MEANINGFUL_PAIRS

    judge = calibration.judge
    title = f"judge {judge.name} ({judge.backend}{', baseline' if judge.baseline else ''}), " \
            f"rule {calibration.scoring_rule}"
    def number(value: float | None, form: str) -> str:
        return "n/a" if value is None else format(value, form)

    rows = []
    for name, report in calibration.sets.items():
        pac, ref = report.metrics["PAC"], report.metrics["REF"]
        low, high = pac.ci
        rows.append([
            name, str(report.n_pairs), str(report.n_failed),
            f"{number(pac.value, '.1f')} [{number(low, '.1f')}, {number(high, '.1f')}]",
            number(pac.expected, ".0f"), number(pac.error, "+.1f"), number(ref.value, ".1f"),
            number(ref.expected, ".0f"), f"{number(report.classification.accuracy.value, '.0f')}%",
        ])
    out = Console(soft_wrap=True)  # sentences stay one line each (the terminal wraps them); tables fit its width
    print_table(out, title, ["set", "pairs", "failed", "PAC [95% CI]", "expected", "error", "REF", "exp.",
                             "class acc."], rows)
    summary, mapping, run = calibration.summary, calibration.mapping, calibration.run
    judged_sets = sum(error is not None for error in summary.pac_error_by_set.values())
    few = [name for name in summary.pac_error_by_set if calibration.sets[name].n_judged < MIN_MEANINGFUL_PAIRS]
    accuracy, worst = summary.class_accuracy, summary.max_abs_pac_error
    if few:  # a number from a handful of pairs must not read as a result
        headline = (f"worst-set PAC error: not meaningful (fewer than {MIN_MEANINGFUL_PAIRS} judged pairs in "
                    f"{', '.join(few)}; on these pairs it reads {number(worst, '.1f')})")
    elif accuracy is not None and worst is not None and accuracy < 50 and worst < 10:
        headline = (f"worst-set PAC error {worst:.1f} points, contradicted by the class accuracy: the judge's "
                    "errors cancel within sets (read the confusion matrix, not this number)")
    else:
        headline = f"worst-set PAC error {number(worst, '.1f')} points" + (
            "" if judged_sets == len(summary.pac_error_by_set) else
            f" (over the {judged_sets} of {len(summary.pac_error_by_set)} sets with judged pairs)")
    out.print(f"{headline}; class accuracy {number(accuracy, '.1f')}%; mapping '{mapping.selected}' "
              f"(nested-CV worst-set error {number(mapping.selected_error.max_abs_pac_error, '.1f')})")
    for warning in calibration.warnings:
        out.print(f"warning: {warning}", markup=False)
    injection = calibration.injection
    if injection:
        verdict = "FLAGGED: moved by text aimed at the judge" if injection.flagged else "not moved"
        low, high = injection.pac_shift_ci
        out.print(f"prompt injection: PAC shift {injection.pac_shift:+.1f} [{number(low, '+.1f')}, "
                  f"{number(high, '+.1f')}] on {injection.n_pairs} pairs, {injection.pairs_moved} moved; {verdict}")
    out.print(f"judged {run.judged}, failed {run.failed}, reused {run.reused} from cache; "
              f"{run.requests} requests, ${calibration.accounting.cost_usd_this_run:.4f} this run; "
              f"{number(run.elapsed_s, '.1f')}s")
    if stepped := stepped_down_line(run.response_format, run.response_formats_used):
        out.print(f"judge {judge.name}: {stepped}", markup=False)
    injection_set = calibration.sets.get("injection-0")
    if injection_set:
        out.print(f"(judgments cover the {summary.n_pairs} calibration pairs and the {injection_set.n_pairs} "
                  "injection-0 pairs of the prompt-injection check, which stay out of the headline)")
    print_missing_answers({name: report.missing_answers.n_pairs for name, report in calibration.sets.items()}, out)
    print_paths(paths, out)


def print_paths(paths: dict[str, Path], out: Console) -> None:
    """Where the files went, one per line, never wrapped (so each path can be copied whole)."""
    for label, path in paths.items():
        out.print(f"  {label:<12} {path}", soft_wrap=True, markup=False, highlight=False)


def print_missing_answers(pairs: dict[str, int], out: Console) -> None:
    """One line for the pairs not judged because an answer is a placeholder ("No response", empty), per
    set or model."""
    counts = {name: count for name, count in pairs.items() if count}
    if counts:
        out.print("not judged, an answer missing (\"No response\" or empty; counted as missing_answer failures): "
                  + ", ".join(f"{name} {count}" for name, count in counts.items()) + " pairs", markup=False)


@cli.command()
@opt.judge("Judge name or .toml path (calibrated with `calibrate fit`).")
@click.option("--responses", "sources", required=True, multiple=True,
              help="Response dataset: hub id, folder, or parquet/jsonl/csv file; `sample` for the bundled ones. "
                   "Repeat the option (or list several after it) for a leaderboard.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="calibration.json from `calibrate fit` "
                   "[default: reports/<judge>/calibration.json, made if missing].")
@opt.options(opt.rule(help_text="Scoring rule [default: the calibration's]."), opt.order(help_text=""),
             opt.out("reports/score-<judge>/"), opt.limit("Judge only the first N pairs of each source."), opt.cache(),
             opt.bootstrap(), opt.seed(""))
@click.option("--anchor-judge", default=None,
              help="An expensive judge run on a random fraction of the pairs; its metrics are estimated by PPI++.")
@click.option("--anchor-fraction", type=float, default=None, help="Share of pairs the anchor judge sees, in (0, 1].")
@click.option("--human-labels", "--anchor-labels", "human_labels", type=click.Path(path_type=Path), default=None,
              help="Human labels as the anchor: pair_id, alignment_score, optional flags and model columns, or "
                   "`calibrate annotate export` (long format).")
@click.option("--cluster-by", default=None, metavar="COLUMN|none",
              help="Resample the pairs sharing this column together in every interval (pairs of one article are "
                   "correlated); `none`: single pairs [default: article_title when the data has it, else "
                   "issue_description].")
@opt.family()
@opt.options(opt.no_progress(), opt.dry_run(), opt.probe(), opt.max_cost(), opt.yes(), opt.max_failed_share())
@click.argument("more_sources", nargs=-1)
def score(judge: str, sources: tuple[str, ...], calibration: Path | None, rule: str | None, order: str,
          out: Path | None, limit: int | None, cache: Path | None, n_boot: int, seed: int, anchor_judge: str | None,
          anchor_fraction: float | None, human_labels: Path | None, cluster_by: str | None,
          families: tuple[str, ...], no_progress: bool, dry_run: bool, probe: int | None, max_cost: float | None,
          yes: bool, max_failed_share: float, more_sources: tuple[str, ...]) -> None:
    """Score models' answers with a calibrated judge: raw and calibrated metrics, breakdowns, leaderboard.
    Without --calibration, the judge's fit in reports/<judge>/ is used, and made first when missing."""
    from calibrate.workflows.common import REPORTS_DIR, default_out_dir
    from calibrate.workflows.fit import fit as fit_judge
    from calibrate.workflows.fit import plan_fit
    from calibrate.workflows.plan import RunPlan, combined, spend_budget
    from calibrate.workflows.score import check_score_inputs, plan_score
    from calibrate.workflows.score import score as score_responses
    responses = [*sources, *more_sources]
    config = load_judge_config(judge)
    default_calibration = REPORTS_DIR / config.name / "calibration.json"
    fit_first = calibration is None and not default_calibration.exists()
    inputs: ScoreInputs = {"order": order, "limit": limit, "anchor_judge": anchor_judge,
                           "anchor_fraction": anchor_fraction, "human_labels": human_labels, "cluster_by": cluster_by}
    progress = opt.progress_bars(no_progress)
    probe_arguments = probing(probe, dry_run, max_cost, no_progress)

    def plan() -> RunPlan:
        scoring = plan_score(judge, responses, cache=cache, seed=seed, **inputs, **probe_arguments)
        if not fit_first:
            return scoring
        first = plan_fit(str(config.path), cache=cache)
        # the scoring's estimate first: the judge's combined row keeps its latency and tokens (probed, if so)
        return RunPlan("score", combined([*scoring.estimates, *first.estimates]),
                       [f"no calibration at {default_calibration}: `fit` runs first "
                        f"({first.requests} of the requests)", *scoring.notes], probes=scoring.probes)

    def run(max_cost: float | None = None) -> ScoreResult:
        budget = spend_budget(max_cost)  # one cap for the fit run first and the scoring
        used = calibration or default_calibration
        if fit_first:
            check_score_inputs(judge, responses, **inputs)  # a bad input stops here, before the fit is paid for
            console.print(f"no calibration for judge '{config.name}' at {default_calibration}: running "
                          f"`calibrate fit --judge {judge}` first", markup=False)
            fit_judge(str(config.path), out=default_calibration.parent, cache=cache, progress=progress,
                      max_cost=budget)
        return score_responses(judge, responses, calibration=used, rule=rule,
                               out=out or default_out_dir(judge, prefix="score-"), n_boot=n_boot,
                               cache=cache, seed=seed, progress=progress, max_cost=budget,
                               families=opt.parse_families(families), **inputs)

    result = planned(run, dry_run, max_cost, yes, plan)
    if result is not None:
        print_scores(result.metrics, result.paths)
        report_failures({name: model.run.to_dict() for name, model in result.models.items()},
                                  max_failed_share)


def print_scores(metrics: ScoreRecord, paths: dict[str, Path]) -> None:
    """Per model (best rank first): its rank with its interval, the headline PAC / REF / NINF with intervals
    beside the raw values, the headline's method; the significant differences between models; its warnings
    and the anchor-size recommendation; where files went."""
    from calibrate.reports.score import difference_text, mixed_pairs_text, significant, validation_text
    from calibrate.stats.benchmark import BASIS_CALIBRATION
    from calibrate.stats.leaderboard import SIGNIFICANCE

    def cell(estimate: Headline | MetricEstimate | None, interval: bool = True) -> str:
        if estimate is None:
            return "-"
        low, high = estimate.ci
        if estimate.value is None or not math.isfinite(estimate.value):
            return f"withheld [{low:.1f}, {high:.1f}]" if interval and math.isfinite(low) else "-"
        if interval and math.isfinite(low) and math.isfinite(high):
            return f"{estimate.value:.1f} [{low:.1f}, {high:.1f}]"
        return f"{estimate.value:.1f}"

    rows = []
    ranked = any(model.rank for model in metrics.models.values())
    order = sorted(metrics.models, key=lambda name: rank.value if (rank := metrics.models[name].rank) else 0)
    for name in order:
        model = metrics.models[name]
        rank = ([f"{model.rank.value} [{model.rank.ci[0]}-{model.rank.ci[1]}]" if model.rank else "-"]
                if ranked else [])
        cells = [text for metric in ("PAC", "REF", "NINF")
                 for text in (cell(model.headline.get(metric)), cell(model.raw.metrics.get(metric), interval=False))]
        pac = model.headline.get("PAC")
        rows.append([*rank, name, str(model.raw.n_pairs), str(model.raw.n_failed), *cells,
                     pac.method.split()[0] if pac else "-", f"{model.cost.cost_usd_this_run:.4f}"])
    out = Console(soft_wrap=True)  # sentences stay one line each (the terminal wraps them); tables fit its width
    print_table(out, f"scores by judge {metrics.judge.name}, rule {metrics.scoring_rule}",
                [*(["rank"] if ranked else []), "model", "pairs", "failed", "PAC", "PAC raw", "REF", "REF raw", "NINF",
                 "NINF raw", "headline by", "USD"], rows)
    if metrics.differences:
        found = significant(metrics.differences)
        out.print(f"significant differences (paired, Holm p < {SIGNIFICANCE}): "
                  + ("; ".join(difference_text(row) for row in found) if found else "none"), markup=False)
    for name, model in metrics.models.items():
        anchored = model.anchored
        if anchored and anchored.metrics["PAC"]:
            pac_ppi = anchored.metrics["PAC"]["ppi++"]
            saved = anchored.cost.saved_usd if anchored.cost else None
            out.print(f"{name}: {anchored.anchor} PAC by PPI++ {pac_ppi.estimate:.1f} [{pac_ppi.ci_low:.1f}, "
                      f"{pac_ppi.ci_high:.1f}] from {anchored.n_labeled} anchored and {anchored.n_unlabeled} "
                      "other pairs" + ("" if saved is None else f"; ${saved:.4f} saved against anchoring every pair"))
    for name, model in metrics.models.items():
        pac = model.headline.get("PAC")
        if pac is None:
            continue
        out.print(f"{name}: {validation_text(pac, model.class_corrected.transport)}", markup=False)
        if pac.warning:
            out.print(f"{name}: warning: {pac.warning}", markup=False)
        if pac.basis == BASIS_CALIBRATION and (mixed := mixed_pairs_text(model.class_corrected)):
            out.print(f"{name}: {mixed}", markup=False)
        for metric, entry in model.headline.items():
            if entry.withheld:
                out.print(f"{name}: {metric} withheld ({entry.withheld}); the data allow any value in "
                          f"[{entry.ci[0]:.1f}, {entry.ci[1]:.1f}]", markup=False)
    print_missing_answers({name: model.raw.missing_answers.n_pairs for name, model in metrics.models.items()}, out)
    print_paths(paths, out)


@cli.command()
@click.option("--judges", "judge_list", required=True,
              help="Comma-separated judges (names or .toml paths) to compare; baselines are added.")
@opt.options(opt.data(), opt.sets("Comma-separated sets; injection-0 is unaligned-0 with notes to the judge in the "
                                  "answers."),
             opt.rule("v2", "Scoring rule applied to every judge alike."))
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Judge every pair K times, to measure each judge's stability.")
@opt.order("both: judge every pair in both orders, to measure order bias.")
@opt.invariance()
@click.option("--human-labels", "--human", "human_labels", type=click.Path(path_type=Path), default=None,
              help="Human labels (`calibrate annotate export`, or item/annotator/alignment_score[/flags] rows, or "
                   "one column of scores per annotator): the paper's Table 4; one judge is then enough.")
@click.option("--responses", multiple=True,
              help="Comma-separated response datasets (`sample`: the bundled ones). With two judges or more, each "
                   "judge scores them too: Kendall's tau between the judges' leaderboards, the flips, "
                   "self-preference. Also where --human-labels on benchmark answers come from (named like the "
                   "items' source).")
@opt.family()
@click.option("--no-baselines", is_flag=True, help="Do not add the always-0, always-aligned and heuristic rows.")
@opt.options(opt.out("reports/comparison/"), opt.limit(), opt.seed(), opt.cache(), opt.bootstrap(1000),
             opt.no_progress(), opt.dry_run(), opt.probe(), opt.max_cost(), opt.yes(), opt.max_failed_share())
def compare(judge_list: str, data: str, sets: str, rule: str, repeats: int, order: str, invariance: str | None,
            human_labels: Path | None, responses: tuple[str, ...], families: tuple[str, ...], no_baselines: bool,
            out: Path | None, limit: int | None, seed: int,
            cache: Path | None, n_boot: int, no_progress: bool, dry_run: bool, probe: int | None,
            max_cost: float | None, yes: bool, max_failed_share: float) -> None:
    """Compare judges on the calibration sets (and against human labels): error, agreement, order bias, cost."""
    from calibrate.workflows.common import REPORTS_DIR
    from calibrate.workflows.compare import compare as compare_judges
    from calibrate.workflows.compare import plan_compare
    judges = [name.strip() for name in judge_list.split(",") if name.strip()]
    sources = [part.strip() for value in responses for part in value.split(",") if part.strip()]
    inputs: dict[str, Any] = dict(data=data, sets=parse_sets(sets), repeats=repeats, order=order,
                                  human_labels=human_labels, responses=sources, baselines=not no_baselines,
                                  limit=limit, seed=seed, cache=cache, invariance=invariance,
                                  families=opt.parse_families(families))
    result = planned(partial(compare_judges, judges, **inputs, rule=rule, out=out or REPORTS_DIR / "comparison",
                             progress=opt.progress_bars(no_progress), n_boot=n_boot),
                     dry_run, max_cost, yes, plan_run=partial(plan_compare, judges, **inputs,
                                                              **probing(probe, dry_run, max_cost, no_progress)))
    if result is not None:
        print_comparison(result.comparison, result.paths)
        for name, counts in result.comparison.run.counts.items():
            if stepped := stepped_down_line(counts.get("response_format"), counts.get("response_formats_used")):
                console.print(f"judge {name}: {stepped}", markup=False)
        report_failures(result.comparison.run.counts, max_failed_share)


def print_comparison(comparison: Comparison, paths: dict[str, Path]) -> None:
    """The leaderboard and the recommendation, on one screen."""
    def number(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    rows = [[row.judge + (" (baseline)" if row.baseline else ""), number(row.max_abs_pac_error, ".1f"),
             number(row.calibrated_k_fold_max_abs_pac_error, ".1f"), number(row.class_accuracy, ".1f"),
             number(row.failure_rate, ".1f"), number(row.order_shift.value if row.order_shift else None, "+.2f"),
             number(row.repeat_alpha.value if row.repeat_alpha else None, ".2f"),
             number(row.injection_shift.value if row.injection_shift else None, "+.1f"),
             number((row.cost_usd_per_pair or 0.0) * 1000, ".3f")] for row in comparison.leaderboard.judges]
    out = Console(soft_wrap=True)  # sentences stay one line each (the terminal wraps them); tables fit its width
    print_table(out, f"judge comparison, rule {comparison.scoring_rule} (best first)",
                ["judge", "worst-set PAC err.", "after mapping", "class acc. %", "failed %", "order shift",
                 "repeat alpha", "injection shift", "USD/1k"], rows)
    if comparison.humans:
        print_table4(comparison.humans, out)
    recommendation = comparison.recommendation
    chosen = recommendation.recommended
    out.print(f"recommended: {chosen}" if chosen else "no judge is recommended on this evidence")
    for name, why in recommendation.excluded.items():
        out.print(f"  {name}: {why}")
    if comparison.rank_agreement:
        print_rank_agreement(comparison.rank_agreement, comparison.self_preference or {}, out)
    print_paths(paths, out)


def print_rank_agreement(ranks: RankAgreement, preference: dict[str, list[SelfPreference]], out: Console) -> None:
    """`compare --responses`: each judge's leaderboard, Kendall's tau between every two, the flips,
    self-preference."""
    from calibrate.reports.compare import ci_text, flip_text, open_pairs_text, self_preference_text  # loads matplotlib

    print_table(out, "models by headline PAC, per judge", ["model", "family", *ranks.judges],
                [[model, origin.family or "-",
                  *("-" if board.pac[model] is None else f"{board.pac[model]:.1f}" for board in ranks.judges.values())]
                 for model, origin in ranks.models.items()])
    for row in ranks.tau:
        out.print(f"Kendall's tau {row.judge_a} vs {row.judge_b}: {ci_text(row.tau, row.ci, 2, True)} on "
                  f"{row.n_models} models (interval: {ranks.resamples} joint resamples, clusters by "
                  f"{ranks.cluster_by}{open_pairs_text(row)})", markup=False)
        flips = [flip for flip in ranks.flips if (flip.judge_a, flip.judge_b) == (row.judge_a, row.judge_b)]
        for flip in flips:
            out.print(f"flip: {flip_text(flip)}", markup=False)
        if not flips:
            out.print(f"no flips: {row.judge_a} and {row.judge_b} order every pair of models alike", markup=False)
    for judge, measured in preference.items():
        for against in measured:
            out.print(f"self-preference: {self_preference_text(judge, against)}", markup=False)


def print_table4(human: HumanAgreement, out: Console) -> None:
    """The Table-4 rows (score and flags per rater pair) and PAC per rater."""
    from calibrate.reports.compare import ci_text  # loads matplotlib

    def cell(value: float | None, ci: tuple[float | None, float | None]) -> str:
        return "-" if value is None else ci_text(value, ci, 2)

    def flag(row: RaterAgreement) -> str:
        return "-" if row.agreement is None else f"{row.agreement:.0f} / " + cell(row.kappa, row.ci["kappa"])

    rows = [[f"{a} vs {b}", str(fields["score"].n),
             cell(fields["score"].kappa_quadratic, fields["score"].ci["kappa_quadratic"]),
             flag(fields["refusal"]), flag(fields["no_information"])] for (a, b), fields in human.pairs().items()]
    print_table(out, f"against human labels ({human.n_items} pairs; 95% bootstrap intervals)",
                ["raters", "n", "score kappa (quadratic)", "refusal agr. % / kappa", "no-info agr. % / kappa"], rows)
    out.print("PAC on the labelled pairs: " + ", ".join(
        f"{name} {'-' if value is None else format(value, '.1f')}" for name, value in human.pac.items()))


@cli.command()
@click.option("--ratings", type=click.Path(path_type=Path), required=False,
              help="Wide CSV or parquet: column `item`, one column per rater, empty cell = missing.")
@click.option("--level", type=click.Choice(["ordinal", "interval", "nominal"]), default="ordinal", show_default=True,
              help="Level of measurement for Krippendorff's alpha.")
@click.option("--truth", default=None, help="Column holding the true label; every other column is a rater.")
@click.option("--labels", default=None,
              help="The full ordered label scale, comma-separated (e.g. -2,-1,0,1,2). Default: every value seen; "
                   "give it when a label nobody used lies inside the scale, or weighted kappas shrink distances.")
@click.option("--human-labels", "--human", "human_labels", type=click.Path(path_type=Path), default=None,
              help="Instead of --ratings: a human label file (as for `compare --human-labels`); prints the "
                   "annotators' Table 4 (score and flags, with intervals) and PAC per annotator.")
@opt.options(opt.rule("v2", "Scoring rule for PAC with --human-labels."), opt.bootstrap(1000), opt.seed())
def agreement(ratings: Path | None, level: str, truth: str | None, labels: str | None, human_labels: Path | None,
              rule: str, n_boot: int, seed: int) -> None:
    """Agreement statistics of any ratings table (or of a human label file), printed as JSON."""
    from calibrate.stats.agreement import parse_labels
    from calibrate.workflows.compare import agreement as rating_agreement
    from calibrate.workflows.compare import human_agreement
    record: Record
    if human_labels is not None and ratings is None:
        record = human_agreement(human_labels, rule=rule, n_boot=n_boot, seed=seed)
    elif ratings is not None and human_labels is None:
        record = rating_agreement(ratings, level=level, truth=truth, labels=parse_labels(labels) if labels else None)
    else:
        raise CalibrateError("agreement: give --ratings or --human-labels (one of them)")
    click.echo(json.dumps(record.to_dict(), indent=2))


@cli.command("plan-labels")
@click.argument("metrics", type=click.Path(path_type=Path))
@click.option("--half-width", type=float, default=5.0, show_default=True,
              help="The interval wanted: +- this many points per model.")
@click.option("--price-per-label", type=float, default=None, help="What one human label costs (any currency).")
def plan_labels_command(metrics: Path, half_width: float, price_per_label: float | None) -> None:
    """Human labels needed per model for +-W points, random or stratified by the judge's class, from a score
    run's metrics.json (or its folder); with --price-per-label, their cost."""
    from calibrate.workflows.score import plan_labels

    plan = plan_labels(metrics, half_width=half_width, price_per_label=price_per_label)
    price = plan.price_per_label
    for name, budgets in plan.models.items():
        for budget in budgets:
            cost = "" if price is None else f" (cost {budget.cost_random:,.2f} / {budget.cost_stratified:,.2f})"
            click.echo(f"{name} {budget.metric} +-{budget.half_width:g}: {budget.labels_random} random labels, "
                       f"{budget.labels_stratified} stratified by the judge's class{cost}; sd {budget.sd:.1f} from "
                       f"{budget.measured}")
    click.echo(f"(a validated headline needs at least {plan.min_labels} random human labels, whatever the width)")


@cli.command()
@click.option("--data", "data_file", type=click.Path(path_type=Path), required=True,
              help="CSV, JSONL or parquet table; rows with an empty truth are unlabelled.")
@click.option("--truth", required=True, help="Column of the expensive labels (anchor judge or humans).")
@click.option("--pred", required=True, help="Column of the cheap predictions, present on every row.")
@click.option("--method", type=click.Choice(["ppi", "ppi++", "classical"]), default="ppi++", show_default=True,
              help="ppi (lambda 1), ppi++ (power-tuned lambda), or classical (labelled rows only).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="1 - confidence of the interval.")
def estimate(data_file: Path, truth: str, pred: str, method: str, alpha: float) -> None:
    """Prediction-powered estimate of the mean of TRUTH, printed as JSON."""
    from calibrate.data.tables import read_prediction_table
    from calibrate.stats.ppi import estimate_table

    table = read_prediction_table(data_file, truth, pred)
    click.echo(json.dumps(estimate_table(table, method, alpha), indent=2))


@cli.command()
@click.option("--model", required=True, help="Model config name (models/, $CALIBRATE_MODELS_DIR) or .toml path.")
@click.option("--prompts", default="val-bench/VAL-Bench", show_default=True,
              help="Benchmark pairs: hub id, folder, or parquet/jsonl/csv file with the benchmark columns.")
@click.option("--split", default="test", show_default=True, help="Split of a hub dataset.")
@click.option("--limit", type=int, default=None,
              help="Answer only N pairs: the first N, or a seeded random N with --seed.")
@click.option("--seed", type=int, default=None, help="Pick the --limit pairs at random with this seed.")
@opt.out("./responses")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Cache (SQLite), shared with the judges.")
@opt.options(opt.no_progress(), opt.dry_run("model"), opt.probe(), opt.max_cost(), opt.yes())
def respond(model: str, prompts: str, split: str, limit: int | None, seed: int | None, out: Path | None,
            cache: Path | None, no_progress: bool, dry_run: bool, probe: int | None, max_cost: float | None,
            yes: bool) -> None:
    """Generate a model's answers to both questions of each pair, as a response dataset `score` reads."""
    from calibrate.workflows.respond import DEFAULT_OUT as RESPONSES_DIR
    from calibrate.workflows.respond import plan_respond
    from calibrate.workflows.respond import respond as generate_answers

    inputs: dict[str, Any] = dict(prompts=prompts, split=split, limit=limit, seed=seed, cache=cache)
    result = planned(partial(generate_answers, model, **inputs, out=out or Path(RESPONSES_DIR),
                             progress=opt.progress_bars(no_progress)),
                     dry_run, max_cost, yes,
                     plan_run=partial(plan_respond, model, **inputs,
                                      **probing(probe, dry_run, max_cost, no_progress, answers=True)))
    if result is None:
        return
    summary = result.summary
    failed = ", ".join(f"{reason} {count}" for reason, count in summary.failed_by_reason.items()) or "none"
    Console().print(f"{summary.model}: {summary.pairs_written} of {summary.pairs} pairs written to "
                    f"{summary.output}; {summary.generated} answers generated, {summary.reused} reused, "
                    f"failed: {failed}; {summary.requests} requests, ${summary.cost_usd_this_run:.4f} this run")
    if summary.pairs_with_failed_answers:
        Console().print(f"{summary.pairs_with_failed_answers} pairs hold a failed answer, written as \"No "
                        f"response\" (`score` counts them as missing_answer; run again to retry): "
                        f"{summary.failures_file}")


@cli.group()
def batch() -> None:
    """Batch judging at batch prices: provider jobs (submit, status, collect) for OpenAI's Batch API and
    Anthropic's Message Batches, or request files (export, import) for vLLM's run_batch."""


def _batch_line(batch: BatchInfo) -> str:
    counts = ", ".join(f"{name} {count}" for name, count in batch.counts.items() if count) or "no counts yet"
    return (f"{batch.batch_id or '(id not recorded)'}  {batch.provider}  {batch.state}"
            f"{' (' + batch.provider_status + ')' if batch.provider_status else ''}  "
            f"{batch.requests} requests: {counts}")


@batch.command("submit")
@opt.judge("Judge name or .toml path (an 'openai' or 'anthropic' backend).")
@opt.options(opt.data(), opt.sets("Comma-separated sets (as for fit)."))
@click.option("--responses", "sources", multiple=True,
              help="Response datasets to judge instead of the calibration sets (as for score); repeatable.")
@opt.options(opt.order(""), opt.limit("At most N pairs per set or source (as for fit and score)."), opt.seed(""),
             opt.cache(), opt.dry_run())
def batch_submit(judge: str, data: str, sets: str, sources: tuple[str, ...], order: str, limit: int | None,
                 seed: int, cache: Path | None, dry_run: bool) -> None:
    """Submit a provider batch job for every pair and order the cache does not hold yet."""
    from calibrate.workflows import batch as batches

    inputs: dict[str, Any] = dict(data=data, sets=parse_sets(sets), responses=sources or None, order=order,
                                  limit=limit, seed=seed, cache=cache)
    if dry_run:
        print_plan(batches.plan_batch(judge, **inputs))
        return
    summary = batches.batch_submit(judge, **inputs)
    ids = ", ".join(sent.batch_id for sent in summary.batches) or "none needed"
    click.echo(f"{summary.provider}: submitted {summary.requests} requests in "
               f"{len(summary.batches)} batch(es): {ids}; {summary.already_cached} of "
               f"{summary.items} already cached, {summary.already_submitted} already in open batches"
               + (f", {summary.missing_answer} without an answer (never judged)" if summary.missing_answer else "")
               + ". "
               f"Next: calibrate batch collect --judge {judge} --wait")


@batch.command("status")
@opt.options(opt.judge("Judge name or .toml path."), opt.cache())
def batch_status(judge: str, cache: Path | None) -> None:
    """Show the judge's batches recorded in the cache, asking the provider about the open ones."""
    from calibrate.workflows import batch as batches

    recorded = batches.batch_status(judge, cache=cache)
    for batch_info in recorded:
        click.echo(_batch_line(batch_info))
    if not recorded:
        click.echo(f"no batches of judge '{judge}' in the cache")


@batch.command("adopt")
@click.argument("batch_id")
@opt.options(opt.judge("Judge name or .toml path."), opt.cache())
def batch_adopt(batch_id: str, judge: str, cache: Path | None) -> None:
    """Record BATCH_ID as the batch a submit sent without recording its id (when several could be it)."""
    from calibrate.workflows import batch as batches

    click.echo(_batch_line(batches.batch_adopt(judge, batch_id, cache=cache)))


@batch.command("collect")
@opt.options(opt.judge("Judge name or .toml path."), opt.cache())
@click.option("--wait", is_flag=True, help="Poll until every open batch has ended, then collect it.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.0), default=60.0, show_default=True,
              help="Time between polls with --wait.")
def batch_collect(judge: str, cache: Path | None, wait: bool, poll_seconds: float) -> None:
    """Validate the results of every ended batch and load them into the judgment cache."""
    from calibrate.workflows import batch as batches

    def waiting(open_batches: list[BatchInfo]) -> None:
        for batch_info in open_batches:
            click.echo(f"waiting: {_batch_line(batch_info)}", err=True)


    summary = batches.batch_collect(judge, cache=cache, wait=wait, poll_s=poll_seconds, on_wait=waiting)
    failed = ", ".join(f"{reason} {count}" for reason, count in sorted(summary.failed.items())) or "none"
    click.echo(f"collected {len(summary.collected_batches)} batch(es): {summary.imported} judgments "
               f"stored, failed: {failed}, already cached: {summary.already_cached}; "
               f"cost ${summary.cost_usd:.4f} at batch price (${summary.cost_usd_at_list_price:.4f} at "
               f"list price, ${summary.saved_usd:.4f} saved)")
    if summary.without_result:
        click.echo(f"{summary.without_result} requests got no result (their batch failed or was cancelled); "
                   f"the next `calibrate batch submit` sends them again")
    for batch_info in summary.still_open:
        click.echo(f"still open: {_batch_line(batch_info)}")


@batch.command("export")
@opt.judge("Judge name or .toml path (an 'openai' backend).")
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True,
              help="Request file to write (.jsonl).")
@opt.options(opt.data(), opt.sets("Comma-separated sets (as for fit)."), opt.order(""),
             opt.limit("At most N pairs per set (seeded random choice)."), opt.seed(""), opt.cache())
def batch_export(judge: str, out_file: Path, data: str, sets: str, order: str, limit: int | None, seed: int,
                 cache: Path | None) -> None:
    """Write one request per pair and order that the cache does not hold yet."""
    from calibrate.workflows import batch as batches

    counts = batches.batch_export(judge, out_file, data=data, sets=parse_sets(sets), order=order, limit=limit,
                                  seed=seed, cache=cache)
    Console().print(f"wrote {counts.requests} requests to {out_file} "
                    f"({counts.already_cached} of {counts.items} already in the cache)")


@batch.command("import")
@click.argument("results_file", type=click.Path(path_type=Path))
@opt.options(opt.judge("The judge the requests were exported for."), opt.cache())
def batch_import(results_file: Path, judge: str, cache: Path | None) -> None:
    """Validate a batch output file and load it into the judgment cache."""
    from calibrate.workflows import batch as batches

    summary = batches.batch_import(judge, results_file, cache=cache)
    failed = ", ".join(f"{reason} {count}" for reason, count in summary.failed.items()) or "none"
    Console().print(f"imported {summary.imported} judgments; failed: {failed}; "
                    f"already cached: {summary.already_cached}")


@cli.group(invoke_without_command=True)
@click.option("--data", default="sample", show_default=True,
              help="What to label: 'sample' / 'hub' / a folder of calibration sets, or a response dataset "
                   "(file, folder or hub id).")
@click.option("--sets", default=None, help="Comma-separated calibration sets [default: the four].")
@click.option("--sample", type=int, default=None, help="Label a seeded random sample of N pairs [default: all].")
@click.option("--stratify", type=click.Choice(STRATA), default="none", show_default=True,
              help="Draw the sample in proportion to each set or category.")
@click.option("--select", type=click.Choice(SELECTIONS), default="random", show_default=True,
              help="How the sample is drawn: at random; stratified by --judge's judged class; or 'uncertain', "
                   "pairs --judge is unsure of (orders disagree, score not -2/+2) three times as often. Each pair's "
                   "chance is recorded and exported with the labels; score weights by it.")
@click.option("--judge", "select_judge", default=None,
              help="The judge whose judgments of the pairs (cached, or judged now) make --select's strata.")
@opt.options(opt.cache())
@opt.options(opt.seed("Seed of the sample and of each annotator's order."))
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="The labels file (SQLite) the study's labels go into; shared by all its annotators.")
@click.option("--annotator", default=None, help="Your name, as the label file records it.")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to serve on (local only by default).")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to serve on.")
@click.pass_context
def annotate(ctx: click.Context, data: str, sets: str | None, sample: int | None, stratify: str, select: str,
             select_judge: str | None, cache: Path | None, seed: int, labels_file: Path | None, annotator: str | None,
             host: str, port: int) -> None:
    """Label pairs blind in a local web page (no judge output shown); `annotate export` writes the labels."""
    from calibrate.workflows.annotate import annotate as serve_annotation

    if ctx.invoked_subcommand is not None:
        return
    if labels_file is None or annotator is None:
        raise CalibrateError("annotate: give --labels FILE and --annotator NAME")

    def ready(url: str, session) -> None:
        state = session.state()
        click.echo(f"labelling {state['total']} pairs as {session.annotator} ({state['labelled']} done) at {url}; "
                   f"labels go to {labels_file}; Ctrl-C stops", err=True)

    try:
        serve_annotation(labels_file, annotator, data=data, sets=parse_sets(sets) if sets else None, sample=sample,
                         seed=seed, stratify=stratify, select=select, judge=select_judge, cache=cache, host=host,
                         port=port, on_ready=ready)
    except KeyboardInterrupt:
        click.echo(f"stopped; every label given is in {labels_file}", err=True)


@annotate.command("export")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), required=True, help="The labels file.")
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True,
              help="Label file to write (.csv, .jsonl or .parquet), for --human-labels and --anchor-labels.")
def annotate_export(labels_file: Path, out_file: Path) -> None:
    """Write the labels as a long-format label file (one row per pair and annotator)."""
    from calibrate.workflows.annotate import export_labels

    frame = export_labels(labels_file, out_file)
    counts = frame["annotator"].value_counts().to_dict()
    click.echo(f"wrote {len(frame)} labels to {out_file} ("
               + ", ".join(f"{name} {count}" for name, count in counts.items()) + ")")


@cli.group()
def cache() -> None:
    """Inspect, check and prune the judgment cache."""


def _open_cache(path: Path | None, read_only: bool = False) -> JudgmentStore:
    """The cache file, which must exist; `read_only` never writes to it (so a read-only file works)."""
    path = cache_path(path)
    if not path.exists():
        raise CalibrateError(f"judgment cache {path}: no such file")
    return JudgmentStore(path, read_only=read_only)


@cache.command("stats")
@opt.cache("path")
def cache_stats(path: Path | None) -> None:
    """Judgments and logged failures per judge config."""
    from datetime import datetime

    def when(stamp: float | None) -> str:
        return "-" if stamp is None else datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")

    with _open_cache(path, read_only=True) as store:
        title = f"judgment cache {store.path} ({store.path.stat().st_size / 1e6:.1f} MB)"
        rows = [[row["judge_name"] or "-", row["config_hash"], str(row["judgments"]), str(row["failures_logged"]),
                 str(row["orders"]), str(row["repeats"]), when(row["first"]), when(row["last"])]
                for row in store.stats()]
    print_table(Console(), title, ["judge", "config hash", "judgments", "failures logged", "orders", "repeats",
                                   "first", "last"], rows, text_columns=("config hash",))


@cache.command("verify")
@opt.cache("path")
@click.option("--repair", is_flag=True, help="Move every bad record to the quarantine table (kept, never served).")
def cache_verify(path: Path | None, repair: bool) -> None:
    """Check the file and every record (checksum, schema, key, values); exit 1 and list the problems if any."""
    with _open_cache(path, read_only=not repair) as store:
        problems = store.verify(repair=repair)
        count = store.count()
        repaired = getattr(store, "repaired", 0)
    for problem in problems[:50]:
        click.echo(problem, err=True)
    if len(problems) > 50:
        click.echo(f"... and {len(problems) - 50} more", err=True)
    if repair and repaired:
        left = len(problems) - repaired
        click.echo(f"quarantined {repaired} bad records in {store.path} (table 'quarantine'); "
                   f"the next run judges them again", err=True)
        if left:
            click.echo(f"{left} problems remain (SQLite's own check: restore the file or use another cache)", err=True)
            sys.exit(1)
        click.echo(f"{store.path}: repaired ({count} judgments)")
        return
    if problems:
        click.echo(f"{len(problems)} problems found in {store.path}"
                   + ("" if repair else "; `calibrate cache verify --repair` quarantines the bad records"), err=True)
        sys.exit(1)
    click.echo(f"{store.path}: sound ({count} judgments)")


@cache.command("prune")
@opt.cache("path")
@click.option("--judge", default=None, help="Delete this judge config's judgments (by name or .toml path).")
@click.option("--config-hash", default=None, help="Delete the judgments of this config hash (see `cache stats`).")
@click.option("--failures-only", is_flag=True, help="Delete only the logs of failed attempts.")
@click.option("--yes", is_flag=True, help="Really delete; without it, only say what would be deleted.")
def cache_prune(path: Path | None, judge: str | None, config_hash: str | None, failures_only: bool, yes: bool) -> None:
    """Delete judgments you no longer need. Paid-for work: a dry run unless --yes."""
    if judge and config_hash:
        raise CalibrateError("cache prune: give --judge or --config-hash, not both")
    if not (judge or config_hash or failures_only):
        raise CalibrateError("cache prune: say what to delete (--judge, --config-hash or --failures-only)")
    selected = load_judge_config(judge).config_hash if judge else config_hash
    with _open_cache(path) as store:
        counts = store.prune(selected, failures_only, dry_run=not yes)
    what = f"{counts['judgments']} judgments and {counts['failures']} logged failures"
    click.echo(f"deleted {what}" if yes else f"would delete {what}; add --yes to delete them")


@cli.group(invoke_without_command=True)
@click.pass_context
def judges(ctx: click.Context) -> None:
    """List the configured judges (judges/*.toml, $CALIBRATE_JUDGES_DIR, and the bundled ones); a config
    from outside the package that needs trust is marked (`calibrate judges trust FILE`)."""
    from calibrate.judging.registry import judge_provenance
    from calibrate.judging.trust import bundled_facts, concerns, is_trusted

    if ctx.invoked_subcommand is not None:
        return
    rows, descriptions = [], []
    bundled = bundled_facts()
    for name, path in available_judges().items():
        try:
            config = load_judge_config(str(path), trust=True)
            backend = make_backend(config, trust=True)
        except CalibrateError as error:
            rows.append([name, "invalid", "-", "-", "-", "-"])
            descriptions.append(f"{name}: {error}")
            continue
        keys = "\n".join(f"{variable} {'set' if key_is_set(variable) else 'NOT SET'}"
                         for variable in key_variables(backend))
        rows.append([name, config.backend, config.settings.get("model", "-"), config.rule, config.config_hash,
                     keys or ("none needed" if remote_members([backend]) else "offline")])
        provenance = judge_provenance(config)
        found = concerns(provenance, bundled)
        trust = "" if not found else (f" [trusted local config {path}: {'; '.join(found)}]" if is_trusted(provenance)
                                      else f" [NOT TRUSTED: {path}: {'; '.join(found)}; "
                                           f"`calibrate judges trust {path}` trusts it]")
        descriptions.append(f"{name}: {config.description}{trust}")
    out = Console()
    headers = ["name", "backend", "model", "rule", "config hash", "api keys"]
    print_table(out, "configured judges", headers, rows, text_columns=tuple(headers))
    for line in descriptions:  # sentences, one a line: the terminal wraps them
        out.print(line, markup=False, highlight=False)


@judges.command("check")
@click.argument("evaluator_file", type=click.Path(path_type=Path))
@click.option("--judge", default="gpt", show_default=True, help="The judge (name or .toml path) to compare.")
def judges_check(evaluator_file: Path, judge: str) -> None:
    """Compare a judge with your copy of the public evaluator_flow.py, rubric point by rubric point."""
    evaluator = read_published_evaluator(evaluator_file, "judges check")
    config = load_judge_config(judge)
    backend = make_backend(config)
    if not isinstance(backend, RemoteBackend):
        raise CalibrateError(f"judges check: judge '{config.name}' is not an API judge; it has no prompt to compare")
    points = compare_with_published(evaluator, backend, config.settings["max_answer_chars"],
                                    judgment_schema(config.rule))
    click.echo(f"judge '{config.name}' beside {evaluator_file}, point by point:")
    for point in points:
        click.echo(f"{'same' if point.same else 'DIFFERS':8} {point.point}: published {point.published}; "
                   f"{config.name} {point.judge}")
    click.echo(f"{sum(not point.same for point in points)} of {len(points)} points differ")


@judges.command("trust")
@click.argument("config_file")
def judges_trust(config_file: str) -> None:
    """Trust a judge or model config found outside the package (as it is now: a change to it, a config it
    extends or its prompt files needs trusting again)."""
    from calibrate.judging.config import JUDGES
    from calibrate.judging.configfile import MODELS, read_toml
    from calibrate.judging.models import load_model_config
    from calibrate.judging.registry import judge_provenance
    from calibrate.judging.trust import bundled_facts, concerns, record_trust

    try:
        path = JUDGES.resolve(config_file)
    except CalibrateError:
        path = MODELS.resolve(config_file)
    is_judge = bool({"backend", "extends"} & set(read_toml(path, f"config {path}")))  # a model config names neither
    provenance = (judge_provenance(load_judge_config(str(path), trust=True)) if is_judge
                  else load_model_config(str(path), trust=True).provenance())
    found = concerns(provenance, bundled_facts())
    recorded = record_trust(provenance)
    what = "; ".join(found) if found else "it needs no trust (it takes nothing of yours)"
    click.echo(f"trusted {provenance.kind} config {provenance.path} ({what}); recorded in {recorded}; "
               "a change to it or its files needs trusting again")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a terminated run stops as an interrupted one does: claims
    released, finished judgments committed, one line."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _stopped(error: BaseException | None) -> None:
    """One line for a run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143)."""
    terminated = isinstance(error, Terminated)
    console.print(f"{'terminated' if terminated else 'interrupted'}; finished judgments are kept in the cache")
    sys.exit(143 if terminated else 130)


def main() -> None:
    """Entry point: user errors become one line on stderr (parameters named as flags) and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    # Arrow's default pool (mimalloc since pyarrow 17) hands freed pages back to the system and faults them in
    # again: a cached compare spent 2-4 times the system time under it than under the C library's allocator
    # (docs/performance.md). Set before pyarrow is first imported; a user's own choice stands.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(standalone_mode=False)
    except CalibrateError as error:
        sys.stderr.write(f"error: {error.worded(opt.flag_for)}\n")
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(2)
    except click.exceptions.Abort as error:
        # click turns a Ctrl-C (KeyboardInterrupt) inside a command into Abort; say what is kept
        if isinstance(error.__cause__, KeyboardInterrupt):
            _stopped(error.__cause__)
        console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt as error:
        _stopped(error)
    except OSError as error:
        if not is_disk_full(error):
            raise
        sys.stderr.write(f"error: disk full while writing {error.filename or 'a file'}; nothing lost: judgments and "
                         "labels already given are committed where they were stored; free some space and run again\n")
        sys.exit(2)
