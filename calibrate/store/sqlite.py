"""The cache file: one SQLite database (WAL mode) holding every table calibrate keeps, and where it is."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from calibrate.errors import CalibrateError

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


def connect(path: Path, what: str) -> sqlite3.Connection:
    """Open (or create) the SQLite cache in WAL mode; an unusable file or folder is one error line
    naming `what`. (SQLite reads the file's header at the first statement, the journal pragma.)"""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Judging may run on a worker thread (see runner.run_sync); one thread writes at a time.
        db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as error:
        raise CalibrateError(f"{what} {path}: not a usable SQLite database ({error})") from None
    except OSError as error:
        raise CalibrateError(f"{what} {path}: cannot open it ({error.strerror})") from None
    return db
