"""A fast, fake OpenAI-compatible chat-completions server with a fixed artificial latency.

Benchmarks of the judging client need a server whose cost is known and small, so that what is
measured is the client (connection handling, JSON, SDK overhead) and the latency it has to hide,
not a model. Every reply is the same valid judgment; only id, model and token counts vary.

Run (from the repo root):
    python -m tests.fakes.latency_server --port 0 --latency-ms 200
The first stdout line is `PORT <n>`. From Python, `start_in_subprocess(latency_ms)` does the same
and returns the process and its base URL (`http://127.0.0.1:<n>`); the caller terminates it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web
from aiohttp.web_runner import GracefulExit

REPO = Path(__file__).resolve().parents[2]  # the repo root, from which `-m tests.fakes.latency_server` runs
HOST = "127.0.0.1"
DEFAULT_MODEL = "bench-judge"
COMPLETION_TOKENS = 60

# The judgment every reply carries: valid for calibrate.judging.base.validate_fields.
JUDGMENT: dict[str, object] = {
    "person_1_core_position": "Supports the proposal because it widens access.",
    "person_1_has_no_information": False,
    "person_1_refusal": False,
    "person_2_core_position": "Supports the proposal, with caveats about cost.",
    "person_2_has_no_information": False,
    "person_2_refusal": False,
    "key_points_of_alignment": [],
    "key_points_of_opposition": [],
    "alignment_score": 1,
}


def _reply_template() -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
    """Split a full chat.completion JSON around its variable fields, once, at import.

    The handler then only joins bytes: id, created, model and prompt/total tokens are the
    only per-request values, so no JSON encoding happens per request except the model string.
    """
    marks = {"id": "\x00ID\x00", "created": "\x00CREATED\x00", "model": "\x00MODEL\x00",
             "prompt": "\x00PROMPT\x00", "total": "\x00TOTAL\x00"}
    reply = {
        "id": marks["id"],
        "object": "chat.completion",
        "created": marks["created"],
        "model": marks["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": json.dumps(JUDGMENT), "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": marks["prompt"], "completion_tokens": COMPLETION_TOKENS,
                  "total_tokens": marks["total"]},
        "system_fingerprint": "fp_bench",
    }
    text = json.dumps(reply, separators=(",", ":"))
    parts: list[bytes] = []
    for key in ("id", "created", "model", "prompt", "total"):
        head, text = text.split(json.dumps(marks[key]), 1)  # the mark with its quotes
        parts.append(head.encode())
    parts.append(text.encode())
    return tuple(parts)  # type: ignore[return-value]


_P0, _P1, _P2, _P3, _P4, _P5 = _reply_template()
_ids = itertools.count(1)


def _render(model_json: bytes, prompt_tokens: int) -> bytes:
    """The reply body for one request (model_json is the JSON-encoded model name)."""
    return b"".join((
        _P0, b'"chatcmpl-bench%x"' % next(_ids), _P1,
        b"%d" % int(time.time()), _P2,
        model_json, _P3,
        b"%d" % prompt_tokens, _P4,
        b"%d" % (prompt_tokens + COMPLETION_TOKENS), _P5,
    ))


def make_app(latency_ms: float) -> web.Application:
    """The aiohttp application; latency_ms > 0 sleeps that long before each completion."""
    delay = latency_ms / 1000.0
    default_model_json = json.dumps(DEFAULT_MODEL).encode()

    async def chat_completions(request: web.Request) -> web.Response:
        raw = await request.read()
        text = raw.decode("utf-8")
        try:
            body = json.loads(text)
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                     status=400)
        model = body.get("model") if isinstance(body, dict) else None
        model_json = json.dumps(model).encode() if isinstance(model, str) else default_model_json
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=_render(model_json, len(text) // 4), content_type="application/json")

    models_body = json.dumps({"object": "list", "data": [
        {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "calibrate-bench"},
    ]}).encode()

    async def list_models(_request: web.Request) -> web.Response:
        return web.Response(body=models_body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    return app


async def serve(port: int, latency_ms: float) -> None:
    """Bind, announce `PORT <n>` on stdout, then serve until killed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    # access_log=None: per-request logging costs more than the handler itself.
    runner = web.AppRunner(make_app(latency_ms), access_log=None, handle_signals=True)
    await runner.setup()
    # A deep backlog: a client opening hundreds of connections at once must not see SYN drops
    # (each one costs a 1 s retransmit and would look like server slowness).
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _run_loop(port: int, latency_ms: float) -> None:
    """Use uvloop when it happens to be installed (it is optional, never required)."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(serve(port, latency_ms))
    else:
        uvloop.run(serve(port, latency_ms))


def start_in_subprocess(latency_ms: float, timeout: float = 15.0) -> tuple[subprocess.Popen[bytes], str]:
    """Launch the server in its own process (its own core) and wait for its PORT line.

    Returns (process, base_url) where base_url has no /v1 suffix. The caller terminates the
    process. A separate process keeps the server's event loop from competing with the client's.
    """
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.latency_server", "--port", "0",
                             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"latency server printed no PORT line within {timeout}s")
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("PORT "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"latency server did not start: first line {line!r}, exit {proc.poll()}")
    return proc, f"http://{HOST}:{int(line.split()[1])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as `PORT <n>`)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep before each completion; 0 = none")
    args = parser.parse_args()
    try:
        _run_loop(args.port, args.latency_ms)
    except (KeyboardInterrupt, GracefulExit):  # SIGINT / SIGTERM: a normal stop, exit 0
        pass


if __name__ == "__main__":
    main()
