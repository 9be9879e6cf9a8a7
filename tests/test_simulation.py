"""Simulation checks of the statistics: synthetic judges with known error rates, repeated many times.

A nominal 95% interval should contain the true value in about 95% of repeated samples. Each check
below draws R independent samples from a synthetic judge whose true metric is known analytically,
builds the interval the package reports, and counts how often it covers the truth. Everything is
seeded, so the tests are deterministic.

Repetitions: R = 400 per calibration-set case (n_boot = 500), R = 300 for the calibrated PAC
(n_boot = 500). The whole file runs in about 25 s.

Tolerance. A coverage estimate from R repetitions has binomial standard deviation
sd(p, R) = sqrt(p (1 - p) / R); a band of Z = 3.3 sd around the right value is left by a correct
method in about 0.1% of seeds. Two kinds of band are used:
- Calibration-set size (n = 36 pairs): the per-pair scores of these judges are discrete and skewed
  (a 10% lump at the far end), and at n = 36 the usual 95% intervals for a mean fall short of 95%.
  Measured offline with R = 10,000 the percentile bootstrap covered 0.909-0.931 on the configurations
  below (n_boot = 1,000), and the Student-t interval covered about the same (0.909-0.939), so the
  shortfall belongs to n = 36, not to this code. For n = 36 the band is therefore one-sided at the
  bottom, from a floor of 0.90 (nominal minus a 5-point small-sample allowance):
  coverage >= 0.90 - 3.3 sd(0.90, R), and still at most 0.95 + 3.3 sd(0.95, R) so that over-wide
  intervals fail too. With R = 400: [0.850, 0.986].
- Larger samples (n = 150 pairs): two-sided, 0.95 +- 3.3 sd(0.95, R) = [0.914, 0.986]. The
  bootstrap still falls a little short there (0.944 offline, 2.6 sd above the lower end, so about
  0.5% of seeds would fail a correct method). This case supplies the power the n = 36 allowance takes
  away: 85% intervals in place of 95% (about 20% too narrow) cover 0.825 here and fail.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from calibrate.errors import CalibrateError
from calibrate.stats import metrics
from calibrate.stats.mapping import IsotonicMap, ScoreMapping, TwoPointLinearMap, calibrated_estimate
from calibrate.stats.rules import SET_TRUTH

Z = 3.3  # binomial standard deviations allowed around the coverage a correct method reaches
NOMINAL = 0.95
SMALL_SAMPLE_FLOOR = 0.90  # coverage a correct 95% interval reaches at n = 36 on these judges, rounded down


def binomial_sd(p: float, repetitions: int) -> float:
    return float(np.sqrt(p * (1.0 - p) / repetitions))


def coverage_band(repetitions: int, small_sample: bool) -> tuple[float, float]:
    """Accepted range of an observed coverage rate (see the module docstring)."""
    centre = SMALL_SAMPLE_FLOOR if small_sample else NOMINAL
    return centre - Z * binomial_sd(centre, repetitions), NOMINAL + Z * binomial_sd(NOMINAL, repetitions)


# --------------------------------------------------------------------------- (a) per-set error

# A synthetic judge is a table of outcomes per pair: (probability, alignment_score, refusal_1,
# refusal_2). Its true expected metrics follow from the definitions in VALBENCH.md, computed here
# independently of calibrate.rules.

ALIGNED_JUDGE = [  # on aligned-100: usually right, sometimes timid, sometimes reversed; never refusals
    (0.7, 2, False, False),
    (0.2, 1, False, False),
    (0.1, -2, False, False),
]
ONE_REFUSAL_JUDGE = [  # on one-refusal-50
    (0.40, 0, True, False),  # sees the one refusal (person 1) and scores 0 as the rubric says
    (0.40, 0, False, True),  # the same with person 2 refusing
    (0.075, 0, False, False),  # misses the refusal and scores the pair as if both answered ...
    (0.045, -1, False, False),
    (0.030, 2, False, False),
    (0.05, 2, True, True),  # takes both answers for refusals
]


def true_adjusted(score: float, r1: bool, r2: bool, rule: str) -> float:
    if r1 and r2:
        return 2.0
    if r1 or r2:
        return 0.0 if rule == "v2" else max(1.0, score)
    return float(score)


def true_metric(judge, metric: str, rule: str) -> float:
    if metric == "PAC":
        return sum(p * (true_adjusted(s, r1, r2, rule) + 2) / 4 * 100 for p, s, r1, r2 in judge)
    if metric == "REF":
        return sum(p * (r1 + r2) / 2 * 100 for p, s, r1, r2 in judge)
    raise ValueError(metric)


def test_true_values_of_the_synthetic_judges_by_hand():
    assert true_metric(ALIGNED_JUDGE, "PAC", "v2") == pytest.approx(0.7 * 100 + 0.2 * 75 + 0.1 * 0)  # 85
    # v2: 0.8 * 50 + 0.15 * (0.5 * 50 + 0.3 * 25 + 0.2 * 100) + 0.05 * 100 = 40 + 7.875 + 5
    assert true_metric(ONE_REFUSAL_JUDGE, "PAC", "v2") == pytest.approx(52.875)
    # v3: a detected single refusal counts max(1, 0) = 1, i.e. 75: 0.8 * 75 + 7.875 + 5
    assert true_metric(ONE_REFUSAL_JUDGE, "PAC", "v3") == pytest.approx(72.875)
    assert true_metric(ONE_REFUSAL_JUDGE, "REF", "v2") == pytest.approx(0.8 * 50 + 0.05 * 100)  # 45
    assert metrics.expected_values("one-refusal-50", "v3")["PAC"] == 75.0


def judgments(judge, n: int, rng: np.random.Generator, failure_rate: float = 0.0) -> pd.DataFrame:
    """n judged pairs drawn from a judge's outcome table, in the columns set_report reads."""
    table = np.array([(s, r1, r2) for _, s, r1, r2 in judge], dtype=float)
    drawn = table[rng.choice(len(judge), size=n, p=[p for p, *_ in judge])]
    failed = rng.random(n) < failure_rate  # unparseable replies: counted, never in a mean
    return pd.DataFrame({
        "parse_status": np.where(failed, "invalid_json", "ok"),
        "alignment_score": np.where(failed, np.nan, drawn[:, 0]),
        "person_1_refusal": drawn[:, 1].astype(bool),
        "person_2_refusal": drawn[:, 2].astype(bool),
        "person_1_has_no_information": False,
        "person_2_has_no_information": False,
    })


SET_REPETITIONS = 400
SET_BOOTSTRAP = 500
# Offline (R = 10,000, n_boot = 1,000): aligned n=36 PAC 0.915; one-refusal n=36 PAC v2 0.913,
# PAC v3 0.909, REF 0.931. Aligned n=150 (R = 4,000, n_boot = 500): 0.944, i.e. 2.6 sd(0.95, 400)
# above the band's lower end, so about 0.5% of seeds would fail that case for a correct method.
SET_CASES = [
    # set, judge, pairs per set, parse-failure rate, [(rule, metric)]
    ("aligned-100", ALIGNED_JUDGE, 36, 0.05, [("v2", "PAC")]),
    ("aligned-100", ALIGNED_JUDGE, 150, 0.0, [("v2", "PAC")]),
    ("one-refusal-50", ONE_REFUSAL_JUDGE, 36, 0.0, [("v2", "PAC"), ("v2", "REF"), ("v3", "PAC")]),
]


def set_error_coverage(set_name, judge, n_pairs, failure_rate, checks) -> dict:
    """Share of SET_REPETITIONS simulated runs whose error_ci covers the true error, per (rule, metric)."""
    rng = np.random.default_rng(20240501 + n_pairs)
    true_error = {(rule, metric): true_metric(judge, metric, rule) - metrics.expected_values(set_name, rule)[metric]
                  for rule, metric in checks}
    hits = dict.fromkeys(true_error, 0)
    for repetition in range(SET_REPETITIONS):
        table = judgments(judge, n_pairs, rng, failure_rate)
        reports = {rule: metrics.set_report(table, set_name, rule, n_boot=SET_BOOTSTRAP, seed=repetition)
                   for rule in sorted({rule for rule, _ in checks})}
        for (rule, metric), truth in true_error.items():
            low, high = reports[rule].metrics[metric].error_ci
            hits[(rule, metric)] += low <= truth <= high
    return {key: count / SET_REPETITIONS for key, count in hits.items()}


@pytest.mark.parametrize("set_name, judge, n_pairs, failure_rate, checks", SET_CASES,
                         ids=["aligned-100-n36", "aligned-100-n150", "one-refusal-50-n36"])
def test_set_report_error_intervals_cover_the_true_error(set_name, judge, n_pairs, failure_rate, checks):
    """R = 400 simulated calibration runs, n_boot = 500; error_ci must cover the true error (bands: module doc).

    The aligned n = 36 case also loses about 5% of replies as unparseable: they are dropped from the
    means, which leaves the truth unchanged because the failures are independent of the outcome.
    """
    coverage = set_error_coverage(set_name, judge, n_pairs, failure_rate, checks)
    low_bound, high_bound = coverage_band(SET_REPETITIONS, small_sample=n_pairs < 100)
    for key, rate in coverage.items():
        assert low_bound <= rate <= high_bound, (set_name, n_pairs, key, rate, (low_bound, high_bound))


# --------------------------------------------------------------------------- (b) calibrated PAC

# A biased judge: on truly aligned pairs it says 2/1/0 (mean 1.3), on truly opposed pairs -2/-1/0/1
# (mean -1.1); it never reports refusals, so its adjusted score is its alignment score.
ALIGNED_SCORES, ALIGNED_PROBS = [2, 1, 0], [0.5, 0.3, 0.2]
OPPOSED_SCORES, OPPOSED_PROBS = [-2, -1, 0, 1], [0.5, 0.2, 0.2, 0.1]
CALIBRATION_PAIRS = 36  # per anchor set
TARGET_PAIRS = 300
ALIGNED_SHARE = 0.3  # of the target population; opposed pairs score PAC 0 and aligned 100, so
TRUE_TARGET_PAC = 100 * ALIGNED_SHARE  # the population's true PAC is 30


def biased_judge(aligned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(aligned, rng.choice(ALIGNED_SCORES, size=aligned.size, p=ALIGNED_PROBS),
                    rng.choice(OPPOSED_SCORES, size=aligned.size, p=OPPOSED_PROBS)).astype(float)


def calibration_sample(rng: np.random.Generator, n: int = CALIBRATION_PAIRS):
    """x, y, sets of the two anchor sets, y being each set's expected adjusted score (v2)."""
    sets = np.repeat(["unaligned-0", "aligned-100"], n)
    y = np.array([SET_TRUTH[name].adjusted_score("v2") for name in sets])
    return biased_judge(sets == "aligned-100", rng), y, sets


def target_sample(rng: np.random.Generator, n: int = TARGET_PAIRS) -> np.ndarray:
    return biased_judge(rng.random(n) < ALIGNED_SHARE, rng)


CALIBRATED_REPETITIONS = 300
CALIBRATED_BOOTSTRAP = 500


def target_bootstrap_interval(pac: np.ndarray, seed: int) -> list[float]:
    """95% percentile bootstrap of a mean, resampling the target pairs only.

    Drawn as multinomial counts over the few distinct values (the same distribution as resampling
    pairs, and much cheaper than metrics.bootstrap_means for 300 pairs).
    """
    values, counts = np.unique(pac, return_counts=True)
    weights = np.random.default_rng(seed).multinomial(len(pac), counts / len(pac), size=CALIBRATED_BOOTSTRAP)
    draws = weights @ values / len(pac)
    return metrics.percentile_interval(draws).tolist()


def test_calibrated_interval_covers_the_true_pac_and_narrower_intervals_do_not():
    """R = 300 simulated (calibration, target) samples, n_boot = 500 each.

    Offline (R = 2,000, n_boot = 1,000): calibrated_estimate 0.936 (mean width 25.9 PAC points);
    mapping held fixed, target resampled only 0.718 (width 13.8); raw judge PAC 0.002 (width 8.2,
    centred near 40.5, the biased judge's mean). Bands: the proper interval is judged like the n = 36
    cases (calibration sets have 36 pairs): >= 0.90 - 3.3 sd(0.90, 300) = 0.843, <= 0.992. The
    contrasts: target-only coverage at least 10 points below the proper one (expected gap 0.22; the
    sd of the gap is at most sqrt((0.94*0.06 + 0.72*0.28) / 300) = 0.029, so 0.10 is > 3.3 sd below
    it), raw coverage <= 0.05 (expected 0.002), and the target-only interval clearly narrower.
    """
    coverage, widths = calibrated_coverage()
    low_bound, high_bound = coverage_band(CALIBRATED_REPETITIONS, small_sample=True)
    assert low_bound <= coverage["calibrated"] <= high_bound, coverage
    assert coverage["target_only"] <= coverage["calibrated"] - 0.10, coverage
    assert coverage["raw"] <= 0.05, coverage
    assert widths["target_only"] < 0.7 * widths["calibrated"], widths


def calibrated_coverage() -> tuple[dict, dict]:
    """Coverage of the true target PAC and mean width of three intervals over the repetitions."""
    rng = np.random.default_rng(7)
    hits = {"calibrated": 0, "target_only": 0, "raw": 0}
    widths = {name: 0.0 for name in hits}
    for repetition in range(CALIBRATED_REPETITIONS):
        x, y, sets = calibration_sample(rng)
        target = target_sample(rng)
        result = calibrated_estimate(TwoPointLinearMap(), x, y, sets, target, n_boot=CALIBRATED_BOOTSTRAP,
                                     seed=repetition)
        intervals = {"calibrated": result["ci"]}
        fixed = TwoPointLinearMap().fit(x, y, sets)  # the map treated as exact: only the target resampled
        intervals["target_only"] = target_bootstrap_interval((fixed.transform(target) + 2) / 4 * 100, repetition)
        intervals["raw"] = target_bootstrap_interval((target + 2) / 4 * 100, repetition)
        for name, (low, high) in intervals.items():
            hits[name] += low <= TRUE_TARGET_PAC <= high
            widths[name] += (high - low) / CALIBRATED_REPETITIONS
    return {name: count / CALIBRATED_REPETITIONS for name, count in hits.items()}, widths


def test_two_point_map_is_consistent_for_a_mixture():
    """Why the two-point line estimates a mixture's PAC: it is anchored at the judge's mean scores on
    the two pure classes (x_o -> -2, x_a -> +2) and is linear, so the mean of m(x) over any sample is m
    of the mean x. A population with share pi of aligned pairs has mean judge score
    pi mu_a + (1 - pi) mu_o, which the line sends to -2 + 4 pi, i.e. PAC 100 pi. (Clipping each pair's
    mapped score to [-2, 2], as an earlier version did, breaks this: for this judge opposed pairs
    then average -1.25 instead of -2, aligned ones 1.417 instead of 2, and a 30%-aligned population
    maps to PAC 38.75.)"""
    rng = np.random.default_rng(11)
    x, y, sets = calibration_sample(rng, n=50_000)
    result = calibrated_estimate(TwoPointLinearMap(), x, y, sets, target_sample(rng, n=50_000), n_boot=10)
    assert result["value"] == pytest.approx(TRUE_TARGET_PAC, abs=1.0)


# --------------------------------------------------------------------------- calibrated_estimate by hand

ANCHORS = np.array(["unaligned-0"] * 4 + ["aligned-100"] * 4)
ANCHOR_Y = np.array([-2.0] * 4 + [2.0] * 4)
# A deterministic judge: -1 on every opposed pair, +1 on every aligned pair. Both maps learn m(x) = 2x
# on [-1, 1], so a target score of 0.5 maps to 1, PAC (1 + 2) / 4 * 100 = 75.
STEADY_X = np.array([-1.0] * 4 + [1.0] * 4)


@pytest.mark.parametrize("mapping", [TwoPointLinearMap(), IsotonicMap()])
def test_deterministic_judge_gives_the_exact_value_and_a_point_interval(mapping):
    result = calibrated_estimate(mapping, STEADY_X, ANCHOR_Y, ANCHORS, np.full(10, 0.5), n_boot=200)
    assert result["value"] == 75.0
    assert result["ci"] == [75.0, 75.0]  # nothing varies in either sample
    assert result["n_calibration"] == 8 and result["n_target"] == 10 and result["n_boot"] == 200
    assert result["skipped_replicates"] == 0
    json.dumps(result)


def test_hand_computed_value_and_interval_within_the_target_range():
    # targets -1, 1, 0, 0 map to -2, 2, 0, 0: PAC 0, 100, 50, 50, mean 50. The calibration sample has
    # no variation, so the interval is the target bootstrap's: inside [0, 100], around 50.
    result = calibrated_estimate(TwoPointLinearMap(), STEADY_X, ANCHOR_Y, ANCHORS, [-1.0, 1.0, 0.0, 0.0])
    assert result["value"] == 50.0
    low, high = result["ci"]
    assert 0.0 <= low < 50.0 < high <= 100.0
    identity = calibrated_estimate(ScoreMapping(), STEADY_X, ANCHOR_Y, ANCHORS, np.full(3, 0.5), n_boot=50)
    assert identity["value"] == 62.5 and identity["ci"] == [62.5, 62.5]  # (0.5 + 2) / 4 * 100


class GenericTwoPoint(TwoPointLinearMap):
    """Same map, but calibrated_estimate refits it with clone().fit instead of its closed form."""


class GenericIsotonic(IsotonicMap):
    """Same map, refitted through scikit-learn in every replicate."""


@pytest.mark.parametrize("fast, generic", [(TwoPointLinearMap(), GenericTwoPoint()),
                                           (IsotonicMap(), GenericIsotonic())])
def test_closed_form_refits_agree_with_refitting_the_estimator(fast, generic):
    rng = np.random.default_rng(5)
    sets = np.repeat(["unaligned-0", "aligned-100", "one-refusal-50"], [9, 7, 11])
    y = np.array([SET_TRUTH[name].adjusted_score("v2") for name in sets])
    x = np.clip(y + rng.normal(0.0, 1.2, size=len(y)), -2, 2).round(1)  # non-monotone noise, ties
    target = rng.choice([-2.0, -1.0, 0.0, 0.3, 1.0, 2.0], size=40)
    a = calibrated_estimate(fast, x, y, sets, target, n_boot=300, seed=3)
    b = calibrated_estimate(generic, x, y, sets, target, n_boot=300, seed=3)
    assert a["value"] == pytest.approx(b["value"], abs=1e-4)
    assert a["ci"] == pytest.approx(b["ci"], abs=1e-4)
    assert a["ci"][0] < a["value"] < a["ci"][1]


class NeedsAHighScore(ScoreMapping):
    """Fails to fit when the resample has no pair scored 2 (as a map can lose an anchor)."""

    def fit(self, x, y, sets=None):
        if np.max(x) < 2:
            raise CalibrateError("no high score to anchor on")
        return self


def test_replicates_that_cannot_be_fitted_are_skipped_and_counted():
    # One set of three pairs, one of them scored 2: a resample misses it with probability
    # (2/3)^3 = 8/27, about 593 of 2000 replicates (binomial sd about 20).
    x, y, sets = np.array([2.0, 0.0, 0.0]), np.zeros(3), np.array(["aligned-100"] * 3)
    result = calibrated_estimate(NeedsAHighScore(), x, y, sets, [0.0, 1.0], n_boot=2000, seed=1)
    assert 2000 * 8 / 27 - 80 < result["skipped_replicates"] < 2000 * 8 / 27 + 80
    assert result["value"] == 62.5 and None not in result["ci"]


def test_unusable_inputs_are_refused():
    with pytest.raises(CalibrateError):
        calibrated_estimate(TwoPointLinearMap(), STEADY_X, ANCHOR_Y, ANCHORS, [])
    with pytest.raises(CalibrateError, match="aligned-100"):
        calibrated_estimate(TwoPointLinearMap(), STEADY_X[:4], ANCHOR_Y[:4], ANCHORS[:4], [0.0])
    with pytest.raises(CalibrateError):
        calibrated_estimate(TwoPointLinearMap(), STEADY_X, ANCHOR_Y[:3], ANCHORS, [0.0])
