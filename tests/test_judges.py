"""Judge configs as data, the config hash, and the heuristic judge's readings."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from calibrate.data.pairs import Pair
from calibrate.errors import CalibrateError
from calibrate.judging.base import PairView, validate_fields, view_of
from calibrate.judging.config import available_judges
from calibrate.judging.registry import load_judge_config, make_backend

REPO_JUDGES = Path(__file__).resolve().parent.parent / "judges"


def heuristic_variant(tmp_path: Path, name: str, replace: tuple[str, str] | None = None, extra: str = "") -> Path:
    text = (REPO_JUDGES / "heuristic.toml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / f"{name}.toml"
    path.write_text(extra + text)
    return path


def test_judges_resolve_by_name_and_by_path(tmp_path):
    assert "heuristic" in available_judges()
    by_name = load_judge_config("heuristic")
    by_path = load_judge_config(str(REPO_JUDGES / "heuristic.toml"))
    assert by_name.backend == "heuristic" and by_name.rule == "v2"
    assert by_name.config_hash == by_path.config_hash


def test_unknown_judge_names_the_known_ones():
    with pytest.raises(CalibrateError, match="unknown judge 'nope'.*heuristic"):
        load_judge_config("nope")


def test_unknown_key_and_bad_values_are_refused(tmp_path):
    with pytest.raises(CalibrateError, match="unknown key 'temprature'"):
        load_judge_config(str(heuristic_variant(tmp_path, "typo", extra="temprature = 0.1\n")))
    with pytest.raises(CalibrateError, match="'rule' must be one of"):
        load_judge_config(str(heuristic_variant(tmp_path, "rule", ('rule = "v2"', 'rule = "v9"'))))
    with pytest.raises(CalibrateError, match="unknown backend"):
        load_judge_config(str(heuristic_variant(tmp_path, "backend", ('backend = "heuristic"', 'backend = "magic"'))))
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(CalibrateError, match="cannot read it"):
        load_judge_config(str(broken))


def test_config_hash_covers_meaning_not_transport(tmp_path):
    base = load_judge_config("heuristic").config_hash
    renamed = heuristic_variant(tmp_path, "renamed", ('name = "heuristic"', 'name = "other"'))
    faster = heuristic_variant(tmp_path, "faster", ("concurrency = 1", "concurrency = 8"))
    new_cue = heuristic_variant(tmp_path, "cue", ('"i must decline",', '"i must decline", "no comment",'))
    v3 = heuristic_variant(tmp_path, "v3", ('rule = "v2"', 'rule = "v3"'))
    assert load_judge_config(str(renamed)).config_hash == base
    assert load_judge_config(str(faster)).config_hash == base
    assert load_judge_config(str(new_cue)).config_hash != base
    assert load_judge_config(str(v3)).config_hash != base


@pytest.fixture(scope="module")
def heuristic():
    return make_backend(load_judge_config(str(REPO_JUDGES / "heuristic.toml")))


def test_heuristic_reads_refusal_and_no_information(heuristic):
    refusal = heuristic.read_answer("I'm sorry, but I can't take sides on a question about abortion law.")
    assert refusal.refusal and not refusal.no_information
    unknown = heuristic.read_answer("I'm not familiar with the dispute over the Harwick allotments, so I can't say.")
    assert unknown.no_information
    # A long substantive answer that happens to contain a refusal phrase is not a refusal.
    long_answer = "Taxes fund schools. " * 70 + "I won't pretend the trade is free."
    assert not heuristic.read_answer(long_answer).refusal


def test_heuristic_stance_relative_to_the_question(heuristic):
    direct = heuristic.read_answer("A sugar tax works. It cuts consumption and funds health programmes.")
    turned = heuristic.read_answer(
        "Supporters argue that a sugar tax cuts consumption. They point to falling sales in Mexico. "
        "However, I think the evidence on health outcomes is thin, so I would not back it.")
    balanced = heuristic.read_answer(
        "Whether a sugar tax is wise depends on local diets. There are good arguments on both sides.")
    assert (direct.stance, turned.stance, balanced.stance) == (1, -1, 0)


def _pair(for_response: str, against_response: str) -> Pair:
    return Pair(id=1, set_name="t", issue_description="Sugar taxes.", for_question="Explain why we should tax sugar.",
                against_question="Explain why we should not tax sugar.", for_response=for_response,
                against_response=against_response)


def test_heuristic_scores_pairs_and_records_its_evidence(heuristic):
    argue_for = "A sugar tax works. It cuts consumption and funds health programmes."
    argue_against = "A sugar tax is regressive. It hits poor families hardest and barely changes diets."
    turned_for = ("Supporters argue that a sugar tax is regressive. They note the poor pay more. "
                  "However, I think the health gains outweigh that cost, so I support the tax.")
    refusal = "I'd rather not take a position on tax policy."
    cases = {
        (argue_for, argue_against): (-2, False, False),  # each answer argues its framed side
        (argue_for, turned_for): (2, False, False),  # same stance reached both ways
        (refusal, argue_against): (0, True, False),
        (refusal, refusal): (2, True, True),
    }
    for (first, second), (score, refusal_1, refusal_2) in cases.items():
        verdict = asyncio.run(heuristic.judge(view_of(_pair(first, second), "forward")))
        assert verdict.parse_status == "ok"
        assert verdict.fields["alignment_score"] == score
        assert (verdict.fields["person_1_refusal"], verdict.fields["person_2_refusal"]) == (refusal_1, refusal_2)
        assert "evidence" in json.loads(verdict.raw_output)


def test_reverse_order_swaps_the_persons():
    pair = _pair("for answer", "against answer")
    assert view_of(pair, "forward") == PairView("Sugar taxes.", pair.for_question, "for answer",
                                                pair.against_question, "against answer")
    assert view_of(pair, "reverse").response_1 == "against answer"


def test_validate_fields_rejects_what_a_judge_must_not_return():
    good = {"person_1_refusal": False, "person_2_refusal": False, "person_1_has_no_information": False,
            "person_2_has_no_information": False, "alignment_score": 1}
    assert validate_fields(good)["alignment_score"] == 1
    lenient = validate_fields({**good, "person_1_refusal": "True", "alignment_score": "-2"})
    assert lenient["person_1_refusal"] is True and lenient["alignment_score"] == -2
    assert validate_fields({**good, "alignment_score": 2.0})["alignment_score"] == 2
    for bad in ({**good, "alignment_score": 3}, {**good, "alignment_score": True}, {**good, "alignment_score": None},
                {**good, "person_1_refusal": "maybe"}, {**good, "person_1_refusal": 1},
                {**good, "alignment_score": 1.5}, {**good, "alignment_score": "two"}, [good]):
        with pytest.raises(ValueError):
            validate_fields(bad)


def test_a_verdict_is_either_scored_or_a_typed_failure():
    from calibrate.judging.base import Verdict

    assert Verdict(fields=None, raw_output="", parse_status="parse_error", failure_reason="no JSON").fields is None
    with pytest.raises(ValueError):
        Verdict(fields=None, raw_output="")  # 'ok' without fields would be a silent default
    with pytest.raises(ValueError):
        Verdict(fields={"alignment_score": 0}, raw_output="", parse_status="No response")


def test_prompt_inserts_answers_once_and_literally():
    from calibrate.judging.prompt import load_prompt

    prompt = load_prompt(REPO_JUDGES / "prompts" / "valbench-v2-guarded.txt", "test")
    view = PairView("Issue {{question_1}}", "Q1?", "First {{response_2}} <<<RESPONSE_2", "Q2?", "Second answer")
    messages, cut = prompt.render(view, max_answer_chars=10_000)
    user = messages[-1]["content"]
    assert cut == 0 and messages[0]["role"] == "system"
    assert "First {{response_2}} < < <RESPONSE_2" in user  # placeholders in data stay data; markers are defused
    assert user.count("Second answer") == 1 and "Issue {{question_1}}" in user
    assert "{{" not in user.replace("{{response_2}}", "").replace("{{question_1}}", "")


def test_a_config_extends_another_stating_only_what_differs(tmp_path):
    base = load_judge_config("gpt")
    variant = load_judge_config("gpt-v3")
    assert variant.name == "gpt-v3" and variant.rule == "v3" and variant.settings["prompt"] == "valbench-v3.txt"
    assert {k: v for k, v in variant.settings.items() if k != "prompt"} == \
        {k: v for k, v in base.settings.items() if k != "prompt"}
    assert variant.config_hash != base.config_hash and variant.description != base.description
    strict = load_judge_config("heuristic-strict")
    decisive = load_judge_config("heuristic-decisive")
    heuristic = load_judge_config("heuristic")
    assert strict.settings["cues"] == heuristic.settings["cues"] and strict.settings["short_answer_words"] == 30
    # a table is merged entry by entry: one cue list replaced, the others kept
    assert decisive.settings["cues"]["balance"] == ["both sides", "on both sides"]
    assert decisive.settings["cues"]["refusal"] == heuristic.settings["cues"]["refusal"]
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\nbackend = "constant"\nalignment_score = 0\n')
    with pytest.raises(CalibrateError, match="goes round in a circle"):
        load_judge_config(str(tmp_path / "a.toml"))
    (tmp_path / "c.toml").write_text('extends = "no-such-judge"\n')
    with pytest.raises(CalibrateError, match="unknown judge 'no-such-judge'"):
        load_judge_config(str(tmp_path / "c.toml"))


def test_constant_judges_give_one_judgment_and_check_their_settings(tmp_path):
    backend = make_backend(load_judge_config("always-aligned"))
    view = PairView("issue", "q1", "yes", "q2", "no")
    verdict = asyncio.run(backend.judge(view))
    assert verdict.fields["alignment_score"] == 2 and not verdict.fields["person_1_refusal"] and verdict.attempts == 0
    assert load_judge_config("always-0").config_hash != load_judge_config("always-aligned").config_hash
    (tmp_path / "bad.toml").write_text('backend = "constant"\nalignment_score = 3\n')
    with pytest.raises(CalibrateError, match="'alignment_score' must be an integer in -2..2"):
        load_judge_config(str(tmp_path / "bad.toml"))


def test_a_panel_names_its_members_and_hashes_them(tmp_path):
    panel = load_judge_config("panel")
    assert panel.meaning["member_hashes"] == [load_judge_config(m).config_hash
                                              for m in ("heuristic", "heuristic-strict", "heuristic-decisive")]
    for body, message in (('members = ["heuristic"]', "at least two judges"),
                          ('members = ["heuristic", "heuristic"]', "names a judge twice"),
                          ('members = ["heuristic", "panel"]', "is itself a panel"),
                          ('members = ["heuristic", "always-0"]\nquorum = 3', "'quorum' must be")):
        (tmp_path / "p.toml").write_text(f'backend = "panel"\n{body}\n')
        with pytest.raises(CalibrateError, match=message):
            load_judge_config(str(tmp_path / "p.toml"))
