"""Shared fixtures: an isolated cache and judge lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, and judge names resolve from the repo's judges/."""
    monkeypatch.setenv("CALIBRATE_CACHE", str(tmp_path / "cache.sqlite3"))
    monkeypatch.setenv("CALIBRATE_JUDGES_DIR", str(REPO / "judges"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
