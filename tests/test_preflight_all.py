"""All problems at once: every missing key, unreadable config and unreachable endpoint is reported in one
error before anything is judged; `calibrate judges` shows every key a judge or panel needs."""

from __future__ import annotations

import os
import re
import socket

from tests.fakes.judges import write_judge
from tests.inprocess import cli


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def env_without(*variables: str, **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in variables}, **extra}


def test_compare_without_keys_names_every_missing_key_in_one_error(tmp_path):
    result = cli("compare", "--judges", "claude,gpt", cwd=tmp_path,
                 env=env_without("ANTHROPIC_API_KEY", "OPENAI_API_KEY"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("error:") == 1
    assert "ANTHROPIC_API_KEY is not set" in result.stderr and "OPENAI_API_KEY is not set" in result.stderr
    assert "nothing was judged" in result.stderr and not (tmp_path / "reports").exists()


def test_a_bad_config_a_missing_key_and_a_dead_endpoint_are_reported_together(openai_server, tmp_path):
    """Three judges, three different problems, and a fourth judge that is fine: one error names all
    three problems, and the fine judge's server gets no judging request."""
    unreadable = tmp_path / "broken.toml"
    unreadable.write_text('name = "broken"\nbackend = "openai"\nmodel = \n')
    keyless = write_judge(tmp_path, openai_server.base_url, name="keyless", api_key_env="CALIBRATE_TEST_UNSET_KEY")
    dead_url = closed_port_url()
    dead = write_judge(tmp_path, dead_url, name="dead")
    fine = write_judge(tmp_path, openai_server.base_url, name="fine")
    result = cli("compare", "--judges", ",".join(str(p) for p in (unreadable, keyless, dead, fine)), "--no-baselines",
                 cwd=tmp_path, env=env_without("CALIBRATE_TEST_UNSET_KEY"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    problems = result.stderr.splitlines()
    assert problems[0] == "error: 3 problems, nothing was judged:"
    assert len(problems) == 4 and all(line.startswith("  ") for line in problems[1:])
    assert str(unreadable) in problems[1]
    assert "CALIBRATE_TEST_UNSET_KEY is not set" in result.stderr and "'keyless'" in result.stderr
    assert re.search(rf"'dead': cannot reach {re.escape(dead_url)} \(.+\)", result.stderr)
    assert not openai_server.log  # nothing judged, by any judge


def test_fit_of_a_panel_names_each_members_missing_key(tmp_path):
    result = cli("fit", "--judge", "panel-llm", cwd=tmp_path, env=env_without("ANTHROPIC_API_KEY", "OPENAI_API_KEY"))
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY is not set" in result.stderr and "OPENAI_API_KEY is not set" in result.stderr


def test_judges_shows_every_key_a_judge_needs_and_whether_it_is_set(tmp_path):
    result = cli("judges", cwd=tmp_path, env=env_without("ANTHROPIC_API_KEY", OPENAI_API_KEY="sk-x", COLUMNS="240"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "api keys" in line)
    keys_at = lines[start].index("api keys")
    rows: dict[str, str] = {}
    name = ""
    for line in lines[start + 2:]:  # under the header's rule; a judge with two keys runs over two lines
        if not line.strip():
            break
        name = line[:keys_at].split()[0] if line[:keys_at].strip() else name
        rows[name] = rows.get(name, "") + " " + line[keys_at:].strip()
    assert "ANTHROPIC_API_KEY NOT SET" in rows["panel-llm"] and "OPENAI_API_KEY set" in rows["panel-llm"]
    assert "OPENAI_API_KEY set" in rows["gpt"] and "ANTHROPIC" not in rows["gpt"]
    assert "ANTHROPIC_API_KEY NOT SET" in rows["claude"]
    assert rows["heuristic"].strip() == "offline" and rows["gemma-vllm"].strip() == "none needed"


def test_reachability_is_checked_through_the_proxy_all_proxy_names(tmp_path):
    """ALL_PROXY routes the requests (transport.env_proxy), so preflight connects to that proxy: a
    proxy that is down is the problem named, not the endpoint behind it."""
    endpoint, proxy = closed_port_url(), closed_port_url()
    proxy_address = proxy.removeprefix("http://").removesuffix("/v1")
    assert proxy_address not in endpoint
    judge = write_judge(tmp_path, endpoint, name="proxied")
    proxy_variables = [name for name in os.environ if name.lower().endswith("_proxy")]
    result = cli("fit", "--judge", str(judge), cwd=tmp_path,
                 env=env_without(*proxy_variables, ALL_PROXY=proxy.removesuffix("/v1")))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach {endpoint} (connection refused at {proxy_address};" in result.stderr
