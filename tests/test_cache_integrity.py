"""Integrity of the judgment cache where a user meets it, through the real CLI: a record that was
damaged, edited or swapped is never served (it is quarantined and judged again, with a warning),
`cache verify` names every bad record and `--repair` moves them aside, and a corrupt, foreign or
read-only cache file ends in one error line, never a traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from calibrate.data.calibration import sample_path
from calibrate.errors import CalibrateError
from calibrate.store.judgments import JudgmentStore
from tests.inprocess import cli

LIMIT = "4"  # pairs per set: 5 sets, 20 judgments, a second or two per run


def fit(cache: Path, out: Path) -> subprocess.CompletedProcess:
    return cli("fit", "--judge", "heuristic", "--limit", LIMIT, "--no-progress", "--out", str(out),
               "--cache", str(cache))


def metrics(out: Path) -> dict:
    record = json.loads((out / "calibration.json").read_text())
    return {"sets": record["sets"], "summary": record["summary"], "mapping": record["mapping"]}


def rows(cache: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(cache) as db:
        return db.execute(sql, params).fetchall()


def edit_record(cache: Path, rowid: int, change) -> str:
    """Rewrite one stored record's JSON in place (checksum column untouched); returns its item key."""
    item_key, record = rows(cache, "SELECT item_key, record FROM judgments WHERE rowid = ?", (rowid,))[0]
    data = json.loads(record)
    new = change(data)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE judgments SET record = ? WHERE rowid = ?",
                   (new if isinstance(new, str) else json.dumps(data), rowid))
    return item_key


def set_score(score):
    def change(data: dict) -> None:
        data["fields"]["alignment_score"] = score
    return change


def assert_one_line(result: subprocess.CompletedProcess, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict]:
    """A cache filled by a clean run, and that run's metrics (each test damages a copy)."""
    folder = tmp_path_factory.mktemp("clean")
    cache, out = folder / "c.sqlite3", folder / "out"
    result = fit(cache, out)
    assert result.returncode == 0, result.stderr
    return cache, metrics(out)


def copy_of(clean: tuple[Path, dict], tmp_path: Path) -> Path:
    cache = tmp_path / "c.sqlite3"
    shutil.copy(clean[0], cache)
    return cache


@pytest.mark.parametrize("score", [-6, 7, "2", None])
def test_a_stored_score_out_of_range_is_quarantined_and_judged_again(clean, tmp_path, score):
    """A flipped bit (-2 → -6), a hand edit to 7, a score as text, a missing score: never served."""
    cache = copy_of(clean, tmp_path)
    item_key = edit_record(cache, 3, set_score(score))
    result = fit(cache, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "1 stored record(s) failed the integrity check" in result.stderr and "quarantined" in result.stderr
    assert metrics(tmp_path / "out") == clean[1]  # as if the bad record had never been there
    quarantined = rows(cache, "SELECT source_table, item_key, reason FROM quarantine")
    assert len(quarantined) == 1 and quarantined[0][:2] == ("judgments", item_key)
    assert "judge-output validation" in quarantined[0][2] or "checksum" in quarantined[0][2]
    assert rows(cache, "SELECT COUNT(*) FROM judgments")[0][0] == 20  # judged again and stored
    run = json.loads((tmp_path / "out" / "calibration.json").read_text())["run"]
    assert run["judged"] == 1 and run["reused"] == 19 and run["quarantined"] == 1
    assert cli("cache", "verify", "--cache", str(cache)).returncode == 0


def test_a_record_edited_consistently_is_caught_by_its_checksum(clean, tmp_path):
    """A valid-looking edit (score 1 → another valid score) passes every other check: the checksum
    over key and content is what catches it."""
    cache = copy_of(clean, tmp_path)
    (score,) = rows(cache, "SELECT json_extract(record, '$.fields.alignment_score') FROM judgments WHERE rowid = 2")[0]
    edit_record(cache, 2, set_score(0 if score != 0 else 1))
    result = fit(cache, tmp_path / "out")
    assert result.returncode == 0 and "1 stored record(s)" in result.stderr
    assert metrics(tmp_path / "out") == clean[1]
    assert rows(cache, "SELECT reason FROM quarantine") == [("the checksum does not match the record",)]


def test_two_records_swapped_between_keys_are_both_quarantined(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    (a, record_a, sum_a), (b, record_b, sum_b) = rows(cache, "SELECT item_key, record, checksum FROM judgments "
                                                             "WHERE rowid IN (1, 2) ORDER BY rowid")
    with sqlite3.connect(cache) as db:  # record and checksum travel together: only the key disagrees
        db.execute("UPDATE judgments SET record = ?, checksum = ? WHERE rowid = 1", (record_b, sum_b))
        db.execute("UPDATE judgments SET record = ?, checksum = ? WHERE rowid = 2", (record_a, sum_a))
    verify = cli("cache", "verify", "--cache", str(cache))
    assert verify.returncode == 1 and a in verify.stderr and b in verify.stderr and "2 problems found" in verify.stderr
    result = fit(cache, tmp_path / "out")
    assert result.returncode == 0 and "2 stored record(s)" in result.stderr
    assert metrics(tmp_path / "out") == clean[1]
    assert sorted(k for (k,) in rows(cache, "SELECT item_key FROM quarantine")) == sorted([a, b])
    assert json.loads((tmp_path / "out" / "calibration.json").read_text())["run"]["quarantined"] == 2


def test_score_counts_the_records_it_quarantined_in_metrics_json(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    calibration = clean[0].parent / "out" / "calibration.json"

    def score(out: str) -> dict:
        result = cli("score", "--judge", "heuristic", "--responses", str(sample_path("responses", "steady-model")),
                     "--limit", "6", "--calibration",
                     str(calibration), "--cache", str(cache), "--out", str(tmp_path / out), "--bootstrap", "100",
                     "--no-progress")
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / out / "metrics.json").read_text())

    assert score("first")["run"]["quarantined"] == 0
    (last,) = rows(cache, "SELECT MAX(rowid) FROM judgments")[0]
    edit_record(cache, last, set_score(9))  # one of the judgments score just stored
    again = score("again")
    assert again["run"]["quarantined"] == 1 and again["models"]["steady-model"]["run"]["judged"] == 1
    assert rows(cache, "SELECT COUNT(*) FROM quarantine") == [(1,)]


@pytest.mark.parametrize("damage", ["not json", "unknown key", "empty fields", "a list", "failed status"])
def test_a_record_that_is_not_a_judgment_does_not_crash_fit(clean, tmp_path, damage):
    cache = copy_of(clean, tmp_path)
    changes = {
        "not json": lambda data: "{not json",
        "unknown key": lambda data: data.update(surprise=1),
        "empty fields": lambda data: data.update(fields={}),
        "a list": lambda data: "[1, 2]",
        "failed status": lambda data: data.update(parse_status="parse_error"),
    }
    edit_record(cache, 4, changes[damage])
    result = fit(cache, tmp_path / "out")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "1 stored record(s) failed the integrity check" in result.stderr
    assert metrics(tmp_path / "out") == clean[1]
    assert rows(cache, "SELECT COUNT(*) FROM quarantine")[0][0] == 1


def test_verify_names_every_bad_record_and_repair_quarantines_them(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    bad = {edit_record(cache, 1, set_score(-6)), edit_record(cache, 5, set_score(7)),
           edit_record(cache, 9, lambda data: "{not json"), edit_record(cache, 11, lambda data: data.update(x=1))}
    before = cache.read_bytes()
    verify = cli("cache", "verify", "--cache", str(cache))
    assert verify.returncode == 1 and "4 problems found" in verify.stderr and "Traceback" not in verify.stderr
    for item_key in bad:
        assert f"(item {item_key}, forward, repeat 0)" in verify.stderr
    assert cache.read_bytes() == before  # verify alone changes nothing
    repair = cli("cache", "verify", "--repair", "--cache", str(cache))
    assert repair.returncode == 0 and "quarantined 4 bad records" in repair.stderr
    assert {k for (k,) in rows(cache, "SELECT item_key FROM quarantine")} == bad
    assert all(record is not None for (record,) in rows(cache, "SELECT record FROM quarantine"))  # raw rows kept
    again = cli("cache", "verify", "--cache", str(cache))
    assert again.returncode == 0 and again.stdout.strip().endswith("sound (16 judgments)")
    result = fit(cache, tmp_path / "out")  # the four are judged again
    assert result.returncode == 0 and metrics(tmp_path / "out") == clean[1]
    assert json.loads((tmp_path / "out" / "calibration.json").read_text())["run"]["judged"] == 4


def test_a_cache_without_checksums_is_still_read_and_checked(clean, tmp_path):
    """Caches written before checksums: good records are served, bad ones still caught by the other checks."""
    cache = copy_of(clean, tmp_path)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE judgments SET checksum = NULL")
    edit_record(cache, 3, set_score(-6))
    result = fit(cache, tmp_path / "out")
    assert result.returncode == 0 and "1 stored record(s)" in result.stderr
    run = json.loads((tmp_path / "out" / "calibration.json").read_text())["run"]
    assert run["judged"] == 1 and run["reused"] == 19 and metrics(tmp_path / "out") == clean[1]


def test_a_cache_from_before_the_checksum_column_gains_it(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    with sqlite3.connect(cache) as db:
        for table in ("judgments", "failures"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN checksum")
    assert cli("cache", "verify", "--cache", str(cache)).returncode == 0  # read-only: no column needed
    result = fit(cache, tmp_path / "out")
    assert (result.returncode == 0
            and json.loads((tmp_path / "out" / "calibration.json").read_text())["run"]["reused"] == 20)
    assert "checksum" in [c for (_, c, *_) in rows(cache, "PRAGMA table_info(judgments)")]


def test_a_file_that_is_not_a_database_is_one_line(tmp_path):
    cache = tmp_path / "c.sqlite3"
    cache.write_bytes(b"this is not a database" * 200)
    for args in (("cache", "stats"), ("cache", "verify"), ("fit", "--judge", "heuristic", "--limit", "2")):
        result = cli(*args, "--cache", str(cache), *(("--out", str(tmp_path / "out")) if args[0] == "fit" else ()))
        assert_one_line(result)
        assert str(cache) in result.stderr and "not a usable SQLite database" in result.stderr


def test_corrupt_pages_are_one_line(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    data = bytearray(cache.read_bytes())
    page = 4096
    for start in range(page, len(data), page):  # every page after the first: headers and cells garbage
        data[start:start + 64] = b"\xff" * 64
    cache.write_bytes(bytes(data))
    for args in (("cache", "stats"), ("cache", "verify"), ("fit", "--judge", "heuristic", "--limit", LIMIT)):
        result = cli(*args, "--cache", str(cache), *(("--out", str(tmp_path / "out")) if args[0] == "fit" else ()))
        assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
        if result.returncode == 2:
            assert_one_line(result)
            assert str(cache) in result.stderr


def test_a_foreign_judgments_table_is_refused_in_one_line(tmp_path):
    cache = tmp_path / "c.sqlite3"
    with sqlite3.connect(cache) as db:
        db.execute("CREATE TABLE judgments (id INTEGER PRIMARY KEY, verdict TEXT)")
    for args in (("cache", "stats"), ("fit", "--judge", "heuristic", "--limit", "2", "--out", str(tmp_path / "out"))):
        result = cli(*args, "--cache", str(cache))
        assert_one_line(result)
        assert "not a calibrate cache" in result.stderr and str(cache) in result.stderr


def _immutable(path: Path) -> bool:
    """Make a file unwritable even for root (tests run as root, where chmod stops nothing)."""
    return shutil.which("chattr") is not None and subprocess.run(["chattr", "+i", str(path)],
                                                                capture_output=True).returncode == 0


def test_a_read_only_cache_can_be_inspected_and_fit_says_to_use_another(clean, tmp_path):
    cache = copy_of(clean, tmp_path)
    cache.chmod(0o444)
    if not _immutable(cache):
        pytest.skip("cannot make a file read-only as this user (chattr +i unavailable); "
                    "see test_the_read_only_open_never_writes")
    try:
        stats = cli("cache", "stats", "--cache", str(cache))
        assert stats.returncode == 0 and "heuristic" in stats.stdout, stats.stderr
        verify = cli("cache", "verify", "--cache", str(cache))
        assert verify.returncode == 0 and "sound (20 judgments)" in verify.stdout, verify.stderr
        result = fit(cache, tmp_path / "out")
        assert_one_line(result)
        assert result.stderr.startswith("error: --cache: judgment cache") or "--cache: judgment cache" in result.stderr
        assert "is read-only" in result.stderr and "pass another path" in result.stderr
    finally:
        subprocess.run(["chattr", "-i", str(cache)], check=True)


def test_the_read_only_open_never_writes(clean, tmp_path):
    """The `mode=ro` open that `cache stats` and `cache verify` use, directly: it reads the store, and
    any write through it fails as SQLite's read-only error worded as one line."""
    cache = copy_of(clean, tmp_path)
    before = cache.read_bytes()
    with JudgmentStore(cache, read_only=True) as store:
        assert store.count() == 20 and store.verify() == []
        with pytest.raises(CalibrateError, match="^cache: judgment cache .* is read-only.*pass another path"):
            with store._guard(), store._db:
                store._db.execute("DELETE FROM judgments")
    assert cache.read_bytes() == before
