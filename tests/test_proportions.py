"""Intervals of proportions at the size of a calibration set (36 pairs) cover: class accuracy gets a
Wilson interval, checked here by simulation through the function a fit uses; a percentile bootstrap
of the same data, which it replaced, fails the same check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibrate.stats.metrics import classification, estimate_metrics, proportion_estimate

N_PAIRS = 36
REPLICATIONS = 1000


def judged_set(correct: np.ndarray) -> pd.DataFrame:
    """unaligned-0 judgments: a correct pair scored -2 (opposed), a wrong one 2 (aligned)."""
    n = len(correct)
    return pd.DataFrame({"parse_status": ["ok"] * n, "alignment_score": np.where(correct, -2, 2),
                         "person_1_refusal": [False] * n, "person_2_refusal": [False] * n})


@pytest.mark.parametrize("accuracy", [0.7, 0.9])
def test_class_accuracy_interval_covers_at_n_36(accuracy):
    rng = np.random.default_rng(int(accuracy * 100))
    covered = 0
    for _ in range(REPLICATIONS):
        low, high = classification(judged_set(rng.random(N_PAIRS) < accuracy), "unaligned-0")["accuracy"]["ci"]
        covered += low <= 100 * accuracy <= high
    assert abs(covered / REPLICATIONS - 0.95) <= 0.03


def test_the_percentile_bootstrap_it_replaced_under_covers():
    """The check above has power: the former interval (percentile bootstrap of the 0/100 values) covers
    a 90% accuracy at n=36 in well under 92% of replications."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(REPLICATIONS):
        values = pd.DataFrame({"accuracy": (rng.random(N_PAIRS) < 0.9) * 100.0})
        low, high = estimate_metrics(values, n_boot=400, seed=i)["accuracy"].ci
        covered += low <= 90.0 <= high
    assert covered / REPLICATIONS < 0.92


def test_proportion_estimate_is_wilson_from_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    estimate = proportion_estimate(36, 36)
    low, high = proportion_confint(36, 36, alpha=0.05, method="wilson")
    assert estimate["value"] == 100.0 and estimate["ci"] == [pytest.approx(100 * low), pytest.approx(100 * high)]
    assert estimate["ci"][0] < 95  # all correct at n=36 is not proof of 100%: the bootstrap said [100, 100]
    assert proportion_estimate(0, 0) == {"value": None, "ci": [None, None], "n": 0, "method": estimate["method"]}
