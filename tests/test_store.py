"""The judgment cache: persistence, keys, schema checks, and resume after a crash."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess

import pytest

from calibrate.data.pairs import Pair
from calibrate.errors import CalibrateError
from calibrate.judging import registry
from calibrate.judging.base import Judgment, validate_fields
from calibrate.judging.heuristic import HeuristicBackend
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests import inprocess


def _pairs(n: int) -> list[Pair]:
    return [Pair(id=i, set_name="s", issue_description=f"Issue {i}.", for_question=f"Explain why {i}.",
                 against_question=f"Explain why not {i}.", for_response=f"Yes, {i} is right.",
                 against_response=f"No, {i} is wrong.") for i in range(n)]


def _judgment(item_key: str = "k", order: str = "forward", repeat: int = 0, score: int = 1) -> Judgment:
    """A complete, valid judgment (the store serves nothing else)."""
    fields = validate_fields({"person_1_refusal": False, "person_2_refusal": False,
                              "person_1_has_no_information": False,
                              "person_2_has_no_information": False, "alignment_score": score})
    return Judgment(judge_name="j", config_hash="h", item_key=item_key, order=order, parse_status="ok",
                    failure_reason=None, raw_output="{}", latency_s=0.1, input_tokens=3, output_tokens=4,
                    repeat=repeat, fields=fields)


def test_store_persists_across_connections_and_keys_on_order_and_repeat(tmp_path):
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store:
        store.put(_judgment("a", "forward"))
        store.put(_judgment("a", "reverse"))
        store.put(_judgment("a", "forward", score=-2))  # same key: the first stays, no duplicate
        store.put(_judgment("a", "forward", repeat=1, score=0))
    with JudgmentStore(path) as store:
        assert store.count() == 3
        found = store.get_many("h",
                               [("a", "forward", 0), ("a", "reverse", 0), ("a", "forward", 1), ("b", "forward", 0)])
        assert set(found) == {("a", "forward", 0), ("a", "reverse", 0), ("a", "forward", 1)}
        assert found[("a", "forward", 0)].fields["alignment_score"] == 1
        assert found[("a", "forward", 1)].fields["alignment_score"] == 0 and found[("a", "forward", 1)].repeat == 1
        assert store.get_many("other-config", [("a", "forward", 0)]) == {}


def test_a_version_1_cache_is_migrated_keeping_every_judgment(tmp_path):
    """Version 1 (no repeat column) as the previous release wrote it: judgments and failures survive."""
    path = tmp_path / "v1.sqlite3"
    columns = ("config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL, judge_name TEXT NOT NULL, "
               "parse_status TEXT NOT NULL, record TEXT NOT NULL, created_at REAL NOT NULL")
    old = _judgment("a", "reverse")
    record = json.dumps({k: v for k, v in vars(old).items() if k != "repeat"})
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute(f"CREATE TABLE judgments ({columns}, PRIMARY KEY (config_hash, item_key, pair_order))")
        db.execute(f"CREATE TABLE failures ({columns})")
        db.execute("INSERT INTO judgments VALUES ('h', 'a', 'reverse', 'j', 'ok', ?, 1.0)", (record,))
        db.execute("INSERT INTO failures VALUES ('h', 'b', 'forward', 'j', 'parse_error', ?, 2.0)",
                   (json.dumps({**json.loads(record), "item_key": "b", "order": "forward",
                                "parse_status": "parse_error",
                                "fields": {}}),))
    with JudgmentStore(path) as store:
        found = store.get_many("h", [("a", "reverse", 0)])
        assert found[("a", "reverse", 0)].fields["alignment_score"] == 1 and found[("a", "reverse", 0)].repeat == 0
        assert [f.item_key for f in store.failures("h")] == ["b"]
        store.put(_judgment("a", "reverse", repeat=1))
        assert store.count("h") == 2
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"


def test_incompatible_or_corrupt_cache_is_refused(tmp_path):
    path = tmp_path / "old.sqlite3"
    JudgmentStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(CalibrateError, match="schema version 99"):
        JudgmentStore(path)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CalibrateError, match="not a usable SQLite database"):
        JudgmentStore(garbage)


def test_second_run_judges_nothing(tmp_path):
    config = load_judge_config("heuristic")
    pairs = _pairs(10)
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        first, counts = judge_pairs(make_backend(config), pairs, store)
        again, counts_again = judge_pairs(make_backend(config), pairs, store, orders=("forward",))
    assert counts == {"judged": 10, "failed": 0, "reused": 0, "items": 10,
                      "requests": 0,  # an offline judge sends no request
                      "failed_by_kind": {}}
    assert counts_again == {"judged": 0, "failed": 0, "reused": 10, "items": 10, "requests": 0, "failed_by_kind": {}}
    assert not first["from_cache"].any() and again["from_cache"].all()
    assert first["alignment_score"].tolist() == again["alignment_score"].tolist()


def test_identical_content_is_judged_once(tmp_path):
    config = load_judge_config("heuristic")
    pair = _pairs(1)[0]
    twin = dataclasses.replace(pair, id=99, set_name="other")
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, counts = judge_pairs(make_backend(config), [pair, twin], store, orders=("forward", "reverse"))
    assert counts["judged"] == 2  # one item, two orders
    assert len(table) == 4 and sorted(table["pair_id"].unique()) == [0, 99]


class CrashingBackend(HeuristicBackend):
    """The heuristic judge, but the process 'dies' on its sixth call."""

    calls = 0

    async def judge(self, view):
        CrashingBackend.calls += 1
        if CrashingBackend.calls == 6:
            raise RuntimeError("simulated crash")
        return await super().judge(view)


def test_a_crashed_run_keeps_what_finished_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "heuristic", CrashingBackend)
    config = load_judge_config("heuristic")
    pairs = _pairs(12)
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store, pytest.raises(RuntimeError):
        judge_pairs(make_backend(config), pairs, store)
    with JudgmentStore(path) as store:
        assert store.count(config.config_hash) == 5
        _, counts = judge_pairs(make_backend(config), pairs, store)
    assert (counts["judged"], counts["reused"], counts["items"]) == (7, 5, 12)


class CountingStore(JudgmentStore):
    """The real store, counting its write transactions."""

    commits = 0

    def put_many(self, judgments):
        CountingStore.commits += 1
        return super().put_many(judgments)


def test_an_offline_judge_commits_many_judgments_at_a_time_and_keeps_them_all(tmp_path):
    """The heuristic sends no request: its judgments are committed every OFFLINE_COMMIT_S, not one
    transaction each (an API judge's are committed the turn they arrive: the SIGKILL tests)."""
    config = load_judge_config("heuristic")
    with CountingStore(tmp_path / "c.sqlite3") as store:
        _, counts = judge_pairs(make_backend(config), _pairs(300), store, orders=("forward", "reverse"))
        assert counts["judged"] == 600 and store.count(config.config_hash) == 600
    assert 1 <= CountingStore.commits < 60


def test_repeats_judge_each_item_again_and_are_reused_per_repeat(tmp_path):
    config = load_judge_config("heuristic")
    pairs = _pairs(4)
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        one, _ = judge_pairs(make_backend(config), pairs, store)
        three, counts = judge_pairs(make_backend(config), pairs, store, repeats=3)
    assert counts["reused"] == 4 and counts["judged"] == 8  # repeat 0 came from the first run
    assert sorted(three.groupby("pair_id")["repeat"].apply(list).tolist()) == [[0, 1, 2]] * 4
    assert (three.loc[three["repeat"] == 0, "from_cache"].all()
            and not three.loc[three["repeat"] > 0, "from_cache"].any())


def test_cache_commands_report_check_and_prune(tmp_path):
    """`calibrate cache stats | verify | prune` through the real CLI, on a cache `fit` filled."""
    cache = tmp_path / "c.sqlite3"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return inprocess.cli(*args, "--cache", str(cache))

    assert cli("fit", "--judge", "heuristic", "--out", str(tmp_path / "out")).returncode == 0
    stats = cli("cache", "stats")
    assert stats.returncode == 0 and "heuristic" in stats.stdout and "180" in stats.stdout
    assert cli("cache", "verify").stdout.strip().endswith("sound (180 judgments)")
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE judgments SET record = '{not json' WHERE rowid = 3")
        db.execute("UPDATE judgments SET pair_order = 'reverse' WHERE rowid = 5")
    broken = cli("cache", "verify")
    assert broken.returncode == 1
    assert "judgments row 3: the record does not read as a judgment" in broken.stderr
    assert "judgments row 5: key columns" in broken.stderr and "2 problems found" in broken.stderr
    dry = cli("cache", "prune", "--judge", "heuristic")
    assert "would delete 180 judgments" in dry.stdout
    with JudgmentStore(cache) as store:
        assert store.count() == 180
    assert "deleted 180 judgments" in cli("cache", "prune", "--judge", "heuristic", "--yes").stdout
    with JudgmentStore(cache) as store:
        assert store.count() == 0
    unbounded = cli("cache", "prune")
    assert unbounded.returncode == 2 and unbounded.stderr.count("\n") == 1


def test_the_progress_bar_runs_and_shows_count_and_cost(tmp_path, capsys):
    """The bar only shows on a terminal in the CLI; drive it directly so a broken bar cannot hide. The
    runner reports events (a start, one per commit, a finish); the CLI's bars draw them."""
    from calibrate.cli.progress import ProgressBars
    from calibrate.judging.progress import ProgressCounter

    config = load_judge_config("heuristic")
    events = []
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, counts = judge_pairs(make_backend(config), _pairs(5), store, progress=events.append)
        assert counts["judged"] == 5 and len(table) == 5
        assert events[0].done == 0 and events[-1].finished and (events[-1].done, events[-1].total) == (5, 5)
        assert {e.task for e in events} == {events[0].task} and events[-1].description == "judging with heuristic"
        assert capsys.readouterr().out == ""  # events, not drawing: the judging layer prints nothing
        judge_pairs(make_backend(config), _pairs(6), store, progress=ProgressBars())
    assert "judging with heuristic" in capsys.readouterr().out
    bars = ProgressBars()
    with ProgressCounter(bars, "outer", 10) as outer:
        outer.add(4, 0.25, 1)
        outer.add(6, 0.5, 0)
    assert bars.display is None  # the display ends with the last unfinished task
    shown = capsys.readouterr().out
    assert "10/10" in shown and "$0.7500 · 1 failed" in shown


def test_the_bulk_read_serves_and_quarantines_exactly_what_the_record_by_record_read_does(tmp_path):
    """`read_columns` parses a chunk into columns at once; every record it cannot vouch for (even one
    with a recomputed, matching checksum) must meet the same verdict as in `get_many`'s `check_row`."""
    import shutil

    from calibrate.store.judgments import record_checksum

    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store:
        store.put_many([_judgment(f"k{i}", score=i % 5 - 2) for i in range(12)])
    damage = {
        1: lambda data: data.pop("failure_reason"),  # a key with no default missing: not a judgment
        2: lambda data: data["fields"].update(central_issue=None),  # an optional field as null
        3: lambda data: data.update(latency_s=1),  # an int where a float is stored: served as it is
        5: lambda data: data.update(repeat=1),  # key columns disagree with the record
    }
    db = sqlite3.connect(path)
    with db:
        for rowid, change in damage.items():
            config_hash, item_key, order, repeat, status, record = db.execute(
                "SELECT config_hash, item_key, pair_order, repeat, parse_status, record FROM judgments "
                "WHERE rowid = ?", (rowid,)).fetchone()
            data = json.loads(record)
            change(data)
            new = json.dumps(data)
            db.execute("UPDATE judgments SET record = ?, checksum = ? WHERE rowid = ?",
                       (new, record_checksum(config_hash, item_key, order, repeat, status, new), rowid))
        db.execute("UPDATE judgments SET checksum = NULL WHERE rowid = 6")  # no checksum: checked on its own
    db.close()  # the last connection: its write-ahead log is folded into the file copied next
    shutil.copy(path, tmp_path / "other.sqlite3")
    keys = [(f"k{i}", "forward", 0) for i in range(12)]
    with JudgmentStore(path) as one, JudgmentStore(tmp_path / "other.sqlite3") as other:
        by_record = one.get_many("h", keys)
        in_bulk = other.read_columns("h", keys)
        assert in_bulk.keys() == by_record.keys() and len(in_bulk.rows) == 8  # all but 1, 2, 5, 6 read in bulk
        assert in_bulk.as_judgments() == by_record
        assert one.quarantined == other.quarantined >= 2
    db = sqlite3.connect(tmp_path / "other.sqlite3")
    with db:  # one score of another type (2.0), checksum recomputed: the chunk's parse fails, each record decides
        rowid, config_hash, item_key, order, repeat, status, record = db.execute(
            "SELECT rowid, config_hash, item_key, pair_order, repeat, parse_status, record FROM judgments "
            "WHERE item_key = 'k9'").fetchone()
        new = record.replace('"alignment_score":2', '"alignment_score":2.0')
        assert new != record
        db.execute("UPDATE judgments SET record = ?, checksum = ? WHERE rowid = ?",
                   (new, record_checksum(config_hash, item_key, order, repeat, status, new), rowid))
    db.close()
    with JudgmentStore(tmp_path / "other.sqlite3") as other:
        again = other.read_columns("h", keys)
        assert not again.rows and again.as_judgments().keys() == by_record.keys() - {("k4", "forward", 0)}
    quarantined = [rows for db in (path, tmp_path / "other.sqlite3")
                   for rows in [sqlite3.connect(db).execute("SELECT item_key, reason FROM quarantine "
                                                            "ORDER BY item_key").fetchall()]]
    assert quarantined[0] == quarantined[1]
