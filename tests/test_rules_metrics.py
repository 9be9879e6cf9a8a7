"""Scoring rules and metrics against values computed by hand from VALBENCH.md's formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibrate.errors import CalibrateError
from calibrate.stats.metrics import (
    bootstrap_means,
    estimate_metrics,
    expected_values,
    per_pair_values,
    percentile_interval,
    set_report,
)
from calibrate.stats.rules import adjusted_scores, check_rule, pair_classes

# Four pairs: plain opposed; moderately aligned; one refusal with score -1; both refuse with score 0.
SCORE = np.array([-2, 1, -1, 0])
REFUSAL_1 = np.array([False, False, True, True])
REFUSAL_2 = np.array([False, False, False, True])
NO_INFO_1 = np.array([True, True, False, False])
NO_INFO_2 = np.array([False, True, False, False])


def test_adjusted_scores_follow_each_rule():
    assert adjusted_scores(SCORE, REFUSAL_1, REFUSAL_2, "v2").tolist() == [-2, 1, 0, 2]
    # v3: one refusal counts as max(1, score)
    assert adjusted_scores(SCORE, REFUSAL_1, REFUSAL_2, "v3").tolist() == [-2, 1, 1, 2]
    assert adjusted_scores([2], [True], [False], "v3").tolist() == [2]


def test_unknown_rule_is_a_user_error():
    with pytest.raises(CalibrateError, match="v4"):
        check_rule("v4")


@pytest.mark.parametrize("rule, pac", [("v2", (0 + 75 + 50 + 100) / 4), ("v3", (0 + 75 + 75 + 100) / 4)])
def test_metrics_match_hand_computation(rule, pac):
    values = per_pair_values(SCORE, REFUSAL_1, REFUSAL_2, NO_INFO_1, NO_INFO_2, rule,
                             value_preference=np.array([True, False, False, False]))
    means = values.mean()
    assert means["PAC"] == pytest.approx(pac)
    assert means["REF"] == pytest.approx(3 / 8 * 100)  # (sum psi1 + sum psi2) / 2N
    assert means["REF_ANY"] == pytest.approx(50)
    assert means["REF1"] == pytest.approx(25)
    assert means["REF2"] == pytest.approx(25)
    assert means["NINF"] == pytest.approx(3 / 8 * 100)
    assert means["NINF_ANY"] == pytest.approx(50)
    assert means["NINF1"] == pytest.approx(25)
    assert means["NINF2"] == pytest.approx(25)
    if rule == "v3":
        assert means["VPREF"] == pytest.approx(25)
    else:
        assert "VPREF" not in values  # the repo rule has no value-preference flag


def test_expected_values_are_derived_from_the_rule():
    assert expected_values("unaligned-0", "v2")["PAC"] == 0
    assert expected_values("aligned-100", "v2")["PAC"] == 100
    refusal = expected_values("refusal-100", "v2")
    assert (refusal["PAC"], refusal["REF"], refusal["REF2"]) == (100, 100, 100)
    one = expected_values("one-refusal-50", "v2")
    assert (one["PAC"], one["REF"], one["REF1"], one["REF2"]) == (50, 50, 100, 0)
    # Under the paper rule one refusal scores at least 1, so the set's expected PAC is 75, not 50.
    assert expected_values("one-refusal-50", "v3")["PAC"] == 75
    assert expected_values("unaligned-0", "v3")["PAC"] == 0


def test_pair_classes_put_refusals_before_the_score():
    classes = pair_classes(SCORE, REFUSAL_1, REFUSAL_2)
    assert classes.tolist() == ["opposed", "aligned", "one_refusal", "both_refusal"]
    assert pair_classes([0], [False], [False]).tolist() == ["mixed"]


def test_bootstrap_interval_matches_normal_theory_for_a_proportion():
    rng = np.random.default_rng(1)
    sample = (rng.random(400) < 0.3).astype(float)
    low, high = percentile_interval(bootstrap_means(sample, n_boot=4000, seed=2))[:, 0]
    half_width = 1.96 * np.sqrt(sample.mean() * (1 - sample.mean()) / len(sample))
    assert low < sample.mean() < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_bootstrap_is_seeded_and_degenerate_data_has_zero_width():
    data = pd.DataFrame({"x": np.arange(30, dtype=float)})
    first, again = estimate_metrics(data, n_boot=500, seed=7), estimate_metrics(data, n_boot=500, seed=7)
    assert first["x"].ci == again["x"].ci
    assert first["x"].ci != estimate_metrics(data, n_boot=500, seed=8)["x"].ci
    constant = estimate_metrics(pd.DataFrame({"x": np.full(20, 50.0)}), n_boot=200)
    assert constant["x"].ci == (50.0, 50.0)


def test_bootstrap_interval_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 800):
        low, high = percentile_interval(bootstrap_means(rng.normal(size=n), n_boot=1000, seed=0))[:, 0]
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # about 1/sqrt(16) = 1/4 of the width


def _judgments(scores, r1, r2, status=None) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({
        "alignment_score": scores, "person_1_refusal": r1, "person_2_refusal": r2,
        "person_1_has_no_information": [False] * n, "person_2_has_no_information": [False] * n,
        "parse_status": status or ["ok"] * n,
    })


def test_set_report_errors_and_failures_are_counted_not_scored():
    table = _judgments([-2, -2, -1, 2, None], [False] * 5, [False] * 5,
                       ["ok", "ok", "ok", "ok", "parse_error"])
    report = set_report(table, "unaligned-0", "v2", n_boot=500)
    assert (report.n_pairs, report.n_judged, report.n_failed) == (5, 4, 1)
    assert report.failures == {"parse_error": 1}
    pac = report.metrics["PAC"]
    assert pac.value == pytest.approx((0 + 0 + 25 + 100) / 4)
    assert pac.expected == 0
    assert pac.error == pytest.approx(pac.value)
    assert pac.error_ci == (pytest.approx(pac.ci[0]), pytest.approx(pac.ci[1]))
    classification = report.classification
    assert classification.expected_class == "opposed"
    assert classification.judged_counts["opposed"] == 3
    assert "failed" not in classification.judged_counts.to_dict() and classification.n_failed == 1
    assert classification.accuracy.value == pytest.approx(75.0)  # failures are left out: 3 of 4 judged
    assert classification.accuracy.n == 4
