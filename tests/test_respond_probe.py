"""A measured dry run of `respond` (`calibrate respond --dry-run --probe N`, `plan_respond(..., probe=N)`): N of
the run's own questions are asked of a loopback OpenAI-compatible server (counted on the server), priced before
they are sent and held to `max_cost`; their answers land in the cache and the real run asks only the rest; the
plan's latency and tokens come from what they measured (a server with a known delay). A probe none of whose
questions was answered stops with one line."""

from __future__ import annotations

import pytest

from calibrate import plan_respond, respond
from calibrate.data.prompts import load_prompts
from calibrate.errors import CalibrateError
from calibrate.judging.estimate import ASSUMED_LATENCY_S, SpendBudget, request_input_tokens
from calibrate.workflows.plan import Probe, ProbeQuote
from tests.fakes.openai_server import COMPLETION_TOKENS
from tests.inprocess import cli
from tests.test_respond import KEY_VARIABLE, SECRET, write_model, write_prompts

LATENCY_S = 0.3  # the server's delay before every reply
PAIRS = 6  # two distinct questions each: 12 requests for the whole run


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)


@pytest.fixture
def setup(openai_server, tmp_path):
    """The model config, the prompts file and the cache of one run."""
    model = str(write_model(tmp_path, openai_server.base_url, concurrency=2))
    prompts = str(write_prompts(tmp_path / "prompts.jsonl", PAIRS))
    return model, prompts, tmp_path / "cache.sqlite3"


def asked(server, start: int = 0) -> list[str]:
    """The questions the server was asked, in the order it saw them."""
    return [entry["body"]["messages"][-1]["content"] for entry in server.log[start:]]


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_probe_asks_n_questions_caches_the_answers_and_the_run_asks_only_the_rest(openai_server, setup):
    model, prompts, cache = setup
    plan = plan_respond(model, prompts=prompts, cache=cache, probe=4)
    assert len(openai_server.log) == 4  # exactly N requests, counted by the server
    (probe,) = plan.probes
    assert isinstance(probe, Probe)
    assert (probe.judge, probe.offline, probe.n_sent, probe.n_parsed, probe.requests) == ("loopback", False, 4, 4, 4)
    assert probe.parse_rate == 1.0 and probe.failures_by_kind == {} and probe.first_reasons == {}
    assert probe.cost_usd > 0 and probe.quoted_usd > 0
    (estimate,) = plan.estimates
    assert (estimate.cached, estimate.requests) == (4, 2 * PAIRS - 4)  # the probed questions are cached
    assert plan.to_dict()["probes"] == [probe.to_dict()] and Probe.from_dict(probe.to_dict()) == probe
    summary = respond(model, prompts=prompts, cache=cache).summary
    assert len(openai_server.log) - 4 == estimate.requests == summary.generated  # the run asks only the rest
    assert summary.reused == 4 and not set(asked(openai_server, 4)) & set(asked(openai_server)[:4])


def test_the_probe_picks_the_same_questions_evenly_spaced_every_time(openai_server, setup, tmp_path):
    """Picked from the run's own questions in its order (for, against, pair by pair), evenly spaced and
    deterministic: a probe on a fresh cache asks the same ones; a second probe on the same cache picks
    among what is left, never asks again."""
    model, prompts, cache = setup
    plan_respond(model, prompts=prompts, cache=cache, probe=3)
    plan_respond(model, prompts=prompts, cache=tmp_path / "other.sqlite3", probe=3)
    rows = load_prompts(prompts).rows
    in_order = [row[f"{side}_question"] for row in rows for side in ("for", "against")]
    first = asked(openai_server)[:3]
    assert sorted(first) == sorted(asked(openai_server)[3:]) == sorted(in_order[i] for i in (0, 4, 8))
    plan_respond(model, prompts=prompts, cache=cache, probe=3)
    assert len(openai_server.log) == 9 and not set(asked(openai_server, 6)) & set(first)


def test_latency_and_tokens_are_measured_by_the_probe(openai_server, setup):
    """A server that waits LATENCY_S before each reply: the plan's latency is the probe's median (at least
    that delay, never the 10 s assumed), its time the requests left at that latency at the model's
    concurrency; output tokens per answer are the replies' reported 50, and the input count is corrected
    by the ratio of the reported input tokens to the rendered ones."""
    model, prompts, cache = setup
    openai_server.latency_s = LATENCY_S
    unprobed = plan_respond(model, prompts=prompts, cache=cache).estimates[0]
    assert unprobed.latency_s == ASSUMED_LATENCY_S and unprobed.latency_basis.startswith("assumed")
    assert unprobed.output_basis == "typical" and unprobed.input_ratio == 1.0
    plan = plan_respond(model, prompts=prompts, cache=cache, probe=3)
    (probe,), (estimate,) = plan.probes, plan.estimates
    assert LATENCY_S <= probe.median_latency_s < ASSUMED_LATENCY_S
    assert estimate.latency_s == probe.median_latency_s and estimate.latency_basis == "median of 3 probed now"
    assert estimate.time_s == pytest.approx(estimate.requests * probe.median_latency_s / 2)
    assert estimate.output_tokens_per_request == probe.mean_output_tokens == COMPLETION_TOKENS
    assert estimate.output_basis == "mean of 3 probed now"
    rendered = sum(request_input_tokens({"messages": entry["body"]["messages"]}) for entry in openai_server.log)
    assert estimate.input_ratio != 1.0
    assert estimate.input_ratio == pytest.approx(3 * probe.mean_input_tokens / rendered)
    # a later plain plan takes the same from the cache's answers (the probe's), and says so
    cached = plan_respond(model, prompts=prompts, cache=cache).estimates[0]
    assert cached.latency_s == estimate.latency_s and cached.latency_basis == "median of 3 cached"
    assert cached.output_basis == "mean of 3 cached" and cached.input_tokens == estimate.input_tokens


def test_the_probe_is_priced_before_it_is_sent_and_held_to_max_cost(openai_server, setup, tmp_path):
    model, prompts, cache = setup
    seen: list[tuple[list[ProbeQuote], int]] = []
    budget = SpendBudget(1.0)
    plan = plan_respond(model, prompts=prompts, cache=cache, probe=2, max_cost=budget,
                        on_quote=lambda quotes: seen.append((quotes, len(openai_server.log))))
    ((quotes, sent_before),) = seen
    assert sent_before == 0 and [(q.judge, q.offline, q.requests) for q in quotes] == [("loopback", False, 2)]
    assert quotes[0].cost_usd == plan.probes[0].quoted_usd > 0
    assert plan.probes[0].cost_usd > 0
    assert budget.spent_usd == pytest.approx(plan.probes[0].cost_usd)  # the probe's spend counts against the cap
    # on a fresh cache the same two questions are quoted alike: a cap of half their price sends nothing
    with pytest.raises(CalibrateError, match=r"max_cost: the probe's 2 requests are priced at \$0\.\d+ .* nothing was"):
        plan_respond(model, prompts=prompts, cache=tmp_path / "fresh.sqlite3", probe=2,
                     max_cost=quotes[0].cost_usd / 2)
    assert len(openai_server.log) == 2


def test_cli_quotes_the_probe_then_plans_at_the_measured_latency(openai_server, setup):
    model, prompts, cache = setup
    openai_server.latency_s = LATENCY_S
    arguments = ("respond", "--model", model, "--prompts", prompts, "--cache", str(cache), "--dry-run")
    plain = cli(*arguments)
    assert plain.returncode == 0, plain.stderr
    assert ("10.0s each (assumed: calibrate's default of 10s, none measured in the cache); --probe 5 measures the "
            "latency with 5 real requests") in one_line(plain.stdout)
    probed = cli(*arguments, "--probe", "3", "--no-progress")
    assert probed.returncode == 0, probed.stderr
    assert len(openai_server.log) == 3
    assert one_line(probed.stderr).startswith("probe: sending 3 questions to model 'loopback', $0.0")
    out = one_line(probed.stdout)
    assert "dry run of `calibrate respond`: 3 probe requests sent (now cached), nothing else" in out
    assert "probe of loopback: 3 of 3 answered (100%); median latency 0.3" in out
    assert f"{COMPLETION_TOKENS} output tokens per answer; 3 requests, $0.0" in out
    assert "each (median of 3 probed now)" in out and "--probe 5 measures" not in out
    respond(model, prompts=prompts, cache=cache)
    cached = cli(*arguments, "--probe", "3", "--no-progress")  # nothing left to ask: nothing quoted or sent
    assert cached.returncode == 0, cached.stderr
    assert len(openai_server.log) == 2 * PAIRS and "probe:" not in cached.stderr
    assert "probe of loopback: nothing to send, every request of this run is cached" in one_line(cached.stdout)


def test_probe_needs_dry_run_and_a_whole_number(openai_server, setup):
    model, prompts, cache = setup
    result = cli("respond", "--model", model, "--prompts", prompts, "--cache", str(cache), "--probe", "2")
    assert result.returncode == 2 and result.stderr.startswith("error: --probe measures a dry run: add --dry-run")
    zero = cli("respond", "--model", model, "--prompts", prompts, "--cache", str(cache), "--dry-run", "--probe", "0")
    assert zero.returncode == 2 and "--probe" in zero.stderr
    for bad in (-1, True, 1.5):
        with pytest.raises(CalibrateError, match="^probe must be a whole number") as error:
            plan_respond(model, prompts=prompts, cache=cache, probe=bad)
        assert error.value.params == ("probe",)
    assert not openai_server.log and not cache.exists()


def test_a_probe_needs_the_key_and_says_so_before_anything_is_sent(openai_server, setup, monkeypatch):
    model, prompts, cache = setup
    monkeypatch.delenv(KEY_VARIABLE)
    assert plan_respond(model, prompts=prompts, cache=cache).missing_keys == [KEY_VARIABLE]  # a plain plan needs none
    with pytest.raises(CalibrateError, match=KEY_VARIABLE):
        plan_respond(model, prompts=prompts, cache=cache, probe=2)
    assert not openai_server.log


def test_failed_answers_are_counted_by_kind_and_only_the_usable_ones_cached(openai_server, setup):
    """One of three answers comes back empty: 2 of 3 answered, the failure by kind with its reason; the
    plan left counts the failed question as still to ask (a failure is never cached as an answer)."""
    model, prompts, cache = setup
    openai_server.queue("empty")
    result = cli("respond", "--model", model, "--prompts", prompts, "--cache", str(cache), "--dry-run",
                 "--probe", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert len(openai_server.log) == 3
    out = one_line(result.stdout)
    assert "probe of loopback: 2 of 3 answered (67%); empty 1: the model returned no text;" in out
    assert f"about {round(10 * 1 / 3)} of the 10 requests left would fail (a rerun asks again for those)" in out
    assert plan_respond(model, prompts=prompts, cache=cache).estimates[0].cached == 2


def test_a_probe_none_of_whose_questions_was_answered_is_one_line(openai_server, tmp_path):
    """Consistent with the judges' probe: one line with the failure kinds and the first reason, exit 2."""
    model = write_model(tmp_path, openai_server.base_url, max_retries=0)
    prompts = write_prompts(tmp_path / "prompts.jsonl", PAIRS)
    openai_server.queue(*["500"] * 3)
    result = cli("respond", "--model", model, "--prompts", prompts, "--cache", tmp_path / "c.sqlite3", "--dry-run",
                 "--probe", "3", "--no-progress")
    assert result.returncode == 2 and len(openai_server.log) == 3 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error == ["error: model 'loopback': none of the 3 probe requests came back answered (server_error 3; "
                     "first: HTTP 500: internal error); the failures are in the cache's failure log; fix the model "
                     "(or its server) and try again"]
