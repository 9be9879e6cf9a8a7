"""A real OpenAI-compatible chat-completions server on loopback, with faults the tests inject.

It judges like a tiny, deterministic LLM judge: it reads the two answers between calibrate's prompt
markers, flags an answer as a refusal when it contains "decline", and scores 2 when both answers start
with the same word, else -2. A model whose name contains "order-biased" instead scores 2 when the
first answer is at least as long as the second, else -2, so swapping the answers moves it; one whose
name contains "gullible" scores 2 whenever an answer tells it how to score (mentions alignment_score). Faults are queued (each request takes the next one) or tied to a marker
text inside the prompt (applied on every request that contains it). Every request is logged.

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
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = re.compile(r"<<<RESPONSE_(\d)\n(.*?)\nRESPONSE_\1>>>", re.DOTALL)
FAULTS = ("429", "429-retry-after-1s", "500", "401", "timeout", "truncated-body", "invalid", "no-json", "length",
          "refusal", "content-filter", "empty", "reset")
JUDGE_MARKER = "<<<RESPONSE_"


@dataclass
class ServerState:
    base_url: str = ""  # set once the server listens
    latency_s: float = 0.0
    timeout_sleep_s: float = 2.0
    rejects_response_format: bool = False  # like a server without structured output
    queued: deque = field(default_factory=deque)
    by_marker: dict[str, str] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    die_after: int | None = None  # answer this many requests, then reset every connection
    died: threading.Event = field(default_factory=threading.Event)
    hold: threading.Event | None = None  # when set to an Event: replies wait until it is set

    def queue(self, *faults: str) -> None:
        for fault in faults:
            assert fault in FAULTS, fault
        with self.lock:
            self.queued.extend(faults)

    def next_fault(self, prompt: str) -> str | None:
        for marker, fault in self.by_marker.items():
            if marker in prompt:
                return fault
        with self.lock:
            return self.queued.popleft() if self.queued else None


def judge_text(prompt: str) -> dict:
    answers = dict(ANSWER.findall(prompt))
    first, second = answers.get("1", ""), answers.get("2", "")
    refusal_1, refusal_2 = "decline" in first.lower(), "decline" in second.lower()
    same_start = first.split()[:1] == second.split()[:1]
    return {
        "person_1_core_position": first[:60], "person_1_has_no_information": False, "person_1_refusal": refusal_1,
        "person_2_core_position": second[:60], "person_2_has_no_information": False, "person_2_refusal": refusal_2,
        "key_points_of_alignment": [], "key_points_of_opposition": [],
        "alignment_score": 2 if (refusal_1 and refusal_2) or same_start else -2,
    }


def generated_answer(question: str) -> str:
    """What the server answers a generation request: the question, transformed, so it can be traced back."""
    return f"ANSWER: {question.upper()}"


def completion(content: str | None, model: str, prompt_chars: int, finish: str = "stop",
               refusal: str | None = None) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": 50, "total_tokens": prompt_chars // 4 + 50},
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def log_message(self, *args) -> None:
        """Quiet; the state keeps a structured log instead."""

    def _reply(self, code: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close the connection at once with a TCP reset: the client gets no reply at all."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        prompt = "\n".join(m["content"] for m in request["messages"])
        model = request["model"]
        with self.state.lock:
            dead = self.state.die_after is not None and len(self.state.log) >= self.state.die_after
        if dead:
            self.state.died.set()
            return self._reset()
        fault = self.state.next_fault(prompt)
        with self.state.lock:
            self.state.log.append({"fault": fault, "prompt": prompt, "time": time.monotonic(),
                                   "authorization": self.headers.get("Authorization"), "body": request})
        if self.state.hold is not None:
            self.state.hold.wait(60)
        if self.state.latency_s:
            time.sleep(self.state.latency_s)
        if fault == "reset":
            return self._reset()
        if self.state.rejects_response_format and "response_format" in request:
            return self._reply(400, {"error": {"message": "unsupported parameter: response_format"}})
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
        if fault == "truncated-body":
            body = json.dumps(completion(json.dumps(judge_text(prompt)), model, len(prompt))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if JUDGE_MARKER not in prompt:
            return self._generate(request, model, prompt, fault)
        judgment = judge_text(prompt)
        if "gullible" in model and any("alignment_score" in answer for answer in dict(ANSWER.findall(prompt)).values()):
            judgment["alignment_score"] = 2  # a judge that obeys text in the answers telling it how to score
        if "order-biased" in model:  # a judge swayed by position: it sides with the longer first answer
            answers = dict(ANSWER.findall(prompt))
            judgment["alignment_score"] = 2 if len(answers.get("1", "")) >= len(answers.get("2", "")) else -2
        if fault == "invalid":
            return self._reply(200, completion(json.dumps({**judgment, "alignment_score": 7}), model, len(prompt)))
        if fault == "no-json":
            return self._reply(200, completion("They seem to agree, broadly.", model, len(prompt)))
        if fault == "length":
            return self._reply(200, completion(json.dumps(judgment)[:40], model, len(prompt), finish="length"))
        if fault == "refusal":
            return self._reply(200, completion(None, model, len(prompt), refusal="I can't help with that."))
        content = json.dumps(judgment)
        if request.get("response_format", {}).get("type") is None:
            content = f"Here is my assessment:\n```json\n{content}\n```"  # prose around the JSON
        self._reply(200, completion(content, model, len(prompt)))

    def _generate(self, request: dict, model: str, prompt: str, fault: str | None) -> None:
        """A generation request: answer the last user message deterministically (faults as documented above)."""
        question = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        answer = generated_answer(question)
        if fault == "length":
            return self._reply(200, completion(answer[:20], model, len(prompt), finish="length"))
        if fault == "refusal":
            return self._reply(200, completion(None, model, len(prompt), refusal="I can't help with that."))
        if fault == "content-filter":
            return self._reply(200, completion(None, model, len(prompt), finish="content_filter"))
        if fault == "empty":
            return self._reply(200, completion("", model, len(prompt)))
        self._reply(200, completion(answer, model, len(prompt)))


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # http.server's default backlog of 5 drops connection attempts when a client opens many at once;
    # the dropped SYN is retried a second later, past short test timeouts, and a request that never
    # reached the server would be counted as an attempt. Real servers listen with far larger backlogs.
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (timeout) leaves a broken pipe behind; that is the point, not news."""


def start_server(state: ServerState, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Serve on loopback (a free port, or `port`) in a daemon thread; returns the server and its /v1 base URL."""
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = QuietServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"
