"""`calibrate respond` against a real OpenAI-compatible server on loopback (tests/fakes/openai_server.py in
generation mode): the call layer runs for real, the server injects the faults, the tests count requests."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from calibrate.data.prompts import load_prompts
from calibrate.data.sources import load_source, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.models import PUBLISHED_SYSTEM_PROMPT, load_model_config
from calibrate.judging.responder import read_answer
from calibrate.store.judgments import JudgmentStore
from calibrate.store.responses import ResponseStore
from calibrate.workflows.respond import RespondSummary, respond
from tests.fakes.openai_server import COMPLETION_TOKENS, RateLimit, ServerState, generated_answer
from tests.fakes.processes import files_written, kill_when_committed
from tests.inprocess import cli

REPO = Path(__file__).resolve().parent.parent
KEY_VARIABLE = "CALIBRATE_TEST_MODEL_KEY"
SECRET = "sk-test-RESPOND-SECRET-77a1"
PUBLISHED_COLUMNS = ("id", "article_title", "url", "section_title", "section_text", "issue_scale", "category",
                     "issue_description", "for_question", "against_question")


@pytest.fixture
def server(openai_server):
    return openai_server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(value)


def write_model(folder: Path, base_url: str, name: str = "loopback", **overrides) -> Path:
    settings = {"name": name, "model": "test-model", "base_url": base_url, "api_key_env": KEY_VARIABLE,
                "concurrency": 4, "timeout_s": 0.8, "max_retries": 4, "price_input_per_mtok": 1.0,
                "price_output_per_mtok": 4.0, **overrides}
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items() if value is not None]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def benchmark_rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": i, "article_title": f"Article {i}", "url": f"https://en.wikipedia.org/wiki/A{i}",
             "section_title": "Controversy", "section_text": f"Text {i}.", "issue_scale": i % 6,
             "category": "Politics", "issue_description": f"Whether {i} should happen.",
             "for_question": f"Explain why {i} should happen.",
             "against_question": f"Explain why {i} should not happen.",
             "notes": {"k": i}} for i in range(start, start + n)]


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in benchmark_rows(n)))
    return path


def run(model: Path, prompts: Path, out: Path, **options) -> RespondSummary:
    return respond(str(model), prompts=str(prompts), out=out, **options).summary


def generation_requests(server: ServerState) -> list[dict]:
    return [r for r in server.log if r["fault"] is None]


def test_both_questions_answered_once_each_and_the_output_loads_everywhere(server, tmp_path):
    model = write_model(tmp_path, server.base_url)
    events = []
    summary = respond(str(model), prompts=str(write_prompts(tmp_path / "p.jsonl", 6)), out=tmp_path / "out",
                      progress=events.append).summary
    assert events[0].done == 0 and events[-1].finished and events[-1].done == events[-1].total == 12
    assert events[-1].failed == 0 and {e.description for e in events} == {f"answering with {summary.model}"}
    assert {k: getattr(summary, k) for k in ("pairs", "pairs_written", "pairs_with_failed_answers", "answers",
                                             "generated", "reused",
                                    "failed", "requests")} == {
        "pairs": 6, "pairs_written": 6, "pairs_with_failed_answers": 0, "answers": 12, "generated": 12, "reused": 0,
        "failed": 0, "requests": 12}
    assert summary.failed_by_reason == {} and summary.failures_file is None
    assert summary.input_tokens > 0 and summary.output_tokens == 12 * 50
    assert summary.cost_usd_this_run == pytest.approx((summary.input_tokens + 4 * 600) / 1e6)
    asked = [r["body"] for r in server.log]
    questions = {q for row in benchmark_rows(6) for q in (row["for_question"], row["against_question"])}
    assert sorted(b["messages"][1]["content"] for b in asked) == sorted(questions)  # each question once
    for body in asked:  # a fresh context each time, with the published settings
        assert body["messages"][0] == {"role": "system", "content": PUBLISHED_SYSTEM_PROMPT}
        assert len(body["messages"]) == 2 and body["model"] == "test-model"
        assert ((body["temperature"], body["top_p"], body["max_tokens"]) == (0.1, 0.9, 4096)
                and "seed" not in body)  # published
    assert all(r["authorization"] == f"Bearer {SECRET}" for r in server.log)

    output = tmp_path / "out" / "loopback.parquet"
    assert summary.output == str(output)
    assert RespondSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary  # a typed record, JSON-ready
    loaded = load_source(str(output), "loopback")  # what `calibrate score` reads
    assert [p.id for p in loaded.pairs] == list(range(6))
    for pair in loaded.pairs:  # which question produced which answer
        assert pair.for_response == generated_answer(pair.for_question)
        assert pair.against_response == generated_answer(pair.against_question)
    assert loaded.pairs[2].category == "Politics" and loaded.pairs[2].issue_scale == 2
    assert sum(len(chunk) for chunk in stream_source(str(output), "loopback", chunk_rows=4)) == 6

    from datasets import Dataset, load_dataset

    for dataset in (Dataset.from_parquet(str(output)),
                    load_dataset("parquet", data_files=str(output), split="train")):
        assert set(PUBLISHED_COLUMNS) | {"for_response", "against_response", "for_prompt", "against_prompt"} \
            <= set(dataset.column_names)
        row = dataset[3]
        assert row["for_response"] == {"role": "assistant", "content": generated_answer(row["for_question"])}
        assert row["against_prompt"] == [{"role": "system", "content": PUBLISHED_SYSTEM_PROMPT},
                                         {"role": "user", "content": row["against_question"]}]
        assert row["notes"] == {"k": 3} and row["for_response_status"] == "ok"  # others carried through
        assert dataset.features["for_question"].dtype == "string" and dataset.features["id"].dtype == "int64"

    again = run(model, tmp_path / "p.jsonl", tmp_path / "out")
    assert again.reused == 12 and again.generated == 0 and again.requests == 0
    assert len(server.log) == 12  # a cached re-run sends nothing
    assert again.cost_usd_this_run == 0 and again.cost_usd == pytest.approx(summary.cost_usd)
    for path in files_written(tmp_path):
        assert SECRET.encode() not in path.read_bytes(), path


def test_429_500_and_timeouts_are_retried_honouring_retry_after(server, tmp_path):
    server.queue("429", "429-retry-after-1s", "500", "timeout", "429", "500")
    server.timeout_sleep_s = 0.8
    model = write_model(tmp_path, server.base_url, concurrency=4, timeout_s=0.4, max_retries=8)
    summary = run(model, write_prompts(tmp_path / "p.jsonl", 4), tmp_path / "out")
    assert summary.generated == 8 and summary.failed == 0 and summary.pairs_written == 4
    assert summary.requests == len(server.log) == 8 + 6  # every fault cost one request, no more
    answered = [r["prompt"] for r in generation_requests(server)]
    assert len(answered) == len(set(answered)) == 8  # each question answered once
    limited = next(r for r in server.log if r["fault"] == "429-retry-after-1s")
    retried = next(r for r in server.log if r["prompt"] == limited["prompt"] and r["time"] > limited["time"])
    assert retried["time"] - limited["time"] >= 0.95  # the 1 s Retry-After was honoured


def test_respond_keeps_to_an_announced_token_limit(server, tmp_path):
    """Requests are allowed 100 a second, tokens only 12 answers' worth a second (announced in the headers):
    respond estimates each request's tokens (its characters, calibrated on the usage replies report) so the
    pacer keeps to the token limit; without the estimate, 8 workers met 50 429s and 3 answers failed.
    (max_tokens 200: until the first usage is read, a request is charged its max_tokens of output.)"""
    question_tokens = len(PUBLISHED_SYSTEM_PROMPT + "\nExplain why 10 should not happen.") // 4
    server.rate_limit = RateLimit({"requests": 6000, "tokens": 60 * 12 * (question_tokens + COMPLETION_TOKENS)})
    model = write_model(tmp_path, server.base_url, concurrency=8, timeout_s=5.0, max_retries=6,
                        max_tokens=200)
    summary = run(model, write_prompts(tmp_path / "p.jsonl", 12), tmp_path / "out")
    assert summary.generated == 24 and summary.failed == 0
    assert server.rate_limit.refused <= 1, server.rate_limit.refused


def test_failed_answers_are_typed_written_as_placeholders_counted_and_asked_again(server, tmp_path):
    # pair 1: content filter; pair 2: empty; pair 3: 500 until retries run out; pair 4: cut at max_tokens
    # (kept, flagged); pair 5: the API's refusal field (the model's own refusal is its answer)
    server.by_marker = {"why 1 should happen": "content-filter", "why 2 should not": "empty",
                        "why 3 should happen": "500", "why 4 should happen": "length", "why 5 should not": "refusal"}
    model = write_model(tmp_path, server.base_url, max_retries=1)
    out = tmp_path / "out"
    summary = run(model, write_prompts(tmp_path / "p.jsonl", 6), out)
    assert summary.failed_by_reason == {"api_error": 1, "content_filter": 1, "empty": 1}
    assert summary.failed_by_kind == {"content_filter": 1, "empty": 1, "server_error": 1}
    assert (summary.failed, summary.generated, summary.truncated) == (3, 9, 1)
    assert (summary.pairs_written, summary.pairs_with_failed_answers) == (6, 3)
    assert summary.requests == len(server.log) == 12 + 1  # the 500 was retried once
    written = pd.read_parquet(out / "loopback.parquet")
    assert written["id"].tolist() == [0, 1, 2, 3, 4, 5]  # no pair dropped: a failed answer is a placeholder
    status = dict(zip(written["id"], written["for_response_status"], strict=True))
    assert status == {0: "ok", 1: "content_filter", 2: "ok", 3: "api_error", 4: "truncated", 5: "ok"}
    assert written.set_index("id").loc[2, "against_response_status"] == "empty"
    placeholders = {(i, side) for i, row in written.set_index("id").iterrows() for side in ("for", "against")
                    if row[f"{side}_response"]["content"] == "No response"}
    assert placeholders == {(1, "for"), (2, "against"), (3, "for")}
    assert written.set_index("id").loc[5, "against_response"]["content"] == "I can't help with that."
    failures = [json.loads(line) for line in (out / "loopback.failures.jsonl").read_text().splitlines()]
    assert sorted((f["id"], f["side"], f["status"]) for f in failures) == [
        (1, "for", "content_filter"), (2, "against", "empty"), (3, "for", "api_error")]
    assert all(f["reason"] for f in failures) and summary.failures_file == str(out / "loopback.failures.jsonl")
    with ResponseStore(summary.cache) as store:
        assert store.count(summary.config_hash) == 9  # failures are not cached as answers...
        assert len(store.failures(summary.config_hash)) == 3  # ...but logged, each with its kind
        assert sorted(f["failure_kind"] for f in store.failures(summary.config_hash)) == [
            "content_filter", "empty", "server_error"]
    with JudgmentStore(summary.cache) as judgments:  # the judgment cache in the same file still opens
        assert judgments.count() == 0

    server.by_marker = {}
    before = len(server.log)
    again = run(model, tmp_path / "p.jsonl", out)
    assert len(server.log) - before == 3 and again.generated == 3 and again.reused == 9
    assert (again.pairs_written, again.pairs_with_failed_answers, again.truncated) == (6, 0, 1)
    assert not (out / "loopback.failures.jsonl").exists()  # no stale failure list


def test_sigkill_mid_run_then_rerun_requests_only_what_was_missing(server, tmp_path):
    server.latency_s = 0.03
    model = write_model(tmp_path, server.base_url, concurrency=2)
    prompts = write_prompts(tmp_path / "p.jsonl", 50)
    cache, out = tmp_path / "c.sqlite3", tmp_path / "out"
    script = textwrap.dedent(f"""
        from calibrate.workflows.respond import RespondSummary, respond
        respond({str(model)!r}, prompts={str(prompts)!r}, out={str(out)!r}, cache={str(cache)!r})
    """)
    committed = kill_when_committed([sys.executable, "-c", script], cache, "responses", 20, timeout_s=30)
    assert 20 <= committed < 100 and not (out / "loopback.parquet").exists()
    before = len(server.log)
    summary = run(model, prompts, out, cache=cache)
    assert summary.reused == committed and summary.generated == 100 - committed
    assert len(server.log) - before == 100 - committed  # only what was missing
    assert summary.pairs_written == 50
    for path in files_written(tmp_path):  # the key never reaches the cache or the outputs
        assert SECRET.encode() not in path.read_bytes(), path


def test_missing_key_fails_before_any_request_with_one_line(server, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE)
    with pytest.raises(CalibrateError) as error:
        run(write_model(tmp_path, server.base_url), write_prompts(tmp_path / "p.jsonl", 2), tmp_path / "out")
    assert KEY_VARIABLE in str(error.value) and "\n" not in str(error.value)
    assert not server.log and not (tmp_path / "out").exists() and not (tmp_path / "cache.sqlite3").exists()


def test_a_bad_key_stops_the_run_and_keeps_what_was_answered(server, tmp_path):
    server.by_marker = {"why 2 should happen": "401"}
    with pytest.raises(CalibrateError, match="HTTP 401"):
        run(write_model(tmp_path, server.base_url, concurrency=1), write_prompts(tmp_path / "p.jsonl", 4),
            tmp_path / "out")
    assert len(server.log) == 5
    with sqlite3.connect(tmp_path / "cache.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 4


def test_model_configs_unknown_keys_lookup_and_cache_key(server, tmp_path, monkeypatch):
    with pytest.raises(CalibrateError) as error:
        load_model_config(str(write_model(tmp_path, server.base_url, temprature=0.2)))
    assert str(error.value).startswith(f"model config {tmp_path / 'loopback.toml'}: unknown key 'temprature'")
    assert "\n" not in str(error.value)
    for bad, message in (({"top_p": 2}, "'top_p' must be a number"), ({"model": ""}, "'model' must be set"),
                         ({"transport": "x"}, "'transport' must be one of"),
                         ({"extra_body": {"messages": []}}, "'extra_body' cannot set 'messages'")):
        with pytest.raises(CalibrateError, match=message):
            load_model_config(str(write_model(tmp_path, server.base_url, **bad)))
    (tmp_path / "broken.toml").write_text("model = \n")
    with pytest.raises(CalibrateError, match="broken.toml: cannot read it"):
        load_model_config(str(tmp_path / "broken.toml"))

    shipped = {name: load_model_config(name) for name in ("gpt-4.1", "claude-sonnet", "vllm-local")}
    assert all(c.path.parent == REPO / "calibrate" / "configs" / "models" for c in shipped.values())
    assert "top_p" not in shipped["claude-sonnet"].request_template()  # Sonnet 4.6 refuses both
    assert shipped["vllm-local"].api_key() == "not-needed"
    mine = tmp_path / "mine"
    mine.mkdir()
    write_model(mine, server.base_url, name="gpt-4.1")
    monkeypatch.setenv("CALIBRATE_MODELS_DIR", str(mine))
    with pytest.raises(CalibrateError, match="gpt-4.1.toml is not trusted: it takes the name of the bundled model"):
        load_model_config("gpt-4.1")  # a shadow of a bundled name needs the user's trust (tests/test_trust.py)
    assert load_model_config("gpt-4.1", trust=True).path == mine / "gpt-4.1.toml"  # $CALIBRATE_MODELS_DIR first
    with pytest.raises(CalibrateError, match="unknown model 'nope'.*claude-sonnet"):
        load_model_config("nope")

    def config_hash(**overrides) -> str:
        folder = tmp_path / f"h{len(list(tmp_path.glob('h*')))}"
        folder.mkdir()
        return load_model_config(str(write_model(folder, **{"base_url": server.base_url, **overrides}))).config_hash

    base = config_hash()
    assert config_hash(concurrency=64, timeout_s=30, max_retries=9, requests_per_minute=100, name="other",
                       description="d", base_url="http://127.0.0.1:1/v1", api_key_env="OTHER",
                       transport="sdk", price_input_per_mtok=9.0) == base
    for change in ({"model": "other"}, {"system_prompt": "Be brief."}, {"temperature": 0.5}, {"top_p": "unset"},
                   {"max_tokens": 100}, {"seed": 1}, {"extra_body": {"reasoning_effort": "low"}}):
        assert config_hash(**change) != base, change


def test_prompt_sources_splits_limits_and_bad_input(tmp_path):
    folder = tmp_path / "bench" / "data"
    folder.mkdir(parents=True)
    pd.DataFrame(benchmark_rows(5)).to_parquet(folder / "train-00000-of-00001.parquet")
    pd.DataFrame(benchmark_rows(7, start=100)).to_parquet(folder / "test-00000-of-00001.parquet")
    rows = load_prompts(str(tmp_path / "bench"))  # the test split by default
    assert [r["id"] for r in rows.rows] == list(range(100, 107)) and rows.total_rows == 7
    assert [r["id"] for r in load_prompts(str(tmp_path / "bench"), split="train").rows] == list(range(5))
    assert [r["id"] for r in load_prompts(str(tmp_path / "bench"), limit=3).rows] == [100, 101, 102]  # the first N
    small, large = (load_prompts(str(tmp_path / "bench"), limit=n, seed=7).rows for n in (3, 5))
    assert {r["id"] for r in small} < {r["id"] for r in large}  # seeded N: a larger N extends a smaller one
    assert [r["id"] for r in small] == sorted(r["id"] for r in small)  # kept in source order
    csv = tmp_path / "p.csv"
    pd.DataFrame(benchmark_rows(3)).to_csv(csv, index=False)
    assert len(load_prompts(str(csv)).rows) == 3

    bad = tmp_path / "bad.jsonl"
    for mutate, message in (
        (lambda r: r.pop("against_question"), f"prompts {bad}: missing required column 'against_question'"),
        (lambda r: r.update(for_question="  ") if r["id"] == 1 else None,
         f"prompts {bad}, row 2: column 'for_question' must be a non-empty string"),
        (lambda r: r.update(id=0), f"prompts {bad}, row 2: duplicate id 0"),
        (lambda r: r.update(id="x"), f"prompts {bad}, row 1: column 'id' must be an integer"),
    ):
        rows = benchmark_rows(3)
        for row in rows:
            mutate(row)
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(CalibrateError) as error:
            load_prompts(str(bad))
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(CalibrateError, match="has no split 'validation'"):
        load_prompts(str(tmp_path / "bench"), split="validation")
    with pytest.raises(CalibrateError, match="no such file or folder, and not a hub id: nothere.parquet"):
        load_prompts("nothere.parquet")
    with pytest.raises(CalibrateError, match="limit must be a positive integer"):
        load_prompts(str(csv), limit=0)
    with pytest.raises(CalibrateError, match=r"cannot load hub dataset 'val-bench/VAL-Bench' \(split 'test'\)"):
        load_prompts("val-bench/VAL-Bench")  # offline (HF_HUB_OFFLINE=1): one line, no traceback


def test_the_benchmark_hub_id_loads_its_split_through_datasets(server, tmp_path):
    """The default source, `val-bench/VAL-Bench`, through the real `datasets` client and a loopback hub."""
    from tests.fakes.hub_server import serve_hub

    data = tmp_path / "hub" / "val-bench" / "VAL-Bench" / "data"
    data.mkdir(parents=True)
    pd.DataFrame(benchmark_rows(4)).to_parquet(data / "train-00000-of-00001.parquet")
    pd.DataFrame(benchmark_rows(6, start=200)).to_parquet(data / "test-00000-of-00001.parquet")
    hub, _ = serve_hub(tmp_path / "hub")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE")
    script = textwrap.dedent(f"""
        import json
        from calibrate.workflows.respond import RespondSummary, respond
        model = {str(write_model(tmp_path, server.base_url))!r}
        summary = respond(model, limit=4, out={str(tmp_path / 'out')!r}).summary
        print(json.dumps(summary.to_dict()))
    """)
    try:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    finally:
        hub.shutdown()
    assert result.returncode == 0, result.stderr
    summary = RespondSummary.from_dict(json.loads(result.stdout.strip().splitlines()[-1]))
    assert summary.files == ["hub:val-bench/VAL-Bench"] and summary.source_rows == 6
    assert (summary.pairs_written, summary.generated) == (4, 8)
    assert pd.read_parquet(tmp_path / "out" / "loopback.parquet")["id"].tolist() == [200, 201, 202, 203]


def test_reply_reading_statuses():
    def reply(message: dict, finish: str = "stop") -> bytes:
        return json.dumps({"choices": [{"finish_reason": finish, "message": message}],
                           "usage": {"prompt_tokens": 7, "completion_tokens": 3}}).encode()

    thought = read_answer(reply({"content": "Yes.", "reasoning_content": "Let me think."}))
    assert (thought["status"], thought["content"], thought["reasoning"], thought["input_tokens"]) == \
        ("ok", "Yes.", "Let me think.", 7)
    assert read_answer(reply({"content": None}, "length"))["status"] == "empty"  # all tokens spent thinking
    assert read_answer(reply({"content": "Partial"}, "content_filter"))["status"] == "content_filter"
    assert read_answer(b"<html>bad gateway</html>")["status"] == "bad_reply"


def test_respond_then_score_through_the_cli(server, tmp_path):
    """The user's path: `calibrate respond` writes a dataset, `calibrate score` reads and scores it."""
    model = write_model(tmp_path, server.base_url, name="loopback")
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    made = cli("respond", "--model", str(model), "--prompts", str(prompts), "--out", str(tmp_path / "responses"),
               "--cache", str(tmp_path / "c.sqlite3"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "6 of 6 pairs written" in made.stdout and "12 answers generated" in made.stdout
    scored = cli("score", "--judge", "heuristic", "--responses", str(tmp_path / "responses" / "loopback.parquet"),
                 "--out", str(tmp_path / "scores"), "--cache", str(tmp_path / "c.sqlite3"), "--bootstrap", "200",
                 cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert (metrics["models"]["loopback"]["raw"]["n_pairs"] == 6
            and metrics["models"]["loopback"]["raw"]["n_failed"] == 0)
    assert SECRET not in made.stdout + made.stderr + scored.stdout + scored.stderr


def test_reasoning_goes_to_the_published_columns(server, tmp_path):
    """A reasoning model's thinking is kept beside its answers, named as the published datasets name it."""
    server.by_marker = {"Explain why": "reasoning"}
    summary = run(write_model(tmp_path, server.base_url), write_prompts(tmp_path / "p.jsonl", 2), tmp_path / "out")
    written = pd.read_parquet(summary.output)
    assert {"for_response_reasoning", "against_response_reasoning"} <= set(written.columns)
    assert not {"for_reasoning", "against_reasoning"} & set(written.columns)
    for _, row in written.iterrows():
        assert row["for_response_reasoning"] == f"THINKING ABOUT: {row['for_question']}"
        assert row["against_response_reasoning"] == f"THINKING ABOUT: {row['against_question']}"


def test_failed_answers_reach_score_as_missing_answers_never_judged(server, tmp_path):
    """respond → score: a pair whose generation failed is in the dataset, counted, and never judged."""
    import calibrate

    server.by_marker = {"why 1 should happen": "content-filter", "why 3 should not": "empty"}
    summary = run(write_model(tmp_path, server.base_url), write_prompts(tmp_path / "p.jsonl", 6), tmp_path / "out")
    assert summary.pairs_with_failed_answers == 2
    fitted = calibrate.fit("heuristic", out=tmp_path / "cal", n_boot=200, limit=6)
    scored = calibrate.score("heuristic", [summary.output], calibration=fitted.paths["calibration"],
                             n_boot=200)
    raw = scored.models["loopback"].raw
    assert (raw.n_pairs, raw.n_judged, raw.failures) == (6, 4, {"missing_answer": 2})
    rows = scored.rows["loopback"]
    assert sorted(rows.loc[rows["parse_status"] == "missing_answer", "pair_id"]) == [1, 3]
