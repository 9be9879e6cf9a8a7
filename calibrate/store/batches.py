"""The provider batch ledger, in the cache file: which batches were sent for which judge, what each
carries, and where each stands (tables `provider_batches` and `provider_batch_items`).

A batch is written down before it is sent, so a crash anywhere between submit and collect loses
nothing: the next command finds the record and carries on (see workflows/batch.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from calibrate.judging.provider_batch import Progress
from calibrate.store.sqlite import connect, sqlite_error

OPEN, COLLECTED, SUBMITTING = "open", "collected", "submitting"
BATCH_TABLES = """
CREATE TABLE IF NOT EXISTS provider_batches (
    local_id TEXT PRIMARY KEY, batch_id TEXT, provider TEXT NOT NULL, judge_name TEXT NOT NULL,
    config_hash TEXT NOT NULL, state TEXT NOT NULL, provider_status TEXT, requests INTEGER NOT NULL,
    counts TEXT, submitted_at REAL NOT NULL, collected_at REAL);
CREATE TABLE IF NOT EXISTS provider_batch_items (
    local_id TEXT NOT NULL, config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL,
    truncated_chars INTEGER NOT NULL, PRIMARY KEY (local_id, item_key, pair_order));
CREATE INDEX IF NOT EXISTS provider_batch_items_key ON provider_batch_items (config_hash, item_key, pair_order);
"""


class BatchLedger:
    """The batches of one cache file: what was sent in each, and where each stands."""

    def __init__(self, path: Path):
        self.db = connect(path, "judgment cache")
        try:
            with self.db:
                self.db.executescript(BATCH_TABLES)
        except sqlite3.Error as error:
            self.db.close()
            raise sqlite_error(path, "judgment cache", error) from None

    def close(self) -> None:
        self.db.close()

    def pending_keys(self, config_hash: str) -> set[tuple[str, str]]:
        """(item, order) pairs that an uncollected batch of this judge is carrying."""
        rows = self.db.execute(
            "SELECT i.item_key, i.pair_order FROM provider_batch_items i JOIN provider_batches b "
            "ON b.local_id = i.local_id WHERE i.config_hash = ? AND b.state != ?", (config_hash, COLLECTED))
        return set(rows)

    def record(self, local_id: str, provider: str, config, items: list[tuple[str, str, int]]) -> None:
        """Write a batch down before it is sent, with every request in it."""
        with self.db:
            self.db.execute("INSERT INTO provider_batches (local_id, provider, judge_name, config_hash, state, "
                            "requests, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (local_id, provider, config.name, config.config_hash, SUBMITTING, len(items), time.time()))
            self.db.executemany("INSERT INTO provider_batch_items VALUES (?, ?, ?, ?, ?)",
                                [(local_id, config.config_hash, *item) for item in items])

    def confirm(self, local_id: str, batch_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET batch_id = ?, state = ? WHERE local_id = ?",
                            (batch_id, OPEN, local_id))

    def forget(self, local_id: str) -> None:
        """A batch the provider never accepted: its requests are free to be sent again."""
        with self.db:
            self.db.execute("DELETE FROM provider_batch_items WHERE local_id = ?", (local_id,))
            self.db.execute("DELETE FROM provider_batches WHERE local_id = ?", (local_id,))

    def update(self, local_id: str, progress: Progress) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET provider_status = ?, counts = ? WHERE local_id = ?",
                            (progress.status, json.dumps(progress.counts), local_id))

    def mark_collected(self, local_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET state = ?, collected_at = ? WHERE local_id = ?",
                            (COLLECTED, time.time(), local_id))

    def items(self, local_id: str) -> dict[tuple[str, str], int]:
        rows = self.db.execute("SELECT item_key, pair_order, truncated_chars FROM provider_batch_items "
                               "WHERE local_id = ?", (local_id,))
        return {(item, order): cut for item, order, cut in rows}

    def batches(self, config_hash: str | None = None, include_collected: bool = True) -> list[dict[str, Any]]:
        query = "SELECT * FROM provider_batches WHERE 1=1"
        params: list[Any] = []
        if config_hash is not None:
            query += " AND config_hash = ?"
            params.append(config_hash)
        if not include_collected:
            query += " AND state != ?"
            params.append(COLLECTED)
        cursor = self.db.execute(query + " ORDER BY submitted_at", params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def __enter__(self) -> BatchLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
