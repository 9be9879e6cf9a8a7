"""The call layer for remote judges: retries with backoff and jitter, pacing at the provider's announced
rate limits (and Retry-After, and a configured request rate), a circuit breaker, typed failures.

Transports raise three kinds of error, whatever HTTP library is underneath: `StatusError` (the server
answered with an error status, or a redirect, which is never followed), `ConnectionFailure` (timeout,
refused or dropped connection, cut body) and `ReplyTooLarge` (a body past `max_reply_bytes`, decoded).
Each carries its `FailureKind` (base.py), and the kind alone decides what happens: transient ones (429,
408, 409, 5xx, timeouts, dropped connections; a reply too large, once) are retried here, so every retry
is ours: counted, bounded, and visible in the judgment record. A bad request for one item becomes that
item's typed failure; a bad key, unknown model or an endpoint that redirects stops the run, because
every further call would fail the same way. The message is only what a person reads.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from calibrate.errors import CalibrateError
from calibrate.judging.base import FailureKind, status_kind
from calibrate.judging.estimate import CHARS_PER_TOKEN

MAX_RETRY_AFTER_S = 300.0


# Credentials must never leave the process through an error text: a server may echo them in an error
# body. Scrubbed: the API keys this process has read (see `remember_secret`) and anything shaped like a
# credential (a bearer token, an x-api-key value, an sk-... key).
CREDENTIAL_SHAPES = re.compile(r"(?i)(bearer\s+)[^\s\"',;}]+|(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+|"
                               r"\bsk-[A-Za-z0-9_\-]{6,}")
REDACTED = "[redacted]"
_secrets: set[str] = set()


def remember_secret(value: str) -> str:
    """Note an API key this process uses, so that no error text can carry it; returns it."""
    if len(value) >= 4:
        _secrets.add(value)
    return value


def scrub(text: str) -> str:
    """`text` with every known API key and anything shaped like a credential replaced by [redacted]."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return CREDENTIAL_SHAPES.sub(lambda m: (m.group(1) or m.group(2) or "") + REDACTED, text)


class StatusError(Exception):
    """The server answered with an HTTP error status (its kind: `status_kind`). `detail` is the
    server's own words (its error body's message, uncut), for callers that read what a refusal says.
    A redirect (3xx) is one too, never followed: its message names the target."""

    def __init__(self, status: int, headers: Mapping[str, str], message: str, detail: str | None = None):
        kind = status_kind(status)
        if kind is FailureKind.REDIRECTED:
            message = redirect_message(headers)
        message = scrub(message)
        super().__init__(f"HTTP {status}: {message[:300]}")
        self.status = status
        self.kind = kind
        self.headers = headers
        self.detail = message if detail is None else scrub(detail)


def redirect_message(headers: Mapping[str, str]) -> str:
    """What a redirect says, for a person: where it points; it is not followed (a key or a prompt sent
    there, and its reply stored as a judgment, would be another server's)."""
    target = headers.get("location") or headers.get("Location")
    where = f"redirected to {target[:200]}" if target else "a redirect without a target"
    return f"{where}; not followed (set base_url to the endpoint itself)"


class ReplyTooLarge(Exception):
    """The server answered with a body past the limit (decoded: a gzip bomb counts as what it inflates
    to); reading stopped there."""

    kind = FailureKind.REPLY_TOO_LARGE

    def __init__(self, limit: int):
        super().__init__(f"the reply is larger than {limit:,} bytes (max_reply_bytes); not read further")


class ConnectionFailure(Exception):
    """No usable answer: timeout, refused or dropped connection, or a body cut short (`kind`: TIMEOUT or
    CONNECTION). `slow_reply`: the server took the request but did not answer in time; a slow server is
    not a gone one, so the circuit breaker does not count it (a connection that could not even be
    opened, timed out or not, it counts)."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.CONNECTION, slow_reply: bool = False):
        super().__init__(scrub(message))
        self.kind = kind
        self.slow_reply = slow_reply


@contextmanager
def sdk_failures(sdk: ModuleType) -> Iterator[None]:
    """Errors of the `openai` or `anthropic` SDK (both name them alike) as the call layer's, so that
    whatever carried a request, its failures are retried and typed the same way."""
    try:
        yield
    except sdk.APIStatusError as error:
        raise StatusError(error.status_code, error.response.headers, str(error.message),
                          error_message(error.body)) from None
    except sdk.APITimeoutError as error:
        if type(error.__cause__).__name__ == "ConnectTimeout":  # httpx's: no connection was opened
            raise ConnectionFailure("timed out connecting to the server", FailureKind.TIMEOUT) from None
        raise ConnectionFailure("timed out waiting for the server", FailureKind.TIMEOUT, slow_reply=True) from None
    except sdk.APIConnectionError as error:
        if isinstance(error.__cause__, (ReplyTooLarge, ConnectionFailure)):  # from reading a bounded body
            raise error.__cause__ from None
        raise ConnectionFailure(f"connection failed: {error}") from None


def error_message(body: object) -> str | None:
    """The message in an API error body: `{"error": {"message": ...}}` (OpenAI, Anthropic), the inner
    error object the SDKs keep, or a bare `message` / `detail`; None when there is none."""
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error")
    if isinstance(inner, str):
        return inner
    if isinstance(inner, Mapping):
        body = inner
    message = body.get("message", body.get("detail"))
    return message if isinstance(message, str) else None


class CallFailed(Exception):
    """A call that still failed after its retries; carries the kind and the reason for the typed
    failure and, when the server answered, its status and its own words (`detail`)."""

    def __init__(self, kind: FailureKind, reason: str, attempts: int, status: int | None = None,
                 detail: str | None = None):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.attempts = attempts
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**retry)]."""
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** retry))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return min(max(float(milliseconds) / 1000.0, 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return min(max(moment.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


# --------------------------------------------------------------------------- pacing at the provider's limits

# The limits providers announce on every reply, as (limit name, header pattern with {} for limit /
# remaining / reset). OpenAI: x-ratelimit-limit-requests etc., reset a duration ("20ms", "1.5s", "6m0s").
# Anthropic: anthropic-ratelimit-requests-limit etc., reset an RFC 3339 time. Both are per-minute limits
# on buckets refilled continuously; "tokens" counts input and output together.
LIMIT_HEADERS = (
    ("requests", "x-ratelimit-{}-requests"), ("tokens", "x-ratelimit-{}-tokens"),
    ("requests", "anthropic-ratelimit-requests-{}"), ("input tokens", "anthropic-ratelimit-input-tokens-{}"),
    ("output tokens", "anthropic-ratelimit-output-tokens-{}"),
)
DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
ESTIMATE_DECAY = 0.95  # weight of the past in the token estimates: they follow the run's recent replies
BINDING_SHOWN_S = 2.0  # a limit that held a start back this recently is shown as binding
FIRST_WAVE = 8  # requests that may start before the first reply says whether the server announces limits
# The circuit breaker: this many connection failures in a row, none answered, over at least this long,
# mean the endpoint is gone; retrying every remaining item would only cost time.
BREAKER_FAILURES = 5
BREAKER_S = 10.0


def reset_seconds(value: str) -> float | None:
    """Seconds until a limit resets: a duration ("20ms", "1.5s", "6m0s", "1h2m"), plain seconds, or an
    RFC 3339 time; None when it is none of these."""
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = DURATION_PART.findall(value)
    if parts and "".join(number + unit for number, unit in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(number) * scale[unit] for number, unit in parts)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def announced_limits(headers: Mapping[str, str]) -> dict[str, tuple[float, float, float | None]]:
    """Limit name -> (limit per minute, remaining, seconds until full) from a reply's headers."""
    limits = {}
    for name, pattern in LIMIT_HEADERS:
        limit, remaining = headers.get(pattern.format("limit")), headers.get(pattern.format("remaining"))
        if limit is None or remaining is None:
            continue
        try:
            per_minute, left = float(limit), float(remaining)
        except ValueError:
            continue
        reset = headers.get(pattern.format("reset"))
        if per_minute > 0 and left >= 0:
            limits[name] = (per_minute, left, reset_seconds(reset) if reset else None)
    return limits


@dataclass(frozen=True)
class Cost:
    """What a request will weigh against token limits: its prompt's characters, and the most it may answer."""
    chars: int
    max_output: int


class TokenEstimate:
    """Tokens a request will use: input from its characters at the ratio replies report (CHARS_PER_TOKEN
    until one does), output as recent replies' output (max_tokens until a reply reports usage), both
    following the run as it goes."""

    def __init__(self) -> None:
        self.input_tokens = self.chars = self.output_tokens = self.replies = 0.0

    def observe(self, chars: int, input_tokens: int, output_tokens: int) -> None:
        if chars > 0 and input_tokens > 0:
            self.input_tokens = ESTIMATE_DECAY * self.input_tokens + input_tokens
            self.chars = ESTIMATE_DECAY * self.chars + chars
        if output_tokens > 0:
            self.output_tokens = ESTIMATE_DECAY * self.output_tokens + output_tokens
            self.replies = ESTIMATE_DECAY * self.replies + 1

    def tokens_per_char(self) -> float:
        return self.input_tokens / self.chars if self.chars else 1 / CHARS_PER_TOKEN

    def estimate(self, cost: Cost) -> tuple[float, float]:
        output = self.output_tokens / self.replies if self.replies else float(cost.max_output)
        return cost.chars * self.tokens_per_char(), output


@dataclass
class Bucket:
    """What the pacer believes of one announced limit: `capacity` units, refilled at `rate` per second."""
    rate: float
    capacity: float
    level: float
    at: float  # monotonic time the level was known

    def level_at(self, now: float) -> float:
        return min(self.capacity, self.level + self.rate * (now - self.at))

    def spend(self, units: float, now: float) -> None:
        self.level, self.at = self.level_at(now) - units, now

    def wait(self, units: float, now: float) -> float:
        """Seconds until a start of `units` leaves half the bucket (or all of a bucket too small for that)
        in reserve: the remaining budget is spent evenly at the refill rate, with room for misjudgment."""
        need = min(self.capacity, units + self.capacity / 2)
        return max(0.0, (need - self.level_at(now)) / self.rate)


@dataclass(frozen=True)
class Ticket:
    """A granted start: when, and the units spent on each limit up to and including it."""
    start: float
    spent: dict[str, float]


@dataclass
class PacingStats:
    """What pacing did in a run, for the progress bar and the run summary."""
    rate_limited: int = 0  # replies with status 429
    waited_s: float = 0.0  # wall-clock time request starts were held back by a limit
    binding: str = ""  # the limit that last held a start back
    binding_at: float = 0.0

    def binding_now(self) -> str:
        """The limit holding starts back at the moment ("" when none has lately)."""
        return self.binding if time.monotonic() - self.binding_at < BINDING_SHOWN_S else ""


class Pacer:
    """Spaces request starts by the limits the server announces in its replies' headers, by a
    `retry-after` on a 429 (every start waits, not only the request that met it) and by a configured
    `requests_per_minute` (a cap from above); concurrency stays the cap on requests in flight.

    Until the first reply the pacer does not know whether the server announces limits, so only
    `FIRST_WAVE` requests start before it (not a whole pool of workers into a limit it cannot yet
    see); a server that announces none is then not paced at all. Each announced limit is a bucket
    refilled at its per-minute rate; the pacer follows its level from the last reply (the remaining
    budget, less what was started since, plus the refill), starts a request when that leaves half the
    bucket in reserve, and so spends the budget evenly at the refill rate. Token limits are charged with
    `TokenEstimate`, calibrated on the usage replies report.

    It also holds the circuit breaker: connection failures in a row over `BREAKER_S` seconds, with no
    reply in between, stop the run. The asyncio primitives belong to one event loop: `release_loop`
    drops them when a run ends, the state (what is known of the limits, the stats) stays."""

    def __init__(self, requests_per_minute: float | None = None, stats: PacingStats | None = None,
                 breaker_s: float = BREAKER_S):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.stats = stats if stats is not None else PacingStats()
        self.tokens = TokenEstimate()
        self.buckets: dict[str, Bucket] = {}
        self.spent: dict[str, float] = {"requests": 0.0, "tokens": 0.0, "input tokens": 0.0, "output tokens": 0.0}
        self.pause_until = self.next_slot = 0.0
        self.heard, self.blind = False, 0  # blind: requests started before any reply, still out
        self.breaker_s = breaker_s
        self.failures, self.failing_since, self.broken = 0, 0.0, ""
        self._lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None

    def release_loop(self) -> None:
        self._lock = self._changed = None
        self.blind = 0

    def _units(self, cost: Cost | None) -> dict[str, float]:
        inputs, outputs = self.tokens.estimate(cost) if cost else (0.0, 0.0)
        return {"requests": 1.0, "tokens": inputs + outputs, "input tokens": inputs, "output tokens": outputs}

    def _wait(self, now: float, units: dict[str, float]) -> tuple[float, str]:
        waits = [(self.pause_until - now, "retry-after"), (self.next_slot - now, "requests_per_minute")]
        waits += [(bucket.wait(units[name], now), name) for name, bucket in self.buckets.items() if units[name]]
        return max(waits)

    async def acquire(self, cost: Cost | None = None) -> Ticket:
        """Wait until a request may start; returns its ticket for `observe`."""
        if self._lock is None or self._changed is None:
            self._lock, self._changed = asyncio.Lock(), asyncio.Event()
        changed = self._changed
        async with self._lock:
            while not self.heard and self.blind >= FIRST_WAVE:  # the first replies tell whether limits are announced
                changed.clear()
                await changed.wait()
            held = 0.0
            while True:
                if self.broken:
                    raise CalibrateError(self.broken)
                now = time.monotonic()
                wait, binding = self._wait(now, self._units(cost))
                if wait <= 0:
                    break
                held = held or now
                self.stats.binding, self.stats.binding_at = binding, now
                changed.clear()
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
            if held:
                self.stats.waited_s += now - held
            self.blind += not self.heard
            if self.interval:
                self.next_slot = max(now, self.next_slot) + self.interval
            for name, units in self._units(cost).items():
                self.spent[name] += units
                if name in self.buckets:
                    self.buckets[name].spend(units, now)
            return Ticket(now, dict(self.spent))

    def observe(self, ticket: Ticket, headers: Mapping[str, str], status: int = 200) -> None:
        """A reply arrived for `ticket`: follow the limits it announces; a 429's retry-after pauses every start."""
        now = time.monotonic()
        self.heard, self.blind, self.failures = True, 0, 0
        for name, (per_minute, remaining, reset) in announced_limits(headers).items():
            rate = per_minute / 60.0
            capacity = max(remaining + rate * reset if reset is not None else per_minute, 1.0)
            started_since = self.spent[name] - ticket.spent[name]
            level = min(capacity, remaining + rate * (now - ticket.start)) - started_since
            self.buckets[name] = Bucket(rate, capacity, level, now)
        if status == 429:
            self.stats.rate_limited += 1
            wait = retry_after_seconds(headers)
            if wait:
                self.pause_until = max(self.pause_until, now + wait)
        if self._changed is not None:
            self._changed.set()

    def connection_failed(self, message: str) -> None:
        """No reply for a request. Raises CalibrateError (and stops every later start) when the
        endpoint has failed `BREAKER_FAILURES` times in a row over `breaker_s` seconds."""
        now = time.monotonic()
        self.failing_since = self.failing_since if self.failures else now
        self.failures += 1
        self.blind = max(self.blind - 1, 0)
        if self._changed is not None:
            self._changed.set()
        if self.failures >= BREAKER_FAILURES and now - self.failing_since >= self.breaker_s:
            self.broken = (f"{message}; stopped after {self.failures} connection failures in a row over "
                           f"{now - self.failing_since:.0f} s with no reply (judgments received are kept; run "
                           "again to judge the rest)")
            raise CalibrateError(self.broken)

    def calibrate(self, cost: Cost, input_tokens: int, output_tokens: int) -> None:
        """The usage a reply reports, for the token estimates."""
        self.tokens.observe(cost.chars, input_tokens, output_tokens)


@dataclass(frozen=True)
class Reply:
    """What a send returns when its headers are known: the value, and the headers for the pacer."""
    value: Any
    headers: Mapping[str, str]


def retries(kind: FailureKind, policy: RetryPolicy) -> int:
    """How many times a transient failure of this kind is retried: the policy's, or fewer if the kind says so."""
    return policy.max_retries if kind.max_retries is None else min(kind.max_retries, policy.max_retries)


async def call_with_retries(
    send: Callable[[], Awaitable[Any]], policy: RetryPolicy, pacer: Pacer, where: str, cost: Cost | None = None
) -> tuple[Any, int]:
    """Run `send` until it succeeds; returns (result, attempts). Each attempt starts when `pacer` lets it
    and tells the pacer what came back (a `Reply` from `send` carries its headers). The failure's kind
    decides: a transient one is tried again, up to the policy's retries. Raises CallFailed, or
    CalibrateError when no attempt can succeed (bad key, wrong endpoint, the endpoint gone)."""
    for attempt in range(policy.max_retries + 1):
        ticket = await pacer.acquire(cost)
        try:
            result = await send()
        except StatusError as error:
            pacer.observe(ticket, error.headers, error.status)
            if error.kind.stops_run:
                check = "base_url" if error.kind is FailureKind.REDIRECTED else "the API key, base_url and model"
                raise CalibrateError(scrub(f"{where}: {error} (check {check})")) from None
            if not error.kind.transient or attempt >= retries(error.kind, policy):
                raise CallFailed(error.kind, str(error), attempt + 1, error.status, error.detail) from None
            wait = retry_after_seconds(error.headers)
            if error.kind is FailureKind.RATE_LIMITED and wait:
                wait = 0.0  # the pacer holds every start back for it
        except ConnectionFailure as error:
            if not error.slow_reply:  # a slow server is not a gone one
                pacer.connection_failed(f"{where}: {error}")
            if not error.kind.transient or attempt >= retries(error.kind, policy):
                raise CallFailed(error.kind, str(error), attempt + 1) from None
            wait = None
        except ReplyTooLarge as error:  # the server answered: not a connection failure
            pacer.observe(ticket, {})
            if attempt >= retries(error.kind, policy):
                raise CallFailed(error.kind, str(error), attempt + 1) from None
            wait = None
        else:
            if isinstance(result, Reply):
                pacer.observe(ticket, result.headers)
                return result.value, attempt + 1
            pacer.observe(ticket, {})
            return result, attempt + 1
        await asyncio.sleep(wait if wait is not None else policy.backoff(attempt))
    raise AssertionError("unreachable")
