"""Progress bars on the terminal, drawn from the judging layer's `JudgingProgress` events.

One bar per task (judging with a judge, answering with a model), as the task reports itself: its
count and total, the rate (for a judge slower than one judgment a second: seconds per judgment and the
requests in flight, the estimate from the median latency and the concurrency), elapsed time and estimate,
the running cost and failures, and for a judge behind an API the 429s met and the rate limit holding
requests back. The display lives while any task is unfinished and ends with the last, so what a command
prints between tasks is not drawn over.
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from calibrate.judging.progress import JudgingProgress

SLOW_RATE = 1.0  # judgments a second below which a judge is slow: its pace is shown as seconds per judgment


def clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def pace(event: JudgingProgress, elapsed_s: float) -> tuple[str, str]:
    """The rate text and the estimate of the time left. A fast task: judgments a second, the estimate from
    that rate. A slow one (below SLOW_RATE): seconds per judgment and the requests in flight, the estimate
    from the median latency and the concurrency, so a judge that takes a minute a judgment never shows
    "0.0/s" with no estimate once a judgment has come back."""
    rate = event.done / max(elapsed_s, 1e-9)
    remaining = None if event.total is None else max(event.total - event.done, 0)
    if rate >= SLOW_RATE or (event.median_latency_s is None and not event.in_flight):
        eta = clock(remaining / rate) if remaining is not None and rate > 0 else "-:--:--"
        return f"{rate:,.1f}/s", eta
    if event.median_latency_s is None:  # sent, nothing back yet
        return f"{event.in_flight} in flight", "-:--:--"
    parallel = event.in_flight or event.concurrency or 1  # the requests sharing the wait now
    per_judgment = event.median_latency_s / parallel
    eta = "-:--:--" if remaining is None else clock(remaining * per_judgment)
    return f"{per_judgment:,.0f}s/judgment · {event.in_flight} in flight", eta


class ProgressBars:
    """A `ProgressCallback` that draws rich progress bars (pass it as a workflow's `progress`)."""

    def __init__(self) -> None:
        self.display: Progress | None = None
        self.bars: dict[int, tuple[TaskID, float]] = {}  # task number -> (its bar, when it started)
        self.open: set[int] = set()

    def __call__(self, event: JudgingProgress) -> None:
        if self.display is None:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
                       TextColumn("{task.fields[status]}"))
            self.display = Progress(*columns, transient=False)
            self.display.start()
        if event.task not in self.bars:
            bar = self.display.add_task(event.description, total=event.total, status="", rate="", eta="-:--:--")
            self.bars[event.task] = (bar, time.perf_counter())
            self.open.add(event.task)
        bar, started = self.bars[event.task]
        rate_text, eta = pace(event, time.perf_counter() - started)
        limits = ""
        if event.rate_limited is not None:
            limits = f" · {event.rate_limited} × 429" + (f" · held by {event.held_by} limit" if event.held_by else "")
        self.display.update(bar, completed=event.done, rate=rate_text, eta=eta,
                            status=f"${event.cost_usd:.4f} · {event.failed} failed{limits}")
        if event.finished:
            self.open.discard(event.task)
            if not self.open:
                self.display.stop()
                self.display, self.bars = None, {}
