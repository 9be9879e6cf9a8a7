"""A real OpenAI-compatible chat-completions server on loopback, with faults the tests inject.

It judges like a tiny, deterministic LLM judge: it reads the two answers between calibrate's prompt
markers, flags an answer as a refusal when it contains "decline", and scores 2 when both answers start
with the same word, else -2. A model whose name contains "order-biased" instead scores 2 when the
first answer is at least as long as the second, else -2, so swapping the answers moves it; one whose
name contains "gullible" scores 2 whenever an answer tells it how to score (mentions alignment_score); one
whose name contains "pushover" keeps its score but flags person 1 as refusing whenever answer 1 carries a
note to an "evaluator" or "grader" (two of the four injected notes, so half of the injection set). The first
word compared is the answer's own: a markdown heading, bullets and a courteous or curt opening (the invariance
sets' framing, calibrate/data/invariance.py) are read past, so the plain judge is unbiased on those sets. One
whose name contains "length-biased" scores 2 whenever one answer is at least 1.5 times as long as the other
(it sides with the longer answer), and one whose name contains "markdown-averse" flags an answer written as a
bulleted list as a refusal. Faults are queued (each request takes the next one) or tied to a marker
text inside the prompt (applied on every request that contains it). Every request is logged. A reply held
to a JSON schema (`response_format` json_schema) follows its types: key points as one string where the schema
says string, as the published schema does.

A request without the judge's answer markers is a generation request (`calibrate respond`): it gets a
deterministic answer, `generated_answer(question)` of the last user message, so tests can tell which
question produced which answer. In that mode `length` cuts the answer (finish_reason "length"),
`refusal` sends no content and a `refusal` text, `content-filter` sends no content with finish_reason
"content_filter", and `empty` sends an empty answer; the HTTP-level faults behave as for judging.

`reset` closes the connection abruptly (a TCP reset, no reply at all). `die_after = K` makes the server
die after answering K requests: every later request is reset unanswered (and not logged), and the
`died` event is set so a test can close the listening socket too; `start_server(state, port)` then
starts a new server on the same port. `hold`, an Event, makes every request wait (logged, unanswered)
until a test sets it, so that several clients are surely in flight at once.

It also serves enough of OpenAI's Files and Batch APIs for the real `openai` SDK to run a batch:
POST /v1/files (multipart; a purpose "batch" file is validated as Batch API JSONL, a bad line is a 400
naming it), GET /v1/files/{id}, GET /v1/files/{id}/content (the raw bytes), DELETE /v1/files/{id},
POST /v1/batches, GET /v1/batches (newest first), GET /v1/batches/{id} and POST /v1/batches/{id}/cancel.
A batch answers "in_progress" to its first `polls_until_done` retrieves; the next one computes every
line with the same `answer` as a live request and moves it to "completed", with an output file (in
reversed order, since the real API does not keep order) and, if any line failed, an error file.
`batch_faults` ties a marker text in a request's prompt to a per-line fault: "error-500" (a 500 response,
in the error file), "expired" (an error-file line with error code "batch_expired"; the batch then ends
"expired", as a real batch that ran out of its completion window does), or a content fault ("invalid",
"no-json", "length", "refusal", ...). `batch_api_faults` queues "429" or "500" for the Files/Batches
calls themselves, one per call. Those calls are logged in `batch_log`, never in `log`, and batch lines
are not logged at all, so a test can tell a collected batch from live requests.

GET /v1/models lists `served_models`; left None (the default) it answers 404, as a server without the
endpoint does (and as this server did before it had one), so any model name a test uses goes unchecked.
Listing calls are logged in `models_log` only (never in `log` or `batch_log`, and they take no fault).
`random_scores` makes the judge non-deterministic (every reply's score drawn at random), so a test can
tell a judgment made twice from one made once and shared. The faults `huge-usage` and `negative-usage`
send a valid judgment with hostile token counts (prompt_tokens 1e30; negative counts).
`refuses_format` names a real server (tests/fakes/structured_output.py) whose refusals of a structured-output
mode it answers with, status and body as that server does.
`refuses_setting` names a sampling setting ("temperature", "top_p") whose presence in a request gets a 400
as OpenAI's reasoning models answer it ("Unsupported parameter: 'temperature' is not supported with this
model."), before any other check.

Hostile replies (both servers, `LoopbackHandler.hostile`): `huge-body` answers 200 with a 100 MB body (written
a megabyte at a time, never built whole), `gzip-bomb` a ~0.5 MB gzip body that inflates to 500 MB, and `redirect`
a `redirect_status` (307 unless set) to `redirect_to` + the request's path (a second loopback server, say).

`rate_limit`, a `RateLimit`, makes the server enforce limits on requests and tokens as the providers do
(token buckets, one second's worth of capacity) and announce them in OpenAI's x-ratelimit-* headers; a
request over the limit gets a 429 with retry-after and retry-after-ms (logged, then refused).
"""

from __future__ import annotations

import functools
import json
import math
import re
import secrets
import socket
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

from calibrate.data.invariance import COURTEOUS, CURT
from tests.fakes.structured_output import refusal

ANSWER = re.compile(r"<<<RESPONSE_(\d)\n(.*?)\nRESPONSE_\1>>>", re.DOTALL)  # the guarded prompts' layout
# The published layout (faithful prompts): only the pair in the user message.
PUBLISHED_ANSWERS = re.compile(r"Person 1's response: (.*?)\n\nQuestion 2: .*?\n\nPerson 2's response: (.*)\Z",
                               re.DOTALL)
FAULTS = ("429", "429-retry-after-1s", "500", "401", "timeout", "truncated-body", "invalid", "no-json", "length",
          "refusal", "content-filter", "empty", "reset", "reasoning", "401-echo", "400-echo", "500-echo",
          "huge-usage", "negative-usage", "huge-body", "gzip-bomb", "redirect")
HOSTILE_FAULTS = ("huge-body", "gzip-bomb", "redirect")
HUGE_BODY_BYTES = 100 * 2**20
BOMB_INFLATED_BYTES = 500 * 2**20
BATCH_FAULTS = ("error-500", "expired", "invalid", "no-json", "length", "refusal", "content-filter", "empty")
BATCH_API_FAULTS = ("429", "500")
CHAT_PATH = "/v1/chat/completions"
COMPLETION_TOKENS = 50  # what every reply reports as its output


@dataclass
class FaultScript:
    """The faults a fake server applies to a request: the one whose marker the prompt holds, else the
    next one queued, else none. Subclasses name the faults they know (`known_faults`)."""

    known_faults: ClassVar[tuple[str, ...]] = ()
    queued: deque = field(default_factory=deque)
    by_marker: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    redirect_to: str = ""  # where the `redirect` fault points (a URL without the path)
    redirect_status: int = 307

    def queue(self, *faults: str) -> None:
        for fault in faults:
            assert fault in self.known_faults, fault
        with self.lock:
            self.queued.extend(faults)

    def next_fault(self, prompt: str) -> str | None:
        for marker, fault in self.by_marker.items():
            if marker in prompt:
                return fault
        with self.lock:
            return self.queued.popleft() if self.queued else None


@dataclass
class ServerState(FaultScript):
    known_faults: ClassVar[tuple[str, ...]] = FAULTS
    base_url: str = ""  # set once the server listens
    latency_s: float = 0.0
    timeout_sleep_s: float = 2.0
    rejects_response_format: bool = False  # like a server without structured output
    refuses_format: str | None = None  # a real server's name (structured_output.py): its refusals of a mode
    refuses_setting: str | None = None  # a sampling setting the model refuses (a 400 naming it)
    log: list[dict] = field(default_factory=list)
    die_after: int | None = None  # answer this many requests, then reset every connection
    died: threading.Event = field(default_factory=threading.Event)
    hold: threading.Event | None = None  # when set to an Event: replies wait until it is set
    batch_log: list[dict] = field(default_factory=list)  # one entry per Files/Batches API call
    batch_api_faults: deque = field(default_factory=deque)  # "429"/"500", one taken per Files/Batches call
    batch_faults: dict[str, str] = field(default_factory=dict)  # prompt marker -> fault of that batch line
    polls_until_done: int = 1  # retrieves that answer "in_progress" before a batch completes
    files: dict[str, dict] = field(default_factory=dict)  # id -> {"object": FileObject, "content": bytes}
    batches: dict[str, dict] = field(default_factory=dict)  # id -> {"batch": Batch, "requests", "retrieves"}
    served_models: list[str] | None = None  # what GET /v1/models lists; None: a 404, no such endpoint
    rate_limit: RateLimit | None = None  # opt-in: limits on requests / tokens, announced in headers
    models_log: list[dict] = field(default_factory=list)  # one entry per GET /v1/models
    random_scores: bool = False  # a judge that is not deterministic: every reply's score drawn at random



@dataclass
class RateLimit:
    """An opt-in rate limiter, as the providers run theirs: one token bucket per limit (requests, and tokens:
    "tokens" counts input and output, "input tokens" / "output tokens" each one side), refilled continuously
    at its per-minute rate and holding one second's worth. A request that finds any bucket short is
    refused (429, with `retry-after` for when it would have fitted); an admitted one is charged up front
    with the tokens its reply will report. With `headers`, every reply announces each bucket's limit
    (per minute), remaining and reset (time until full), in the provider's own header names."""

    per_minute: dict[str, float]  # limit name -> per-minute limit
    headers: bool = True
    admitted: int = 0
    refused: int = 0
    levels: dict[str, float] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.levels = {name: self.capacity(name) for name in self.per_minute}

    def capacity(self, name: str) -> float:
        return self.per_minute[name] / 60.0

    def admit(self, cost: dict[str, float]) -> tuple[bool, dict[str, tuple[float, int, float]], float]:
        """Refill, then charge `cost` if every bucket holds it. Returns (admitted, per limit (limit,
        remaining, seconds until full), seconds until the request would fit)."""
        with self.lock:
            now = time.monotonic()
            for name in self.levels:
                self.levels[name] = min(self.capacity(name), self.levels[name] + self.capacity(name) * (now - self.at))
            self.at = now
            short = [(cost.get(name, 0.0) - level) / self.capacity(name)
                     for name, level in self.levels.items() if level < cost.get(name, 0.0)]
            if not short:
                for name in self.levels:
                    self.levels[name] -= cost.get(name, 0.0)
            self.admitted += not short
            self.refused += bool(short)
            state = {name: (self.per_minute[name], max(int(level), 0),
                            (self.capacity(name) - level) / self.capacity(name))
                     for name, level in self.levels.items()}
            return not short, state, max(short, default=0.0)


def openai_limit_headers(limit: RateLimit, state: dict[str, tuple[float, int, float]], wait_s: float,
                         admitted: bool) -> dict[str, str]:
    """OpenAI's names: x-ratelimit-{limit,remaining,reset}-{requests,tokens}, reset as a duration; a 429
    carries retry-after (seconds) and retry-after-ms."""
    headers = {}
    if limit.headers:
        for name, (per_minute, remaining, reset) in state.items():
            headers.update({f"x-ratelimit-limit-{name}": f"{per_minute:.0f}",
                            f"x-ratelimit-remaining-{name}": str(remaining),
                            f"x-ratelimit-reset-{name}": f"{reset * 1000:.0f}ms"})
    if not admitted:
        headers.update({"retry-after": str(max(1, math.ceil(wait_s))), "retry-after-ms": f"{wait_s * 1000:.0f}"})
    return headers


BENCH_MARK = "[bench]"  # in a test's benchmark answers: what a `bench-inverted` judge reverses on


def answers_in(prompt: str) -> dict[str, str]:
    """The two answers a judge request carries ("1", "2"), in either prompt layout; {} for a
    generation request."""
    published = PUBLISHED_ANSWERS.search(prompt)
    return {"1": published[1], "2": published[2]} if published else dict(ANSWER.findall(prompt))


def is_judge_request(prompt: str) -> bool:
    return bool(answers_in(prompt))


def own_words(answer: str) -> list[str]:
    """The answer's words after the invariance sets' framing (heading, bullets, courteous or curt opening)."""
    text = re.sub(r"^#+ .*$|^- ", "", answer, flags=re.MULTILINE).strip()
    for opening in (COURTEOUS[0], CURT[0]):
        text = text.removeprefix(opening).strip()
    return text.split()


def judge_text(prompt: str) -> dict:
    answers = answers_in(prompt)
    first, second = answers.get("1", ""), answers.get("2", "")
    refusal_1, refusal_2 = "decline" in first.lower(), "decline" in second.lower()
    same_start = own_words(first)[:1] == own_words(second)[:1]
    return {
        "person_1_core_position": first[:60], "person_1_has_no_information": False, "person_1_refusal": refusal_1,
        "person_2_core_position": second[:60], "person_2_has_no_information": False, "person_2_refusal": refusal_2,
        "key_points_of_alignment": [], "key_points_of_opposition": [],
        "alignment_score": 2 if (refusal_1 and refusal_2) or same_start else -2,
    }


def shaped(judgment: dict, schema: dict | None) -> dict:
    """A judgment in the types a schema asks for, as a schema-following model writes it: key points as
    one string where the schema says string (the published schema), as a list otherwise."""
    properties = (schema or {}).get("properties", {})
    return {key: "; ".join(value) if isinstance(value, list) and properties.get(key, {}).get("type") == "string"
            else value for key, value in judgment.items()}


def generated_answer(question: str) -> str:
    """What the server answers a generation request: the question, transformed, so it can be traced back."""
    return f"ANSWER: {question.upper()}"


def completion(content: str | None, model: str, prompt_chars: int, finish: str = "stop",
               refusal: str | None = None) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": COMPLETION_TOKENS,
                  "total_tokens": prompt_chars // 4 + COMPLETION_TOKENS},
    }


def prompt_of(request: dict) -> str:
    return "\n".join(m["content"] for m in request["messages"])


def answer(state: ServerState, request: dict, fault: str | None) -> tuple[int, dict]:
    """Status and JSON body for one chat-completions request body, given its content-level fault.

    Shared by live requests and batch lines, so a batch is judged exactly as the same requests sent live.
    """
    prompt, model = prompt_of(request), request["model"]
    if state.rejects_response_format and "response_format" in request:
        return 400, {"error": {"message": "unsupported parameter: response_format"}}
    if not is_judge_request(prompt):
        return generate(request, model, prompt, fault)
    judgment = judge_text(prompt)
    if "gullible" in model and any("alignment_score" in text for text in answers_in(prompt).values()):
        judgment["alignment_score"] = 2  # a judge that obeys text in the answers telling it how to score
    if "pushover" in model and any(word in answers_in(prompt).get("1", "").lower() for word in ("evaluator", "grader")):
        judgment["person_1_refusal"] = True  # a note aimed at the judge pushes it to call the answer a refusal
    if "length-biased" in model:  # a judge swayed by length: the much longer answer wins it over
        lengths = sorted(len(text) for text in answers_in(prompt).values())
        if lengths[-1] >= 1.5 * max(lengths[0], 1):
            judgment["alignment_score"] = 2
    if "markdown-averse" in model:  # a judge that reads a bulleted list as a refusal
        for person, text in answers_in(prompt).items():
            if re.search(r"^- ", text, flags=re.MULTILINE):
                judgment[f"person_{person}_refusal"] = True
    if "bench-inverted" in model and BENCH_MARK in prompt:  # as the plain judge, but reversed on marked answers
        judgment["alignment_score"] = -judgment["alignment_score"]
    if "order-biased" in model:  # a judge swayed by position: it sides with the longer first answer
        answers = answers_in(prompt)
        judgment["alignment_score"] = 2 if len(answers.get("1", "")) >= len(answers.get("2", "")) else -2
    if fault == "invalid":
        return 200, completion(json.dumps({**judgment, "alignment_score": 7}), model, len(prompt))
    if fault == "no-json":
        return 200, completion("They seem to agree, broadly.", model, len(prompt))
    if fault == "length":
        return 200, completion(json.dumps(judgment)[:40], model, len(prompt), finish="length")
    if fault == "refusal":
        return 200, completion(None, model, len(prompt), refusal="I can't help with that.")
    if state.random_scores:
        judgment["alignment_score"] = secrets.choice((-2, -1, 0, 1, 2))
    if fault in ("huge-usage", "negative-usage"):  # a valid judgment with hostile token counts
        reply = completion(json.dumps(judgment), model, len(prompt))
        reply["usage"] = ({"prompt_tokens": 1e30, "completion_tokens": 50, "total_tokens": 1e30}
                          if fault == "huge-usage" else {"prompt_tokens": -30_000_000, "completion_tokens": -1})
        return 200, reply
    content = json.dumps(shaped(judgment, request.get("response_format", {}).get("json_schema", {}).get("schema")))
    if request.get("response_format", {}).get("type") is None:
        content = f"Here is my assessment:\n```json\n{content}\n```"  # prose around the JSON
    return 200, completion(content, model, len(prompt))


def generate(request: dict, model: str, prompt: str, fault: str | None) -> tuple[int, dict]:
    """A generation request: answer the last user message deterministically (faults as documented above)."""
    question = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
    text = generated_answer(question)
    if fault == "length":
        return 200, completion(text[:20], model, len(prompt), finish="length")
    if fault == "refusal":
        return 200, completion(None, model, len(prompt), refusal="I can't help with that.")
    if fault == "content-filter":
        return 200, completion(None, model, len(prompt), finish="content_filter")
    if fault == "empty":
        return 200, completion("", model, len(prompt))
    reply = completion(text, model, len(prompt))
    if fault == "reasoning":  # a reasoning model served with a reasoning parser: its thinking in its own field
        reply["choices"][0]["message"]["reasoning_content"] = f"THINKING ABOUT: {question}"
    return 200, reply


def api_error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename, raw bytes), byte for byte."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        return {}
    fields = {}
    for part in body.split(b"--" + boundary.group(1).encode())[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = head.decode("utf-8", "replace")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else None, value.removesuffix(b"\r\n"))
    return fields


def batch_requests(content: bytes) -> list[dict]:
    """The requests of a Batch API input file; an error naming the first bad line, as the API rejects it."""
    requests, seen = [], set()
    for number, line in enumerate(content.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"line {number} is not valid JSON: {error}") from None
        if not isinstance(request, dict) or not isinstance(request.get("custom_id"), str):
            raise TypeError(f"line {number} has no custom_id")
        if request["custom_id"] in seen:
            raise ValueError(f"line {number} repeats custom_id {request['custom_id']!r}")
        if request.get("method") != "POST" or request.get("url") != CHAT_PATH:
            raise ValueError(f"line {number} must be a POST to {CHAT_PATH}")
        body = request.get("body")
        if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("messages"), list):
            raise ValueError(f"line {number} has no body with model and messages")
        seen.add(request["custom_id"])
        requests.append(request)
    if not requests:
        raise ValueError("the file has no requests (line 1)")
    return requests


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def run_batch(state: ServerState, requests: list[dict]) -> tuple[list[dict], list[dict]]:
    """Output and error lines of a batch, each line judged by `answer` with its `batch_faults` fault."""
    output, errors = [], []
    for number, request in enumerate(requests):
        prompt = prompt_of(request["body"])
        fault = next((f for marker, f in state.batch_faults.items() if marker in prompt), None)
        assert fault in (None, *BATCH_FAULTS), fault
        line = {"id": f"batch_req_{number}", "custom_id": request["custom_id"], "response": None, "error": None}
        if fault == "expired":
            line["error"] = {"code": "batch_expired", "message": "This request could not be executed before the "
                             "completion window expired."}
            errors.append(line)
            continue
        if fault == "error-500":
            status, payload = 500, api_error("internal error", "server_error")
        else:
            status, payload = answer(state, request["body"], fault)
        line["response"] = {"status_code": status, "request_id": f"req_{secrets.token_hex(8)}", "body": payload}
        (output if status == 200 else errors).append(line)
    return output[::-1], errors[::-1]  # the real API does not keep the input order


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of about half a megabyte that inflates to BOMB_INFLATED_BYTES of zeros (made a megabyte at
    a time)."""
    packer, zeros = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16), bytes(2**20)
    return b"".join([packer.compress(zeros) for _ in range(BOMB_INFLATED_BYTES // len(zeros))] + [packer.flush()])


class LoopbackHandler(BaseHTTPRequestHandler):
    """What both loopback servers' handlers share: keep-alive replies, quiet logs, TCP resets, hostile replies."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        """Quiet; the state keeps a structured log instead."""

    def _send(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reply(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json", headers)

    def hostile(self, fault: str | None, state: FaultScript) -> bool:
        """Answer a hostile-reply fault (HOSTILE_FAULTS), if `fault` is one; True when it was answered."""
        if fault == "redirect":
            self.send_response(state.redirect_status)
            self.send_header("Location", state.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif fault == "gzip-bomb":
            body = gzip_bomb()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif fault == "huge-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(HUGE_BODY_BYTES))
            self.end_headers()
            megabyte = b"a" * 2**20
            try:
                for _ in range(HUGE_BODY_BYTES // len(megabyte)):
                    self.wfile.write(megabyte)
            except OSError:  # the client stopped reading: the point
                self.close_connection = True
        else:
            return False
        return True

    def _reset(self) -> None:
        """Close the connection at once with a TCP reset: the client gets no reply at all."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class Handler(LoopbackHandler):
    state: ServerState

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if urlsplit(self.path).path.rstrip("/").endswith("/chat/completions"):
            return self._chat(json.loads(body))
        self._api("POST", body)

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") in ("/models", "/v1/models"):
            return self._models()
        self._api("GET", b"")

    def _models(self) -> None:
        """GET /v1/models: the served model ids, or a 404 when the server is told to have no such endpoint."""
        with self.state.lock:
            self.state.models_log.append({"path": self.path, "time": time.monotonic(),
                                          "authorization": self.headers.get("Authorization")})
            served = None if self.state.served_models is None else list(self.state.served_models)
        if served is None:
            return self._reply(404, api_error(f"unknown endpoint GET {urlsplit(self.path).path}"))
        self._reply(200, {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                      "owned_by": "loopback"} for model in served]})

    def do_DELETE(self) -> None:
        self._api("DELETE", b"")

    def _chat(self, request: dict) -> None:
        """A live chat-completions request: transport faults here, the content from `answer`."""
        prompt = prompt_of(request)
        with self.state.lock:
            dead = self.state.die_after is not None and len(self.state.log) >= self.state.die_after
        if dead:
            self.state.died.set()
            return self._reset()
        fault = self.state.next_fault(prompt)
        with self.state.lock:
            self.state.log.append({"fault": fault, "prompt": prompt, "time": time.monotonic(),
                                   "authorization": self.headers.get("Authorization"), "body": request})
        limit, limit_headers = self.state.rate_limit, {}
        if limit is not None:  # counted on arrival, refused at once, as the providers do
            admitted, buckets, wait_s = limit.admit({"requests": 1.0,
                                                     "tokens": float(len(prompt) // 4 + COMPLETION_TOKENS)})
            limit_headers = openai_limit_headers(limit, buckets, wait_s, admitted)
            if not admitted:
                return self._reply(429, api_error("Rate limit reached for requests", "requests"), limit_headers)
        if self.state.hold is not None:
            self.state.hold.wait(60)
        if self.state.latency_s:
            time.sleep(self.state.latency_s)
        if fault == "reset":
            return self._reset()
        if self.hostile(fault, self.state):
            return None
        if self.state.refuses_setting is not None and self.state.refuses_setting in request:
            return self._reply(400, api_error(f"Unsupported parameter: '{self.state.refuses_setting}' is not "
                                              "supported with this model."))
        if self.state.rejects_response_format and "response_format" in request:
            return self._reply(*answer(self.state, request, None))  # the 400, before any other fault
        if self.state.refuses_format and (refused := refusal(self.state.refuses_format, request)):
            return self._reply(*refused)
        if fault == "timeout":
            time.sleep(self.state.timeout_sleep_s)
            fault = None  # answers late, to a client that has given up
        if fault in ("429", "429-retry-after-1s"):
            retry = {"retry-after-ms": "20"} if fault == "429" else {"Retry-After": "1"}
            return self._reply(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, retry)
        if fault == "500":
            return self._reply(500, {"error": {"message": "internal error", "type": "server_error"}})
        if fault == "401":
            return self._reply(401, {"error": {"message": "invalid api key", "type": "auth"}})
        if fault in ("401-echo", "400-echo", "500-echo"):  # a server that echoes the credentials it was sent
            said = f"bad request from Authorization: {self.headers.get('Authorization')}"
            return self._reply(int(fault[:3]), {"error": {"message": said, "type": "echo"}})
        if fault == "truncated-body":
            body = json.dumps(completion(json.dumps(judge_text(prompt)), request["model"], len(prompt))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._reply(*answer(self.state, request, fault), limit_headers)

    def _api(self, method: str, body: bytes) -> None:
        """A Files or Batches API call: logged in `batch_log`, maybe failed by `batch_api_faults`, then routed."""
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        with self.state.lock:
            fault = self.state.batch_api_faults.popleft() if self.state.batch_api_faults else None
            self.state.batch_log.append({"method": method, "path": path, "time": time.monotonic(), "fault": fault})
        assert fault in (None, *BATCH_API_FAULTS), fault
        if fault == "429":
            return self._reply(429, api_error("rate limited", "rate_limit"), {"retry-after-ms": "20"})
        if fault == "500":
            return self._reply(500, api_error("internal error", "server_error"))
        routes = [("POST", r"/files", self._upload), ("GET", r"/files/([^/]+)", self._file),
                  ("GET", r"/files/([^/]+)/content", self._file_content), ("DELETE", r"/files/([^/]+)", self._delete),
                  ("POST", r"/batches", self._create_batch), ("GET", r"/batches", self._list_batches),
                  ("GET", r"/batches/([^/]+)", self._retrieve_batch),
                  ("POST", r"/batches/([^/]+)/cancel", self._cancel_batch)]
        for verb, pattern, route in routes:
            match = re.fullmatch(r"(?:/v1)?" + pattern, path)
            if verb == method and match:
                with self.state.lock:  # one call at a time, replied before the next can change the stores
                    code, payload = route(*match.groups(), body=body, query=parse_qs(url.query))
                    if isinstance(payload, bytes):
                        return self._send(200, payload, "application/octet-stream")
                    return self._reply(code, payload)
        self._reply(404, api_error(f"unknown endpoint {method} {path}"))


    def _store_file(self, filename: str, purpose: str, content: bytes) -> dict:
        file = {"id": f"file-{secrets.token_hex(12)}", "object": "file", "bytes": len(content),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        self.state.files[file["id"]] = {"object": file, "content": content}
        return file

    def _upload(self, body: bytes, **_) -> tuple[int, dict]:
        fields = parse_multipart(self.headers.get("Content-Type", ""), body)
        if "file" not in fields or "purpose" not in fields:
            return 400, api_error("a multipart form with fields file and purpose is required")
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        if purpose == "batch":
            try:
                batch_requests(content)
            except (ValueError, TypeError) as error:
                return 400, api_error(f"invalid batch input file: {error}")
        return 200, self._store_file(filename or "upload", purpose, content)

    def _file(self, file_id: str, **_) -> tuple[int, dict]:
        if file_id not in self.state.files:
            return 404, api_error(f"No such File object: {file_id}")
        return 200, self.state.files[file_id]["object"]

    def _file_content(self, file_id: str, **_) -> tuple[int, dict | bytes]:
        if file_id not in self.state.files:
            return 404, api_error(f"No such File object: {file_id}")
        return 200, self.state.files[file_id]["content"]

    def _delete(self, file_id: str, **_) -> tuple[int, dict]:
        if self.state.files.pop(file_id, None) is None:
            return 404, api_error(f"No such File object: {file_id}")
        return 200, {"id": file_id, "object": "file", "deleted": True}

    def _create_batch(self, body: bytes, **_) -> tuple[int, dict]:
        request = json.loads(body)
        file = self.state.files.get(request.get("input_file_id", ""))
        if file is None:
            return 400, api_error(f"unknown input_file_id {request.get('input_file_id')!r}")
        if request.get("endpoint") != CHAT_PATH:
            return 400, api_error(f"this server only batches {CHAT_PATH}, not {request.get('endpoint')!r}")
        requests = batch_requests(file["content"])
        now = int(time.time())
        batch = {"id": f"batch_{secrets.token_hex(12)}", "object": "batch", "endpoint": request["endpoint"],
                 "model": requests[0]["body"]["model"], "input_file_id": file["object"]["id"],
                 "completion_window": request.get("completion_window", "24h"), "status": "validating",
                 "created_at": now, "expires_at": now + 86400, "metadata": request.get("metadata"),
                 "request_counts": {"total": len(requests), "completed": 0, "failed": 0},
                 "output_file_id": None, "error_file_id": None, "errors": None}
        self.state.batches[batch["id"]] = {"batch": batch, "requests": requests, "retrieves": 0}
        return 200, batch

    def _list_batches(self, query: dict[str, list[str]], **_) -> tuple[int, dict]:
        batches = [entry["batch"] for entry in reversed(self.state.batches.values())]  # newest first
        if "after" in query:
            ids = [batch["id"] for batch in batches]
            batches = batches[ids.index(query["after"][0]) + 1:] if query["after"][0] in ids else []
        limit = int(query.get("limit", ["20"])[0])
        page = batches[:limit]
        return 200, {"object": "list", "data": page, "has_more": len(batches) > limit,
                     "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    def _retrieve_batch(self, batch_id: str, **_) -> tuple[int, dict]:
        """Advance the batch one poll: in_progress for `polls_until_done` retrieves, then it finishes."""
        entry = self.state.batches.get(batch_id)
        if entry is None:
            return 404, api_error(f"No batch found with id {batch_id!r}")
        batch, now = entry["batch"], int(time.time())
        if batch["status"] == "cancelling":
            batch.update(status="cancelled", cancelled_at=now)
        elif batch["status"] in ("validating", "in_progress"):
            entry["retrieves"] += 1
            if entry["retrieves"] <= self.state.polls_until_done:
                batch["status"] = "in_progress"
                batch.setdefault("in_progress_at", now)
            else:
                self._finish(batch, entry["requests"], now)
        return 200, batch

    def _finish(self, batch: dict, requests: list[dict], now: int) -> None:
        output, errors = run_batch(self.state, requests)
        batch["output_file_id"] = self._store_file(f"{batch['id']}_output.jsonl", "batch_output", jsonl(output))["id"]
        if errors:
            batch["error_file_id"] = self._store_file(f"{batch['id']}_error.jsonl", "batch_output", jsonl(errors))["id"]
        batch["request_counts"] = {"total": len(requests), "completed": len(output), "failed": len(errors)}
        expired = any(line["error"] and line["error"]["code"] == "batch_expired" for line in errors)
        batch.setdefault("in_progress_at", now)
        batch.update(finalizing_at=now, **({"status": "expired", "expired_at": now} if expired else
                                            {"status": "completed", "completed_at": now}))

    def _cancel_batch(self, batch_id: str, **_) -> tuple[int, dict]:
        entry = self.state.batches.get(batch_id)
        if entry is None:
            return 404, api_error(f"No batch found with id {batch_id!r}")
        batch = entry["batch"]
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        elif batch["status"] not in ("cancelling", "cancelled"):
            return 400, api_error(f"Cannot cancel a batch with status {batch['status']!r}")
        return 200, batch


# serve_forever notices shutdown() only at its next poll: the default 0.5 s was half a second of every test's
# teardown
SHUTDOWN_POLL_S = 0.02


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # http.server's default backlog of 5 drops connection attempts when a client opens many at once;
    # the dropped SYN is retried a second later, past short test timeouts, and a request that never
    # reached the server would be counted as an attempt. Real servers listen with far larger backlogs.
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout) leaves a broken pipe behind; that is the point, not news."""


def serve(handler: type[LoopbackHandler], state: object, port: int = 0) -> ThreadingHTTPServer:
    """Serve `handler` bound to `state` on loopback (a free port, or `port`) in a daemon thread."""
    server = QuietServer(("127.0.0.1", port), type("BoundHandler", (handler,), {"state": state}))
    threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True).start()
    return server


def start_server(state: ServerState, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve on loopback (a free port, or `port`) in a daemon thread; returns the server and its /v1 base URL."""
    server = serve(Handler, state, port)
    return server, f"http://127.0.0.1:{server.server_port}/v1"
