"""Leases: which run is judging which item right now, so that runs sharing one cache pay for each item once.

Before a run sends an item it claims it: a row in the `leases` table naming the run (process id, host,
a token of the run) with a heartbeat the run renews while it works. Another run on the same cache
skips an item claimed by a live run, waits for its judgment to land in the cache and uses it. A claim
expires when its process is gone (same host, no such process id) or its heartbeat is older than
`LEASE_TTL_S` (a run on another machine that died, or hung); the item is then claimed afresh.
A lease is dropped when its item's judgment is stored (in the same transaction), and all of a run's
leases when it ends.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from calibrate.judging.base import Key

LEASES_TABLE = """CREATE TABLE IF NOT EXISTS leases (
    config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL, repeat INTEGER NOT NULL,
    owner TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, heartbeat REAL NOT NULL,
    PRIMARY KEY (config_hash, item_key, pair_order, repeat))"""
# A live run renews its heartbeat every few seconds (the runner's HEARTBEAT_S); a minute without one
# means the run is gone or stuck, and its items may be judged by another run.
LEASE_TTL_S = 60.0


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: this process, told apart from an earlier process that had the same id."""

    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)

    def lease_expired(self, pid: int, host: str, heartbeat: float, now: float) -> bool:
        """A lease of another run has expired: its heartbeat is stale, or it ran here and is gone."""
        return now - heartbeat > LEASE_TTL_S or (host == self.host and not process_alive(pid))


class Leases:
    """The `leases` table of one open cache, on behalf of this process (`holder`)."""

    def __init__(self, db: sqlite3.Connection, results_table: str):
        self.db = db
        self.results_table = results_table
        self.holder = Holder()

    def create(self) -> None:
        self.db.execute(LEASES_TABLE)

    def claim(self, config_hash: str, keys: Iterable[Key]) -> set[Key]:
        """Claim the keys that no live run holds and that have no stored result; returns those claimed.
        One write transaction, so two runs claiming at once never both get an item."""
        wanted = set(keys)
        if not wanted:
            return set()
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            taken = self._held_or_stored(config_hash, wanted, now)
            free = sorted(wanted - taken)
            holder = self.holder
            self.db.executemany(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(config_hash, item, order, repeat, holder.owner, holder.pid, holder.host, now)
                 for item, order, repeat in free])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return set(free)

    def _held_or_stored(self, config_hash: str, wanted: set[Key], now: float) -> set[Key]:
        """Among `wanted`: the keys a live other run holds, and those whose result is stored already."""
        items = json.dumps(sorted({item for item, _, _ in wanted}))  # one JSON array: one query, any number
        taken: set[Key] = set()
        for item, order, repeat, owner, pid, host, heartbeat in self.db.execute(
                "SELECT item_key, pair_order, repeat, owner, pid, host, heartbeat FROM leases "
                "WHERE config_hash = ? AND item_key IN (SELECT value FROM json_each(?))", (config_hash, items)):
            if owner != self.holder.owner and not self.holder.lease_expired(pid, host, heartbeat, now):
                taken.add((item, order, repeat))
        taken.update(self.db.execute(
            f"SELECT item_key, pair_order, repeat FROM {self.results_table} "
            "WHERE config_hash = ? AND item_key IN (SELECT value FROM json_each(?))", (config_hash, items)).fetchall())
        return taken & wanted

    def drop(self, keys: Iterable[tuple[str, str, str, int]]) -> None:
        """Drop this run's leases on (config hash, item, order, repeat) keys whose judgments are being
        stored; runs inside the caller's transaction."""
        self.db.executemany("DELETE FROM leases WHERE config_hash = ? AND item_key = ? AND pair_order = ? "
                            "AND repeat = ? AND owner = ?", [(*key, self.holder.owner) for key in keys])

    def heartbeat(self) -> None:
        """Tell other runs this one is alive: renew every lease it holds."""
        with self.db:
            self.db.execute("UPDATE leases SET heartbeat = ? WHERE owner = ?", (time.time(), self.holder.owner))

    def release(self) -> None:
        """Drop every lease this run holds (it ends, or stops): other runs may claim those items."""
        with self.db:
            self.db.execute("DELETE FROM leases WHERE owner = ?", (self.holder.owner,))
