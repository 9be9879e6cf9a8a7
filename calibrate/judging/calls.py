"""The call layer for remote judges: retries with backoff and jitter, Retry-After, and a request-rate limit.

Transports raise two kinds of error, whatever HTTP library is underneath: `StatusError` (the server
answered with an error status) and `ConnectionFailure` (timeout, refused or dropped connection, cut
body). Transient ones (429, 408, 409, 5xx, timeouts, dropped connections) are retried here, so every
retry is ours: counted, bounded, and visible in the judgment record. A bad request for one item
becomes that item's typed failure; a bad key or unknown model stops the run, because every further
call would fail the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Awaitable, Callable, Iterator, Mapping, TypeVar

from calibrate.errors import CalibrateError

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}
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
    """The server answered with an HTTP error status. `detail` is the server's own words (its error
    body's message, uncut), for callers that read what a refusal says."""

    def __init__(self, status: int, headers: Mapping[str, str], message: str, detail: str | None = None):
        message = scrub(message)
        super().__init__(f"HTTP {status}: {message[:200]}")
        self.status = status
        self.headers = headers
        self.detail = message if detail is None else scrub(detail)


class ConnectionFailure(Exception):
    """No usable answer: timeout, refused or dropped connection, or a body cut short."""

    def __init__(self, message: str):
        super().__init__(scrub(message))


@contextmanager
def sdk_failures(sdk: ModuleType) -> Iterator[None]:
    """Errors of the `openai` or `anthropic` SDK (both name them alike) as the call layer's, so that
    whatever carried a request, its failures are retried and typed the same way."""
    try:
        yield
    except sdk.APIStatusError as error:
        raise StatusError(error.status_code, error.response.headers, str(error.message),
                          error_message(error.body)) from None
    except sdk.APITimeoutError:
        raise ConnectionFailure("timed out waiting for the server") from None
    except sdk.APIConnectionError as error:
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
    """A call that still failed after its retries; carries the reason for the typed failure and, when
    the server answered, its status and its own words (`detail`)."""

    def __init__(self, reason: str, attempts: int, status: int | None = None, detail: str | None = None):
        super().__init__(reason)
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
        except StatusError as error:
            if error.status in FATAL_STATUS:
                raise CalibrateError(scrub(f"{where}: {error} (check the API key, base_url and model)")) from None
            retryable = error.status in RETRYABLE_STATUS or error.status >= 500
            if not retryable or attempt == policy.max_retries:
                raise CallFailed(str(error), attempt + 1, error.status, error.detail) from None
            wait = retry_after_seconds(error.headers)
        except ConnectionFailure as error:
            if attempt == policy.max_retries:
                raise CallFailed(str(error), attempt + 1) from None
            wait = None
        await asyncio.sleep(wait if wait is not None else policy.backoff(attempt))
    raise AssertionError("unreachable")
