"""The store layer: the SQLite cache file and every table in it, owned here: judgments (and the
failure log), generated answers, and the provider batch ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from calibrate.lazy import lazy_names

if TYPE_CHECKING:  # at run time `__getattr__` imports these on first use, so importing the package stays light
    from calibrate.store.batches import BatchLedger
    from calibrate.store.judgments import JudgmentStore
    from calibrate.store.responses import ResponseStore
    from calibrate.store.sqlite import cache_path, default_cache_path

_LAZY = {
    "BatchLedger": "calibrate.store.batches",
    "JudgmentStore": "calibrate.store.judgments",
    "ResponseStore": "calibrate.store.responses",
    "cache_path": "calibrate.store.sqlite", "default_cache_path": "calibrate.store.sqlite",
}

__all__ = ["BatchLedger", "JudgmentStore", "ResponseStore", "cache_path", "default_cache_path"]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
