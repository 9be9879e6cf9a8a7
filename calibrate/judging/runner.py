"""The runner: judges pairs with bounded concurrency, reusing and filling the judgment store.

Each distinct (item content, order, repeat) is judged at most once per judge config; what the store already
holds is reused; each new judgment of a judge that sends requests is committed in the event-loop turn
it arrives in (group commit: the judgments finishing in one turn share one transaction), so a killed
run loses only the calls in flight. A judge that sends none (offline and free: heuristic, constant)
commits every OFFLINE_COMMIT_S instead, since a transaction per judgment would cost more than its
judging: a SIGKILL loses at most that much of its free work (an error or Ctrl-C loses nothing).
A failed judgment is stored in the failure log, shown in the table as a typed failure, and tried again
by the next run. The result is the judgment table, one row per pair, order and repeat,
with each judgment's cost at the judge's prices (and what of it this run spent). A panel judges
through its members (panel.py).

A pair whose answer is a placeholder (empty, null or "No response": `Pair.missing_answers`) is never
sent to a judge, looked up in or written to the store: its rows are typed failures, `missing_answer`,
naming the side, with no tokens, cost or attempts (nothing was asked, nothing was paid for).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import time
from collections import Counter, deque
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from calibrate.data.pairs import Pair, missing_answer_reason
from calibrate.judging.base import JUDGE_FIELDS, MISSING_ANSWER, ORDERS, V3_FIELDS, Backend, Judgment, Key, view_of
from calibrate.judging.calls import scrub
from calibrate.judging.estimate import RequestSizer, SpendBudget, sizer_for
from calibrate.judging.progress import ProgressCallback, ProgressCounter

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")


class CachedJudgments(Protocol):
    """What reading a judgment store needs (all a plan does): the stored judgments among some keys."""

    def get_many(self, config_hash: str, keys: Iterable[Key]) -> dict[Key, Judgment]: ...


class JudgmentStore(CachedJudgments, Protocol):
    """What the runner needs of a judgment store (calibrate.store.JudgmentStore is the one in use):
    the stored judgments among some keys, committing new ones the moment they arrive (which also ends
    this run's claims on them), and claims that let runs sharing the store judge each item once."""

    def read_columns(self, config_hash: str, keys: Iterable[Key]) -> StoredJudgments:
        """The stored judgments among keys, in bulk: as columns wherever the records allow."""
        ...

    def put_many(self, judgments: list[Judgment]) -> set[tuple[str, Key]]:
        """Store judgments; returns the (config hash, key) of those another run had stored first."""
        ...

    def claim(self, config_hash: str, keys: Iterable[Key]) -> set[Key]:
        """Claim keys about to be judged; returns those no other live run holds and none has stored."""
        ...

    def heartbeat(self) -> None:
        """Tell other runs this run is alive, so its claims hold."""
        ...

    def release(self) -> None:
        """Drop this run's remaining claims."""
        ...


HEARTBEAT_S = 5.0  # how often a run renews its claims (the store lets them expire after a minute without)
WAIT_POLL_S = 0.25  # how often a run looks for the judgments of items another run is judging
CLAIM_AHEAD_S = 1.0  # a run claims about this long's worth of work at a time (one write per claim)
MAX_CLAIM_BLOCK = 1000
OFFLINE_COMMIT_S = 0.2  # how often a judge that sends no request (free, offline) commits its judgments
MAX_REASON_CHARS = 200  # a failure kind's first reason, as the run counts keep it


class SharedWork:
    """The items a run has to judge, shared with other runs on the same store: claimed a block at a
    time as workers need them (an item another live run holds is skipped), and the skipped ones
    waited for: taken from the store when their judgment lands (`landed`), or claimed and judged here
    once the other run's claim ends without one (it failed, stopped or died). A block is what the run
    gets through in about CLAIM_AHEAD_S, at least `min_block`: an API judge claims a few items at a
    time, a local one that judges thousands a second does not pay a write for every few."""

    def __init__(self, store: JudgmentStore, config_hash: str, todo: list[tuple[Key, Pair]], min_block: int):
        self.store, self.config_hash, self.min_block = store, config_hash, min_block
        self.unclaimed = deque(todo)
        self.ready: deque[tuple[Key, Pair]] = deque()
        self.waiting: dict[Key, Pair] = {}
        self.landed: dict[Key, Judgment] = {}
        self.looked = 0.0
        self.started, self.handed_out = time.monotonic(), 0

    async def next(self) -> tuple[Key, Pair] | None:
        """The next item this run may send, or None when nothing is left to judge or wait for."""
        while not self.ready:
            if self.unclaimed:
                rate = self.handed_out / max(time.monotonic() - self.started, 1e-3)
                size = int(min(MAX_CLAIM_BLOCK, max(self.min_block, rate * CLAIM_AHEAD_S), len(self.unclaimed)))
                self._claim(dict(self.unclaimed.popleft() for _ in range(size)))
            elif not self.waiting:
                return None
            elif time.monotonic() - self.looked >= WAIT_POLL_S:
                self.looked = time.monotonic()
                self.landed.update(found := self.store.get_many(self.config_hash, self.waiting))
                for key in found:
                    del self.waiting[key]
                self._claim(self.waiting)
            else:
                await asyncio.sleep(WAIT_POLL_S)
        self.handed_out += 1
        return self.ready.popleft()

    def _claim(self, items: dict[Key, Pair]) -> None:
        claimed = self.store.claim(self.config_hash, items)
        for key, pair in list(items.items()):
            if key in claimed:
                self.ready.append((key, pair))
                self.waiting.pop(key, None)
            else:
                self.waiting[key] = pair


def judge_pairs(
    backend: Backend,
    pairs: Sequence[Pair],
    store: JudgmentStore,
    orders: Sequence[str] = ("forward",),
    repeats: int = 1,
    progress: ProgressCallback | None = None,
    counter: ProgressCounter | None = None,
    budget: SpendBudget | None = None,
    sizers: dict[str, RequestSizer] | None = None,
    reuse: dict[str, CachedTable] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Judge every pair in every order, `repeats` times each (repeats > 1 measure the judge's
    stability); returns the judgment table and counts of new, reused, failed (`failed_by_kind`: the
    new failures by `FailureKind`). `progress` receives `JudgingProgress` events of the judging it
    sends (a task "judging with <judge>"); `counter`, when given instead, counts the progress
    (reused judgments included) of a task the caller made, e.g. one spanning the chunks of a stream. `budget`
    (`max_cost`) is asked before each request; once it stops, no request is sent and, when the requests
    in flight are stored, a CalibrateError says so. `sizers`: the judges' request sizers the budget
    prices requests with, kept across calls (e.g. the chunks of a stream); by default, new ones.
    `reuse`: the tables of judges already read from the cache alone in this run, of the same pairs,
    orders and repeats, by config hash (a comparison passes one for all its judges): a judge found
    there is not read again (a panel's members are often compared on their own too), and a table
    read from the cache alone is added (one with anything judged now is not: reading it again would
    differ, its new judgments then counted as reused and its failures tried again).

    Pairs with a placeholder answer are not judged: their rows are `missing_answer` failures, made
    here without any call, and left out of the counts (which count the judge's work)."""
    for order in orders:
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}")
    config = backend.config
    sizers = {} if sizers is None else sizers
    backend.preflight()
    if reuse is not None and config.config_hash in reuse:
        return reuse[config.config_hash].served(counter)
    if backend.members:  # a judge made of others (a panel): they judge, it combines
        return _judge_members(backend, pairs, store, orders, repeats, progress, counter, budget, sizers, reuse)
    wanted = wanted_keys(pairs, orders, repeats)
    with collector_paused():
        stored = store.read_columns(config.config_hash, wanted)
    missing = missing_judgments(config, pairs, orders, repeats)
    todo = [(key, pair) for key, pair in wanted.items() if key not in stored]
    if counter:
        counter.add(len(stored) + len(missing))
    pacing = backend.pacing()
    before = (pacing.rate_limited, pacing.waited_s) if pacing else (0, 0.0)
    sizer = sizer_for(backend, sizers) if budget else None
    if sizer:
        sizer.learn((view_of(wanted[key], key[1]), j) for key, j in stored.as_judgments().items())
    fresh, landed = (_run_frozen(_judge_all(backend, todo, store, progress, counter, budget, sizer)) if todo
                     else ({}, {}))
    requests = sum(j.attempts for j in fresh.values())
    fresh = {key: judgment for key, judgment in fresh.items() if key not in landed}
    cached = stored.keys() | landed.keys()
    table = _table(pairs, orders, repeats, stored, {**stored.judgments, **landed, **fresh, **missing}, cached)
    table["cost_usd"] = judgment_cost(config, table)
    table["cost_usd_this_run"] = table["cost_usd"].where(~table["from_cache"], 0.0)
    kinds = Counter(j.failure_kind for j in fresh.values() if j.failure_kind is not None)
    failed = sum(kinds.values())
    counts: dict[str, Any] = {"judged": len(fresh) - failed, "failed": failed, "reused": len(cached),
                              "items": len(wanted), "requests": requests,
                              "failed_by_kind": dict(sorted((kind.value, n) for kind, n in kinds.items()))}
    if kinds:
        counts["first_reasons"] = first_reasons(fresh.values())
    if backend.response_format is not None:  # the structured output asked for, and what the judgments used
        used = Counter(j.response_format for j in {**stored.judgments, **landed, **fresh}.values()
                       if j.response_format)
        used.update(value for value in stored.table["response_format"].to_pylist() if value)
        counts.update(response_format=config.settings["response_format"],
                      response_formats_used=dict(sorted(used.items())))
    if pacing is not None:  # a judge behind an API: what its limits and failures cost this run
        counts.update(transient_failed=sum(n for kind, n in kinds.items() if kind.transient),
                      rate_limited=pacing.rate_limited - before[0], limit_wait_s=round(pacing.waited_s - before[1], 3))
    if reuse is not None and not todo:
        reuse[config.config_hash] = CachedTable(table, counts, len(stored) + len(missing))
    return table, counts


@dataclass(frozen=True)
class CachedTable:
    """A judge's table read from the cache alone, kept for the rest of a run (`judge_pairs`' `reuse`):
    reading the same keys again would give the same table and counts."""

    table: pd.DataFrame
    counts: dict[str, Any]
    progress_units: int  # what a progress counter counts for reading it

    def served(self, counter: ProgressCounter | None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """A copy of the table and counts, as a new read would return them (and count them)."""
        if counter:
            counter.add(self.progress_units)
        return self.table.copy(), copy.deepcopy(self.counts)


def first_reasons(judgments: Iterable[Judgment]) -> dict[str, str]:
    """Per failure kind, the reason of its first failure, on one line, scrubbed of credentials and cut
    short: what a person reads first about why a run's judgments failed."""
    reasons: dict[str, str] = {}
    for judgment in sorted(judgments, key=attrgetter("created_at")):
        kind = judgment.failure_kind
        if kind is not None and kind.value not in reasons:
            reasons[kind.value] = " ".join(scrub(judgment.failure_reason or "").split())[:MAX_REASON_CHARS]
    return dict(sorted(reasons.items()))


def add_counts(counts: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Run counts of two runs (or chunks) together; a count only one of them has is kept as it is
    (counts by kind are added kind by kind; a text, such as the structured output asked for or a kind's
    first reason, keeps the first one's)."""
    return {**counts, **{key: add_counts(counts.get(key, {}), value) if isinstance(value, dict)
                         else counts.get(key, value) if isinstance(value, str) else counts.get(key, 0) + value
                         for key, value in more.items()}}


def judgment_cost(config, table: pd.DataFrame) -> pd.Series:
    """Each judgment's cost at the judge's prices; those from batch jobs at the batch price."""
    factor = np.where(table["batch_id"].notna(), config.settings.get("batch_price_factor", 1.0), 1.0)
    return config.cost_usd(table["input_tokens"], table["output_tokens"]) * factor


# The judgment table's columns from each Judgment: every record field but `fields`, whose keys are
# columns of their own (read from the dataclass, so a field added to the record becomes a column).
JUDGMENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Judgment) if f.name != "fields")
OUTPUT_FIELDS: tuple[str, ...] = (*JUDGE_FIELDS, *V3_FIELDS)  # every published judge output field


@dataclass(frozen=True)
class StoredJudgments:
    """Stored judgments among some keys as a store reads them in bulk: as Arrow columns (`table`: the
    `judgment_schema` columns, `rows`: each key's row in it), except the few a store had to read
    record by record (`judgments`). A clean cache's read builds no Judgment and no Python string per
    judgment: that, not the reading, is what a cached run's time went into."""

    table: pa.Table
    rows: dict[Key, int]
    judgments: dict[Key, Judgment]

    def __contains__(self, key: object) -> bool:
        return key in self.rows or key in self.judgments

    def __len__(self) -> int:
        return len(self.rows) + len(self.judgments)

    def keys(self) -> set[Key]:
        return self.rows.keys() | self.judgments.keys()

    def as_judgments(self) -> dict[Key, Judgment]:
        """Every one as a Judgment (for a request sizer's estimates: only a run with a budget asks)."""
        found = dict(self.judgments)
        records = self.table.to_pylist()
        for key, row in self.rows.items():
            record = records[row]
            found[key] = Judgment(**{name: record[name] for name in JUDGMENT_COLUMNS},
                                  fields={name: record[name] for name in OUTPUT_FIELDS if record[name] is not None})
        return found


def judgment_schema() -> pa.Schema:
    """The Arrow types of the judgment columns (`JUDGMENT_COLUMNS`, then `OUTPUT_FIELDS`) as the judgment
    table has them; a Judgment field `arrow_schema` does not name is text."""
    import pyarrow as pa

    table = arrow_schema()
    return pa.schema([(name, table.field(name).type if name in table.names else pa.string())
                      for name in (*JUDGMENT_COLUMNS, *OUTPUT_FIELDS)])


def _table(pairs: Sequence[Pair], orders: Sequence[str], repeats: int, stored: StoredJudgments,
           judgments: dict[Key, Judgment], cached: set[Key]) -> pd.DataFrame:
    """One row per pair, order and repeat (pairs sharing content share a judgment), built a column at a
    time: the stored judgments' columns taken from Arrow by row number, the other judgments' (made
    now, or read record by record) appended to them, the pairs' columns taken per pair."""
    with collector_paused():
        return _build_table(pairs, orders, repeats, stored, judgments, cached)


def _build_table(pairs: Sequence[Pair], orders: Sequence[str], repeats: int, stored: StoredJudgments,
                 judgments: dict[Key, Judgment], cached: set[Key]) -> pd.DataFrame:
    import pyarrow as pa

    per_pair = len(orders) * repeats
    keys = [(pair.content_key, order, repeat) for pair in pairs for order in orders for repeat in range(repeats)]
    first_made = stored.table.num_rows
    position = {**stored.rows, **{key: first_made + i for i, key in enumerate(judgments)}}
    rows = pa.array([position[key] for key in keys], pa.int64())
    made = list(judgments.values())
    by_pair = np.repeat(np.arange(len(pairs)), per_pair)
    columns: dict[str, pd.Series | list] = {
        name: _pair_column([getattr(pair, attribute) for pair in pairs], by_pair)
        for name, attribute in (("pair_id", "id"), ("set_name", "set_name"), ("category", "category"),
                                ("issue_scale", "issue_scale"), ("missing_side", "missing_side"))}
    values = {name: list(map(attrgetter(name), made)) for name in JUDGMENT_COLUMNS}
    values["failure_kind"] = [None if kind is None else kind.value for kind in values["failure_kind"]]  # as stored
    columns.update({name: _column(stored.table[name], values[name], rows) for name in JUDGMENT_COLUMNS})
    fields = [judgment.fields for judgment in made]
    columns.update({name: _column(stored.table[name], [found.get(name) for found in fields], rows)
                    for name in OUTPUT_FIELDS})
    columns["from_cache"] = [key in cached for key in keys]
    columns["extras"] = _pair_column([pair.extras_text for pair in pairs], by_pair)
    return pd.DataFrame(columns)


def _pair_column(values: list, by_pair: np.ndarray) -> pd.Series:
    """A pair's value on each of its rows, as pandas makes a column of them (the `_column` rule), made of
    the distinct pairs and then repeated: the rows of one pair share its Python objects (its extras,
    over a kilobyte each, are neither converted nor copied per order and repeat)."""
    return pd.Series(values).take(by_pair).reset_index(drop=True)


def _column(stored: pa.ChunkedArray, values: list, rows: pa.Array) -> pd.Series | list:
    """The column of `stored` followed by `values` (Python), taken at `rows`, as pandas would make it of
    the same values in a list (so the table is the same whichever way its judgments were read): a
    column with no value holds None, ints with a gap are floats, flags with a gap are objects,
    lists are Python lists. Values Arrow cannot type (a record of odd types read one by one) go
    the Python way."""
    import pyarrow as pa

    try:
        array = pa.concat_arrays([*stored.chunks, pa.array(values, type=stored.type)])
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        every = stored.to_pylist() + values
        return [every[row] for row in rows.to_pylist()]
    taken = array.take(rows)
    if taken.null_count == len(taken):
        return [None] * len(taken)
    if pa.types.is_list(taken.type) or pa.types.is_null(taken.type):
        return taken.to_pylist()
    return taken.to_pandas()


def _judge_members(backend: Backend, pairs: Sequence[Pair], store: JudgmentStore, orders: Sequence[str],
                   repeats: int, progress: ProgressCallback | None, counter: ProgressCounter | None,
                   budget: SpendBudget | None, sizers: dict[str, RequestSizer],
                   reuse: dict[str, CachedTable] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Judge with each member (cached under the member's own config), then let the judge combine their
    tables (`Backend.combine_tables`). Its judgments are not stored: they follow from the stored
    member judgments at no cost."""
    tables, counts = [], {"judged": 0, "failed": 0, "reused": 0, "items": 0, "requests": 0}
    for member in backend.members:
        table, member_counts = judge_pairs(member, pairs, store, orders, repeats, progress, counter, budget, sizers,
                                           reuse)
        tables.append(table)
        counts = add_counts(counts, member_counts)
    with collector_paused():
        combined = backend.combine_tables(tables)
    table = tables[0].copy()
    for column in combined.columns:
        table[column] = combined[column].to_numpy()
    table["from_cache"] = np.logical_and.reduce([t["from_cache"].to_numpy() for t in tables])
    for column in ("cost_usd", "cost_usd_this_run"):
        table[column] = np.sum([t[column].to_numpy() for t in tables], axis=0)
    return table, counts


def arrow_schema(extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The judgment table's column types, fixed, so that tables written chunk by chunk (or with a
    column that is empty in one chunk, like value_preference) share one schema."""
    import pyarrow as pa

    types = {
        "pair_id": pa.int64(), "set_name": pa.string(), "category": pa.string(), "issue_scale": pa.int64(),
        "missing_side": pa.string(),
        "judge_name": pa.string(), "config_hash": pa.string(), "item_key": pa.string(), "order": pa.string(),
        "parse_status": pa.string(), "failure_reason": pa.string(), "raw_output": pa.string(),
        "latency_s": pa.float64(), "input_tokens": pa.int64(), "output_tokens": pa.int64(), "attempts": pa.int64(),
        "truncated_chars": pa.int64(), "repeat": pa.int64(), "created_at": pa.float64(), "batch_id": pa.string(),
        "failure_kind": pa.string(), "response_format": pa.string(),
        **{key: pa.bool_() if key.endswith(("_refusal", "_has_no_information")) else
           pa.list_(pa.string()) if key.startswith("key_points") else
           pa.int64() if key == "alignment_score" else pa.string() for key in JUDGE_FIELDS},
        "central_issue": pa.string(), "value_preference": pa.bool_(), "from_cache": pa.bool_(),
        "extras": pa.string(), "cost_usd": pa.float64(), "cost_usd_this_run": pa.float64(),
        **(extra or {}),
    }
    return pa.schema(list(types.items()))


def split_cached(
    store: CachedJudgments, config_hash: str, pairs: Sequence[Pair], orders: Sequence[str], repeats: int = 1
) -> tuple[dict[Key, Pair], dict[Key, Judgment]]:
    """Every distinct (item, order, repeat) wanted, and the stored judgments among them."""
    wanted = wanted_keys(pairs, orders, repeats)
    with collector_paused():
        return wanted, store.get_many(config_hash, wanted)


def wanted_keys(pairs: Sequence[Pair], orders: Sequence[str], repeats: int) -> dict[Key, Pair]:
    """Every distinct (item, order, repeat) to judge. A pair with a placeholder answer is never
    wanted: no judge reads it (see `missing_judgments`)."""
    return {(pair.content_key, order, repeat): pair
            for pair in pairs if not pair.missing_answers for order in orders for repeat in range(repeats)}


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while a bulk read builds its objects (records, then columns): with it
    on, every few hundred allocations start a collection that rescans what was built so far, costing
    more than the reading itself (the judging has `_run_frozen` instead). What is built here holds no
    reference cycle for it to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def missing_judgments(config, pairs: Sequence[Pair], orders: Sequence[str], repeats: int = 1) -> dict[Key, Judgment]:
    """The `missing_answer` failure of every pair with a placeholder answer, in every order and repeat:
    made without asking the judge, so no tokens, cost or attempts, and never stored."""
    return {(pair.content_key, order, repeat): Judgment(
        judge_name=config.name, config_hash=config.config_hash, item_key=pair.content_key, order=order,
        parse_status=MISSING_ANSWER, failure_reason=missing_answer_reason(pair), raw_output="", latency_s=None,
        input_tokens=0, output_tokens=0, attempts=0, truncated_chars=0, repeat=repeat,
    ) for pair in pairs if pair.missing_answers for order in orders for repeat in range(repeats)}


def _run_frozen(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run the judging with the objects that exist now (the scientific stack) frozen out of the
    garbage collector: otherwise every full collection rescans them while replies pour in.
    (No collection first: it would cost more than the little garbage it frees.)"""
    gc.freeze()
    try:
        return run_sync(coroutine)
    finally:
        gc.unfreeze()


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from inside a running loop (e.g. a Jupyter notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _judge_all(
    backend: Backend, todo: list[tuple[Key, Pair]], store: JudgmentStore, progress: ProgressCallback | None,
    counter: ProgressCounter | None, budget: SpendBudget | None = None, sizer: RequestSizer | None = None,
) -> tuple[dict[Key, Judgment], dict[Key, Judgment]]:
    """Judge what no other run is judging; returns the judgments made here and those another run
    stored: while this one waited for them, or before this one's (then the stored one stands)."""
    config = backend.config
    work = SharedWork(store, config.config_hash, todo, min_block=2 * config.concurrency)
    done: dict[Key, Judgment] = {}
    reused: dict[Key, Judgment] = {}  # stored by an earlier run in the mode this judge stepped down to
    superseded: set[tuple[str, Key]] = set()
    task = nullcontext(counter) if counter else ProgressCounter(progress, f"judging with {config.name}", len(todo),
                                                                backend.pacing(), config.concurrency)
    with task as show:

        unsaved: list[Judgment] = []
        commit_at = time.monotonic() + OFFLINE_COMMIT_S

        def save() -> None:
            """Commit every judgment that arrived since the last commit, then show progress."""
            nonlocal commit_at
            commit_at = time.monotonic() + OFFLINE_COMMIT_S
            batch = unsaved[:]
            unsaved.clear()
            superseded.update(store.put_many(batch))
            show.add(len(batch), sum(config.cost_usd(j.input_tokens, j.output_tokens) for j in batch),
                     sum(j.failure_kind is not None for j in batch), [j.latency_s for j in batch if j.latency_s])

        async def keep_claims() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                store.heartbeat()

        async def worker() -> None:
            while (item := await work.next()) is not None:
                (item_key, order, repeat), pair = item
                view = view_of(pair, order)
                request = sizer.request(view) if sizer else None  # built once: priced, then sent
                expected = sizer.cost_usd(request[0]) if sizer and request else 0.0
                if budget is not None and not await budget.admit(expected):
                    return  # the cap: no more requests from this worker
                stepped_down = backend.judgment_hash(backend.response_format)
                if stepped_down != config.config_hash:  # judged in this plainer mode by an earlier run: reused
                    earlier = store.get_many(stepped_down, [(item_key, order, repeat)])
                    if earlier:
                        reused.update(earlier)
                        show.add(1)
                        continue
                started = time.perf_counter()
                show.sending(1)
                try:
                    verdict = await (backend.judge_request(*request) if request else backend.judge(view))
                finally:
                    show.sending(-1)
                if budget is not None:
                    budget.settle(expected, config.cost_usd(verdict.input_tokens, verdict.output_tokens))
                judgment = Judgment(
                    judge_name=config.name, config_hash=backend.judgment_hash(verdict.response_format),
                    item_key=item_key, order=order,
                    parse_status=verdict.parse_status, failure_reason=verdict.failure_reason,
                    raw_output=verdict.raw_output, latency_s=round(time.perf_counter() - started, 6),
                    input_tokens=verdict.input_tokens, output_tokens=verdict.output_tokens,
                    attempts=verdict.attempts, truncated_chars=verdict.truncated_chars, repeat=repeat,
                    fields=verdict.fields or {}, failure_kind=verdict.failure_kind,
                    response_format=verdict.response_format,
                )
                done[(item_key, order, repeat)] = judgment
                unsaved.append(judgment)
                if backend.SENDS_REQUESTS:
                    if len(unsaved) == 1:  # the first of this turn commits them all, errors included
                        await asyncio.sleep(0)  # let the other replies of this turn arrive
                        save()
                elif time.monotonic() >= commit_at:  # free offline judgments: a commit every OFFLINE_COMMIT_S
                    save()
                    await asyncio.sleep(0)  # the heartbeat and the other workers get their turn

        heartbeat = asyncio.create_task(keep_claims())
        try:
            await asyncio.gather(*(worker() for _ in range(min(config.concurrency, len(todo)))))
        finally:
            heartbeat.cancel()
            if unsaved:
                save()
            store.release()
            await backend.aclose()
        # What a report rests on is what the store holds: where another run stored its judgment of an
        # item first (possible only when a claim expired under a run still working), that one is used.
        for config_hash in {config_hash for config_hash, _ in superseded}:
            landed = [key for stored, key in superseded if stored == config_hash]
            work.landed.update(store.get_many(config_hash, landed))
        if work.landed:
            show.add(len(work.landed))
        work.landed.update(reused)
    if budget is not None and budget.stopped:
        raise budget.stopped_error(f"judge '{config.name}'", len(todo) - len(done.keys() | work.landed.keys()))
    return done, work.landed
