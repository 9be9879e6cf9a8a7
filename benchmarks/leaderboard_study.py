"""The leaderboard study (issue 25): paired differences, rank intervals and clustered intervals, on synthetic
models scored by the code `calibrate score` runs (calibrate/stats/leaderboard_simulation.py); writes its
section of docs/statistics.md.

    python -m benchmarks.leaderboard_study [--replications 100] [--bootstrap 300] [--out docs/statistics.md]
    python -m benchmarks.leaderboard_study --done-when   # the issue's check alone: 12 fresh replications

(`python -m benchmarks.coverage_study --only leaderboard` runs the same section.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from calibrate.stats import leaderboard_simulation as ls
from calibrate.stats import simulation as sim

DOC = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"

PROSE = """## Telling models apart: paired differences, ranks, clustered intervals (issue 25)

With two or more response datasets, `calibrate score` writes every model pair's difference in PAC and REF
(`metrics.json` `differences`: `{model_a, model_b, metric, value (a - b), ci, p_value, p_adjusted, n_shared,
basis}`, on the pairs both were judged on) and each model's rank by headline PAC with an interval
(`models.<model>.rank`: `{value, ci}`). One joint resampling makes them: per replicate, the calibration pairs
are resampled once (within each set) for every model, and the benchmark's clusters once, the same clusters
for every model; each model's headline is recomputed on the replicate by its own basis (class correction;
PPI++ with its lam and predictions fixed; the judge's mean). What the models share (the calibration's error,
the prompts) cancels in a difference. Its interval: the percentile interval of the replicates' differences;
its p-value: two-sided bootstrap; `p_adjusted`: Holm over the model pairs of one metric. Rank intervals are
simultaneous over models (Mogstad, Romano, Shaikh and Wilhelm 2024): every pairwise difference at once by
max-T (the 95% quantile over replicates of the largest studentised deviation), a model's rank running from
1 + the models significantly above it to n - the models significantly below it.

Pairs of one Wikipedia article are correlated, so every benchmark interval resamples whole clusters
(`--cluster-by`, default `article_title`, else `issue_description`; `none`: single pairs; `metrics.json`
`clustering`: the column and the clusters per model): the headline (class correction: its benchmark part;
PPI++: its standard error is the cluster-robust one, CR0, the interval widened by the square root of the
design effect, never narrowed), raw metrics (bootstrap; Wilson's interval at the effective sample size),
breakdowns and differences. Calibration sets resample pairs unless they carry the column.

The rows: the over-calling judge, 60 calibration pairs per set, 1,000 benchmark pairs on the same ids for
every model, in articles of 10 pairs (5 and 20 where said). *article effect*: the share of articles whose
pairs all take one draw (their true classes, for every model alike; and the judge's reading of them), so
intra-article correlation without changing any true value. Models: *two* are PAC 52.5 and 62.5 with the
same refusals (40/30/15/15 and 30/40/15/15), *two, distant*: PAC 52.5 and 62.5 with other refusals (the
calibration mix), *five*: PAC 47.5 to 67.5, 5 points apart. Each cell: coverage of the 95% interval (the
true difference or the true value) / mean width (PAC points); *ranks*: the share of replications in which
every model's rank interval holds its true rank (simultaneous) / mean interval length in ranks.
"""

READING = """What the rows say (40 replications each, so a coverage is known to about +-0.035):

- **Differences** cover 0.90-0.95 without an article effect and are 0.60-0.73 times as wide as the models'
  own intervals: the calibration's error, shared by every model, cancels; most for models that differ on
  few pairs (*two*: 0.61), less for models with other refusals (*two, distant*: 0.73). With 200 human labels
  per model the level intervals are narrow already (10 points) and a difference is 0.90 as wide: the labels'
  own sampling error does not cancel.
- **Ranks**: the simultaneous intervals held every true rank in 97-100% of the replications; five models 5
  points apart get intervals 2.5 ranks long on average (4.3 with the article effect).
- **Clusters**: with half the articles' pairs alike (truth and the judge's reading), resampling single pairs
  under-covers: headline 0.78-0.89, differences 0.47-0.88, worse with larger articles; resampling articles
  covers the headline (0.93-0.96) at intervals about a quarter to three quarters wider. Differences resampling
  articles cover 0.85-0.97: the 0.85 (10 pairs per article, no labels) comes from a difference carried by
  the few coherent articles where the two models differ (some 5 of 100 articles), too few for a percentile
  bootstrap; a full test split has over 1,000 articles.
"""

SCENARIOS = (
    # name, mixes, article size, article effect (truth and judge), labels, clustered
    ("two", ls.DONE_WHEN_MIXES, 10, 0.0, 0, True),
    ("two, distant", ls.DISTANT_MIXES, 10, 0.0, 0, True),
    ("two", ls.DONE_WHEN_MIXES, 10, 0.0, 200, True),
    ("five", ls.FIVE_MIXES, 10, 0.0, 0, True),
    ("two", ls.DONE_WHEN_MIXES, 10, 0.5, 0, True),
    ("two", ls.DONE_WHEN_MIXES, 10, 0.5, 0, False),
    ("two", ls.DONE_WHEN_MIXES, 10, 0.5, 200, True),
    ("two", ls.DONE_WHEN_MIXES, 10, 0.5, 200, False),
    ("five", ls.FIVE_MIXES, 10, 0.5, 0, True),
    ("two", ls.DONE_WHEN_MIXES, 5, 0.5, 0, False),
    ("two", ls.DONE_WHEN_MIXES, 20, 0.5, 0, True),
    ("two", ls.DONE_WHEN_MIXES, 20, 0.5, 0, False),
    ("two", ls.DONE_WHEN_MIXES, 5, 0.5, 0, True),
)


def table(replications: int, n_boot: int) -> list[str]:
    lines = ["| models | pairs per article | article effect | labels | resampled | headline PAC | PAC difference | "
             "difference / headline width | ranks |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, (name, mixes, size, share, labels, clustered) in enumerate(SCENARIOS):
        study = ls.Study(mixes, judge=sim.OVERCALLING, article_size=size, article_share=share,
                         judge_article_share=share, n_labels=labels, clustered=clustered)
        found = ls.run(study, replications, n_boot, seed=100 + k)
        lines.append(f"| {name} | {size} | {share:.0%} | {labels or '-'} | {'articles' if clustered else 'pairs'} | "
                     f"{found['headline_coverage']:.2f} / {found['headline_width']:.1f} | "
                     f"{found['difference_coverage']:.2f} / {found['difference_width']:.1f} | "
                     f"{found['difference_width'] / found['headline_width']:.2f} | "
                     f"{found['ranks_coverage']:.2f} / {found['rank_length']:.2f} |")
        print(lines[-1], flush=True)
    return lines


def done_when(n_boot: int, seed: int) -> list[str]:
    """The issue's check: 12 fresh replications of two models on the same 1,000 pair ids."""
    lines = []
    for label, mixes in (("two", ls.DONE_WHEN_MIXES), ("two, distant", ls.DISTANT_MIXES)):
        found = ls.run(ls.Study(mixes, article_size=1), 12, n_boot, seed=seed)
        lines.append(f"- {label} (true PAC 52.5 and 62.5, 60 calibration pairs per set, 1,000 shared pair ids, pairs "
                     f"resampled, {n_boot} resamples, seed {seed}): the PAC difference covered the true -10 in "
                     f"{found['difference_covered']} of {found['differences']} replications; mean width "
                     f"{found['difference_width']:.1f} against the models' own headline intervals' "
                     f"{found['headline_width']:.1f} (ratio {found['difference_width'] / found['headline_width']:.2f})")
        print(lines[-1], flush=True)
    return lines


def section(replications: int, n_boot: int) -> list[str]:
    return [*table(replications, n_boot), "", READING, "The issue's done-when, 12 fresh replications "
            "(`python -m benchmarks.leaderboard_study --done-when`):", "", *done_when(1000, 2025), "",
            f"(These rows: {replications} replications, {n_boot} bootstrap resamples.)"]


def main() -> None:
    from benchmarks.coverage_study import replace_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--done-when", action="store_true", help="Only the issue's check, printed.")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.done_when:
        done_when(1000, 2025)
        return
    body = "\n".join([PROSE, *section(args.replications, args.bootstrap), "", ""])
    args.out.write_text(replace_section(args.out.read_text(), body))
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
