"""How a chat-completions request travels: through the `openai` SDK, or straight over aiohttp.

Both start from the official `openai.AsyncOpenAI` client, which owns the endpoint, the API key and
the headers the SDK sends. `sdk` then makes every request through the client itself (on its
aiohttp transport). `aiohttp` posts the same bytes with the same headers over one aiohttp session:
the SDK's per-request work (building request options, transforming parameters, its response
machinery) costs 1.5 to 2.5 ms of CPU, which caps a 2-core machine at a few hundred judgments per
second, while aiohttp alone needs about a fifth of that (README, "Performance"). Both raise the
call layer's StatusError / ConnectionFailure, so retries and failures behave the same either way.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping, Protocol

import aiohttp
import openai
import orjson

from calibrate.judging.calls import ConnectionFailure, StatusError

TRANSPORTS = ("aiohttp", "sdk")


class ChatTransport(Protocol):
    async def post(self, body: dict[str, Any]) -> bytes:
        """POST one chat-completions body; return the raw reply bytes or raise a call-layer error."""

    async def close(self) -> None:
        """Release connections."""


def _message(content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return content[:200].decode("utf-8", "replace")


class SdkTransport:
    """Every request through `AsyncOpenAI.post`, read back as bytes (no response-model construction)."""

    def __init__(self, client: openai.AsyncOpenAI):
        self.client = client

    async def post(self, body: dict[str, Any]) -> bytes:
        try:
            return await self.client.post("/chat/completions", body=body, cast_to=bytes)
        except openai.APIStatusError as error:
            raise StatusError(error.status_code, error.response.headers, str(error.message)) from None
        except openai.APITimeoutError:
            raise ConnectionFailure("timed out waiting for the server") from None
        except openai.APIConnectionError as error:
            raise ConnectionFailure(f"connection failed: {error}") from None

    async def close(self) -> None:
        await self.client.close()


class AiohttpTransport:
    """The SDK client's URL, key and headers, sent over one pooled aiohttp session."""

    def __init__(self, client: openai.AsyncOpenAI, concurrency: int, timeout_s: float):
        self.client = client
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers: Mapping[str, Any] = {**client.default_headers, **client.auth_headers}
        self.headers = {name: value for name, value in headers.items() if isinstance(value, str)}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
            timeout=aiohttp.ClientTimeout(total=timeout_s), headers=self.headers,
        )

    async def post(self, body: dict[str, Any]) -> bytes:
        try:
            async with self.session.post(self.url, data=orjson.dumps(body)) as reply:
                content = await reply.read()
                if reply.status >= 400:
                    raise StatusError(reply.status, {k.lower(): v for k, v in reply.headers.items()}, _message(content))
                return content
        except asyncio.TimeoutError:
            raise ConnectionFailure("timed out waiting for the server") from None
        except aiohttp.ClientError as error:
            raise ConnectionFailure(f"connection failed: {type(error).__name__}: {error}") from None

    async def close(self) -> None:
        await self.session.close()
        await self.client.close()


def make_transport(kind: str, api_key: str, base_url: str, concurrency: int, timeout_s: float) -> ChatTransport:
    """Build the transport inside the running event loop (aiohttp sessions belong to one loop)."""
    client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s,
                                http_client=openai.DefaultAioHttpClient() if kind == "sdk" else None)
    if kind == "sdk":
        return SdkTransport(client)
    return AiohttpTransport(client, concurrency, timeout_s)
