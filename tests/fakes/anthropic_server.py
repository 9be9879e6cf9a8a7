"""A real Anthropic Messages API server on loopback, with faults the tests inject.

It judges exactly as `openai_server` does (`judge_text` on the system text and every message text, joined
with "\\n"; model names containing "order-biased" or "gullible" skew it the same way), so a test can run one
judge against both providers and expect the same verdicts. The verdict's shape follows the request: a forced
tool call (`tool_choice` `{"type": "tool"}`) gets a `tool_use` block whose input is the verdict, a request with
`output_config` structured output gets exactly the JSON as text, any other gets the JSON inside prose. A request
without the judge's answer markers is a generation request and gets `generated_answer` of its last user message.

Faults are queued (each POST /v1/messages takes the next one) or tied to a marker text inside the prompt
(applied on every request that contains it); only POST /v1/messages is logged in `log`. `reset` closes the
connection with a TCP reset; `timeout` answers after `timeout_sleep_s`, to a client that has given up;
`huge-body`, `gzip-bomb` and `redirect` are openai_server's hostile replies.
Like the real API since version 2026-10-21, a request carrying temperature, top_p or top_k is refused
(400) unless it asks for the older API version 2023-06-01. A strict tool or `output_config` schema with a
numeric bound (`minimum`, `maximum`) is refused (400), as the real structured outputs refuse it. Tool inputs
and structured text follow the schema's types (key points as one string where it says string).
`refuses_temperature_with_top_p` makes it refuse a request carrying both, as newer Claude models do
("temperature and top_p cannot both be specified").

GET /v1/models/{id} is the Models API: every model is `active` unless `set_model` says otherwise
("deprecated" with a `retires_at`, "retired", or "unknown": a 404 `not_found_error`); with `models_api`
False it answers 404 with a body that is not the Anthropic API's, as a gateway without the endpoint does.
`models_api_faults` are HTTP faults ("500", "529", "429", "401") taken one per Models API call.
`requests` counts every request by method and path ("GET /v1/models/claude-test"), so a test can assert
that nothing but the lookup was sent.

The Message Batches endpoints keep batches in memory: a batch answers `in_progress` to its first
`polls_until_done` retrieves, then ends, and only then are its results computed, by the same judging code but
without touching `log` (so a test can assert that no synchronous call was made). `batch_faults` ties a marker to
a per-request outcome inside a batch; `batch_api_faults` are faults taken one per batch-endpoint call (429, 529,
500, or `slow`: the call is carried out only after `timeout_sleep_s`, when the client has given up), and
every such call is recorded in `batch_log`. Results come back in reverse order, as the real API keeps none.

`rate_limit`, an `openai_server.RateLimit` over "requests", "input-tokens" and "output-tokens", makes
POST /v1/messages enforce those limits (token buckets, one second's worth) and announce them in the
anthropic-ratelimit-* headers; a request over a limit gets a 429 with retry-after in whole seconds.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import unquote

from tests.fakes.openai_server import (
    HOSTILE_FAULTS,
    FaultScript,
    LoopbackHandler,
    RateLimit,
    answers_in,
    generated_answer,
    is_judge_request,
    judge_text,
    serve,
    shaped,
)

FAULTS = ("429", "429-retry-after-1s", "529", "500", "401", "timeout", "reset", "malformed-tool-input",
          "missing-field", "text-only", "refusal", "max-tokens", *HOSTILE_FAULTS)
BATCH_API_FAULTS = ("429", "529", "500", "slow")
BATCH_FAULTS = ("errored", "expired", "canceled", "malformed-tool-input", "refusal", "max-tokens")
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
ERRORS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
# Since API version 2026-10-21 the Messages API refuses sampling parameters; the version before accepts them.
SAMPLING = {"temperature", "top_p", "top_k"}
LEGACY_API_VERSION = "2023-06-01"
BATCH_PATH = re.compile(r"/v1/messages/batches/([^/]+)(/results|/cancel)?")
LIFECYCLES = ("active", "deprecated", "retired", "unknown")
OUTPUT_TOKENS = 50  # what every reply reports as its output


@dataclass
class AnthropicState(FaultScript):
    known_faults: ClassVar[tuple[str, ...]] = FAULTS
    base_url: str = ""  # set once the server listens
    latency_s: float = 0.0
    timeout_sleep_s: float = 2.0
    rejects_strict: bool = False  # like a model without strict tools / structured output
    refuses_temperature_with_top_p: bool = False  # like newer Claude models
    models: dict[str, dict] = field(default_factory=dict)  # model id -> {"lifecycle", "retires_at"}; else active
    models_api: bool = True  # False: GET /v1/models/... is a 404 that is not the Anthropic API's
    models_api_faults: deque = field(default_factory=deque)  # "500", "529", "429", "401": one per lookup
    requests: Counter = field(default_factory=Counter)  # "METHOD /path" -> how many, every request
    log: list[dict] = field(default_factory=list)
    batch_log: list[dict] = field(default_factory=list)
    batch_api_faults: deque = field(default_factory=deque)
    batch_faults: dict[str, str] = field(default_factory=dict)
    polls_until_done: int = 1
    batches: dict[str, dict] = field(default_factory=dict)  # id -> {"batch", "requests", "polls", "results"}
    rate_limit: RateLimit | None = None  # opt-in: limits on requests, input and output tokens, with headers

    def set_model(self, model_id: str, lifecycle: str, retires_at: str | None = None) -> None:
        """What the Models API says of `model_id`: active, deprecated (retiring at `retires_at`, an RFC 3339
        time or None for no date announced), retired, or unknown (404)."""
        assert lifecycle in LIFECYCLES, lifecycle
        with self.lock:
            self.models[model_id] = {"lifecycle": lifecycle, "retires_at": retires_at}


def model_info(model_id: str, lifecycle: str, retires_at: str | None) -> dict:
    """A Models API `model` object, dated as the real API dates each lifecycle stage."""
    deprecated_at = None if lifecycle == "active" else _now(-timedelta(days=60))
    if lifecycle == "retired" and retires_at is None:
        retires_at = _now(-timedelta(days=1))
    return {"type": "model", "id": model_id, "display_name": model_id.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z", "lifecycle": lifecycle, "deprecated_at": deprecated_at,
            "retires_at": None if lifecycle == "active" else retires_at, "max_input_tokens": 200_000,
            "max_tokens": 64_000}


def _text(content: str | list[dict] | None) -> str:
    """A system or message content as plain text: a string, or the text of its text blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(block["text"] for block in content if block.get("type") == "text")


def prompt_of(request: dict) -> str:
    """What the judge reads: the system text and every message text, joined as openai_server joins them."""
    parts = [_text(request["system"])] if request.get("system") else []
    return "\n".join(parts + [_text(m["content"]) for m in request["messages"]])


def verdict(prompt: str, model: str) -> dict:
    """`judge_text`, skewed by the model name exactly as openai_server skews it."""
    judgment = judge_text(prompt)
    answers = answers_in(prompt)
    if "gullible" in model and any("alignment_score" in answer for answer in answers.values()):
        judgment["alignment_score"] = 2  # a judge that obeys text in the answers telling it how to score
    if "order-biased" in model:  # a judge swayed by position: it sides with the longer first answer
        judgment["alignment_score"] = 2 if len(answers.get("1", "")) >= len(answers.get("2", "")) else -2
    return judgment


def strict_refusal(request: dict) -> str | None:
    """What the API says of a structured-output schema (strict tool or output_config) with a numeric bound,
    which its structured outputs do not support; None when there is none."""
    schemas = [tool.get("input_schema") for tool in request.get("tools") or [] if tool.get("strict")]
    schemas.append(request.get("output_config", {}).get("format", {}).get("schema"))
    places = ["tools.0.input_schema"] * (len(schemas) - 1) + ["output_config.format.schema"]
    for where, schema in zip(places, schemas, strict=True):
        for spec in (schema or {}).get("properties", {}).values():
            bound = next((key for key in ("minimum", "maximum") if key in spec), None)
            if bound:
                return f"{where}: For '{spec.get('type')}' type, property '{bound}' is not supported"
    return None


def message_for(request: dict, fault: str | None) -> dict:
    """The Message a model would send for `request`, with a content-level fault (or none) applied."""
    prompt, model = prompt_of(request), request["model"]
    stop, content = "end_turn", []

    def text(value: str) -> list[dict]:
        return [{"type": "text", "text": value}]

    if fault == "refusal":
        content, stop = text("I can't help with that."), "refusal"
    elif not is_judge_request(prompt):  # a generation request
        users = [m for m in request["messages"] if m["role"] == "user"]
        answer = generated_answer(_text(users[-1]["content"]))
        content = text(answer[:20] if fault == "max-tokens" else answer)
        stop = "max_tokens" if fault == "max-tokens" else "end_turn"
    elif fault == "text-only":
        content = text("They seem to agree, broadly.")
    else:
        judgment = verdict(prompt, model)
        if fault == "malformed-tool-input":
            judgment["alignment_score"] = 7
        if fault == "missing-field":
            del judgment["alignment_score"]
        choice, tools = request.get("tool_choice") or {}, request.get("tools") or []
        if tools and choice.get("type") != "none":
            name = choice.get("name") or tools[0]["name"]
            cut = fault == "max-tokens"  # a tool call cut off by max_tokens arrives with empty input
            schema = next((tool.get("input_schema") for tool in tools if tool["name"] == name), None)
            content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name,
                        "input": {} if cut else shaped(judgment, schema)}]
            stop = "max_tokens" if cut else "tool_use"
        else:
            body = json.dumps(shaped(judgment, request.get("output_config", {}).get("format", {}).get("schema")))
            if request.get("output_config", {}).get("format") is None:
                body = f"Here is my assessment:\n```json\n{body}\n```"  # prose around the JSON
            content = text(body[:40] if fault == "max-tokens" else body)
            stop = "max_tokens" if fault == "max-tokens" else "end_turn"
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4, "output_tokens": OUTPUT_TOKENS}}


def _now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat()


class Handler(LoopbackHandler):
    state: AnthropicState

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        super()._send(code, body, content_type, {"request-id": f"req_{uuid.uuid4().hex[:24]}", **(headers or {})})

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._reply(code, {"type": "error", "error": {"type": ERRORS[code], "message": message}}, headers)

    def _http_fault(self, fault: str | None) -> bool:
        """Answer an HTTP-level fault, if `fault` is one; True when it was answered."""
        if fault in ("429", "429-retry-after-1s"):
            self._error(429, "Number of requests has exceeded your rate limit",
                        {"retry-after": "1" if fault == "429-retry-after-1s" else "0"})
        elif fault in ("529", "500", "401"):
            self._error(int(fault), {"529": "Overloaded", "500": "Internal server error",
                                     "401": "invalid x-api-key"}[fault])
        else:
            return False
        return True

    def do_POST(self) -> None:  # http.server names it
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = self.path.split("?")[0]
        with self.state.lock:
            self.state.requests[f"POST {path}"] += 1
        if path == "/v1/messages":
            return self._message(json.loads(body))
        if path.startswith("/v1/messages/batches"):
            return self._batches("POST", path, json.loads(body or b"{}"))
        self._error(404, f"no route for POST {path}")

    def do_GET(self) -> None:  # http.server names it
        path = self.path.split("?")[0]
        with self.state.lock:
            self.state.requests[f"GET {path}"] += 1
        if path.startswith("/v1/messages/batches"):
            return self._batches("GET", path, {})
        if path.startswith("/v1/models/"):
            return self._model(unquote(path.removeprefix("/v1/models/")))
        self._error(404, f"no route for GET {path}")

    def _model(self, model_id: str) -> None:
        """GET /v1/models/{id}: the model's lifecycle, a 404 for an unknown one, or no Models API at all."""
        with self.state.lock:
            fault = self.state.models_api_faults.popleft() if self.state.models_api_faults else None
        if self._http_fault(fault):
            return
        if not self.state.models_api:
            return self._send(404, b'{"detail": "Not Found"}', "application/json")
        with self.state.lock:
            known = dict(self.state.models.get(model_id) or {"lifecycle": "active", "retires_at": None})
        if known["lifecycle"] == "unknown":
            return self._error(404, f"model: {model_id}")
        self._reply(200, model_info(model_id, known["lifecycle"], known["retires_at"]))

    def _api_key(self) -> str | None:
        """The key sent: `x-api-key`, or the bearer token (anthropic SDK 2.x sends `api_key` as Bearer)."""
        bearer = self.headers.get("Authorization", "")
        return self.headers.get("x-api-key") or (bearer.removeprefix("Bearer ") if bearer else None)

    def _message(self, request: dict) -> None:
        """POST /v1/messages: log, apply the fault, answer as the model would."""
        prompt = prompt_of(request)
        fault = self.state.next_fault(prompt)
        with self.state.lock:
            self.state.log.append({"fault": fault, "prompt": prompt, "time": time.monotonic(),
                                   "api_key": self._api_key(), "headers": dict(self.headers),
                                   "body": request})
        limit, limit_headers = self.state.rate_limit, {}
        if limit is not None:  # counted on arrival, refused at once, as the API does
            admitted, buckets, wait_s = limit.admit({"requests": 1.0, "input-tokens": float(len(prompt) // 4),
                                                     "output-tokens": float(OUTPUT_TOKENS)})
            limit_headers = anthropic_limit_headers(limit, buckets, wait_s, admitted)
            if not admitted:
                return self._error(429, "Number of request tokens has exceeded your per-minute rate limit",
                                   limit_headers)
        if self.state.latency_s:
            time.sleep(self.state.latency_s)
        if fault == "reset":
            return self._reset()
        if self.hostile(fault, self.state):
            return None
        sampling = sorted(SAMPLING & set(request))
        if sampling and self.headers.get("anthropic-version") != LEGACY_API_VERSION:
            return self._error(400, f"{sampling[0]}: Extra inputs are not permitted")
        if self.state.refuses_temperature_with_top_p and {"temperature", "top_p"} <= set(request):
            return self._error(400, "temperature and top_p cannot both be specified for this model")
        strict = any(tool.get("strict") for tool in request.get("tools") or []) or "output_config" in request
        if self.state.rejects_strict and strict:
            return self._error(400, "strict tools are not supported for this model")
        refused = strict_refusal(request)
        if refused:
            return self._error(400, refused)
        if fault == "timeout":
            time.sleep(self.state.timeout_sleep_s)
            fault = None  # answers late, to a client that has given up
        if not self._http_fault(fault):
            self._reply(200, message_for(request, fault), limit_headers)

    def _batches(self, method: str, path: str, body: dict) -> None:
        """Every /v1/messages/batches endpoint: log the call, take an API fault, then route."""
        with self.state.lock:
            self.state.batch_log.append({"method": method, "path": path, "time": time.monotonic()})
            fault = self.state.batch_api_faults.popleft() if self.state.batch_api_faults else None
        if self._http_fault(fault):
            return
        if fault == "slow":  # the call goes through, after the client has given up waiting for it
            time.sleep(self.state.timeout_sleep_s)
        if path == "/v1/messages/batches":
            return self._create(body) if method == "POST" else self._list()
        match = BATCH_PATH.fullmatch(path)
        route = (method, match.group(2) if match else "")
        batch: dict = {}
        with self.state.lock:  # decide under the lock, write the reply outside it
            entry = self.state.batches.get(match.group(1)) if match else None
            if entry is not None and route == ("POST", "/cancel"):
                if entry["batch"]["processing_status"] == "in_progress":
                    entry["batch"].update(processing_status="canceling", cancel_initiated_at=_now())
                batch = dict(entry["batch"])
            elif entry is not None and route == ("GET", None):
                batch = dict(self._advance(entry))
            results = entry["results"] if entry is not None else None
        if entry is None or route not in (("POST", "/cancel"), ("GET", None), ("GET", "/results")):
            return self._error(404, f"no message batch at {method} {path}")
        if route != ("GET", "/results"):
            return self._reply(200, batch)
        if results is None:
            return self._error(400, "message batch has not ended yet")
        lines = "".join(json.dumps(line) + "\n" for line in reversed(results))
        self._send(200, lines.encode(), "application/binary")

    def _create(self, body: dict) -> None:
        requests = body.get("requests") or []
        ids = [r.get("custom_id", "") for r in requests]
        if not requests:
            return self._error(400, "requests: must contain at least one request")
        bad = [i for i in ids if not isinstance(i, str) or not CUSTOM_ID.fullmatch(i)]
        if bad or len(set(ids)) != len(ids):
            return self._error(400, f"requests: custom_id invalid or duplicated: {bad or ids}")
        batch = {"id": f"msgbatch_{uuid.uuid4().hex[:24]}", "type": "message_batch",
                 "processing_status": "in_progress",
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                    "expired": 0},
                 "ended_at": None, "created_at": _now(), "expires_at": _now(timedelta(days=1)),
                 "archived_at": None, "cancel_initiated_at": None, "results_url": None}
        with self.state.lock:
            self.state.batches[batch["id"]] = {"batch": batch, "requests": requests, "polls": 0, "results": None}
        self._reply(200, batch)

    def _list(self) -> None:
        with self.state.lock:
            data = [entry["batch"] for entry in reversed(self.state.batches.values())]
        self._reply(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})

    def _advance(self, entry: dict) -> dict:
        """A retrieve: still in progress for the first polls, else end the batch (computing its results)."""
        batch = entry["batch"]
        if batch["processing_status"] == "in_progress" and entry["polls"] < self.state.polls_until_done:
            entry["polls"] += 1
            return batch
        if batch["processing_status"] != "ended":
            canceling = batch["processing_status"] == "canceling"
            entry["results"] = [{"custom_id": r["custom_id"], "result": self._result(r["params"], canceling)}
                                for r in entry["requests"]]
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            for line in entry["results"]:
                counts[line["result"]["type"]] += 1
            batch.update(processing_status="ended", request_counts=counts, ended_at=_now(),
                         results_url=f"http://127.0.0.1:{self.server.server_port}/v1/messages/batches/"
                                     f"{batch['id']}/results")
        return batch

    def _result(self, params: dict, canceled: bool) -> dict:
        """One request's outcome inside a batch, with the batch fault its prompt's marker names."""
        prompt = prompt_of(params)
        fault = next((f for marker, f in self.state.batch_faults.items() if marker in prompt), None)
        if canceled or fault == "canceled":
            return {"type": "canceled"}
        if fault == "expired":
            return {"type": "expired"}
        if fault == "errored":
            return {"type": "errored", "error": {"type": "error", "error": {
                "type": "invalid_request_error", "message": "this request could not be processed"}}}
        return {"type": "succeeded", "message": message_for(params, fault)}


def anthropic_limit_headers(limit: RateLimit, state: dict[str, tuple[float, int, float]], wait_s: float,
                            admitted: bool) -> dict[str, str]:
    """Anthropic's names: anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset},
    reset as the RFC 3339 time the bucket is full again; a 429 carries retry-after in whole seconds."""
    headers = {}
    if limit.headers:
        for name, (per_minute, remaining, reset) in state.items():
            headers.update({f"anthropic-ratelimit-{name}-limit": f"{per_minute:.0f}",
                            f"anthropic-ratelimit-{name}-remaining": str(remaining),
                            f"anthropic-ratelimit-{name}-reset": _now(timedelta(seconds=reset))})
    if not admitted:
        headers["retry-after"] = str(max(1, math.ceil(wait_s)))
    return headers

def start_anthropic_server(state: AnthropicState, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve on loopback in a daemon thread; returns the server and its base URL (no /v1: the SDK adds it)."""
    server = serve(Handler, state, port)
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    return server, state.base_url
