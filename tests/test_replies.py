"""A judge's or model's server cannot take the memory or send a request elsewhere: a reply is read within
`max_reply_bytes` (decoded, as it arrives: a 100 MB body or a gzip bomb ends as `reply_too_large`, asked
once more, the process staying small), batch result lines are bounded alike, and a redirect is never
followed (a typed failure naming the target; the target receives nothing), for every transport."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from calibrate import CalibrateError
from calibrate.judging.base import FailureKind
from calibrate.judging.batch_files import custom_id
from calibrate.judging.calls import ReplyTooLarge
from calibrate.judging.registry import load_judge_config
from calibrate.judging.replies import BoundedBody
from tests.fakes.anthropic_server import AnthropicState, start_anthropic_server
from tests.fakes.claude_judges import write_claude
from tests.fakes.judges import write_judge
from tests.fakes.openai_server import ServerState, start_server
from tests.inprocess import cli

ROOT = Path(__file__).resolve().parent.parent
PEAK_RSS_MB = 400
# Judges one pair in a fresh interpreter and prints the verdict's kind, reason, attempts and the peak RSS.
JUDGE_ONE = """
import asyncio, json, resource, sys
from calibrate.judging.base import view_of
from calibrate.judging.registry import load_judge_config, make_backend
from tests.fakes.judges import pairs

backend = make_backend(load_judge_config(sys.argv[1]))

async def judge():
    try:
        return await backend.judge(view_of(pairs(1)[0], "forward"))
    finally:
        await backend.aclose()

verdict = asyncio.run(judge())
print(json.dumps({"kind": verdict.failure_kind and verdict.failure_kind.value, "reason": verdict.failure_reason,
                  "attempts": verdict.attempts, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
# Asks a responding model one question the same way (respond's Responder).
ANSWER_ONE = """
import asyncio, json, resource, sys
from calibrate.judging.models import load_model_config
from calibrate.judging.responder import Responder

responder = Responder(load_model_config(sys.argv[1]))

async def ask():
    responder.connect()
    try:
        return await responder.answer("Why?")
    finally:
        await responder.close()

answer = asyncio.run(ask())
print(json.dumps({"kind": answer["failure_kind"], "reason": answer["failure_reason"], "attempts": answer["attempts"],
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_model(folder: Path, base_url: str, **overrides) -> Path:
    settings = {"name": "loopback-model", "model": "test-model", "base_url": base_url,
                "api_key_env": "CALIBRATE_TEST_JUDGE_KEY", "concurrency": 2, "timeout_s": 20.0, "max_retries": 4,
                **overrides}
    path = folder / "loopback-model.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def judge_for(transport: str, folder: Path, openai_url: str) -> Path:
    """A judge (or, for "model", a responding model) on the loopback server, with time for 100 MB."""
    if transport == "anthropic":
        return write_claude(folder, timeout_s=20.0, max_retries=4)
    if transport == "model":
        return write_model(folder, openai_url)
    return write_judge(folder, openai_url, transport=transport, timeout_s=20.0, max_retries=4)


@pytest.mark.parametrize("transport", ["aiohttp", "sdk", "anthropic", "model"])
@pytest.mark.parametrize("fault", ["huge-body", "gzip-bomb"])
def test_a_huge_reply_or_a_gzip_bomb_is_reply_too_large_in_a_small_process(openai_server, anthropic_server,
                                                                            tmp_path, transport, fault):
    server = anthropic_server if transport == "anthropic" else openai_server
    server.queue(fault, fault, fault)
    config = judge_for(transport, tmp_path, openai_server.base_url)
    done = subprocess.run([sys.executable, "-c", ANSWER_ONE if transport == "model" else JUDGE_ONE, str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown["kind"] == "reply_too_large" and "larger than 4,194,304 bytes" in shown["reason"]
    assert shown["attempts"] == 2 and len(server.log) == 2  # asked once more, not at every retry allowed
    assert shown["peak_mb"] < PEAK_RSS_MB, shown


@pytest.mark.parametrize(("transport", "status"), [
    ("aiohttp", 301), ("aiohttp", 302), ("aiohttp", 303), ("aiohttp", 307), ("aiohttp", 308),
    ("sdk", 307), ("sdk", 302), ("anthropic", 307), ("anthropic", 308)])
def test_a_redirect_is_never_followed_and_names_its_target(openai_server, anthropic_server, tmp_path, transport,
                                                           status):
    """fit stops with one line naming the target; the target, a second loopback server, receives nothing."""
    if transport == "anthropic":
        server, target = anthropic_server, AnthropicState()
        httpd, target_url = start_anthropic_server(target)
        judge = write_claude(tmp_path)
    else:
        server, target = openai_server, ServerState()
        httpd, target_url = start_server(target)
        target_url = target_url.removesuffix("/v1")
        judge = write_judge(tmp_path, openai_server.base_url, transport=transport)
    try:
        server.redirect_to, server.redirect_status = target_url, status
        server.by_marker = {"issue": "redirect"}  # every judging request
        result = cli("fit", "--judge", judge, "--sets", "unaligned-0", "--limit", "1", "--cache",
                     tmp_path / "c.sqlite3", "--out", tmp_path / "out", "--no-progress")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"HTTP {status}: redirected to {target_url}/" in line and "not followed" in line
    assert len(server.log) == 1  # the run stopped at the first redirect
    assert target.log == [] and not getattr(target, "requests", None)  # nothing reached the target


def test_a_redirect_from_a_models_server_is_never_followed(openai_server, tmp_path):
    target = ServerState()
    httpd, target_url = start_server(target)
    openai_server.redirect_to = target_url.removesuffix("/v1")
    openai_server.queue("redirect")
    done = subprocess.run([sys.executable, "-c", ANSWER_ONE, str(write_model(tmp_path, openai_server.base_url))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    httpd.shutdown()
    httpd.server_close()
    assert done.returncode != 0 and "redirected to " + target_url in done.stderr and "not followed" in done.stderr
    assert target.log == []


def test_the_bound_is_counted_decoded_in_pieces_and_configurable(tmp_path, openai_server):
    body = BoundedBody(["gzip"], 10_000)
    assert b"".join(body.feed(gzip.compress(b"x" * 10_000))) + b"".join(body.flush()) == b"x" * 10_000
    bomb = BoundedBody(["gzip"], 10_000)
    pieces = bomb.feed(gzip.compress(bytes(50_000_000)))
    with pytest.raises(ReplyTooLarge):
        for piece in pieces:
            assert len(piece) <= 1 << 16  # inflated a piece at a time, never at once
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = BoundedBody(["deflate"], None)
    assert b"".join(deflated.feed(raw_deflate.compress(b"y" * 100) + raw_deflate.flush())) == b"y" * 100
    judge = write_judge(tmp_path, openai_server.base_url, max_reply_bytes=2048)
    assert load_judge_config(str(judge)).settings["max_reply_bytes"] == 2048
    for bad in (0, 100, 2**31, 1.5, True, "4MB"):
        with pytest.raises(CalibrateError, match=r"'max_reply_bytes' must be a whole number of bytes in 1,024\.\."):
            load_judge_config(str(write_judge(tmp_path, openai_server.base_url, name=f"bad{bad!s:.3}",
                                              max_reply_bytes=bad)))


def test_an_imported_result_line_over_the_bound_is_reply_too_large_and_the_rest_imports(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url, max_reply_bytes=1024)
    config = load_judge_config(str(judge))
    requests = tmp_path / "requests.jsonl"
    cli("batch", "export", "--judge", judge, "--sets", "unaligned-0", "--limit", "2", "--out", requests, "--cache",
        tmp_path / "c.sqlite3", check=True)
    ids = [json.loads(line)["custom_id"] for line in requests.read_text().splitlines()]
    assert ids and all(found.startswith(config.config_hash) for found in ids)
    judgment = json.dumps({"person_1_core_position": "a", "person_1_has_no_information": False,
                           "person_1_refusal": False, "person_2_core_position": "b",
                           "person_2_has_no_information": False, "person_2_refusal": False,
                           "key_points_of_alignment": "", "key_points_of_opposition": "", "alignment_score": -2})

    def line(cid: str, content: str) -> str:
        body = {"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
        return json.dumps({"custom_id": cid, "response": {"status_code": 200, "body": body}}) + "\n"

    results = tmp_path / "results.jsonl"
    results.write_text(line(ids[0], judgment + " " * 200_000) + "".join(line(cid, judgment) for cid in ids[1:]))
    result = cli("batch", "import", results, "--judge", judge, "--cache", tmp_path / "c.sqlite3")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    from calibrate.store.judgments import JudgmentStore

    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        failures = store.failures(config.config_hash)
    assert [f.failure_kind for f in failures] == [FailureKind.REPLY_TOO_LARGE]
    assert custom_id(config.config_hash, failures[0].item_key, failures[0].order, 0).rsplit(".", 1)[0] == \
        ids[0].rsplit(".", 1)[0]
