"""Asking a responding model (`calibrate respond`): one question per fresh conversation, through the
judges' call layer (bounded concurrency, rate limit, retries honouring Retry-After, typed failures),
with every answer committed to the answer store the moment it arrives.

Answer statuses: `ok` and `truncated` are usable answers (stored as results); `api_error`,
`bad_reply`, `empty` and `content_filter` are failures (logged, never served, asked again next run).
Every failed answer also carries its `FailureKind` (`failure_kind`, the kind's value): for
`api_error`, how the call failed; what code reads, where the reason is what a person reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, Protocol

import orjson

from calibrate.judging.base import API_ERROR, FailureKind, read_usage
from calibrate.judging.calls import CallFailed, Cost, Pacer, RetryPolicy, call_with_retries
from calibrate.judging.estimate import SpendBudget, request_chars, request_input_tokens
from calibrate.judging.models import ModelConfig
from calibrate.judging.progress import ProgressCallback, ProgressCounter
from calibrate.judging.transport import ChatTransport, make_transport

USABLE_STATUSES = ("ok", "truncated")  # answers stored as results; any other status is a failure
# The kind each failed answer status implies (`api_error` says its own: how the call failed).
STATUS_KINDS = {"bad_reply": FailureKind.NOT_A_REPLY, "empty": FailureKind.EMPTY_ANSWER,
                "content_filter": FailureKind.CONTENT_FILTER}
# An answer to the published system prompt ("1-2 paragraphs") is a few hundred tokens.
TYPICAL_ANSWER_TOKENS = 300


class AnswerStore(Protocol):
    """What asking needs of the answer store (calibrate.store.responses.ResponseStore is the one in use)."""

    def get_many(self, config_hash: str, keys: Iterable[str]) -> dict[str, dict]: ...

    def put_many(self, records: list[dict]) -> None: ...


def question_key(question: str) -> str:
    """The cache key of one question within a model config (the config hash covers everything else)."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()[:32]


def answer_kind(record: dict[str, Any]) -> FailureKind | None:
    """A stored answer's failure kind: None for a usable one; a record stored before kinds were
    recorded has none, and gets the one its status implies (`UNRECORDED` for an `api_error`)."""
    if record["status"] in USABLE_STATUSES:
        return None
    if record.get("failure_kind") is not None:
        return FailureKind(record["failure_kind"])
    return FailureKind.UNRECORDED if record["status"] == API_ERROR else STATUS_KINDS[record["status"]]


def read_answer(raw: bytes) -> dict[str, Any]:
    """One chat.completion body → status, content, reasoning, finish_reason, failure_reason,
    failure_kind, tokens."""
    try:
        completion = orjson.loads(raw)
        choice = completion["choices"][0]
        message = choice.get("message") or {}
        tokens, usage_problem = read_usage(completion.get("usage"), "prompt_tokens", "completion_tokens")
        finish = choice.get("finish_reason")
        content = message.get("content")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {"status": "bad_reply", "content": None, "reasoning": None, "finish_reason": None,
                "failure_reason": "the server's reply is not a chat completion: "
                                  + raw[:200].decode("utf-8", "replace"),
                "failure_kind": FailureKind.NOT_A_REPLY.value, "input_tokens": 0, "output_tokens": 0,
                "served_model": None}
    if not isinstance(content, str):
        content = None
    answer = {"content": content, "reasoning": reasoning if isinstance(reasoning, str) and reasoning else None,
              "finish_reason": finish, "failure_reason": None, "failure_kind": None,
              **tokens,
              "served_model": completion.get("model")}
    refusal = message.get("refusal")
    if usage_problem:  # the answer is kept with the failure; its cost cannot be known
        return {**answer, "status": "bad_reply", "failure_reason": f"the server's {usage_problem}",
                "failure_kind": FailureKind.INVALID_USAGE.value}
    if finish == "content_filter":
        return {**answer, "status": "content_filter", "failure_kind": FailureKind.CONTENT_FILTER.value,
                "failure_reason": "the provider's content filter blocked the answer"}
    if not (content or "").strip() and isinstance(refusal, str) and refusal.strip():
        return {**answer, "status": "ok", "content": refusal}  # the model's own refusal is its answer
    if not (content or "").strip():
        why = " (it used all max_tokens before answering)" if finish == "length" else ""
        return {**answer, "status": "empty", "failure_reason": f"the model returned no text{why}",
                "failure_kind": FailureKind.EMPTY_ANSWER.value}
    if finish == "length":
        return {**answer, "status": "truncated"}
    return {**answer, "status": "ok"}


class Responder:
    """Asks one model, through the judges' call layer; one transport per event-loop run."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.template = config.request_template()
        self.policy = RetryPolicy(max_retries=config.max_retries)
        self.where = f"model '{config.name}' at {config.base_url}"
        self.transport: ChatTransport | None = None
        self.limiter: Pacer | None = None

    def connect(self) -> None:
        c = self.config
        self.transport = make_transport(c.transport, c.api_key(), c.base_url, c.concurrency, c.timeout_s,
                                        c.max_reply_bytes)
        self.limiter = Pacer(c.requests_per_minute)

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
            self.transport = None

    async def answer(self, question: str) -> dict[str, Any]:
        body = {**self.template, "messages": self.config.messages(question)}
        # its tokens, for a server's token limits: until a reply reports usage, the most it may answer
        cost = Cost(request_chars(body), self.config.max_tokens if isinstance(self.config.max_tokens, int)
                    else TYPICAL_ANSWER_TOKENS)
        transport, limiter = self.transport, self.limiter
        if transport is None or limiter is None:
            raise RuntimeError("answer() before connect()")
        started = time.perf_counter()
        try:
            raw, attempts = await call_with_retries(partial(transport.post, body), self.policy, limiter, self.where,
                                                    cost)
        except CallFailed as failure:
            answer = {"status": API_ERROR, "content": None, "reasoning": None, "finish_reason": None,
                      "failure_reason": failure.reason, "failure_kind": failure.kind.value, "input_tokens": 0,
                      "output_tokens": 0, "served_model": None}
            attempts = failure.attempts
        else:
            answer = read_answer(raw)
            limiter.calibrate(cost, answer["input_tokens"], answer["output_tokens"])
        return {**answer, "attempts": attempts, "latency_s": round(time.perf_counter() - started, 6)}


async def ask_all(responder: Responder, todo: list[tuple[str, str]], store: AnswerStore,
                  progress: ProgressCallback | None = None, budget: SpendBudget | None = None) -> dict[str, dict]:
    """Ask every (question_key, question), committing the answers of each event-loop turn together.
    `progress` receives `JudgingProgress` events (a task "answering with <model>"). `budget`
    (`max_cost`) is asked before each request, as the judging runner asks it."""
    config = responder.config
    pending: Iterator[tuple[str, str]] = iter(todo)
    done: dict[str, dict] = {}
    unsaved: list[dict] = []
    with ProgressCounter(progress, f"answering with {config.name}", len(todo)) as show:

        def save() -> None:
            batch = unsaved[:]
            unsaved.clear()
            store.put_many(batch)
            show.add(len(batch), sum(config.cost_usd(r["input_tokens"], r["output_tokens"]) for r in batch),
                     sum(r["failure_kind"] is not None for r in batch))

        async def worker() -> None:
            for key, question in pending:
                expected = config.cost_usd(request_input_tokens({"messages": config.messages(question)}),
                                           TYPICAL_ANSWER_TOKENS)
                if budget is not None and not await budget.admit(expected):
                    return  # the cap: no more requests from this worker
                answer = await responder.answer(question)
                if budget is not None:
                    budget.settle(expected, config.cost_usd(answer["input_tokens"], answer["output_tokens"]))
                record = {"config_hash": config.config_hash, "question_key": key, "model_name": config.name,
                          "model": config.model, "question": question, "created_at": time.time(), **answer}
                done[key] = record
                unsaved.append(record)
                if len(unsaved) == 1:  # the first of this turn commits them all
                    await asyncio.sleep(0)  # let the other replies of this turn arrive
                    save()

        responder.connect()
        tasks = [asyncio.ensure_future(worker()) for _ in range(min(config.concurrency, len(todo)))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # a fatal error (bad key, URL or model) stops the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if unsaved:
                save()
            await responder.close()
    if budget is not None and budget.stopped:
        raise budget.stopped_error(f"model '{config.name}'", len(todo) - len(done))
    return done
