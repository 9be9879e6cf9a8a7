"""`compare --responses` does each piece of work once: each judge scores the response datasets with the
calibration `fit` would make of the comparison's own judgments (nothing judged or fitted again), the datasets
are checked whole before any judging and then read only to be judged, and the breakdowns nobody reads are not
computed (`score(breakdowns=False)`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import calibrate
from calibrate.data.calibration import FIT_SETS
from calibrate.judging.registry import make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.stats.comparison import JudgeRun, judge_mappings
from calibrate.store.judgments import JudgmentStore
from calibrate.workflows.common import load_sets
from calibrate.workflows.compare_responses import comparison_calibration
from calibrate.workflows.score import calibration_inputs

LIMIT = 40  # pairs per calibration set


def test_the_comparisons_calibration_is_the_fit_of_the_same_judgments(tmp_path):
    """Both orders and two repeats judged, as a comparison may: the rows and the mapping `score` gets are those of
    `fit` (one order, one repeat) on the same sets and cache."""
    cache = tmp_path / "c.sqlite3"
    pairs = [pair for loaded in load_sets("sample", FIT_SETS, LIMIT, 0).values() for pair in loaded.pairs]
    for judge in ("heuristic", "heuristic-strict"):
        config = calibrate.load_judge_config(judge)
        with JudgmentStore(cache) as store:
            for _ in range(2):  # judged, then read back from the cache as `fit` reads it
                table, counts = judge_pairs(make_backend(config), pairs, store, orders=("forward", "reverse"),
                                            repeats=2)
        run = JudgeRun(config, table, counts, baseline=True)
        fitted = calibration_inputs(config, calibrate.fit(judge, limit=LIMIT, n_boot=50, cache=cache))
        ours = comparison_calibration(run, judge_mappings(run, "v2", list(FIT_SETS), "forward", 0), "v2", "forward")
        pd.testing.assert_frame_equal(ours.rows.reset_index(drop=True), fitted.rows.reset_index(drop=True))
        assert (ours.rule, ours.mapping_name) == (fitted.rule, fitted.mapping_name)
        scores = np.linspace(-2, 2, 9)
        np.testing.assert_array_equal(ours.mapping.transform(scores), fitted.mapping.transform(scores))


def test_each_judges_leaderboard_is_its_fit_and_score(tmp_path):
    """The leaderboards compared are each judge's own `score` headline with its `fit`, here with both orders and
    two repeats judged in the comparison (its scores use the first order and repeat, as `fit` does)."""
    cache = tmp_path / "c.sqlite3"
    result = calibrate.compare(["heuristic", "heuristic-decisive"], responses=["sample"], order="both", repeats=2,
                               limit=LIMIT, n_boot=100, cache=cache)
    ranks = result.comparison.rank_agreement
    for judge in ("heuristic", "heuristic-decisive"):
        fitted = calibrate.fit(judge, limit=LIMIT, n_boot=50, cache=cache)
        scored = calibrate.score(judge, ["sample"], calibration=fitted, limit=LIMIT, n_boot=100, cache=cache)
        assert ranks.judges[judge].pac == {name: model.headline["PAC"].value for name, model in scored.models.items()}
        assert ranks.judges[judge].differences_known


def test_score_without_breakdowns_keeps_every_other_number(tmp_path, sample_calibration):
    calibrate.score("heuristic", ["sample"], calibration=sample_calibration, n_boot=100)  # judged: then both reuse
    lean = calibrate.score("heuristic", ["sample"], calibration=sample_calibration, n_boot=100, breakdowns=False,
                           out=tmp_path / "out")
    full = calibrate.score("heuristic", ["sample"], calibration=sample_calibration, n_boot=100)
    assert set(full.breakdowns) == {"category", "issue_scale"} and lean.breakdowns == {}
    assert lean.models == full.models and lean.metrics.differences == full.metrics.differences
    assert not list((tmp_path / "out").glob("breakdown_*.csv")) and "by_category" not in lean.paths
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(written["models"]) == {"echo-model", "steady-model"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## By category" not in report and "## Run" in report


def test_a_bad_row_in_a_response_dataset_fails_before_anything_is_judged(tmp_path):
    """The row is past the first chunk (what picks the cluster column); the cache stays empty."""
    rows = [{"id": i, "issue_description": f"issue {i}", "for_question": f"Why {i}?",
             "against_question": f"Why not {i}?", "for_response": "Yes.", "against_response": "No."}
            for i in range(2500)]
    rows[2400]["id"] = 5
    bad = tmp_path / "bad-model.jsonl"
    bad.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cache = tmp_path / "c.sqlite3"
    with pytest.raises(calibrate.CalibrateError, match="set 'bad-model' .*duplicate id 5"):
        calibrate.compare(["heuristic", "heuristic-strict"], responses=["sample", str(bad)], n_boot=50, cache=cache)
    if cache.exists():
        with JudgmentStore(cache) as store:
            assert store.stats() == []
