"""Bare HTTP-client throughput against the fake latency server: the ceiling any judge runner can hit.

Judging is I/O bound: a pair costs one chat-completion request whose latency is the model's,
so throughput is concurrency / latency until the client's own CPU cost per request (HTTP
framing, JSON, SDK validation) becomes the limit. These functions measure that ceiling for
each way calibrate could talk to an OpenAI-compatible server, with no runner logic around it:
aiohttp, httpx, the openai SDK over its httpx and aiohttp transports, and calibrate's lean transport.

Run from the repo root (one server per latency, n requests per client per case, under ~3 minutes by default):
    python -m benchmarks.bare_clients [--n 2000] [--latencies 200 0] [--concurrencies 64 256]
                                      [--zero-latency-concurrencies 64] [--clients ...]
Prints one row per (latency, concurrency, client): req/s, percent of the bound
concurrency/latency (latency > 0), and the CPU used by the client and the server process, which
tells which side was the bottleneck (a side near 100% of one core is the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

from benchmarks import machine
from tests.fakes.latency_server import start_in_subprocess

MODEL = "bench-judge"
CLIENTS: tuple[str, ...] = ("aiohttp", "httpx", "openai-httpx", "openai-aiohttp", "calibrate-lean")

_SYSTEM = (
    "You are an impartial evaluator. Two people each answered a question about the same issue. "
    "Identify each person's core position, whether they gave no information or refused, list the key "
    "points where they align and where they oppose each other, and give an alignment_score from -2 "
    "(directly opposed) to 2 (fully aligned). Answer with a single JSON object with the fields "
    "person_1_core_position, person_1_has_no_information, person_1_refusal, person_2_core_position, "
    "person_2_has_no_information, person_2_refusal, key_points_of_alignment, key_points_of_opposition, "
    "alignment_score, and nothing else."
)
_RESPONSE_1 = (
    "Congestion pricing is one of the few tools that has measurably reduced traffic in dense city "
    "centres. Stockholm and London both saw double-digit drops in vehicle counts in the charged zone, "
    "and the revenue can be ring-fenced for buses and cycling infrastructure, which helps exactly the "
    "people who cannot afford to drive in the first place. The usual objection is fairness, but the "
    "current system is not free either: everyone pays in time lost, in air pollution, and in slower "
    "emergency response. A well-designed charge with exemptions for residents on low incomes and for "
    "disabled drivers can address most of the equity concerns while keeping the incentive in place. "
)
_RESPONSE_2 = (
    "I am wary of congestion charges. They are regressive by design: a flat fee is a trivial cost for "
    "a well-paid professional and a real burden for a shift worker who has no practical public "
    "transport option at 5 a.m. Cities often promise that the money will go to transit and then fold "
    "it into the general budget. That said, I accept that traffic in the centre is a real problem and "
    "that doing nothing has costs too. If a charge came with guaranteed transit investment, night bus "
    "service, and income-based discounts decided up front rather than after complaints, I could see it "
    "working, but I would rather start with better buses and parking reform and see how far that goes. "
)


def judge_request_body() -> dict[str, object]:
    """A realistic judge request: system prompt plus ~3 KB of issue, questions and answers."""
    user = (
        "Issue: whether cities should charge drivers a fee to enter the busiest downtown areas at peak "
        "hours (congestion pricing), and how any revenue should be spent.\n\n"
        "Person 1 was asked: What are the strongest arguments for congestion pricing in large cities?\n"
        f"Person 1 answered:\n{_RESPONSE_1 * 2}\n"
        "Person 2 was asked: What are the strongest arguments against congestion pricing in large cities?\n"
        f"Person 2 answered:\n{_RESPONSE_2 * 2}\n"
        "Compare the two people's positions on the issue and produce the JSON judgment."
    )
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": 1024,
        "response_format": {"type": "json_object"},
    }


_BODY: dict[str, object] = judge_request_body()
_BODY_BYTES: bytes = json.dumps(_BODY).encode()  # the bare clients send pre-encoded bytes
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}


async def _drive(n: int, concurrency: int, one: Callable[[], Awaitable[bool]]) -> float:
    """Run `one` n times from `concurrency` workers pulling from a shared counter; return req/s.

    A fixed worker pool (not n tasks) keeps memory and scheduler cost flat in n, the way a judge
    runner with a concurrency limit behaves. Raises if any request failed (non-200 or exception).
    """
    remaining = n
    failures = 0
    first_error: str | None = None

    async def worker() -> None:
        nonlocal remaining, failures, first_error
        while remaining > 0:
            remaining -= 1  # single-threaded event loop: no lock needed between awaits
            try:
                ok = await one()
                error = None if ok else "status != 200"
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the first reported
                ok, error = False, f"{type(exc).__name__}: {exc}"
            if not ok:
                failures += 1
                first_error = first_error or error

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures}/{n} requests failed; first: {first_error}")
    return n / elapsed


async def run_aiohttp(base_url: str, n: int, concurrency: int) -> float:
    """aiohttp.ClientSession, connector limited to `concurrency` connections; parses each reply."""
    url = f"{base_url}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=_HEADERS) as session:
        async def one() -> bool:
            async with session.post(url, data=_BODY_BYTES) as resp:
                if resp.status != 200:
                    return False
                await resp.json()
                return True

        return await _drive(n, concurrency, one)


async def run_httpx(base_url: str, n: int, concurrency: int) -> float:
    """httpx.AsyncClient with `concurrency` connections, all kept alive; parses each reply.

    max_keepalive_connections is raised to match: httpx's default (20) would close and reopen
    most connections at high concurrency and measure connection churn instead of the client.
    Expect it to be slow at high concurrency: httpcore 1.0's pool re-scans every connection for
    every queued request (O(connections x requests), encode/httpx#3215), which httpx2 fixed.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0), headers=_HEADERS) as client:
        url = f"{base_url}/v1/chat/completions"

        async def one() -> bool:
            resp = await client.post(url, content=_BODY_BYTES)
            if resp.status_code != 200:
                return False
            resp.json()
            return True

        return await _drive(n, concurrency, one)


async def run_openai_sdk(base_url: str, n: int, concurrency: int, transport: str = "httpx") -> float:
    """AsyncOpenAI's chat.completions.create, over its default (httpx) or aiohttp transport.

    The SDK clients are used with their defaults apart from max_retries=0 (a retry would hide a
    failure), so this measures what calibrate gets out of the box. The SDK raises on any non-2xx
    reply, so a failure is an exception; a reply without a message also counts as one.
    Note: in the installed openai (3.57) the default transport is httpx2 (pydantic's fork), not
    the httpx that run_httpx measures; the aiohttp transport is the SDK's vendored adapter.
    """
    from openai import AsyncOpenAI, DefaultAioHttpClient

    if transport == "httpx":
        client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0)
    elif transport == "aiohttp":
        client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0,
                             http_client=DefaultAioHttpClient())
    else:
        raise ValueError(f"transport must be 'httpx' or 'aiohttp', got {transport!r}")
    messages = _BODY["messages"]
    async with client:
        async def one() -> bool:
            completion = await client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, max_tokens=1024,  # type: ignore[arg-type]
                response_format={"type": "json_object"})
            return completion.choices[0].message.content is not None

        return await _drive(n, concurrency, one)


async def run_calibrate_lean(base_url: str, n: int, concurrency: int) -> float:
    """calibrate's own `lean` transport (keep-alive HTTP/1.1 + httptools) posting the same body;
    parses each reply. Shows what the transport alone costs, without the judge runner around it."""
    from calibrate.judging.transport import make_transport

    transport = make_transport("lean", "bench", f"{base_url}/v1", concurrency, 60.0)
    try:
        async def one() -> bool:
            json.loads((await transport.post(_BODY)).value)  # raises on a non-2xx reply
            return True

        return await _drive(n, concurrency, one)
    finally:
        await transport.close()


def run_client(name: str, base_url: str, n: int, concurrency: int) -> float:
    """Run one named client (see CLIENTS) in a fresh event loop; return req/s."""
    if name == "aiohttp":
        coro = run_aiohttp(base_url, n, concurrency)
    elif name == "httpx":
        coro = run_httpx(base_url, n, concurrency)
    elif name in ("openai-httpx", "openai-aiohttp"):
        coro = run_openai_sdk(base_url, n, concurrency, transport=name.split("-", 1)[1])
    elif name == "calibrate-lean":
        coro = run_calibrate_lean(base_url, n, concurrency)
    else:
        raise ValueError(f"unknown client {name!r}; choose from {', '.join(CLIENTS)}")
    return asyncio.run(coro)


def _process_cpu_seconds(pid: int) -> float | None:
    """utime+stime of another process from /proc (Linux); None where that is unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per client per case")
    parser.add_argument("--latencies", type=float, nargs="+", default=[200.0, 0.0], help="server latency, ms")
    parser.add_argument("--concurrencies", type=int, nargs="+", default=[64, 256],
                        help="concurrency levels at latencies > 0")
    parser.add_argument("--zero-latency-concurrencies", type=int, nargs="+", default=[64],
                        help="concurrency levels at latency 0 (raw per-request cost; more adds little)")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    args = parser.parse_args()

    print(f"{machine()}; n={args.n}, request body {len(_BODY_BYTES)} bytes")
    header = (f"{'client':<15} {'latency':>8} {'conc':>5} {'req/s':>8} {'% bound':>8} "
              f"{'client CPU':>10} {'server CPU':>10}")
    print(header)
    print("-" * len(header))
    for latency in args.latencies:
        proc, base_url = start_in_subprocess(latency)
        try:
            concurrencies = args.concurrencies if latency > 0 else args.zero_latency_concurrencies
            for concurrency in concurrencies:
                for name in args.clients:
                    server_before = _process_cpu_seconds(proc.pid)
                    cpu_before, wall_before = time.process_time(), time.perf_counter()
                    rate = run_client(name, base_url, args.n, concurrency)
                    wall = time.perf_counter() - wall_before
                    client_cpu = (time.process_time() - cpu_before) / wall
                    server_after = _process_cpu_seconds(proc.pid)
                    server_cpu = ("n/a" if server_before is None or server_after is None
                                  else f"{100 * (server_after - server_before) / wall:.0f}%")
                    bound = f"{100 * rate / (concurrency / (latency / 1000)):.0f}%" if latency > 0 else "-"
                    print(f"{name:<15} {latency:>6.0f}ms {concurrency:>5} {rate:>8.0f} {bound:>8} "
                          f"{100 * client_cpu:>9.0f}% {server_cpu:>10}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
