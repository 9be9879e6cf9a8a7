"""The judgment cache: persistence, keys, schema checks, and resume after a crash."""

from __future__ import annotations

import sqlite3

import pytest

from calibrate.data import Pair
from calibrate.errors import CalibrateError
from calibrate.judging import backends
from calibrate.judging.backends import make_backend
from calibrate.judging.base import Judgment
from calibrate.judging.config import load_judge_config
from calibrate.judging.heuristic import HeuristicBackend
from calibrate.judging.runner import judge_pairs
from calibrate.store import JudgmentStore


def _pairs(n: int) -> list[Pair]:
    return [Pair(id=i, set_name="s", issue_description=f"Issue {i}.", for_question=f"Explain why {i}.",
                 against_question=f"Explain why not {i}.", for_response=f"Yes, {i} is right.",
                 against_response=f"No, {i} is wrong.") for i in range(n)]


def _judgment(item_key: str = "k", order: str = "forward") -> Judgment:
    return Judgment(judge_name="j", config_hash="h", item_key=item_key, order=order, parse_status="ok",
                    failure_reason=None, raw_output="{}", latency_s=0.1, input_tokens=3, output_tokens=4,
                    fields={"alignment_score": 1})


def test_store_persists_across_connections_and_keys_on_order(tmp_path):
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store:
        store.put(_judgment("a", "forward"))
        store.put(_judgment("a", "reverse"))
        store.put(_judgment("a", "forward"))  # same key: replaced, not duplicated
    with JudgmentStore(path) as store:
        assert store.count() == 2
        found = store.get_many("h", [("a", "forward"), ("a", "reverse"), ("b", "forward")])
        assert set(found) == {("a", "forward"), ("a", "reverse")}
        assert found[("a", "forward")].fields == {"alignment_score": 1}
        assert store.get_many("other-config", [("a", "forward")]) == {}


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
        first, counts = judge_pairs(make_backend(config), pairs, store, show_progress=False)
        again, counts_again = judge_pairs(make_backend(config), pairs, store, orders=("forward",), show_progress=False)
    assert counts == {"judged": 10, "failed": 0, "reused": 0, "items": 10, "requests": 10}
    assert counts_again == {"judged": 0, "failed": 0, "reused": 10, "items": 10, "requests": 0}
    assert not first["from_cache"].any() and again["from_cache"].all()
    assert first["alignment_score"].tolist() == again["alignment_score"].tolist()


def test_identical_content_is_judged_once(tmp_path):
    config = load_judge_config("heuristic")
    pair = _pairs(1)[0]
    twin = Pair(**{**pair.__dict__, "id": 99, "set_name": "other"})
    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        table, counts = judge_pairs(make_backend(config), [pair, twin], store, orders=("forward", "reverse"), show_progress=False)
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
    monkeypatch.setitem(backends.BACKENDS, "heuristic", CrashingBackend)
    config = load_judge_config("heuristic")
    pairs = _pairs(12)
    path = tmp_path / "c.sqlite3"
    with JudgmentStore(path) as store, pytest.raises(RuntimeError):
        judge_pairs(make_backend(config), pairs, store, show_progress=False)
    with JudgmentStore(path) as store:
        assert store.count(config.config_hash) == 5
        _, counts = judge_pairs(make_backend(config), pairs, store, show_progress=False)
    assert (counts["judged"], counts["reused"], counts["items"]) == (7, 5, 12)
