"""The coverage study of calibrate's benchmark estimators; writes docs/statistics.md.

    python -m benchmarks.coverage_study [--replications 300] [--bootstrap 300] [--out docs/statistics.md]

Scenarios (calibrate/stats/simulation.py): four synthetic judges (the issue's over-calling judge, the
bundled heuristic and heuristic-strict as measured on the sample calibration sets, a noisy judge) x
six benchmark mixes x calibration sets of 36, 150 and 1,000 pairs each, 500 benchmark pairs; an
anchor sample of 200 labelled pairs; the mapped estimates and the maximum-likelihood correction on
the cases where they are affordable; random against stratified label selection; a biased anchor judge.
Takes about 10 minutes on one core; `--only selection --only "anchor judge"` reruns those sections alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import leaderboard_study
from calibrate.stats import prevalence
from calibrate.stats import simulation as sim
from calibrate.stats.benchmark import MIN_LABELS

SIZES = (36, 150, 1000)
ANCHOR = 200
MIXED_SHARES = (0.0, 0.05, 0.1, 0.2, 0.4)
BASE_MIX = sim.MIXES["40/30/15/15"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "statistics.md"


def cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['bias']:+.1f} / {entry['width']:.1f} / {entry['coverage']:.2f}"


def main_table(replications: int, n_boot: int) -> list[str]:
    lines = ["| judge | benchmark mix | pairs per set | true PAC | raw | class-corrected (least squares) | "
             "class-corrected (ML) | mapped isotonic | mapped two-point | PPI++ (200 labels) | near-singular |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for judge in sim.JUDGES:
        for mix_name, mix in sim.MIXES.items():
            for size in SIZES:
                scenario = sim.Scenario(judge, mix, n_calibration=size, mix_name=mix_name)
                estimators = ["raw", "least_squares"]
                if mix_name == "40/30/15/15":
                    estimators.append("maximum_likelihood")
                result = sim.simulate(scenario, replications, n_boot, seed=size, estimators=tuple(estimators))
                if size == SIZES[0]:  # the slow ones, once per judge and mix
                    anchored = sim.Scenario(judge, mix, n_calibration=size, n_anchor=ANCHOR)
                    result.update(sim.simulate(anchored, replications, n_boot, seed=7, estimators=("ppi++",)))
                    result.update(sim.simulate(scenario, max(100, replications // 3), n_boot // 2, seed=11,
                                               estimators=sim.MAPPED_ESTIMATORS))
                pac = {name: entry.get("PAC") for name, entry in result.items()}
                lines.append(f"| {judge.name} | {mix_name} | {size} | {scenario.truth()['PAC']:.1f} | "
                             + " | ".join(cell(pac.get(name)) for name in
                                          ("raw", "least_squares", "maximum_likelihood", "mapped_isotonic",
                                           "mapped_two_point", "ppi++"))
                             + f" | {result['least_squares']['PAC']['near_singular']:.0%} |")
                print(lines[-1], flush=True)
    return lines


def ref_table(replications: int, n_boot: int) -> list[str]:
    lines = ["| judge | benchmark mix | pairs per set | true REF | raw | class-corrected | PPI++ (200 labels) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for judge in sim.JUDGES:
        for mix_name in ("40/30/15/15", "refusal-heavy", "50/50 opposed/aligned"):
            scenario = sim.Scenario(judge, sim.MIXES[mix_name], n_calibration=36, n_anchor=ANCHOR)
            result = sim.simulate(scenario, replications, n_boot, seed=3, estimators=("raw", "least_squares", "ppi++"))
            ref = {name: entry.get("REF") for name, entry in result.items()}
            lines.append(f"| {judge.name} | {mix_name} | 36 | {scenario.truth()['REF']:.1f} | "
                         + " | ".join(cell(ref.get(name)) for name in ("raw", "least_squares", "ppi++")) + " |")
            print(lines[-1], flush=True)
    return lines


def mixed_table(replications: int, n_boot: int) -> list[str]:
    lines = ["| judge | mixed share | true PAC | class-corrected: bias / width / coverage (1,000 pairs per set) |",
             "| --- | --- | --- | --- |"]
    for judge in sim.JUDGES:
        for share in MIXED_SHARES:
            scenario = sim.Scenario(judge, sim.with_mixed_share(BASE_MIX, share), n_calibration=1000)
            result = sim.simulate(scenario, replications, n_boot, seed=5, estimators=("least_squares",))
            lines.append(f"| {judge.name} | {share:.0%} | {scenario.truth()['PAC']:.1f} | "
                         f"{cell(result['least_squares']['PAC'])} |")
            print(lines[-1], flush=True)
    return lines


LABEL_SIZES = (20, 50, 100, 300)


def validation_table(replications: int, n_boot: int) -> list[str]:
    """Issue 24's scenario families: a judge harder on the benchmark than on the calibration sets (20% mixed
    pairs), PPI++ on raw and calibrated predictions by number of human labels; judges that confuse classes."""
    lines = ["| scenario | labels | true PAC | class-corrected | PPI++ (raw) | PPI++ (calibrated) | classical | "
             "withheld |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    shifted = sim.with_mixed_share(BASE_MIX, 0.2)
    for n_labels in LABEL_SIZES:
        scenario = sim.Scenario(sim.OVERCALLING, shifted, n_anchor=n_labels, benchmark_judge=sim.HARDER)
        result = sim.simulate(scenario, replications, n_boot, seed=n_labels,
                              estimators=("least_squares", "ppi++", "ppi++ calibrated", "classical"))
        for metric in sim.METRICS:
            lines.append(f"| harder on the benchmark, 20% mixed ({metric}) | {n_labels} | "
                         f"{scenario.truth()[metric]:.1f} | "
                         + " | ".join(cell(result[name][metric]) for name in
                                      ("least_squares", "ppi++", "ppi++ calibrated", "classical"))
                         + f" | {result['least_squares'][metric]['withheld']:.0%} |")
            print(lines[-1], flush=True)
    for judge in (sim.BLIND, sim.STRICT):
        scenario = sim.Scenario(judge, BASE_MIX)
        result = sim.simulate(scenario, replications, n_boot, seed=13, estimators=("least_squares",))
        for metric in sim.METRICS:
            lines.append(f"| {judge.name} ({metric}) | 0 | {scenario.truth()[metric]:.1f} | "
                         f"{cell(result['least_squares'][metric])} | - | - | - | "
                         f"{result['least_squares'][metric]['withheld']:.0%} |")
            print(lines[-1], flush=True)
    return lines


MIXED_READINGS = {"as opposed": {(-2, 0): 1.0}, "as 0 (mixed)": {(0, 0): 1.0}, "as aligned": {(2, 0): 1.0},
                  "as one refusal": {(0, 1): 1.0}}


def reading(judge: sim.Judge, mixed: dict[tuple[int, int], float]) -> sim.Judge:
    """The judge, reading every truly mixed pair as `mixed` (an adversary's choice)."""
    return sim.judge_from(judge.name, judge.description, mixed=mixed, **{
        cls: {sim.OUTCOMES[k]: w for k, w in enumerate(judge.behaviour[cls]) if w} for cls in sim.TRUE_CLASSES})


def mixed_range_table(replications: int, n_boot: int) -> list[str]:
    """Mixed pairs of one sign (all -1 or all +1) at 30% and 60%, read adversarially (every mixed pair judged
    alike): the class-corrected interval against the 30% row of the sensitivity table."""
    lines = ["| judge | mixed pairs | read | true PAC / REF | class-corrected PAC | class-corrected REF | "
             "range at 30%: PAC | range at 30%: REF |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for judge in (sim.OVERCALLING, sim.HEURISTIC):
        for share in (0.3, 0.6):
            for score in (-1.0, 1.0):
                for name, mixed in MIXED_READINGS.items():
                    scenario = sim.Scenario(judge, sim.with_mixed_share(BASE_MIX, share),
                                            benchmark_judge=reading(judge, mixed), mixed_scores=(score,))
                    result = sim.simulate(scenario, replications, n_boot, seed=17,
                                          estimators=("least_squares", "mixed range 30%"))
                    truth = scenario.truth()
                    ranges = result["mixed range 30%"]
                    lines.append(f"| {judge.name} | {share:.0%} of {score:+.0f} | {name} | {truth['PAC']:.1f} / "
                                 f"{truth['REF']:.1f} | {cell(result['least_squares']['PAC'])} | "
                                 f"{cell(result['least_squares']['REF'])} | "
                                 f"{ranges['PAC']['width']:.1f} / {ranges['PAC']['coverage']:.2f} | "
                                 f"{ranges['REF']['width']:.1f} / {ranges['REF']['coverage']:.2f} |")
                    print(lines[-1], flush=True)
    return lines


EDGE_MIXES = {"REF 0": {"opposed": 0.5, "aligned": 0.5},
              "REF 2": {"opposed": 0.48, "aligned": 0.48, "one_refusal": 0.04},
              "REF 98": {"both_refusal": 0.96, "one_refusal": 0.04}, "REF 100": {"both_refusal": 1.0},
              "20% mixed": sim.with_mixed_share(BASE_MIX, 0.2)}


def small_sample_table(replications: int, n_boot: int) -> list[str]:
    """The over-calling judge, harder on the benchmark, at 20/50/100 human labels, REF at 0/2/98/100 and the
    20%-mixed mix: plain PPI++ against the headline's (calibrated predictions, small-sample interval)."""
    lines = ["| benchmark | labels | true PAC / REF | PPI++ PAC | PPI++ REF | headline PPI++ PAC "
             "| headline PPI++ REF |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, mix in EDGE_MIXES.items():
        for n_labels in (20, 50, 100):
            scenario = sim.Scenario(sim.OVERCALLING, mix, n_anchor=n_labels, benchmark_judge=sim.HARDER)
            result = sim.simulate(scenario, replications, n_boot, seed=n_labels,
                                  estimators=("ppi++", "ppi++ calibrated"))
            truth = scenario.truth()
            lines.append(f"| {name} | {n_labels} | {truth['PAC']:.1f} / {truth['REF']:.1f} | "
                         + " | ".join(cell(result[e][m]) for e in ("ppi++", "ppi++ calibrated") for m in sim.METRICS)
                         + " |")
            print(lines[-1], flush=True)
    return lines


SELECTION_SIZES = (50, 100, 300)


def selection_table(replications: int, n_boot: int) -> list[str]:
    """Random against stratified selection of the human labels (annotate --select), at equal label counts:
    the over-calling judge, harder on the benchmark, 20% mixed pairs; PPI++ on raw and calibrated predictions
    and the labels alone, each weighted by the inclusion probabilities where they differ."""
    lines = ["| selection | labels | metric | true value | PPI++ (raw) | PPI++ (calibrated, headline) | classical |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for n_labels in SELECTION_SIZES:
        for selection in ("random", "stratified"):
            scenario = sim.Scenario(sim.OVERCALLING, sim.with_mixed_share(BASE_MIX, 0.2), n_anchor=n_labels,
                                    benchmark_judge=sim.HARDER, selection=selection)
            result = sim.simulate(scenario, replications, n_boot, seed=n_labels,
                                  estimators=("ppi++", "ppi++ calibrated", "classical"))
            for metric in sim.METRICS:
                lines.append(f"| {selection} | {n_labels} | {metric} | {scenario.truth()[metric]:.1f} | "
                             + " | ".join(cell(result[e][metric]) for e in ("ppi++", "ppi++ calibrated", "classical"))
                             + " |")
                print(lines[-1], flush=True)
    return lines


def anchor_judge_table(replications: int, n_boot: int) -> list[str]:
    """The headline with an anchor judge that errs itself (`--anchor-judge`): bias and coverage against the
    truth, and against the anchor judge's own metric, which is what it estimates."""
    lines = ["| anchor judge | anchored pairs | metric | true value | anchor's own value | headline against the "
             "truth | headline against the anchor's value |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for anchor in (sim.HEURISTIC, sim.NOISY):
        for n_anchor in (100, 300):
            scenario = sim.Scenario(sim.OVERCALLING, BASE_MIX, n_anchor=n_anchor, anchor_judge=anchor)
            own = scenario.anchor_truth()
            result = sim.simulate(scenario, replications, n_boot, seed=n_anchor, estimators=("ppi++ calibrated",))
            against_own = sim.simulate(scenario, replications, n_boot, seed=n_anchor, estimators=("ppi++ calibrated",),
                                       truth=own)["ppi++ calibrated"]
            for metric in sim.METRICS:
                lines.append(f"| {anchor.name} | {n_anchor} | {metric} | {scenario.truth()[metric]:.1f} | "
                             f"{own[metric]:.1f} | {cell(result['ppi++ calibrated'][metric])} | "
                             f"{cell(against_own[metric])} |")
                print(lines[-1], flush=True)
    return lines


INTRO = """# Statistics: which benchmark estimate to trust, and when

This file is written by `python -m benchmarks.coverage_study` (replications: {replications} per scenario,
{n_boot} bootstrap resamples; mapped estimates {mapped_reps} replications). Do not edit the tables by hand.

## The headline estimate and the rule that picks it

`calibrate score` reports one headline per metric (`metrics.json`: `models.<model>.headline.<METRIC>` =
`{{"method", "value", "ci", "assumption"}}`), chosen by this rule:

1. **With an anchor** (`--anchor-labels` human labels, or `--anchor-judge` on a random fraction):
   **PPI++** of the anchor's PAC, REF and NINF. It assumes only that the anchored pairs are a random
   sample of the benchmark; it needs no assumption about the judge. (With an anchor judge it estimates
   that judge's metric, which is the truth only as far as the anchor judge is right.)
2. **Without an anchor**: the **class-corrected** PAC and REF (adjusted classify-and-count, least
   squares over the judge's confusion matrix on the four calibration sets), with a percentile
   bootstrap that resamples the calibration pairs within each set and the benchmark pairs. It assumes
   that the judge behaves on benchmark pairs of each true class as it did on the calibration pairs of
   that class, and that every benchmark pair is one of the four calibration classes (see *truly mixed
   pairs* below). NINF has no calibrated value without an anchor: no calibration set holds answers
   without information.

The raw judge mean is always shown beside the headline; the mapped PAC (the score mapping of
`calibrate fit`, pair by pair) stays in `metrics.json` as a diagnostic only.

Each cell below reads **bias / mean interval width / coverage** of the 95% interval (PAC points),
over {replications} replications of 500 benchmark pairs (so a coverage is known to about
+-{mc_sd:.2f} at 95%). *near-singular* is the share of replications whose confusion matrix has a
smallest singular value below {near_singular} (the headline then carries a warning).
"""

TRUST = """
## When to trust each estimator

Every statement below is read off the tables above.

- **raw** (the judge's own mean): only when the judge's errors happen to cancel on the benchmark's mix
  (the noisy judge, whose errors are symmetric, on the calibration and refusal-heavy mixes: 0.74-0.94).
  Otherwise its narrow interval, which resamples the benchmark alone, almost never covers (0.00-0.18;
  1.00 only where the judge is right on every pair present).
  Never a calibrated number; shown beside the headline for comparison.
- **class-corrected, least squares** (the no-anchor headline): covers 0.92-0.98 in every scenario in
  which the benchmark's pairs all belong to the four calibration classes, whatever the class mix, from
  36 pairs per set up; the done-when scenario (over-calling judge, 40/30/15/15, 36 pairs per set):
  bias -1.0, width 26 points, coverage 0.95, while raw is 18 points high and covers 0.00. The same
  scenario end to end through the CLI (`python -m benchmarks.headline_cli_coverage`: 60 runs of `fit` and
  `score` on freshly generated data through a loopback HTTP judge): the headline covered 56 of 60 runs
  (0.93, binomial sd 0.03), raw 0 of 60. Its width comes
  from both samples: 16-40 points with 36 pairs per set, 5-20 with 1,000 (where the 500 benchmark pairs
  dominate; a full 11,475-pair test split shrinks that part). Near-singular confusion matrices (the
  strict judge, which reads most refusals as opposed answers) still cover, with wide intervals, and the
  headline carries a warning. Weak spots: a true value at the edge of its range (every pair aligned,
  or no refusal at all) with a noisy judge, 0.87-0.91; and truly mixed pairs (next section). It also
  assumes the judge treats each class on the benchmark as on the calibration sets, which no
  simulation can check (answers much longer than the calibration sets', another domain).
- **class-corrected, maximum likelihood**: the same bias and coverage as least squares; intervals equal
  for most judges and up to 10% narrower for the near-singular strict judge, at about ten times the
  cost (EM in every bootstrap replicate). `calibrate score` reports least squares.
- **mapped (isotonic, two-point)**: the isotonic map covers only at the calibration mix (equal shares
  of the four classes); under class shift it is biased by up to 24 points (every pair aligned: -20 to
  -24) and covers 0.00-0.72, except on the refusal-heavy mix, where its bias happens to be small
  (0.53-0.93). The two-point map ignores the refusal classes and under-covers with the strict judge
  (0.06-0.68).
  Kept in `metrics.json` as a diagnostic, never the headline.
- **PPI++ with an anchor** (200 labelled pairs of 500): covers 0.91-0.97 everywhere, truly mixed pairs
  included, with 9-12-point intervals, and assumes nothing about the judge: the estimator to publish
  when labels exist.

## Truly mixed pairs

No calibration set holds a truly mixed pair (true score -1, 0 or +1), so the class correction reads a
mixed pair as whatever blend of the four classes the judge's reading of it resembles. The table shows
the bias this causes when a share of the benchmark (the 40/30/15/15 mix otherwise) is truly mixed,
each synthetic judge reading mixed pairs as {mixed_behaviour} (an assumption: no data measures it).
The bias grows about linearly with the mixed share, by up to 0.3 points per percent of mixed pairs
with this reading, and at 20% mixed coverage falls to 0.72-0.75 for three of the four judges; an
adversarial reading moves it much further (next section). The report states this assumption and
recommends an anchor sample: PPI++ needs no assumption about mixed pairs, and about `(1.96 sd / 5)^2`
labelled pairs (sd: the per-pair spread of the judge's PAC, at most 50, so at most 385 pairs) give a
+-5-point interval; `calibrate score` prints that number for each model.
"""


MIXED_WORST_CASE = """## Truly mixed pairs: the worst case (`class_corrected.mixed_pairs`)

A bound of the form "x% mixed pairs move PAC by at most x * 50 points" is not a worst case: the correction
*amplifies* what it misreads. An over-calling judge (40% of opposed pairs judged aligned) that reads -1
pairs correctly, as opposed, makes the correction count each of them as more than one opposed pair:
at 30% such pairs PAC is 24.7 points low (table below), beyond 0.3 x 50 = 15. What holds instead is the
set of every truth consistent with the data, which `calibrate score` records and prints.

**Derivation.** Let the benchmark hold pairs of the four calibration classes with masses u (u >= 0) and
truly mixed pairs with masses r_j by the class j the judge gives them (r >= 0, any reading), sum(u) +
sum(r) = 1, and at most a share s of pairs mixed: sum(r) <= s. If the judge reads each calibration class
on the benchmark as on the calibration sets (confusion C, C[j, t] = P(judged j | true t)), the judged-class
shares are o = C u + r. The truth is theta = v . u + sum_j r_j mu_j, with v the classes' values and mu_j
between the values of a -1 and a +1 mixed pair (PAC 25..75; REF, REF1, REF2 0: a mixed pair holds no
refusal). So every theta consistent with o lies between

    theta_low(s)  = min  v . u + 25 sum(r)   and   theta_high(s) = max  v . u + 75 sum(r)   (PAC)

over u, r >= 0 with C u + r = o, sum(u) + sum(r) = 1, sum(r) <= s: two linear programs
(`prevalence.mixed_share_range`, scipy's HiGHS). It is a true worst case: no reading of the mixed pairs
and no mix of -1 and +1 among them puts the truth outside, and every value inside is reached by some
reading, so no narrower bound holds. At s = 0 it is the class correction's own value (for a judge that
tells the classes apart); where the judge confuses two classes, their values run over their range (the
identified set). On a sample, o and C are estimated: the fit's L1 residual may exceed its minimum by
1.96 times the summed standard errors of the judged-class shares, and the range is widened on each side
by the bootstrap spread (2.5% / 97.5%) of the least-squares value without the positivity constraint,
which shares clipped at 0 cannot narrow. The record holds the range at 10%, 20% and 30%
(`class_corrected.mixed_pairs`: `[{"share", "ranges": {"PAC": [low, high], "REF": [low, high]}}]`); the
terminal and the report print it beside a class-corrected headline. tests/test_mixed_pairs.py checks it
exactly (every judge, every judged outcome as the reading of all mixed pairs, all -1 or all +1, at each
share), against a brute-force search of feasible splits, and on sampled adversarial data.

The rows below: mixed pairs of one sign at 30% and 60% of the benchmark (40/30/15/15 otherwise), every
mixed pair read alike (the adversary's reading), 36 calibration pairs per set, 500 benchmark pairs; the
class-corrected interval (bias / width / coverage) against the 30% row of the table (width / coverage).
At 30% the range covers whatever the reading; at 60% it does not claim to (the mixed share exceeds the
row's), and the 30% row is the one to widen: the record states the share each range assumes. The ranges
are wide with 36 pairs per set, and they are honest: with an adversary this free, only labels narrow them.
"""


SMALL_SAMPLES = """## Small samples and edges

With few human labels, plain PPI++ can collapse: when the labels happen to show no disagreement with
the predictions (no refusal at all among 20 labels, or every label equal to its prediction), the
rectifier's variance estimate is 0 and the interval is the judge's own spread (REF near 2 or 98: coverage
0.39-0.85 at 20-100 labels). The headline's PPI++ (`ppi++ calibrated`: calibrated predictions,
`ppi.small_sample_estimate`) adds z^2 = 3.84 pseudo-pairs to the rectifier's variance, half at either end
of its half-range (50 points) around its mean (Agresti and Coull's device), and clips the interval to
0..100: (n var + z^2 50^2) / (n + z^2) in place of var. Its point estimate is ppi-python's
`ppi_mean_pointestimate`; its interval becomes ppi-python's `ppi_mean_ci` as labels grow (the pseudo-pairs'
weight falls as z^2 / (n + z^2)). The rows: the over-calling judge, harder on the benchmark, by labels.
"""


VALIDATION = """## Validated headlines: human labels, identification (issue 24)

Every headline says what it rests on (`basis`: human labels, anchor judge, calibration sets) and whether
it is `validated`: only PPI++ on at least {min_labels} random human labels is. The rows below: the
over-calling judge, harder on the benchmark's answers than on the calibration sets (it calls 60% of
opposed pairs aligned there, 40% on the calibration sets), with 20% truly mixed pairs: the class
correction's assumption fails and nothing in the data without labels shows it (PAC coverage 0.83-0.91);
plain PPI++ on the labels covers from 50 labels for PAC, but REF needs about 100 (0.80-0.81 at 20, 0.89
at 50: the labels often show no refusal disagreement at all, and the interval collapses; the headline's
small-sample interval, previous section, covers from 20): `min_labels` stays {min_labels}, below which the
headline carries a warning and is not validated. PPI++ on the calibrated
predictions (E[metric | judged class] from the confusion matrix and the estimated class shares) is
0.1-1.0 points narrower than on the judge's raw values, with the same coverage; the headline uses it and
records the width gained. Judges that confuse two classes (`blind`: reads one-refusal pairs as opposed;
`strict`, in a quarter of its calibration draws) get the identified set: the value withheld, the interval
every split of the confused classes' share (coverage 0.99-1.00, never a narrow interval away from the truth).
"""


SELECTION = """## Cheaper labels: random against stratified selection (`annotate --select`)

`calibrate annotate --select stratified --judge J` draws the study by J's judged class of each pair
(square-root allocation: each class's labels in proportion to the square root of its size, so rare classes
such as refusals get labels), `--select uncertain` draws the pairs J is unsure of (its two orders disagree,
or its score is not a clear -2 / +2) three times as often; every pair's inclusion probability pi is recorded
with the study and exported (`inclusion_probability`). `calibrate score` then weights by them
(`ppi.weighted_estimate`): the mean of the predictions over *all* pairs plus the rectifier's mean weighted by
1 / pi (Horvitz-Thompson for a fixed-size stratified draw; ppi-python's weighted `ppi_mean_ci`), since the
unlabelled pairs are no longer a random sample; the variance is the with-replacement one (no credit for the
strata themselves, so it errs wide). The rows: the over-calling judge, harder on the benchmark, 20% mixed
pairs, the same number of labels drawn either way. Both selections stay valid. Stratifying by the judged
class does *not* narrow the headline here: the calibrated predictions already take out what the judged
class explains, and square-root allocation moves labels away from the large judged-aligned class, where this
judge errs most. It narrows the labels-only (classical) REF interval, whose information sits in the rare
refusal classes. So `--select random` stays the default; stratify when the labels must also measure the
judge on rare classes, and expect no saving on PAC. (`calibrate plan-labels` prints the labels a Neyman
allocation by judged class would need, labels in proportion to each class's share times the spread of the
truth within it; that spread is known only after labelling, so `annotate` cannot draw it and uses
square-root allocation; the planner's stratified figure is the best case, not `--select stratified`'s.)
"""


ANCHOR_JUDGE = """## A biased anchor judge (`--anchor-judge`)

With an anchor judge, PPI++ estimates *that judge's* metric, and the headline says so (`basis: "anchor
judge"`, `validated: false`). The rows: the over-calling judge scored with an anchor judge that errs itself
(the bundled heuristic as measured, and the noisy judge), 40/30/15/15 mix: against the truth, the headline
is as biased as the anchor (coverage falls as anchored pairs grow, the interval narrowing around the
anchor's value); against the anchor's own metric it covers. Only human labels validate a headline.
"""


SECTIONS = {"selection": (SELECTION, selection_table), "anchor judge": (ANCHOR_JUDGE, anchor_judge_table),
            "leaderboard": (leaderboard_study.PROSE, leaderboard_study.section)}


def replace_section(text: str, body: str) -> str:
    """The doc with the section headed as `body` is replaced by `body` (or added before the run time)."""
    heading = body.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        following = text.find("\n## ", start + len(heading))
        end = following + 1 if following >= 0 else text.index("(Study run time")
        return text[:start] + body + text[end:]
    end = text.index("(Study run time")
    return text[:end] + body + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="Rerun only these sections and replace them in --out (the rest stays as it is).")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.only:
        text = args.out.read_text()
        for name in args.only:
            prose, table = SECTIONS[name]
            text = replace_section(text, "\n".join([prose, *table(args.replications, args.bootstrap), "", ""]))
        args.out.write_text(text)
        print(f"wrote {args.out}")
        return
    mixed_behaviour = ", ".join(f"{score:+d}: {p:.0%}" for (score, _), p in sim.MIXED_BEHAVIOUR.items())
    text = [INTRO.format(replications=args.replications, n_boot=args.bootstrap,
                         mapped_reps=max(100, args.replications // 3),
                         mc_sd=(0.95 * 0.05 / args.replications) ** 0.5, near_singular=prevalence.NEAR_SINGULAR),
            "## The judges", "", *[f"- **{judge.name}**: {judge.description}." for judge in sim.JUDGES], "",
            "## PAC: bias / width / coverage", "", *main_table(args.replications, args.bootstrap), "",
            "## REF: bias / width / coverage", "", *ref_table(args.replications, args.bootstrap), "",
            TRUST.format(mixed_behaviour=mixed_behaviour), *mixed_table(args.replications, args.bootstrap), "",
            MIXED_WORST_CASE, *mixed_range_table(args.replications, args.bootstrap), "",
            SMALL_SAMPLES, *small_sample_table(args.replications, args.bootstrap), "",
            VALIDATION.format(min_labels=MIN_LABELS), *validation_table(args.replications, args.bootstrap), "",
            *(line for prose, table in SECTIONS.values()
              for line in (prose, *table(args.replications, args.bootstrap), "")),
            f"(Study run time: {time.perf_counter() - started:.0f} s.)", ""]
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
