"""Batch judging at batch prices, in two forms:

- provider jobs (OpenAI's Batch API, Anthropic's Message Batches): `submit` sends every (pair, order)
  the cache does not hold and no open batch already carries, in as many batches as the provider's
  size limits need; `status` polls them; `collect` downloads the results, validates each exactly as a
  live reply is validated, and stores it in the judgment cache, where `fit` and `score` then find it
  without a single synchronous call. Every batch is written down in the cache file's ledger before it
  is sent, under a local id the request carries (OpenAI: batch metadata); if calibrate dies after the
  provider accepted it but before its id was written down, the next command finds it at the provider
  and adopts it instead of paying for it twice.
- request files (`export`, `import`) for vLLM's offline run_batch or a manual Batch API upload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from calibrate.data.calibration import FIT_SETS
from calibrate.data.pairs import Pair
from calibrate.data.sources import json_object_line, stream_source
from calibrate.errors import CalibrateError
from calibrate.judging.base import Judgment, view_of
from calibrate.judging.batch_files import (
    batch_backend,
    batch_judgment,
    line_limit,
    request_line,
    result_lines,
    text_of,
    too_large_result,
    verdict_of_result,
)
from calibrate.judging.batch_files import parse_custom_id as parse_file_custom_id
from calibrate.judging.config import JudgeConfig
from calibrate.judging.estimate import RequestSizer
from calibrate.judging.provider_batch import (
    REQUEST_OVERHEAD_BYTES,
    BatchCallFailed,
    Provider,
    custom_id,
    no_batch_api,
    parse_custom_id,
    provider_for,
)
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.remote import RemoteBackend
from calibrate.judging.runner import run_sync, split_cached
from calibrate.records import Record
from calibrate.store.batches import SUBMITTING, BatchLedger
from calibrate.store.judgments import JudgmentStore
from calibrate.store.sqlite import cache_path
from calibrate.workflows.common import first_pairs, load_sets, orders_of, response_sources
from calibrate.workflows.plan import RunPlan, combined, estimate_judging, plan_store

log = logging.getLogger("calibrate")
STORE_EVERY = 1000  # results committed together while collecting


# --------------------------------------------------------------------------- what the commands return


@dataclass(frozen=True)
class BatchSent(Record):
    batch_id: str
    requests: int


@dataclass(frozen=True)
class SubmitSummary(Record):
    """What `batch_submit` sent: the batches (provider ids), and the (pair, order) items not sent, by why."""

    provider: str
    batches: list[BatchSent]
    requests: int
    already_cached: int
    already_submitted: int
    missing_answer: int
    items: int


@dataclass(frozen=True)
class BatchInfo(Record):
    """One provider batch as the cache's ledger records it (`batch_id` None while its id is unknown)."""

    batch_id: str | None
    provider: str
    judge: str
    state: str
    provider_status: str | None
    requests: int
    counts: dict[str, int]
    submitted_at: float
    collected_at: float | None


@dataclass(frozen=True)
class CollectSummary(Record):
    """What `batch_collect` loaded: batches collected and still open, judgments stored, failed by reason,
    already cached, requests without a result, tokens, and their cost at batch and at list price."""

    collected_batches: list[str]
    still_open: list[BatchInfo]
    imported: int
    already_cached: int
    failed: dict[str, int]
    without_result: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cost_usd_at_list_price: float
    saved_usd: float


@dataclass(frozen=True)
class ImportSummary(Record):
    """What `batch_import` loaded from a results file: judgments stored, failed by reason, already cached."""

    imported: int
    already_cached: int
    failed: dict[str, int]


@dataclass(frozen=True)
class ExportSummary(Record):
    """What `batch_export` wrote: requests, and how many of the items the cache already held."""

    requests: int
    already_cached: int
    items: int


# --------------------------------------------------------------------------- the commands


def _ready_backend(judge: str, new_requests: bool = True) -> RemoteBackend:
    """A judge's backend, its key checked before any provider call; and, when new requests will be
    sent, its model (the results of batches sent before a model retired can still be collected)."""
    backend = make_backend(load_judge_config(judge))
    if not isinstance(backend, RemoteBackend):
        raise no_batch_api(backend)
    if new_requests:
        backend.preflight()
    else:
        backend.api_key()
    return backend


def _pair_chunks(data: str, sets: Sequence[str] | str, responses: Sequence[str] | None, limit: int | None,
                 seed: int) -> Iterable[list[Pair]]:
    """The pairs a submit judges, in chunks: the calibration sets, or the response datasets (every row of
    every source checked, streamed, before the first request)."""
    if not responses:
        return iter([[pair for loaded in load_sets(data, sets, limit, seed).values() for pair in loaded.pairs]])
    if limit is not None and limit < 1:
        raise CalibrateError("limit must be a positive number of pairs per source", ("limit",))
    streams = [stream_source(source, name) for name, source in response_sources(responses).items()]
    for stream in streams:
        stream.validate(limit)
    return (chunk for stream in streams for chunk in first_pairs(stream, limit))


def plan_batch(judge: str, *, data: str = "sample", sets: Sequence[str] | str = FIT_SETS,
               responses: Sequence[str] | None = None, order: str = "forward", limit: int | None = None,
               seed: int = 0, cache: Path | str | None = None) -> RunPlan:
    """What `batch_submit` with these arguments would send, sending nothing and needing no key: requests
    neither cached nor in open batches, their tokens, and their cost at batch price."""
    backend = make_backend(load_judge_config(judge))
    orders = orders_of(order)
    return _submit_plan(backend, _pair_chunks(data, sets, responses, limit, seed), orders, cache)


def batch_submit(judge: str, *, data: str = "sample", sets: Sequence[str] | str = FIT_SETS,
                 responses: Sequence[str] | None = None, order: str = "forward", limit: int | None = None,
                 seed: int = 0, cache: Path | str | None = None) -> SubmitSummary:
    """Submit a provider batch job (OpenAI Batch API or Anthropic Message Batches) for every pair and
    order not yet cached: the calibration sets `fit` would judge, or with `responses` the response
    datasets `score` would judge. `limit`: at most N pairs per calibration set or per response dataset.
    `plan_batch` says what it would send and cost without sending anything."""
    chunks = _pair_chunks(data, sets, responses, limit, seed)  # every row checked before the judge is asked
    backend = _ready_backend(judge)
    orders = orders_of(order)
    with JudgmentStore(cache_path(cache)) as store:
        return submit(backend, chunks, orders, store)


def _submit_plan(backend, pair_chunks: Iterable[Sequence[Pair]], orders: Sequence[str],
                 cache: Path | str | None) -> RunPlan:
    """What `submit` would send: every (pair, order) neither cached nor carried by an open batch."""
    with plan_store(cache) as store:
        on_the_way = (open_batch_requests(store, backend.config.config_hash)
                      if isinstance(store, JudgmentStore) else set())  # no cache file yet: no batch either
        sizers: dict[str, RequestSizer] = {}  # one per judge for the whole plan: every chunk sized alike
        estimates = [estimate for chunk in pair_chunks
                     for estimate in estimate_judging(backend, chunk, store, orders, exclude=on_the_way, sizers=sizers)]
    return RunPlan("batch submit", combined(estimates))


def batch_status(judge: str, *, cache: Path | str | None = None) -> list[BatchInfo]:
    """The judge's provider batches recorded in the cache, the open ones polled."""
    backend = _ready_backend(judge, new_requests=False)
    with JudgmentStore(cache_path(cache)) as store:
        return status(backend, store)


def batch_adopt(judge: str, batch_id: str, *, cache: Path | str | None = None) -> BatchInfo:
    """Record which provider batch a submit sent when the provider could not say which it was."""
    backend = _ready_backend(judge, new_requests=False)
    with JudgmentStore(cache_path(cache)) as store:
        return adopt(backend, store, batch_id)


def batch_collect(judge: str, *, cache: Path | str | None = None, wait: bool = False, poll_s: float = 30.0,
                  on_wait: Callable[[list[BatchInfo]], None] | None = None) -> CollectSummary:
    """Load every ended batch of the judge into the cache, validated; with `wait`, poll until all have ended."""
    backend = _ready_backend(judge, new_requests=False)
    with JudgmentStore(cache_path(cache)) as store:
        return collect(backend, store, wait=wait, poll_s=poll_s, on_wait=on_wait)


def batch_export(judge: str, out_file: Path | str, *, data: str = "sample", sets: Sequence[str] | str = FIT_SETS,
                 order: str = "forward", limit: int | None = None, seed: int = 0,
                 cache: Path | str | None = None) -> ExportSummary:
    """Write an OpenAI Batch API request file for every (pair, order) the cache does not hold yet."""
    config = load_judge_config(judge)
    loaded = load_sets(data, sets, limit, seed)
    pairs = [pair for loaded_set in loaded.values() for pair in loaded_set.pairs]
    with JudgmentStore(cache_path(cache)) as store:
        return export_requests(config, pairs, orders_of(order), store, Path(out_file))


def batch_import(judge: str, results_file: Path | str, *, cache: Path | str | None = None) -> ImportSummary:
    """Load a Batch API (or vLLM run_batch) output file into the judgment cache, validated."""
    config = load_judge_config(judge)
    with JudgmentStore(cache_path(cache)) as store:
        return import_results(config, Path(results_file), store)


# --------------------------------------------------------------------------- request files


def export_requests(config: JudgeConfig, pairs: list[Pair], orders: tuple[str, ...], store: JudgmentStore,
                    out_file: Path) -> ExportSummary:
    """Write one request line per (item, order) not already in the cache; returns counts."""
    backend = batch_backend(config)
    wanted, cached = split_cached(store, config.config_hash, pairs, orders)
    written = 0
    try:
        with out_file.open("w", encoding="utf-8") as handle:
            for (item_key, order, repeat), pair in wanted.items():
                if (item_key, order, repeat) in cached:
                    continue
                body, cut = backend.build_request(view_of(pair, order))
                handle.write(request_line(config.config_hash, item_key, order, body, cut))
                written += 1
    except OSError as error:
        raise CalibrateError(f"cannot write {out_file}: {error.strerror}") from None
    return ExportSummary(requests=written, already_cached=len(cached), items=len(wanted))


def import_results(config: JudgeConfig, results_file: Path, store: JudgmentStore) -> ImportSummary:
    """Validate every result line and store it: successes as cached judgments, the rest as typed failures."""
    records = []
    for number, line, whole in result_lines(results_file, line_limit(config)):  # each line bounded
        where = f"{results_file}, line {number}"
        if whole:
            record = json_object_line(text_of(line, where), where)
            result_id, verdict = record.get("custom_id"), verdict_of_result(record)
        else:
            result_id, verdict = too_large_result(line, where)
        config_hash, item_key, order, cut = parse_file_custom_id(result_id, where)
        if config_hash != config.config_hash:
            raise CalibrateError(f"{where}: result belongs to judge config {config_hash}, not "
                                 f"'{config.name}' ({config.config_hash})")
        records.append((verdict, item_key, order, cut))
    imported = already_cached = 0
    failed: dict[str, int] = {}
    cached = store.get_many(config.config_hash, [(item, order, 0) for _, item, order, _ in records])
    for verdict, item_key, order, cut in records:
        if (item_key, order, 0) in cached:
            already_cached += 1
            continue
        store.put(batch_judgment(config, item_key, order, verdict, cut, f"file:{results_file.name}"))
        if verdict.parse_status == "ok":
            imported += 1
        else:
            failed[verdict.parse_status] = failed.get(verdict.parse_status, 0) + 1
    return ImportSummary(imported=imported, already_cached=already_cached, failed=failed)


# --------------------------------------------------------------------------- provider jobs


def open_batch_requests(store: JudgmentStore, config_hash: str) -> set[tuple[str, str]]:
    """(item, order) of every request an uncollected batch of this judge config carries."""
    ledger = BatchLedger(store.path)
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
                    "Collecting that judge's batches (waiting for them) loads the batch results instead",
                    len(carried) - len(cached), config.name)


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
                        "could be it: %s. Its requests are held back; adopting the right one "
                        "(batch adopt, with its id, for judge '%s') records it", row["requests"], sent, len(found),
                        provider.name, ", ".join(found), row["judge_name"])


def submit(backend: RemoteBackend, pair_chunks: Iterable[Sequence[Pair]], orders: Sequence[str],
           store: JudgmentStore) -> SubmitSummary:
    """Send every (pair, order) not cached and not in an open batch; returns what was sent."""
    return run_sync(_submit(backend, pair_chunks, orders, store))


async def _submit(backend: RemoteBackend, pair_chunks: Iterable[Sequence[Pair]], orders: Sequence[str],
                  store: JudgmentStore) -> SubmitSummary:
    config = backend.config
    provider = provider_for(backend)
    ledger = BatchLedger(store.path)
    sent: list[BatchSent] = []
    counts = dict.fromkeys(("already_cached", "already_submitted", "missing_answer", "items"), 0)
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
            counts["items"] += len(wanted)
            for (item, order), pair in wanted.items():
                if pair.missing_answers:  # a placeholder answer is never sent to a judge
                    counts["missing_answer"] += 1
                    continue
                if (item, order, 0) in cached:
                    counts["already_cached"] += 1
                    continue
                if (item, order) in pending:
                    counts["already_submitted"] += 1
                    continue
                body, cut = backend.build_request(view_of(pair, order))
                length = len(orjson.dumps(body)) + REQUEST_OVERHEAD_BYTES
                if part and (len(part) == provider.max_requests or size + length > provider.max_bytes):
                    sent.append(await _send_batch(provider, ledger, config, part))
                    part, size = [], 0
                part.append((custom_id(item, order, cut), body, (item, order, cut)))
                size += length
        if part:
            sent.append(await _send_batch(provider, ledger, config, part))
    finally:
        ledger.close()
        await provider.aclose()
    return SubmitSummary(provider=provider.name, batches=sent, requests=sum(batch.requests for batch in sent),
                         **counts)


async def _send_batch(provider: Provider, ledger: BatchLedger, config,
                      part: list[tuple[str, dict[str, Any], tuple[str, str, int]]]) -> BatchSent:
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
    return BatchSent(batch_id, len(part))


def adopt(backend: RemoteBackend, store: JudgmentStore, batch_id: str) -> BatchInfo:
    """Record `batch_id` as the batch a submit sent without recording its id (when the provider
    could not say which one it was); returns the record."""
    return run_sync(_adopt(backend, store, batch_id))


async def _adopt(backend: RemoteBackend, store: JudgmentStore, batch_id: str) -> BatchInfo:
    provider = provider_for(backend)
    ledger = BatchLedger(store.path)
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


def status(backend: RemoteBackend, store: JudgmentStore) -> list[BatchInfo]:
    """Every batch of this judge in the cache, with the provider's latest word on the open ones."""
    return run_sync(_status(backend, store))


async def _status(backend: RemoteBackend, store: JudgmentStore) -> list[BatchInfo]:
    provider = provider_for(backend)
    ledger = BatchLedger(store.path)
    try:
        await _adopt_unconfirmed(provider, ledger, backend.config.config_hash)
        for row in ledger.batches(backend.config.config_hash, include_collected=False):
            if row["batch_id"]:  # one still waiting for its id (see _adopt_unconfirmed) has nothing to poll
                ledger.update(row["local_id"], await provider.progress(row["batch_id"]))
        return [_described(row) for row in ledger.batches(backend.config.config_hash)]
    finally:
        ledger.close()
        await provider.aclose()


def _described(row: dict[str, Any]) -> BatchInfo:
    return BatchInfo(batch_id=row["batch_id"], provider=row["provider"], judge=row["judge_name"],
                     state=row["state"], provider_status=row["provider_status"], requests=row["requests"],
                     counts=json.loads(row["counts"]) if row["counts"] else {},
                     submitted_at=row["submitted_at"], collected_at=row["collected_at"])


def collect(backend: RemoteBackend, store: JudgmentStore, wait: bool = False, poll_s: float = 30.0,
            on_wait: Callable[[list[BatchInfo]], None] | None = None) -> CollectSummary:
    """Load the results of every ended batch of this judge into the cache (waiting for open ones
    when `wait`); returns counts, the tokens used and their cost at batch and at list price."""
    return run_sync(_collect(backend, store, wait, poll_s, on_wait))


async def _collect(backend: RemoteBackend, store: JudgmentStore, wait: bool, poll_s: float,
                   on_wait: Callable[[list[BatchInfo]], None] | None) -> CollectSummary:
    config = backend.config
    provider = provider_for(backend)
    ledger = BatchLedger(store.path)
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
    cost = list_price * config.settings["batch_price_factor"]
    return CollectSummary(**summary, cost_usd=cost, cost_usd_at_list_price=list_price, saved_usd=list_price - cost)


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
        pending.append(batch_judgment(config, item, order, verdict, cut, row["batch_id"]))
        if len(pending) >= STORE_EVERY:
            store.put_many(pending)
            pending = []
    store.put_many(pending)
    summary["without_result"] += len(items) - reported  # a failed or cancelled batch: sent again by the next submit
    ledger.mark_collected(row["local_id"])
