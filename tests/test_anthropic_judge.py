"""The `anthropic` backend against a real Messages API server on loopback: the official `anthropic` SDK
runs for real (with ANTHROPIC_BASE_URL pointing at the server); the server injects the faults."""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
import pytest

from calibrate.judging.anthropic_backend import TOOL_NAME, read_message, strict_schema
from calibrate.judging.base import judgment_schema
from calibrate.judging.registry import load_judge_config
from tests.fakes.anthropic_server import LEGACY_API_VERSION, AnthropicState, start_anthropic_server
from tests.fakes.claude_judges import KEY_VARIABLE, SECRET, write_claude
from tests.fakes.judges import pairs, run_judge
from tests.fakes.processes import files_written, kill_when_committed
from tests.inprocess import cli


@pytest.fixture
def server(monkeypatch):
    state = AnthropicState()
    httpd, base_url = start_anthropic_server(state)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    yield state
    httpd.shutdown()


@pytest.mark.parametrize("judge", ["claude", "claude-tool"])
def test_fit_with_the_shipped_claude_judge_judges_every_pair_once_through_faults(server, tmp_path, judge):
    server.queue("429", "429-retry-after-1s", "529", "529", "500", "malformed-tool-input", "missing-field",
                 "text-only", "refusal", "max-tokens")
    out = tmp_path / "out"
    # 10 pairs of each of the 5 sets: the shipped judge paces itself at 1,000 requests a minute (60 ms each)
    result = cli("fit", "--judge", judge, "--out", str(out), "--bootstrap", "200", "--limit", "10")
    assert result.returncode == 0, result.stderr
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["judge"]["backend"] == "anthropic"
    assert calibration["run"]["judged"] == 50 and calibration["run"]["failed"] == 0
    answered = [entry for entry in server.log if entry["fault"] is None]
    assert len(answered) == 50 and len({entry["prompt"] for entry in answered}) == 50  # once each
    assert calibration["run"]["requests"] == len(server.log) == 60  # each of the 10 faults cost one request
    retry_after = next(i for i, entry in enumerate(server.log) if entry["fault"] == "429-retry-after-1s")
    same_prompt = [e["time"] for e in server.log[retry_after + 1:] if e["prompt"] == server.log[retry_after]["prompt"]]
    assert same_prompt[0] - server.log[retry_after]["time"] >= 1.0  # Retry-After was honoured
    body = server.log[0]["body"]
    if judge == "claude":  # the published Claude call: temperature 0.1 only, no tools, no schema, JSON as text
        assert body["temperature"] == 0.1 and "top_p" not in body and body["system"]
        assert not {"tools", "tool_choice", "output_config"} & set(body)
        assert all(entry["headers"]["anthropic-version"] == LEGACY_API_VERSION for entry in server.log)
    else:  # the strict tool: the schema without the bounds Anthropic's structured outputs refuse
        assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
        assert body["tools"][0]["input_schema"] == strict_schema(judgment_schema("v2"))
        assert body["tools"][0]["strict"] is True and "minimum" not in json.dumps(body["tools"])
        assert "temperature" not in body and "top_p" not in body and body["system"]
    assert all(entry["api_key"] == SECRET for entry in server.log)
    judgments = pd.read_parquet(out / "judgments.parquet")
    assert (judgments["parse_status"] == "ok").all() and judgments["batch_id"].isna().all()
    # the list price: no judgment here came from a batch
    expected = (judgments["input_tokens"] * 3.0 + judgments["output_tokens"] * 15.0) / 1e6
    assert judgments["cost_usd"].to_numpy() == pytest.approx(expected.to_numpy())
    for path in files_written(tmp_path):
        assert SECRET.encode() not in path.read_bytes(), path


def test_missing_anthropic_key_is_one_line_before_any_request(server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    result = cli("fit", "--judge", "claude", "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "ANTHROPIC_API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert not server.log and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("fault", "status", "kind"), [
    ("refusal", "refused_to_judge", "refused_to_judge"), ("malformed-tool-input", "parse_error", "parse_error"),
    ("max-tokens", "truncated", "truncated"), ("529", "api_error", "server_error"),
    ("text-only", "parse_error", "parse_error")])
def test_persistent_faults_become_typed_failures_that_the_next_run_retries(server, tmp_path, fault, status, kind):
    items = pairs(6)
    server.by_marker[items[1].issue_description] = fault
    judge = write_claude(tmp_path, max_retries=2)
    table, counts = run_judge(judge, items, tmp_path / "c.sqlite3")
    failed = table[table["pair_id"] == 1].iloc[0]
    assert failed["parse_status"] == status and failed["failure_reason"] and failed["failure_kind"] == kind
    assert counts["judged"] == 5 and counts["failed"] == 1 and counts["failed_by_kind"] == {kind: 1}
    assert counts["transient_failed"] == (1 if fault == "529" else 0)
    asked = [entry for entry in server.log if entry["fault"] == fault]
    assert len(asked) == (3 if fault == "529" else 2)  # retries, or one question asked again
    del server.by_marker[items[1].issue_description]
    before = len(server.log)
    table, counts = run_judge(judge, items, tmp_path / "c.sqlite3")
    assert counts == {"judged": 1, "failed": 0, "reused": 5, "items": 6, "requests": 1,  # failures are not cached
                      "failed_by_kind": {}, "transient_failed": 0, "rate_limited": 0, "limit_wait_s": 0.0}
    assert len(server.log) == before + 1 and (table["parse_status"] == "ok").all()


def test_a_model_without_strict_tools_falls_back_to_a_plain_forced_tool_call(server, tmp_path, caplog):
    server.rejects_strict = True
    table, counts = run_judge(write_claude(tmp_path), pairs(5), tmp_path / "c.sqlite3")
    assert counts["judged"] == 5 and (table["parse_status"] == "ok").all()
    refused = [e for e in server.log if e["body"]["tools"][0].get("strict")]
    plain = [e for e in server.log if not e["body"]["tools"][0].get("strict")]
    assert 1 <= len(refused) <= 4 and len(plain) == 5  # requests in flight when the first refusal came
    assert all(e["body"]["tool_choice"]["name"] == TOOL_NAME for e in plain)
    assert "rejected structured output" in caplog.text


@pytest.mark.parametrize("output", ["json_schema", "text", "tool"])
def test_every_output_mode_reads_the_same_judgments(server, tmp_path, output):
    table, _ = run_judge(write_claude(tmp_path, output=output), pairs(6), tmp_path / "c.sqlite3")
    assert table["alignment_score"].tolist() == [2, -2, 2, -2, 2, -2]
    body = server.log[0]["body"]
    assert ("output_config" in body) == (output == "json_schema") and ("tools" in body) == (output == "tool")


def test_a_set_temperature_is_sent_under_the_api_version_that_accepts_it(server, tmp_path):
    table, _ = run_judge(write_claude(tmp_path, temperature=0.1), pairs(3), tmp_path / "c.sqlite3")
    assert (table["parse_status"] == "ok").all()  # the server refuses sampling parameters on the new version
    assert all(e["body"]["temperature"] == 0.1 and e["headers"]["anthropic-version"] == LEGACY_API_VERSION
               for e in server.log)
    unset, _ = run_judge(write_claude(tmp_path, name="unset"), pairs(3), tmp_path / "c.sqlite3")
    assert server.log[-1]["headers"]["anthropic-version"] != LEGACY_API_VERSION
    assert load_judge_config("claude").settings["temperature"] == 0.1  # the published Claude setting
    assert load_judge_config("claude-tool").settings["temperature"] == "unset"
    assert load_judge_config("claude-openai-compat").backend == "openai"


def test_sigkill_mid_run_then_resume_asks_only_for_what_was_missing(server, tmp_path):
    server.latency_s = 0.03
    judge = write_claude(tmp_path, concurrency=2)
    cache = tmp_path / "c.sqlite3"
    args = ["fit", "--judge", str(judge), "--out", str(tmp_path / "out"), "--cache", str(cache), "--bootstrap", "200"]
    committed = kill_when_committed([sys.executable, "-m", "calibrate", *args], cache, "judgments", 40)
    assert 40 <= committed < 180
    before = len(server.log)
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert calibration["run"]["reused"] == committed and calibration["run"]["judged"] == 180 - committed
    assert len(server.log) - before == 180 - committed


def message(content: list[dict], stop: str = "tool_use") -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
            "stop_reason": stop, "usage": {"input_tokens": 100, "output_tokens": 20}}


def test_read_message_validates_the_tool_input_and_types_every_failure():
    fields = {"person_1_core_position": "a", "person_1_has_no_information": False, "person_1_refusal": False,
              "person_2_core_position": "b", "person_2_has_no_information": False, "person_2_refusal": "true",
              "key_points_of_alignment": [], "key_points_of_opposition": ["x"], "alignment_score": "-1"}
    tool = {"type": "tool_use", "id": "t", "name": TOOL_NAME}
    ok = read_message(message([{"type": "text", "text": "thinking aloud {"}, {**tool, "input": fields}]))
    assert ok.parse_status == "ok" and ok.fields["alignment_score"] == -1 and ok.fields["person_2_refusal"] is True
    assert (ok.input_tokens, ok.output_tokens) == (100, 20) and json.loads(ok.raw_output)["alignment_score"] == "-1"
    from_text = read_message(message([{"type": "text", "text": "```json\n" + json.dumps(fields) + "\n```"}],
                                     "end_turn"))
    assert from_text.parse_status == "ok"
    assert read_message(message([{**tool, "input": {**fields, "alignment_score": 3}}])).parse_status == "parse_error"
    assert read_message(message([{**tool, "input": {}}], "max_tokens")).parse_status == "truncated"
    refused = read_message(message([{"type": "text", "text": "I won't."}], "refusal"))
    assert refused.parse_status == "refused_to_judge" and "I won't." in refused.failure_reason
    assert read_message(message([{**tool, "name": "other", "input": fields}])).parse_status == "parse_error"
    for broken in (b"not json", {"content": "a string"}, {"type": "message"}, 7):
        assert read_message(broken).parse_status == "parse_error"
