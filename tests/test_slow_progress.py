"""Progress for a slow judge (below one judgment a second), as a local model on a CPU is: seconds per
judgment, the requests in flight and an estimate from the median latency and the concurrency; never
"0.0/s" with no estimate once a judgment has come back."""

from __future__ import annotations

import time

import pytest

from calibrate.cli.progress import ProgressBars, pace
from calibrate.judging.progress import JudgingProgress
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests.fakes.judges import KEY_VARIABLE, SECRET, pairs, write_judge


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)


def test_a_slow_judge_shows_seconds_per_judgment_in_flight_and_an_estimate(openai_server, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    openai_server.latency_s = 1.2  # every reply takes over a second: a slow judge
    judge = write_judge(tmp_path, openai_server.base_url, concurrency=1, timeout_s=10)
    seen: list[tuple[JudgingProgress, float]] = []
    bars = ProgressBars()
    started = time.perf_counter()

    def watch(event: JudgingProgress) -> None:
        seen.append((event, time.perf_counter() - started))
        bars(event)

    with JudgmentStore(tmp_path / "c.sqlite3") as store:
        judge_pairs(make_backend(load_judge_config(str(judge))), pairs(5), store, progress=watch)
    assert [event.concurrency for event, _ in seen] == [1] * len(seen)
    back = [(event, elapsed) for event, elapsed in seen if event.done and not event.finished]
    assert back and all(event.median_latency_s >= 1.2 for event, _ in back)
    for event, elapsed in back:
        rate, eta = pace(event, elapsed)
        assert "s/judgment" in rate and "/s" not in rate.replace("s/judgment", ""), rate
        assert eta != "-:--:--", (event, eta)
    first, elapsed = back[0]  # 5 judgments, one at a time: the estimate reads median latency x remaining / in flight
    rate, eta = pace(first, elapsed)
    assert f"{first.in_flight} in flight" in rate
    assert eta == time.strftime("%-H:%M:%S", time.gmtime(round((5 - first.done) * first.median_latency_s
                                                              / (first.in_flight or 1))))
    shown = capsys.readouterr().out
    assert "s/judgment" in shown and "0.0/s" not in shown


def test_a_fast_task_keeps_judgments_a_second_and_nothing_back_yet_shows_what_is_in_flight():
    fast = JudgingProgress(task=1, description="d", total=100, done=50, failed=0, cost_usd=0.0, concurrency=4,
                           median_latency_s=0.01, in_flight=4)
    assert pace(fast, 10.0) == ("5.0/s", "0:00:10")
    waiting = JudgingProgress(task=1, description="d", total=10, done=0, failed=0, cost_usd=0.0, concurrency=2,
                              in_flight=2)
    assert pace(waiting, 30.0) == ("2 in flight", "-:--:--")
