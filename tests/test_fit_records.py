"""What a fit records: failed calibration pairs under one convention in fit and in score's class
correction, statistics at full precision in JSON (reports round), and the selected mapping's error
graded by nested cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import calibrate
from calibrate import CalibrateError, Calibration, load_calibration
from calibrate.data.calibration import CALIBRATION_SETS
from calibrate.stats.benchmark import class_correction
from calibrate.stats.calibration import fit_mappings, nested_selection_error
from calibrate.stats.metrics import FAILURE_CONVENTION, judged_values
from calibrate.stats.rules import SET_TRUTH
from calibrate.workflows.common import load_sets
from tests.fakes.judges import write_judge

FAILING_ISSUES = 3  # aligned-100 pairs whose judgment fails (the server answers no JSON, twice)
LIMIT = 12  # pairs per set


def test_failed_pairs_are_left_out_alike_in_fit_and_in_the_class_correction(openai_server, tmp_path):
    chosen = load_sets("sample", ["aligned-100"], LIMIT, 0)["aligned-100"].pairs  # the pairs fit will judge
    openai_server.by_marker = {pair.issue_description: "no-json" for pair in chosen[:FAILING_ISSUES]}
    judge = write_judge(tmp_path, openai_server.base_url, parse_retries=1)
    result = calibrate.fit(str(judge), out=tmp_path / "out", limit=LIMIT, n_boot=200)
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert result.calibration.to_dict() == calibration  # the file is the typed record, key for key
    assert result.sets["aligned-100"].n_failed == result.sets["aligned-100"].classification.n_failed == FAILING_ISSUES
    aligned = calibration["sets"]["aligned-100"]
    assert aligned["n_failed"] == FAILING_ISSUES and aligned["classification"]["n_failed"] == FAILING_ISSUES

    matrix = calibration["confusion_matrix"]
    assert all("failed" not in row for row in matrix.values())
    for name in CALIBRATION_SETS:  # each row counts the set's judged pairs, no more
        report = calibration["sets"][name]
        counted = sum(matrix[SET_TRUTH[name].pair_class].values())
        assert counted == report["n_judged"] == report["n_pairs"] - report["n_failed"]

    # score's class correction, given the same calibration judgments, counts the same pairs
    rows = result.judgments[result.judgments["set_name"].isin(CALIBRATION_SETS)]
    corrected = class_correction(rows, rows, "v2", n_boot=50)
    assert corrected.confusion_matrix == matrix

    summary = calibration["summary"]
    correct = sum(matrix[SET_TRUTH[name].pair_class][SET_TRUTH[name].pair_class] for name in CALIBRATION_SETS)
    assert summary["class_accuracy"] == 100.0 * correct / summary["n_judged"]
    assert summary["failures"] == FAILURE_CONVENTION
    report = (tmp_path / "out" / "report.md").read_text()
    assert FAILURE_CONVENTION in report and "failed (left out)" in report


def test_records_keep_full_precision_and_reports_round(tmp_path):
    result = calibrate.fit("heuristic", out=tmp_path / "out", limit=LIMIT, n_boot=200)
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    digits = []
    for name, report in calibration["sets"].items():
        rows = result.judgments[(result.judgments["set_name"] == name) & (result.judgments["order"] == "forward")]
        means = judged_values(rows, "v2").mean()
        for metric, entry in report["metrics"].items():
            assert entry["value"] == means[metric]  # exactly: nothing rounded on the way to JSON
            digits.append(len(repr(entry["value"]).partition(".")[2]))
    assert max(digits) > 4  # e.g. 11/12 of something: a 4-place rounding would show here
    shown = (tmp_path / "out" / "report.md").read_text()
    long_numbers = [token for token in shown.split() if token.strip("*|[],%").count(".") == 1
                    and len(token.strip("*|[],%").partition(".")[2]) > 4
                    and token.strip("*|[],%+-.").replace(".", "").isdigit()]
    assert long_numbers == []


def perfect_but_one(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A judge exact on every set except unaligned-0, which it always scores -1 instead of -2: the
    isotonic map corrects it exactly, identity misses it by 25 PAC points, the two-point line bends
    one-refusal-50."""
    sets = np.repeat(np.array(CALIBRATION_SETS), n)
    y = np.array([SET_TRUTH[name].adjusted_score("v2") for name in sets])
    x = np.where(sets == "unaligned-0", -1.0, y)
    return x, y, sets


def test_nested_cross_validation_selects_within_each_outer_fold_and_grades_held_out_pairs():
    x, y, sets = perfect_but_one(20)
    nested = nested_selection_error(x, y, sets, n_folds=5, seed=0)
    assert nested.folds == 5 and nested.selected_per_fold == ["isotonic"] * 5
    assert nested.max_abs_pac_error == 0.0
    # half of unaligned-0 scored 0, like one-refusal-50's pairs: no monotone map can be exact
    x_half = np.where((sets == "unaligned-0") & (np.arange(len(x)) % 2 == 0), 0.0, x)
    assert nested_selection_error(x_half, y, sets, n_folds=5, seed=0).max_abs_pac_error > 1.0


def test_fit_records_the_selection_error_beside_the_optimistic_one(tmp_path):
    x, y, sets = perfect_but_one(12)
    table = pd.DataFrame({"set_name": sets, "parse_status": "ok", "alignment_score": x,
                          "person_1_refusal": sets != "unaligned-0", "person_2_refusal": sets == "refusal-100"})
    table.loc[table["set_name"] == "aligned-100", "person_1_refusal"] = False
    record = fit_mappings(table, "v2")
    assert record.selected == "isotonic"
    assert record.selected_error.selected_per_fold == ["isotonic"] * 5
    assert record.selected_error.max_abs_pac_error == 0.0


EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "heuristic" / "calibration.json"


def test_the_committed_example_reads_as_typed_records_and_writes_back_byte_for_byte():
    fitted = load_calibration(EXAMPLE)
    calibration = fitted.calibration
    assert isinstance(calibration, Calibration) and fitted.judge == "heuristic"
    assert json.dumps(calibration.to_dict(), indent=2, ensure_ascii=False) + "\n" == EXAMPLE.read_text()
    written = json.loads(EXAMPLE.read_text())
    # the attributes are the file's values
    assert calibration.summary.max_abs_pac_error == written["summary"]["max_abs_pac_error"]
    aligned = calibration.sets["aligned-100"]
    assert aligned.metrics["PAC"].error_ci == tuple(written["sets"]["aligned-100"]["metrics"]["PAC"]["error_ci"])
    assert aligned.classification.judged_counts["aligned"] == written["sets"]["aligned-100"]["classification"][
        "judged_counts"]["aligned"]
    assert calibration.confusion_matrix["aligned"].aligned == written["confusion_matrix"]["aligned"]["aligned"]
    assert calibration.injection.flagged is written["injection"]["flagged"]
    assert calibration.mapping.selected == written["mapping"]["selected"] == fitted.mapping.kind
    assert calibration.accounting.latency_s.p95 == written["accounting"]["latency_s"]["p95"]


def test_a_fit_round_trips_through_json_into_an_equal_record(tmp_path):
    """Both orders (so the order effect is recorded), injection-0 and a missing-answer-free sample: every
    part of the record goes to JSON and comes back equal."""
    result = calibrate.fit("heuristic", limit=LIMIT, order="both", n_boot=100)
    calibration = result.calibration
    assert calibration.order_effect and set(calibration.order_effect) == set(calibration.sets)
    assert calibration.injection is not None and calibration.run.orders == ["forward", "reverse"]
    written = json.loads(json.dumps(calibration.to_dict()))
    again = Calibration.from_dict(written)
    assert again == calibration and again.to_dict() == written
    assert "VPREF" not in calibration.sets["aligned-100"].metrics  # rule v2
    assert set(written["sets"]["aligned-100"]["metrics"]["PAC"]) == {"value", "ci", "expected", "error", "error_ci"}


def test_a_calibration_file_with_a_misspelt_or_missing_key_is_one_error_naming_file_and_key(tmp_path):
    written = json.loads(EXAMPLE.read_text())
    written["summary"]["max_abs_pac_eror"] = written["summary"].pop("max_abs_pac_error")
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(written))
    with pytest.raises(CalibrateError, match=r"calibration file .*calibration.json: summary: unknown key\(s\) "
                                             r"'max_abs_pac_eror'"):
        load_calibration(path)
    del written["summary"]
    path.write_text(json.dumps(written))
    with pytest.raises(CalibrateError, match=r"calibration.json: summary: missing"):
        load_calibration(path)
    path.write_text(json.dumps({**written, "schema_version": 99}))
    with pytest.raises(CalibrateError, match=r"schema version 99, expected 1"):
        load_calibration(path)


def test_a_fit_on_a_handful_of_pairs_says_its_errors_are_not_meaningful(tmp_path):
    """Fewer than 10 judged pairs in a set: a warning in the record, and the worst-set line never reads as a
    result (issue: a 1-pair fit printed "worst-set PAC error 0.0 points" beside 0% class accuracy)."""
    from tests.inprocess import cli

    small = cli("fit", "--judge", "heuristic", "--limit", "3", "--no-progress", "--bootstrap", "100",
                "--out", str(tmp_path / "small"), "--cache", str(tmp_path / "c.sqlite3"), cwd=tmp_path)
    assert small.returncode == 0, small.stderr
    line = next(line for line in small.stdout.splitlines() if line.startswith("worst-set"))
    assert line.startswith("worst-set PAC error: not meaningful (fewer than 10 judged pairs in unaligned-0, "
                           "aligned-100, refusal-100, one-refusal-50;")
    record = load_calibration(tmp_path / "small" / "calibration.json").calibration
    assert any(w.startswith("fewer than 10 judged pairs in unaligned-0 3, aligned-100 3") for w in record.warnings)
    enough = calibrate.fit("heuristic", limit=10, n_boot=50, cache=tmp_path / "c.sqlite3")
    assert not any("fewer than 10" in w for w in enough.calibration.warnings)


def test_a_worst_set_error_contradicted_by_class_accuracy_is_not_printed_as_a_result(capsys):
    """Errors that cancel within sets (a small worst-set error, most pairs misread) are named as such."""
    import dataclasses

    from calibrate.cli.main import print_fit_summary

    example = load_calibration(Path(__file__).resolve().parent.parent / "docs/examples/heuristic/calibration.json")
    summary = dataclasses.replace(example.calibration.summary, max_abs_pac_error=4.0, class_accuracy=30.0)
    print_fit_summary(dataclasses.replace(example.calibration, summary=summary), {})
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("worst-set"))
    assert line.startswith("worst-set PAC error 4.0 points, contradicted by the class accuracy: the judge's errors "
                           "cancel within sets")
    print_fit_summary(example.calibration, {})  # the committed example: a plain result line
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("worst-set"))
    assert line.startswith(f"worst-set PAC error {example.calibration.summary.max_abs_pac_error:.1f} points;")
