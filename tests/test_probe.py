"""Fast, clear failure when the judge's endpoint cannot be used: the reachability check before judging
(judging/preflight.py: closed port, unknown host, TLS spoken to a plain server, each named), a wrong
endpoint path (404), and the circuit breaker that stops a run whose server went away mid-run, keeping
every judgment received so the rerun judges the rest."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from calibrate.errors import CalibrateError
from calibrate.judging.preflight import check_ready
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests.fakes.judges import pairs, write_judge
from tests.fakes.openai_server import ServerState, start_server
from tests.inprocess import cli


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_fit_against_a_closed_port_ends_at_once_with_the_url_and_the_cause(tmp_path, monkeypatch):
    """Through the CLI, as a user meets it: one line naming the URL and the cause, exit 2, in seconds
    (the issue allows 20 s; without the probe every item was retried for a minute)."""
    monkeypatch.setenv("CALIBRATE_TEST_JUDGE_KEY", "sk-test-probe")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    judge = write_judge(tmp_path, url, max_retries=6)
    started = time.monotonic()
    result = cli("fit", "--judge", str(judge), "--limit", "2", "--no-progress", "--out", str(tmp_path / "out"))
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and elapsed < 20, (elapsed, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach {url} (connection refused" in lines[0], result.stderr


@pytest.mark.parametrize("where, cause", [
    ("http://no-such-host.invalid/v1", "the host name no-such-host.invalid does not resolve"),
    ("https://127.0.0.1:{port}/v1", "the TLS handshake with 127.0.0.1:{port} failed"),
])
def test_an_unknown_host_or_a_failed_tls_handshake_is_named(openai_server, tmp_path, where, cause):
    """The cause, not only that the endpoint is unreachable: a name that does not resolve, TLS spoken to a
    server that speaks plain http."""
    port = openai_server.base_url.rsplit(":", 1)[1].split("/")[0]
    url = where.format(port=port)
    backend = make_backend(load_judge_config(str(write_judge(tmp_path, url, api_key_env="", allow_cleartext=True))))
    with pytest.raises(CalibrateError, match=re.escape(f"cannot reach {url} ({cause.format(port=port)}")):
        check_ready([backend])
    assert not openai_server.log


def test_a_wrong_endpoint_path_stops_at_the_first_request(anthropic_server, tmp_path):
    """An OpenAI-style judge pointed at a server without /v1/chat/completions (404): one request, then one
    line naming the URL, not a retry of every item."""
    url = f"{anthropic_server.base_url}/v1"
    backend = make_backend(load_judge_config(str(write_judge(tmp_path, url, concurrency=1, api_key_env=""))))
    with JudgmentStore(tmp_path / "c.sqlite3") as store, pytest.raises(CalibrateError, match=f"{url}: HTTP 404"):
        judge_pairs(backend, pairs(6), store, show_progress=False)
    assert anthropic_server.requests["POST /v1/chat/completions"] == 1


def test_the_circuit_breaker_stops_a_run_whose_server_went_away_and_the_rerun_judges_the_rest(tmp_path, monkeypatch):
    """The server answers 5 requests, then resets every connection and stops listening. With retries
    to spare (max_retries 6) each item would be retried for seconds; the breaker stops the run after
    5 connection failures in a row over its window (0.3 s here, 10 s by default), naming the URL and the
    cause. The 5 judgments are kept; a server restarted on the same port is asked for exactly the rest."""
    monkeypatch.setenv("CALIBRATE_TEST_JUDGE_KEY", "sk-test-probe")
    state = ServerState(die_after=5)
    httpd, base_url = start_server(state)

    def close_listener() -> None:
        if state.died.wait(30):
            httpd.shutdown()
            httpd.server_close()

    threading.Thread(target=close_listener, daemon=True).start()
    config = load_judge_config(str(write_judge(tmp_path, base_url, concurrency=4, max_retries=6)))
    backend = make_backend(config)
    backend.pacer.breaker_s = 0.3
    items = pairs(12)
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        with pytest.raises(CalibrateError, match=f"{base_url}: connection failed.*connection failures in a row"):
            judge_pairs(backend, items, store, show_progress=False)
        kept = store.get_many(config.config_hash, [(p.content_key, "forward", 0) for p in items])
    assert len(kept) == 5 and len(state.log) == 5

    again = ServerState()
    httpd, restarted = start_server(again, int(base_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        with JudgmentStore(tmp_path / "c.sqlite3") as store:
            _, counts = judge_pairs(make_backend(config), items, store, show_progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert restarted == base_url and counts["judged"] == 7 and counts["reused"] == 5 and len(again.log) == 7


def test_the_circuit_breaker_counts_connections_that_time_out_before_they_open(tmp_path, monkeypatch):
    """A listener whose accept queue is full: the kernel drops every new SYN, so no connection opens and
    each attempt times out connecting (aiohttp, the default transport). That is a connection failure,
    not a slow reply: the breaker stops the run (its window 0.3 s here) instead of retrying every item."""
    monkeypatch.setenv("CALIBRATE_TEST_JUDGE_KEY", "sk-test-probe")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]  # the queue holds one; the rest wait in SYN retries
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        backend = make_backend(load_judge_config(str(write_judge(tmp_path, url, timeout_s=0.4, max_retries=6))))
        backend.pacer.breaker_s = 0.3
        try:
            with JudgmentStore(tmp_path / "c.sqlite3") as store, pytest.raises(
                    CalibrateError, match=f"{url}: timed out connecting.*connection failures in a row"):
                judge_pairs(backend, pairs(8), store, show_progress=False)
        finally:
            for filler in fillers:
                filler.close()
