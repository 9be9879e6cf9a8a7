"""Provider batch jobs: judge through OpenAI's Batch API or Anthropic's Message Batches at half price.

`submit` sends every (pair, order) the cache does not hold and no open batch already carries, in as
many batches as the provider's size limits need; `status` polls them; `collect` downloads the results,
validates each exactly as a live reply is validated, and stores it in the judgment cache, where `fit`
and `score` then find it without a single synchronous call.

Batch ids live in the cache file itself (tables `provider_batches` and `provider_batch_items`), so a
crash anywhere between submit and collect loses nothing: the next `status` or `collect` carries on.
A batch is recorded before it is sent, under a local id the request carries (OpenAI: batch metadata);
if calibrate dies after the provider accepted it but before its id was written down, the next command
finds it at the provider and adopts it instead of paying for it twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any, Awaitable, Callable, TypeVar

import orjson

from calibrate.batch import json_object_line, verdict_of_result
from calibrate.data import Pair
from calibrate.errors import CalibrateError
from calibrate.judging.anthropic_backend import AnthropicBackend, read_message
from calibrate.judging.base import ORDERS, Judgment, Verdict, view_of
from calibrate.judging.calls import CallFailed, RateLimiter, call_with_retries, sdk_failures
from calibrate.judging.openai_backend import OpenAIBackend
from calibrate.judging.remote import RemoteBackend
from calibrate.judging.runner import run_sync
from calibrate.store import JudgmentStore, connect

T = TypeVar("T")
log = logging.getLogger("calibrate")
OPEN, COLLECTED, SUBMITTING = "open", "collected", "submitting"
BATCH_TABLES = """
CREATE TABLE IF NOT EXISTS provider_batches (
    local_id TEXT PRIMARY KEY, batch_id TEXT, provider TEXT NOT NULL, judge_name TEXT NOT NULL,
    config_hash TEXT NOT NULL, state TEXT NOT NULL, provider_status TEXT, requests INTEGER NOT NULL,
    counts TEXT, submitted_at REAL NOT NULL, collected_at REAL);
CREATE TABLE IF NOT EXISTS provider_batch_items (
    local_id TEXT NOT NULL, config_hash TEXT NOT NULL, item_key TEXT NOT NULL, pair_order TEXT NOT NULL,
    truncated_chars INTEGER NOT NULL, PRIMARY KEY (local_id, item_key, pair_order));
CREATE INDEX IF NOT EXISTS provider_batch_items_key ON provider_batch_items (config_hash, item_key, pair_order);
"""
STORE_EVERY = 1000  # results committed together while collecting
REQUEST_OVERHEAD_BYTES = 200  # a request's custom id and envelope, beside its body, towards the size limit


def custom_id(item_key: str, order: str, cut: int) -> str:
    """Within Anthropic's limit for custom ids (64 of [A-Za-z0-9_-]); the batch row holds the judge."""
    return f"{item_key}-{order}-{cut}"


def parse_custom_id(value: str) -> tuple[str, str, int]:
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

    name: str
    max_requests: int
    max_bytes: int

    def __init__(self, backend: RemoteBackend, sdk: ModuleType, client: Any):
        self.backend = backend
        self.sdk = sdk  # both SDKs name their errors alike
        self.client = client
        self.limiter = RateLimiter(None)

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
    def results(self, batch_id: str) -> AsyncIterator[tuple[str, Verdict]]:
        """(custom_id, verdict) for every request the provider reports on."""

    @abstractmethod
    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        """The provider's ids of the batches that may be the one created under `local_id` whose id was
        never written down (none, one, or several when the provider cannot tell them apart)."""

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIBatches(Provider):
    """OpenAI's Batch API: a JSONL file of requests is uploaded, then a batch made from it."""

    name = "openai"
    max_requests = 50_000
    max_bytes = 190 * 2**20  # the limit is 200 MB per file

    def __init__(self, backend: OpenAIBackend):
        import openai

        super().__init__(backend, openai, backend.sdk_client())

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

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, Verdict]]:
        batch = await self.call(lambda: self.client.batches.retrieve(batch_id), "retrieve")
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.call(partial(self.client.files.content, file_id), f"download {file_id}")
            for number, line in enumerate(content.text.splitlines(), start=1):
                if line.strip():
                    record = json_object_line(line, f"{self.name} batch {batch_id}, file {file_id}, line {number}")
                    yield record.get("custom_id"), verdict_of_result(record)

    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        page = await self.call(lambda: self.client.batches.list(limit=100), "list")
        return [batch.id for batch in page.data if (batch.metadata or {}).get("calibrate_batch") == local_id]


class AnthropicBatches(Provider):
    """Anthropic's Message Batches: the requests are sent in the create call itself."""

    name = "anthropic"
    max_requests = 100_000
    max_bytes = 240 * 2**20  # the limit is 256 MB per batch

    def __init__(self, backend: AnthropicBackend):
        import anthropic

        super().__init__(backend, anthropic, backend.sdk_client())

    async def create(self, requests: list[tuple[str, dict[str, Any]]], local_id: str) -> str:
        batch = await self.call(lambda: self.client.messages.batches.create(
            requests=[{"custom_id": cid, "params": body} for cid, body in requests],
            extra_headers=self.backend.version_headers()), "create", idempotent=False)
        return batch.id

    async def progress(self, batch_id: str) -> Progress:
        batch = await self.call(lambda: self.client.messages.batches.retrieve(batch_id), "retrieve")
        counts = batch.request_counts.model_dump()
        return Progress(batch.processing_status, batch.processing_status == "ended", counts, sum(counts.values()))

    async def results(self, batch_id: str) -> AsyncIterator[tuple[str, Verdict]]:
        entries = await self.call(lambda: self.client.messages.batches.results(batch_id), "results")
        async for entry in entries:
            result = entry.result
            if result.type == "succeeded":
                yield entry.custom_id, read_message(result.message.model_dump(mode="json"))
            elif result.type == "errored":
                error = result.error.error
                yield entry.custom_id, Verdict(None, json.dumps(result.model_dump(mode="json"))[:2000], "api_error",
                                               f"batch result: {error.type}: {str(error.message)[:200]}")
            else:  # expired or canceled: never answered, never charged
                yield entry.custom_id, Verdict(None, "", "api_error", f"batch result: {result.type}")

    async def find(self, local_id: str, submitted_at: float, requests: int, known: set[str]) -> list[str]:
        """Message batches carry no metadata: those created since `submitted_at` with as many requests,
        that no other record holds."""
        page = await self.call(lambda: self.client.messages.batches.list(limit=100), "list")
        return [b.id for b in page.data if b.id not in known and b.created_at.timestamp() >= submitted_at - 5
                and sum(b.request_counts.model_dump().values()) == requests]


def provider_for(backend: RemoteBackend) -> Provider:
    if isinstance(backend, AnthropicBackend):
        return AnthropicBatches(backend)
    if isinstance(backend, OpenAIBackend):
        return OpenAIBatches(backend)
    raise CalibrateError(f"judge '{backend.config.name}': provider batch jobs need an 'openai' or 'anthropic' "
                         f"backend, not '{backend.config.backend}'")


class BatchLedger:
    """The batches of one cache file: what was sent in each, and where each stands."""

    def __init__(self, store: JudgmentStore):
        self.db = connect(store.path, "judgment cache")
        with self.db:
            self.db.executescript(BATCH_TABLES)

    def close(self) -> None:
        self.db.close()

    def pending_keys(self, config_hash: str) -> set[tuple[str, str]]:
        """(item, order) pairs that an uncollected batch of this judge is carrying."""
        rows = self.db.execute(
            "SELECT i.item_key, i.pair_order FROM provider_batch_items i JOIN provider_batches b "
            "ON b.local_id = i.local_id WHERE i.config_hash = ? AND b.state != ?", (config_hash, COLLECTED))
        return set(rows)

    def record(self, local_id: str, provider: str, config, items: list[tuple[str, str, int]]) -> None:
        """Write a batch down before it is sent, with every request in it."""
        with self.db:
            self.db.execute("INSERT INTO provider_batches (local_id, provider, judge_name, config_hash, state, "
                            "requests, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (local_id, provider, config.name, config.config_hash, SUBMITTING, len(items), time.time()))
            self.db.executemany("INSERT INTO provider_batch_items VALUES (?, ?, ?, ?, ?)",
                                [(local_id, config.config_hash, *item) for item in items])

    def confirm(self, local_id: str, batch_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET batch_id = ?, state = ? WHERE local_id = ?",
                            (batch_id, OPEN, local_id))

    def forget(self, local_id: str) -> None:
        """A batch the provider never accepted: its requests are free to be sent again."""
        with self.db:
            self.db.execute("DELETE FROM provider_batch_items WHERE local_id = ?", (local_id,))
            self.db.execute("DELETE FROM provider_batches WHERE local_id = ?", (local_id,))

    def update(self, local_id: str, progress: Progress) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET provider_status = ?, counts = ? WHERE local_id = ?",
                            (progress.status, json.dumps(progress.counts), local_id))

    def mark_collected(self, local_id: str) -> None:
        with self.db:
            self.db.execute("UPDATE provider_batches SET state = ?, collected_at = ? WHERE local_id = ?",
                            (COLLECTED, time.time(), local_id))

    def items(self, local_id: str) -> dict[tuple[str, str], int]:
        rows = self.db.execute("SELECT item_key, pair_order, truncated_chars FROM provider_batch_items "
                               "WHERE local_id = ?", (local_id,))
        return {(item, order): cut for item, order, cut in rows}

    def batches(self, config_hash: str | None = None, include_collected: bool = True) -> list[dict[str, Any]]:
        query = "SELECT * FROM provider_batches WHERE 1=1"
        params: list[Any] = []
        if config_hash is not None:
            query += " AND config_hash = ?"
            params.append(config_hash)
        if not include_collected:
            query += " AND state != ?"
            params.append(COLLECTED)
        cursor = self.db.execute(query + " ORDER BY submitted_at", params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor]


def open_batch_requests(store: JudgmentStore, config_hash: str) -> set[tuple[str, str]]:
    """(item, order) of every request an uncollected batch of this judge config carries."""
    ledger = BatchLedger(store)
    try:
        return ledger.pending_keys(config_hash)
    finally:
        ledger.close()


def warn_if_in_open_batches(store: JudgmentStore, config, pairs: Sequence[Pair], orders: Sequence[str],
                            pending: set[tuple[str, str]]) -> None:
    """Judging now what an open batch already carries (`pending`, from open_batch_requests) pays for
    it twice: say so, with the way out. Without open batches this costs nothing."""
    carried = {(p.content_key, o) for p in pairs for o in orders} & pending if pending else set()
    if not carried:
        return
    cached = store.get_many(config.config_hash, [(item, order, 0) for item, order in carried])
    if len(carried) > len(cached):
        log.warning("%d of these requests are in open batch jobs of judge '%s'; judging them now pays twice. "
                    "`calibrate batch collect --judge %s --wait` loads the batch results instead",
                    len(carried) - len(cached), config.name, config.name)


async def _adopt_unconfirmed(provider: Provider, ledger: BatchLedger, config_hash: str) -> None:
    """Batches written down but not confirmed (calibrate stopped mid-submit): adopt the provider's
    batch if it exists, else forget the record so that its requests can be sent again. When several
    batches could be it, nothing is guessed: the record stays, and holds its requests back from
    being sent again, until the user says which (see the warning)."""
    rows = ledger.batches(config_hash, include_collected=True)
    known = {row["batch_id"] for row in rows if row["batch_id"]}
    for row in rows:
        if row["state"] != SUBMITTING:
            continue
        found = await provider.find(row["local_id"], row["submitted_at"], row["requests"], known)
        if len(found) == 1:
            ledger.confirm(row["local_id"], found[0])
            known.add(found[0])
        elif not found:
            ledger.forget(row["local_id"])
        else:
            sent = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["submitted_at"]))
            log.warning("a batch of %d requests was sent at %s without its id being recorded, and %d %s batches "
                        "could be it: %s. Its requests are held back; `calibrate batch adopt BATCH_ID --judge %s` "
                        "records the right one", row["requests"], sent, len(found), provider.name, ", ".join(found),
                        row["judge_name"])


def submit(backend: RemoteBackend, pair_chunks: Iterable[Sequence[Pair]], orders: Sequence[str],
           store: JudgmentStore) -> dict[str, Any]:
    """Send every (pair, order) not cached and not in an open batch; returns what was sent."""
    return run_sync(_submit(backend, pair_chunks, orders, store))


async def _submit(backend: RemoteBackend, pair_chunks: Iterable[Sequence[Pair]], orders: Sequence[str],
                  store: JudgmentStore) -> dict[str, Any]:
    config = backend.config
    provider = provider_for(backend)
    ledger = BatchLedger(store)
    summary = {"provider": provider.name, "batches": [], "requests": 0, "already_cached": 0,
               "already_submitted": 0, "items": 0}
    try:
        await _adopt_unconfirmed(provider, ledger, config.config_hash)
        pending = ledger.pending_keys(config.config_hash)
        part: list[tuple[str, dict[str, Any], tuple[str, str, int]]] = []
        size = 0
        seen: set[tuple[str, str]] = set()
        for chunk in pair_chunks:
            wanted = {(pair.content_key, order): pair for pair in chunk for order in orders}
            wanted = {key: pair for key, pair in wanted.items() if key not in seen}
            seen.update(wanted)
            cached = store.get_many(config.config_hash, [(item, order, 0) for item, order in wanted])
            summary["items"] += len(wanted)
            for (item, order), pair in wanted.items():
                if (item, order, 0) in cached:
                    summary["already_cached"] += 1
                    continue
                if (item, order) in pending:
                    summary["already_submitted"] += 1
                    continue
                body, cut = backend.build_request(view_of(pair, order))
                length = len(orjson.dumps(body)) + REQUEST_OVERHEAD_BYTES
                if part and (len(part) == provider.max_requests or size + length > provider.max_bytes):
                    await _send_batch(provider, ledger, config, part, summary)
                    part, size = [], 0
                part.append((custom_id(item, order, cut), body, (item, order, cut)))
                size += length
        if part:
            await _send_batch(provider, ledger, config, part, summary)
    finally:
        ledger.close()
        await provider.aclose()
    return summary


async def _send_batch(provider: Provider, ledger: BatchLedger, config,
                      part: list[tuple[str, dict[str, Any], tuple[str, str, int]]], summary: dict[str, Any]) -> None:
    """Write the batch down, send it, and record the provider's id for it."""
    local_id = uuid.uuid4().hex
    ledger.record(local_id, provider.name, config, [item for _, _, item in part])
    try:
        batch_id = await provider.create([(cid, body) for cid, body, _ in part], local_id)
    except BatchCallFailed as failure:
        if failure.refused:  # the provider said no: nothing was accepted, nothing is owed
            ledger.forget(local_id)
        raise
    ledger.confirm(local_id, batch_id)
    summary["batches"].append({"batch_id": batch_id, "requests": len(part)})
    summary["requests"] += len(part)


def adopt(backend: RemoteBackend, store: JudgmentStore, batch_id: str) -> dict[str, Any]:
    """Record `batch_id` as the batch a submit sent without recording its id (when the provider
    could not say which one it was); returns the record."""
    return run_sync(_adopt(backend, store, batch_id))


async def _adopt(backend: RemoteBackend, store: JudgmentStore, batch_id: str) -> dict[str, Any]:
    provider = provider_for(backend)
    ledger = BatchLedger(store)
    try:
        waiting = [row for row in ledger.batches(backend.config.config_hash) if row["state"] == SUBMITTING]
        if not waiting:
            raise CalibrateError(f"judge '{backend.config.name}': no batch of this judge is waiting for its id")
        if any(row["batch_id"] == batch_id for row in ledger.batches()):
            raise CalibrateError(f"batch {batch_id} is already recorded")
        progress = await provider.progress(batch_id)
        matching = [row for row in waiting if row["requests"] == progress.requests]
        if not matching:
            raise CalibrateError(f"batch {batch_id} holds {progress.requests} requests; the batches waiting for "
                                 f"their id hold {', '.join(str(row['requests']) for row in waiting)}")
        ledger.confirm(matching[0]["local_id"], batch_id)
        ledger.update(matching[0]["local_id"], progress)
        return next(_described(row) for row in ledger.batches() if row["batch_id"] == batch_id)
    finally:
        ledger.close()
        await provider.aclose()


def status(backend: RemoteBackend, store: JudgmentStore) -> list[dict[str, Any]]:
    """Every batch of this judge in the cache, with the provider's latest word on the open ones."""
    return run_sync(_status(backend, store))


async def _status(backend: RemoteBackend, store: JudgmentStore) -> list[dict[str, Any]]:
    provider = provider_for(backend)
    ledger = BatchLedger(store)
    try:
        await _adopt_unconfirmed(provider, ledger, backend.config.config_hash)
        for row in ledger.batches(backend.config.config_hash, include_collected=False):
            if row["batch_id"]:  # one still waiting for its id (see _adopt_unconfirmed) has nothing to poll
                ledger.update(row["local_id"], await provider.progress(row["batch_id"]))
        return [_described(row) for row in ledger.batches(backend.config.config_hash)]
    finally:
        ledger.close()
        await provider.aclose()


def _described(row: dict[str, Any]) -> dict[str, Any]:
    return {"batch_id": row["batch_id"], "provider": row["provider"], "judge": row["judge_name"],
            "state": row["state"], "provider_status": row["provider_status"], "requests": row["requests"],
            "counts": json.loads(row["counts"]) if row["counts"] else {},
            "submitted_at": row["submitted_at"], "collected_at": row["collected_at"]}


def collect(backend: RemoteBackend, store: JudgmentStore, wait: bool = False, poll_s: float = 30.0,
            on_wait: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Load the results of every ended batch of this judge into the cache (waiting for open ones
    when `wait`); returns counts, the tokens used and their cost at batch and at list price."""
    return run_sync(_collect(backend, store, wait, poll_s, on_wait))


async def _collect(backend: RemoteBackend, store: JudgmentStore, wait: bool, poll_s: float,
                   on_wait: Callable[[list[dict[str, Any]]], None] | None) -> dict[str, Any]:
    config = backend.config
    provider = provider_for(backend)
    ledger = BatchLedger(store)
    summary: dict[str, Any] = {"collected_batches": [], "still_open": [], "imported": 0, "already_cached": 0,
                               "failed": {}, "without_result": 0, "input_tokens": 0, "output_tokens": 0}
    try:
        await _adopt_unconfirmed(provider, ledger, config.config_hash)
        while True:
            for row in ledger.batches(config.config_hash, include_collected=False):
                if not row["batch_id"]:
                    continue
                progress = await provider.progress(row["batch_id"])
                ledger.update(row["local_id"], progress)
                if progress.ended:
                    await _load_results(provider, ledger, store, config, row, summary)
                    summary["collected_batches"].append(row["batch_id"])
            waiting = [_described(row) for row in ledger.batches(config.config_hash, include_collected=False)
                       if row["batch_id"]]
            if not waiting or not wait:
                summary["still_open"] = waiting
                break
            if on_wait:
                on_wait(waiting)
            await asyncio.sleep(poll_s)
    finally:
        ledger.close()
        await provider.aclose()
    list_price = config.cost_usd(summary["input_tokens"], summary["output_tokens"])
    summary["cost_usd"] = list_price * config.settings["batch_price_factor"]
    summary["cost_usd_at_list_price"] = list_price
    summary["saved_usd"] = list_price - summary["cost_usd"]
    return summary


async def _load_results(provider: Provider, ledger: BatchLedger, store: JudgmentStore, config,
                        row: dict[str, Any], summary: dict[str, Any]) -> None:
    """Validate and store one ended batch's results; results of requests it never carried are refused."""
    items = ledger.items(row["local_id"])
    cached = store.get_many(config.config_hash, [(item, order, 0) for item, order in items])
    where = f"{provider.name} batch {row['batch_id']}"
    pending: list[Judgment] = []
    reported = 0
    async for cid, verdict in provider.results(row["batch_id"]):
        reported += 1
        try:
            item, order, cut = parse_custom_id(cid)
        except ValueError as problem:
            raise CalibrateError(f"{where}: {problem}") from None
        if (item, order) not in items:
            raise CalibrateError(f"{where}: result {cid!r} is for a request this batch did not carry")
        if (item, order, 0) in cached:
            summary["already_cached"] += 1
            continue
        summary["input_tokens"] += verdict.input_tokens
        summary["output_tokens"] += verdict.output_tokens
        if verdict.parse_status == "ok":
            summary["imported"] += 1
        else:
            summary["failed"][verdict.parse_status] = summary["failed"].get(verdict.parse_status, 0) + 1
        pending.append(Judgment(
            judge_name=config.name, config_hash=config.config_hash, item_key=item, order=order,
            parse_status=verdict.parse_status, failure_reason=verdict.failure_reason, raw_output=verdict.raw_output,
            latency_s=None, input_tokens=verdict.input_tokens, output_tokens=verdict.output_tokens, attempts=1,
            truncated_chars=cut, batch_id=row["batch_id"], fields=verdict.fields or {}))
        if len(pending) >= STORE_EVERY:
            store.put_many(pending)
            pending = []
    store.put_many(pending)
    summary["without_result"] += len(items) - reported  # a failed or cancelled batch: sent again by the next submit
    ledger.mark_collected(row["local_id"])
