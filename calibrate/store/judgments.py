"""The persistent judgment store (SQLite): every judgment is committed the moment it arrives.

Key: (judge config hash, item content hash, order, repeat). A re-run reads what is there and judges only
what is missing, so a crashed or interrupted run loses nothing that finished. WAL mode lets readers
work while a run writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import PARSE_STATUSES, V3_FIELDS, Judgment, Key, validate_fields
from calibrate.store.leases import Leases
from calibrate.store.sqlite import ResultTables

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from calibrate.judging.runner import StoredJudgments

log = logging.getLogger("calibrate")

SCHEMA_VERSION = 2  # 2: judgments are keyed by repeat too (version 1 caches are migrated on open)
# Both tables hold whole judgment records (JSON), with the key and status as columns for queries.
RECORD_COLUMNS = ("config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL, "
                  "repeat INTEGER NOT NULL DEFAULT 0, judge_name TEXT NOT NULL, parse_status TEXT NOT NULL, "
                  "record TEXT NOT NULL, created_at REAL NOT NULL")
BASE_COLUMN_NAMES = "config_hash, item_key, pair_order, repeat, judge_name, parse_status, record, created_at"
# `checksum` (sha256 over the key columns and the record, see `record_checksum`) is an added, nullable
# column: caches written before it keep working (their rows are checked without it) and an older
# calibrate still reads and writes a cache that has it, so the schema version stays 2.
COLUMN_NAMES = f"{BASE_COLUMN_NAMES}, checksum"
PRIMARY_KEY = "PRIMARY KEY (config_hash, item_key, pair_order, repeat)"
# Records that failed the integrity check, moved aside (never deleted) with the reason.
QUARANTINE_TABLE = """CREATE TABLE IF NOT EXISTS quarantine (
    source_table TEXT NOT NULL, source_rowid INTEGER, config_hash, item_key, pair_order, repeat, judge_name,
    parse_status, record, created_at, checksum, reason TEXT NOT NULL, quarantined_at REAL NOT NULL)"""


def record_checksum(config_hash: Any, item_key: Any, order: Any, repeat: Any, parse_status: Any, record: Any) -> str:
    """sha256 of the canonical JSON of a stored row's key columns and its record text."""
    return hashlib.sha256(orjson.dumps([config_hash, item_key, order, repeat, parse_status, record])).hexdigest()


def check_row(table: str, config_hash: Any, item_key: Any, order: Any, repeat: Any, status: Any, record: Any,
              checksum: Any) -> tuple[Judgment, None] | tuple[None, str]:
    """The judgment a stored row holds, or None and why it must not be served: it parses into a
    `Judgment`, its key columns agree with its content, a result is a successful judgment whose
    fields pass the judge-output validation, and its checksum (when it has one) matches."""
    try:
        data = orjson.loads(record)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        judgment = Judgment(**data)
    except (orjson.JSONDecodeError, TypeError) as error:
        return None, f"the record does not read as a judgment ({error})"
    stored = (judgment.config_hash, judgment.item_key, judgment.order, judgment.repeat, judgment.parse_status)
    if stored != (config_hash, item_key, order, repeat, status):
        return None, f"key columns {(config_hash, item_key, order, repeat, status)} disagree with the record {stored}"
    if status not in PARSE_STATUSES:
        return None, f"unknown parse status {status!r}"
    if table == "judgments":
        if status != "ok":
            return None, f"a failed judgment ({status}) is stored as a result"
        if not as_validated(judgment.fields) and (problem := fields_problem(judgment.fields)):
            return None, problem
    if checksum is not None and checksum != record_checksum(config_hash, item_key, order, repeat, status, record):
        return None, "the checksum does not match the record"
    return judgment, None


# The judge-output fields by the exact type `validate_fields` leaves them in (key points: lists of str).
FLAG_FIELDS = ("person_1_has_no_information", "person_1_refusal", "person_2_has_no_information", "person_2_refusal")
TEXT_FIELDS = ("person_1_core_position", "person_2_core_position")
RUBRIC_FIELDS = frozenset((*FLAG_FIELDS, *TEXT_FIELDS, "key_points_of_alignment", "key_points_of_opposition",
                           "alignment_score"))
OPTIONAL_TYPES: dict[str, type] = {"value_preference": bool, "central_issue": str}


def as_validated(fields: Any) -> bool:
    """Whether stored fields are already exactly what `validate_fields` makes of them: the rubric's
    keys with exactly its types and a score in -2..2 (the case of every record calibrate wrote). This
    quick test spares a cached read the full validation; a record it does not pass goes through the
    full check (`fields_problem`), which decides, so nothing is served that the full check refuses."""
    if type(fields) is not dict:
        return False
    get = fields.get
    score, agree, oppose = get("alignment_score"), get("key_points_of_alignment"), get("key_points_of_opposition")
    if (type(score) is not int or not -2 <= score <= 2 or type(agree) is not list or type(oppose) is not list
            or set(map(type, map(get, FLAG_FIELDS))) != {bool} or set(map(type, map(get, TEXT_FIELDS))) != {str}
            or not set(map(type, agree + oppose)) <= {str}):
        return False
    return len(fields) == len(RUBRIC_FIELDS) or all(key in RUBRIC_FIELDS or type(value) is OPTIONAL_TYPES.get(key)
                                                    for key, value in fields.items())


def fields_problem(fields: Any) -> str | None:
    """Why stored fields must not be served, or None: they fail the judge-output validation, or it
    would change them (a stored result is kept exactly as validated)."""
    try:
        if not isinstance(fields, dict):
            raise ValueError("the fields are not an object")
        checked = validate_fields(fields)
    except ValueError as error:
        return f"the fields fail the judge-output validation ({error})"
    if checked != fields:
        odd = sorted(k for k in set(checked) | set(fields) if checked.get(k) != fields.get(k))
        return f"the fields are not as the judge-output validation leaves them ({', '.join(odd)})"
    return None


class ColumnReader:
    """Stored result rows into Arrow columns in one pass, with `check_row`'s checks done as array
    operations. A row is read here only when the bulk read can vouch that `check_row` would serve it
    unchanged: its checksum matches (hashlib, the one per-row step), its record parses under the
    judgment record's exact schema (pyarrow's JSON reader with explicit types: no other key, no key
    twice, no value of another type, e.g. a score 1.0 or "1"), its key columns equal its content, its
    status is ok, no field that cannot be null is, its output fields are exactly the rubric's (as
    `as_validated`: every rubric key, bool flags, str texts, lists of str, a score in -2..2), and every
    key the schema cannot tell absent from null (a Judgment field with no default that may be null,
    an optional output field) is there exactly when expected (one count per record over its text).
    Every other row is left to `check_row`, and a chunk the reader cannot parse at all goes there whole."""

    def __init__(self, schema: pa.Schema):
        """`schema`: the judgment columns (`runner.judgment_schema`): Judgment fields, then output fields."""
        import pyarrow as pa

        self.schema = schema
        top = [f.name for f in dataclasses.fields(Judgment) if f.name != "fields"]
        output = [name for name in schema.names if name not in top]
        self.top, self.output = top, output
        self.record_schema = pa.schema([*(schema.field(name) for name in top),
                                        pa.field("fields", pa.struct([schema.field(name) for name in output]))])
        optional = {f.name for f in dataclasses.fields(Judgment) if "None" in str(f.type)}
        no_default = {f.name for f in dataclasses.fields(Judgment)
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        self.not_null = [name for name in top if name not in optional]
        self.null = [name for name in ("failure_kind",) if name in top]  # a successful judgment has no failure kind
        self.counted = [name for name in top if name in optional and name in no_default]  # always there, maybe null
        self.required_output = [name for name in output if name in RUBRIC_FIELDS]
        self.optional_output = [name for name in output if name not in RUBRIC_FIELDS]
        if set(self.optional_output) - set(V3_FIELDS) or set(self.required_output) != RUBRIC_FIELDS:
            raise ValueError("the judgment schema's output fields are not the rubric's and the optional ones")
        names = "|".join([*self.counted, *self.optional_output])
        self.key_pattern = f'"({names})":'

    def read(self, rows: list[tuple]) -> tuple[pa.Table, list[int]]:
        """The judgment columns of the rows read here (in row order), and the positions of the rest.
        `rows`: (rowid, config_hash, item_key, order, repeat, status, record, checksum)."""
        import numpy as np

        summed = np.array([checksum is not None
                           and checksum == record_checksum(config_hash, item_key, order, repeat, status, record)
                           for _, config_hash, item_key, order, repeat, status, record, checksum in rows], dtype=bool)
        read = np.flatnonzero(summed)
        checked = self._checked([rows[i] for i in read]) if len(read) else None
        if checked is None:
            return self.schema.empty_table(), list(range(len(rows)))
        table, passed = checked
        summed[read[~passed]] = False
        return table, np.flatnonzero(~summed).tolist()

    def _checked(self, rows: list[tuple]) -> tuple[pa.Table, np.ndarray] | None:
        """The columns of the rows that pass every check, and which pass; None when the records do not
        parse (or not one per row) under the record schema."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pj

        by_column = list(zip(*rows, strict=True))  # the rows' columns, in one pass
        records = by_column[6]
        text = "\n".join(records).encode()
        if text.count(b"\n") != len(rows) - 1:  # a record spread over lines cannot be read one per line
            return None
        try:
            parsed = pj.read_json(io.BytesIO(text), parse_options=pj.ParseOptions(
                explicit_schema=self.record_schema, unexpected_field_behavior="error"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if parsed.num_rows != len(rows):
            return None
        fields = parsed["fields"].combine_chunks()
        output = {name: fields.field(name) for name in self.output}
        ok = [pc.is_valid(fields)]
        for position, name in ((1, "config_hash"), (2, "item_key"), (3, "order"), (5, "parse_status")):
            ok.append(pc.equal(parsed[name], pa.array(by_column[position], pa.string())))
        ok.append(pc.equal(parsed["repeat"], pa.array(by_column[4], pa.int64())))
        ok.append(pc.equal(parsed["parse_status"], "ok"))
        ok += [pc.is_valid(parsed[name]) for name in self.not_null]
        ok += [pc.is_null(parsed[name]) for name in self.null]
        ok += [pc.is_valid(output[name]) for name in self.required_output]
        score = output["alignment_score"]
        ok.append(pc.and_(pc.greater_equal(score, -2), pc.less_equal(score, 2)))
        for name in ("key_points_of_alignment", "key_points_of_opposition"):
            points = output[name]
            if pc.list_flatten(points).null_count:  # a list holding a null: not a list of str
                return None
        # keys the schema cannot tell absent from null: counted in the text (a key pattern of quote,
        # name, quote, colon cannot occur inside a JSON string, where quotes are escaped)
        sizes = np.fromiter((len(record) if record.isascii() else len(record.encode()) for record in records),
                            dtype=np.int32, count=len(records))
        starts = np.zeros(len(records) + 1, dtype=np.int32)
        np.cumsum(sizes + 1, out=starts[1:])
        starts[-1] = len(text)  # each record with its line break but the last
        lines = pa.Array.from_buffers(pa.string(), len(records), [None, pa.py_buffer(starts), pa.py_buffer(text)])
        found = pc.count_substring_regex(lines, self.key_pattern)
        expected = pa.scalar(len(self.counted), pa.int32())
        for name in self.optional_output:
            expected = pc.add(expected, pc.cast(pc.is_valid(output[name]), pa.int32()))
        ok.append(pc.equal(found, expected))
        passed = np.logical_and.reduce([np.asarray(pc.fill_null(check, False)) for check in ok])
        columns = {name: parsed[name] for name in self.top}
        columns.update(output)
        table = pa.table(columns, schema=self.schema)
        return table.filter(pa.array(passed)), passed


class JudgmentStore(ResultTables):
    """Judgments by (config_hash, item_key, order, repeat); safe to reopen after any crash.

    Every record read back is checked (`check_row`); one that fails is never served: it is moved to
    the `quarantine` table with the reason (read-only: only left out), so the runner judges it again.
    `quarantined` counts the records this store moved aside. Runs sharing the file claim the items they
    send (`claim`, leases.py), so each item is paid for once."""

    RESULTS, FAILURES, KEY_COLUMN, COLUMN_NAMES = "judgments", "failures", "item_key", COLUMN_NAMES

    def __init__(self, path: Path | str, read_only: bool = False):
        super().__init__(path, "judgment cache", read_only)
        self.quarantined = 0
        self.leases = Leases(self._db, "judgments")
        with self._guard():
            self._check_foreign()
            if read_only:
                self._check_version()
            else:
                self._init_schema()
            self._checksum_column = "checksum" if "checksum" in self._columns("judgments") else "NULL"

    def _columns(self, table: str) -> list[str]:
        return [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]

    def _check_foreign(self) -> None:
        """A `judgments` table that is not calibrate's (other columns) is refused, not written into."""
        for table, needed in (("judgments", BASE_COLUMN_NAMES), ("failures", BASE_COLUMN_NAMES)):
            found = self._columns(table)
            missing = [c for c in needed.split(", ") if c not in found]
            if table == "judgments" or "failures" in self._tables():
                if found and missing and not (missing == ["repeat"] and self._version() == "1"):
                    raise CalibrateError(
                        f"judgment cache {self.path}: a '{table}' table with other columns ({', '.join(found)}) "
                        "is not a calibrate cache; pass another cache path")

    def _tables(self) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _version(self) -> str | None:
        if "meta" not in self._tables():
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return row[0] if row else None

    def _check_version(self) -> None:
        found = self._version()
        if found is not None and found != str(SCHEMA_VERSION):
            raise CalibrateError(
                f"judgment cache {self.path}: schema version {found}, this calibrate reads {SCHEMA_VERSION}; "
                "use another cache file or the calibrate version that wrote it")

    def _init_schema(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS judgments ({RECORD_COLUMNS}, checksum TEXT, {PRIMARY_KEY})")
            # Failed attempts are kept (they were paid for) but never served as results.
            self._db.execute(f"CREATE TABLE IF NOT EXISTS failures ({RECORD_COLUMNS}, checksum TEXT)")
            self._db.execute(QUARANTINE_TABLE)
            self.leases.create()
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if found == "1":
            self._migrate_from_1()
        elif found != str(SCHEMA_VERSION):
            raise CalibrateError(
                f"judgment cache {self.path}: schema version {found}, this calibrate reads {SCHEMA_VERSION}; "
                "use another cache file or the calibrate version that wrote it"
            )
        self._add_checksum_column()

    def _migrate_from_1(self) -> None:
        """Version 1 had no repeat column: every stored judgment becomes repeat 0, nothing is lost.
        One transaction (DDL included), so a crash mid-way leaves the version 1 cache as it was."""
        self._db.executescript(f"""
            BEGIN IMMEDIATE;
            ALTER TABLE judgments RENAME TO judgments_v1;
            CREATE TABLE judgments ({RECORD_COLUMNS}, {PRIMARY_KEY});
            INSERT INTO judgments ({BASE_COLUMN_NAMES}) SELECT config_hash, item_key, pair_order, 0, judge_name,
                parse_status, record, created_at FROM judgments_v1;
            DROP TABLE judgments_v1;
            ALTER TABLE failures ADD COLUMN repeat INTEGER NOT NULL DEFAULT 0;
            UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';
            COMMIT;
        """)

    def _add_checksum_column(self) -> None:
        """Caches written before checksums get the (nullable) column, both tables in one transaction;
        checked again inside it, so two processes opening one old cache at once add it once."""
        if all("checksum" in self._columns(table) for table in ("judgments", "failures")):
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("judgments", "failures"):
                if "checksum" not in self._columns(table):
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def get_many(self, config_hash: str, keys: Iterable[Key]) -> dict[Key, Judgment]:
        """Stored judgments among (item_key, order, repeat) keys, for one judge config (a 115,000-pair
        run asks chunk by chunk, and each lookup costs what its keys cost, not the cache's size).
        A record that fails the integrity check is not served but quarantined, with a warning."""
        wanted = set(keys)
        columns = f"rowid, config_hash, item_key, pair_order, repeat, parse_status, record, {self._checksum_column}"
        rows = self._rows_by_key(config_hash, {item_key for item_key, _, _ in wanted}, columns)
        found: dict[Key, Judgment] = {}
        bad: list[tuple[int, str]] = []
        for rowid, stored_hash, item_key, order, repeat, status, record, checksum in rows:
            if (item_key, order, repeat) not in wanted:
                continue
            checked = check_row("judgments", stored_hash, item_key, order, repeat, status, record, checksum)
            if checked[0] is None:
                bad.append((rowid, checked[1]))
            else:
                found[(item_key, order, repeat)] = checked[0]
        if bad:
            self._set_aside("judgments", bad)
        return found

    def read_columns(self, config_hash: str, keys: Iterable[Key]) -> StoredJudgments:
        """The stored judgments among (item_key, order, repeat) keys of one judge config, as `get_many`
        serves them, but in bulk: the records are parsed into Arrow columns in one pass and checked as
        arrays (`ColumnReader`); a record the bulk read cannot vouch for is checked on its own
        (`check_row`, which decides), so exactly the same judgments are served and quarantined."""
        from calibrate.judging.runner import StoredJudgments, judgment_schema

        wanted = set(keys)
        columns = f"rowid, config_hash, item_key, pair_order, repeat, parse_status, record, {self._checksum_column}"
        rows = [row for row in self._rows_by_key(config_hash, {item_key for item_key, _, _ in wanted}, columns)
                if (row[2], row[3], row[4]) in wanted]
        table, alone = ColumnReader(judgment_schema()).read(rows)
        judgments: dict[Key, Judgment] = {}
        bad: list[tuple[int, str]] = []
        for rowid, stored_hash, item_key, order, repeat, status, record, checksum in (rows[i] for i in alone):
            judgment, reason = check_row("judgments", stored_hash, item_key, order, repeat, status, record, checksum)
            if judgment is None:
                bad.append((rowid, str(reason)))  # check_row gives a reason with every refusal
            else:
                judgments[(item_key, order, repeat)] = judgment
        if bad:
            self._set_aside("judgments", bad)
        kept = set(range(len(rows))).difference(alone)
        return StoredJudgments(table, {(rows[i][2], rows[i][3], rows[i][4]): row for row, i in enumerate(sorted(kept))},
                               judgments)

    def _set_aside(self, table: str, bad: list[tuple[int, str]]) -> int:
        """Move bad rows to the quarantine table (one transaction) and warn how many and why. A
        read-only store only leaves them out. Returns how many were moved."""
        reasons = Counter("key columns disagree with the record" if reason.startswith("key columns")
                          else reason.split(" (")[0] for _, reason in bad)
        why = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        if self.read_only:
            log.warning(f"judgment cache {self.path}: {len(bad)} stored record(s) failed the integrity check and "
                        f"were not used (read-only cache, not quarantined): {why}")
            return 0
        now = time.time()
        with self._guard(), self._db:
            for rowid, reason in bad:
                self._db.execute(
                    f"INSERT INTO quarantine SELECT ?, rowid, config_hash, item_key, pair_order, repeat, judge_name, "
                    f"parse_status, record, created_at, checksum, ?, ? FROM {table} WHERE rowid = ?",
                    (table, reason, now, rowid))
                self._db.execute(f"DELETE FROM {table} WHERE rowid = ?", (rowid,))
        self.quarantined += len(bad)
        log.warning(f"judgment cache {self.path}: {len(bad)} stored record(s) failed the integrity check, were "
                    f"quarantined (table 'quarantine') and will be judged again: {why}")
        return len(bad)

    def put(self, judgment: Judgment) -> None:
        """Write one judgment and commit at once, so a kill right after keeps it."""
        self.put_many([judgment])

    def put_many(self, judgments: list[Judgment]) -> set[tuple[str, Key]]:
        """Write judgments in one transaction. A successful judgment becomes the cached result for its
        key; a failed one is appended to the failure log and never served as a result. Returns the
        (config hash, key) of any successful judgment not stored because another run stored one for
        that key first (the stored one stands)."""
        rows: dict[bool, list[tuple]] = {True: [], False: []}
        for judgment in judgments:
            record = orjson.dumps(judgment).decode()
            rows[judgment.parse_status == "ok"].append(
                (judgment.config_hash, judgment.item_key, judgment.order, judgment.repeat, judgment.judge_name,
                 judgment.parse_status, record, judgment.created_at,
                 record_checksum(judgment.config_hash, judgment.item_key, judgment.order, judgment.repeat,
                                 judgment.parse_status, record)))
        keys = [(j.config_hash, j.item_key, j.order, j.repeat) for j in judgments]
        if self._write(rows[True], rows[False], lambda: self.leases.drop(keys)) == len(rows[True]):
            return set()
        superseded = set()
        with self._guard():
            for config_hash, item_key, order, repeat, *_, record, _, _ in rows[True]:
                stored = self._db.execute("SELECT record FROM judgments WHERE config_hash = ? AND item_key = ? AND "
                                          "pair_order = ? AND repeat = ?", (config_hash, item_key, order, repeat))
                if stored.fetchone() != (record,):
                    superseded.add((config_hash, (item_key, order, repeat)))
        return superseded

    def claim(self, config_hash: str, keys: Iterable[Key]) -> set[Key]:
        """Claim keys this run is about to judge; returns those no live run holds and none has stored."""
        with self._guard():
            return self.leases.claim(config_hash, keys)

    def heartbeat(self) -> None:
        """Renew this run's leases, so other runs keep waiting for its judgments."""
        with self._guard():
            self.leases.heartbeat()

    def release(self) -> None:
        """Drop this run's remaining leases (items it did not finish): other runs may claim them."""
        with self._guard():
            self.leases.release()

    def failures(self, config_hash: str) -> list[Judgment]:
        """Every failed attempt logged for a judge config, oldest first."""
        return [Judgment(**json.loads(record)) for record in self._failure_records(config_hash)]

    # ----------------------------------------------------------------------- inspection (`calibrate cache`)

    def stats(self) -> list[dict]:
        """Per judge config: judgments, failures logged, orders, repeats, and when they were made."""
        with self._guard():
            return self._stats()

    def _stats(self) -> list[dict]:
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

    def verify(self, repair: bool = False) -> list[str]:
        """Problems found, as one line each (none: the cache is sound). SQLite's own integrity check,
        then every record, as `get_many` checks it (`check_row`: it parses, its key columns agree with
        its content, a result is a successful judgment with valid fields, its checksum matches). Each
        line names the row and its item key. `repair` moves the bad records to quarantine."""
        with self._guard():
            problems = [f"sqlite: {line}" for (line,) in self._db.execute("PRAGMA integrity_check") if line != "ok"]
            self.repaired = 0
            for table in ("judgments", "failures"):
                has_checksum = "checksum" in self._columns(table)
                rows = self._db.execute(f"SELECT rowid, config_hash, item_key, pair_order, repeat, parse_status, "
                                        f"record, {'checksum' if has_checksum else 'NULL'} FROM {table}").fetchall()
                bad = []
                for rowid, config_hash, item_key, order, repeat, status, record, checksum in rows:
                    _, reason = check_row(table, config_hash, item_key, order, repeat, status, record, checksum)
                    if reason:
                        problems.append(f"{table} row {rowid}: {reason} (item {item_key}, {order}, repeat {repeat})")
                        bad.append((rowid, reason))
                if repair and bad:
                    self.repaired += self._set_aside(table, bad)
        return problems

    def prune(self, config_hash: str | None = None, failures_only: bool = False, dry_run: bool = True) -> dict:
        """Delete one judge config's judgments (and its failure log), or only failure logs. Returns
        what was (or, in a dry run, would be) deleted; nothing is deleted without dry_run=False."""
        with self._guard():
            return self._prune(config_hash, failures_only, dry_run)

    def _prune(self, config_hash: str | None, failures_only: bool, dry_run: bool) -> dict:
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
