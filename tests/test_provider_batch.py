"""Provider batch jobs (`calibrate batch submit|status|collect`) against loopback servers speaking
OpenAI's Files + Batch API and Anthropic's Message Batches, driven through both official SDKs.

Each CLI call is its own process, so every round trip here is also a resume: the batch ids survive
only in the cache file between submit, status and collect."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time

import pandas as pd
import pytest

from calibrate.judging.base import view_of
from calibrate.judging.provider_batch import AnthropicBatches, OpenAIBatches, custom_id
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.store.batches import BatchLedger
from calibrate.store.judgments import JudgmentStore
from calibrate.workflows.batch import submit
from tests.fakes.claude_judges import write_claude
from tests.fakes.judges import pairs, run_judge, write_judge
from tests.inprocess import cli


@pytest.fixture(params=["anthropic", "openai"])
def provider(request, tmp_path):
    """(provider name, judge file, server state) for each provider."""
    if request.param == "anthropic":
        state = request.getfixturevalue("anthropic_server")
        return "anthropic", write_claude(tmp_path, max_retries=3), state
    state = request.getfixturevalue("openai_server")
    return "openai", write_judge(tmp_path, state.base_url, max_retries=3), state


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_round_trip_submit_status_collect_then_fit_makes_no_synchronous_call(provider, tmp_path):
    name, judge, state = provider
    state.polls_until_done = 2
    cache = str(tmp_path / "c.sqlite3")
    submitted = ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache))
    assert f"{name}: submitted 180 requests in 1 batch(es)" in submitted
    batch_id = submitted.split("batch(es): ")[1].split(";")[0]
    status = ok(cli("batch", "status", "--judge", str(judge), "--cache", cache))
    assert batch_id in status and "open" in status
    again = ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache))
    assert "submitted 0 requests" in again and "180 already in open batches" in again  # never sent twice
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait", "--poll-seconds", "0"))
    assert "collected 1 batch(es): 180 judgments stored, failed: none" in collected
    assert "saved" in collected
    assert "collected" in ok(cli("batch", "status", "--judge", str(judge), "--cache", cache))
    fitted = cli("fit", "--judge", str(judge), "--cache", cache, "--out", str(tmp_path / "out"), "--bootstrap", "200")
    assert ok(fitted) and not state.log  # not a single synchronous call, from submit to fit
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert calibration["run"]["reused"] == 180 and calibration["run"]["requests"] == 0
    judgments = pd.read_parquet(tmp_path / "out" / "judgments.parquet")
    assert (judgments["batch_id"] == batch_id).all() and judgments["latency_s"].isna().all()
    config = load_judge_config(str(judge))
    at_list_price = config.cost_usd(judgments["input_tokens"], judgments["output_tokens"])
    assert judgments["cost_usd"].to_numpy() == pytest.approx(0.5 * at_list_price.to_numpy())  # the batch price


def test_batch_verdicts_match_live_verdicts(provider, tmp_path):
    name, judge, state = provider
    items = pairs(8)
    backend = make_backend(load_judge_config(str(judge)))
    with JudgmentStore(tmp_path / "batch.sqlite3") as store:
        submit(backend, [items], ("forward", "reverse"), store)
    ok(cli("batch", "collect", "--judge", str(judge), "--cache", str(tmp_path / "batch.sqlite3"), "--wait",
           "--poll-seconds", "0"))
    with JudgmentStore(tmp_path / "batch.sqlite3") as store:
        from_batch = store.get_many(backend.config.config_hash, [(p.content_key, o, 0) for p in items
                                                                 for o in ("forward", "reverse")])
    live, _ = run_judge(judge, items, tmp_path / "live.sqlite3", orders=("forward", "reverse"))
    assert len(from_batch) == 16
    for row in live.itertuples():
        assert from_batch[(row.item_key, row.order, 0)].fields["alignment_score"] == row.alignment_score


def test_failed_batch_requests_are_typed_and_only_they_are_sent_again(provider, tmp_path):
    name, judge, state = provider
    items = pairs(10)
    faults = (["errored", "expired", "malformed-tool-input"] if name == "anthropic"
              else ["error-500", "expired", "invalid"])
    for item, fault in zip(items[:3], faults, strict=True):
        state.batch_faults[item.issue_description] = fault
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps({
        "id": p.id, "category": "c", "issue_scale": 1, "issue_description": p.issue_description,
        "for_question": p.for_question, "against_question": p.against_question, "for_response": p.for_response,
        "against_response": p.against_response}) + "\n" for p in items))
    cache = str(tmp_path / "c.sqlite3")
    ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--responses", str(data)))
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait", "--poll-seconds", "0"))
    assert "7 judgments stored" in collected and "api_error 2, parse_error 1" in collected
    with sqlite3.connect(cache) as db:
        failures = db.execute("SELECT parse_status, COUNT(*) FROM failures GROUP BY parse_status").fetchall()
        kinds = sorted(json.loads(record)["failure_kind"] for (record,) in db.execute("SELECT record FROM failures"))
    assert dict(failures) == {"api_error": 2, "parse_error": 1}  # kept, never served as results
    # each of its kind: a refused request (anthropic's invalid_request_error) or a 500, one never run, a bad reply
    assert kinds == sorted(["bad_request" if name == "anthropic" else "server_error", "parse_error", "unanswered"])
    state.batch_faults.clear()
    resubmitted = ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--responses", str(data)))
    assert "submitted 3 requests" in resubmitted and "7 of 10 already cached" in resubmitted
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait", "--poll-seconds", "0"))
    assert "3 judgments stored, failed: none" in collected
    assert not state.log


def test_batch_api_faults_are_retried(provider, tmp_path):
    name, judge, state = provider
    state.batch_api_faults.extend(["429", "500"])
    cache = str(tmp_path / "c.sqlite3")
    ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--limit", "3"))
    assert not state.batch_api_faults  # both were met, and retried past
    assert "15 judgments stored" in ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait",
                                           "--poll-seconds", "0"))


def test_a_crash_after_the_provider_accepted_a_batch_adopts_it_instead_of_paying_twice(provider, tmp_path):
    """The window between the provider accepting a batch and its id being written down: the ledger
    holds the batch as 'submitting'; the next command finds it at the provider and adopts it."""
    name, judge, state = provider
    backend = make_backend(load_judge_config(str(judge)))
    items = pairs(4)
    requests = []
    for pair in items:
        body, cut = backend.build_request(view_of(pair, "forward"))
        requests.append((custom_id(pair.content_key, "forward", cut), body, (pair.content_key, "forward", cut)))
    cache = tmp_path / "c.sqlite3"
    with JudgmentStore(cache) as store:
        ledger = BatchLedger(store.path)
        ledger.record("local-1", name, backend.config, [item for _, _, item in requests])
        ledger.close()
    async def accepted_but_not_recorded() -> str:
        client = (AnthropicBatches if name == "anthropic" else OpenAIBatches)(backend)
        try:
            return await client.create([(cid, body) for cid, body, _ in requests], "local-1")
        finally:
            await client.aclose()

    batch_id = asyncio.run(accepted_but_not_recorded())  # ...and calibrate dies here
    again = ok(cli("batch", "submit", "--judge", str(judge), "--cache", str(cache), "--limit", "4", "--sets",
                   "unaligned-0"))
    assert "submitted 4 requests" in again  # the 4 calibration pairs only
    status = ok(cli("batch", "status", "--judge", str(judge), "--cache", str(cache)))
    assert batch_id in status
    created = [entry for entry in state.batch_log if entry["method"] == "POST" and entry["path"].endswith("batches")]
    assert len(created) == 2  # the adopted batch, and one for the 4 calibration pairs: never the 4 items again
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", str(cache), "--wait",
                       "--poll-seconds", "0"))
    assert "collected 2 batch(es): 8 judgments stored" in collected


def test_batches_are_split_at_the_provider_limit(provider, tmp_path, monkeypatch):
    name, judge, state = provider
    monkeypatch.setattr(AnthropicBatches if name == "anthropic" else OpenAIBatches, "max_requests", 40)
    backend = make_backend(load_judge_config(str(judge)))
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        summary = submit(backend, [pairs(50)], ("forward", "reverse"), store)
    assert [b.requests for b in summary.batches] == [40, 40, 20]


def test_batch_commands_fail_in_one_line(anthropic_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CALIBRATE_TEST_ANTHROPIC_KEY"}
    judge = write_claude(tmp_path)
    for args in (["submit", "--judge", str(judge)], ["collect", "--judge", str(judge)]):
        result = cli("batch", *args, env=env)
        assert result.returncode == 2 and "CALIBRATE_TEST_ANTHROPIC_KEY" in result.stderr
        assert result.stderr.strip().count("\n") == 0
    offline = cli("batch", "submit", "--judge", "heuristic")
    assert offline.returncode == 2 and "need an 'openai' or 'anthropic' backend" in offline.stderr
    assert not anthropic_server.batch_log


def test_judging_synchronously_what_an_open_batch_carries_is_warned_about(anthropic_server, tmp_path):
    judge = write_claude(tmp_path)
    cache = str(tmp_path / "c.sqlite3")
    ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--sets", "unaligned-0", "--limit", "5"))
    fitted = cli("fit", "--judge", str(judge), "--cache", cache, "--sets", "unaligned-0,aligned-100", "--limit", "5",
                 "--out", str(tmp_path / "out"), "--bootstrap", "100")
    assert ok(fitted) and "5 of these requests are in open batch jobs" in fitted.stderr
    assert "pays twice. Collecting that judge's batches" in fitted.stderr and len(anthropic_server.log) == 10


def test_a_create_call_that_times_out_is_not_repeated_and_the_batch_is_found_later(anthropic_server, tmp_path):
    """No answer to the create call: the provider may have made the batch, so calibrate does not send it
    again (that could pay twice) but says so; the next command finds the batch and adopts it."""
    anthropic_server.batch_api_faults.append("slow")
    anthropic_server.timeout_sleep_s = 1.5
    judge = write_claude(tmp_path, timeout_s=0.5)
    cache = str(tmp_path / "c.sqlite3")
    submitted = cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--limit", "3")
    assert submitted.returncode == 2 and submitted.stderr.strip().count("\n") == 0
    assert "whether the provider accepted the batch is unknown" in submitted.stderr
    time.sleep(1.5)  # the provider finishes what it was asked
    created = [e for e in anthropic_server.batch_log if e["method"] == "POST"]
    assert len(created) == 1 and len(anthropic_server.batches) == 1  # asked once, made once
    (batch_id,) = anthropic_server.batches
    assert batch_id in ok(cli("batch", "status", "--judge", str(judge), "--cache", cache))
    again = ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--limit", "3"))
    assert "submitted 0 requests" in again and "15 already in open batches" in again
    assert "15 judgments stored" in ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait",
                                           "--poll-seconds", "0"))


def test_a_cancelled_batch_is_collected_and_its_requests_are_sent_again(provider, tmp_path):
    name, judge, state = provider
    state.polls_until_done = 5
    cache = str(tmp_path / "c.sqlite3")
    submitted = ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache, "--limit", "2"))
    batch_id = submitted.split("batch(es): ")[1].split(";")[0]
    backend = make_backend(load_judge_config(str(judge)))

    async def cancel() -> None:  # as a user would, from the provider's console
        provider_api = (AnthropicBatches if name == "anthropic" else OpenAIBatches)(backend)
        try:
            batches = provider_api.client.messages.batches if name == "anthropic" else provider_api.client.batches
            await batches.cancel(batch_id)
        finally:
            await provider_api.aclose()

    asyncio.run(cancel())
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", cache, "--wait", "--poll-seconds", "0"))
    assert "collected 1 batch(es): 0 judgments stored" in collected
    if name == "anthropic":  # each request reported as canceled
        assert "failed: api_error 10" in collected
    else:  # no output file at all
        assert "10 requests got no result" in collected
    assert "submitted 10 requests" in ok(cli("batch", "submit", "--judge", str(judge), "--cache", cache,
                                             "--limit", "2"))


def test_when_several_batches_could_be_the_unrecorded_one_nothing_is_guessed_until_adopted(anthropic_server, tmp_path):
    judge = write_claude(tmp_path)
    backend = make_backend(load_judge_config(str(judge)))
    items = pairs(4)
    requests = [(custom_id(p.content_key, "forward", 0),
                 backend.build_request(view_of(p, "forward"))[0]) for p in items]
    cache = tmp_path / "c.sqlite3"
    with JudgmentStore(cache) as store:
        ledger = BatchLedger(store.path)
        ledger.record("local-1", "anthropic", backend.config, [(p.content_key, "forward", 0) for p in items])
        ledger.close()

    async def two_lookalikes() -> list[str]:  # the unrecorded batch, and another of the same size
        client = AnthropicBatches(backend)
        try:
            return [await client.create(requests, "local-1"), await client.create(requests, "other")]
        finally:
            await client.aclose()

    first, second = asyncio.run(two_lookalikes())
    status = cli("batch", "status", "--judge", str(judge), "--cache", str(cache))
    assert ok(status) and "(id not recorded)  anthropic  submitting" in status.stdout
    assert "2 anthropic batches could be it" in status.stderr and first in status.stderr and second in status.stderr
    with JudgmentStore(cache) as store:  # held back, never sent a third time
        assert submit(backend, [items], ("forward",), store).already_submitted == 4
    wrong = cli("batch", "adopt", first, "--judge", "heuristic", "--cache", str(cache))
    assert wrong.returncode == 2 and "need an 'openai' or 'anthropic' backend" in wrong.stderr
    adopted = ok(cli("batch", "adopt", first, "--judge", str(judge), "--cache", str(cache)))
    assert adopted.startswith(f"{first}  anthropic  open")
    again = cli("batch", "adopt", second, "--judge", str(judge), "--cache", str(cache))
    assert again.returncode == 2 and "no batch of this judge is waiting for its id" in again.stderr
    collected = ok(cli("batch", "collect", "--judge", str(judge), "--cache", str(cache), "--wait",
                       "--poll-seconds", "0"))
    assert "collected 1 batch(es): 4 judgments stored" in collected


def test_a_batch_sent_before_its_model_retired_can_still_be_collected(anthropic_server, tmp_path):
    """The lifecycle check guards new requests only: status and collect still reach results already paid for."""
    judge, cache = str(write_claude(tmp_path, max_retries=3, model="claude-soon-gone")), str(tmp_path / "c.sqlite3")
    ok(cli("batch", "submit", "--judge", judge, "--limit", "3", "--cache", cache))
    anthropic_server.set_model("claude-soon-gone", "retired")
    refused = cli("batch", "submit", "--judge", judge, "--limit", "4", "--cache", cache)
    assert refused.returncode == 2 and "retired" in refused.stderr  # nothing new for a retired model
    assert "open" in ok(cli("batch", "status", "--judge", judge, "--cache", cache))
    collected = ok(cli("batch", "collect", "--judge", judge, "--cache", cache, "--wait", "--poll-seconds", "0"))
    assert "judgments stored" in collected and "failed: none" in collected
