"""Shared fixtures: an isolated cache and judge lookup, and the loopback API servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import calibrate
from calibrate.workflows.common import write_json
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


@pytest.fixture(scope="session")
def sample_calibration(tmp_path_factory) -> Path:
    """calibration.json of the heuristic judge fitted on the whole bundled sample (bootstrap 200), made once
    per test process for the tests that only read it (as `score`'s calibration): the file alone, as
    `FitResult.write` writes it, with judgments.parquet beside it (no report: nothing here reads one)."""
    folder = tmp_path_factory.mktemp("sample-calibration")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CALIBRATE_JUDGES_DIR", str(REPO / "judges"))
        patch.chdir(folder)
        fitted = calibrate.fit("heuristic", cache=folder / "cache.sqlite3", n_boot=200)
    write_json(folder / "calibration.json", fitted.calibration.to_dict())
    fitted.judgments.to_parquet(folder / "judgments.parquet", index=False)
    return folder / "calibration.json"


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


# Files whose tests measure or race the clock (timeouts of a fraction of a second, pacing, SIGKILL at a count,
# leases): with pytest-xdist they run one after another on one worker (`--dist loadgroup`), never next to each other.
TIMING_SENSITIVE = {"test_anthropic_judge.py", "test_cost_cap.py", "test_faults.py", "test_openai_judge.py",
                    "test_probe.py", "test_provider_batch.py", "test_rate_limits.py", "test_respond.py",
                    "test_shared_cache.py", "test_transport.py"}


# The longest tests outside those groups, longest first (5 to 40 s each; tests/test_x.py::name, every
# parametrization): with pytest-xdist they are handed out first, so that none starts last and leaves the other
# workers idle. xdist hands out the groups with the most tests first, then single tests in collection order.
LONG_TESTS = ("test_examples.py::test_committed_examples_are_what_the_code_makes_today",
              "test_validated.py::test_human_labels_validate_the_headline_where_the_judge_shifts",
              "test_notebooks.py::test_notebook_executes_and_draws",
              "test_invariance.py::test_a_length_biased_judge_is_flagged_on_padding_and_an_unbiased_one_is_not",
              "test_no_tracebacks.py::test_sigterm_mid_run_stops_like_ctrl_c_and_releases_its_claims",
              "test_failure_kinds.py::test_rewording_every_failure_message_changes_no_retry_no_count_and_no_exit_code",
              "test_injection_refusals.py::test_fit_flags_a_judge_that_notes_push_into_refusals",
              "test_trust.py::test_a_local_config_taking_the_key_sends_nothing_until_trusted",
              "test_validated.py::test_the_same_run_without_labels_is_not_validated",
              "test_slow_progress.py::test_a_slow_judge_shows_seconds_per_judgment_in_flight_and_an_estimate")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """xdist groups: the timing-sensitive files share one group; a file with module-scoped fixtures is its own
    group, so that its fixtures are made once (on one worker) rather than once per worker. On an xdist worker,
    the long tests (LONG_TESTS) are collected first (in one process the order stays the files' own)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: place for place, name in enumerate(LONG_TESTS)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("[")[0].removeprefix("tests/"), len(LONG_TESTS)))
    for item in items:
        module = item.path.name
        if module in TIMING_SENSITIVE:
            item.add_marker(pytest.mark.xdist_group("timing"))
        elif any(definition.scope == "module" for definitions in item._fixtureinfo.name2fixturedefs.values()
                 for definition in definitions):
            item.add_marker(pytest.mark.xdist_group(module))
