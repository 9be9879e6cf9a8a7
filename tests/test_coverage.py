"""Coverage of the benchmark estimators under class shift, pinned on a few scenarios of the study
(calibrate/stats/simulation.py; the whole table is docs/statistics.md).

Bands. A coverage rate from R replications has binomial sd sqrt(p (1 - p) / R); with R = 600 that is
0.0089 at p = 0.95, so the band [0.92, 0.98] (+-3 points) is +-3.4 sd: a correct 95% interval leaves
it in well under 1% of seeds, and one that covers 90% or less fails it (5 points = 5.6 sd below 0.95).
Measured with R = 1,000 and two seeds each (docs/statistics.md has R = 300 for every scenario):
the done-when scenario's headline 0.934-0.939 (raw 0.000); heuristic, refusal-heavy, 150 pairs per set
0.937-0.961 (PAC) and 0.938-0.957 (REF); PPI++ with 200 labels, 20% mixed pairs 0.943-0.947.
"""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.stats import prevalence
from calibrate.stats import simulation as sim

REPLICATIONS = 600
BOOTSTRAP = 300
BAND = (0.92, 0.98)
DONE_WHEN = sim.Scenario(sim.OVERCALLING, sim.MIXES["40/30/15/15"], n_calibration=36, n_benchmark=500)


def test_done_when_scenario_truth_and_raw_by_hand():
    """40% opposed (PAC 0), 30% aligned (100), 15% both refuse (100), 15% one refuses (50 under v2):
    52.5. The judge's raw mean: opposed 0.4 * 100, aligned 100, both 100, one 0.7 * 50 + 0.3 * 100."""
    assert DONE_WHEN.truth()["PAC"] == pytest.approx(52.5)
    raw = 0.4 * 0.4 * 100 + 0.3 * 100 + 0.15 * 100 + 0.15 * (0.7 * 50 + 0.3 * 100)
    probabilities = np.array([DONE_WHEN.judge.probabilities(c) for c in sim.TRUE_CLASSES])
    values = sim.outcome_values("v2")["PAC"]
    assert DONE_WHEN.shares()[:-1] @ probabilities @ values == pytest.approx(raw)  # 70.75
    assert raw == pytest.approx(70.75)


def test_done_when_headline_covers_and_raw_almost_never_does():
    result = sim.simulate(DONE_WHEN, REPLICATIONS, BOOTSTRAP, seed=2026, estimators=("raw", "least_squares"))
    headline, raw = result["least_squares"], result["raw"]
    assert BAND[0] <= headline["PAC"]["coverage"] <= BAND[1], headline
    assert BAND[0] <= headline["REF"]["coverage"] <= BAND[1], headline
    assert abs(headline["PAC"]["bias"]) < 2.0
    assert raw["PAC"]["coverage"] <= 0.02 and raw["PAC"]["bias"] > 15, raw


def test_an_interval_that_ignores_the_calibration_sample_fails_the_band():
    """The same point estimate with the confusion matrix held fixed (only the benchmark resampled), the
    way a naive interval treats a fitted correction as exact: too narrow, so the band rejects it."""
    rng = np.random.default_rng(5)
    sample = sim.draw(DONE_WHEN, REPLICATIONS, rng)
    judged = sim.judged_class_matrix()
    calibration, counts = sample.calibration @ judged, sim.outcome_counts(sample.outcomes) @ judged
    values = sim.class_values("v2")["PAC"]
    resampled = rng.multinomial(np.full((REPLICATIONS, BOOTSTRAP), DONE_WHEN.n_benchmark),
                                (counts / counts.sum(axis=1, keepdims=True))[:, None, :])
    draws = prevalence.estimate_shares("least_squares", calibration[:, None], resampled) @ values
    low, high = np.percentile(draws, [2.5, 97.5], axis=1)
    coverage = np.mean((low <= 52.5) & (52.5 <= high))
    assert coverage < BAND[0] - 0.1, coverage


def test_heuristic_judge_on_a_refusal_heavy_benchmark():
    scenario = sim.Scenario(sim.HEURISTIC, sim.MIXES["refusal-heavy"], n_calibration=150)
    result = sim.simulate(scenario, REPLICATIONS, BOOTSTRAP, seed=11, estimators=("least_squares",))
    for metric in ("PAC", "REF"):
        assert BAND[0] <= result["least_squares"][metric]["coverage"] <= BAND[1], (metric, result)


def test_mixed_pairs_bias_the_class_correction_and_ppi_with_an_anchor_still_covers():
    """20% truly mixed pairs: the class correction reads them as a blend of the four classes and is
    biased (about -5.6 PAC points for this judge); PPI++ with 200 labels assumes nothing and covers."""
    scenario = sim.Scenario(sim.OVERCALLING, sim.MIXES["20% mixed"], n_calibration=36, n_anchor=200)
    result = sim.simulate(scenario, REPLICATIONS, BOOTSTRAP, seed=13, estimators=("least_squares", "ppi++"))
    assert BAND[0] <= result["ppi++"]["PAC"]["coverage"] <= BAND[1], result["ppi++"]
    assert abs(result["ppi++"]["PAC"]["bias"]) < 1.0
    assert result["least_squares"]["PAC"]["bias"] < -3.0, result["least_squares"]


def test_mixed_share_bias_grows_with_the_share():
    """With 1,000 calibration pairs per set (little noise), the strict judge's bias grows about
    linearly with the mixed share (docs/statistics.md): 40% mixed costs about twice what 20% does."""
    biases = []
    for share in (0.0, 0.2, 0.4):
        scenario = sim.Scenario(sim.STRICT, sim.with_mixed_share(sim.MIXES["40/30/15/15"], share), n_calibration=1000)
        biases.append(sim.simulate(scenario, 150, 100, seed=17, estimators=("least_squares",))
                      ["least_squares"]["PAC"]["bias"])
    assert abs(biases[0]) < 1.5 and biases[2] > 2 * biases[1] - 1.5 and biases[1] > 3, biases


# --------------------------------------------------------------------------- the estimators against libraries


def random_problems(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    confusion = rng.dirichlet(np.full(5, 0.7), size=(count, 4)).transpose(0, 2, 1)  # judged x true
    observed = rng.dirichlet(np.ones(5), size=count)
    return confusion, observed


def test_least_squares_shares_match_scipy_nnls():
    from scipy.optimize import nnls

    rng = np.random.default_rng(3)
    confusion, observed = random_problems(rng, 200)
    ours = prevalence.least_squares_shares(confusion, observed)
    for c, o, p in zip(confusion, observed, ours, strict=True):
        weight = 1e4  # the sum-to-one constraint as a heavily weighted row
        shares, _ = nnls(np.vstack([c, weight * np.ones(4)]), np.append(o, weight))
        assert p == pytest.approx(shares / shares.sum(), abs=1e-4)


def test_maximum_likelihood_shares_match_a_generic_optimiser():
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    confusion, observed = random_problems(rng, 30)
    counts = np.round(observed * 400)
    ours = prevalence.maximum_likelihood_shares(confusion, counts)
    for c, n, p in zip(confusion, counts, ours, strict=True):
        def loss(x, c=c, n=n):
            return -np.sum(n * np.log(c @ x + 1e-300))

        best = minimize(loss, np.full(4, 0.25), method="SLSQP", bounds=[(0, 1)] * 4,
                        constraints={"type": "eq", "fun": lambda x: x.sum() - 1}, options={"ftol": 1e-12})
        # at least as likely as the optimiser's answer, up to EM's stopping rule (shares moving < 1e-7 a step)
        assert loss(p) <= best.fun + 0.01


def test_both_estimators_invert_an_exact_confusion_matrix():
    confusion = np.array([[0.6, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.4, 1.0, 0.0, 0.3],
                          [0.0, 0.0, 0.0, 0.7], [0.0, 0.0, 1.0, 0.0]])  # the done-when judge, judged x true
    truth = np.array([0.4, 0.3, 0.15, 0.15])
    observed = confusion @ truth
    assert prevalence.least_squares_shares(confusion, observed) == pytest.approx(truth, abs=1e-8)
    assert prevalence.maximum_likelihood_shares(confusion, observed * 1000) == pytest.approx(truth, abs=1e-5)
    assert prevalence.smallest_singular(confusion) > prevalence.NEAR_SINGULAR
    two_class = np.array([[0.52, 0.48], [0.48, 0.52]])  # sensitivity = specificity = 0.52
    assert prevalence.smallest_singular(two_class) < prevalence.NEAR_SINGULAR


def test_bootstrap_resamples_each_set_within_itself():
    rng = np.random.default_rng(8)
    calibration = np.array([[30, 0, 6, 0, 0], [0, 0, 36, 0, 0], [0, 0, 0, 0, 36], [0, 0, 10, 26, 0]], float)
    judged = np.array([100, 0, 300, 50, 50], float)
    draws = prevalence._multinomial(rng, calibration, 2000, inner_axes=1)
    assert draws.shape == (2000, 4, 5) and (draws.sum(axis=-1) == 36).all()
    assert (draws[:, 1] == calibration[1]).all()  # a set the judge always gets right never varies
    assert draws[:, 0, 2].mean() == pytest.approx(6, abs=0.3) and draws[:, 0, 2].std() > 1
    shares = prevalence.bootstrap_shares("least_squares", calibration, judged, 500, rng)
    assert shares.shape == (500, 4) and np.allclose(shares.sum(axis=-1), 1)
