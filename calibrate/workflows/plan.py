"""What a run would send and cost, before it sends anything (the `plan_` functions, `--dry-run`), and the
spend cap a run keeps to (`max_cost`, `--max-cost`).

A plan reads the cache (read-only; a missing cache is an empty one) to leave out what is already
judged, renders every request that would be sent to count its tokens, and touches no network: no key
is needed to see what a run would cost.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.data.pairs import Pair
from calibrate.judging.base import Backend, Judgment, Key, view_of
from calibrate.judging.estimate import (
    CostEstimate,
    RequestSizer,
    SpendBudget,
    key_is_set,
    request_input_tokens,
    sizer_for,
)
from calibrate.judging.models import ModelConfig
from calibrate.judging.panel import PanelBackend
from calibrate.judging.responder import TYPICAL_ANSWER_TOKENS
from calibrate.judging.runner import CachedJudgments, split_cached
from calibrate.store.judgments import JudgmentStore as CacheFile
from calibrate.store.responses import ResponseStore
from calibrate.store.sqlite import cache_path


@dataclass
class RunPlan:
    """What a command would send, per judge (or model): requests, tokens, cost at list and batch
    price, and time at the judge's limits. Nothing was sent to make it."""

    command: str
    estimates: list[CostEstimate]
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests to API judges (an offline judge's judgments are made here, not sent)."""
        return sum(estimate.requests for estimate in self.estimates if not estimate.offline)

    @property
    def cost_usd(self) -> float:
        """At list price (what a live run pays)."""
        return sum(estimate.cost_usd for estimate in self.estimates)

    @property
    def batch_cost_usd(self) -> float | None:
        """At batch price where the judge has a batch API (list price for those that have none)."""
        if not any(estimate.batch_cost_usd is not None for estimate in self.estimates):
            return None
        return sum(e.cost_usd if e.batch_cost_usd is None else e.batch_cost_usd for e in self.estimates)

    @property
    def time_s(self) -> float:
        """Judges run one after another."""
        return sum(estimate.time_s for estimate in self.estimates)

    @property
    def missing_keys(self) -> list[str]:
        """Key variables the real run needs that are not set now."""
        return list(dict.fromkeys(e.key_variable for e in self.estimates if e.key_variable and not e.key_set))

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "requests": self.requests, "cost_usd": self.cost_usd,
                "batch_cost_usd": self.batch_cost_usd, "time_s": self.time_s, "missing_keys": self.missing_keys,
                "estimates": [estimate.to_dict() for estimate in self.estimates], "notes": self.notes}


def spend_budget(max_cost: float | SpendBudget | None) -> SpendBudget | None:
    """`max_cost` as the budget the runner consults: a cap in USD, or a budget shared by several runs."""
    if max_cost is None or isinstance(max_cost, SpendBudget):
        return max_cost
    return SpendBudget(max_cost)


class _NoCache:
    """The cache of a plan when there is no cache file yet: nothing is judged."""

    def get_many(self, config_hash: str, keys: Iterable[Key]) -> dict[Key, Judgment]:
        return {}


@contextmanager
def plan_store(cache: Path | str | None) -> Iterator[CachedJudgments]:
    """The cache, opened read-only (a plan writes nothing), or an empty one when there is no file."""
    path = cache_path(cache)
    if not path.exists():
        yield _NoCache()
        return
    with CacheFile(path, read_only=True) as store:
        yield store


def estimate_judging(backend: Backend, pairs: Sequence[Pair], store: CachedJudgments, orders: Sequence[str],
                     repeats: int = 1, exclude: set[tuple[str, str]] | frozenset = frozenset(),
                     sizers: dict[str, RequestSizer] | None = None) -> list[CostEstimate]:
    """What judging `pairs` would send, per judge (a panel: per member, as each is judged and cached on
    its own); `exclude`: (item, order) already on their way (open batch jobs). `sizers`: the judges'
    sizers, kept across calls so that the chunks of one plan are sized alike (by default, new ones)."""
    sizers = {} if sizers is None else sizers
    if isinstance(backend, PanelBackend):
        return [e for member in backend.members for e in estimate_judging(member, pairs, store, orders, repeats,
                                                                          exclude, sizers)]
    wanted, cached = split_cached(store, backend.config.config_hash, pairs, orders, repeats)
    todo = [view_of(pair, key[1]) for key, pair in wanted.items()
            if key not in cached and (key[0], key[1]) not in exclude]
    not_sent = sum(1 for pair in pairs if pair.missing_answers) * len(orders) * repeats
    sizer = sizer_for(backend, sizers)
    sizer.learn((view_of(wanted[key], key[1]), j) for key, j in cached.items())
    return [sizer.estimate(todo, cached=len(wanted) - len(todo), not_sent=not_sent)]


def combined(estimates: Iterable[CostEstimate]) -> list[CostEstimate]:
    """One estimate per judge, its parts (chunks of a stream, several calls) added, in first-seen order."""
    by_name: dict[str, CostEstimate] = {}
    for estimate in estimates:
        by_name[estimate.name] = by_name[estimate.name].add(estimate) if estimate.name in by_name else estimate
    return list(by_name.values())


def plan_answers(config: ModelConfig, questions: dict[str, str], cache: Path | str | None) -> RunPlan:
    """What `respond` would send: one request per question the cache holds no answer to, its tokens
    from the conversation as sent, the answer's from the cache's mean or a typical answer."""
    path = cache_path(cache)
    cached: dict[str, dict] = {}
    if path.exists():
        with ResponseStore(path) as store:
            cached = store.get_many(config.config_hash, questions)
    todo = [question for key, question in questions.items() if key not in cached]
    used = [answer["output_tokens"] for answer in cached.values() if answer.get("output_tokens")]
    estimate = CostEstimate(
        name=config.name, backend="openai", model=config.model, requests=len(todo), cached=len(cached),
        input_tokens=sum(request_input_tokens({"messages": config.messages(question)}) for question in todo),
        output_tokens_per_request=statistics.fmean(used) if used else TYPICAL_ANSWER_TOKENS,
        output_basis=f"mean of {len(used)} cached" if used else "typical",
        price_input_per_mtok=config.price_input_per_mtok, price_output_per_mtok=config.price_output_per_mtok,
        requests_per_minute=config.requests_per_minute, concurrency=config.concurrency,
        key_variable=config.api_key_env or None, key_set=key_is_set(config.api_key_env))
    return RunPlan("respond", [estimate])
