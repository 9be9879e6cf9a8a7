"""Hostile usage values and config values, where a user meets them, through the real CLI.

Token counts from a server are read only as whole numbers in range: a `prompt_tokens` of 1e30 or a
negative count makes that reply an `invalid_usage` failure that keeps the judgment text, and costs the
other judgments of its turn nothing (they are stored); no cost is ever negative. Config values are
checked before any work: a base_url that is not an http(s) URL with a host, a rate that would stall a
run, a price that is not a finite number in range, a name that is a path, a prompt file that is not a
regular file of sane size; a concurrency beyond the open-file limit is cut down with a warning."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from calibrate.judging.anthropic_backend import read_message
from tests.fakes.judges import write_judge
from tests.inprocess import cli

SETS = "unaligned-0,aligned-100"
HEURISTIC = Path(__file__).resolve().parent.parent / "judges" / "heuristic.toml"


def process(*args: str, cwd: Path | None = None, preexec_fn=None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A real process, where one matters: an open-file limit, or a read that could block for ever."""
    return subprocess.run([sys.executable, "-m", "calibrate", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, preexec_fn=preexec_fn)


def fit(judge: Path, out: Path, *extra: str, via=cli, **kwargs) -> subprocess.CompletedProcess:
    return via("fit", "--judge", str(judge), "--out", str(out), "--limit", "4", "--sets", SETS, "--bootstrap", "100",
               "--no-progress", *extra, **kwargs)


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and all(word in result.stderr for word in words), result.stderr


def test_hostile_token_counts_are_typed_failures_that_keep_the_judgment_and_lose_nothing(openai_server, tmp_path):
    openai_server.queue("huge-usage", "negative-usage")  # the first two replies: valid judgments, hostile usage
    judge = write_judge(tmp_path, openai_server.base_url, parse_retries=0, concurrency=4)
    cache = tmp_path / "cache.sqlite3"
    result = fit(judge, tmp_path / "out", "--cache", str(cache))
    # 2 of 8 failed, over the default --max-failed-share: exit 3, each kind named with its first reason
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "invalid_usage 2: the server's usage prompt_tokens" in result.stderr

    table = pd.read_parquet(tmp_path / "out" / "judgments.parquet")
    bad = table[table["parse_status"] == "invalid_usage"]
    assert len(bad) == 2 and len(table) == 8 and (table["parse_status"] != "ok").sum() == 2
    assert set(bad["failure_reason"].str.extract(r"usage (\w+) = ")[0]) == {"prompt_tokens"}
    assert bad["raw_output"].map(lambda text: json.loads(text)["alignment_score"] in (-2, 2)).all()  # kept whole
    assert (table["cost_usd"] >= 0).all() and (table["input_tokens"] >= 0).all()
    record = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert record["accounting"]["cost_usd"] >= 0 and record["accounting"]["failures_by_reason"] == {"invalid_usage": 2}
    with sqlite3.connect(cache) as db:  # every paid reply is in the cache: 6 judgments, 2 failures with their text
        assert db.execute("SELECT COUNT(*) FROM judgments").fetchone() == (6,)
        failures = [json.loads(r) for (r,) in db.execute("SELECT record FROM failures")]
    assert sorted(f["raw_output"] for f in failures) == sorted(bad["raw_output"])

    again = fit(judge, tmp_path / "again", "--cache", str(cache))  # the next run asks again only for those two
    assert again.returncode == 0, again.stderr
    run = json.loads((tmp_path / "again" / "calibration.json").read_text())["run"]
    assert (run["reused"], run["judged"], run["requests"]) == (6, 2, 2)


@pytest.mark.parametrize("usage",
                         [{"input_tokens": 1e30, "output_tokens": 5}, {"input_tokens": 10, "output_tokens": -3},
                                   {"input_tokens": 2.5}, {"input_tokens": "12"}, [1, 2]])
def test_the_anthropic_reader_types_hostile_usage_and_keeps_the_tool_input(usage):
    judgment = {"alignment_score": 1, "person_1_refusal": False}
    verdict = read_message({"content": [{"type": "tool_use", "name": "record_judgment", "input": judgment}],
                            "usage": usage, "stop_reason": "tool_use"})
    assert (verdict.parse_status, verdict.input_tokens, verdict.output_tokens) == ("invalid_usage", 0, 0)
    assert json.loads(verdict.raw_output) == [judgment] and "usage" in verdict.failure_reason


BAD_VALUES = [
    ("base_url = 12345", "'base_url' must be an http:// or https:// URL"),
    ('base_url = "file:///etc/passwd"', "'base_url' must be an http:// or https:// URL"),
    ('base_url = "127.0.0.1:1/v1"', "'base_url' must be an http:// or https:// URL"),
    ('base_url = "http://127.0.0.1:x/v1"', "'base_url' must be an http:// or https:// URL"),
    ("requests_per_minute = 0.0001", "'requests_per_minute' must be a number in 1..1,000,000"),
    ("price_input_per_mtok = nan", "'price_input_per_mtok' must be a number in 0..1,000,000"),
    ("price_output_per_mtok = 1e308", "'price_output_per_mtok' must be a number in 0..1,000,000"),
    ('name = "../.."', "'name' must be a plain file name"),
    ('name = ".hidden"', "'name' must be a plain file name"),
    ('prompt = "/dev/zero"', "prompt file /dev/zero is not a regular file"),
]


@pytest.mark.parametrize("line, says", BAD_VALUES, ids=[line for line, _ in BAD_VALUES])
def test_bad_config_values_are_one_line_before_any_request(openai_server, tmp_path, line, says):
    judge = write_judge(tmp_path, openai_server.base_url)
    text = "".join(f"{row}\n" for row in judge.read_text().splitlines() if row.split(" =")[0] != line.split(" =")[0])
    judge.write_text(text + line + "\n")
    result = fit(judge, tmp_path / "out")
    assert_one_line(result, str(judge.name), says)
    assert openai_server.log == [] and not (tmp_path / "out").exists()


def test_fifo_and_huge_prompt_files_are_refused_and_judges_lists_them_as_invalid(tmp_path):
    folder = tmp_path / "judges"
    (folder / "prompts").mkdir(parents=True)
    os.mkfifo(folder / "prompts" / "pipe.txt")
    (folder / "prompts" / "huge.txt").write_text("[system]\n" + "x" * (1 << 21))
    for name, prompt in (("piped", "pipe.txt"), ("huge", "huge.txt"), ("zero", "/dev/zero")):
        (folder / f"{name}.toml").write_text(f'backend = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:1/v1"\n'
                                             f'api_key_env = ""\nprompt = "{prompt}"\n')
    # a FIFO would block a reader for ever: each of these returns at once with one line
    assert_one_line(fit(folder / "piped.toml", tmp_path / "o", via=process, timeout=30),
                    "pipe.txt is not a regular file")
    assert_one_line(fit(folder / "huge.toml", tmp_path / "o", via=process, timeout=30),
                    "huge.txt is larger than 1,048,576 characters")
    listing = process("judges", cwd=tmp_path, timeout=30)  # ./judges holds them: listed as invalid, never read
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    for name in ("piped", "huge", "zero"):
        assert [name, "invalid"] in [row[:2] for row in rows], listing.stdout


def test_concurrency_beyond_the_open_file_limit_is_cut_down_with_a_warning(tmp_path):
    judge = tmp_path / "wide.toml"
    judge.write_text(f'extends = "{HEURISTIC}"\nname = "wide"\nconcurrency = 100000\n')

    def low_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    result = fit(judge, tmp_path / "out", via=process, preexec_fn=low_file_limit)
    assert result.returncode == 0, result.stderr
    assert "concurrency 100000 would need more connections than this process may open (open-file limit 512); " \
           "using 256" in result.stderr
    record = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert record["run"]["items"] == 8 and record["run"]["failed"] == 0


@pytest.mark.parametrize("line, says", [
    ('name = "../.."', "'name' must be a plain file name"),
    ('base_url = "127.0.0.1:1/v1"', "'base_url' must be an http:// or https:// URL"),
    ("price_output_per_mtok = nan", "'price_output_per_mtok' must be a number in 0..1,000,000"),
    ("requests_per_minute = 0.0001", "'requests_per_minute' must be a number in 1..1,000,000"),
])
def test_a_bad_model_config_for_respond_is_one_line_before_any_request(openai_server, tmp_path, line, says):
    model = tmp_path / "m.toml"
    settings = {"name": '"m"', "model": '"test-model"', "base_url": json.dumps(openai_server.base_url),
                "api_key_env": '""', **dict([line.split(" = ")])}
    model.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": 1, "issue_description": "Whether to.", "for_question": "Explain why.",
                                   "against_question": "Explain why not."}) + "\n")
    result = cli("respond", "--model", str(model), "--prompts", str(prompts), "--out", str(tmp_path / "out"),
                 "--cache", str(tmp_path / "c.sqlite3"))
    assert_one_line(result, "model config", says)
    assert openai_server.log == [] and not (tmp_path / "out").exists()
