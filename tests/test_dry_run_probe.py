"""A measured dry run (`--dry-run --probe N`, `plan_fit(..., probe=N)`): N of the run's own requests are sent
to a loopback judge (counted on the server), priced before they are sent and held to `max_cost`; their
judgments land in the cache and the real run sends N fewer; the plan's time, tokens and cost come from
what they measured (a server with a known delay), with the parse-success rate. Without a probe, the plan
says where its latency comes from."""

from __future__ import annotations

import re

import pytest

from calibrate import fit, plan_fit
from calibrate.data.calibration import FIT_SETS
from calibrate.errors import CalibrateError
from calibrate.judging.estimate import ASSUMED_LATENCY_S, SpendBudget
from calibrate.workflows.common import load_sets
from calibrate.workflows.compare import plan_compare
from calibrate.workflows.plan import Probe, ProbeQuote
from tests.fakes.judges import write_judge
from tests.inprocess import cli

LATENCY_S = 0.3  # the server's delay before every reply


def run_requests(limit: int) -> int:
    """The requests a fit of the bundled sample with `limit` sends with nothing cached (one order)."""
    return sum(1 for s in load_sets("sample", FIT_SETS, limit, 0).values() for p in s.pairs if not p.missing_answers)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_probe_sends_n_requests_caches_them_and_the_run_sends_n_fewer(openai_server, tmp_path):
    judge = str(write_judge(tmp_path, openai_server.base_url))
    cache = tmp_path / "c.sqlite3"
    plan = plan_fit(judge, limit=3, cache=cache, probe=4)
    assert len(openai_server.log) == 4  # exactly N requests, counted by the server
    (probe,) = plan.probes
    assert isinstance(probe, Probe)
    assert (probe.judge, probe.n_sent, probe.n_parsed, probe.requests) == ("loopback", 4, 4, 4)
    assert probe.parse_rate == 1.0 and probe.failures_by_kind == {} and probe.cost_usd > 0
    estimate = plan.estimates[0]
    assert estimate.cached == 4 and estimate.requests == run_requests(3) - 4  # the probed ones are cached
    assert plan.to_dict()["probes"] == [probe.to_dict()] and Probe.from_dict(probe.to_dict()) == probe
    fit(judge, limit=3, cache=cache, n_boot=100)
    assert len(openai_server.log) - 4 == estimate.requests  # the real run reuses the probe's judgments


def test_the_probe_picks_the_same_requests_every_time(openai_server, tmp_path):
    """Picked from the run's own requests, deterministically: a probe on a fresh cache sends the same
    prompts; a second probe on the same cache picks among what is left, never re-sends."""
    judge = str(write_judge(tmp_path, openai_server.base_url))
    plan_fit(judge, limit=3, cache=tmp_path / "a.sqlite3", probe=3)
    plan_fit(judge, limit=3, cache=tmp_path / "b.sqlite3", probe=3)
    prompts = [entry["prompt"] for entry in openai_server.log]
    assert sorted(prompts[:3]) == sorted(prompts[3:]) and len(set(prompts[:3])) == 3
    plan_fit(judge, limit=3, cache=tmp_path / "a.sqlite3", probe=3)
    assert not set(entry["prompt"] for entry in openai_server.log[6:]) & set(prompts[:3])


def test_time_is_extrapolated_from_the_measured_latency(openai_server, tmp_path):
    """A server that waits LATENCY_S before each reply: the plan's latency is the probe's median (at
    least that delay, never the 10 s assumed), and its time is the requests left at that latency, at the
    judge's concurrency. Tokens per request come from the probe's reported usage (50 out per reply)."""
    openai_server.latency_s = LATENCY_S
    judge = str(write_judge(tmp_path, openai_server.base_url, timeout_s=5.0, concurrency=2))
    unprobed = plan_fit(judge, limit=3).estimates[0]
    assert unprobed.latency_s == ASSUMED_LATENCY_S and unprobed.latency_basis.startswith("assumed")
    plan = plan_fit(judge, limit=3, probe=3)
    (probe,), estimate = plan.probes, plan.estimates[0]
    assert LATENCY_S <= probe.median_latency_s < ASSUMED_LATENCY_S
    assert estimate.latency_s == probe.median_latency_s and estimate.latency_basis == "median of 3 probed now"
    assert estimate.time_s == pytest.approx(estimate.requests * probe.median_latency_s / 2)
    assert estimate.output_tokens_per_request == probe.mean_output_tokens == 50
    assert estimate.output_basis == "mean of 3 probed now"


def test_parse_rate_counts_the_unparseable_replies_by_kind(openai_server, tmp_path):
    """Two of five replies are prose with no JSON (not asked again: parse_retries 0): 3 of 5 parsed, the
    two failures by kind with the first reason; only the parsed ones are cached (the run asks again)."""
    judge = write_judge(tmp_path, openai_server.base_url, parse_retries=0)
    openai_server.queue("no-json", "no-json")
    result = cli("fit", "--judge", judge, "--limit", "3", "--dry-run", "--probe", "5")
    assert result.returncode == 0, result.stderr
    assert len(openai_server.log) == 5
    out = one_line(result.stdout)
    assert "probe of loopback: 3 of 5 parsed (60%); parse_error 2: no JSON object in the reply" in out
    assert f"about {round((run_requests(3) - 3) * 0.4)} of the {run_requests(3) - 3} requests left would fail" in out
    plan = plan_fit(str(judge), limit=3)  # the cache now holds the 3 parsed judgments, not the failures
    assert plan.estimates[0].cached == 3


def test_the_probe_is_priced_before_it_is_sent_and_held_to_max_cost(openai_server, tmp_path):
    judge = str(write_judge(tmp_path, openai_server.base_url))
    seen: list[tuple[list[ProbeQuote], int]] = []
    budget = SpendBudget(1.0)
    plan = plan_fit(judge, limit=3, probe=2, max_cost=budget,
                    on_quote=lambda quotes: seen.append((quotes, len(openai_server.log))))
    ((quotes, sent_before),) = seen
    assert sent_before == 0 and [(q.judge, q.requests) for q in quotes] == [("loopback", 2)] and quotes[0].cost_usd > 0
    assert plan.probes[0].cost_usd > 0
    assert budget.spent_usd == pytest.approx(plan.probes[0].cost_usd)  # the probe's spend counts against the cap
    # on a fresh cache the same two requests are quoted alike: a cap of half their price sends nothing
    with pytest.raises(CalibrateError, match=r"max_cost: the probe's 2 requests are priced at \$0\.\d+ .* nothing was"):
        plan_fit(judge, limit=3, probe=2, max_cost=quotes[0].cost_usd / 2, cache=tmp_path / "fresh.sqlite3")
    assert len(openai_server.log) == 2


def test_cli_prints_the_price_first_and_refuses_a_cap_below_it_sending_nothing(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url)
    refused = cli("fit", "--judge", judge, "--limit", "3", "--dry-run", "--probe", "3", "--max-cost", "0.0001")
    assert refused.returncode == 2 and not openai_server.log
    quote, error = refused.stderr.splitlines()  # the price first, then one error line
    assert quote.startswith("probe: sending 3 requests to judge 'loopback', $0.0")
    assert error.startswith("error: --max-cost: the probe's 3 requests are priced at $")
    assert error.endswith("above the cap of $0.0001; nothing was sent")
    probed = cli("fit", "--judge", judge, "--limit", "3", "--dry-run", "--probe", "3", "--max-cost", "1")
    assert probed.returncode == 0, probed.stderr
    assert len(openai_server.log) == 3
    assert "3 probe requests sent (now cached), nothing else" in probed.stdout


def test_a_probe_that_fails_entirely_is_one_line_with_the_kind_and_first_reason(openai_server, tmp_path):
    """Consistent with a fit none of whose pairs was judged: one line, exit 2 (a judge that cannot run)."""
    judge = write_judge(tmp_path, openai_server.base_url, parse_retries=0)
    openai_server.queue(*["no-json"] * 3)
    result = cli("fit", "--judge", judge, "--limit", "3", "--dry-run", "--probe", "3")
    assert result.returncode == 2 and len(openai_server.log) == 3 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error == ["error: judge 'loopback': none of the 3 probe requests came back judged (parse_error 3; first: "
                     "no JSON object in the reply); the failures are in the cache's failure log; fix the judge (or "
                     "its server) and try again"]


def test_without_a_probe_the_dry_run_says_where_the_latency_comes_from(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url)
    assumed = one_line(cli("fit", "--judge", judge, "--limit", "2", "--dry-run").stdout)
    assert "10.0s each (assumed: calibrate's default of 10s, none measured in the cache); --probe 5 measures" in assumed
    fit(str(judge), limit=2, n_boot=100)
    cached = one_line(cli("fit", "--judge", judge, "--limit", "3", "--dry-run").stdout)
    assert re.search(r"\(median of \d+ judgments of this judge in the cache\)", cached)
    assert "assumed" not in cached and "--probe 5 measures" in cached
    probed = one_line(cli("fit", "--judge", judge, "--limit", "3", "--dry-run", "--probe", "1").stdout)
    assert "(median of 1 probed now)" in probed and "--probe 5 measures" not in probed


def test_probe_needs_dry_run(openai_server, tmp_path):
    judge = write_judge(tmp_path, openai_server.base_url)
    result = cli("fit", "--judge", judge, "--limit", "2", "--probe", "2")
    assert result.returncode == 2 and not openai_server.log
    assert result.stderr.startswith("error: --probe measures a dry run: add --dry-run")


def test_probe_of_the_offline_heuristic_judges_n_here_and_times_them(tmp_path):
    """Offline: nothing is sent or paid; the N judgments are made and cached, their real time measured,
    and the plan's time is extrapolated from it."""
    plan = plan_fit("heuristic", limit=3, probe=3)
    (probe,), estimate = plan.probes, plan.estimates[0]
    assert probe.offline and (probe.n_sent, probe.n_parsed, probe.requests, probe.cost_usd) == (3, 3, 0, 0.0)
    assert probe.median_latency_s is not None and probe.median_latency_s > 0
    assert estimate.cached == 3 and estimate.time_s == pytest.approx(
        estimate.requests * probe.median_latency_s / estimate.concurrency)
    result = cli("fit", "--judge", "heuristic", "--limit", "3", "--dry-run", "--probe", "2")
    assert result.returncode == 0, result.stderr
    assert "probe: judging 2 pairs with 'heuristic' here (offline: nothing is sent)" in one_line(result.stderr)
    assert "probe of heuristic: 2 judged here (offline, nothing sent or paid)" in one_line(result.stdout)


def test_compare_and_score_dry_runs_probe_each_judge(openai_server, tmp_path):
    """compare: N per judge (the offline baselines judged here, nothing sent for them); score: N of the
    response pairs (the fit it would run first is planned at the latency the probe measured)."""
    judge = write_judge(tmp_path, openai_server.base_url)
    compared = cli("compare", "--judges", judge, "--limit", "2", "--dry-run", "--probe", "2")
    assert compared.returncode == 0, compared.stderr
    assert len(openai_server.log) == 2 and "probe of loopback: 2 of 2 parsed (100%)" in one_line(compared.stdout)
    scored = cli("score", "--judge", judge, "--responses", "sample", "--limit", "3", "--dry-run", "--probe", "2")
    assert scored.returncode == 0, scored.stderr
    assert len(openai_server.log) == 4 and "probe of loopback: 2 of 2 parsed" in one_line(scored.stdout)
    assert "median of 2 probed now" in one_line(scored.stdout)


def test_a_panel_is_probed_through_its_members_each_once(openai_server, tmp_path):
    """A judge alone and inside a panel is probed once; the panel's other member too: N requests each."""
    a = write_judge(tmp_path, openai_server.base_url, name="a")
    b = write_judge(tmp_path, openai_server.base_url, name="b", model="other")
    panel = tmp_path / "both.toml"
    panel.write_text(f'name = "both"\nbackend = "panel"\nmembers = ["{a}", "{b}"]\n')
    plan = plan_compare([str(a), str(panel)], limit=2, baselines=False, probe=2)
    assert [(probe.judge, probe.n_sent) for probe in plan.probes] == [("a", 2), ("b", 2)]
    assert len(openai_server.log) == 4
    assert all(e.cached == 2 and e.latency_basis == "median of 2 probed now" for e in plan.estimates)
