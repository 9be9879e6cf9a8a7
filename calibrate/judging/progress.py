"""Progress of judging and answering, as events: the judging layer reports where each task stands,
whoever drives it renders (the CLI's progress bars, cli/progress.py; a notebook; a test). Nothing here
draws, so the judging layer needs no display library.

A task is one bar's worth of work: judging with one judge, answering with one model, or what a
workflow makes one (score: one source with one judge, over every chunk). Its events are cumulative,
so a renderer may skip any of them and still show the truth.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from calibrate.judging.calls import PacingStats


@dataclass(frozen=True)
class JudgingProgress:
    """Where one task stands, since it began."""

    task: int  # which task: every event of one task has the same number, no two tasks share one
    description: str  # what is being done ("judging with gpt-4o")
    total: int | None  # judgments (or answers) the task has to make; None when not known
    done: int  # made so far (a task that counts reused judgments counts them here)
    failed: int  # of `done`, failures
    cost_usd: float  # of `done`, at list price
    rate_limited: int | None = None  # replies with status 429 so far; None for a judge without rate limits
    held_by: str = ""  # the rate limit holding request starts back at the moment ("" when none)
    finished: bool = False  # the task's last event
    in_flight: int = 0  # requests sent and not yet answered
    concurrency: int | None = None  # how many requests the judge sends at once (None: not a judge that sends)
    median_latency_s: float | None = None  # of the judgments made so far by this task (None before the first)


ProgressCallback = Callable[[JudgingProgress], None]
_task_numbers = itertools.count(1)


class ProgressCounter:
    """Counts one task's progress and reports each step to `report` as a `JudgingProgress`: one event
    when the task starts, one per `add`, and a `finished` one when it ends (used as a context manager,
    also when the run stops with an error). Without `report` it does nothing at all, so a run nobody
    watches pays nothing for it. `pacing`: a judge's rate-limit statistics, shown with each event."""

    def __init__(self, report: ProgressCallback | None, description: str, total: int | None,
                 pacing: PacingStats | None = None, concurrency: int | None = None):
        self.report, self.description, self.total, self.pacing = report, description, total, pacing
        self.concurrency = concurrency
        self.task = next(_task_numbers)
        self.done = self.failed = self.in_flight = 0
        self.cost_usd = 0.0
        self.latencies: list[float] = []

    def sending(self, requests: int) -> None:
        """`requests` more requests in flight (negative: answered); counted, shown with the next event."""
        self.in_flight += requests

    def __enter__(self) -> ProgressCounter:
        self._emit()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._emit(finished=True)

    def add(self, done: int, cost_usd: float = 0.0, failed: int = 0, latencies: Sequence[float] = ()) -> None:
        """`done` more judgments (or answers), `failed` of them failures, costing `cost_usd`; `latencies`:
        the seconds each new one took (a slow judge's estimate rests on their median)."""
        if self.report is None:
            return
        self.done += done
        self.failed += failed
        self.cost_usd += cost_usd
        self.latencies.extend(latencies)
        self._emit()

    def _emit(self, finished: bool = False) -> None:
        if self.report is None:
            return
        pacing = self.pacing
        self.report(JudgingProgress(
            task=self.task, description=self.description, total=self.total, done=self.done, failed=self.failed,
            cost_usd=self.cost_usd, rate_limited=None if pacing is None else pacing.rate_limited,
            held_by="" if pacing is None else pacing.binding_now(), finished=finished, in_flight=self.in_flight,
            concurrency=self.concurrency,
            median_latency_s=statistics.median(self.latencies) if self.latencies else None))
