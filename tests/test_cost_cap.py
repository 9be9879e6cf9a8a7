"""`--max-cost`: a run stops sending before its spend would pass the cap, says so (the cap, what was
spent, non-zero exit), keeps what it judged, and a rerun without the cap judges only what is left.
A run without a cap whose estimate is high asks first, on a terminal only."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys

import pytest

from calibrate import fit, respond
from calibrate.data.calibration import FIT_SETS
from calibrate.errors import CalibrateError
from calibrate.judging.estimate import SpendBudget
from calibrate.store.judgments import JudgmentStore
from calibrate.workflows.common import load_sets
from tests.fakes.judges import KEY_VARIABLE, write_judge
from tests.inprocess import cli

# Dear on purpose, so that a few requests reach the cap: about $0.15 per request at the server's usage.
PRICES = {"price_input_per_mtok": 100.0, "price_output_per_mtok": 400.0}
LIMIT = 3


def server_cost(log: list[dict]) -> float:
    """What the loopback server's replies cost: it reports len(prompt) // 4 input and 50 output tokens."""
    return sum(len(r["prompt"]) // 4 * PRICES["price_input_per_mtok"] + 50 * PRICES["price_output_per_mtok"]
               for r in log) / 1e6


def judged(cache) -> int:
    with JudgmentStore(cache) as store:
        return store.count()


def test_max_cost_stops_at_the_cap_and_a_rerun_without_it_completes(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url, **PRICES)
    cache = tmp_path / "c.sqlite3"
    total = sum(len(s.pairs) for s in load_sets("sample", FIT_SETS, LIMIT, 0).values())
    cap = 1.0
    capped = cli("fit", "--judge", str(judge), "--limit", str(LIMIT), "--cache", str(cache), "--max-cost", str(cap),
                 "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert capped.returncode != 0 and "Traceback" not in capped.stderr
    said = re.search(r"--max-cost: stopped before the spend would pass the cap of \$(\S+): \$([\d.]+) spent this run",
                     capped.stderr)
    assert said, capped.stderr
    spent = float(said[2])
    assert float(said[1]) == cap and spent == pytest.approx(server_cost(openai_server.log), abs=1e-4)
    assert 0 < spent <= cap and spent + server_cost(openai_server.log[:1]) > cap * 0.5  # stopped near, not past
    first = len(openai_server.log)
    assert 0 < first < total and judged(cache) == first  # every paid-for judgment kept
    assert "finished judgments are kept in the cache" in capped.stderr
    assert not (tmp_path / "out" / "calibration.json").exists()

    rest = fit(str(judge), limit=LIMIT, cache=cache, n_boot=100)
    assert rest.calibration.run.judged == total - first
    assert len(openai_server.log) == total and judged(cache) == total  # only what was left was sent
    assert {r["prompt"] for r in openai_server.log[:first]}.isdisjoint(r["prompt"] for r in openai_server.log[first:])


def test_a_cap_below_one_request_sends_nothing(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url, **PRICES)
    with pytest.raises(CalibrateError, match=r"cap of \$0.01: \$0.0000 spent this run") as stopped:
        fit(str(judge), limit=1, max_cost=0.01)
    assert stopped.value.params == ("max_cost",) and not openai_server.log


def test_the_budget_waits_for_requests_in_flight_before_it_stops():
    """A request that does not fit while others are in flight waits for their real cost, which may
    leave room; with none in flight it stops, and nothing is admitted after that."""
    async def scenario() -> list:
        budget = SpendBudget(1.0)
        assert await budget.admit(0.6)
        waiting = asyncio.ensure_future(budget.admit(0.6))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # 0.6 held + 0.6 > 1.0: it waits
        budget.settle(0.6, 0.1)  # the reply cost less than expected
        admitted = await waiting
        budget.settle(0.6, 0.5)
        return [admitted, await budget.admit(0.6), budget.stopped, await budget.admit(0.01), budget.spent_usd]

    assert asyncio.run(scenario()) == [True, False, True, False, pytest.approx(0.6)]
    with pytest.raises(CalibrateError, match="max_cost must be a number"):
        SpendBudget(-1)


def run_on_a_terminal(args: list[str], answer: str, cwd) -> tuple[int, str]:
    """The CLI with its stdin a terminal (a pty), answering `answer` to any question."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "calibrate", *args], stdin=terminal, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=cwd, env=os.environ.copy(), text=True)
    os.close(terminal)
    os.write(controller, answer.encode())
    output, _ = process.communicate(timeout=120)
    os.close(controller)
    return process.returncode, output


def test_a_costly_run_asks_on_a_terminal_and_never_otherwise(openai_server, tmp_path):
    model = tmp_path / "dear.toml"
    model.write_text(f'name = "dear"\nmodel = "gen"\nbase_url = "{openai_server.base_url}"\n'
                     f'api_key_env = "{KEY_VARIABLE}"\nprice_input_per_mtok = 0.0\nprice_output_per_mtok = 50000.0\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": 1, "issue_description": "d", "for_question": "Why?", "against_question": "Why not?"}\n')
    args = ["respond", "--model", str(model), "--prompts", str(prompts), "--no-progress"]
    code, output = run_on_a_terminal(args, "n\n", tmp_path)
    assert code == 2 and "Go ahead?" in output and "not confirmed: nothing was sent" in output
    assert not openai_server.log
    code, output = run_on_a_terminal([*args, "--yes"], "", tmp_path)
    assert code == 0 and "Go ahead?" not in output and len(openai_server.log) == 2, output
    piped = cli(*args, "--cache", str(tmp_path / "other.sqlite3"), cwd=tmp_path)
    assert piped.returncode == 0 and "Go ahead?" not in piped.stdout + piped.stderr
    assert len(openai_server.log) == 4  # not a terminal: no question, the run went ahead


def test_respond_keeps_to_the_cap_and_a_rerun_asks_only_the_rest(openai_server, tmp_path):
    model = tmp_path / "m.toml"
    model.write_text(f'name = "m"\nmodel = "gen"\nbase_url = "{openai_server.base_url}"\n'
                     f'api_key_env = "{KEY_VARIABLE}"\nprice_output_per_mtok = 4000.0\nconcurrency = 2\n')
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "issue_description": "d", "for_question": f"Why {i}?",
                                           "against_question": f"Why not {i}?"}) + "\n" for i in range(6)))
    cache = tmp_path / "c.sqlite3"
    with pytest.raises(CalibrateError, match=r"cap of \$2: \$([\d.]+) spent this run; \d+ requests of model 'm'") as e:
        respond(str(model), prompts=str(prompts), cache=cache, max_cost=2.0)
    asked = len(openai_server.log)
    spent = float(re.search(r"\$([\d.]+) spent", str(e.value))[1])
    assert 0 < asked < 12 and spent <= 2.0 and spent == pytest.approx(asked * 50 * 4000 / 1e6)  # 50 tokens a reply
    rest = respond(str(model), prompts=str(prompts), cache=cache)
    assert rest.summary.reused == asked and rest.summary.generated == 12 - asked
    assert len(openai_server.log) == 12
