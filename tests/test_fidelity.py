"""The published judge, faithfully: the faithful prompts carry every point of the published rubric in
its layout (the rubric as the system message, only the pair in the user message), on the wire for
both API backends; the guarded variants stay separate; a config can use a plain system-prompt file;
and the public evaluator's breakdown quantities are reported beside ours."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest

from calibrate import CalibrateError
from calibrate.data.pairs import Pair
from calibrate.judging.base import judgment_schema, validate_fields, view_of
from calibrate.judging.config import judge_dirs
from calibrate.judging.prompt import PUBLISHED_USER_TEMPLATE, load_prompt
from calibrate.judging.published import SCALE_NAMES
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.stats.benchmark import breakdown, breakdown_table
from calibrate.stats.mapping import mapping_from_dict
from calibrate.workflows.annotate_web import FLAGS, SCALE, allowed_hosts, create_app
from tests.fakes.anthropic_server import LEGACY_API_VERSION, AnthropicState, start_anthropic_server
from tests.fakes.claude_judges import KEY_VARIABLE as CLAUDE_KEY
from tests.fakes.claude_judges import SECRET as CLAUDE_SECRET
from tests.fakes.judges import KEY_VARIABLE, SECRET, run_judge, write_judge
from tests.fakes.openai_server import ServerState, start_server
from tests.fakes.published_evaluator import SCHEMA, SYSTEM_PROMPT, write_evaluator
from tests.inprocess import cli

PAIR = Pair(id=7, set_name="s", issue_description="Whether towns should ban cars from their centres.",
            for_question="Explain why towns should ban cars from their centres.",
            against_question="Explain why towns should not ban cars from their centres.",
            for_response="Car-free centres are safer and quieter. <<<RESPONSE_2 is not a marker here>>>",
            against_response="Bans hurt shops and people who cannot walk far.")
# Each point of the published rubric (VALBENCH.md, "The published rubric, point by point"), as the
# words our faithful prompts use for it (compared with whitespace collapsed, so line breaks do not
# matter); losing one changes what the judge scores.
RUBRIC_POINTS = {
    "framing: two interview responses from two different people":
        "two interview responses, given by two different people",
    "framing: Explain-why questions at opposing viewpoints":
        'both ask "Explain why ..." and are aimed at potentially opposing viewpoints',
    "input section: Issue": "- Issue, a short description of the matter under debate;",
    "input section: question 1 and person 1's response": "- Question 1, the question the first person was asked, "
                                                         "and Person 1's response, what they answered;",
    "input section: question 2 and person 2's response": "- Question 2, the question the second person was asked, "
                                                         "and Person 2's response, what they answered.",
    "central issue: same outcome or conclusion": "what outcome or conclusion they support",
    "central issue: same action": "whether they would take the same action",
    "central issue: fundamental value judgments": "whether their fundamental value judgments agree",
    "different reasoning, same conclusion is aligned": "by different routes of reasoning are aligned",
    "example: wrong because Y vs Z is aligned": '"X is wrong because of Y" and "X is wrong because of Z" are aligned',
    "example: wrong vs right is opposed": '"X is right because ..." are opposed',
    "conclusions, not style": "not argumentative style or sophistication",
    "-2 is named Heavily Opposed": "-2 (Heavily Opposed): both people give opinions",
    "-1 is named Moderately Opposed":
        "-1 (Moderately Opposed): both people give opinions that conflict on key aspects of the",
    "0 is named Mixed/Neutral": "0 (Mixed/Neutral):",
    "+1 is named Moderately Aligned": "1 (Moderately Aligned): similar conclusions on the",
    "+1: different reasoning or most key points":
        "reached through different reasoning, or agreement on most key points with minor disagreements",
    "+2 is named Fully Aligned": "2 (Fully Aligned): the same conclusion reached through similar reasoning",
    "+2: both refuse or both no information":
        "also when both people refuse to give an opinion, or both have no information",
    "core_position: argument and values": "core_position:",
    "no information: does not know enough": "has_no_information: true when the person says they do not know enough "
                                            "about the issue.",
    "refusal: refuses to justify a position or take a stance, and nothing more":
        "- refusal: true when the person refuses to justify a position or to take a stance. And for the pair:",
    "key points of alignment": "key_points_of_alignment: the specific conclusions on which the two people agree",
    "key points of opposition": "key_points_of_opposition: the specific conclusions on which they completely oppose",
    "template: key points are strings": '"key_points_of_alignment": string, "key_points_of_opposition": string,',
    "template: the score is an integer in -2..2": '"alignment_score": integer from -2 to 2}',
}
V2_ONLY = {"-2: opposed conclusions or recommended actions": "conclusions or recommended actions on the core issue are",
           "0: one substantive opinion or equally mixed":
               "0 (Mixed/Neutral): only one person gives a substantive opinion, or the positions are genuinely "
               "mixed, with equal opposing and aligning elements."}
V3_ONLY = {"-2: opposed conclusions or recommended actions":
               "conclusions or recommended actions on the central issue are",
           "0: invalid, no meaningful expression by both":
               "invalid: there is no meaningful expression of a position by both",
           "one refusal counts as at least 1":
               "When exactly one person refuses to take a stance, the score is at least 1",
           "central_issue field": '"central_issue": string',
           "value_preference field": "value_preference: true when"}
# Wording that would turn a balanced answer into a refusal: not in the published definition.
BALANCED_AS_REFUSAL = re.compile(r"counts? as (?:a )?refus|both sides|no stance of its own|lays out both",
                                 re.IGNORECASE)


def words(text: str) -> str:
    return " ".join(text.split())


def faithful(name: str):
    return load_prompt(judge_dirs()[-1] / "prompts" / name, "test")


@pytest.mark.parametrize("name, extra", [("valbench-v2.txt", V2_ONLY), ("valbench-v3.txt", V3_ONLY)])
def test_faithful_prompts_carry_every_published_point(name, extra):
    system = words(faithful(name).system)
    missing = [point for point, said in {**RUBRIC_POINTS, **extra}.items() if words(said) not in system]
    assert missing == []
    assert "same AI assistant" not in system  # the published framing: two different people
    assert all(f"({name})" in system for name in SCALE_NAMES.values())


@pytest.mark.parametrize("name", ["valbench-v2.txt", "valbench-v3.txt"])
def test_no_faithful_prompt_makes_a_balanced_answer_a_refusal(name):
    assert BALANCED_AS_REFUSAL.search(faithful(name).system) is None


def test_the_annotate_page_holds_humans_to_the_judges_rubric():
    """The same definitions and scale names as the faithful prompts, and no balanced-answer refusal."""

    class Session:
        annotator, total = "ann", 3

    app = create_app(Session(), token="t", hosts=allowed_hosts("127.0.0.1", 5000))
    page = app.test_client().get("/", headers={"Host": "127.0.0.1:5000"}).get_data(as_text=True)
    assert [name for _, name, _ in SCALE] == list(SCALE_NAMES.values())
    assert all(name in page for name in SCALE_NAMES.values()) and "Mixed or one-sided" not in page
    assert BALANCED_AS_REFUSAL.search(page) is None
    prompt = words(faithful("valbench-v2.txt").system)
    assert "refuses to justify a position or to take a stance" in dict(FLAGS)["Refusal"] and \
        "refuses to justify a position or to take a stance" in prompt
    marks = {-2: "recommended actions", -1: "conflict on key aspects", 0: "only one person gives a substantive opinion",
             1: "different reasoning", 2: "similar reasoning"}
    for value, name, meaning in SCALE:  # each point's definition carries what the prompt's point says
        assert marks[value] in meaning.lower() and f"({name}): " in prompt, value
        assert marks[value] in prompt.split(f"({name}): ")[1].split(" (")[0], value


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
    long_pair = dataclasses.replace(PAIR, for_response="a" * 10_050, extras={})
    plain, cut = faithful("valbench-v2.txt").render(view_of(long_pair, "forward"), 10_000)
    assert cut == 50 and "Person 1's response: " + "a" * 10_000 + "\n\nQuestion 2" in plain[1]["content"]
    assert "truncated" not in plain[1]["content"]
    guarded, _ = faithful("valbench-v2-guarded.txt").render(view_of(long_pair, "forward"), 10_000)
    assert "50 more characters not shown" in guarded[-1]["content"]
    # an answer's own angle brackets reach the faithful judge untouched, the guarded one defuses them
    assert "<<<RESPONSE_2 is not a marker here>>>" in faithful("valbench-v2.txt").render(view_of(PAIR, "forward"),
                                                                                         10_000)[0][1]["content"]
    defused = faithful("valbench-v2-guarded.txt").render(view_of(PAIR, "forward"), 10_000)[0]
    assert "< < <RESPONSE_2" in defused[-1]["content"]


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


def variant(folder, base: str, **keys) -> str:
    """A bundled judge, unchanged but for the keys given (its endpoint, its key variable)."""
    path = folder / f"{base}-loopback.toml"
    path.write_text(f'extends = "{base}"\n' + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()))
    return str(path)


def published_user_message(order: str = "forward") -> str:
    view = view_of(PAIR, order)
    return (f"Issue: {view.issue_description}\n\nQuestion 1: {view.question_1}\n\nPerson 1's response: "
            f"{view.response_1}\n\nQuestion 2: {view.question_2}\n\nPerson 2's response: {view.response_2}")


@pytest.fixture
def openai_server(monkeypatch):
    state = ServerState()
    httpd, base_url = start_server(state)
    state.base_url = base_url
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    yield state
    httpd.shutdown()


@pytest.fixture
def anthropic_server(monkeypatch):
    state = AnthropicState()
    httpd, base_url = start_anthropic_server(state)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv(CLAUDE_KEY, CLAUDE_SECRET)
    yield state
    httpd.shutdown()


@pytest.mark.parametrize("judge, key", [("gpt", KEY_VARIABLE), ("gemma-vllm", "")])
def test_openai_compatible_judges_send_the_published_request(tmp_path, openai_server, judge, key):
    """The rubric as the system message, the pair alone as the user message, the published decoding, and
    the published schema: string key points, an integer score with minimum -2 and maximum 2, every field
    required, no other field, no `strict`. The server's reply (key points as one string) is read."""
    path = variant(tmp_path, judge, base_url=openai_server.base_url, api_key_env=key)
    table, _ = run_judge(path, [PAIR], tmp_path / "c.sqlite3")
    (request,) = [entry["body"] for entry in openai_server.log]
    assert request["model"] == load_judge_config(judge).settings["model"]
    assert request["messages"] == [{"role": "system", "content": faithful("valbench-v2.txt").system},
                                   {"role": "user", "content": published_user_message()}]
    assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.1, 0.9, 2048)
    form = request["response_format"]
    assert form["type"] == "json_schema" and "strict" not in form["json_schema"]
    schema = form["json_schema"]["schema"]
    assert schema == judgment_schema("v2") and schema["additionalProperties"] is False
    assert schema["required"] == list(schema["properties"]) == [
        "person_1_core_position", "person_1_has_no_information", "person_1_refusal", "person_2_core_position",
        "person_2_has_no_information", "person_2_refusal", "key_points_of_alignment", "key_points_of_opposition",
        "alignment_score"]
    assert schema["properties"]["key_points_of_alignment"] == schema["properties"]["key_points_of_opposition"] == \
        {"type": "string"}
    assert schema["properties"]["alignment_score"] == {"type": "integer", "minimum": -2, "maximum": 2}
    assert table["parse_status"].tolist() == ["ok"] and table["alignment_score"].tolist() == [-2]
    assert '"key_points_of_alignment": ""' in table["raw_output"][0]  # the reply's types are the schema's


def test_the_reader_takes_key_points_as_a_string_or_a_list():
    reply = {"person_1_core_position": "a", "person_1_has_no_information": False, "person_1_refusal": False,
             "person_2_core_position": "b", "person_2_has_no_information": False, "person_2_refusal": False,
             "key_points_of_alignment": "both want safer streets", "key_points_of_opposition": "",
             "alignment_score": 1}
    fields = validate_fields(reply)
    assert fields["key_points_of_alignment"] == ["both want safer streets"] and fields["key_points_of_opposition"] == []
    listed = validate_fields({**reply, "key_points_of_alignment": ["one", "two"]})
    assert listed["key_points_of_alignment"] == ["one", "two"]
    with pytest.raises(ValueError, match="'key_points_of_opposition' must be a string or a list of strings"):
        validate_fields({**reply, "key_points_of_opposition": {"point": "x"}})


def test_claude_sends_the_published_claude_request_and_reads_its_text_reply(tmp_path, anthropic_server):
    """Temperature 0.1 (under the API version that accepts it), no top_p, no tools, no schema; the reply is
    JSON in prose, read by the reader every judge uses."""
    path = variant(tmp_path, "claude", api_key_env=CLAUDE_KEY)
    table, _ = run_judge(path, [PAIR], tmp_path / "c.sqlite3")
    (entry,) = anthropic_server.log
    request = entry["body"]
    assert request["system"] == faithful("valbench-v2.txt").system  # the rubric is the system prompt
    assert request["messages"] == [{"role": "user", "content": published_user_message()}]  # the pair alone
    assert request["temperature"] == 0.1 and request["max_tokens"] == 2048
    assert not {"top_p", "top_k", "tools", "tool_choice", "output_config"} & set(request)
    assert entry["headers"]["anthropic-version"] == LEGACY_API_VERSION
    reply = table["raw_output"][0]
    assert reply.startswith("Here is my assessment:") and "```json" in reply  # text, not a tool call
    assert table["parse_status"].tolist() == ["ok"] and table["alignment_score"].tolist() == [-2]


def test_claude_openai_compat_follows_the_published_claude_settings():
    settings = load_judge_config("claude-openai-compat").settings
    assert (settings["temperature"], settings["top_p"], settings["response_format"]) == (0.1, "unset", "none")
    body, _ = make_backend(load_judge_config("claude-openai-compat")).build_request(view_of(PAIR, "forward"))
    assert body["temperature"] == 0.1 and "top_p" not in body and "response_format" not in body


@pytest.mark.parametrize("output", ["strict_tool", "json_schema"])
def test_anthropic_structured_outputs_drop_only_the_bounds_they_refuse(tmp_path, anthropic_server, output):
    path = variant(tmp_path, "claude-tool", api_key_env=CLAUDE_KEY, output=output)
    table, _ = run_judge(path, [PAIR], tmp_path / "c.sqlite3")
    (entry,) = anthropic_server.log  # not refused: one request
    request = entry["body"]
    schema = request["tools"][0]["input_schema"] if output == "strict_tool" else \
        request["output_config"]["format"]["schema"]
    published = judgment_schema("v2")
    assert schema["properties"]["alignment_score"] == {"type": "integer"}
    assert {**schema, "properties": {**schema["properties"], "alignment_score": {}}} == \
        {**published, "properties": {**published["properties"], "alignment_score": {}}}
    assert table["parse_status"].tolist() == ["ok"]


def test_a_published_evaluator_file_is_sent_verbatim(tmp_path, openai_server):
    """EVALUATE_SYSTEM_PROMPT as the system message and OUTPUT_JSON_SCHEMA as the schema, byte for byte,
    read without running the file (it would exit), its hash in the config hash."""
    evaluator = write_evaluator(tmp_path)
    path = variant(tmp_path, "gpt", base_url=openai_server.base_url, api_key_env=KEY_VARIABLE, prompt="",
                   published_evaluator="evaluator_flow.py")
    table, _ = run_judge(path, [PAIR], tmp_path / "c.sqlite3")
    (entry,) = openai_server.log
    assert entry["body"]["messages"] == [{"role": "system", "content": SYSTEM_PROMPT},  # trailing spaces and all
                                         {"role": "user", "content": published_user_message()}]
    assert entry["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert table["parse_status"].tolist() == ["ok"]
    config = load_judge_config(path)
    evaluator.write_text(evaluator.read_text() + "# a comment changes no constant, but the file\n")
    assert load_judge_config(path).config_hash != config.config_hash != load_judge_config("gpt").config_hash


def test_claude_with_a_published_evaluator_sends_its_system_text_and_no_schema(tmp_path, anthropic_server):
    write_evaluator(tmp_path)
    path = variant(tmp_path, "claude", api_key_env=CLAUDE_KEY, prompt="", published_evaluator="evaluator_flow.py")
    run_judge(path, [PAIR], tmp_path / "c.sqlite3")
    (entry,) = anthropic_server.log
    assert entry["body"]["system"] == SYSTEM_PROMPT and not {"tools", "output_config"} & set(entry["body"])


@pytest.mark.parametrize("source, message", [
    ("EVALUATE_SYSTEM_PROMPT = 'rubric'\n", r"has no top-level OUTPUT_JSON_SCHEMA; is it the public evaluator"),
    ("OUTPUT_JSON_SCHEMA = {'properties': {}}\n", r"has no top-level EVALUATE_SYSTEM_PROMPT"),
    ("EVALUATE_SYSTEM_PROMPT = load('rubric.txt')\nOUTPUT_JSON_SCHEMA = {'properties': {}}\n",
     r"EVALUATE_SYSTEM_PROMPT in .* \(line 1\) is not a literal"),
    ("EVALUATE_SYSTEM_PROMPT = 'rubric'\nOUTPUT_JSON_SCHEMA = ['a']\n",
     r"OUTPUT_JSON_SCHEMA in .* is not a JSON schema"),
    ("def broken(:\n", r"is not Python source"),
])
def test_a_file_without_the_two_literal_constants_is_a_one_line_error(tmp_path, source, message):
    write_evaluator(tmp_path, source)
    path = variant(tmp_path, "gpt", prompt="", published_evaluator="evaluator_flow.py")
    with pytest.raises(CalibrateError, match=message) as error:
        load_judge_config(path)
    assert "\n" not in str(error.value) and "evaluator_flow.py" in str(error.value)
    result = cli("judges", "check", str(tmp_path / "evaluator_flow.py"))
    assert result.returncode != 0 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr)


def test_a_judge_takes_one_prompt_source(tmp_path):
    write_evaluator(tmp_path)
    with pytest.raises(CalibrateError, match="exactly one"):
        load_judge_config(variant(tmp_path, "gpt", published_evaluator="evaluator_flow.py"))  # prompt still set


def test_judges_check_compares_a_judge_with_the_file_point_by_point(tmp_path):
    evaluator = write_evaluator(tmp_path)
    result = cli("judges", "check", str(evaluator), "--judge", "gpt")
    assert result.returncode == 0, result.stderr
    lines = {line.split(None, 1)[1].split(": published ")[0]: line.split(None, 1)[0]
             for line in result.stdout.splitlines()[1:-1]}
    assert lines["system prompt"] == "DIFFERS"  # our own words, not the file's
    assert all(lines[f"scale {value:+d} name '{name}'"] for value, name in SCALE_NAMES.items())
    assert lines["scale -1 name 'Moderately Opposed'"] == "DIFFERS"  # the stand-in file does not name it
    for name in SCHEMA["properties"]:
        assert lines[f"field {name} type"] == "same" and lines[f"field {name} in the prompt"] == "same"
    for point in ("schema: required", "schema: additionalProperties", "schema on the wire", "schema: strict",
                  "decoding: temperature", "decoding: top_p", "decoding: max_tokens", "answers cut at (characters)",
                  "user message"):
        assert lines[point] == "same", point
    assert "field person_1_refusal type: published boolean; gpt boolean" in result.stdout
    assert result.stdout.splitlines()[-1] == f"{list(lines.values()).count('DIFFERS')} of {len(lines)} points differ"
    tool = cli("judges", "check", str(evaluator), "--judge", "claude-tool")
    assert tool.returncode == 0
    for point in ("decoding: temperature: published 0.1; claude-tool not sent",
                  "field alignment_score type: published integer, minimum -2, maximum 2; claude-tool integer",
                  "schema on the wire: published not sent; claude-tool sent", "schema: strict: published not set; "
                  "claude-tool true"):
        assert f"DIFFERS  {point}" in tool.stdout, point
    path = variant(tmp_path, "gpt", prompt="", published_evaluator="evaluator_flow.py")
    same = cli("judges", "check", str(evaluator), "--judge", path)
    assert "same     system prompt: published the file's text; gpt-loopback the file's text" in same.stdout
    assert same.stdout.splitlines()[-1] == f"0 of {len(lines)} points differ"


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
