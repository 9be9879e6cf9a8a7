"""Outputs are replaced whole or not at all, and response data is checked whole before anything is spent:
through the CLI, as a user meets it (real process, real files, the offline heuristic judge)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from calibrate.data.calibration import CALIBRATION_SETS, sample_path
from calibrate.store.judgments import JudgmentStore
from tests.inprocess import cli as run

ROWS = 2600  # more than one read chunk: the CLI reads 2,000 rows at a time with the heuristic judge
BIG_ID = 10**30  # valid JSON and a valid integer id, but too large for the int64 id column of judgments.parquet


def sample_rows() -> list[dict]:
    return [json.loads(line) for line in sample_path("responses", "steady-model").read_text().splitlines() if line]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def long_responses(path: Path, rows: int = ROWS) -> list[str]:
    """`rows` answers cycled from the bundled sample, each with a fresh id, as JSONL lines."""
    sample = sample_rows()
    return [json.dumps({**sample[i % len(sample)], "id": 100_000 + i}) for i in range(rows)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def judgments_in(cache: Path) -> int:
    if not cache.exists():
        return 0
    with JudgmentStore(cache) as store:
        return store.count()


def leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*.partial-*")]


@pytest.fixture
def calibration(sample_calibration) -> Path:
    """A heuristic calibration of the whole sample, fitted once per test process in a cache of its own (conftest)."""
    return sample_calibration


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --------------------------------------------------------------------------- checked whole before any judging


def test_bad_line_after_the_first_chunk_fails_before_anything_is_judged(tmp_path, calibration):
    lines = long_responses(tmp_path)
    lines[ROWS - 1] = lines[ROWS - 1][:-1]  # line 2,600: cut JSON
    source = tmp_path / "long-model.jsonl"
    source.write_text("\n".join(lines) + "\n")
    cache, out = tmp_path / "score.sqlite3", tmp_path / "scored"
    done = run("score", "--judge", "heuristic", "--responses", str(source), "--calibration", str(calibration),
               "--out", str(out), "--cache", str(cache), "--no-progress")
    line = one_error_line(done)
    assert f"line {ROWS}" in line and str(source) in line
    assert judgments_in(cache) == 0  # nothing was sent to the judge
    assert not (out / "judgments.parquet").exists()
    assert snapshot(out) == {} if out.exists() else True
    assert leftovers(tmp_path) == []


def test_defect_in_a_later_row_of_a_second_source_fails_before_the_first_source_is_judged(tmp_path, calibration):
    good = write_jsonl(tmp_path / "good-model.jsonl", sample_rows())
    rows = [json.loads(line) for line in long_responses(tmp_path)]
    rows[ROWS - 1]["for_question"] = None  # row 2,600 misses a required text
    bad = write_jsonl(tmp_path / "bad-model.jsonl", rows)
    cache, out = tmp_path / "score.sqlite3", tmp_path / "scored"
    line = one_error_line(run("score", "--judge", "heuristic", "--responses", str(good), str(bad), "--calibration",
                              str(calibration), "--out", str(out), "--cache", str(cache), "--no-progress"))
    assert str(bad) in line and "for_question" in line
    assert judgments_in(cache) == 0
    assert not (out / "judgments.parquet").exists()


def test_duplicate_id_across_chunks_is_found_before_anything_is_judged(tmp_path, calibration):
    rows = [json.loads(line) for line in long_responses(tmp_path)]
    rows[2500]["id"] = rows[10]["id"]  # the second chunk repeats an id of the first
    source = write_jsonl(tmp_path / "dup-model.jsonl", rows)
    cache, out = tmp_path / "score.sqlite3", tmp_path / "scored"
    line = one_error_line(run("score", "--judge", "heuristic", "--responses", str(source), "--calibration",
                              str(calibration), "--out", str(out), "--cache", str(cache), "--no-progress"))
    assert f"duplicate id {rows[10]['id']}" in line
    assert judgments_in(cache) == 0
    assert not (out / "judgments.parquet").exists()


def test_batch_submit_checks_every_row_before_any_provider_call(tmp_path):
    lines = long_responses(tmp_path)
    lines[ROWS - 1] = "[1, 2]"
    source = tmp_path / "long-model.jsonl"
    source.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "batch.sqlite3"
    # the heuristic has no batch API, but the data is checked before the judge is asked for one
    line = one_error_line(run("batch", "submit", "--judge", "heuristic", "--responses", str(source), "--cache",
                              str(cache)))
    assert f"line {ROWS}" in line  # (with good data the heuristic is refused: it has no batch API)
    assert judgments_in(cache) == 0


# --------------------------------------------------------------------------- outputs replaced whole or not at all


def test_score_failing_after_judging_leaves_the_previous_outputs_byte_identical(tmp_path, calibration):
    cache, out = tmp_path / "score.sqlite3", tmp_path / "scored"
    good = write_jsonl(tmp_path / "model.jsonl", sample_rows())
    first = run("score", "--judge", "heuristic", "--responses", str(good), "--calibration", str(calibration),
                "--out", str(out), "--cache", str(cache), "--no-progress", "--bootstrap", "200")
    assert first.returncode == 0, first.stderr
    (out / "notes.txt").write_text("the user's own file")
    before = snapshot(out)
    assert {"metrics.json", "judgments.parquet", "report.md", "report.html", "notes.txt"} <= set(before)

    rows = sample_rows()
    rows[0]["id"] = BIG_ID  # passes validation, then overflows the judgments.parquet id column
    broken = tmp_path / "broken"
    broken.mkdir()
    write_jsonl(broken / "model.jsonl", rows)
    second = run("score", "--judge", "heuristic", "--responses", str(broken / "model.jsonl"), "--calibration",
                 str(calibration), "--out", str(out), "--cache", str(cache), "--no-progress", "--bootstrap", "200")
    assert second.returncode != 0
    assert "Overflow" in second.stderr  # the late failure this test is about
    assert f"finished judgments are kept in the cache {cache}" in second.stderr
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []

    # and a good run afterwards replaces the outputs, keeping the user's file
    third = run("score", "--judge", "heuristic", "--responses", str(good), "--calibration", str(calibration),
                "--out", str(out), "--cache", str(cache), "--no-progress", "--bootstrap", "300")
    assert third.returncode == 0, third.stderr
    after = snapshot(out)
    assert after["notes.txt"] == before["notes.txt"]
    assert json.loads(after["metrics.json"])["run"]["bootstrap_resamples"] == 300
    assert leftovers(tmp_path) == []


def test_fit_failing_while_writing_leaves_the_previous_outputs_byte_identical(tmp_path):
    data, cache, out = tmp_path / "data", tmp_path / "fit.sqlite3", tmp_path / "fitted"
    data.mkdir()
    for name in CALIBRATION_SETS:
        shutil.copy(sample_path("calibration", name), data / f"{name}.jsonl")
    first = run("fit", "--judge", "heuristic", "--data", str(data), "--out", str(out), "--cache", str(cache),
                "--bootstrap", "200")
    assert first.returncode == 0, first.stderr
    before = snapshot(out)
    assert {"calibration.json", "judgments.parquet", "report.md"} <= set(before)

    path = data / f"{CALIBRATION_SETS[0]}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    rows[0]["id"] = BIG_ID
    write_jsonl(path, rows)
    second = run("fit", "--judge", "heuristic", "--data", str(data), "--out", str(out), "--cache", str(cache),
                 "--bootstrap", "200")
    assert second.returncode != 0
    assert f"finished judgments are kept in the cache {cache}" in second.stderr
    assert snapshot(out) == before  # no new calibration.json beside the old judgments
    assert leftovers(tmp_path) == []


def test_result_paths_point_at_the_final_files(tmp_path, calibration):
    import calibrate

    result = calibrate.score("heuristic", [str(sample_path("responses", "steady-model"))], calibration=calibration,
                             out=tmp_path / "o", cache=tmp_path / "c.sqlite3", n_boot=100)
    assert result.paths["judgments"] == tmp_path / "o" / "judgments.parquet"
    assert all(path.exists() and tmp_path / "o" in path.parents for path in result.paths.values())
    again = result.write(tmp_path / "later")
    assert all(path.exists() and tmp_path / "later" in path.parents for path in again.values())
    assert leftovers(tmp_path) == []
