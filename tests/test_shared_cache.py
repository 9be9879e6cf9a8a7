"""Runs that share one cache cooperate, through the real CLI: two `calibrate fit` processes at once on
one cache against a slow loopback judge pay for each prompt once, and both end with the same judgments,
each the one the cache holds; a claim left by a run that was killed, or whose heartbeat went stale,
expires, so the next run judges those items instead of waiting for them.

The loopback judge draws every score at random, so a prompt judged twice would (almost surely) get two
different judgments: identical outputs mean the runs shared one judgment per item."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from calibrate.judging.base import Judgment
from calibrate.store.judgments import JudgmentStore
from tests.fakes.judges import KEY_VARIABLE, SECRET, write_judge
from tests.fakes.latency_server import JUDGMENT as LATENCY_JUDGMENT
from tests.fakes.openai_server import ServerState, start_server
from tests.fakes.processes import kill_when_committed

SETS = "unaligned-0,aligned-100,refusal-100,one-refusal-50"
LIMIT = 10  # pairs per set: 40 items
CONCURRENCY = 4
JUDGMENT_COLUMNS = ["pair_id", "set_name", "item_key", "order", "parse_status", "alignment_score",
                    "person_1_refusal", "person_2_refusal", "raw_output", "created_at", "input_tokens"]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    state = ServerState(latency_s=0.15, random_scores=True)
    httpd, state.base_url = start_server(state)
    yield state
    httpd.shutdown()
    httpd.server_close()


def fit_command(judge: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "calibrate", "fit", "--judge", str(judge), "--out", str(out), "--cache", str(cache),
            "--limit", str(LIMIT), "--sets", SETS, "--bootstrap", "100", "--no-progress"]


def rows(cache: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(cache) as db:
        return db.execute(sql).fetchall()


def stored_judgments(cache: Path) -> dict[tuple, dict]:
    return {(item, order): json.loads(record)
            for item, order, record in rows(cache, "SELECT item_key, pair_order, record FROM judgments")}


def assert_built_from_the_cache(out: Path, stored: dict[tuple, dict]) -> pd.DataFrame:
    """Every judgment a run reports is the one the cache holds for its item."""
    table = pd.read_parquet(out / "judgments.parquet")
    assert (table["parse_status"] == "ok").all()
    for row in table.itertuples():
        record = stored[(row.item_key, row.order)]
        assert (row.alignment_score, row.raw_output, row.created_at) == (
            record["fields"]["alignment_score"], record["raw_output"], record["created_at"])
    return table.sort_values(["set_name", "pair_id", "order"])[JUDGMENT_COLUMNS].reset_index(drop=True)


def test_two_fits_at_once_on_one_cache_pay_once_and_report_the_same_stored_judgments(server, tmp_path):
    judge = write_judge(tmp_path, server.base_url, concurrency=CONCURRENCY, parse_retries=0, timeout_s=30.0)
    cache = tmp_path / "shared.sqlite3"
    server.hold = threading.Event()

    def release_when_both_runs_are_sending() -> None:
        """A run has at most CONCURRENCY requests in flight: more than that means both are sending."""
        deadline = time.monotonic() + 60
        while len(server.log) <= CONCURRENCY and time.monotonic() < deadline:
            time.sleep(0.01)
        server.hold.set()

    threading.Thread(target=release_when_both_runs_are_sending, daemon=True).start()
    runs = {name: subprocess.Popen(fit_command(judge, tmp_path / name, cache), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for name in ("a", "b")}
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0 and "Traceback" not in stderr, f"run {name}: {stderr}"

    prompts = [entry["prompt"] for entry in server.log]
    items = 4 * LIMIT
    assert len(set(prompts)) == items
    assert len(prompts) <= items + CONCURRENCY  # each prompt paid once (in flight at the start excepted)
    records = {name: json.loads((tmp_path / name / "calibration.json").read_text()) for name in runs}
    counts = {name: record["run"] for name, record in records.items()}
    assert sum(c["requests"] for c in counts.values()) == len(prompts)
    assert all(c["requests"] > 0 and c["judged"] + c["reused"] == c["items"] == items for c in counts.values()), counts
    assert sum(c["judged"] for c in counts.values()) == items  # every item judged by exactly one run

    stored = stored_judgments(cache)
    assert len(stored) == items
    tables = [assert_built_from_the_cache(tmp_path / name, stored) for name in runs]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert len(set(tables[0]["alignment_score"])) > 1  # random scores: a judgment made twice would differ
    for part in ("sets", "summary", "mapping", "injection"):
        assert records["a"][part] == records["b"][part], part
    assert rows(cache, "SELECT COUNT(*) FROM leases") == [(0,)]  # both runs let go of every claim


def test_claims_of_a_killed_run_or_with_a_stale_heartbeat_expire(server, tmp_path):
    judge = write_judge(tmp_path, server.base_url, concurrency=CONCURRENCY, parse_retries=0, timeout_s=30.0)
    cache = tmp_path / "c.sqlite3"
    committed = kill_when_committed(fit_command(judge, tmp_path / "killed", cache), cache, "judgments", 8)
    claims = rows(cache, "SELECT item_key, pair_order, pid, host FROM leases")
    assert claims and committed < 4 * LIMIT  # the killed run left claims on items it never finished
    # half of them as if held by a run on another machine that stopped renewing them an hour ago
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE leases SET host = 'elsewhere', heartbeat = heartbeat - 3600 "
                   "WHERE rowid IN (SELECT rowid FROM leases ORDER BY rowid LIMIT ?)", (len(claims) // 2,))
    assert {host for *_, host in rows(cache, "SELECT pid, host FROM leases")} == {"elsewhere", socket.gethostname()}
    asked_before = len(server.log)

    # under the claims' one-minute lifetime: a run waiting for them to time out would not finish in time
    result = subprocess.run(fit_command(judge, tmp_path / "next", cache), capture_output=True, text=True, timeout=45)
    assert result.returncode == 0, result.stderr
    run = json.loads((tmp_path / "next" / "calibration.json").read_text())["run"]
    assert run["reused"] == committed and run["judged"] == 4 * LIMIT - committed
    assert run["requests"] == len(server.log) - asked_before == 4 * LIMIT - committed
    assert rows(cache, "SELECT COUNT(*) FROM leases") == [(0,)]


def test_a_judgment_another_run_stored_first_is_reported_so_the_stored_one_is_used(tmp_path):
    """The one race leases leave (a claim that expired under a run still working): the second write of
    a key is not stored, and `put_many` names it, so the runner reports the stored judgment instead."""
    def judgment(score: int) -> Judgment:
        return Judgment(judge_name="j", config_hash="h", item_key="item", order="forward", parse_status="ok",
                        failure_reason=None, raw_output=f"score {score}", latency_s=0.1, input_tokens=1,
                        output_tokens=1, fields={**LATENCY_JUDGMENT, "alignment_score": score})

    first, second = judgment(2), judgment(-2)
    with JudgmentStore(tmp_path / "c.sqlite3") as one, JudgmentStore(tmp_path / "c.sqlite3") as other:
        assert one.put_many([first]) == set()
        assert other.put_many([second]) == {("h", ("item", "forward", 0))}
        assert other.put_many([first]) == set()  # the very judgment stored: nothing superseded
        assert other.get_many("h", [("item", "forward", 0)]) == {("item", "forward", 0): first}
