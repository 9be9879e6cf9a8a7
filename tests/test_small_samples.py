"""Small samples and edges (issue 24, item 7): the headline's PPI++ interval holds at 20-50 labels and with
REF near 0 or 100, where plain PPI++ collapses whenever the labels happen to show no disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.stats import simulation as sim
from calibrate.stats.ppi import mean_estimate, small_sample_estimate


def test_the_estimate_is_ppi_py_s_and_the_interval_becomes_its_with_many_labels():
    ppi_py = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(0)
    truth = rng.choice([0.0, 50.0, 100.0], size=3000, p=[0.6, 0.1, 0.3])
    pred = np.where(rng.random(3000) < 0.8, truth, rng.choice([0.0, 100.0], size=3000))
    unlabeled = rng.choice([0.0, 50.0, 100.0], size=20000, p=[0.6, 0.1, 0.3])
    found = small_sample_estimate(truth, pred, unlabeled)
    assert found["estimate"] == pytest.approx(float(ppi_py.ppi_mean_pointestimate(truth, pred, unlabeled)[0]),
                                              abs=1e-6)
    low, high = (float(x[0]) for x in ppi_py.ppi_mean_ci(truth, pred, unlabeled, alpha=0.05))
    assert found["ci_low"] == pytest.approx(low, abs=0.05 * (high - low))
    assert found["ci_high"] == pytest.approx(high, abs=0.05 * (high - low))


def test_labels_without_disagreement_leave_an_interval_and_it_stays_within_the_scale():
    truth = np.zeros(20)
    unlabeled = np.r_[np.zeros(480), np.full(20, 100.0)]
    plain = mean_estimate(truth, truth, unlabeled, "ppi++")
    found = small_sample_estimate(truth, truth, unlabeled)
    assert plain["ci_high"] - plain["ci_low"] < 4  # the judge's own spread only: the collapse
    assert found["ci_low"] == 0.0 and found["ci_high"] > plain["ci_high"] + 5
    assert found["estimate"] == pytest.approx(plain["estimate"])


EDGES = {"REF 2": {"opposed": 0.48, "aligned": 0.48, "one_refusal": 0.04},
         "REF 98": {"both_refusal": 0.96, "one_refusal": 0.04}}


@pytest.mark.parametrize("n_labels", (20, 50))
@pytest.mark.parametrize("mix", [*EDGES, "harder, 20% mixed"])
def test_the_headline_interval_covers_with_few_labels_and_near_the_edges(mix, n_labels):
    """100 replications of the over-calling judge, harder on the benchmark: the headline's PPI++ (calibrated,
    small-sample interval) covers PAC and REF at least 0.86 (the study: 0.93-1.00 over 200 replications;
    100 here, binomial sd 0.025) where plain PPI++ covers REF less."""
    shares = EDGES.get(mix) or sim.with_mixed_share(sim.MIXES["40/30/15/15"], 0.2)
    scenario = sim.Scenario(sim.OVERCALLING, shares, n_anchor=n_labels, benchmark_judge=sim.HARDER)
    result = sim.simulate(scenario, 100, 20, seed=n_labels, estimators=("ppi++", "ppi++ calibrated"))
    for metric in sim.METRICS:
        assert result["ppi++ calibrated"][metric]["coverage"] >= 0.86, (metric, result["ppi++ calibrated"][metric])
    assert result["ppi++"]["REF"]["coverage"] < result["ppi++ calibrated"]["REF"]["coverage"]
    assert result["ppi++ calibrated"]["REF"]["width"] <= 25
