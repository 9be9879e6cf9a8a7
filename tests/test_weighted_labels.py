"""Labels drawn with unequal, known inclusion probabilities (`annotate --select`): the weighted PPI++
(ppi.weighted_estimate) against ppi_py and a direct Horvitz-Thompson computation, and its coverage."""

from __future__ import annotations

import numpy as np
import pytest

from calibrate.errors import CalibrateError
from calibrate.stats.ppi import mean_estimate, weighted_estimate


def _stratified(seed: int, sizes=(600, 300, 100), labels=(20, 30, 50)):
    """A population in three strata (the judge's classes), its predictions, and a fixed-size stratified draw."""
    rng = np.random.default_rng(seed)
    stratum = np.repeat(np.arange(len(sizes)), sizes)
    pred = np.array([0.0, 100.0, 50.0])[stratum]
    truth = np.where(rng.random(len(stratum)) < np.array([0.1, 0.7, 0.5])[stratum], 100.0 - pred, pred)
    truth[stratum == 2] = rng.choice([0.0, 100.0], size=sizes[2])
    chosen = np.concatenate([rng.choice(np.flatnonzero(stratum == h), size=k, replace=False)
                             for h, k in enumerate(labels)])
    probability = (np.array(labels) / np.array(sizes))[stratum]
    return truth, pred, probability, chosen


def test_the_estimate_is_horvitz_thompson_for_a_stratified_draw():
    truth, pred, probability, chosen = _stratified(1)
    for lam in (0.0, 0.4, 1.0):
        result = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred, lam=lam)
        horvitz_thompson = sum((truth[i] - lam * pred[i]) / probability[i] for i in chosen) / len(truth)
        assert result["estimate"] == pytest.approx(lam * pred.mean() + horvitz_thompson, abs=1e-9)
        # and the stratified mean: each stratum's labelled mean, weighted by its share of the pairs
        strata = np.unique(probability)
        by_stratum = sum((probability == p).mean() * (truth - lam * pred)[chosen][probability[chosen] == p].mean()
                         for p in strata)
        assert result["estimate"] == pytest.approx(lam * pred.mean() + by_stratum, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_matches_ppi_py_weighted_and_unweighted(seed):
    ppi_py = pytest.importorskip("ppi_py")
    truth, pred, probability, chosen = _stratified(seed)
    pred = pred + np.random.default_rng(seed).normal(0, 5, len(pred))  # no ties: lam strictly inside (0, 1)
    ours = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred, alpha=0.1)
    weights = 1 / probability[chosen]
    low, high = ppi_py.ppi_mean_ci(truth[chosen], pred[chosen], pred, alpha=0.1, w=weights)
    estimate = ppi_py.ppi_mean_pointestimate(truth[chosen], pred[chosen], pred, w=weights)
    assert (ours["estimate"], ours["ci_low"], ours["ci_high"]) == pytest.approx(
        (float(np.squeeze(estimate)), float(np.squeeze(low)), float(np.squeeze(high))), abs=1e-8)
    equal = weighted_estimate(truth[chosen], pred[chosen], np.full(len(chosen), 0.1), pred, lam=None)
    low, high = ppi_py.ppi_mean_ci(truth[chosen], pred[chosen], pred, alpha=0.05)
    assert (equal["ci_low"], equal["ci_high"]) == pytest.approx((float(np.squeeze(low)), float(np.squeeze(high))))
    # with equal probabilities it is mean_estimate's PPI++ with every pair's prediction as the unlabelled ones
    assert equal["estimate"] == pytest.approx(mean_estimate(truth[chosen], pred[chosen], pred)["estimate"])


def test_unweighted_estimates_are_biased_by_the_selection_and_the_weighted_one_is_not():
    """Oversampling a stratum moves the plain labelled mean; the weights put it back (2,000 draws)."""
    plain, weighted, covered = [], [], 0
    for seed in range(400):
        truth, pred, probability, chosen = _stratified(seed)
        result = weighted_estimate(truth[chosen], pred[chosen], probability[chosen], pred)
        weighted.append(result["estimate"] - truth.mean())
        covered += result["ci_low"] <= truth.mean() <= result["ci_high"]
        plain.append(mean_estimate(truth[chosen], pred[chosen], np.delete(pred, chosen))["estimate"] - truth.mean())
    assert abs(np.mean(weighted)) < 1.5 < abs(np.mean(plain))
    assert 0.91 <= covered / 400 <= 0.99


def test_bad_probabilities_are_refused_naming_the_parameter():
    with pytest.raises(CalibrateError, match="inclusion_probability") as caught:
        weighted_estimate([1, 0, 1], [1, 1, 0], [0.5, 0.0, 0.5], [1, 1, 0, 0])
    assert caught.value.params == ("inclusion_probability",)
    with pytest.raises(CalibrateError, match="labeled"):
        weighted_estimate([1], [1], [0.5], [1, 0])
