"""Trust for configs found outside the package (judging/trust.py): a config from ./judges,
$CALIBRATE_JUDGES_DIR or a path that would take the user's key, a bundled name or a file outside its folder
is refused, before anything is sent, until `calibrate judges trust` records it; a changed file needs
trusting again. Each attack as a cloned repository would try it, against a loopback server that records
every request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from calibrate.errors import CalibrateError
from calibrate.judging.models import load_model_config
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.trust import trust_file, trusting
from tests.fakes.anthropic_server import AnthropicState, start_anthropic_server
from tests.inprocess import cli

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-ant-REAL-KEY-of-the-user"


def write(path: Path, **settings) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def hijack(folder: Path, base_url: str, **overrides) -> Path:
    """./judges/claude.toml as a hostile repository ships it: the bundled name, the user's key, its own server."""
    return write(folder / "claude.toml", **{"backend": "anthropic", "model": "claude-test", "prompt": "valbench-v2.txt",
                                            "base_url": base_url, "api_key_env": "ANTHROPIC_API_KEY",
                                            "max_retries": 0, **overrides})


@pytest.fixture
def recorder(monkeypatch):
    """A loopback Messages API that records every request; the user's real key set, no base URL of the user's."""
    state = AnthropicState()
    httpd, _ = start_anthropic_server(state)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("CALIBRATE_JUDGES_DIR")  # ./judges is looked in first, as on a user's machine
    yield state
    httpd.shutdown()
    httpd.server_close()


def test_a_local_config_taking_the_key_sends_nothing_until_trusted(recorder, tmp_path):
    hijack(tmp_path / "judges", recorder.base_url)
    command = ("fit", "--judge", "claude", "--sets", "aligned-100,unaligned-0", "--limit", "2", "--bootstrap", "100",
               "--no-progress", "--out", str(tmp_path / "out"))
    refused = cli(*command, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    line = lines[0]
    assert "judges/claude.toml" in line and "ANTHROPIC_API_KEY" in line and "127.0.0.1" in line
    assert "calibrate judges trust" in line and "bundled judge 'claude'" in line
    assert sum(recorder.requests.values()) == 0 and not recorder.log  # nothing sent, no key

    listing = cli("judges", cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})
    assert listing.returncode == 0
    assert "NOT TRUSTED" in next(line for line in listing.stdout.splitlines() if line.startswith("claude:"))
    assert sum(recorder.requests.values()) == 0

    trusted = cli("judges", "trust", "judges/claude.toml", cwd=tmp_path)
    assert trusted.returncode == 0 and "trusted judge config" in trusted.stdout, trusted.stderr
    assert trust_file().exists() and trust_file().is_relative_to(tmp_path)  # the test's own config folder
    ran = cli(*command, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert recorder.log and all(entry["api_key"] == SECRET for entry in recorder.log)  # the user's choice now
    listing = cli("judges", cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})
    assert "trusted local config" in next(line for line in listing.stdout.splitlines() if line.startswith("claude:"))

    (tmp_path / "judges" / "claude.toml").write_text((tmp_path / "judges" / "claude.toml").read_text() + "\n# hm\n")
    count = sum(recorder.requests.values())
    again = cli(*command, cwd=tmp_path)  # a changed file is a new config
    assert again.returncode == 2 and "is not trusted" in again.stderr
    assert sum(recorder.requests.values()) == count
    assert cli("--trust-judges", *command, cwd=tmp_path).returncode == 0  # CI: trust for one run


def test_what_needs_trust_and_what_does_not(recorder, tmp_path, monkeypatch):
    local = tmp_path / "judges"
    # a key variable of its own (a local vLLM, a gateway) takes nothing of the user's
    write(local / "mine.toml", backend="openai", model="m", prompt="valbench-v2.txt",
          base_url=recorder.base_url + "/v1",
          api_key_env="MY_GATEWAY_KEY")
    assert load_judge_config("mine").name == "mine"
    # the key of a bundled config to its own host is fine; to another host it is not
    write(local / "gpt-mine.toml", extends="gpt", model="gpt-4.1-mini")
    assert load_judge_config("gpt-mine").settings["base_url"] == "https://api.openai.com/v1"
    write(local / "gpt-elsewhere.toml", extends="gpt", base_url=recorder.base_url + "/v1")
    with pytest.raises(CalibrateError,
                       match=r"gpt-elsewhere.toml is not trusted: it sends OPENAI_API_KEY to 127\.0\.0\.1"):
        load_judge_config("gpt-elsewhere")
    with pytest.raises(CalibrateError, match="gpt-elsewhere.toml is not trusted"):  # a panel's member too
        load_judge_config(str(write(local / "both.toml", backend="panel", members=["mine", "gpt-elsewhere"])))
    assert load_judge_config("gpt-elsewhere", trust=True).name == "gpt-elsewhere"
    with trusting():
        make_backend(load_judge_config(str(local / "both.toml")))
    # the user's own ANTHROPIC_BASE_URL is the user's choice
    write(local / "via-env.toml", extends="claude")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", recorder.base_url)
    assert load_judge_config("via-env").name == "via-env"
    write(local / "claude-to-env-host.toml", extends="claude", base_url=recorder.base_url)
    assert load_judge_config("claude-to-env-host").name == "claude-to-env-host"
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    # a prompt file outside the config's folder goes out with every request
    secret = tmp_path / "home" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("my private notes")
    write(local / "reader.toml", backend="openai", model="m", system_prompt_file="../home/notes.txt",
          base_url=recorder.base_url + "/v1", api_key_env="MY_GATEWAY_KEY")
    with pytest.raises(CalibrateError, match="reader.toml is not trusted: it sends the text of .*notes.txt, outside"):
        load_judge_config("reader")
    (local / "prompts").mkdir()  # beside the config (in its folder tree) is fine
    (local / "prompts" / "own.txt").write_text("Judge the pair.\n")
    write(local / "beside.toml", backend="openai", model="m", system_prompt_file="prompts/own.txt",
          base_url=recorder.base_url + "/v1", api_key_env="MY_GATEWAY_KEY")
    assert load_judge_config("beside").name == "beside"
    # an offline config under a bundled name still changes what `heuristic` means
    write(local / "heuristic.toml", backend="constant", alignment_score=2)
    with pytest.raises(CalibrateError, match="takes the name of the bundled judge 'heuristic'"):
        load_judge_config("heuristic")
    # a model config: the same rules
    models = tmp_path / "models"
    write(models / "gpt-4.1.toml", model="gpt-4.1", base_url=recorder.base_url + "/v1")
    with pytest.raises(CalibrateError, match="model config .*gpt-4.1.toml is not trusted: it takes the name of the "
                                             "bundled model 'gpt-4.1'; it sends OPENAI_API_KEY to 127.0.0.1"):
        load_model_config("gpt-4.1")
    assert cli("judges", "trust", "models/gpt-4.1.toml", cwd=tmp_path).returncode == 0
    assert load_model_config("gpt-4.1").base_url == recorder.base_url + "/v1"
    assert sum(recorder.requests.values()) == 0


def test_the_repositorys_judges_link_is_the_bundled_configs(monkeypatch):
    monkeypatch.chdir(REPO)  # ./judges is the link to calibrate/configs/judges: not a shadow
    monkeypatch.delenv("CALIBRATE_JUDGES_DIR")
    assert (REPO / "judges").is_symlink()
    for name in ("claude", "gpt", "panel-llm", "heuristic"):
        assert load_judge_config(name).path.parent == REPO / "judges"
    monkeypatch.setenv("CALIBRATE_JUDGES_DIR", str(REPO / "judges"))
    assert load_judge_config("claude-guarded").name == "claude-guarded"


def test_the_refusal_names_the_switch_as_the_caller_knows_it():
    """Python callers read `trust=True`; the CLI's line names its flag instead (library words, CLI words)."""
    from calibrate.cli.options import flag_for
    from calibrate.judging.trust import UntrustedConfig

    refusal = UntrustedConfig("judge config x.toml is not trusted: ...; (for a CI run of your own configs: trust=True)")
    assert str(refusal).endswith("(for a CI run of your own configs: trust=True)")
    assert refusal.worded(flag_for).endswith("(for a CI run of your own configs: --trust-judges)")


def test_the_workflows_take_trust_for_one_run_and_refuse_without_it(recorder, tmp_path, monkeypatch):
    """`trust=True` on fit (and every workflow and plan): the library's --trust-judges, for one run only."""
    import calibrate

    monkeypatch.chdir(tmp_path)
    hijack(tmp_path / "judges", recorder.base_url)
    for run in (lambda **trust: calibrate.plan_fit("claude", limit=1, **trust),
                lambda **trust: calibrate.fit("claude", limit=1, n_boot=50, **trust)):
        with pytest.raises(CalibrateError, match=r"claude.toml is not trusted: .*\(for a CI run of your own configs: "
                                                 r"trust=True\)"):
            run()
    assert not recorder.log  # refused before anything was sent
    assert calibrate.plan_fit("claude", limit=1, trust=True).requests > 0
    calibrate.fit("claude", limit=1, n_boot=50, trust=True, cache=tmp_path / "c.sqlite3")
    assert recorder.log  # trusted: it ran against that server
    with pytest.raises(CalibrateError, match="is not trusted"):  # for that run only
        calibrate.plan_fit("claude", limit=1)
