"""Generated answers (`calibrate respond`), kept in the cache file in tables of their own.

The tables are created if missing, so caches written before they existed keep working; the judgment
tables and the schema version are untouched. Key: (model config hash, question hash). A usable answer
is committed once and served to every later run; a failed generation is appended to the failure log,
kept (it was paid for) and never served, so the next run asks again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import orjson

from calibrate.judging.responder import USABLE_STATUSES
from calibrate.store.sqlite import connect

RESPONSE_TABLE_COLUMNS = ("config_hash TEXT NOT NULL, question_key TEXT NOT NULL, model_name TEXT NOT NULL, "
                          "status TEXT NOT NULL, record TEXT NOT NULL, created_at REAL NOT NULL")
RESPONSE_COLUMN_NAMES = "config_hash, question_key, model_name, status, record, created_at"


class ResponseStore:
    """Generated answers by (config_hash, question_key); records are JSON dicts. Safe after any crash."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._db = connect(self.path, "cache")
        with self._db:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS responses ({RESPONSE_TABLE_COLUMNS}, "
                             "PRIMARY KEY (config_hash, question_key))")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS response_failures ({RESPONSE_TABLE_COLUMNS})")

    def get_many(self, config_hash: str, keys: Iterable[str]) -> dict[str, dict]:
        """Stored answers among these question keys, for one model config (looked up through the
        primary key, 500 keys per query, so the cost follows the keys asked for, not the cache size)."""
        wanted = sorted(set(keys))
        found: dict[str, dict] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start:start + 500]
            rows = self._db.execute(
                "SELECT question_key, record FROM responses WHERE config_hash = ? "
                f"AND question_key IN ({', '.join('?' * len(batch))})", (config_hash, *batch))
            found.update((key, orjson.loads(record)) for key, record in rows)
        return found

    def put_many(self, records: list[dict]) -> None:
        """Write records in one transaction. Each needs config_hash, question_key, model_name, status and
        created_at. A usable answer becomes the result for its key (the first stays if two runs race);
        anything else goes to the failure log."""
        rows: dict[str, list[tuple]] = {"responses": [], "response_failures": []}
        for record in records:
            table = "responses" if record["status"] in USABLE_STATUSES else "response_failures"
            rows[table].append((record["config_hash"], record["question_key"], record["model_name"],
                                record["status"], orjson.dumps(record).decode(), record["created_at"]))
        with self._db:
            for table, verb in (("responses", "INSERT OR IGNORE"), ("response_failures", "INSERT")):
                self._db.executemany(f"{verb} INTO {table} ({RESPONSE_COLUMN_NAMES}) VALUES (?, ?, ?, ?, ?, ?)",
                                     rows[table])

    def failures(self, config_hash: str) -> list[dict]:
        """Every failed generation logged for a model config, oldest first."""
        rows = self._db.execute(
            "SELECT record FROM response_failures WHERE config_hash = ? ORDER BY created_at", (config_hash,))
        return [json.loads(record) for (record,) in rows]

    def count(self, config_hash: str | None = None) -> int:
        if config_hash is None:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM responses WHERE config_hash = ?", (config_hash,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResponseStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
