"""Replies read within bounds: a body is decoded (gzip, deflate or none) and counted as it arrives, so a
100 MB reply or a gzip bomb stops at the judge's `max_reply_bytes` (`ReplyTooLarge`, kind
`reply_too_large`) having cost no more memory than that; and the SDKs' HTTP client never follows a
redirect (a 3xx is the call layer's `StatusError` of kind `redirected`, naming the target).

The aiohttp transport reads its replies through `BoundedBody` itself; the `openai` and `anthropic` SDKs
get `sdk_http_client`, whose response hook puts a `BoundedStream` under every response before a byte of
its body is read, whatever the SDK then reads (a reply, an error body, a model lookup). Batch result
files are read line by line, each line bounded (`bounded_lines`).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import ModuleType

import httpx2

from calibrate.judging.calls import ConnectionFailure, ReplyTooLarge

# Decoded bytes produced per decompression step: a gzip bomb inflates a step at a time, never at once.
PIECE_BYTES = 1 << 16
# What the client accepts; any other content-encoding in a reply is refused, never decoded blindly.
ACCEPT_ENCODING = "gzip, deflate"
KNOWN_ENCODINGS = ("gzip", "x-gzip", "deflate")


class Inflater:
    """One content-encoding's decompressor, drained in pieces of at most PIECE_BYTES."""

    def __init__(self, encoding: str):
        self.raw_fallback = encoding == "deflate"  # "deflate" arrives zlib-wrapped or raw
        self.inflate = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS)
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            if not self.started and self.raw_fallback:
                try:
                    piece = self.inflate.decompress(data, PIECE_BYTES)
                except zlib.error:
                    self.inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                    piece = self.inflate.decompress(data, PIECE_BYTES)
            else:
                piece = self.inflate.decompress(data, PIECE_BYTES)
            self.started = True
            while piece:
                yield piece
                piece = self.inflate.decompress(self.inflate.unconsumed_tail, PIECE_BYTES)
        except zlib.error as error:
            raise ConnectionFailure(f"the reply's compressed body is corrupt ({error})") from None

    def flush(self) -> bytes:
        return self.inflate.flush()


class BoundedBody:
    """A reply's body as it arrives: decoded by its content-encodings (listed as sent; applied in that
    order, so undone in reverse), counted, and refused past `limit` decoded bytes (None: no limit, still
    decoded a piece at a time)."""

    def __init__(self, encodings: Iterable[str], limit: int | None):
        codings = [coding.strip().lower() for coding in encodings if coding.strip().lower() not in ("", "identity")]
        unknown = [coding for coding in codings if coding not in KNOWN_ENCODINGS]
        if unknown:
            raise ConnectionFailure(f"the reply's content-encoding {unknown[0]!r} was not asked for "
                                    f"(accepted: {ACCEPT_ENCODING})")
        self.stages = [Inflater(coding) for coding in reversed(codings)]
        self.limit = limit
        self.size = 0

    def _through(self, stage: int, data: bytes) -> Iterator[bytes]:
        if stage == len(self.stages):
            if data:
                yield data
            return
        for piece in self.stages[stage].feed(data):
            yield from self._through(stage + 1, piece)

    def _counted(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.size += len(piece)
            if self.limit is not None and self.size > self.limit:
                raise ReplyTooLarge(self.limit)
            yield piece

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next raw chunk."""
        return self._counted(self._through(0, data))

    def flush(self) -> Iterator[bytes]:
        """What the decompressors still hold at the end of the body."""
        def rest() -> Iterator[bytes]:
            for stage in range(len(self.stages)):
                yield from self._through(stage + 1, self.stages[stage].flush())
        return self._counted(rest())


async def read_bounded(chunks: AsyncIterable[bytes], body: BoundedBody) -> bytes:
    """The whole decoded body of raw `chunks`, or ReplyTooLarge as soon as it passes the limit."""
    parts: list[bytes] = []
    async for chunk in chunks:
        parts.extend(body.feed(chunk))
    parts.extend(body.flush())
    return b"".join(parts)


class BoundedStream(httpx2.AsyncByteStream):
    """A response's raw stream, decoded and counted (`BoundedBody`) as httpx2 reads it."""

    def __init__(self, raw: httpx2.AsyncByteStream, body: BoundedBody):
        self.raw = raw
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.raw:
            for piece in self.body.feed(chunk):
                yield piece
        for piece in self.body.flush():
            yield piece

    async def aclose(self) -> None:
        await self.raw.aclose()


def bound_replies(limit: int | None) -> Callable[[httpx2.Response], Awaitable[None]]:
    """A response hook (run before any of the body is read): the body is decoded here, bounded, and the
    response no longer says it is encoded, so httpx2 does not decode it again."""

    async def bound(response: httpx2.Response) -> None:
        body = BoundedBody(response.headers.get_list("content-encoding", split_commas=True), limit)
        if "content-encoding" in response.headers:
            del response.headers["content-encoding"]
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an async client's response
        response.stream = BoundedStream(response.stream, body)

    return bound


def sdk_http_client(sdk: ModuleType, max_reply_bytes: int | None, aiohttp_pool: bool = False) -> httpx2.AsyncClient:
    """The SDK's own default HTTP client (its connection limits; over aiohttp with `aiohttp_pool`), with
    redirects never followed and every reply bounded to `max_reply_bytes` decoded (None: a download whose
    lines are bounded instead, `bounded_lines`)."""
    factory = sdk.DefaultAioHttpClient if aiohttp_pool else sdk.DefaultAsyncHttpxClient
    return factory(follow_redirects=False, headers={"Accept-Encoding": ACCEPT_ENCODING},
                   event_hooks={"response": [bound_replies(max_reply_bytes)]})


async def bounded_lines(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[tuple[bytes, bool]]:
    """The lines of a downloaded file as (line, whole): a line longer than `limit` bytes comes as its
    first `limit` bytes and whole=False, the rest of it skipped unread into memory."""
    line = bytearray()
    over = False
    async for chunk in chunks:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            if not over:
                line += chunk[start:min(stop, start + limit - len(line) + 1)]
                if len(line) > limit:
                    del line[limit:]
                    over = True
            if end < 0:
                break
            yield bytes(line), not over
            line.clear()
            over = False
            start = end + 1
    if line or over:
        yield bytes(line), not over
