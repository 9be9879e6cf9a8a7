"""Pacing at the provider's rate limits: the headers read, request and token limits respected against
loopback servers that enforce them (tests/fakes: `RateLimit`), retry-after pausing every start, servers
without headers left unpaced, and a run with transient failures that says so and exits 3 through the CLI.

The throughput at a limit (>= 90% of it over 2,000 judgments) is measured by benchmarks/bench_rate_limits.py,
not here: these tests use small, fast limits and assert what the server refused."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from calibrate.cli.progress import ProgressBars
from calibrate.judging.calls import Pacer, PacingStats, announced_limits, reset_seconds
from calibrate.judging.progress import ProgressCounter
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests.fakes.claude_judges import write_claude
from tests.fakes.judges import pairs, write_judge
from tests.fakes.openai_server import RateLimit
from tests.inprocess import cli


def test_limit_headers_of_both_providers_are_read():
    openai = {"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2999",
              "x-ratelimit-reset-requests": "20ms", "x-ratelimit-limit-tokens": "150000",
              "x-ratelimit-remaining-tokens": "149000", "x-ratelimit-reset-tokens": "6m0s"}
    assert announced_limits(openai) == {"requests": (3000.0, 2999.0, 0.02), "tokens": (150000.0, 149000.0, 360.0)}
    in_two_seconds = (datetime.now(UTC) + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    anthropic = {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
                 "anthropic-ratelimit-requests-reset": in_two_seconds,
                 "anthropic-ratelimit-input-tokens-limit": "40000", "anthropic-ratelimit-input-tokens-remaining": "0",
                 "anthropic-ratelimit-input-tokens-reset": in_two_seconds}
    limits = announced_limits(anthropic)
    assert set(limits) == {"requests", "input tokens"} and limits["input tokens"][:2] == (40000.0, 0.0)
    assert 1.5 < limits["requests"][2] <= 2.0
    assert reset_seconds("1h2m3.5s") == 3723.5 and reset_seconds("1.5") == 1.5
    assert reset_seconds("soon") is None and announced_limits({"x-ratelimit-limit-requests": "n/a"}) == {}


def run_limited(backend: str, tmp_path, server, n: int, concurrency: int = 16, **overrides):
    """Judge n pairs against a limited server; the table, the run counts and the backend."""
    path = (write_judge(tmp_path, server.base_url, concurrency=concurrency, timeout_s=5.0, max_retries=6, **overrides)
            if backend == "openai" else write_claude(tmp_path, concurrency=concurrency, timeout_s=5.0, max_retries=6,
                                                      **overrides))
    judge = make_backend(load_judge_config(str(path)))
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, counts = judge_pairs(judge, pairs(n), store)
    return table, counts, judge


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_a_judge_paces_itself_at_the_announced_request_limit(backend, tmp_path, request):
    """1,200 requests a minute (a bucket of 20, refilled at 20/s), 16 workers, no requests_per_minute set:
    unpaced, 16 workers against a 10 ms server would ask ~1,600 times a second and meet a storm of 429s.
    Paced from the headers, every pair is judged and the server refuses at most one request."""
    server = request.getfixturevalue(f"{backend}_server")
    server.latency_s = 0.01
    limits = {"requests": 1200} if backend == "openai" else {"requests": 1200, "input-tokens": 10**8,
                                                             "output-tokens": 10**8}
    server.rate_limit = RateLimit(limits)
    table, counts, judge = run_limited(backend, tmp_path, server, 50)
    assert counts["judged"] == 50 and (table["parse_status"] == "ok").all()
    assert server.rate_limit.refused <= 1, server.rate_limit.refused
    assert counts["rate_limited"] == server.rate_limit.refused  # the run counts the 429s the server sent
    assert counts["limit_wait_s"] > 0.5  # 30 of the 50 requests had to wait for the refill (1.5 s at 20/s)
    assert judge.pacing().binding == "requests"


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_a_token_limit_binds_before_the_request_limit(backend, tmp_path, request):
    """Requests are allowed 100 a second, tokens only ~12 requests' worth a second: the judge estimates each
    request's tokens (characters, calibrated on the usage replies report) and keeps to the token limit
    (the first wave of 8, sent before any reply, fits in the bucket)."""
    server = request.getfixturevalue(f"{backend}_server")
    prompt_tokens = 570  # what a pairs() request to the guarded prompt counts (its characters / 4)
    if backend == "openai":
        limits = {"requests": 6000, "tokens": 60 * 12 * (prompt_tokens + 50)}
    else:
        limits = {"requests": 6000, "input-tokens": 60 * 12 * prompt_tokens, "output-tokens": 10**8}
    server.rate_limit = RateLimit(limits)
    _, counts, judge = run_limited(backend, tmp_path, server, 36)
    assert counts["judged"] == 36
    assert server.rate_limit.refused <= 1, server.rate_limit.refused
    assert judge.pacing().binding == ("tokens" if backend == "openai" else "input tokens")


def test_a_server_without_headers_is_not_paced(openai_server, tmp_path):
    _, counts, judge = run_limited("openai", tmp_path, openai_server, 20)
    assert counts["judged"] == 20 and counts["limit_wait_s"] == 0 and counts["rate_limited"] == 0
    assert judge.pacing().binding == ""


def test_retry_after_on_a_429_holds_every_start_back():
    """Three workers wait to start; a 429 with retry-after 0.3 s arrives: none starts before it has passed."""
    async def go() -> list[float]:
        pacer = Pacer()
        ticket = await pacer.acquire()
        pacer.observe(ticket, {"retry-after": "0.3"}, 429)
        met = time.monotonic()
        tickets = await asyncio.gather(*(pacer.acquire() for _ in range(3)))
        assert pacer.stats.rate_limited == 1 and pacer.stats.binding == "retry-after"
        return [t.start - met for t in tickets]

    assert min(asyncio.run(go())) >= 0.29


def test_retry_after_pauses_the_run_and_the_rest_is_judged(openai_server, tmp_path):
    """The first reply of the run is a 429 with Retry-After: 1 (no limit headers): no request reaches the
    server within that second, and every pair is then judged once. (One worker: that every waiting worker
    is held back is the test above.)"""
    openai_server.queue("429-retry-after-1s")
    _, counts, _ = run_limited("openai", tmp_path, openai_server, 3, concurrency=1)
    times = [entry["time"] for entry in openai_server.log]
    assert counts["judged"] == 3 and counts["rate_limited"] == 1 and len(times) == 4
    assert min(times[1:]) - times[0] >= 0.95


def test_transient_failures_are_said_and_a_share_within_the_limit_exits_0(openai_server, tmp_path):
    """Through the CLI: the first four requests meet a 500 and no retry is allowed, 4 of 8 judgments fail;
    stderr says so and why, and with --max-failed-share 0.5 the run still counts as complete (exit 0).
    Past the share it exits 3: tests/test_faults.py (a server dying mid-run, replies past the timeout),
    where the rerun asks for exactly the failed pairs."""
    openai_server.queue("500", "500", "500", "500")
    path = write_judge(tmp_path, openai_server.base_url, max_retries=0, concurrency=2)
    args = ["fit", "--judge", str(path), "--out", str(tmp_path / "out"),
            "--limit", "2", "--sets", "unaligned-0,aligned-100,refusal-100,one-refusal-50", "--no-progress",
            "--bootstrap", "100", "--max-failed-share", "0.5"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert "4 of 8 judgments (50.0%) failed this run" in result.stderr
    assert "  server_error 4: HTTP 500: internal error" in result.stderr
    assert "incomplete run" not in result.stderr and len(openai_server.log) == 8


def test_the_progress_bar_shows_the_429s_and_the_binding_limit(capsys, monkeypatch):
    """As a person sees it, on a terminal 160 columns wide: the bar shows the rate, the 429s met and the
    limit holding starts back."""
    monkeypatch.setenv("COLUMNS", "160")
    pacing = PacingStats(rate_limited=3, binding="tokens", binding_at=time.monotonic())
    with ProgressCounter(ProgressBars(), "judging with gpt", 10, pacing) as show:
        show.add(4, 0.01, 1)
    shown = capsys.readouterr().out
    assert "/s" in shown and "1 failed" in shown and "3 × 429" in shown and "held by tokens limit" in shown
