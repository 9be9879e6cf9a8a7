"""Processes under test: the files a run wrote, and a run SIGKILLed once it has committed enough rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def files_written(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def kill_when_committed(command: list[str], cache: Path, table: str, at_least: int, timeout_s: float = 60) -> int:
    """Start `command`, SIGKILL it once `table` in the SQLite `cache` holds `at_least` rows (or at the
    timeout); returns how many rows it had committed by then."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, committed = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline and committed < at_least:
        time.sleep(0.03)
        try:
            with sqlite3.connect(cache) as db:
                committed = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet, or locked for a moment
            continue
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with sqlite3.connect(cache) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
