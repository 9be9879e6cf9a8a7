"""How a chat-completions request travels: aiohttp or the `openai` SDK.

Both start from the official `openai.AsyncOpenAI` client, which owns the endpoint, the API key and
the headers the SDK sends; both return the reply with its headers (the pacer reads the providers'
rate limits there) and raise the call layer's StatusError / ConnectionFailure, so retries, pacing and
failures behave the same whichever carries the bytes. Neither follows a redirect (a 3xx is a typed
failure naming its target), and both read a reply within the config's `max_reply_bytes`, decoded, as it
arrives (replies.py).

- `aiohttp` (default): the SDK's URL, key and headers over one pooled aiohttp session (the environment's
  proxy for the endpoint, if any, looked up once), a kept library that speaks TLS, proxies, encodings
  and the connection edge cases of real providers. It does some 2,000 requests a second to a
  zero-latency loopback server on a 2-core machine; no judge answers that fast. (A hand-written
  HTTP/1.1 client is kept in benchmarks/lean_transport.py as the benchmarks' reference, not here.)
- `sdk`: every request through the SDK itself; its per-request work (request options, parameter
  transformation, response machinery) costs 1.5 to 2.5 ms of CPU, which caps a 2-core machine at a
  few hundred judgments per second.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

from calibrate.judging.base import FailureKind
from calibrate.judging.calls import ConnectionFailure, Reply, StatusError, sdk_failures

if TYPE_CHECKING:
    import openai

TRANSPORTS = ("aiohttp", "sdk")


class ChatTransport(Protocol):
    async def post(self, body: dict[str, Any]) -> Reply:
        """POST one chat-completions body; return the raw reply bytes with the reply's headers (the
        pacer reads the rate limits there), or raise a call-layer error."""

    async def close(self) -> None:
        """Release connections."""


def error_text(content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return content[:200].decode("utf-8", "replace")


def sdk_headers(client: openai.AsyncOpenAI) -> dict[str, str]:
    headers: Mapping[str, Any] = {**client.default_headers, **client.auth_headers}
    return {name: value for name, value in headers.items() if isinstance(value, str)}


class SdkTransport:
    """Every request through the SDK's `chat.completions` (its raw response: the bytes and headers, no model
    built; the client's response hook bounds the body as it is read)."""

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

    def __init__(self, client: openai.AsyncOpenAI, concurrency: int, timeout_s: float, max_reply_bytes: int):
        self.client = client
        self.max_reply_bytes = max_reply_bytes
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        # The proxy the environment names for the endpoint, looked up once: aiohttp's trust_env looks up
        # the proxy and ~/.netrc on every request, each in a worker thread, which halves its throughput.
        self.proxy = env_proxy(self.url)
        import aiohttp  # here, not at the top: importing calibrate stays light

        from calibrate.judging.replies import ACCEPT_ENCODING

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
            auto_decompress=False,  # decoded by BoundedBody, a piece at a time and counted
            # a connection not open by half the reply's time is a connection failure, reported as such
            # (aiohttp reports a connect cut short by the total timeout as any other timeout)
            timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s / 2),
            headers={**sdk_headers(client), "Accept-Encoding": ACCEPT_ENCODING},
        )

    async def post(self, body: dict[str, Any]) -> Reply:
        import aiohttp  # here, not at the top: importing calibrate stays light

        from calibrate.judging.replies import BoundedBody, read_bounded

        try:
            async with self.session.post(self.url, data=orjson.dumps(body), proxy=self.proxy,
                                         allow_redirects=False) as reply:
                headers = {name.lower(): value for name, value in reply.headers.items()}
                if 300 <= reply.status < 400:  # never followed, never read
                    raise StatusError(reply.status, headers, "")
                encodings = reply.headers.getall("content-encoding", [])
                content = await read_bounded(reply.content.iter_any(),
                                             BoundedBody(",".join(encodings).split(","), self.max_reply_bytes))
                if reply.status >= 400:
                    raise StatusError(reply.status, headers, error_text(content))
                return Reply(content, headers)
        except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: caught first
            raise ConnectionFailure("timed out connecting to the server", FailureKind.TIMEOUT) from None
        except TimeoutError:
            raise ConnectionFailure("timed out waiting for the server", FailureKind.TIMEOUT, slow_reply=True) from None
        except aiohttp.ClientError as error:
            raise ConnectionFailure(f"connection failed: {type(error).__name__}: {error}") from None

    async def close(self) -> None:
        await self.session.close()
        await self.client.close()


def env_proxy(base_url: str) -> str | None:
    """The proxy the variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) route this endpoint through."""
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    return proxy if proxy and not urllib.request.proxy_bypass(url.hostname or "") else None


def openai_client(api_key: str, base_url: str, timeout_s: float, max_reply_bytes: int | None,
                  aiohttp_pool: bool = False) -> openai.AsyncOpenAI:
    """The SDK client, its own retries off (the call layer retries), redirects not followed and replies
    bounded (replies.py; None: a download whose lines are bounded instead). The SDK is imported here,
    not at module load: offline judges never pay its half-second import."""
    import openai

    from calibrate.judging.replies import sdk_http_client

    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s,
                              http_client=sdk_http_client(openai, max_reply_bytes, aiohttp_pool))


def make_transport(kind: str, api_key: str, base_url: str, concurrency: int, timeout_s: float,
                   max_reply_bytes: int) -> ChatTransport:
    """Build the transport inside the running event loop (aiohttp sessions belong to one loop)."""
    client = openai_client(api_key, base_url, timeout_s, max_reply_bytes, aiohttp_pool=kind == "sdk")
    if kind == "sdk":
        return SdkTransport(client)
    return AiohttpTransport(client, concurrency, timeout_s, max_reply_bytes)
