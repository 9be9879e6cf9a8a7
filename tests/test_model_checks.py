"""What the server says of the judge's model, asked once before any judging, and settings a model refuses.

Claude judges ask the Models API (GET /v1/models/{id}) for the model's lifecycle: retired or unknown stops
the run with one line and nothing else sent, deprecated is a warning with the retirement date, a server
without the endpoint only a warning. OpenAI-compatible judges check the server's model list where it has
one. A 400 saying the model refuses the judge's sampling settings stops the run at once with one line,
never taken for a structured-output rejection. The real SDKs run against the loopback servers.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from calibrate.errors import CalibrateError
from calibrate.judging.base import FailureKind
from calibrate.judging.calls import CallFailed
from calibrate.judging.openai_backend import matches
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.remote import refused_settings
from tests.fakes.claude_judges import SECRET as CLAUDE_SECRET
from tests.fakes.claude_judges import write_claude
from tests.fakes.judges import SECRET, pairs, run_judge, write_judge
from tests.fakes.openai_server import SHUTDOWN_POLL_S
from tests.inprocess import cli

SETS = "unaligned-0,aligned-100,refusal-100,one-refusal-50"
LOOKUP = "GET /v1/models/{}"


@pytest.fixture
def claude(anthropic_server):
    return anthropic_server


@pytest.fixture
def server(openai_server):
    return openai_server


def fit(judge, out, *extra: str):
    return cli("fit", "--judge", str(judge), "--out", str(out), "--bootstrap", "100", "--no-progress", *extra)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --------------------------------------------------------------------------- Claude: the Models API


@pytest.mark.parametrize("lifecycle", ["retired", "deprecated"])
def test_the_bundled_claude_judge_checks_its_model_before_judging(claude, tmp_path, monkeypatch, lifecycle):
    """`calibrate fit --judge claude`, the shipped config as it is (faithful prompt, current model)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", CLAUDE_SECRET)
    model = load_judge_config("claude").settings["model"]
    claude.set_model(model, lifecycle, "2027-03-01T00:00:00Z" if lifecycle == "deprecated" else None)
    result = fit("claude", tmp_path / "out", "--limit", "4")
    if lifecycle == "retired":
        assert result.returncode == 2 and f"'{model}' is retired" in one_line(result.stderr)
        assert claude.requests == {LOOKUP.format(model): 1} and not claude.log  # nothing sent but the lookup
    else:
        assert result.returncode == 0, result.stderr
        assert f"'{model}'" in result.stderr and "2027-03-01" in result.stderr and "deprecated" in result.stderr
        calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
        assert calibration["summary"]["n_judged"] == 16 and calibration["judge"]["prompt"] == "valbench-v2.txt"


def test_a_retired_model_stops_the_run_before_any_judging_request(claude, tmp_path):
    claude.set_model("claude-old", "retired")
    judge = write_claude(tmp_path, name="claude", model="claude-old")
    result = fit(judge, tmp_path / "out")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "judge 'claude'" in line and "'claude-old' is retired" in line and str(judge) in line
    assert claude.requests == {LOOKUP.format("claude-old"): 1}  # the lookup, and nothing else
    assert not claude.log and not (tmp_path / "out").exists()


def test_a_deprecated_model_is_a_warning_with_its_retirement_date_and_the_run_completes(claude, tmp_path):
    claude.set_model("claude-fading", "deprecated", retires_at="2099-11-30T00:00:00Z")
    judge = write_claude(tmp_path, model="claude-fading")
    out = tmp_path / "out"
    result = fit(judge, out, "--limit", "3", "--sets", SETS)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert len(warnings) == 1 and "'claude-fading'" in warnings[0] and "2099-11-30" in warnings[0]
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["run"]["judged"] == 12 and len(claude.log) == 12
    assert claude.requests[LOOKUP.format("claude-fading")] == 1  # once per run, however often preflight runs


def test_a_deprecated_model_without_a_date_says_so(claude, tmp_path, caplog):
    claude.set_model("claude-fading", "deprecated")
    table, counts = run_judge(write_claude(tmp_path, model="claude-fading"), pairs(2), tmp_path / "c.sqlite3")
    assert counts["judged"] == 2
    assert "'claude-fading' is deprecated" in caplog.text and "no date announced" in caplog.text


def test_an_unknown_model_stops_the_run_naming_it(claude, tmp_path):
    claude.set_model("claude-typo", "unknown")
    result = fit(write_claude(tmp_path, model="claude-typo"), tmp_path / "out")
    assert result.returncode == 2
    assert "'claude-typo' is not known to the Models API" in one_line(result.stderr)
    assert claude.requests == {LOOKUP.format("claude-typo"): 1} and not claude.log


def test_an_active_model_passes_silently_with_one_lookup_carrying_the_key(claude, tmp_path, caplog):
    table, counts = run_judge(write_claude(tmp_path), pairs(3), tmp_path / "c.sqlite3")
    assert counts["judged"] == 3 and not caplog.records
    assert claude.requests == {LOOKUP.format("claude-test"): 1, "POST /v1/messages": 3}


def test_a_server_without_the_models_api_only_costs_a_warning(claude, tmp_path, caplog):
    claude.models_api = False  # a gateway: 404 with a body that is not the API's
    table, counts = run_judge(write_claude(tmp_path), pairs(3), tmp_path / "c.sqlite3")
    assert counts["judged"] == 3
    assert sum("has no Models API" in message for message in caplog.messages) == 1


def test_a_failing_lookup_is_retried_then_only_warns(claude, tmp_path, caplog):
    claude.models_api_faults.extend(["500", "529"])  # retried by the call layer, then answered
    run_judge(write_claude(tmp_path, model="claude-x"), pairs(1), tmp_path / "c.sqlite3")
    assert claude.requests[LOOKUP.format("claude-x")] == 3 and not caplog.records
    claude.models_api_faults.extend(["500"] * 3)  # max_retries=2: three attempts, all failing
    table, counts = run_judge(write_claude(tmp_path, model="claude-y", max_retries=2), pairs(1),
                              tmp_path / "c.sqlite3")
    assert counts["judged"] == 1 and claude.requests[LOOKUP.format("claude-y")] == 3
    assert sum("could not ask the Models API" in message for message in caplog.messages) == 1


def test_a_refused_key_at_the_lookup_stops_the_run_as_any_call_does(claude, tmp_path):
    claude.models_api_faults.append("401")
    result = fit(write_claude(tmp_path), tmp_path / "out")
    assert result.returncode == 2 and "HTTP 401" in one_line(result.stderr)
    assert not claude.log


# --------------------------------------------------------------------------- OpenAI-compatible: the model list


def test_a_model_the_server_does_not_list_stops_the_run_naming_what_it_serves(server, tmp_path):
    server.served_models = [f"served-{i}" for i in range(12)]
    judge = write_judge(tmp_path, server.base_url, model="test-judge")
    result = fit(judge, tmp_path / "out")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "'test-judge' is not served at" in line and server.base_url in line and str(judge) in line
    assert all(f"served-{i}," in line for i in range(10)) and "served-10" not in line and "12 in all" in line
    assert not server.log and len(server.models_log) == 1 and not (tmp_path / "out").exists()


def test_a_listed_model_is_judged_and_the_listing_carries_the_key_to_the_base_url(server, tmp_path):
    server.served_models = ["other", "test-judge"]
    out = tmp_path / "out"
    result = fit(write_judge(tmp_path, server.base_url), out, "--limit", "2", "--sets", SETS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "calibration.json").read_text())["run"]["judged"] == 8
    assert [entry["authorization"] for entry in server.models_log] == [f"Bearer {SECRET}"]  # once per run


def test_a_server_without_a_model_list_is_judged_unchecked(server, tmp_path):
    assert server.served_models is None  # GET /v1/models answers 404
    out = tmp_path / "out"
    result = fit(write_judge(tmp_path, server.base_url, model="anything-at-all"), out, "--limit", "2", "--sets", SETS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "calibration.json").read_text())["run"]["judged"] == 8
    assert len(server.models_log) == 1 and "warning" not in result.stderr


class Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # http.server names it
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        """Quiet."""


def test_the_model_list_request_never_follows_a_redirect_with_the_key(server, tmp_path):
    server.served_models = ["nothing-like-it"]
    elsewhere = server.base_url.removesuffix("/v1")
    redirect = ThreadingHTTPServer(("127.0.0.1", 0), type("To", (Redirect,), {"target": elsewhere}))
    threading.Thread(target=redirect.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True).start()
    try:
        judge = write_judge(tmp_path, f"http://127.0.0.1:{redirect.server_port}/v1")
        make_backend(load_judge_config(str(judge))).preflight()  # a 307 is no list: unchecked, no error
    finally:
        redirect.shutdown()
        redirect.server_close()
    assert not server.models_log  # the key never reached the other server


@pytest.mark.parametrize(("model", "served", "ok"), [
    ("gemma3", ["gemma3:latest"], True), ("gemma3:27b", ["gemma3:4b", "gemma3:latest"], False),
    ("gemini-2.0-flash", ["models/gemini-2.0-flash"], True), ("vendor/model:nitro", ["vendor/model"], True),
    ("gpt-4.1", ["gpt-4.1-mini", "gpt-4o"], False),
])
def test_model_names_match_as_servers_resolve_them(model, served, ok):
    assert matches(model, served) is ok


# --------------------------------------------------------------------------- settings a model refuses


def test_claude_refusing_temperature_with_top_p_stops_the_run_at_the_first_such_400(claude, tmp_path):
    claude.refuses_temperature_with_top_p = True
    claude.rejects_strict = True  # a structured-output fallback is there to be wrongly taken
    judge = write_claude(tmp_path, temperature=0.1, top_p=0.9)
    result = fit(judge, tmp_path / "out")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "the model refuses these settings (temperature and top_p cannot both be specified" in line
    assert 'set top_p = "unset" in ' + str(judge) in line and "judge 'claude-loopback'" in line
    assert 1 <= len(claude.log) <= 4 < 180  # the requests in flight when the first refusal came, of 180
    assert all(entry["body"]["tools"][0].get("strict") for entry in claude.log)  # never re-asked without it


def test_an_openai_model_refusing_a_setting_stops_the_run_naming_it(server, tmp_path):
    server.refuses_setting = "temperature"
    server.rejects_response_format = True
    judge = write_judge(tmp_path, server.base_url, concurrency=2)
    with pytest.raises(CalibrateError, match=r"""refuses these settings \(Unsupported parameter: 'temperature'.*"""
                                             r"""set temperature = "unset" in """):
        run_judge(judge, pairs(40), tmp_path / "c.sqlite3")
    assert 1 <= len(server.log) <= 2 and all("response_format" in entry["body"] for entry in server.log)


def test_structured_output_rejections_still_fall_back_when_settings_are_accepted(claude, tmp_path, caplog):
    claude.rejects_strict = True
    table, counts = run_judge(write_claude(tmp_path, temperature=0.1, top_p=0.9), pairs(4), tmp_path / "c.sqlite3")
    assert counts["judged"] == 4 and "rejected structured output" in caplog.text


@pytest.mark.parametrize(("message", "refused"), [
    ("temperature and top_p cannot both be specified for this model", ["temperature", "top_p"]),
    ("Unsupported parameter: 'top_p' is not supported with this model.", ["top_p"]),
    ("Unsupported value: 'temperature' does not support 0.1 with this model. Only the default (1) value is "
     "supported.", ["temperature"]),
    ("temperature: Extra inputs are not permitted", ["temperature"]),
    ("top_k is not allowed for this model", []),  # not a setting the request carried
    ("strict tools are not supported for this model", []),
    ("unsupported parameter: response_format", []),
    ("temperature: range is 0..1", []),
])
def test_refused_settings_are_read_from_the_servers_words(message, refused):
    body = {"model": "m", "temperature": 0.1, "top_p": 0.9, "messages": []}
    bad, failing = FailureKind.BAD_REQUEST, FailureKind.SERVER_ERROR
    assert refused_settings(body, CallFailed(bad, f"HTTP 400: {message}", 1, 400, message)) == refused
    assert refused_settings(body, CallFailed(failing, f"HTTP 500: {message}", 1, 500, message)) == []
