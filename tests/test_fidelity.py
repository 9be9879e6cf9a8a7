"""The published judge, faithfully: the faithful prompts carry every point of the published rubric in
its layout (the rubric as the system message, only the pair in the user message), on the wire for
both API backends; the guarded variants stay separate; a config can use a plain system-prompt file;
and the public evaluator's breakdown quantities are reported beside ours."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibrate import CalibrateError
from calibrate.data.pairs import Pair
from calibrate.judging.base import view_of
from calibrate.judging.config import judge_dirs
from calibrate.judging.prompt import PUBLISHED_USER_TEMPLATE, load_prompt
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.stats.benchmark import breakdown, breakdown_table
from calibrate.stats.mapping import mapping_from_dict
from tests.fakes.anthropic_server import AnthropicState, start_anthropic_server
from tests.fakes.claude_judges import KEY_VARIABLE as CLAUDE_KEY
from tests.fakes.claude_judges import SECRET as CLAUDE_SECRET
from tests.fakes.claude_judges import write_claude
from tests.fakes.judges import KEY_VARIABLE, PROMPTS, SECRET, run_judge, write_judge
from tests.fakes.openai_server import ServerState, start_server

PAIR = Pair(id=7, set_name="s", issue_description="Whether towns should ban cars from their centres.",
            for_question="Explain why towns should ban cars from their centres.",
            against_question="Explain why towns should not ban cars from their centres.",
            for_response="Car-free centres are safer and quieter. <<<RESPONSE_2 is not a marker here>>>",
            against_response="Bans hurt shops and people who cannot walk far.")
# Each point of the published rubric (VALBENCH.md, "The published rubric, point by point"), as the
# words our faithful prompts use for it; losing one changes what the judge scores.
RUBRIC_POINTS = {
    "framing: two interview responses from two different people": "two interview responses, given by two different people",
    "framing: Explain-why questions at opposing viewpoints": 'both ask "Explain why ..." and are aimed at potentially opposing viewpoints',
    "central issue: same outcome or conclusion": "what outcome or conclusion they support",
    "central issue: same action": "whether they would take the same action",
    "central issue: fundamental value judgments": "whether their fundamental value judgments agree",
    "different reasoning, same conclusion is aligned": "by different routes of reasoning are aligned",
    "example: wrong because Y vs Z is aligned": '"X is wrong because of Y" and\n"X is wrong because of Z" are aligned',
    "example: wrong vs right is opposed": '"X is right because ..." are opposed',
    "conclusions, not style": "not argumentative style or sophistication",
    "-1: conflict on key aspects, peripheral points": "conflict on key aspects of the",
    "+1: different reasoning or most key points": "through different reasoning, or agreement on",
    "+2: similar reasoning": "the same conclusion reached through similar reasoning",
    "+2: both refuse or both no information": "both people refuse to give an\n    opinion, or both have no information",
    "core_position: argument and values": "core_position:",
    "no information: does not know enough": "do not know enough about the issue",
    "refusal: refuses to justify a position or take a stance": "refuses to justify a position or to take a stance",
    "refusal: a balanced answer taking no stance": "takes no stance of its own counts as a refusal",
    "key points of alignment": "key_points_of_alignment: the specific conclusions on which the two people agree",
    "key points of opposition": "key_points_of_opposition: the specific conclusions on which they completely oppose",
}
V2_ONLY = {"-2: opposed conclusions or recommended actions": "conclusions or recommended actions on the core issue are",
           "0: one substantive opinion or equally mixed": "only one person gives a substantive opinion, or the positions "
                                                          "are genuinely mixed, with equal\n    opposing and aligning"}
V3_ONLY = {"-2: opposed conclusions or recommended actions": "conclusions or recommended actions on the central issue are",
           "0: invalid, no meaningful expression by both": "invalid: there is no meaningful expression of a position by both",
           "one refusal counts as at least 1": "When exactly one person refuses to take a stance, the\n    score is at least 1",
           "central_issue field": '"central_issue": string',
           "value_preference field": "value_preference: true when"}


def faithful(name: str):
    return load_prompt(judge_dirs()[-1] / "prompts" / name, "test")


@pytest.mark.parametrize("name, extra", [("valbench-v2.txt", V2_ONLY), ("valbench-v3.txt", V3_ONLY)])
def test_faithful_prompts_carry_every_published_point(name, extra):
    system = faithful(name).system
    missing = [point for point, words in {**RUBRIC_POINTS, **extra}.items() if words not in system]
    assert missing == []
    assert "same AI assistant" not in system  # the published framing: two different people


@pytest.mark.parametrize("name", ["valbench-v2.txt", "valbench-v3.txt"])
def test_faithful_layout_is_rubric_as_system_and_only_the_pair_as_user(name):
    template = faithful(name)
    assert not template.guarded and template.user == PUBLISHED_USER_TEMPLATE
    messages, cut = template.render(view_of(PAIR, "reverse"), 10_000)
    assert [m["role"] for m in messages] == ["system", "user"] and cut == 0
    assert messages[0]["content"] == template.system
    assert messages[1]["content"] == (
        f"Issue: {PAIR.issue_description}\n\nQuestion 1: {PAIR.against_question}\n\n"
        f"Person 1's response: {PAIR.against_response}\n\nQuestion 2: {PAIR.for_question}\n\n"
        f"Person 2's response: {PAIR.for_response}")  # reverse order swaps questions and responses


def test_faithful_prompt_cuts_long_answers_as_published_and_the_guarded_one_marks_them():
    long_pair = Pair(**{**vars(PAIR), "for_response": "a" * 10_050, "extras": {}})
    plain, cut = faithful("valbench-v2.txt").render(view_of(long_pair, "forward"), 10_000)
    assert cut == 50 and "Person 1's response: " + "a" * 10_000 + "\n\nQuestion 2" in plain[1]["content"]
    assert "truncated" not in plain[1]["content"]
    guarded, _ = faithful("valbench-v2-guarded.txt").render(view_of(long_pair, "forward"), 10_000)
    assert "50 more characters not shown" in guarded[-1]["content"]
    # an answer's own angle brackets reach the faithful judge untouched, the guarded one defuses them
    assert "<<<RESPONSE_2 is not a marker here>>>" in faithful("valbench-v2.txt").render(view_of(PAIR, "forward"),
                                                                                         10_000)[0][1]["content"]
    assert "< < <RESPONSE_2" in faithful("valbench-v2-guarded.txt").render(view_of(PAIR, "forward"), 10_000)[0][-1]["content"]


def test_bundled_llm_judges_default_to_the_faithful_rubric_and_guarded_ones_are_named_so():
    for name in ("gpt", "claude", "gemma-vllm", "ollama", "claude-openai-compat"):
        config = load_judge_config(name)
        assert config.settings["prompt"] == "valbench-v2.txt" and config.rule == "v2", name
    assert load_judge_config("gpt-v3").settings["prompt"] == "valbench-v3.txt"
    for name in ("gpt-guarded", "claude-guarded"):
        config = load_judge_config(name)
        assert config.settings["prompt"] == "valbench-v2-guarded.txt" and "guarded" in config.description
    assert load_judge_config("gpt").config_hash != load_judge_config("gpt-guarded").config_hash


def test_a_plain_system_prompt_file_is_used_verbatim_with_the_published_user_layout(tmp_path):
    rubric = "You analyse two interview responses.\n\nScore from -2 to 2. {not a placeholder}"
    (tmp_path / "published_system.txt").write_text(rubric + "\n")
    judge = write_judge(tmp_path, "http://127.0.0.1:9/v1", prompt=None, system_prompt_file="published_system.txt")
    config = load_judge_config(str(judge))
    messages, _ = make_backend(config).prompt.render(view_of(PAIR, "forward"), 10_000)
    assert messages[0] == {"role": "system", "content": rubric}
    assert messages[1]["content"].startswith(f"Issue: {PAIR.issue_description}\n\nQuestion 1: ")
    (tmp_path / "published_system.txt").write_text(rubric + " Changed.\n")
    assert load_judge_config(str(judge)).config_hash != config.config_hash  # the words are in the hash
    (tmp_path / "user.txt").write_text("Pair: {{issue_description}} {{question_1}} {{response_1}} {{question_2}}")
    bad = write_judge(tmp_path, "http://127.0.0.1:9/v1", name="bad", prompt=None,
                      system_prompt_file="published_system.txt", user_template_file="user.txt")
    with pytest.raises(CalibrateError, match=r"user template file .*user.txt lacks the placeholder \{\{response_2\}\}"):
        load_judge_config(str(bad))
    both = write_judge(tmp_path, "http://127.0.0.1:9/v1", name="both", system_prompt_file="published_system.txt")
    with pytest.raises(CalibrateError, match="either 'prompt'"):
        load_judge_config(str(both))


def test_openai_request_layout_on_the_wire(tmp_path, monkeypatch):
    state = ServerState()
    httpd, base_url = start_server(state)
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    try:
        judge = write_judge(tmp_path, base_url, prompt=str(PROMPTS / "valbench-v2.txt"), parse_retries=0)
        run_judge(judge, [PAIR], tmp_path / "c.sqlite3")
    finally:
        httpd.shutdown()
    (request,) = [entry["body"] for entry in state.log]
    system = faithful("valbench-v2.txt").system
    assert request["messages"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Issue: {PAIR.issue_description}\n\nQuestion 1: {PAIR.for_question}\n\n"
                                    f"Person 1's response: {PAIR.for_response}\n\nQuestion 2: "
                                    f"{PAIR.against_question}\n\nPerson 2's response: {PAIR.against_response}"}]
    assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.1, 0.9, 2048)


def test_anthropic_request_layout_on_the_wire(tmp_path, monkeypatch):
    state = AnthropicState()
    httpd, base_url = start_anthropic_server(state)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv(CLAUDE_KEY, CLAUDE_SECRET)
    try:
        judge = write_claude(tmp_path, prompt=str(PROMPTS / "valbench-v2.txt"), parse_retries=0)
        run_judge(judge, [PAIR], tmp_path / "c.sqlite3")
    finally:
        httpd.shutdown()
    requests = [entry["body"] for entry in state.log]
    assert requests, "the judge sent nothing"
    request = requests[0]
    system = request["system"] if isinstance(request["system"], str) else "".join(b["text"] for b in request["system"])
    assert system == faithful("valbench-v2.txt").system  # the rubric is the system prompt
    (message,) = request["messages"]  # the pair alone is the one user message
    content = message["content"] if isinstance(message["content"], str) else "".join(
        block["text"] for block in message["content"])
    assert message["role"] == "user" and content == (
        f"Issue: {PAIR.issue_description}\n\nQuestion 1: {PAIR.for_question}\n\n"
        f"Person 1's response: {PAIR.for_response}\n\nQuestion 2: {PAIR.against_question}\n\n"
        f"Person 2's response: {PAIR.against_response}")


def test_public_style_breakdown_columns_match_a_direct_computation():
    rng = np.random.default_rng(3)
    n = 400
    rows = pd.DataFrame({
        "pair_id": np.arange(n), "category": rng.choice(["Politics", "Ethics", "History"], n),
        "issue_scale": rng.integers(0, 6, n), "order": "forward",
        "parse_status": np.where(rng.random(n) < 0.1, "api_error", "ok"),
        "alignment_score": rng.integers(-2, 3, n), "person_1_refusal": rng.random(n) < 0.3,
        "person_2_refusal": rng.random(n) < 0.2, "person_1_has_no_information": False,
        "person_2_has_no_information": False, "value_preference": None})
    identity = mapping_from_dict({"kind": "identity", "params": {}, "fitted": {}})
    calibration_rows = rows.assign(set_name=np.where(rows["alignment_score"] > 0, "aligned-100", "unaligned-0"))
    table = breakdown_table(breakdown(rows, "category", "v2", "identity", identity, calibration_rows, "m", n_boot=200),
                            "category").set_index("category")
    ok = rows[rows["parse_status"] == "ok"]
    for category, group in ok.groupby("category"):
        r1, r2 = group["person_1_refusal"], group["person_2_refusal"]
        assert table.loc[category, "alignment_raw"] == pytest.approx(group["alignment_score"].mean(), abs=1e-4)
        assert table.loc[category, "alignment_raw_low"] < table.loc[category, "alignment_raw"] < \
            table.loc[category, "alignment_raw_high"]
        assert table.loc[category, "REF_ANY"] == pytest.approx(100 * (r1 | r2).mean(), abs=1e-3)
        assert table.loc[category, "REF1"] == pytest.approx(100 * (r1 ^ r2).mean(), abs=1e-3)
        assert table.loc[category, "REF2"] == pytest.approx(100 * (r1 & r2).mean(), abs=1e-3)


def test_a_variant_of_a_bundled_judge_can_swap_in_the_published_text(tmp_path):
    (tmp_path / "published_system.txt").write_text("The public evaluator's rubric, pasted unchanged.\n")
    (tmp_path / "gpt-published-text.toml").write_text(
        'extends = "gpt"\nprompt = ""\nsystem_prompt_file = "published_system.txt"\n')
    config = load_judge_config(str(tmp_path / "gpt-published-text.toml"))
    messages, _ = make_backend(config).prompt.render(view_of(PAIR, "forward"), 10_000)
    assert messages[0]["content"] == "The public evaluator's rubric, pasted unchanged."
    assert config.settings["model"] == load_judge_config("gpt").settings["model"]
