"""How a chat-completions request travels: aiohttp, calibrate's lean HTTP/1.1 client, or the `openai` SDK.

All three start from the official `openai.AsyncOpenAI` client, which owns the endpoint, the API key and
the headers the SDK sends; all three return the reply with its headers (the pacer reads the providers'
rate limits there) and raise the call layer's StatusError / ConnectionFailure, so retries, pacing and
failures behave the same whichever carries the bytes.

- `aiohttp` (default): the SDK's URL, key and headers over one pooled aiohttp session (the environment's
  proxy for the endpoint, if any, looked up once), a kept library
  that speaks TLS, proxies, encodings and the connection edge cases of real providers. At real judge
  latencies (seconds) and provider limits, a leaner client's CPU saving buys nothing.
- `lean` (opt-in, for a server on loopback or the LAN, e.g. vLLM): keep-alive HTTP/1.1 connections driven
  by an asyncio protocol, the replies parsed by `httptools`. It costs about half of aiohttp's CPU per
  request, which matters only when a fast local server answers thousands of requests a second on a
  small machine (docs/rate-limits.md has the figures). No proxies: when HTTP(S)_PROXY applies to the
  endpoint, aiohttp carries the requests.
- `sdk`: every request through the SDK itself; its per-request work (request options, parameter
  transformation, response machinery) costs 1.5 to 2.5 ms of CPU, which caps a 2-core machine at a
  few hundred judgments per second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.request
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any, Mapping, Protocol
from urllib.parse import urlsplit

import orjson

from calibrate.judging.calls import ConnectionFailure, Reply, StatusError, sdk_failures

if TYPE_CHECKING:
    import openai

TRANSPORTS = ("aiohttp", "lean", "sdk")
log = logging.getLogger("calibrate")


class ChatTransport(Protocol):
    async def post(self, body: dict[str, Any]) -> Reply:
        """POST one chat-completions body; return the raw reply bytes with the reply's headers (the
        pacer reads the rate limits there), or raise a call-layer error."""

    async def close(self) -> None:
        """Release connections."""


def _message(content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return content[:200].decode("utf-8", "replace")


def _sdk_headers(client: openai.AsyncOpenAI) -> dict[str, str]:
    headers: Mapping[str, Any] = {**client.default_headers, **client.auth_headers}
    return {name: value for name, value in headers.items() if isinstance(value, str)}


class SdkTransport:
    """Every request through the SDK's `chat.completions` (its raw response: the bytes and headers, no model built)."""

    def __init__(self, client: openai.AsyncOpenAI):
        self.client = client

    async def post(self, body: dict[str, Any]) -> Reply:
        import openai

        with sdk_failures(openai):
            reply = await self.client.chat.completions.with_raw_response.create(**body)
            return Reply(reply.content, reply.headers)

    async def close(self) -> None:
        await self.client.close()


class AiohttpTransport:
    """The SDK client's URL, key and headers, sent over one pooled aiohttp session."""

    def __init__(self, client: openai.AsyncOpenAI, concurrency: int, timeout_s: float):
        self.client = client
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        # The proxy the environment names for the endpoint, looked up once: aiohttp's trust_env looks up
        # the proxy and ~/.netrc on every request, each in a worker thread, which halves its throughput.
        self.proxy = env_proxy(self.url)
        import aiohttp  # here, not at the top: importing calibrate stays light

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
            # a connection not open by half the reply's time is a connection failure, reported as such
            # (aiohttp reports a connect cut short by the total timeout as any other timeout)
            timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s / 2), headers=_sdk_headers(client),
        )

    async def post(self, body: dict[str, Any]) -> Reply:
        import aiohttp  # here, not at the top: importing calibrate stays light

        try:
            async with self.session.post(self.url, data=orjson.dumps(body), proxy=self.proxy) as reply:
                content = await reply.read()
                headers = {name.lower(): value for name, value in reply.headers.items()}
                if reply.status >= 400:
                    raise StatusError(reply.status, headers, _message(content))
                return Reply(content, headers)
        except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: caught first
            raise ConnectionFailure("timed out connecting to the server") from None
        except asyncio.TimeoutError:
            raise ConnectionFailure("timed out waiting for the server", slow_reply=True) from None
        except aiohttp.ClientError as error:
            raise ConnectionFailure(f"connection failed: {type(error).__name__}: {error}") from None

    async def close(self) -> None:
        await self.session.close()
        await self.client.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; `httptools` calls the on_* methods."""

    def __init__(self, pool: LeanTransport):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        import httptools  # here, not at the top: importing calibrate stays light

        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        import httptools  # here, not at the top: importing calibrate stays light

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

    def fail(self, reason: str, slow_reply: bool = False) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionFailure(reason, slow_reply))
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self) -> None:
        self.fail("timed out waiting for the server", slow_reply=True)

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
                 *(f"{name}: {value}" for name, value in _sdk_headers(client).items() if name.lower() not in skip)]
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
        except asyncio.TimeoutError:
            raise ConnectionFailure("timed out connecting to the server") from None
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
            raise StatusError(status, headers, _message(content))
        return Reply(content, headers)

    async def close(self) -> None:
        for connection in list(self.open):
            connection.transport.close()
        await self.client.close()


def env_proxy(base_url: str) -> str | None:
    """The proxy the variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) route this endpoint through."""
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    return proxy if proxy and not urllib.request.proxy_bypass(url.hostname or "") else None


def openai_client(api_key: str, base_url: str, timeout_s: float, aiohttp_pool: bool = False) -> openai.AsyncOpenAI:
    """The SDK client, its own retries off (the call layer retries). The SDK is imported here, not at
    module load: offline judges never pay its half-second import."""
    import openai

    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s,
                              http_client=openai.DefaultAioHttpClient() if aiohttp_pool else None)


def make_transport(kind: str, api_key: str, base_url: str, concurrency: int, timeout_s: float) -> ChatTransport:
    """Build the transport inside the running event loop (aiohttp sessions belong to one loop)."""
    client = openai_client(api_key, base_url, timeout_s, aiohttp_pool=kind == "sdk")
    if kind == "sdk":
        return SdkTransport(client)
    if kind == "lean" and env_proxy(base_url) is None:
        return LeanTransport(client, timeout_s)
    if kind == "lean":
        log.info("a proxy is set for %s: requests go through aiohttp, which speaks to proxies", base_url)
    return AiohttpTransport(client, concurrency, timeout_s)
