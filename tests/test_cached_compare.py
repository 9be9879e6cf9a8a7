"""A cached comparison reads each judge's judgments once: a panel's member compared on its own too is
not read from the cache again (`judge_pairs(reuse=)`), and the tables are those a second read makes.
A table with anything judged in the run is not reused (a second read differs: its judgments then count
as reused, its failures are tried again). And the bootstrap's distinct rows are numpy's exactly."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from calibrate.data.calibration import FIT_SETS
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import CachedTable, judge_pairs
from calibrate.stats.metrics import distinct_rows
from calibrate.store.judgments import JudgmentStore
from calibrate.workflows.common import load_sets

JUDGES = ("heuristic-strict", "panel", "heuristic", "heuristic-decisive")  # the panel: the three heuristics
ORDERS = ("forward", "reverse")


class CountingStore(JudgmentStore):
    """The real store, counting the bulk reads per judge config."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: dict[str, int] = {}

    def read_columns(self, config_hash, keys):
        self.reads[config_hash] = self.reads.get(config_hash, 0) + 1
        return super().read_columns(config_hash, keys)


@pytest.fixture(scope="module")
def pairs():
    return [pair for loaded in load_sets("sample", FIT_SETS, 6, 0).values() for pair in loaded.pairs]


def judged(store, pairs, reuse):
    return {name: judge_pairs(make_backend(load_judge_config(name)), pairs, store, orders=ORDERS, repeats=2,
                              reuse=reuse) for name in JUDGES}


def test_a_panel_member_compared_on_its_own_is_read_once_and_its_table_is_a_second_reads(tmp_path, pairs):
    cache = tmp_path / "c.sqlite3"
    with JudgmentStore(cache) as store:
        judged(store, pairs, None)  # fills the cache
    with CountingStore(cache) as store:
        again = judged(store, pairs, None)
        assert list(store.reads.values()) == [2, 2, 2]  # each member: on its own, then for the panel
    with CountingStore(cache) as store:
        reuse: dict[str, CachedTable] = {}
        once = judged(store, pairs, reuse)
        assert list(store.reads.values()) == [1, 1, 1]  # each member read once, the panel's judgments are made
        assert set(reuse) == {load_judge_config(name).config_hash
                              for name in ("heuristic", "heuristic-strict", "heuristic-decisive")}
    for name in JUDGES:
        (table, counts), (expected, expected_counts) = once[name], again[name]
        members = 3 if name == "panel" else 1
        assert counts == expected_counts and counts["reused"] == members * len(pairs) * 4 and counts["judged"] == 0
        volatile = ["created_at"] if name == "panel" else []  # a panel's judgments are made at each read
        pd.testing.assert_frame_equal(table.drop(columns=volatile), expected.drop(columns=volatile))
    once["heuristic"][0].loc[0, "alignment_score"] = 9  # a table handed out is the caller's own
    assert reuse[load_judge_config("heuristic").config_hash].table.loc[0, "alignment_score"] != 9


def test_a_table_with_judgments_made_in_the_run_is_not_reused(tmp_path, pairs):
    reuse: dict[str, CachedTable] = {}
    with CountingStore(tmp_path / "c.sqlite3") as store:
        tables = judged(store, pairs, reuse)
        assert list(store.reads.values()) == [2, 2, 2]  # each judged once, then read back from the cache
    assert tables["heuristic-strict"][1]["judged"] == len(pairs) * 4
    assert tables["panel"][1]["reused"] == len(pairs) * 4 and tables["panel"][1]["judged"] == 2 * len(pairs) * 4
    assert tables["heuristic"][1]["reused"] == len(pairs) * 4  # judged for the panel, stored, then read
    assert all(entry.counts["judged"] == 0 for entry in reuse.values())  # only the reads from the cache alone


def test_a_tampered_record_of_a_member_is_quarantined_once_and_judged_again(tmp_path, pairs):
    cache = tmp_path / "c.sqlite3"
    with JudgmentStore(cache) as store:
        judged(store, pairs, None)
    strict = load_judge_config("heuristic-strict").config_hash
    with sqlite3.connect(cache) as db:
        rowid, record = db.execute("SELECT rowid, record FROM judgments WHERE config_hash = ? LIMIT 1",
                                   (strict,)).fetchone()
        changed = json.loads(record)
        changed["fields"]["alignment_score"] = 7
        db.execute("UPDATE judgments SET record = ? WHERE rowid = ?", (json.dumps(changed), rowid))
    reuse: dict[str, CachedTable] = {}
    with JudgmentStore(cache) as store:
        tables = judged(store, pairs, reuse)
        assert store.quarantined == 1
    assert tables["heuristic-strict"][1]["judged"] == 1  # not kept: the panel reads it back from the cache
    assert tables["panel"][1]["reused"] == 3 * len(pairs) * 4 and reuse[strict].counts["reused"] == len(pairs) * 4
    assert tables["heuristic-strict"][0]["alignment_score"].between(-2, 2).all()


@pytest.mark.parametrize("seed", range(40))
def test_distinct_rows_are_numpys_unique_rows_and_counts(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(-2, 3, size=(rng.integers(1, 400), rng.integers(1, 26))).astype(float)
    if seed % 4 == 1:
        values[rng.random(values.shape) < 0.05] = np.nan
    if seed % 4 == 2:
        values[values == 0] = -0.0
    rows, counts = distinct_rows(values)
    expected_rows, expected_counts = np.unique(values, axis=0, return_counts=True)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(counts, expected_counts)
