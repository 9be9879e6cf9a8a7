"""The label file of `calibrate annotate`: one SQLite database (WAL) per labelling study.

It holds the study's items (the same for every annotator, fixed when the first annotator starts), one
row per item x annotator as the label was given (with the time taken), and where each annotator
stands. Every label is committed when it is given, so a closed browser or a killed server loses
nothing, and several annotators (one server each) can label into the same file at once. One server per
annotator: a server records its process id for its annotator (`serve`), and a second server for the
same annotator is refused while that process lives (two would overwrite each other's labels).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from calibrate.errors import CalibrateError
from calibrate.store.leases import process_alive
from calibrate.store.sqlite import SQLiteFile, connect, sqlite_error

# What a person gives for one pair; the export renames these to the label file's columns.
GIVEN_FLAGS = ("refusal_1", "refusal_2", "no_info_1", "no_info_2")

SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (position INTEGER PRIMARY KEY, item TEXT NOT NULL UNIQUE, content_key TEXT NOT NULL,
    inclusion_probability REAL NOT NULL DEFAULT 1.0);
CREATE TABLE IF NOT EXISTS labels (
    item TEXT NOT NULL, annotator TEXT NOT NULL, score INTEGER NOT NULL,
    refusal_1 INTEGER NOT NULL, refusal_2 INTEGER NOT NULL, no_info_1 INTEGER NOT NULL, no_info_2 INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT '', seconds REAL NOT NULL, labelled_at REAL NOT NULL,
    PRIMARY KEY (item, annotator));
CREATE TABLE IF NOT EXISTS progress (annotator TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS servers (annotator TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    url TEXT NOT NULL, started_at REAL NOT NULL);
"""


class LabelStore(SQLiteFile):
    """Items, labels and positions of one labelling study, in one SQLite file."""

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise CalibrateError(f"labels {self.path}: no such file", ("labels",))
        self._db = connect(self.path, "labels", read_only)
        self._lock = threading.Lock()  # the web server answers on several threads
        if not read_only:
            self._run(lambda: self._db.executescript(SCHEMA))
            self._run(self._add_inclusion_column)

    def _add_inclusion_column(self) -> None:
        """A labels file from before studies recorded each item's chance of being drawn: every item had 1."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(items)")]
        if "inclusion_probability" not in columns:
            self._db.execute("ALTER TABLE items ADD COLUMN inclusion_probability REAL NOT NULL DEFAULT 1.0")

    def _run(self, action):
        """Run one statement group under the lock, in one transaction; SQLite errors name the file."""
        import sqlite3

        with self._lock:
            try:
                with self._db:
                    return action()
            except sqlite3.Error as error:
                raise sqlite_error(self.path, "labels", error) from None

    # ----------------------------------------------------------------- the study's items

    def fix_items(self, items: list[tuple[str, str]], study: dict, probabilities: list[float]) -> None:
        """Record the study's items (item, content key, its chance of being drawn) the first time; later,
        check they are the same, so that every annotator labels the same pairs and human-human agreement
        has shared items."""
        stored = self.items()
        if not stored:
            def write() -> None:
                self._db.executemany(
                    "INSERT INTO items (position, item, content_key, inclusion_probability) VALUES (?, ?, ?, ?)",
                    [(i, item, key, float(p)) for i, ((item, key), p) in enumerate(zip(items, probabilities,
                                                                                         strict=True))])
                self._db.execute("INSERT OR REPLACE INTO study (key, value) VALUES ('definition', ?)",
                                 (json.dumps(study, sort_keys=True),))
            self._run(write)
            return
        if stored != items:
            raise CalibrateError(
                f"labels {self.path} holds a study of {len(stored)} other items ({self.study()}); give the same "
                "data, sets, sample and seed as its first annotator, or another labels file", ("labels",))

    def items(self) -> list[tuple[str, str]]:
        return self._run(lambda: [tuple(row) for row in self._db.execute(
            "SELECT item, content_key FROM items ORDER BY position").fetchall()])

    def study(self) -> dict:
        row = self._run(lambda: self._db.execute("SELECT value FROM study WHERE key = 'definition'").fetchone())
        return json.loads(row[0]) if row else {}

    # ----------------------------------------------------------------- one server per annotator

    @contextmanager
    def serving(self, annotator: str, url: str) -> Iterator[None]:
        """Hold the annotator's server lock while serving at `url`: refused (one line naming the first
        server) while another live process holds it; a lock left by a process that is gone is taken over."""
        pid, host = os.getpid(), socket.gethostname()

        def claim() -> tuple | None:
            held = self._db.execute("SELECT pid, host, url FROM servers WHERE annotator = ?", (annotator,)).fetchone()
            if held is not None and (held[1] != host or process_alive(held[0])):
                return held
            self._db.execute("INSERT OR REPLACE INTO servers (annotator, pid, host, url, started_at) "
                             "VALUES (?, ?, ?, ?, ?)", (annotator, pid, host, url, time.time()))
            return None

        held = self._run(claim)
        if held is not None:
            raise CalibrateError(f"labels {self.path}: annotator {annotator!r} is already being served by process "
                                 f"{held[0]} on {held[1]} at {held[2]}; label there, or stop that server first",
                                 ("annotator",))
        try:
            yield
        finally:
            self._run(lambda: self._db.execute("DELETE FROM servers WHERE annotator = ? AND pid = ? AND host = ?",
                                               (annotator, pid, host)))

    # ----------------------------------------------------------------- labels and positions

    def put(self, item: str, annotator: str, score: int, flags: dict[str, bool], note: str, seconds: float) -> None:
        """Store one label as given (a later change replaces it; the time spent on it adds up)."""
        def write() -> None:
            before = self._db.execute("SELECT seconds FROM labels WHERE item = ? AND annotator = ?",
                                      (item, annotator)).fetchone()
            self._db.execute(
                "INSERT OR REPLACE INTO labels (item, annotator, score, refusal_1, refusal_2, no_info_1, no_info_2, "
                "note, seconds, labelled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item, annotator, int(score), *(int(bool(flags[f])) for f in GIVEN_FLAGS), note,
                 float(seconds) + (before[0] if before else 0.0), time.time()))
        self._run(write)

    def label(self, item: str, annotator: str) -> dict | None:
        """The label an annotator gave an item, as the page's fields, or None."""
        row = self._run(lambda: self._db.execute(
            f"SELECT score, {', '.join(GIVEN_FLAGS)}, note FROM labels WHERE item = ? AND annotator = ?",
            (item, annotator)).fetchone())
        if row is None:
            return None
        return {"score": row[0], **{f: bool(v) for f, v in zip(GIVEN_FLAGS, row[1:5], strict=True)}, "note": row[5]}

    def count(self, annotator: str) -> int:
        return self._run(lambda: self._db.execute("SELECT COUNT(*) FROM labels WHERE annotator = ?",
                                                  (annotator,)).fetchone()[0])

    def position(self, annotator: str) -> int:
        row = self._run(lambda: self._db.execute("SELECT position FROM progress WHERE annotator = ?",
                                                 (annotator,)).fetchone())
        return row[0] if row else 0

    def set_position(self, annotator: str, position: int) -> None:
        self._run(lambda: self._db.execute("INSERT OR REPLACE INTO progress (annotator, position) VALUES (?, ?)",
                                           (annotator, int(position))))

    def table(self) -> pd.DataFrame:
        """Every label with its item's inclusion probability, in the study's item order then by annotator."""
        return self._run(lambda: pd.read_sql_query(
            "SELECT l.item, l.annotator, l.score, l.refusal_1, l.refusal_2, l.no_info_1, l.no_info_2, "
            "COALESCE(i.inclusion_probability, 1.0) AS inclusion_probability, l.note, "
            "l.seconds, l.labelled_at FROM labels l LEFT JOIN items i ON i.item = l.item "
            "ORDER BY i.position, l.annotator", self._db))
