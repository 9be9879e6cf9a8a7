"""The count-based agreement statistics the bootstrap replicates use, against the libraries.

A replicate of kappa, alpha or Fleiss' kappa is computed from resampled sums of per-item counts, not
by the library; these tests hold the count formulas equal to scikit-learn, `krippendorff` and
statsmodels on observed data (to 1e-9), and the count-based intervals equal in distribution to the
library-per-replicate bootstrap they replace.
"""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from calibrate.stats.agreement import (
    _alpha_inputs,
    alpha_from_coincidences,
    alpha_interval,
    category_counts,
    fleiss_from_counts,
    fleiss_interval,
    fleiss_kappa,
    item_coincidences,
    kappa_from_confusion,
    kappa_interval,
    krippendorff_alpha,
    percentile_bounds,
)

SCALE = [-2, -1, 0, 1, 2]


def noisy_ratings(seed: int, n_items: int, n_raters: int, labels, missing: float = 0.2) -> pd.DataFrame:
    """Raters who agree with a latent label most of the time; some cells missing."""
    rng = np.random.default_rng(seed)
    latent = rng.integers(0, len(labels), size=n_items)
    noise = rng.integers(-1, 2, size=(n_items, n_raters)) * (rng.random((n_items, n_raters)) < 0.4)
    positions = np.clip(latent[:, None] + noise, 0, len(labels) - 1)
    values = np.asarray(labels, dtype=object)[positions].astype(float if np.isreal(labels[0]) else object)
    frame = pd.DataFrame(values, columns=[f"r{j}" for j in range(n_raters)])
    return frame.mask(rng.random(frame.shape) < missing)


@pytest.mark.parametrize("labels", [SCALE, [1.0, 1.5, 3.0, 7.0], [0.0, 1.0]])
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
@pytest.mark.parametrize("seed", range(4))
def test_alpha_from_coincidences_equals_the_krippendorff_package(labels, level, seed):
    ratings = noisy_ratings(seed, n_items=60, n_raters=2 + seed, labels=labels)
    counts, values = _alpha_inputs(ratings, level, labels)
    ours = alpha_from_coincidences(item_coincidences(counts).sum(axis=0), level, values)
    library = krippendorff.alpha(reliability_data=ratings.to_numpy(float).T, value_domain=np.asarray(labels, float),
                                 level_of_measurement=level)
    assert ours == pytest.approx(library, abs=1e-9)
    assert krippendorff_alpha(ratings, level, labels) == pytest.approx(ours, abs=1e-9)


def test_alpha_with_an_unused_label_and_text_labels_matches_the_package():
    ratings = noisy_ratings(7, n_items=40, n_raters=3, labels=[-2, -1, 1, 2])  # 0 never used
    counts, values = _alpha_inputs(ratings, "ordinal", SCALE)
    library = krippendorff.alpha(reliability_data=ratings.to_numpy(float).T, value_domain=np.asarray(SCALE, float),
                                 level_of_measurement="ordinal")
    assert alpha_from_coincidences(item_coincidences(counts).sum(axis=0), "ordinal", values) == pytest.approx(
        library, abs=1e-9)
    text = noisy_ratings(8, n_items=40, n_raters=3, labels=["low", "mid", "high"])
    counts, values = _alpha_inputs(text, "nominal", ["low", "mid", "high"])
    assert alpha_from_coincidences(item_coincidences(counts).sum(axis=0), "nominal", values) == pytest.approx(
        krippendorff_alpha(text, "nominal", ["low", "mid", "high"]), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_from_counts_equals_statsmodels(seed):
    ratings = noisy_ratings(seed, n_items=50, n_raters=3 + seed, labels=SCALE, missing=0.05)
    counts = category_counts(ratings)
    complete = ratings.dropna().to_numpy()
    table, _ = aggregate_raters(complete)
    assert np.array_equal(counts, table)
    ours = fleiss_from_counts(counts.sum(axis=0), (counts ** 2).sum(), len(counts), ratings.shape[1])
    assert ours == pytest.approx(statsmodels_fleiss_kappa(table, method="fleiss"), abs=1e-9)
    assert ours == pytest.approx(fleiss_kappa(ratings)[0], abs=1e-9)


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@pytest.mark.parametrize("seed", range(4))
def test_kappa_from_confusion_equals_sklearn(weights, seed):
    ratings = noisy_ratings(seed, n_items=80, n_raters=2, labels=SCALE, missing=0.0).astype(int)
    a, b = (ratings[c].to_numpy() + 2 for c in ratings.columns)
    confusion = np.zeros((5, 5))
    np.add.at(confusion, (a, b), 1.0)
    assert kappa_from_confusion(confusion, weights) == pytest.approx(
        cohen_kappa_score(a, b, labels=range(5), weights=weights), abs=1e-9)


def bootstrap_interval(ratings: pd.DataFrame, statistic, n_boot: int, seed: int) -> tuple[float | None, float | None]:
    """The reference: resample items (rows) one table at a time and call the library statistic on each."""
    rng = np.random.default_rng(seed)
    draws = [statistic(ratings.iloc[rng.integers(0, len(ratings), size=len(ratings))]) for _ in range(n_boot)]
    return percentile_bounds(np.array([np.nan if d is None else d for d in draws], dtype=float), 0.95)


def test_count_intervals_match_the_library_bootstrap_in_distribution():
    """Same resampling of items, other random draws: bounds agree to Monte Carlo error."""
    ratings = noisy_ratings(11, n_items=120, n_raters=4, labels=SCALE, missing=0.1)
    n_boot = 1500
    library_alpha = bootstrap_interval(ratings, lambda s: krippendorff_alpha(s, "ordinal", SCALE), n_boot, seed=1)
    assert alpha_interval(ratings, "ordinal", SCALE, n_boot, seed=2) == pytest.approx(library_alpha, abs=0.015)
    library_fleiss = bootstrap_interval(ratings.dropna(), lambda s: fleiss_kappa(s)[0], n_boot, seed=1)
    assert fleiss_interval(ratings, n_boot, seed=2) == pytest.approx(library_fleiss, abs=0.015)
    pair = ratings[["r0", "r1"]]
    library_kappa = bootstrap_interval(
        pair.dropna(), lambda s: cohen_kappa_score(s["r0"], s["r1"], labels=SCALE, weights="quadratic"), n_boot, seed=1)
    assert kappa_interval(pair, SCALE, "quadratic", n_boot, seed=2) == pytest.approx(library_kappa, abs=0.015)


def test_count_intervals_are_seeded_and_none_when_undefined():
    ratings = noisy_ratings(3, n_items=60, n_raters=3, labels=SCALE)
    assert alpha_interval(ratings, "ordinal", SCALE, 300, 5) == alpha_interval(ratings, "ordinal", SCALE, 300, 5)
    assert alpha_interval(ratings, "ordinal", SCALE, 300, 5) != alpha_interval(ratings, "ordinal", SCALE, 300, 6)
    constant = pd.DataFrame({"a": [1.0] * 10, "b": [1.0] * 10})  # no variation: alpha and kappa are 0/0
    assert alpha_interval(constant, "ordinal", SCALE, 200, 0) == (None, None)
    assert fleiss_interval(constant, 200, 0) == (None, None)
    assert kappa_interval(constant, SCALE, "quadratic", 200, 0) == (None, None)
    lonely = pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, 2.0]})  # no item rated twice
    assert alpha_interval(lonely, "ordinal", SCALE, 200, 0) == (None, None)
