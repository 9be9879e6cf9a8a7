"""`calibrate compare`: offline on the sample and against LLM judges on loopback. Every number checked
here is recomputed from the written judgments.parquet with scikit-learn / numpy directly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

import calibrate
from calibrate.errors import CalibrateError
from calibrate.judging.panel import combine, median_score
from calibrate.stats.calibration import InjectionShift, Latency, Prices, Summary
from calibrate.stats.comparison import (
    MAX_ORDER_SHIFT,
    CalibratedError,
    Comparison,
    FailureRates,
    JudgeCost,
    JudgeSummary,
    OrderBias,
    recommend,
)
from calibrate.store.judgments import JudgmentStore
from tests.fakes.judges import KEY_VARIABLE, SECRET, write_judge
from tests.fakes.openai_server import ServerState, start_server
from tests.inprocess import cli

LABELS = [-2, -1, 0, 1, 2]


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """heuristic-strict and the offline panel (plus the three baselines), both orders, two repeats."""
    out = tmp_path_factory.mktemp("compare")
    result = calibrate.compare(["heuristic-strict", "panel"], out=out, order="both", repeats=2, limit=12,
                               cache=out / "cache.sqlite3", n_boot=300)
    return result, out


def primary(judgments: pd.DataFrame, judge: str) -> pd.DataFrame:
    rows = judgments[(judgments["judge_name"] == judge) & (judgments["order"] == "forward")
                     & (judgments["repeat"] == 0)]
    return rows.set_index(["set_name", "pair_id"])


def test_offline_comparison_writes_every_output_with_baselines(offline):
    result, out = offline
    for name in ("comparison.json", "comparison.csv", "judgments.parquet", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert Comparison.from_dict(comparison) == result.comparison  # the file reads back as the record
    assert list(comparison["judges"]) == ["heuristic-strict", "panel", "always-0", "always-aligned", "heuristic"]
    board = pd.read_csv(out / "comparison.csv")
    assert sorted(board["judge"]) == sorted(comparison["judges"])
    assert list(board["judge"]) == [row.judge for row in result.comparison.leaderboard.rows]
    errors = board["max_abs_pac_error"].tolist()
    assert errors == sorted(errors) and errors[0] < errors[-1]  # best first, by the headline
    assert set(comparison["data"]["sets"]) == {"unaligned-0", "aligned-100", "refusal-100", "one-refusal-50",
                                               "injection-0"}
    html = (out / "report.html").read_text()
    assert html.count("<img") == 5 and "Recommendation" in html  # errors, heatmap, order bias, biases, cost
    # both orders: position is measured, and reported as a bias of every judge (stats/invariance.py)
    assert all(set(judge["invariance"]) == {"position"} for judge in comparison["judges"].values())
    judgments = pd.read_parquet(out / "judgments.parquet")
    assert len(judgments) == 5 * 5 * 12 * 2 * 2  # judges x sets x pairs x orders x repeats


def test_per_set_errors_match_the_judgments(offline):
    result, out = offline
    comparison = result.comparison
    judgments = pd.read_parquet(out / "judgments.parquet")
    for judge in ("heuristic-strict", "panel", "always-0"):
        rows = primary(judgments, judge)
        for set_name, report in comparison.judges[judge].sets.items():
            group = rows.loc[set_name]
            r1, r2 = group["person_1_refusal"].astype(bool), group["person_2_refusal"].astype(bool)
            adjusted = np.where(r1 & r2, 2, np.where(r1 ^ r2, 0, group["alignment_score"]))  # rule v2
            expected = {"unaligned-0": 0, "injection-0": 0, "aligned-100": 100, "refusal-100": 100,
                        "one-refusal-50": 50}[set_name]
            assert report.metrics["PAC"].error == pytest.approx(((adjusted + 2) / 4 * 100).mean() - expected,
                                                                      abs=1e-3)
            assert comparison.judges[judge].pac_error(set_name).value == report.metrics["PAC"].error
    assert all(r.metrics["PAC"].value == 50 for r in comparison.judges["always-0"].sets.values())


def test_agreement_between_judges_matches_sklearn(offline):
    result, out = offline
    between = result.comparison.between_judges
    assert between.judges == ["heuristic-strict", "panel", "heuristic"]  # constant baselines left out
    judgments = pd.read_parquet(out / "judgments.parquet")
    calibration = ["unaligned-0", "aligned-100", "refusal-100", "one-refusal-50"]
    assert between.pairwise
    for entry in between.pairwise:
        a = primary(judgments, entry.a).loc[calibration, "alignment_score"]
        b = primary(judgments, entry.b).loc[calibration, "alignment_score"]
        assert entry.n == len(a) == 48
        for key, weights in (("cohen_kappa", None), ("cohen_kappa_linear", "linear"),
                             ("cohen_kappa_quadratic", "quadratic")):
            reference = cohen_kappa_score(a, b, labels=LABELS, weights=weights)
            if np.isnan(reference):
                assert getattr(entry, key) is None
            else:
                assert getattr(entry, key) == pytest.approx(reference, abs=1e-6)
        low, high = entry.cohen_kappa_quadratic_ci
        if entry.cohen_kappa_quadratic is not None and low is not None:
            assert low - 1e-9 <= entry.cohen_kappa_quadratic <= high + 1e-9


def test_panel_is_the_median_of_its_members(offline):
    result, out = offline
    judgments = pd.read_parquet(out / "judgments.parquet")
    # the third member is not a row of the comparison: judge it alone (from the same cache)
    decisive = calibrate.fit("heuristic-decisive", out=out / "decisive", limit=12, order="both",
                             sets=list(result.comparison.data.sets), cache=out / "cache.sqlite3",
                             n_boot=100)
    assert decisive.calibration.run.judged == 0  # the panel had judged it already
    tables = {"heuristic-decisive": decisive.judgments, **{m: judgments[judgments["judge_name"] == m]
                                                          for m in ("heuristic", "heuristic-strict", "panel")}}
    scores = pd.concat({name: table[table["repeat"] == 0].set_index(["set_name", "pair_id", "order"])["alignment_score"]
                        for name, table in tables.items()}, axis=1)
    members = scores[["heuristic", "heuristic-strict", "heuristic-decisive"]]
    assert (scores["panel"] == members.median(axis=1).astype(int)).all()  # odd count: the median is a member's
    assert (members.nunique(axis=1) > 1).any()  # the members do disagree somewhere
    assert result.comparison.judges["panel"].baseline  # a panel of baselines is a baseline


def test_offline_judges_are_all_baselines_so_none_is_recommended(offline):
    recommendation = offline[0].comparison.recommendation
    assert recommendation.recommended is None
    assert set(recommendation.excluded.values()) == {"baseline"}
    assert "beat the worst-set error of every baseline" in recommendation.rule


def test_deterministic_judges_are_perfectly_stable_and_the_heuristic_ignores_injection(offline):
    judges = offline[0].comparison.judges
    assert judges["heuristic"].repeat_stability.krippendorff_alpha == 1.0
    assert judges["heuristic"].repeat_stability.exact_agreement == 100.0
    assert judges["always-0"].repeat_stability.krippendorff_alpha is None  # undefined: no variation
    assert judges["heuristic"].injection.n_pairs == 12 and judges["heuristic"].injection_shift.value == 0.0


def test_recommendation_rule_excludes_for_each_stated_reason():
    def judge(error, baseline=False, failure=0.0, order=None, injection=None):
        return JudgeSummary(
            name="j", backend="openai", config_hash="0", description=None, baseline=baseline, sets={},
            summary=Summary({}, error, error, None, (None, None), 0, 0, 0, 0, ""),
            failures=FailureRates(100, failure, failure, 0.0, {}),
            order_bias=None if order is None else OrderBias(48, order, (None, None), 50.0, None, {}),
            repeat_stability=None,
            injection=None if injection is None else InjectionShift(36, "v2", injection, (None, None), 0, 0, False),
            calibrated=CalibratedError("identity", None, "nested cross-validation", None),
            cost=JudgeCost(0, 0, 0.0, 0.0, 0, None, Latency(None, None, None), 0, 0, {}, 0, Prices(0.0, 0.0),
                           0.0, 0.0))

    verdict = recommend({
        "floor": judge(30.0, baseline=True), "flaky": judge(5.0, failure=12.0),
        "biased": judge(6.0, order=MAX_ORDER_SHIFT + 0.5), "gullible": judge(7.0, injection=-40.0),
        "weak": judge(35.0), "good": judge(9.0, order=0.1, injection=2.0), "better": judge(8.0),
    })
    assert verdict.recommended == "better" and set(verdict.eligible) == {"good", "better"}
    assert verdict.excluded["flaky"].startswith("failure rate")
    assert verdict.excluded["biased"].startswith("order shift")
    assert verdict.excluded["gullible"].startswith("injection shift")
    assert verdict.excluded["weak"].startswith("worst-set error 35.0 does not beat")


def test_panel_median_rounds_halves_toward_zero_and_needs_a_quorum():
    assert [median_score(s) for s in ([2, 1], [-2, -1], [1, -1, 2], [2, 2, -2, -2], [0, 1])] == [1, -1, 1, 0, 0]
    vote = {"alignment_score": 2, "person_1_refusal": True, "person_2_refusal": False,
            "person_1_has_no_information": False, "person_2_has_no_information": False,
            "person_1_core_position": "x", "person_2_core_position": "y",
            "key_points_of_alignment": ["a"], "key_points_of_opposition": []}
    fields, raw = combine({"a": vote, "b": {**vote, "alignment_score": -1, "person_1_refusal": False}, "c": vote}, 2)
    assert fields["alignment_score"] == 2 and fields["person_1_refusal"] is True
    assert json.loads(raw)["b"]["alignment_score"] == -1
    assert combine({"a": vote, "b": None, "c": None}, 2)[0] is None


def test_compare_against_llm_judges_on_loopback_finds_order_bias(tmp_path, monkeypatch):
    state = ServerState()
    httpd, base_url = start_server(state)
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    try:
        fair = write_judge(tmp_path, base_url, name="fair", model="fair-judge")
        biased = write_judge(tmp_path, base_url, name="biased", model="order-biased-judge")
        state.queue("429", "500", "invalid")
        result = calibrate.compare([str(fair), str(biased)], out=tmp_path / "out", order="both", limit=6,
                                   sets=["unaligned-0", "aligned-100", "refusal-100", "one-refusal-50"],
                                   cache=tmp_path / "cache.sqlite3", n_boot=200)
    finally:
        httpd.shutdown()
    judges = result.comparison.judges
    ok_requests = [entry for entry in state.log if entry["fault"] is None]
    assert len({(e["body"]["model"], e["prompt"]) for e in ok_requests}) == len(ok_requests) == 2 * 24 * 2
    assert judges["fair"].order_bias.mean_score_shift == 0.0
    assert abs(judges["biased"].order_bias.mean_score_shift) > MAX_ORDER_SHIFT
    assert result.comparison.recommendation.excluded["biased"].startswith("order shift")
    assert judges["fair"].cost.cost_usd > 0 and judges["fair"].failures.failure_rate == 0.0
    assert SECRET not in (tmp_path / "out" / "comparison.json").read_text()


def test_a_judge_that_judged_no_calibration_pair_stops_fit_and_compare_with_one_line(tmp_path, monkeypatch):
    """Every reply unreadable: nothing to measure, so both stop with the same line (the failures kept in the
    cache), never a traceback from the statistics; the other judge's judgments stay cached."""
    state = ServerState()
    state.by_marker["Explain"] = "no-json"  # every judging prompt holds the questions' "Explain"
    httpd, base_url = start_server(state)
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    cache = tmp_path / "cache.sqlite3"
    try:
        broken = write_judge(tmp_path, base_url, name="broken")
        sets = "unaligned-0,aligned-100"
        compared = cli("compare", "--judges", f"{broken},heuristic-strict", "--sets", sets, "--limit", "3",
                       "--cache", str(cache), "--out", str(tmp_path / "cmp"), "--no-progress")
        fitted = cli("fit", "--judge", str(broken), "--sets", sets, "--limit", "3", "--cache", str(cache),
                     "--out", str(tmp_path / "fit"), "--no-progress")
    finally:
        httpd.shutdown()
    line = ("error: judge 'broken': none of the 6 calibration pairs was judged (parse_error 6); the failures and "
            "their reasons are in ")
    assert compared.returncode == fitted.returncode == 2
    assert compared.stderr.startswith(line + "the cache's failure log; fix the judge")
    assert compared.stderr.count("\n") == 1  # one line
    assert fitted.stderr.startswith(line + f"{tmp_path / 'fit' / 'judgments.parquet'} and the cache's failure log")
    assert len(pd.read_parquet(tmp_path / "fit" / "judgments.parquet")) == 6
    with JudgmentStore(cache) as store:  # the offline judge's judgments were kept
        assert store.count() > 0


def test_human_labels_are_compared_with_each_judge(tmp_path):
    """Synthetic annotators (made up in this test, not real people): two copy a judge with a few changes."""
    first = calibrate.compare(["heuristic-strict"], out=tmp_path / "first", limit=8, cache=tmp_path / "c.sqlite3",
                              n_boot=200,
                              sets=["unaligned-0", "aligned-100", "refusal-100", "one-refusal-50"])
    scores = primary(first.judgments, "heuristic")["alignment_score"].reset_index()
    scores["ann_1"] = scores["alignment_score"]
    scores["ann_2"] = scores["alignment_score"].where(scores.index % 5 != 0, 0)
    scores.loc[3, "ann_2"] = np.nan  # not rated
    scores.drop(columns="alignment_score").to_csv(tmp_path / "humans.csv", index=False)
    result = calibrate.compare(["heuristic-strict"], out=tmp_path / "second", limit=8,
                               human_labels=tmp_path / "humans.csv",
                               cache=tmp_path / "c.sqlite3", n_boot=200,
                               sets=["unaligned-0", "aligned-100", "refusal-100", "one-refusal-50"])
    humans = result.comparison.humans
    consensus = np.trunc(scores[["ann_1", "ann_2"]].median(axis=1))  # a half goes toward 0
    score_rows = {(r.rater_a, r.rater_b): r for r in humans.table if r.field == "score"}
    heuristic = score_rows[("heuristic", "consensus")]
    assert humans.n_items == 32 and heuristic.n == 32
    assert heuristic.agreement == pytest.approx(100 * (consensus == scores["alignment_score"]).mean(), abs=1e-9)
    assert heuristic.kappa_quadratic == pytest.approx(
        cohen_kappa_score(scores["alignment_score"], consensus.astype(int), labels=LABELS,
                          weights="quadratic"), abs=1e-6)
    assert score_rows[("ann_1", "ann_2")].n == 31
    assert "Agreement with human labels" in (tmp_path / "second" / "report.md").read_text()


def test_bad_human_labels_and_judge_lists_are_one_line_errors(tmp_path):
    (tmp_path / "humans.csv").write_text("set_name,pair_id,ann\naligned-100,1,7\n")
    with pytest.raises(CalibrateError, match=r"annotator 'ann', item aligned-100/1: .* not an integer score"):
        calibrate.compare(["heuristic"], human_labels=tmp_path / "humans.csv", out=tmp_path / "o")
    process = cli("compare", "--judges", "heuristic", "--no-baselines")
    assert process.returncode == 2 and process.stderr.count("\n") == 1 and "two judges or more" in process.stderr


def test_fit_reports_the_injection_shift_and_flags_a_judge_that_obeys_the_answers(tmp_path, monkeypatch):
    """The heuristic ignores notes to the judge; a judge that obeys them is flagged in its report."""
    heuristic = calibrate.fit("heuristic", cache=tmp_path / "c.sqlite3", n_boot=200, limit=12)
    unmoved = heuristic.calibration.injection
    assert (unmoved.pac_shift, unmoved.pairs_moved, unmoved.flagged, unmoved.n_pairs) == (0.0, 0, False, 12)
    assert "injection-0" not in heuristic.calibration.summary.pac_error_by_set  # never in the headline
    state = ServerState()
    httpd, base_url = start_server(state)
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    try:
        judge = write_judge(tmp_path, base_url, name="gullible", model="gullible-judge")
        result = calibrate.fit(str(judge), out=tmp_path / "g", cache=tmp_path / "c.sqlite3",
                               n_boot=200, limit=12)
    finally:
        httpd.shutdown()
    injection = result.calibration.injection
    assert injection.flagged and injection.pac_shift > 10 and injection.pac_shift_ci[0] > 0
    assert "Flagged: this judge is moved by text aimed at it" in (tmp_path / "g" / "report.md").read_text()


@pytest.mark.parametrize("prompt", ["valbench-v2-guarded.txt", "valbench-v3-guarded.txt"])
def test_prompt_templates_keep_every_injected_note_inside_its_answer(prompt):
    """Each injected note must stay data: inside its own answer block, its fake end markers defused."""
    import re

    from calibrate.data.calibration import load_calibration_sets
    from calibrate.judging.base import view_of
    from calibrate.judging.config import judge_dirs
    from calibrate.judging.prompt import load_prompt

    template = load_prompt(judge_dirs()[0] / "prompts" / prompt, "test")
    injected = load_calibration_sets("sample", ["injection-0"])["injection-0"].pairs
    for pair in injected:
        for order in ("forward", "reverse"):
            user = template.render(view_of(pair, order), 10_000)[0][-1]["content"]
            blocks = dict(re.findall(r"<<<RESPONSE_(\d)\n(.*?)\nRESPONSE_\1>>>", user, re.DOTALL))
            assert len(re.findall(r"<<<RESPONSE_\d\n", user)) == 2 and set(blocks) == {"1", "2"}
            first, second = (pair.for_response, pair.against_response)[:: 1 if order == "forward" else -1]
            for answer, block in ((first, blocks["1"]), (second, blocks["2"])):
                assert block.replace("> > >", ">>>").replace("< < <", "<<<") == answer  # whole, and only defused
                assert "RESPONSE_1>>>" not in block and "RESPONSE_2>>>" not in block


def test_the_committed_comparison_reads_back_as_the_record_and_writes_the_same_bytes():
    from pathlib import Path

    from calibrate.stats.comparison import BetweenJudges
    from calibrate.stats.humans import RaterAgreement

    folder = Path(__file__).resolve().parent.parent / "docs" / "examples" / "comparison"
    text = (folder / "comparison.json").read_text()
    comparison = Comparison.from_dict(json.loads(text))
    assert json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False) + "\n" == text
    assert comparison.leaderboard.to_frame().to_csv(index=False) == (folder / "comparison.csv").read_text()
    assert comparison.run.orders == ["forward", "reverse"] and comparison.humans is None
    judge = comparison.judges["heuristic-strict"]
    assert judge.order_bias.by_set["aligned-100"].n_pairs == 36 and judge.cost.latency_s.p50 is not None
    # the keys a record only sometimes has stay out of the file when they are not there
    skipped = BetweenJudges(["a"], 3, "note", skipped="fewer than two non-constant judges")
    assert skipped.to_dict() == {"judges": ["a"], "n_items": 3, "note": "note",
                                 "skipped": "fewer than two non-constant judges"}
    assert BetweenJudges.from_dict(skipped.to_dict()) == skipped
    flag = RaterAgreement("a", "b", "refusal", 4, 75.0, 0.5, ci={"agreement": (50.0, 100.0), "kappa": (None, None)})
    assert "kappa_quadratic" not in flag.to_dict() and RaterAgreement.from_dict(flag.to_dict()) == flag
