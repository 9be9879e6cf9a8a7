"""Failures are kinds, not sentences: every failure carries a `FailureKind`, stored with the judgment (a
record stored before kinds existed still reads), counted by kind, and the only thing retries, stopping a
run and exit code 3 (`--max-failed-share`) look at. Rewording every failure message changes nothing but
the words."""

from __future__ import annotations

import json
import sqlite3
import sys

import pandas as pd
import pytest

from calibrate.cli.main import main
from calibrate.judging.base import FailureKind, Judgment, Verdict, status_kind, validate_fields
from calibrate.judging.calls import CallFailed, ConnectionFailure, StatusError
from calibrate.judging.responder import answer_kind
from calibrate.store.judgments import JudgmentStore, record_checksum
from calibrate.store.responses import ResponseStore
from tests.fakes.judges import write_judge

SETS = "unaligned-0,aligned-100,refusal-100,one-refusal-50"
FIELDS = validate_fields({"person_1_core_position": "yes", "person_1_has_no_information": False,
                          "person_1_refusal": False, "person_2_core_position": "yes",
                          "person_2_has_no_information": False, "person_2_refusal": False,
                          "key_points_of_alignment": [], "key_points_of_opposition": [], "alignment_score": 2})


def test_each_kind_declares_whether_it_is_transient_and_whether_it_stops_the_run():
    transient = {kind.value for kind in FailureKind if kind.transient}
    assert transient == {"rate_limited", "server_error", "timeout", "connection", "unanswered", "reply_too_large"}
    assert {kind.value for kind in FailureKind if kind.stops_run} == {"auth", "not_found", "redirected"}
    # a reply too large is asked once more, never at every retry the judge allows
    assert {kind.value: kind.max_retries for kind in FailureKind if kind.max_retries is not None} == {
        "reply_too_large": 1}
    assert len({kind.value for kind in FailureKind}) == len(FailureKind)
    statuses = {429: "rate_limited", 408: "timeout", 401: "auth", 403: "auth", 404: "not_found", 409: "server_error",
                500: "server_error", 529: "server_error", 400: "bad_request", 413: "bad_request", 422: "bad_request",
                301: "redirected", 302: "redirected", 303: "redirected", 307: "redirected", 308: "redirected"}
    assert {status: status_kind(status).value for status in statuses} == statuses
    # a judge's failed reply has the kind its parse status names; a failed call must say its own
    assert Verdict(None, "x", "truncated").failure_kind is FailureKind.TRUNCATED
    assert Verdict({"alignment_score": 1}, "x").failure_kind is None
    with pytest.raises(ValueError, match="needs its failure kind"):
        Verdict(None, "", "api_error", "HTTP 500")
    with pytest.raises(ValueError, match="failure kind"):
        Verdict(None, "", "parse_error", "no JSON", failure_kind=FailureKind.TIMEOUT)


def judgment(parse_status: str, kind: FailureKind | None, item: str = "a") -> Judgment:
    return Judgment(judge_name="j", config_hash="h", item_key=item, order="forward", parse_status=parse_status,
                    failure_reason=None if kind is None else "why", raw_output="", latency_s=0.1, input_tokens=1,
                    output_tokens=1, failure_kind=kind,
                    fields={} if kind else FIELDS)


def test_kinds_are_stored_and_records_from_before_kinds_still_read(tmp_path):
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store:
        store.put_many([judgment("api_error", FailureKind.RATE_LIMITED, "a"),
                        judgment("truncated", FailureKind.TRUNCATED, "b"),
                        judgment("api_error", FailureKind.TIMEOUT, "c")])
        assert [f.failure_kind for f in store.failures("h")] == [FailureKind.RATE_LIMITED, FailureKind.TRUNCATED,
                                                                 FailureKind.TIMEOUT]
    with sqlite3.connect(path) as db:  # as a calibrate from before kinds wrote them: no failure_kind key
        for rowid, record in db.execute("SELECT rowid, record FROM failures").fetchall():
            data = json.loads(record)
            assert data.pop("failure_kind") in ("rate_limited", "truncated", "timeout")  # stored as the kind's value
            db.execute("UPDATE failures SET record = ? WHERE rowid = ?", (json.dumps(data), rowid))
    with JudgmentStore(path) as store:
        kinds = [f.failure_kind for f in store.failures("h")]
    assert kinds == [FailureKind.UNRECORDED, FailureKind.TRUNCATED, FailureKind.UNRECORDED]  # as the status implies
    assert not FailureKind.UNRECORDED.transient  # an old failure's kind is not guessed from its words


def test_a_stored_result_from_before_kinds_is_served_and_a_bad_kind_is_quarantined(tmp_path):
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store:
        store.put_many([judgment("ok", None, "old"), judgment("ok", None, "bad")])
    with sqlite3.connect(path) as db:
        for item, kind in (("old", None), ("bad", "rate_limited")):
            record = json.loads(db.execute("SELECT record FROM judgments WHERE item_key = ?", (item,)).fetchone()[0])
            if kind is None:
                del record["failure_kind"]
            else:
                record["failure_kind"] = kind  # a successful judgment cannot have failed
            text = json.dumps(record)
            db.execute("UPDATE judgments SET record = ?, checksum = ? WHERE item_key = ?",
                       (text, record_checksum("h", item, "forward", 0, "ok", text), item))
    with JudgmentStore(path) as store:
        found = store.get_many("h", [("old", "forward", 0), ("bad", "forward", 0)])
        assert list(found) == [("old", "forward", 0)] and found[("old", "forward", 0)].failure_kind is None
        assert store.quarantined == 1


def test_answers_carry_their_kind_and_old_ones_read_with_the_kind_their_status_implies(tmp_path):
    base = {"config_hash": "m", "model_name": "m", "created_at": 1.0, "failure_reason": "why", "input_tokens": 0,
            "output_tokens": 0}
    with ResponseStore(tmp_path / "c.sqlite3") as store:
        store.put_many([{**base, "question_key": "q1", "status": "api_error", "failure_kind": "server_error"},
                        {**base, "question_key": "q2", "status": "api_error"},  # logged before kinds
                        {**base, "question_key": "q3", "status": "empty"},
                        {**base, "question_key": "q4", "status": "bad_reply", "failure_kind": "invalid_usage"}])
        assert [f["failure_kind"] for f in store.failures("m")] == ["server_error", "unrecorded", "empty",
                                                                   "invalid_usage"]
    assert answer_kind({"status": "content_filter"}) is FailureKind.CONTENT_FILTER
    assert answer_kind({"status": "truncated"}) is None  # usable


def reword(text: str) -> str:
    return f"(reworded) {text[::-1].upper()}"


@pytest.fixture
def reworded(monkeypatch):
    """Every failure message the call layer and the backends make, reworded beyond recognition."""
    def wrap(cls, method: str, change) -> None:
        original = getattr(cls, method)

        def replaced(self, *args, **kwargs):
            original(self, *args, **kwargs)
            change(self)
        monkeypatch.setattr(cls, method, replaced)

    def exception(error: Exception) -> None:
        error.args = (reword(str(error)),)

    def call_failed(error: CallFailed) -> None:
        error.reason = reword(error.reason)
        error.args = (error.reason,)

    def verdict(result: Verdict) -> None:
        if result.failure_reason is not None:
            result.failure_reason = reword(result.failure_reason)

    wrap(StatusError, "__init__", exception)
    wrap(ConnectionFailure, "__init__", exception)
    wrap(CallFailed, "__init__", call_failed)
    wrap(Verdict, "__post_init__", verdict)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The CLI in this process (so the rewording applies): its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["calibrate", *args])
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    return code, capsys.readouterr().err


def faulty_fit(server, folder, monkeypatch, capsys) -> tuple[int, str, pd.DataFrame, int]:
    """8 judgments, one at a time, max_retries=1: two 500s (a server error), two replies past the timeout,
    a 429 then a reply (retried, judged), a 400 (not retried), an invalid reply (asked again, judged).
    2 of 8 fail for a transient reason: past --max-failed-share 0.2, exit 3. Then a 401: the run stops."""
    server.log.clear()
    server.timeout_sleep_s = 0.8
    server.queue("500", "500", "timeout", "timeout", "429", "400-echo", "invalid")
    folder.mkdir()
    judge = write_judge(folder, server.base_url, concurrency=1, max_retries=1, timeout_s=0.3, response_format="none")
    code, err = run_cli(monkeypatch, capsys, "fit", "--judge", str(judge), "--out", str(folder / "out"), "--cache",
                        str(folder / "c.sqlite3"), "--limit", "2", "--sets", SETS, "--bootstrap", "100",
                        "--no-progress", "--max-failed-share", "0.2")
    table = pd.read_parquet(folder / "out" / "judgments.parquet").sort_values(["set_name", "pair_id"])
    requests = len(server.log)
    server.queue("401")
    stopped, _ = run_cli(monkeypatch, capsys, "fit", "--judge", str(judge), "--out", str(folder / "out2"),
                         "--cache", str(folder / "c.sqlite3"), "--limit", "3", "--sets", SETS, "--no-progress")
    assert stopped == 2 and len(server.log) == requests + 1  # a bad key stops the run at its first reply
    return code, err, table.reset_index(drop=True), requests


def test_rewording_every_failure_message_changes_no_retry_no_count_and_no_exit_code(openai_server, tmp_path,
                                                                                   monkeypatch, capsys, request):
    code, err, table, requests = faulty_fit(openai_server, tmp_path / "worded", monkeypatch, capsys)
    assert code == 3 and "2 of 8 judgments (25.0%) failed for a transient reason" in err, err
    assert requests == 2 + 2 + 2 + 1 + 2 + 3
    failed = table[table["parse_status"] != "ok"]
    assert sorted(failed["failure_kind"]) == ["bad_request", "server_error", "timeout"]

    request.getfixturevalue("reworded")
    code_again, err_again, table_again, requests_again = faulty_fit(openai_server, tmp_path / "reworded", monkeypatch,
                                                                    capsys)
    assert (code_again, requests_again) == (code, requests)  # the same retries, the same exit code
    assert "2 of 8 judgments (25.0%) failed for a transient reason" in err_again
    columns = ["set_name", "pair_id", "parse_status", "failure_kind", "attempts"]
    pd.testing.assert_frame_equal(table_again[columns], table[columns])
    failed_again = table_again[table_again["parse_status"] != "ok"]
    assert failed_again["failure_reason"].str.startswith("(reworded) ").all()  # only the words changed
    assert not set(failed_again["failure_reason"]) & set(failed["failure_reason"])
