"""What judging would cost before anything is sent: the tokens of each request as it would be rendered,
the judge's typical reply, prices at list and batch rates, and the time at the judge's limits.

Input tokens are counted from the request body the backend would send (prompt, answers as cut, the
output schema or tool), at `CHARS_PER_TOKEN` characters per token; when the cache holds this judge's
own judgments, their reported usage corrects that ratio (the provider's tokenizer, parse retries
included). Output tokens are the judge's `typical_output_tokens`, or the mean of its cached replies.
A `SpendBudget` is what `--max-cost` becomes: the runner asks it before every request it sends.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from calibrate.errors import CalibrateError
from calibrate.judging.base import Backend, Judgment, PairView

# English text runs at about 4 characters per token with OpenAI's tokenizers and 3.5 with Claude's;
# the lower figure overestimates a little, which is the safe side for a cost estimate.
CHARS_PER_TOKEN = 3.5
# Per message, the chat format's own tokens (role markers).
MESSAGE_OVERHEAD_TOKENS = 4
# Anthropic adds a system prompt of its own to a request with a forced tool call (its docs: 313 tokens).
FORCED_TOOL_OVERHEAD_TOKENS = 313
# A judgment in the published schema (two positions, key points, flags, score) is 250-400 tokens.
TYPICAL_OUTPUT_TOKENS = 350
# Without latencies in the cache: a judge reply of a few hundred tokens takes seconds.
ASSUMED_LATENCY_S = 10.0
# Where a latency comes from, as a plan says it: nothing measured, or the cache's judgments of the judge.
ASSUMED_BASIS = f"assumed: calibrate's default of {ASSUMED_LATENCY_S:g}s, none measured in the cache"
CACHED_BASIS = "judgments of this judge in the cache"
# At most this many cached judgments are re-rendered to measure the tokenizer's ratio.
RATIO_SAMPLE = 500
# How often a request held back by the spend cap looks again while others are in flight.
ADMIT_POLL_S = 0.02
# What the body carries besides the conversation that the model reads as input.
SCHEMA_KEYS = ("tools", "tool_choice", "response_format", "output_config")


def key_is_set(variable: str | None) -> bool:
    """Whether an API key variable is set (no variable: no key needed)."""
    return not variable or bool(os.environ.get(variable, "").strip())


def request_chars(body: dict[str, Any]) -> int:
    """The characters of the conversation in one chat request body (OpenAI chat completions or
    Anthropic Messages): system prompt and messages."""
    chars = sum(len(_content_text(m.get("content"))) for m in body.get("messages", []))
    return chars + len(_content_text(body.get("system")))


def request_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of one chat request body: the conversation and the output schema or tool at
    CHARS_PER_TOKEN, plus the format's own tokens."""
    chars = request_chars(body) + sum(len(orjson.dumps(body[key])) for key in SCHEMA_KEYS if key in body)
    overhead = MESSAGE_OVERHEAD_TOKENS * (len(body.get("messages", [])) + ("system" in body))
    if body.get("tool_choice", {}).get("type") == "tool":
        overhead += FORCED_TOOL_OVERHEAD_TOKENS
    return math.ceil(chars / CHARS_PER_TOKEN) + overhead


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text of its content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


@dataclass
class CostEstimate:
    """What one judge (or responding model) would be sent: requests (cached ones excluded), tokens,
    cost at list and batch price, and time."""

    name: str
    backend: str
    model: str | None
    requests: int = 0
    cached: int = 0
    not_sent: int = 0  # pairs with a placeholder answer: never sent to a judge
    input_tokens: int = 0
    output_tokens_per_request: float = TYPICAL_OUTPUT_TOKENS
    output_basis: str = "typical"
    input_ratio: float = 1.0  # measured input tokens / estimated, from the cache (1: not measured)
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    batch_price_factor: float | None = None  # None: no batch API for this judge
    requests_per_minute: float | None = None
    concurrency: int = 1
    latency_s: float = ASSUMED_LATENCY_S
    latency_basis: str = ASSUMED_BASIS
    key_variable: str | None = None
    key_set: bool = True
    offline: bool = False

    @property
    def output_tokens(self) -> int:
        return round(self.requests * self.output_tokens_per_request)

    @property
    def cost_usd(self) -> float:
        """At list price."""
        return (self.input_tokens * self.price_input_per_mtok + self.output_tokens * self.price_output_per_mtok) / 1e6

    @property
    def batch_cost_usd(self) -> float | None:
        """At the batch price, for a judge with a batch API."""
        return None if self.batch_price_factor is None else self.cost_usd * self.batch_price_factor

    def _bounds(self) -> tuple[float, float]:
        """Seconds at the rate limit (0: none), and at `concurrency` requests in flight of `latency_s` each."""
        by_rate = self.requests * 60.0 / self.requests_per_minute if self.requests_per_minute else 0.0
        return by_rate, self.requests * self.latency_s / max(self.concurrency, 1)

    @property
    def time_s(self) -> float:
        """The slower of the two bounds (an offline judge: its measured latency, 0 when none was measured)."""
        return max(self._bounds())

    @property
    def time_basis(self) -> str:
        by_rate, in_flight = self._bounds()
        if self.requests_per_minute and by_rate >= in_flight:
            return f"{self.requests_per_minute:g} requests/min"
        return f"{self.concurrency} in flight, {self.latency_s:.1f}s each ({self.latency_basis})"

    def add(self, other: CostEstimate) -> CostEstimate:
        """This estimate and another of the same judge (e.g. the next chunk of a stream) together."""
        return replace(self, requests=self.requests + other.requests, cached=self.cached + other.cached,
                       not_sent=self.not_sent + other.not_sent, input_tokens=self.input_tokens + other.input_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "model": self.model, "requests": self.requests,
                "cached": self.cached, "not_sent": self.not_sent, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "output_basis": self.output_basis,
                "cost_usd": self.cost_usd, "batch_cost_usd": self.batch_cost_usd, "time_s": self.time_s,
                "time_basis": self.time_basis, "key_variable": self.key_variable, "key_set": self.key_set}


class RequestSizer:
    """Input tokens and cost of each request one judge would send, corrected by the cache's usage.
    Make one per judge for a whole run or plan (`sizer_for`) and offer it each chunk's cached
    judgments (`learn`): it measures from the first that has any, so every chunk is sized alike and
    the cached requests are rendered once, not once per chunk."""

    def __init__(self, backend: Backend, stored: Iterable[tuple[PairView, Judgment]] = ()):
        self.backend = backend
        self.config = backend.config
        self.remote = backend.SENDS_REQUESTS
        self.ratio, self.output_tokens, self.output_basis = 1.0, self._typical_output(), "typical"
        # an offline judge's time is not assumed: it is 0 until its judgments' latencies are seen
        self.latency_s, self.latency_basis = (ASSUMED_LATENCY_S, ASSUMED_BASIS) if self.remote else (0.0, "offline")
        self.measured = False
        self.learn(stored)

    def _typical_output(self) -> float:
        return float(self.config.settings.get("typical_output_tokens", TYPICAL_OUTPUT_TOKENS))

    def learn(self, stored: Iterable[tuple[PairView, Judgment]]) -> None:
        """The tokenizer ratio, the mean output and the median latency of this judge's cached
        judgments, from the first `stored` that holds any (later calls change nothing and read nothing)."""
        if self.measured:
            return
        stored = list(stored)
        if stored:
            self.measure([(view, j.input_tokens, j.output_tokens) for view, j in stored],
                         [j.latency_s for _, j in stored if j.latency_s], CACHED_BASIS)

    def measure(self, usage: Sequence[tuple[PairView, int, int]], latencies: Sequence[float], source: str) -> None:
        """Take the tokenizer ratio and mean output from `usage` (each request's view, its reported input
        and output tokens) and the latency from the median of `latencies`, where there are any; `source`
        says where they come from (the cache's judgments, or a probe's). Overrides what was learned, and
        nothing is learned after it."""
        self.measured = True
        used = [(view, tokens_in, tokens_out) for view, tokens_in, tokens_out in usage if tokens_in > 0][:RATIO_SAMPLE]
        if used and self.remote:
            estimated = sum(self.rendered_tokens(view) for view, _, _ in used)
            self.ratio = sum(tokens_in for _, tokens_in, _ in used) / max(estimated, 1)
            self.output_tokens = statistics.fmean(tokens_out for _, _, tokens_out in used)
            self.output_basis = f"mean of {len(used)} {source}"
        if latencies:
            self.latency_s, self.latency_basis = statistics.median(latencies), f"median of {len(latencies)} {source}"

    def request(self, view: PairView) -> tuple[dict[str, Any], int] | None:
        """The request body for `view` and the answer characters cut, as the backend would send them
        (None for an offline judge: nothing is sent)."""
        return self.backend.build_request(view) if self.remote else None

    def rendered_tokens(self, view: PairView) -> int:
        """Input tokens of the request for `view` as rendered (0 for an offline judge: nothing is sent)."""
        request = self.request(view)
        return request_input_tokens(request[0]) if request else 0

    def input_tokens(self, view: PairView) -> int:
        return round(self.rendered_tokens(view) * self.ratio)

    def cost_usd(self, body: dict[str, Any]) -> float:
        """The expected list-price cost of sending `body` (from `request`)."""
        if not (self.config.price_input_per_mtok or self.config.price_output_per_mtok):
            return 0.0
        return self.config.cost_usd(round(request_input_tokens(body) * self.ratio), self.output_tokens)

    def estimate(self, views: Iterable[PairView], cached: int = 0, not_sent: int = 0) -> CostEstimate:
        """The estimate for sending a request for each of `views`."""
        views = list(views)
        settings = self.config.settings
        key_variable = settings.get("api_key_env") or None
        batch = self.backend.BATCH_API is not None
        return CostEstimate(
            name=self.config.name, backend=self.config.backend, model=settings.get("model"), requests=len(views),
            cached=cached, not_sent=not_sent, input_tokens=sum(self.input_tokens(view) for view in views),
            output_tokens_per_request=self.output_tokens if self.remote else 0.0,
            output_basis=self.output_basis, input_ratio=self.ratio,
            price_input_per_mtok=self.config.price_input_per_mtok,
            price_output_per_mtok=self.config.price_output_per_mtok,
            batch_price_factor=settings.get("batch_price_factor") if batch else None,
            requests_per_minute=settings.get("requests_per_minute"), concurrency=self.config.concurrency,
            latency_s=self.latency_s, latency_basis=self.latency_basis, key_variable=key_variable,
            key_set=key_is_set(key_variable),
            offline=not self.remote)


def sizer_for(backend: Backend, sizers: dict[str, RequestSizer]) -> RequestSizer:
    """This judge's sizer in `sizers` (one per judge, kept for a whole run or plan), made on first use."""
    if (sizer := sizers.get(backend.config.config_hash)) is None:
        sizer = sizers[backend.config.config_hash] = RequestSizer(backend)
    return sizer


@dataclass
class SpendBudget:
    """`max_cost`: the most a run may spend at list price. Before each request the runner asks `admit`
    with the request's expected cost, which is held until the reply's real cost replaces it (`settle`).
    A request that would take spent + held past the cap waits while other requests are in flight (their
    real cost may leave room); when none are, the budget stops: no request is sent after that, and the
    run ends once those in flight are stored (what is left stays pending in the cache)."""

    cap_usd: float
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    stopped: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.cap_usd, bool) or not isinstance(self.cap_usd, (int, float)) or not self.cap_usd >= 0:
            raise CalibrateError(f"max_cost must be a number of USD >= 0, got {self.cap_usd!r}", ("max_cost",))

    async def admit(self, cost_usd: float) -> bool:
        """Whether a request of this expected cost may be sent (waiting for requests in flight if need be)."""
        while not self.stopped:
            if self.spent_usd + self.reserved_usd + cost_usd <= self.cap_usd:
                self.reserved_usd += cost_usd
                return True
            if self.reserved_usd <= 0:
                self.stopped = True
                break
            await asyncio.sleep(ADMIT_POLL_S)
        return False

    def settle(self, reserved_usd: float, spent_usd: float) -> None:
        """A request came back: its reservation becomes what it really cost."""
        self.reserved_usd = max(self.reserved_usd - reserved_usd, 0.0)
        self.spent_usd += spent_usd

    def stopped_error(self, sender: str, left: int) -> CalibrateError:
        """The line a stopped run ends with; `sender`: whose requests were held back ("judge 'gpt'")."""
        return CalibrateError(
            f"max_cost: stopped before the spend would pass the cap of ${self.cap_usd:g}: ${self.spent_usd:.4f} "
            f"spent this run; {left} requests of {sender} were not sent and stay pending "
            f"(run again without max_cost, or with a higher one, to judge only what is left)", ("max_cost",))
