"""Progress bars on the terminal, drawn from the judging layer's `JudgingProgress` events.

One bar per task (judging with a judge, answering with a model), as the task reports itself: its
count and total, the rate, elapsed time and estimate, the running cost and failures, and for a judge
behind an API the 429s met and the rate limit holding requests back. The display lives while any task
is unfinished and ends with the last, so what a command prints between tasks is not drawn over.
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
    TimeRemainingColumn,
)

from calibrate.judging.progress import JudgingProgress


class ProgressBars:
    """A `ProgressCallback` that draws rich progress bars (pass it as a workflow's `progress`)."""

    def __init__(self) -> None:
        self.display: Progress | None = None
        self.bars: dict[int, tuple[TaskID, float]] = {}  # task number -> (its bar, when it started)
        self.open: set[int] = set()

    def __call__(self, event: JudgingProgress) -> None:
        if self.display is None:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                       TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
            self.display = Progress(*columns, transient=False)
            self.display.start()
        if event.task not in self.bars:
            bar = self.display.add_task(event.description, total=event.total, status="", rate="")
            self.bars[event.task] = (bar, time.perf_counter())
            self.open.add(event.task)
        bar, started = self.bars[event.task]
        rate = event.done / max(time.perf_counter() - started, 1e-9)
        limits = ""
        if event.rate_limited is not None:
            limits = f" · {event.rate_limited} × 429" + (f" · held by {event.held_by} limit" if event.held_by else "")
        self.display.update(bar, completed=event.done, rate=f"{rate:,.1f}/s",
                            status=f"${event.cost_usd:.4f} · {event.failed} failed{limits}")
        if event.finished:
            self.open.discard(event.task)
            if not self.open:
                self.display.stop()
                self.display, self.bars = None, {}
