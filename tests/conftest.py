"""Shared fixtures: an isolated cache and judge lookup, and the loopback API servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.anthropic_server import AnthropicState, start_anthropic_server
from tests.fakes.claude_judges import KEY_VARIABLE as CLAUDE_KEY
from tests.fakes.claude_judges import SECRET as CLAUDE_SECRET
from tests.fakes.judges import KEY_VARIABLE, SECRET
from tests.fakes.openai_server import ServerState, start_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test reads or writes the user's cache or trusted configs, and judge names resolve from the repo's judges/."""
    monkeypatch.setenv("CALIBRATE_CACHE", str(tmp_path / "cache.sqlite3"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("CALIBRATE_JUDGES_DIR", str(REPO / "judges"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def openai_server(monkeypatch):
    """A loopback OpenAI-compatible server (`state.base_url` ends in /v1), the test judges' key set."""
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    state = ServerState()
    httpd, state.base_url = start_server(state)
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def anthropic_server(monkeypatch):
    """A loopback Messages API server that the anthropic SDK reaches through ANTHROPIC_BASE_URL."""
    state = AnthropicState()
    httpd, base_url = start_anthropic_server(state)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv(CLAUDE_KEY, CLAUDE_SECRET)
    yield state
    httpd.shutdown()
    httpd.server_close()
