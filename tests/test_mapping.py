"""Score mappings: estimator behaviour, JSON round trip, and validation that never grades on training data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from calibrate.errors import CalibrateError
from calibrate.stats.mapping import IsotonicMap, ScoreMapping, TwoPointLinearMap, cross_validate, mapping_from_dict

SETS = np.array(["unaligned-0"] * 4 + ["aligned-100"] * 4 + ["one-refusal-50"] * 4)
TARGET = np.array([-2.0] * 4 + [2.0] * 4 + [0.0] * 4)
# A judge that is too timid: opposed pairs get -1, aligned pairs +1, one-refusal pairs 0.
TIMID = np.array([-1, -1, -1, -2, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)


def test_two_point_linear_map_sends_anchor_means_to_their_targets():
    mapping = TwoPointLinearMap().fit(TIMID, TARGET, SETS)
    assert mapping.x_low_ == pytest.approx(-1.25) and mapping.x_high_ == pytest.approx(0.75)
    assert mapping.transform([mapping.x_low_, mapping.x_high_]).tolist() == pytest.approx([-2.0, 2.0])
    assert mapping.transform([-0.25]).tolist() == pytest.approx([0.0])  # midpoint maps to the middle
    assert mapping.transform([2.0]).tolist() == [4.5]  # not clipped: the map stays linear, means stay unbiased


def test_two_point_linear_map_needs_both_anchor_sets():
    with pytest.raises(CalibrateError, match="aligned-100"):
        TwoPointLinearMap().fit(TIMID[:4], TARGET[:4], SETS[:4])


def test_degenerate_judge_maps_to_the_middle():
    mapping = TwoPointLinearMap().fit(np.zeros(12), TARGET, SETS)
    assert mapping.degenerate_
    assert mapping.transform([-2, 0, 2]).tolist() == [0.0, 0.0, 0.0]


def test_isotonic_map_is_monotone_and_equals_scikit_learn():
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, size=200).astype(float)
    y = np.clip(x + rng.normal(0, 1.5, size=200), -2, 2)
    mapping = IsotonicMap().fit(x, y)
    grid = np.linspace(-3, 3, 61)
    reference = IsotonicRegression(y_min=-2, y_max=2, out_of_bounds="clip").fit(x, y)
    assert mapping.transform(grid) == pytest.approx(reference.predict(grid))
    assert np.all(np.diff(mapping.transform(grid)) >= 0)


@pytest.mark.parametrize("mapping", [ScoreMapping(), TwoPointLinearMap(), IsotonicMap()])
def test_fit_transform_round_trips_through_json(mapping):
    fitted = mapping.fit(TIMID, TARGET, SETS)
    rebuilt = mapping_from_dict(json.loads(json.dumps(fitted.to_dict())))
    grid = np.linspace(-2, 2, 17)
    assert type(rebuilt) is type(fitted)
    assert rebuilt.transform(grid).tolist() == fitted.transform(grid).tolist()
    assert rebuilt.get_params() == fitted.get_params()


def test_unknown_mapping_kind_is_refused():
    with pytest.raises(CalibrateError):
        mapping_from_dict({"kind": "spline"})


def test_cross_validation_grades_each_pair_on_a_mapping_fitted_without_it():
    # Pairs at raw score 0 belong to two sets with different targets; a flexible map fitted on all
    # pairs can memorise the unique -2 and 0 pairs, but held-out pairs expose it.
    result = cross_validate(IsotonicMap(), TIMID, TARGET, SETS, n_folds=4, seed=0)
    in_sample, k_fold = result["in_sample"], result["k_fold"]
    assert k_fold["folds"] == 4
    assert k_fold["score_mae"] > in_sample["score_mae"]
    identity = cross_validate(ScoreMapping(), TIMID, TARGET, SETS, n_folds=4)
    assert identity["k_fold"]["score_mae"] == identity["in_sample"]["score_mae"]  # nothing to learn


def test_leave_one_set_out_is_undefined_where_a_map_loses_its_anchor():
    result = cross_validate(TwoPointLinearMap(), TIMID, TARGET, SETS, n_folds=4)
    loso = result["leave_one_set_out"]["pac_error_by_set"]
    assert loso["unaligned-0"] is None and loso["aligned-100"] is None
    # Without the one-refusal set the map is fitted on the anchors only; 0 maps to 2*(0+1.25)/2-2 = 0.5
    assert loso["one-refusal-50"] == pytest.approx(0.5 / 4 * 100)
