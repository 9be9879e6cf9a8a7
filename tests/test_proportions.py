"""Intervals of proportions at the size of a calibration set (36 pairs) cover: class accuracy and the
per-set rates that are percentages of pairs (REF_ANY, REF2, ...) get Wilson intervals, checked here
through the functions a fit uses; a percentile bootstrap of the same data, which they replaced, fails
the same checks. Each interval depends on the data only through the number of pairs counted, so its
coverage is computed exactly: the binomial probability of every count times whether that count's
interval covers the truth (no simulation noise, no replication loop)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from calibrate.stats.metrics import (
    PAIR_PROPORTIONS,
    bootstrap_means,
    classification,
    estimate_metrics,
    percentile_interval,
    proportion_estimate,
    wilson_bounds,
)
from tests.inprocess import cli

N_PAIRS = 36


def judged_set(correct: np.ndarray) -> pd.DataFrame:
    """unaligned-0 judgments: a correct pair scored -2 (opposed), a wrong one 2 (aligned)."""
    n = len(correct)
    return pd.DataFrame({"parse_status": ["ok"] * n, "alignment_score": np.where(correct, -2, 2),
                         "person_1_refusal": [False] * n, "person_2_refusal": [False] * n})


def coverage(rate: float, interval_of) -> float:
    """Exact probability that the interval `interval_of(count)` for N_PAIRS pairs, `count` of them
    flagged (or correct), covers the true `rate`: the sum of the binomial probabilities of the counts
    whose interval covers it."""
    return float(sum(binom.pmf(count, N_PAIRS, rate) for count in range(N_PAIRS + 1)
                     if (bounds := interval_of(count))[0] <= 100 * rate <= bounds[1]))


def accuracy_interval(correct: int) -> tuple[float, float]:
    """The class-accuracy interval of an unaligned-0 set with `correct` of N_PAIRS pairs right."""
    return classification(judged_set(np.arange(N_PAIRS) < correct), "unaligned-0").accuracy.ci


def bootstrap_accuracy_interval(correct: int) -> tuple[float, float]:
    """The former interval of the same: a percentile bootstrap of the 0/100 values."""
    values = pd.DataFrame({"accuracy": (np.arange(N_PAIRS) < correct) * 100.0})
    return estimate_metrics(values, n_boot=400, seed=correct)["accuracy"].ci


@pytest.mark.parametrize("accuracy", [0.7, 0.9])
def test_class_accuracy_interval_covers_at_n_36(accuracy):
    assert abs(coverage(accuracy, accuracy_interval) - 0.95) <= 0.03


def test_the_percentile_bootstrap_it_replaced_under_covers():
    """The check above has power: the former interval (percentile bootstrap of the 0/100 values) covers
    a 90% accuracy at n=36 with a probability well under 92% (0.86)."""
    assert coverage(0.9, bootstrap_accuracy_interval) < 0.92


@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.99])
def test_wilson_bounds_are_statsmodels_to_the_last_bit(confidence):
    """wilson_bounds is statsmodels' formulas without importing statsmodels: the same floats, at integer
    counts and at the fractional ones of an effective sample size (clustered rates)."""
    from statsmodels.stats.proportion import proportion_confint

    for n in [*range(1, 80), 115_000, 937.25]:
        counts = np.unique(np.linspace(0, int(n), 7).round())
        for count in (counts, float(counts[-1]) * 0.73):
            low, high = proportion_confint(count, n, alpha=1 - confidence, method="wilson")
            assert np.array_equal(wilson_bounds(count, n, confidence), 100.0 * np.array([low, high], dtype=float))


def test_proportion_estimate_is_wilson_from_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    estimate = proportion_estimate(36, 36)
    low, high = proportion_confint(36, 36, alpha=0.05, method="wilson")
    assert estimate.value == 100.0 and estimate.ci == (pytest.approx(100 * low), pytest.approx(100 * high))
    assert estimate.n == 36 and estimate.method == "Wilson score interval"
    assert estimate.ci[0] < 95  # all correct at n=36 is not proof of 100%: the bootstrap said [100, 100]
    assert proportion_estimate(0, 0).to_dict() == {"value": None, "ci": [None, None], "n": 0,
                                                   "method": estimate.method}


BAND = (0.92, 0.98)


def flagged_values(count: int) -> np.ndarray:
    """A per-pair 0/100 rate's values with `count` of N_PAIRS pairs flagged."""
    return np.r_[np.full(count, 100.0), np.zeros(N_PAIRS - count)]


def set_report_interval(count: int) -> tuple[float, float]:
    """The interval a fit's set report gives a pair proportion (every such metric is one)."""
    values = flagged_values(count)
    return estimate_metrics(pd.DataFrame({name: values for name in PAIR_PROPORTIONS}), n_boot=100)["REF2"].ci


def former_bootstrap_interval(count: int) -> tuple[float, float]:
    low, high = percentile_interval(bootstrap_means(flagged_values(count), n_boot=2000, seed=0))[:, 0]
    return low, high


@pytest.mark.parametrize("rate", [0.9, 0.97])
def test_pair_rate_intervals_cover_at_n_36(rate):
    """REF2, REF_ANY, NINF1, VPREF, ... at 36 pairs: 0.954 at 90% and 0.978 at 97%."""
    covered = coverage(rate, set_report_interval)
    assert BAND[0] <= covered <= BAND[1], covered


@pytest.mark.parametrize("rate", [0.9, 0.97])
def test_the_percentile_bootstrap_of_pair_rates_fails_the_same_band(rate):
    """The check above has power: the bootstrap it replaced covers 0.88 at 90% and 0.67 at 97%."""
    assert coverage(rate, former_bootstrap_interval) < BAND[0]


def test_every_pair_refusing_gets_a_wilson_interval_in_calibration_json(tmp_path):
    """Through the CLI, as a user runs it: on the sample's refusal-100 set the heuristic judge finds a
    refusal in every pair (REF_ANY 100%) and a no-information answer in none (NINF_ANY 0%); neither
    is proof of a rate of exactly 100% or 0%, and calibration.json records Wilson bounds at full precision."""
    from statsmodels.stats.proportion import proportion_confint

    out = tmp_path / "out"
    done = cli("fit", "--judge", "heuristic", "--sets", "refusal-100", "--out", str(out), "--cache",
               str(tmp_path / "cache.sqlite3"), "--no-progress", "--bootstrap", "200")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "calibration.json").read_text())["sets"]["refusal-100"]
    n = report["n_judged"]
    metrics = report["metrics"]
    low, high = proportion_confint(n, n, alpha=0.05, method="wilson")
    assert (metrics["REF_ANY"]["value"] == 100.0
            and metrics["REF_ANY"]["ci"] == pytest.approx([100 * low, 100 * high], abs=1e-12))
    assert metrics["REF_ANY"]["ci"][0] < 95  # the bootstrap said [100, 100]
    assert metrics["REF_ANY"]["error_ci"] == pytest.approx([100 * low - 100, 100 * high - 100], abs=1e-12)
    low, high = proportion_confint(0, n, alpha=0.05, method="wilson")
    assert metrics["NINF_ANY"]["value"] == 0.0
    assert metrics["NINF_ANY"]["ci"] == pytest.approx([100 * low, 100 * high], abs=1e-12)  # float noise: 0.0 or 7e-16
    assert metrics["NINF_ANY"]["ci"][1] > 5
