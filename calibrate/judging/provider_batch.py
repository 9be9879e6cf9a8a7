"""Provider batch jobs: judge through OpenAI's Batch API or Anthropic's Message Batches at half price.

`submit` sends every (pair, order) the cache does not hold and no open batch already carries, in as
many batches as the provider's size limits need; `status` polls them; `collect` downloads the results,
validates each exactly as a live reply is validated, and stores it in the judgment cache, where `fit`
and `score` then find it without a single synchronous call.

This module is the provider side: each provider's batch API driven through its official SDK (create,
progress, results, and finding a batch whose id was never written down). The ledger of batches lives
in the cache file (store/batches.py); submit, status, collect and adopt compose both
(workflows/batch.py).
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any, TypeVar

from calibrate.data.sources import json_object_line
from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import AnthropicBackend, read_message
from calibrate.judging.base import ORDERS, Backend, FailureKind, Verdict, call_failure
from calibrate.judging.batch_files import line_limit, text_of, too_large_result, verdict_of_result
from calibrate.judging.calls import CallFailed, Pacer, call_with_retries, sdk_failures
from calibrate.judging.remote import RemoteBackend
from calibrate.judging.replies import bounded_lines

T = TypeVar("T")
REQUEST_OVERHEAD_BYTES = 200  # a request's custom id and envelope, beside its body, towards the size limit
# The kind of an errored Message Batches request, by Anthropic's error type (any other: SERVER_ERROR).
ANTHROPIC_ERROR_KINDS = {
    "invalid_request_error": FailureKind.BAD_REQUEST, "request_too_large": FailureKind.BAD_REQUEST,
    "authentication_error": FailureKind.AUTH, "permission_error": FailureKind.AUTH,
    "not_found_error": FailureKind.NOT_FOUND, "rate_limit_error": FailureKind.RATE_LIMITED,
    "timeout_error": FailureKind.TIMEOUT, "overloaded_error": FailureKind.SERVER_ERROR,
    "api_error": FailureKind.SERVER_ERROR,
}


def custom_id(item_key: str, order: str, cut: int) -> str:
    """Within Anthropic's limit for custom ids (64 of [A-Za-z0-9_-]); the batch row holds the judge."""
    return f"{item_key}-{order}-{cut}"


def parse_custom_id(value: object) -> tuple[str, str, int]:
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 3 or parts[1] not in ORDERS or not parts[2].isdigit():
        raise ValueError(f"custom_id {value!r} was not written by `calibrate batch submit`")
    return parts[0], parts[1], int(parts[2])


class BatchCallFailed(CalibrateError):
    """A batch API call that failed; `refused` when the provider answered it with an error (so it did
    not carry it out), not when no answer came."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


@dataclass
class Progress:
    """What the provider says of one batch."""

    status: str  # the provider's own word
    ended: bool  # results can be collected
    counts: dict[str, int]
    requests: int  # in the batch


class Provider(ABC):
    """One provider's batch API, driven through its official SDK; every call goes through the call layer."""

    name: str  # also the name of its SDK's module
    max_requests: int
    max_bytes: int

    def __init__(self, backend: RemoteBackend):
        self.backend = backend
        self.sdk: ModuleType = importlib.import_module(self.name)  # both SDKs name their errors alike
        self.client: Any = backend.sdk_client()
        # result files are large by nature: read line by line, each line bounded (`read_result_lines`)
        self.downloads: Any = backend.sdk_client(download=True)
        self.limiter = Pacer()

    async def call(self, send: Callable[[], Awaitable[T]], what: str, idempotent: bool = True) -> T:
        """One API call with the judges' retries (429, 529, 5xx, timeouts; retry-after honoured). A call
        that is not idempotent (creating a batch) is not repeated after a timeout or a dropped
        connection: the provider may have carried it out, and a second one would be paid for twice."""
        where = f"{self.name} batch API ({what})"
        try:
            result, _ = await call_with_retries(partial(self._mapped, send, where, idempotent), self.backend.policy,
                                                self.limiter, where)
        except CallFailed as failure:
            raise BatchCallFailed(f"{where}: {failure.reason}", refused=failure.status is not None) from None
        return result

    async def _mapped(self, send: Callable[[], Awaitable[T]], where: str, idempotent: bool) -> T:
        with sdk_failures(self.sdk):
            try:
                return await send()
            except self.sdk.APIConnectionError as error:  # timeouts too
                if idempotent:
                    raise
                raise BatchCallFailed(f"{where}: no answer ({error}); whether the provider accepted the batch is "
                                      "unknown: the next `calibrate batch` command asks it", refused=False) from None

    @abstractmethod
    async def create(self, requests: list[tuple[str, dict[str, Any]]], local_id: str) -> str:
        """Submit (custom_id, body) requests as one batch; returns the provider's batch id."""

    @abstractmethod
    async def progress(self, batch_id: str) -> Progress:
        """Where the batch stands."""

    @abstractmethod
    def results(self, batch_id: str) -> AsyncIterator[tuple[object, Verdict]]:
        """(custom_id as the provider wrote it, checked by `parse_custom_id`; verdict) for every request the
        provider reports on."""

    @abstractmethod
    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        """The provider's ids of the batches that may be the one created under `local_id` whose id was
        never written down (none, one, or several when the provider cannot tell them apart)."""

    async def download(self, open_stream: Callable[[], Any], what: str) -> list[tuple[bytes, bool]]:
        """A result file's lines (`bounded_lines`: a line past the judge's `max_reply_bytes` and its envelope
        comes cut, marked not whole), downloaded whole before any is read, so a retried download repeats none."""
        limit = line_limit(self.backend.config)

        async def lines() -> list[tuple[bytes, bool]]:
            async with open_stream() as response:
                return [line async for line in bounded_lines(response.iter_bytes(), limit) if line[0].strip()]
        return await self.call(lines, what)

    async def aclose(self) -> None:
        await self.client.close()
        await self.downloads.close()


class OpenAIBatches(Provider):
    """OpenAI's Batch API: a JSONL file of requests is uploaded, then a batch made from it."""

    name = "openai"
    max_requests = 50_000
    max_bytes = 190 * 2**20  # the limit is 200 MB per file

    async def create(self, requests: list[tuple[str, dict[str, Any]]], local_id: str) -> str:
        lines = "".join(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body},
                                   ensure_ascii=False) + "\n" for cid, body in requests).encode("utf-8")
        uploaded = await self.call(lambda: self.client.files.create(file=(f"{local_id}.jsonl", lines),
                                                                    purpose="batch"), "upload")
        batch = await self.call(lambda: self.client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"calibrate_batch": local_id}), "create", idempotent=False)
        return batch.id

    async def progress(self, batch_id: str) -> Progress:
        batch = await self.call(lambda: self.client.batches.retrieve(batch_id), "retrieve")
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        problems = [error.message for error in (batch.errors.data or [])] if batch.errors else []
        status = f"{batch.status}: {'; '.join(map(str, problems))[:300]}" if problems else batch.status
        return Progress(status, batch.status in ("completed", "expired", "cancelled", "failed"), counts,
                        counts.get("total", 0))

    async def results(self, batch_id: str) -> AsyncIterator[tuple[object, Verdict]]:
        batch = await self.call(lambda: self.client.batches.retrieve(batch_id), "retrieve")
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            lines = await self.download(partial(self.downloads.files.with_streaming_response.content, file_id),
                                        f"download {file_id}")
            for number, (line, whole) in enumerate(lines, start=1):
                where = f"{self.name} batch {batch_id}, file {file_id}, line {number}"
                if not whole:
                    yield too_large_result(line, where)
                    continue
                record = json_object_line(text_of(line, where), where)
                yield record.get("custom_id"), verdict_of_result(record)

    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        page = await self.call(lambda: self.client.batches.list(limit=100), "list")
        return [batch.id for batch in page.data if (batch.metadata or {}).get("calibrate_batch") == local_id]


class AnthropicBatches(Provider):
    """Anthropic's Message Batches: the requests are sent in the create call itself."""

    name = "anthropic"
    max_requests = 100_000
    max_bytes = 240 * 2**20  # the limit is 256 MB per batch
    backend: AnthropicBackend  # provider_for picks this class for an anthropic judge only

    async def create(self, requests: list[tuple[str, dict[str, Any]]], local_id: str) -> str:
        batch = await self.call(lambda: self.client.messages.batches.create(
            requests=[{"custom_id": cid, "params": body} for cid, body in requests],
            extra_headers=self.backend.version_headers()), "create", idempotent=False)
        return batch.id

    async def progress(self, batch_id: str) -> Progress:
        batch = await self.call(lambda: self.client.messages.batches.retrieve(batch_id), "retrieve")
        counts = batch.request_counts.model_dump()
        return Progress(batch.processing_status, batch.processing_status == "ended", counts, sum(counts.values()))

    async def results(self, batch_id: str) -> AsyncIterator[tuple[object, Verdict]]:
        lines = await self.download(partial(self.downloads.messages.batches.with_streaming_response.results, batch_id),
                                    "results")
        for number, (line, whole) in enumerate(lines, start=1):
            where = f"{self.name} batch {batch_id} results, line {number}"
            if not whole:
                yield too_large_result(line, where)
                continue
            entry = json_object_line(text_of(line, where), where)
            result: dict[str, Any] = entry["result"] if isinstance(entry.get("result"), dict) else {}
            outcome = result.get("type")
            if outcome == "succeeded":
                yield entry.get("custom_id"), read_message(result.get("message"))
            elif outcome == "errored":
                outer = result.get("error")
                error: dict[str, Any] = outer.get("error") or {} if isinstance(outer, dict) else {}
                error_type = str(error.get("type"))
                kind = ANTHROPIC_ERROR_KINDS.get(error_type, FailureKind.SERVER_ERROR)
                yield entry.get("custom_id"), call_failure(
                    kind, f"batch result: {error_type}: {str(error.get('message'))[:200]}", json.dumps(result)[:2000])
            else:  # expired or canceled: never answered, never charged
                yield entry.get("custom_id"), call_failure(FailureKind.UNANSWERED, f"batch result: {outcome}")

    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        """Message batches carry no metadata: those created since `submitted_at` with as many requests,
        that no other record holds."""
        page = await self.call(lambda: self.client.messages.batches.list(limit=100), "list")
        return [b.id for b in page.data if b.id not in known and b.created_at.timestamp() >= submitted_at - 5
                and sum(b.request_counts.model_dump().values()) == requests]


PROVIDERS: dict[str, type[Provider]] = {"openai": OpenAIBatches, "anthropic": AnthropicBatches}


def provider_for(backend: RemoteBackend) -> Provider:
    """The batch API of the backend's provider (`Backend.BATCH_API`)."""
    if backend.BATCH_API in PROVIDERS:
        return PROVIDERS[backend.BATCH_API](backend)
    raise no_batch_api(backend)


def no_batch_api(backend: Backend) -> CalibrateError:
    """The error for a judge whose backend has no provider batch API."""
    return CalibrateError(f"judge '{backend.config.name}': provider batch jobs need an 'openai' or 'anthropic' "
                          f"backend, not '{backend.config.backend}'")
