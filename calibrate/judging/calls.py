"""The call layer for remote judges: retries with backoff and jitter, Retry-After, and a request-rate limit.

The SDK's own retries are switched off so that every retry is ours: counted, bounded, and visible in
the judgment record. Transient failures (429, 408, 409, 5xx, timeouts, dropped connections) are
retried; a bad request for one item becomes that item's typed failure; a bad key or unknown model
stops the run, because every further call would fail the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import openai

from calibrate.errors import CalibrateError

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}
MAX_RETRY_AFTER_S = 300.0


class CallFailed(Exception):
    """A call that still failed after its retries; carries the reason for the typed failure."""

    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**retry)]."""
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** retry))


def retry_after_seconds(error: BaseException) -> float | None:
    """The server's requested wait, from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if headers.get("retry-after-ms"):
        try:
            return min(float(headers["retry-after-ms"]) / 1000.0, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in RETRYABLE_STATUS or error.status_code >= 500
    return False


def describe(error: BaseException) -> str:
    """One line for a failure record; never includes request headers (where the key travels)."""
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {str(error.message)[:200]}"
    return f"{type(error).__name__}: {str(error)[:200]}"


class RateLimiter:
    """Spaces request starts at least 60/requests_per_minute seconds apart (None: no limit)."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


async def call_with_retries(
    send: Callable[[], Awaitable[T]], policy: RetryPolicy, limiter: RateLimiter, where: str
) -> tuple[T, int]:
    """Run `send` until it succeeds; returns (result, attempts). Raises CallFailed or CalibrateError."""
    for attempt in range(policy.max_retries + 1):
        await limiter.wait()
        try:
            return await send(), attempt + 1
        except openai.APIStatusError as error:
            if error.status_code in FATAL_STATUS:
                raise CalibrateError(f"{where}: {describe(error)} (check the API key, base_url and model)") from None
            if not is_retryable(error) or attempt == policy.max_retries:
                raise CallFailed(describe(error), attempt + 1) from None
            wait = retry_after_seconds(error)
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            if attempt == policy.max_retries:
                raise CallFailed(describe(error), attempt + 1) from None
            wait = None
        await asyncio.sleep(wait if wait is not None else policy.backoff(attempt))
    raise AssertionError("unreachable")
