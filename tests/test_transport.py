"""The aiohttp transport (the default) against a raw socket server that writes exactly the bytes each test
wants: the reply framings real servers use (length, chunked, gzip, read-to-close), connection reuse and
servers dropping idle connections, malformed replies, timeouts (each failure of its kind), TLS with the
system's or a configured CA, and the environment's proxy."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from calibrate.judging.base import FailureKind
from calibrate.judging.calls import ConnectionFailure, StatusError
from calibrate.judging.configfile import DEFAULT_MAX_REPLY_BYTES
from calibrate.judging.transport import AiohttpTransport, make_transport

Reply = Callable[[bytes, bytes], tuple[bytes, bool]]  # (request head, body) -> (reply bytes, close after)
BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}
REPO = Path(__file__).resolve().parent.parent


class RawServer:
    """Reads HTTP/1.1 requests off each connection and answers with whatever `reply` returns."""

    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None):
        self.reply, self.tls = reply, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls:
                sock = self.tls.wrap_socket(sock, server_side=True)
            stream = sock.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = stream.readline()
                    if not line:
                        return
                    head += line
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = stream.read(length)
                self.requests.append((head, body))
                data, close = self.reply(head, body)
                sock.sendall(data)
                if close:
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()

    def base_url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.listener.close()


def reply_bytes(status: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def with_length(status: str, body: bytes, **headers: str) -> bytes:
    return reply_bytes(status, body, {"Content-Length": str(len(body)), **headers})


def aiohttp_transport(base_url: str, timeout_s: float = 5.0) -> AiohttpTransport:
    transport = make_transport("aiohttp", "sk-test", base_url, 4, timeout_s, DEFAULT_MAX_REPLY_BYTES)
    assert isinstance(transport, AiohttpTransport)
    return transport


def post_many(base_url: str, times: int = 1, timeout_s: float = 5.0, pause_s: float = 0.0) -> list[bytes]:
    async def go() -> list[bytes]:
        transport = aiohttp_transport(base_url, timeout_s)
        try:
            replies = []
            for _ in range(times):
                replies.append((await transport.post(BODY)).value)
                await asyncio.sleep(pause_s)
            return replies
        finally:
            await transport.close()

    return asyncio.run(go())


@pytest.fixture
def serve():
    servers: list[RawServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_requests_carry_the_json_body_and_sdk_headers_and_reuse_one_connection(serve):
    server = serve(lambda head, body: (with_length("200 OK", body), False))
    replies = post_many(server.base_url(), times=5)
    assert [json.loads(reply) for reply in replies] == [BODY] * 5
    head = server.requests[0][0].decode("latin-1")
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Authorization: Bearer sk-test\r\n" in head
    assert "Content-Type: application/json\r\n" in head and "User-Agent: AsyncOpenAI/Python" in head
    assert server.connections == 1


def test_chunked_and_gzip_replies_are_decoded(serve):
    payload = gzip.compress(b'{"ok": true}')
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:7], payload[7:])) + b"0\r\n\r\n"
    server = serve(lambda head, body: (
        reply_bytes("200 OK", chunks, {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"}), False))
    assert post_many(server.base_url(), times=2) == [b'{"ok": true}'] * 2
    assert server.connections == 1


def test_a_reply_without_length_ends_with_the_connection(serve):
    server = serve(lambda head, body: (reply_bytes("200 OK", b'{"old": "style"}', {"Connection": "close"}), True))
    assert post_many(server.base_url(), times=3) == [b'{"old": "style"}'] * 3
    assert server.connections == 3


def test_connection_close_and_idle_connections_dropped_by_the_server_are_not_reused(serve):
    # the server closes after every reply without saying so: the next request must use a new connection
    server = serve(lambda head, body: (with_length("200 OK", b"{}"), True))
    assert post_many(server.base_url(), times=3, pause_s=0.05) == [b"{}"] * 3
    assert server.connections == 3


def test_error_statuses_raise_status_errors_with_headers_message_and_kind(serve):
    error = json.dumps({"error": {"message": "slow down"}}).encode()
    server = serve(lambda head, body: (with_length("429 Too Many Requests", error, **{"Retry-After": "3"}), False))
    with pytest.raises(StatusError) as raised:
        post_many(server.base_url())
    assert raised.value.status == 429 and raised.value.headers["retry-after"] == "3"
    assert raised.value.kind is FailureKind.RATE_LIMITED and "slow down" in str(raised.value)


def failure_of(base_url: str, timeout_s: float = 5.0) -> ConnectionFailure:
    with pytest.raises(ConnectionFailure) as raised:
        post_many(base_url, timeout_s=timeout_s)
    return raised.value


def test_malformed_replies_truncated_bodies_and_silence_are_connection_failures_of_their_kind(serve):
    garbage = serve(lambda head, body: (b"NOT HTTP AT ALL\r\n\r\n", False))
    assert failure_of(garbage.base_url()).kind is FailureKind.CONNECTION
    cut = serve(lambda head, body: (reply_bytes("200 OK", b'{"choi', {"Content-Length": "200"}), True))
    assert failure_of(cut.base_url()).kind is FailureKind.CONNECTION
    silent = serve(lambda head, body: (b"", False))
    slow = failure_of(silent.base_url(), timeout_s=0.3)
    assert slow.kind is FailureKind.TIMEOUT and slow.slow_reply  # it took the request: slow, not gone
    closed_port = socket.create_server(("127.0.0.1", 0))
    port = closed_port.getsockname()[1]
    closed_port.close()
    refused = failure_of(f"http://127.0.0.1:{port}/v1")
    assert refused.kind is FailureKind.CONNECTION and not refused.slow_reply


def test_https_verifies_the_server_certificate(serve, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(lambda head, body: (with_length("200 OK", b'{"secure": 1}'), False), tls=context)
    refused = failure_of(server.base_url("https"))  # an unknown certificate is refused
    assert refused.kind is FailureKind.CONNECTION and "CERTIFICATE_VERIFY_FAILED" in str(refused)
    # trusted, as a corporate CA would be: aiohttp reads SSL_CERT_FILE when it is imported, so in a process of its own
    script = ("import asyncio, sys; from tests.test_transport import post_many; "
              f"sys.stdout.write(repr(post_many({server.base_url('https')!r}, times=2)))")
    trusted = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                             cwd=REPO, env={**os.environ, "SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout == repr([b'{"secure": 1}'] * 2)


def test_the_proxy_the_environment_names_for_the_endpoint_is_used(monkeypatch):
    async def proxy_of(base_url: str) -> str | None:
        transport = aiohttp_transport(base_url)
        await transport.close()
        return transport.proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert asyncio.run(proxy_of("https://api.example.com/v1")) == "http://proxy.internal:3128"
    assert asyncio.run(proxy_of("http://api.example.com/v1")) is None  # no proxy for plain http
    assert asyncio.run(proxy_of("https://localhost:8000/v1")) is None  # bypassed
