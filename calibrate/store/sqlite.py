"""The cache file: one SQLite database (WAL mode) holding every table calibrate keeps, and where it is."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from calibrate.errors import CalibrateError, is_disk_full

CACHE_ENV = "CALIBRATE_CACHE"


def cache_path(cache: Path | str | None = None) -> Path:
    """The cache file a run uses: `cache` when given, else the default."""
    return Path(cache).expanduser() if cache else default_cache_path()


def default_cache_path() -> Path:
    """$CALIBRATE_CACHE, else $XDG_CACHE_HOME/calibrate/judgments.sqlite3 (~/.cache by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "calibrate" / "judgments.sqlite3"


def connect(path: Path, what: str, read_only: bool = False) -> sqlite3.Connection:
    """Open (or create) the SQLite cache in WAL mode; an unusable file or folder is one error line
    naming `what`. (SQLite reads the file's header at the first statement, the journal pragma.)
    `read_only` opens an existing file without ever writing to it (sqlite3 URI `mode=ro`), so a
    cache the user may not write can still be inspected."""
    try:
        if read_only:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                 check_same_thread=False)
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # reads the header: not a database?
            return db
        path.parent.mkdir(parents=True, exist_ok=True)
        # Judging may run on a worker thread (see runner.run_sync); one thread writes at a time.
        db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as error:
        raise sqlite_error(path, what, error) from None
    except OSError as error:
        raise CalibrateError(f"{what} {path}: cannot open it ({error.strerror})") from None
    return db


def sqlite_error(path: Path, what: str, error: sqlite3.Error) -> CalibrateError:
    """A SQLite failure as one line naming the cache file: read-only, corrupt, or otherwise unusable."""
    text = str(error)
    if is_disk_full(error):  # SQLITE_FULL: the disk, not the file; the transaction was rolled back
        return CalibrateError(f"disk full while writing {what} {path}; nothing lost: everything stored before is "
                              "kept (the write was rolled back); free some space and run again")
    if "readonly" in text or "read-only" in text:
        return CalibrateError(f"cache: {what} {path} is read-only: calibrate cannot store judgments in it; "
                              "pass another path", ("cache",))
    corrupt = isinstance(error, sqlite3.DatabaseError) and "corrupt" in text
    if "malformed" in text or "not a database" in text or corrupt:
        return CalibrateError(f"{what} {path}: not a usable SQLite database, the file is corrupt ({text}); "
                              "move it aside and use another cache path, or restore it from a backup")
    return CalibrateError(f"{what} {path}: not a usable SQLite database ({text})")


class SQLiteFile:
    """An open SQLite file (`_db`), closed on leaving a `with` block."""

    _db: sqlite3.Connection

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultTables(SQLiteFile):
    """A table of results plus a log of failed attempts, in the cache file. A result is written once
    per key (the first stays if two runs race); a failed attempt is kept in the log, since it was paid
    for, and never served as a result. Subclasses name the tables and the key column."""

    RESULTS: str
    FAILURES: str
    KEY_COLUMN: str
    COLUMN_NAMES: str  # the columns every written row fills, in order

    def __init__(self, path: Path | str, what: str, read_only: bool = False):
        self.path = Path(path)
        self.what = what
        self.read_only = read_only
        self._db = connect(self.path, what, read_only)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """SQLite failures inside (a read-only file, corrupt pages) become one line naming the file."""
        try:
            yield
        except sqlite3.Error as error:
            raise sqlite_error(self.path, self.what, error) from None

    def _rows_by_key(self, config_hash: str, keys: Iterable[str], columns: str) -> list[tuple]:
        """`columns` of the stored results among `keys` for one config: one query, the keys passed as one
        JSON array (no limit on bound parameters) and looked up through the primary key, so the cost
        follows the keys asked for, not the cache size."""
        with self._guard():
            return self._db.execute(
                f"SELECT {columns} FROM {self.RESULTS} WHERE config_hash = ? "
                f"AND {self.KEY_COLUMN} IN (SELECT value FROM json_each(?))",
                (config_hash, json.dumps(sorted(set(keys))))).fetchall()

    def _write(self, results: list[tuple], failures: list[tuple], also: Callable[[], None] | None = None) -> int:
        """Write rows of both tables in one transaction (one commit, so one disk sync, for all), with
        what `also` writes (e.g. dropping the leases of what is stored) in the same transaction.
        Returns how many results were stored (fewer than given when another run stored some first)."""
        marks = ", ".join("?" * len(self.COLUMN_NAMES.split(",")))
        with self._guard(), self._db:
            before = self._db.total_changes
            self._db.executemany(f"INSERT OR IGNORE INTO {self.RESULTS} ({self.COLUMN_NAMES}) VALUES ({marks})",
                                 results)
            stored = self._db.total_changes - before
            self._db.executemany(f"INSERT INTO {self.FAILURES} ({self.COLUMN_NAMES}) VALUES ({marks})", failures)
            if also is not None:
                also()
        return stored

    def _failure_records(self, config_hash: str) -> list[str]:
        """Every failed attempt logged for a config, oldest first, as stored records."""
        with self._guard():
            rows = self._db.execute(f"SELECT record FROM {self.FAILURES} WHERE config_hash = ? ORDER BY created_at",
                                    (config_hash,)).fetchall()
        return [record for (record,) in rows]

    def count(self, config_hash: str | None = None) -> int:
        """Stored results, of one config or of all."""
        with self._guard():
            if config_hash is None:
                return self._db.execute(f"SELECT COUNT(*) FROM {self.RESULTS}").fetchone()[0]
            return self._db.execute(f"SELECT COUNT(*) FROM {self.RESULTS} WHERE config_hash = ?",
                                    (config_hash,)).fetchone()[0]
