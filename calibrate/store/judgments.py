"""The persistent judgment store (SQLite): every judgment is committed the moment it arrives.

Key: (judge config hash, item content hash, order, repeat). A re-run reads what is there and judges only
what is missing, so a crashed or interrupted run loses nothing that finished. WAL mode lets readers
work while a run writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import Judgment, Key
from calibrate.store.sqlite import ResultTables

SCHEMA_VERSION = 2  # 2: judgments are keyed by repeat too (version 1 caches are migrated on open)
# Both tables hold whole judgment records (JSON), with the key and status as columns for queries.
RECORD_COLUMNS = ("config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL, "
                  "repeat INTEGER NOT NULL DEFAULT 0, judge_name TEXT NOT NULL, parse_status TEXT NOT NULL, "
                  "record TEXT NOT NULL, created_at REAL NOT NULL")
COLUMN_NAMES = "config_hash, item_key, pair_order, repeat, judge_name, parse_status, record, created_at"
PRIMARY_KEY = "PRIMARY KEY (config_hash, item_key, pair_order, repeat)"


class JudgmentStore(ResultTables):
    """Judgments by (config_hash, item_key, order, repeat); safe to reopen after any crash."""

    RESULTS, FAILURES, KEY_COLUMN, COLUMN_NAMES = "judgments", "failures", "item_key", COLUMN_NAMES

    def __init__(self, path: Path | str):
        super().__init__(path, "judgment cache")
        self._init_schema()

    def _init_schema(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS judgments ({RECORD_COLUMNS}, {PRIMARY_KEY})")
            # Failed attempts are kept (they were paid for) but never served as results.
            self._db.execute(f"CREATE TABLE IF NOT EXISTS failures ({RECORD_COLUMNS})")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if found == "1":
            self._migrate_from_1()
        elif found != str(SCHEMA_VERSION):
            raise CalibrateError(
                f"judgment cache {self.path}: schema version {found}, this calibrate reads {SCHEMA_VERSION}; "
                "use another cache file or the calibrate version that wrote it"
            )

    def _migrate_from_1(self) -> None:
        """Version 1 had no repeat column: every stored judgment becomes repeat 0, nothing is lost.
        One transaction (DDL included), so a crash mid-way leaves the version 1 cache as it was."""
        self._db.executescript(f"""
            BEGIN IMMEDIATE;
            ALTER TABLE judgments RENAME TO judgments_v1;
            CREATE TABLE judgments ({RECORD_COLUMNS}, {PRIMARY_KEY});
            INSERT INTO judgments ({COLUMN_NAMES}) SELECT config_hash, item_key, pair_order, 0, judge_name,
                parse_status, record, created_at FROM judgments_v1;
            DROP TABLE judgments_v1;
            ALTER TABLE failures ADD COLUMN repeat INTEGER NOT NULL DEFAULT 0;
            UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
            COMMIT;
        """)

    def get_many(self, config_hash: str, keys: Iterable[Key]) -> dict[Key, Judgment]:
        """Stored judgments among (item_key, order, repeat) keys, for one judge config (a 115,000-pair
        run asks chunk by chunk, and each lookup costs what its keys cost, not the cache's size)."""
        wanted = set(keys)
        rows = self._rows_by_key(config_hash, {item_key for item_key, _, _ in wanted},
                                 "item_key, pair_order, repeat, record")
        return {(item_key, order, repeat): Judgment(**orjson.loads(record))
                for item_key, order, repeat, record in rows if (item_key, order, repeat) in wanted}

    def put(self, judgment: Judgment) -> None:
        """Write one judgment and commit at once, so a kill right after keeps it."""
        self.put_many([judgment])

    def put_many(self, judgments: list[Judgment]) -> None:
        """Write judgments in one transaction. A successful judgment becomes the cached result for its
        key; a failed one is appended to the failure log and never served as a result."""
        rows: dict[bool, list[tuple]] = {True: [], False: []}
        for judgment in judgments:
            rows[judgment.parse_status == "ok"].append(
                (judgment.config_hash, judgment.item_key, judgment.order, judgment.repeat, judgment.judge_name,
                 judgment.parse_status, orjson.dumps(judgment).decode(), judgment.created_at))
        self._write(rows[True], rows[False])

    def failures(self, config_hash: str) -> list[Judgment]:
        """Every failed attempt logged for a judge config, oldest first."""
        return [Judgment(**json.loads(record)) for record in self._failure_records(config_hash)]

    # ----------------------------------------------------------------------- inspection (`calibrate cache`)

    def stats(self) -> list[dict]:
        """Per judge config: judgments, failures logged, orders, repeats, and when they were made."""
        rows = self._db.execute(
            "SELECT config_hash, judge_name, COUNT(*), COUNT(DISTINCT pair_order), MAX(repeat) + 1, "
            "MIN(created_at), MAX(created_at) FROM judgments GROUP BY config_hash, judge_name")
        failures = dict(self._db.execute("SELECT config_hash, COUNT(*) FROM failures GROUP BY config_hash"))
        found = [{"config_hash": h, "judge_name": name, "judgments": n, "orders": orders, "repeats": repeats,
                  "failures_logged": failures.pop(h, 0), "first": first, "last": last}
                 for h, name, n, orders, repeats, first, last in rows]
        found += [{"config_hash": h, "judge_name": None, "judgments": 0, "orders": 0, "repeats": 0,
                   "failures_logged": n, "first": None, "last": None} for h, n in failures.items()]
        return found

    def verify(self) -> list[str]:
        """Problems found, as one line each (none: the cache is sound). SQLite's own integrity check,
        then every record: it parses, its key columns agree with its content, and a stored result
        is a successful judgment."""
        problems = [f"sqlite: {line}" for (line,) in self._db.execute("PRAGMA integrity_check") if line != "ok"]
        for table in ("judgments", "failures"):
            rows = self._db.execute(f"SELECT rowid, config_hash, item_key, pair_order, repeat, parse_status, record "
                                    f"FROM {table}")
            for rowid, config_hash, item_key, order, repeat, status, record in rows:
                where = f"{table} row {rowid}"
                try:
                    judgment = Judgment(**orjson.loads(record))
                except (orjson.JSONDecodeError, TypeError) as error:
                    problems.append(f"{where}: the record does not read as a judgment ({error})")
                    continue
                stored = (judgment.config_hash, judgment.item_key, judgment.order, judgment.repeat, judgment.parse_status)
                if stored != (config_hash, item_key, order, repeat, status):
                    problems.append(f"{where}: key columns {(config_hash, item_key, order, repeat, status)} "
                                    f"disagree with the record {stored}")
                if table == "judgments" and status != "ok":
                    problems.append(f"{where}: a failed judgment ({status}) is stored as a result")
        return problems

    def prune(self, config_hash: str | None = None, failures_only: bool = False, dry_run: bool = True) -> dict:
        """Delete one judge config's judgments (and its failure log), or only failure logs. Returns
        what was (or, in a dry run, would be) deleted; nothing is deleted without dry_run=False."""
        where, params = ("WHERE config_hash = ?", (config_hash,)) if config_hash else ("", ())
        counts = {"judgments": 0 if failures_only else
                  self._db.execute(f"SELECT COUNT(*) FROM judgments {where}", params).fetchone()[0],
                  "failures": self._db.execute(f"SELECT COUNT(*) FROM failures {where}", params).fetchone()[0]}
        if not dry_run:
            with self._db:
                if not failures_only:
                    self._db.execute(f"DELETE FROM judgments {where}", params)
                self._db.execute(f"DELETE FROM failures {where}", params)
            self._db.execute("VACUUM")
        return counts
