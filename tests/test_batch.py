"""Batch export -> provider -> import round trip, with a loopback server standing in for the provider."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.fakes.judges import SECRET, write_judge
from tests.inprocess import cli


@pytest.fixture
def server(openai_server):
    return openai_server


def run_batch(requests_file: Path, results_file: Path, base_url: str) -> None:
    """What the provider (or vLLM's run_batch) does: post each body, write the Batch API output format."""
    with results_file.open("w") as out:
        for number, line in enumerate(requests_file.read_text().splitlines()):
            request = json.loads(line)
            assert request["method"] == "POST" and request["url"] == "/v1/chat/completions"
            http = urllib.request.Request(base_url + "/chat/completions", data=json.dumps(request["body"]).encode(),
                                          headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(http) as reply:
                body = json.loads(reply.read())
            out.write(json.dumps({"id": f"batch_req_{number}", "custom_id": request["custom_id"],
                                  "response": {"status_code": 200, "request_id": f"r{number}", "body": body},
                                  "error": None}) + "\n")


def test_export_run_import_then_fit_sends_no_request(server, tmp_path):
    judge = write_judge(tmp_path, server.base_url)
    cache = str(tmp_path / "c.sqlite3")
    requests_file, results_file = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    exported = cli("batch", "export", "--judge", str(judge), "--out", str(requests_file), "--cache", cache)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 180 requests" in exported.stdout and len(requests_file.read_text().splitlines()) == 180
    assert SECRET not in requests_file.read_text()
    run_batch(requests_file, results_file, server.base_url)
    lines = results_file.read_text().splitlines()
    broken = json.loads(lines[0])
    broken["response"] = {"status_code": 500, "body": {"error": {"message": "overloaded"}}}
    invalid = json.loads(lines[1])
    invalid["response"]["body"]["choices"][0]["message"]["content"] = '{"alignment_score": 9}'
    hostile = [json.loads(line) for line in lines[2:4]]  # valid judgments with token counts that are not counts
    hostile[0]["response"]["body"]["usage"]["prompt_tokens"] = 1e30
    hostile[1]["response"]["body"]["usage"]["completion_tokens"] = -7
    results_file.write_text("\n".join([json.dumps(broken), json.dumps(invalid), *map(json.dumps, hostile),
                                       *lines[4:]]) + "\n")

    imported = cli("batch", "import", str(results_file), "--judge", str(judge), "--cache", cache)
    assert imported.returncode == 0, imported.stderr
    assert "imported 176 judgments; failed: " in imported.stdout
    assert all(f"{status} {n}" in imported.stdout for status, n in (("api_error", 1), ("parse_error", 1),
                                                                       ("invalid_usage", 2)))
    server.log.clear()
    fit = cli("fit", "--judge", str(judge), "--cache", cache, "--out", str(tmp_path / "out"), "--bootstrap", "200")
    assert fit.returncode == 0, fit.stderr
    calibration = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert calibration["run"]["reused"] == 176 and calibration["run"]["judged"] == 4
    judgments = pd.read_parquet(tmp_path / "out" / "judgments.parquet")
    assert judgments.loc[judgments["from_cache"], "latency_s"].isna().all()  # unknown, not zero
    assert calibration["accounting"]["latency_s"]["mean"] > 0
    assert len(server.log) == 4  # only the four failed results are asked again, live
    server.log.clear()
    again = cli("batch", "import", str(results_file), "--judge", str(judge), "--cache", cache)
    assert "already cached: 180" in again.stdout
    assert cli("batch", "export", "--judge", str(judge), "--out", str(requests_file), "--cache", cache
               ).stdout.startswith("wrote 0 requests")


def test_results_of_another_judge_config_are_refused(server, tmp_path):
    judge = write_judge(tmp_path, server.base_url)
    other = tmp_path / "other"
    other.mkdir()
    other_judge = write_judge(other, server.base_url, temperature=0.7)
    requests_file = tmp_path / "requests.jsonl"
    cli("batch", "export", "--judge", str(judge), "--out", str(requests_file), "--limit", "2", "--sets", "aligned-100")
    run_batch(requests_file, tmp_path / "results.jsonl", server.base_url)
    result = cli("batch", "import", str(tmp_path / "results.jsonl"), "--judge", str(other_judge))
    assert result.returncode == 2 and "belongs to judge config" in result.stderr
    (tmp_path / "junk.jsonl").write_text('{"custom_id": "x"}\n')
    junk = cli("batch", "import", str(tmp_path / "junk.jsonl"), "--judge", str(judge))
    assert junk.returncode == 2 and "line 1" in junk.stderr and "custom_id" in junk.stderr


def test_export_needs_an_api_backend(tmp_path):
    result = cli("batch", "export", "--judge", "heuristic", "--out", str(tmp_path / "r.jsonl"))
    assert result.returncode == 2 and "need an 'openai' backend" in result.stderr
