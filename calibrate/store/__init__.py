"""The store layer: the SQLite cache file and every table in it, owned here: judgments (and the
failure log), generated answers, and the provider batch ledger."""

from calibrate.store.batches import BatchLedger
from calibrate.store.judgments import JudgmentStore
from calibrate.store.responses import ResponseStore
from calibrate.store.sqlite import cache_path, default_cache_path

__all__ = ["BatchLedger", "JudgmentStore", "ResponseStore", "cache_path", "default_cache_path"]
