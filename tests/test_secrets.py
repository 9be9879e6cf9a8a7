"""A server that echoes the credentials it was sent never makes calibrate leak them: not on the terminal,
not in judgments.parquet, not in the cache's failure log. And the key never crosses the network in
cleartext to another machine unless the config says so."""

from __future__ import annotations

import sqlite3

import pytest

from calibrate import CalibrateError
from calibrate.judging.calls import scrub
from calibrate.judging.registry import load_judge_config, make_backend
from tests.fakes.judges import KEY_VARIABLE, SECRET, pairs, run_judge, write_judge
from tests.inprocess import cli

SETS = "unaligned-0,aligned-100"


def every_output_text(folder, cache) -> str:
    """What calibrate wrote: every file of the output folder (bytes as text) and every row of the cache."""
    texts = [path.read_bytes().decode("utf-8", "replace") for path in folder.rglob("*") if path.is_file()]
    with sqlite3.connect(cache) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            texts += [repr(row) for row in db.execute(f"SELECT * FROM {table}")]
    return "\n".join(texts)


def test_an_echoed_key_in_a_401_is_not_printed(openai_server, tmp_path):
    openai_server.queue(*["401-echo"] * 20)
    judge = write_judge(tmp_path, openai_server.base_url)
    result = cli("fit", "--judge", str(judge), "--sets", SETS, "--limit", "2", "--cache", str(tmp_path / "c.sqlite3"),
                 "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2 and "HTTP 401" in result.stderr
    assert SECRET not in result.stderr + result.stdout and "[redacted]" in result.stderr


@pytest.mark.parametrize("fault", ["400-echo", "500-echo"])
def test_echoed_keys_in_failed_calls_are_stored_nowhere(openai_server, tmp_path, fault):
    openai_server.by_marker = {"pair issue 1": fault}  # one pair's requests always fail, echoing the key
    judge = write_judge(tmp_path, openai_server.base_url, max_retries=1)
    table, counts = run_judge(judge, pairs(4), tmp_path / "c.sqlite3")
    assert counts["failed"] == 1 and "[redacted]" in table.loc[table["parse_status"] != "ok", "failure_reason"].iloc[0]
    assert any(SECRET in (entry["authorization"] or "") for entry in openai_server.log)  # it was sent, and echoed
    table.to_parquet(tmp_path / "out.parquet")
    assert SECRET not in every_output_text(tmp_path, tmp_path / "c.sqlite3")


def test_credential_shapes_are_scrubbed_even_when_unknown():
    text = 'Authorization: Bearer abc.def-123 x-api-key: "k-987" key sk-ant-api03-XYZxyz_12 and Bearer  tok'
    assert scrub(text) == ('Authorization: Bearer [redacted] x-api-key: "[redacted]" key [redacted] and '
                           'Bearer  [redacted]')


def test_the_key_is_not_sent_in_cleartext_to_another_machine(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, "k-123456")
    judge = write_judge(tmp_path, "http://judge.example.org:8000/v1")
    with pytest.raises(CalibrateError, match=r"plain http to another machine.*allow_cleartext = true"):
        make_backend(load_judge_config(str(judge))).preflight()
    for url in ("http://127.0.0.1:9/v1", "http://localhost:9/v1", "https://judge.example.org/v1"):
        backend = make_backend(load_judge_config(str(write_judge(tmp_path, url, name="ok"))))
        backend.check_cleartext()  # loopback or https: fine
    allowed = write_judge(tmp_path, "http://judge.example.org:8000/v1", name="lan", allow_cleartext=True)
    make_backend(load_judge_config(str(allowed))).check_cleartext()
    with pytest.raises(CalibrateError, match="'base_url' must be an http"):
        load_judge_config(str(write_judge(tmp_path, "file:///etc/passwd", name="file")))
