"""Fault tests of the whole CLI: `calibrate fit --judge PATH.toml` (in-process; a real process where a
signal or a second process is the point) against the loopback OpenAI-compatible server
(tests/fakes/openai_server.py), which dies, stalls, resets connections, or serves two runs at once; a run may
also be interrupted with SIGINT. Every test asserts on counts: the server's request log, the run counts in
calibration.json, and the rows of the SQLite cache.

The bundled sample has 36 pairs per set; `--limit N` judges 4 * N of them (order forward)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from calibrate.judging.transport import TRANSPORTS
from tests.fakes.openai_server import ServerState, start_server
from tests.inprocess import cli

PROMPTS = Path(__file__).resolve().parent.parent / "judges" / "prompts"
KEY_VARIABLE = "CALIBRATE_TEST_JUDGE_KEY"
SETS = "unaligned-0,aligned-100,refusal-100,one-refusal-50"  # explicit: the default list may grow
INTERRUPTED = "interrupted; finished judgments are kept in the cache"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, "sk-test-faults")


@pytest.fixture
def server():
    state = ServerState()
    httpd, base_url = start_server(state)
    state.base_url = base_url
    state.httpd = httpd
    yield state
    httpd.shutdown()
    httpd.server_close()


def write_judge(folder: Path, base_url: str, **overrides) -> Path:
    settings = {
        "name": "loopback", "backend": "openai", "model": "test-judge", "base_url": base_url,
        "api_key_env": KEY_VARIABLE, "prompt": str(PROMPTS / "valbench-v2-guarded.txt"), "rule": "v2",
        "concurrency": 2, "timeout_s": 1.0, "max_retries": 1, "parse_retries": 0, **overrides,
    }
    path = folder / f"{settings['name']}.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path


PROCESS = [sys.executable, "-m", "calibrate"]


def fit_args(judge: Path, out: Path, cache: Path, limit: int, *extra: str) -> list[str]:
    return ["fit", "--judge", str(judge), "--out", str(out), "--cache", str(cache),
            "--limit", str(limit), "--bootstrap", "100", "--no-progress", "--sets", SETS, *extra]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return cli(*args)


def calibration(out: Path) -> dict:
    return json.loads((out / "calibration.json").read_text())


def rows(cache: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(cache) as db:
        return db.execute(sql).fetchall()


def count(cache: Path, table: str = "judgments") -> int:
    return rows(cache, f"SELECT COUNT(*) FROM {table}")[0][0]


def assert_clean(result: subprocess.CompletedProcess, code: int = 0) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "database is locked" not in result.stderr, result.stderr


def assert_sound(cache: Path) -> None:
    """One row per key, and SQLite finds nothing wrong with the file."""
    assert rows(cache, "PRAGMA integrity_check") == [("ok",)]
    assert rows(cache, "SELECT config_hash, item_key, pair_order, repeat FROM judgments "
                       "GROUP BY config_hash, item_key, pair_order, repeat HAVING COUNT(*) > 1") == []
    assert rows(cache, "SELECT COUNT(*) FROM judgments WHERE parse_status != 'ok'") == [(0,)]


@pytest.mark.parametrize("answered", [20, 10])
def test_server_dying_mid_run_gives_typed_failures_and_a_restart_finishes_the_rest(server, tmp_path, answered):
    """The server answers K requests, then resets every connection and stops listening. The run
    retries each remaining item (max_retries=1: 2 requests each, all within a second: too fast for the
    circuit breaker), records typed api_error failures, and still writes its report, saying how many
    judgments failed and exiting 3 (past --max-failed-share), no traceback.
    A server restarted on the same port is asked
    exactly for the rest. Items are requested set by set (6 per set), so with K=10 the last two sets
    get no judgment at all."""
    total = 24
    server.die_after = answered

    def kill_listener() -> None:
        if server.died.wait(60):
            server.httpd.shutdown()
            server.httpd.server_close()

    threading.Thread(target=kill_listener, daemon=True).start()
    judge = write_judge(tmp_path, server.base_url)
    out, cache = tmp_path / "out", tmp_path / "c.sqlite3"
    result = run(fit_args(judge, out, cache, total // 4))
    first = calibration(out)["run"]
    assert len(server.log) == answered and all(r["fault"] is None for r in server.log)
    assert first["judged"] == answered and first["failed"] == total - answered and first["reused"] == 0
    assert first["requests"] == answered + 2 * (total - answered)  # each lost item: the request and one retry
    assert count(cache) == answered  # every judgment answered before the death is kept
    assert count(cache, "failures") == total - answered
    judgments = pd.read_parquet(out / "judgments.parquet")
    failed = judgments[judgments["parse_status"] != "ok"]
    assert (failed["parse_status"] == "api_error").all() and len(failed) == total - answered
    assert ((failed["failure_kind"] == "connection").all()
            and first["failed_by_kind"] == {"connection": total - answered})
    assert failed["alignment_score"].isna().all() and (failed["attempts"] == 2).all()
    assert_clean(result, 3)  # the run ends with its outputs, failures and all, and says it is incomplete
    assert f"{total - answered} of {total} judgments" in result.stderr and "incomplete run" in result.stderr

    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    again = ServerState()
    httpd, base_url = start_server(again, port)
    try:
        assert base_url == server.base_url
        result = run(fit_args(judge, out, cache, total // 4))
        assert_clean(result)
    finally:
        httpd.shutdown()
        httpd.server_close()
    second = calibration(out)["run"]
    assert second == {**second, "judged": total - answered, "failed": 0, "reused": answered,
                      "requests": total - answered}
    assert len(again.log) == total - answered  # only what was missing
    assert {r["prompt"] for r in again.log}.isdisjoint(r["prompt"] for r in server.log)
    assert count(cache) == total
    assert_sound(cache)


def test_a_server_dead_from_the_first_request_is_found_before_anything_is_judged(server, tmp_path):
    """The listener is gone before the run starts: the preflight finds the endpoint unreachable and
    stops with one line naming it, before any request; nothing is judged, logged or written."""
    server.die_after = 0
    server.httpd.shutdown()
    server.httpd.server_close()
    out, cache = tmp_path / "out", tmp_path / "c.sqlite3"
    result = run(fit_args(write_judge(tmp_path, server.base_url), out, cache, 2))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"cannot reach {server.base_url}" in result.stderr and "nothing was judged" in result.stderr
    assert not cache.exists() and not server.log and not (out / "calibration.json").exists()


def test_slow_replies_past_the_timeout_fail_typed_or_are_retried_as_configured(server, tmp_path):
    """Three replies slower than timeout_s: with max_retries=0 they become api_error failures and no
    score is stored; the re-run (more retries, same config hash) retries two more slow replies and
    finishes with exact request counts (max_retries=2, so it holds whichever items the slow replies hit)."""
    total = 16
    server.timeout_sleep_s = 0.8
    server.queue("timeout", "timeout", "timeout")
    cache, out = tmp_path / "c.sqlite3", tmp_path / "out"
    strict = tmp_path / "strict"
    strict.mkdir()
    result = run(fit_args(write_judge(strict, server.base_url, timeout_s=0.3, max_retries=0), out, cache, total // 4))
    assert_clean(result, 3)  # 3 of 16 failed (timeouts): past --max-failed-share
    first = calibration(out)["run"]
    assert first["transient_failed"] == 3
    assert first["judged"] == total - 3 and first["failed"] == 3 and first["requests"] == total == len(server.log)
    assert count(cache) == total - 3 and count(cache, "failures") == 3
    judgments = pd.read_parquet(out / "judgments.parquet")
    failed = judgments[judgments["parse_status"] != "ok"]
    assert (failed["parse_status"] == "api_error").all() and len(failed) == 3
    assert failed["alignment_score"].isna().all()  # nothing stored as a score
    assert failed["failure_reason"].str.contains("timed out").all()
    assert (failed["failure_kind"] == "timeout").all() and first["failed_by_kind"] == {"timeout": 3}
    slow = {r["prompt"] for r in server.log if r["fault"] == "timeout"}
    assert len(slow) == 3

    server.queue("timeout", "timeout")
    patient = tmp_path / "patient"
    patient.mkdir()
    result = run(fit_args(write_judge(patient, server.base_url, timeout_s=0.3, max_retries=2), out, cache, total // 4))
    assert_clean(result)
    second = calibration(out)["run"]
    assert second == {**second, "judged": 3, "failed": 0, "reused": total - 3, "requests": 3 + 2}
    retried = server.log[total:]
    assert len(retried) == 5 and {r["prompt"] for r in retried} == slow  # only the slow ones, asked again
    assert count(cache) == total
    assert_sound(cache)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_resets_are_retried_with_exact_counts(server, tmp_path, transport):
    """Four requests get their connection reset with no reply: each costs exactly one more request."""
    total, resets = 16, 4
    server.queue(*["reset"] * resets)
    judge = write_judge(tmp_path, server.base_url, concurrency=4, max_retries=resets, transport=transport)
    out, cache = tmp_path / "out", tmp_path / "c.sqlite3"
    result = run(fit_args(judge, out, cache, total // 4))
    assert_clean(result)
    run_counts = calibration(out)["run"]
    assert run_counts == {**run_counts, "judged": total, "failed": 0, "reused": 0, "requests": total + resets}
    assert len(server.log) == total + resets
    assert sum(r["fault"] == "reset" for r in server.log) == resets
    answered = [r["prompt"] for r in server.log if r["fault"] is None]
    assert len(answered) == len(set(answered)) == total  # every item answered exactly once
    judgments = pd.read_parquet(out / "judgments.parquet")
    assert (judgments["parse_status"] == "ok").all() and judgments["attempts"].sum() == total + resets
    assert count(cache) == total and count(cache, "failures") == 0
    assert_sound(cache)


def test_sigint_mid_run_stops_cleanly_and_keeps_every_finished_judgment(server, tmp_path):
    """Ctrl-C mid-run: exit 130, one line on stderr, no traceback; the cache keeps every judgment
    that completed, and the re-run asks the server for exactly the rest."""
    total = 40
    server.latency_s = 0.05
    judge = write_judge(tmp_path, server.base_url)
    out, cache = tmp_path / "out", tmp_path / "c.sqlite3"
    args = fit_args(judge, out, cache, total // 4)
    # A user's Ctrl-C reaches a process whose SIGINT is at its default. A test runner started in the
    # background (CI) inherits SIGINT ignored, and Python then never installs its KeyboardInterrupt
    # handler, so restore the default in the child first.
    process = subprocess.Popen([*PROCESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while len(server.log) < 12 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [INTERRUPTED]
    assert not (out / "calibration.json").exists()
    kept = count(cache)
    assert 10 <= kept < total
    assert len(server.log) - kept <= 2  # at most the calls in flight (concurrency 2) are lost
    assert count(cache, "failures") == 0  # an interrupted call is not a failure of the judge
    asked_before = len(server.log)
    result = run(args)
    assert_clean(result)
    run_counts = calibration(out)["run"]
    assert run_counts == {**run_counts, "judged": total - kept, "failed": 0, "reused": kept,
                          "requests": total - kept}
    assert len(server.log) - asked_before == total - kept  # only the rest
    assert count(cache) == total
    assert_sound(cache)


def test_two_processes_judging_into_one_cache_at_once(server, tmp_path):
    """Two runs of the same judge over overlapping sets, started together, share one fresh cache:
    no crash, one row per key, nothing lost, a sound file, and each run reports all its pairs."""
    limit = 6
    server.latency_s = 0.03
    server.hold = threading.Event()  # the first replies wait until both runs have requests in flight

    def release() -> None:
        deadline = time.monotonic() + 60
        while len(server.log) <= 3 and time.monotonic() < deadline:  # more than one run's 3 in flight: both send
            time.sleep(0.01)
        server.hold.set()

    threading.Thread(target=release, daemon=True).start()
    judge = write_judge(tmp_path, server.base_url, concurrency=3)
    cache = tmp_path / "c.sqlite3"
    sets = {"a": "unaligned-0,aligned-100,refusal-100", "b": "aligned-100,refusal-100,one-refusal-50"}
    processes = {name: subprocess.Popen([*PROCESS, *fit_args(judge, tmp_path / name, cache, limit, "--sets", chosen)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, chosen in sets.items()}
    results = {name: subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate())
               for name, p in processes.items()}
    keys = {}
    for name, result in results.items():
        assert_clean(result)
        record = calibration(tmp_path / name)
        run_counts = record["run"]
        assert (run_counts["failed"] == 0
                and run_counts["judged"] + run_counts["reused"] == run_counts["items"] == 3 * limit)
        assert sum(s["n_judged"] for s in record["sets"].values()) == 3 * limit
        judgments = pd.read_parquet(tmp_path / name / "judgments.parquet")
        assert len(judgments) == 3 * limit and (judgments["parse_status"] == "ok").all()
        keys[name] = set(zip(judgments["item_key"], judgments["order"], judgments["repeat"], strict=True))
    union = keys["a"] | keys["b"]
    assert len(union) == 4 * limit and len(keys["a"] & keys["b"]) == 2 * limit
    stored = rows(cache, "SELECT item_key, pair_order, repeat FROM judgments")
    assert len(stored) == len(union) and set(stored) == union  # nothing lost, nothing twice
    assert_sound(cache)
    requests = sum(calibration(tmp_path / name)["run"]["requests"] for name in sets)
    assert requests == len(server.log)
    assert len(union) <= len(server.log) <= 6 * limit  # an overlapping item is asked at most once per run
    assert len({r["prompt"] for r in server.log}) == len(union)
