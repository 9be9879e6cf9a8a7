"""The hand-written HTTP/1.1 client that was once one of calibrate's transports, kept as the transport
benchmark's reference (benchmarks/bare_clients.py, benchmarks/bench_judging.py --transport lean); the
product carries its requests with aiohttp or the SDK (calibrate/judging/transport.py).

Keep-alive HTTP/1.1 connections driven by an asyncio protocol, the replies parsed by `httptools`
(the `bench` extra). It costs about half of aiohttp's CPU per request, which shows only when a
zero-latency loopback server answers thousands of requests a second. No proxies. It raises the call
layer's StatusError / ConnectionFailure, so calibrate's runner can drive it like any transport.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httptools
import orjson

from calibrate.judging.base import FailureKind
from calibrate.judging.calls import ConnectionFailure, Reply, StatusError
from calibrate.judging.configfile import DEFAULT_MAX_REPLY_BYTES
from calibrate.judging.transport import error_text, openai_client, sdk_headers

if TYPE_CHECKING:
    import openai


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; `httptools` calls the on_* methods."""

    def __init__(self, pool: LeanTransport):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.fail(f"connection failed: malformed HTTP reply ({error})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.waiter is None or self.waiter.done():
            return
        delimited = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        if self.headers_done and not delimited:  # an HTTP/1.0-style reply ends where the connection does
            self.on_message_complete()
        else:
            reason = f" ({exc})" if exc else ""
            self.waiter.set_exception(ConnectionFailure(f"connection failed: the server closed the connection{reason}"))

    def fail(self, reason: str, kind: FailureKind = FailureKind.CONNECTION, slow_reply: bool = False) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionFailure(reason, kind, slow_reply))
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self) -> None:
        self.fail("timed out waiting for the server", FailureKind.TIMEOUT, slow_reply=True)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, reply = self.waiter, (self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.waiter, self.headers, self.body, self.headers_done = None, {}, [], False
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        if self.closed:
            return
        if self.parser.should_keep_alive():
            self.pool.idle.append(self)
        else:
            self.transport.close()


class LeanTransport:
    """POSTs over reused keep-alive connections; a connection per request in flight, none shared.

    The number of connections is bounded by the requests in flight, which the runner's worker
    count bounds. A connection the server closed while idle is dropped from the pool when it closes.
    """

    def __init__(self, client: openai.AsyncOpenAI, timeout_s: float):
        self.client = client
        url = urlsplit(str(client.base_url).rstrip("/") + "/chat/completions")
        secure = url.scheme == "https"
        self.host, self.port = url.hostname or "localhost", url.port or (443 if secure else 80)
        self.ssl = ssl.create_default_context() if secure else None
        host_header = self.host if url.port is None else f"{self.host}:{url.port}"
        skip = {"host", "content-type", "content-length", "connection", "accept-encoding", "transfer-encoding"}
        lines = [f"POST {url.path}{'?' + url.query if url.query else ''} HTTP/1.1", f"Host: {host_header}",
                 "Content-Type: application/json", "Accept-Encoding: gzip, deflate", "Connection: keep-alive",
                 *(f"{name}: {value}" for name, value in sdk_headers(client).items() if name.lower() not in skip)]
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.timeout_s = timeout_s
        self.idle: deque[_Connection] = deque()
        self.open: set[_Connection] = set()

    def forget(self, connection: _Connection) -> None:
        self.open.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    async def _connection(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl), self.timeout_s)
        except TimeoutError:
            raise ConnectionFailure("timed out connecting to the server", FailureKind.TIMEOUT) from None
        except OSError as error:  # refused, unreachable, TLS failures (ssl.SSLError is an OSError)
            raise ConnectionFailure(f"connection failed: {type(error).__name__}: {error}") from None
        self.open.add(connection)
        return connection

    async def post(self, body: dict[str, Any]) -> Reply:
        data = orjson.dumps(body)
        connection = await self._connection()
        loop = asyncio.get_running_loop()
        waiter = connection.waiter = loop.create_future()
        connection.transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(data), data))
        timer = loop.call_later(self.timeout_s, connection.timed_out)
        try:
            status, headers, content = await waiter
        except asyncio.CancelledError:
            connection.fail("cancelled")  # the reply still on its way must not meet the next request
            raise
        finally:
            timer.cancel()
        encoding = headers.get("content-encoding", "identity")
        if encoding in ("gzip", "deflate"):
            try:
                content = zlib.decompress(content, zlib.MAX_WBITS | 32)  # 32: gzip or zlib header, detected
            except zlib.error as error:
                raise ConnectionFailure(f"the server's {encoding} reply does not decompress ({error})") from None
        elif encoding != "identity":
            raise ConnectionFailure(f"the server replied with unsupported content-encoding {encoding!r}")
        if status >= 400:
            raise StatusError(status, headers, error_text(content))
        return Reply(content, headers)

    async def close(self) -> None:
        for connection in list(self.open):
            connection.transport.close()
        await self.client.close()


def lean_transport(api_key: str, base_url: str, timeout_s: float) -> LeanTransport:
    """A lean transport to an OpenAI-compatible endpoint (build it inside the running event loop)."""
    return LeanTransport(openai_client(api_key, base_url, timeout_s, DEFAULT_MAX_REPLY_BYTES), timeout_s)
