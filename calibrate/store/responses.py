"""Generated answers (`calibrate respond`), kept in the cache file in tables of their own.

The tables are created if missing, so caches written before they existed keep working; the judgment
tables and the schema version are untouched. Key: (model config hash, question hash). A usable answer
is committed once and served to every later run; a failed generation is appended to the failure log,
kept (it was paid for) and never served, so the next run asks again. Each failure carries its
`failure_kind`; one logged before kinds were recorded is read with the kind its status implies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import orjson

from calibrate.judging.responder import USABLE_STATUSES, answer_kind
from calibrate.store.sqlite import ResultTables

RESPONSE_TABLE_COLUMNS = ("config_hash TEXT NOT NULL, question_key TEXT NOT NULL, model_name TEXT NOT NULL, "
                          "status TEXT NOT NULL, record TEXT NOT NULL, created_at REAL NOT NULL")
RESPONSE_COLUMN_NAMES = "config_hash, question_key, model_name, status, record, created_at"


class ResponseStore(ResultTables):
    """Generated answers by (config_hash, question_key); records are JSON dicts. Safe after any crash."""

    RESULTS, FAILURES, KEY_COLUMN = "responses", "response_failures", "question_key"
    COLUMN_NAMES = RESPONSE_COLUMN_NAMES

    def __init__(self, path: Path | str):
        super().__init__(path, "cache")
        with self._guard(), self._db:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS responses ({RESPONSE_TABLE_COLUMNS}, "
                             "PRIMARY KEY (config_hash, question_key))")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS response_failures ({RESPONSE_TABLE_COLUMNS})")

    def get_many(self, config_hash: str, keys: Iterable[str]) -> dict[str, dict]:
        """Stored answers among these question keys, for one model config."""
        rows = self._rows_by_key(config_hash, keys, "question_key, record")
        return {key: orjson.loads(record) for key, record in rows}

    def put_many(self, records: list[dict]) -> None:
        """Write records in one transaction. Each needs config_hash, question_key, model_name, status and
        created_at. A usable answer becomes the result for its key; anything else goes to the failure log."""
        rows: dict[bool, list[tuple]] = {True: [], False: []}
        for record in records:
            rows[record["status"] in USABLE_STATUSES].append(
                (record["config_hash"], record["question_key"], record["model_name"], record["status"],
                 orjson.dumps(record).decode(), record["created_at"]))
        self._write(rows[True], rows[False])

    def failures(self, config_hash: str) -> list[dict]:
        """Every failed generation logged for a model config, oldest first, each with its failure kind."""
        records = [json.loads(record) for record in self._failure_records(config_hash)]
        return [{**record, "failure_kind": kind.value if (kind := answer_kind(record)) else None} for record in records]
