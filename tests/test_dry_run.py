"""Cost before spending: `--dry-run` (and the `plan_fit`, `plan_respond`, `plan_batch` functions) says what a
run would send and cost, and sends nothing; a loopback server sees no request at all."""

from __future__ import annotations

import json
import os
import re

import pytest

from calibrate import fit, plan_batch, plan_fit, plan_respond
from calibrate.data.calibration import FIT_SETS
from calibrate.data.pairs import Pair
from calibrate.judging.base import view_of
from calibrate.judging.estimate import CHARS_PER_TOKEN, request_input_tokens
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.workflows.common import load_sets, response_sources
from calibrate.workflows.compare import plan_compare
from calibrate.workflows.plan import RunPlan
from tests.fakes.judges import KEY_VARIABLE, write_judge
from tests.inprocess import cli

ROW = re.compile(r"^\s*(?P<name>\S+)\s+(?P<requests>[\d,]+)\s+(?P<cached>[\d,]+)\s+(?P<input>[\d,]+)\s+"
                 r"(?P<output>[\d,]+)\s+(?P<list>[\d.,]+)\s+(?P<batch>[\d.,]+|-)\s", re.MULTILINE)


def without(*variables: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in variables}


def rows(stdout: str) -> dict[str, dict[str, str]]:
    return {m["name"]: m.groupdict() for m in ROW.finditer(stdout)}


def number(text: str) -> float:
    return float(text.replace(",", ""))


def sample_requests(sets=FIT_SETS) -> int:
    return sum(1 for s in load_sets("sample", sets, None, 0).values() for p in s.pairs if not p.missing_answers)


def test_fit_dry_run_of_claude_needs_no_key_prices_the_run_and_sends_nothing(anthropic_server, tmp_path):
    """The bundled `claude` judge, its endpoint on loopback, no ANTHROPIC_API_KEY: the estimate counts
    every calibration pair, injection pairs included, prices it above zero at the config's prices, and
    the server sees no request (not even the model lookup)."""
    result = cli("fit", "--judge", "claude", "--dry-run", env=without("ANTHROPIC_API_KEY"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claude = rows(result.stdout)["claude"]
    config = load_judge_config("claude")
    assert number(claude["requests"]) == sample_requests() > sample_requests(FIT_SETS[:-1])  # injection-0 included
    expected = config.cost_usd(number(claude["input"]), number(claude["output"]))
    assert number(claude["list"]) == pytest.approx(expected, abs=0.006) and expected > 0
    assert number(claude["batch"]) == pytest.approx(expected * config.settings["batch_price_factor"], abs=0.006)
    assert "nothing was sent" in result.stdout and "ANTHROPIC_API_KEY is not set" in result.stdout
    assert sum(anthropic_server.requests.values()) == 0 and not anthropic_server.log
    assert not (tmp_path / "reports").exists() and not os.path.exists(os.environ["CALIBRATE_CACHE"])


def test_input_tokens_follow_the_prompt_as_rendered_answers_cut_at_the_limit():
    """Longer answers cost more input tokens, at CHARS_PER_TOKEN; past max_answer_chars they are cut,
    so a 60,000-character answer costs what a 10,000-character one does."""
    backend = make_backend(load_judge_config("gpt"))

    def tokens(answer_chars: int) -> int:
        pair = Pair(id=1, set_name="s", issue_description="An issue", for_question="Explain why X.",
                    against_question="Explain why not X.", for_response="a" * answer_chars,
                    against_response="b" * 100)
        body, _ = backend.build_request(view_of(pair, "forward"))
        return request_input_tokens(body)

    assert tokens(3_500) - tokens(0) == pytest.approx(3_500 / CHARS_PER_TOKEN, abs=1)
    assert tokens(60_000) == tokens(10_000) > tokens(9_000)


def test_estimate_leaves_out_cached_judgments_and_learns_from_their_usage(openai_server, tmp_path):
    """After a real run of some pairs, the plan for more leaves the judged ones out, takes the output
    tokens from the cache (the loopback server reports 50 per reply) and corrects the input ratio, so
    it predicts what the rest then really costs."""
    judge = str(write_judge(tmp_path, openai_server.base_url))
    cache = tmp_path / "c.sqlite3"
    fit(judge, limit=2, cache=cache, n_boot=100)
    judged = len(openai_server.log)
    plan = plan_fit(judge, limit=6, cache=cache)
    assert isinstance(plan, RunPlan) and len(openai_server.log) == judged  # the plan sent nothing
    estimate = plan.estimates[0]
    assert 0 < estimate.cached <= judged and estimate.cached + estimate.requests == sample_requests_limited(6)
    assert estimate.output_tokens_per_request == 50 and estimate.output_basis.startswith("mean of")
    fit(judge, limit=6, cache=cache, n_boot=100)
    actual = sum(len(r["prompt"]) // 4 for r in openai_server.log[judged:])  # what the server reports as usage
    assert len(openai_server.log) - judged == estimate.requests
    assert estimate.input_tokens == pytest.approx(actual, rel=0.05)
    assert plan.cost_usd == estimate.cost_usd > 0


def sample_requests_limited(limit: int) -> int:
    return sum(1 for s in load_sets("sample", FIT_SETS, limit, 0).values() for p in s.pairs if not p.missing_answers)


def test_score_dry_run_plans_the_fit_it_would_run_first(openai_server, tmp_path):
    """No calibration yet: the plan holds the fit's requests and every response pair's, and says so."""
    judge = write_judge(tmp_path, openai_server.base_url)
    result = cli("score", "--judge", str(judge), "--responses", "sample", "--dry-run", "--limit", "5",
                 env=without(KEY_VARIABLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    responses = 5 * len(response_sources(["sample"]))
    assert number(rows(result.stdout)["loopback"]["requests"]) == sample_requests() + responses
    assert "`fit` runs first" in " ".join(result.stdout.split())
    assert not openai_server.log and not openai_server.models_log


def test_compare_dry_run_counts_a_panel_member_once_and_baselines_as_offline(openai_server, tmp_path):
    a = write_judge(tmp_path, openai_server.base_url, name="a")
    b = write_judge(tmp_path, openai_server.base_url, name="b", model="other")
    panel = tmp_path / "both.toml"
    panel.write_text(f'name = "both"\nbackend = "panel"\nmembers = ["{a}", "{b}"]\n')
    plan = plan_compare([str(a), str(panel)], limit=3)
    assert isinstance(plan, RunPlan) and plan.command == "compare"
    assert [e.name for e in plan.estimates] == ["a", "b", "always-0", "always-aligned", "heuristic"]
    assert plan.requests == 2 * sample_requests_limited(3)  # a once (alone and in the panel), b once
    assert all(e.offline and e.cost_usd == 0 for e in plan.estimates[2:])
    assert not openai_server.log and not openai_server.models_log


def test_batch_submit_dry_run_prices_at_batch_rate_and_calls_no_batch_api(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url)
    plan = plan_batch(str(judge), limit=2)
    assert isinstance(plan, RunPlan) and plan.command == "batch submit"
    estimate = plan.estimates[0]
    assert estimate.requests == sample_requests_limited(2)
    assert plan.batch_cost_usd == pytest.approx(plan.cost_usd * 0.5) and plan.batch_cost_usd > 0
    assert not openai_server.batch_log and not openai_server.log


def test_respond_dry_run_counts_distinct_questions_and_sends_nothing(openai_server, tmp_path, monkeypatch):
    model = tmp_path / "m.toml"
    model.write_text(f'name = "m"\nmodel = "gen"\nbase_url = "{openai_server.base_url}"\n'
                     f'api_key_env = "{KEY_VARIABLE}"\nprice_input_per_mtok = 2.0\nprice_output_per_mtok = 8.0\n')
    prompts = tmp_path / "prompts.jsonl"
    rows_ = [{"id": i, "issue_description": "d", "for_question": f"Why {i % 3}?", "against_question": f"Why not {i}?",
              "category": "Politics", "issue_scale": 3} for i in range(6)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    monkeypatch.delenv(KEY_VARIABLE)
    plan = plan_respond(str(model), prompts=str(prompts))
    assert isinstance(plan, RunPlan) and plan.command == "respond"
    assert plan.requests == 3 + 6 and plan.cost_usd > 0 and plan.missing_keys == [KEY_VARIABLE]
    assert not openai_server.log
