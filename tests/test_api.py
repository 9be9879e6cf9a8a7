"""The notebook API: `from calibrate import ...`, typed results, `out=None` writes nothing, and
errors that name parameters in the library and flags on the command line."""

from __future__ import annotations

import inspect

import pytest

import calibrate
from calibrate import (
    CalibrateError,
    Calibration,
    CompareResult,
    FitResult,
    RespondResult,
    RunPlan,
    ScoreResult,
    compare,
    fit,
    load_calibration,
    plan_batch,
    plan_fit,
    plan_respond,
    respond,
    score,
)
from calibrate.data import sample_path
from tests import inprocess


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                  and not p.name.startswith("cache.sqlite3"))


def test_the_public_face_lists_the_workflows_and_their_results():
    assert {"fit", "compare", "score", "respond", "load_calibration", "load_judge_config", "CalibrateError",
            "FitResult", "CompareResult", "ScoreResult", "RespondResult", "plan_fit", "plan_respond",
            "plan_batch", "Calibration", "SetReport", "RespondSummary"} <= set(calibrate.__all__)
    assert all(hasattr(calibrate, name) for name in calibrate.__all__)


@pytest.mark.parametrize("function", [fit, plan_fit, respond, plan_respond, plan_batch,
                                      calibrate.workflows.batch.batch_submit])
def test_one_return_type_and_keyword_only_parameters_after_the_judge_or_model(function):
    parameters = list(inspect.signature(function).parameters.values())
    assert "dry_run" not in inspect.signature(function).parameters
    assert parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[1:]), function.__name__
    returned = inspect.signature(function).return_annotation
    assert "|" not in returned and returned in {"FitResult", "RespondResult", "RunPlan", "SubmitSummary"}


def test_plan_fit_of_claude_needs_no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CALIBRATE_CACHE", str(tmp_path / "cache.sqlite3"))
    plan = plan_fit("claude", limit=2)
    assert isinstance(plan, RunPlan) and plan.command == "fit"
    assert plan.requests == 2 * len(calibrate.data.FIT_SETS) and plan.missing_keys == ["ANTHROPIC_API_KEY"]
    assert not (tmp_path / "cache.sqlite3").exists()  # a plan writes nothing
    assert RespondResult.__annotations__["summary"] == "RespondSummary"


def test_fit_without_out_writes_nothing_and_returns_a_typed_result(tmp_path):
    result = fit("heuristic", limit=6, n_boot=200)
    assert isinstance(result, FitResult) and result.paths == {}
    assert files_under(tmp_path) == []
    assert result.judge == "heuristic" and set(result.sets) == {*calibrate.data.FIT_SETS}
    assert isinstance(result.calibration, Calibration)
    assert result.summary.n_pairs == 24  # the four calibration sets, 6 pairs each
    assert result.sets["aligned-100"].n_pairs == 6 and result.sets["aligned-100"].metrics["PAC"].expected == 100.0
    assert result.mapping.kind == result.calibration.mapping.selected

    paths = result.write(tmp_path / "out")
    assert {"calibration", "judgments", "report_md", "report_html"} <= set(paths)
    again = load_calibration(paths["calibration"])
    assert again.calibration == result.calibration and len(again.judgments) == len(result.judgments)
    scores = [-2.0, 0.0, 2.0]
    assert list(again.mapping.transform(scores)) == list(result.mapping.transform(scores))


def test_compare_has_one_return_type_keyword_parameters_and_a_plan(tmp_path):
    from inspect import Parameter, signature

    from calibrate import RunPlan, plan_compare

    for function in (compare, plan_compare):
        parameters = list(signature(function).parameters.values())
        assert parameters[0].name == "judges" and "dry_run" not in signature(function).parameters
        assert all(p.kind is Parameter.KEYWORD_ONLY for p in parameters[1:])
        assert "human_labels" in signature(function).parameters and "human" not in signature(function).parameters
    assert signature(compare).return_annotation == "CompareResult"
    plan = plan_compare(["heuristic-strict"], limit=2)
    assert isinstance(plan, RunPlan) and {e.name for e in plan.estimates} >= {"heuristic-strict", "always-0"}
    assert files_under(tmp_path) == []


def test_annotate_and_agreement_are_exported_like_the_workflows(tmp_path):
    from calibrate import AgreementReport, agreement, annotate, human_agreement
    from calibrate.workflows.annotate import annotate as annotate_workflow

    assert annotate is annotate_workflow and callable(human_agreement)
    (tmp_path / "ratings.csv").write_text("item,a,b\n1,0,0\n2,1,1\n3,2,1\n4,-1,-1\n")
    report = agreement(tmp_path / "ratings.csv", labels=[-2, -1, 0, 1, 2])
    assert isinstance(report, AgreementReport) and report.n_items == 4 and report.pairwise[0].n == 4


def test_compare_and_score_without_out_write_nothing(tmp_path):
    compared = compare(["heuristic-strict"], limit=4, n_boot=200)
    assert isinstance(compared, CompareResult) and compared.paths == {}
    assert list(compared.leaderboard["judge"]) == [row.judge for row in compared.comparison.leaderboard.rows]
    assert compared.recommendation is compared.comparison.recommendation and compared.recommendation.rule
    assert compared.judges["heuristic-strict"].name == "heuristic-strict"
    fitted = fit("heuristic", limit=6, out=tmp_path / "cal", n_boot=200)
    before = files_under(tmp_path)
    scored = score("heuristic", [str(sample_path("responses", "steady-model"))],
                   calibration=fitted.paths["calibration"],
                   limit=10, n_boot=200)
    assert isinstance(scored, ScoreResult) and scored.paths == {}
    assert files_under(tmp_path) == before
    assert scored.models["steady-model"].raw.n_pairs == 10


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path):
    with pytest.raises(CalibrateError) as caught:
        fit("heuristic", limit=0)
    assert str(caught.value) == "limit must be a positive number of pairs per set"
    assert caught.value.params == ("limit",)
    with pytest.raises(CalibrateError, match=r"^anchor_fraction needs anchor_judge$"):
        score("heuristic", ["sample"], calibration=tmp_path / "calibration.json", anchor_fraction=0.5)

    def cli(*args: str) -> str:
        done = inprocess.cli(*args, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        return done.stderr

    assert cli("fit", "--judge", "heuristic", "--limit", "0") == \
        "error: --limit must be a positive number of pairs per set\n"
    assert cli("score", "--judge", "heuristic", "--responses", "sample", "--anchor-fraction", "0.5") == \
        "error: --anchor-fraction needs --anchor-judge\n"
    said = cli("fit", "--judge", "heuristic", "--sets", "aligned-100,nope")
    assert said.startswith("error: --sets: unknown set 'nope'")


def test_worded_renames_only_the_first_mention_of_each_parameter():
    error = CalibrateError("judge: unknown judge 'x'; configured judges: a, b", ("judge",))
    assert error.worded(lambda p: f"--{p}") == "--judge: unknown judge 'x'; configured judges: a, b"
    assert CalibrateError("no parameters here").worded(lambda p: "--x") == "no parameters here"
