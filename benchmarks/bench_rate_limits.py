"""Judging at a provider's rate limit: throughput as a share of the limit, and the share of requests answered 429.

Each case judges N synthetic pairs through the real runner (probe, model check, pacer, transport,
validation, the SQLite cache) against a loopback server that enforces a limit as the providers do (token
buckets refilled continuously, one second's worth of capacity) and announces it in the provider's
headers: the fake OpenAI server (x-ratelimit-*, retry-after / retry-after-ms) for the `openai` backend,
the fake Messages API server (anthropic-ratelimit-*, retry-after) for the `anthropic` backend. No
`requests_per_minute` is configured: the judge learns the limit from the replies.

Cases are `backend:concurrency:limit`, where limit is `rpm` (3,000 requests per minute binds) or `tpm`
(requests are allowed 3,000 per minute, but a token limit worth 1,200 requests per minute binds). A
`-bare` suffix on the limit (`rpm-bare`) makes the server enforce the limit without announcing it: the
judge then learns of it only from 429s (today's behaviour on servers without headers).

Run from the repo root:
    python -m benchmarks.bench_rate_limits [--n 2000] [--latency-ms 50]
        [--cases openai:64:rpm,openai:256:rpm,anthropic:64:rpm,anthropic:256:rpm,openai:64:tpm,anthropic:64:tpm]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from benchmarks import machine
from benchmarks.bench_judging import synthetic_pairs
from calibrate.judging.base import view_of
from calibrate.judging.estimate import request_chars
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.store.judgments import JudgmentStore
from tests.fakes.anthropic_server import OUTPUT_TOKENS, AnthropicState, start_anthropic_server
from tests.fakes.openai_server import COMPLETION_TOKENS, RateLimit, ServerState, start_server

PROMPT = Path(__file__).resolve().parent.parent / "judges" / "prompts" / "valbench-v2-guarded.txt"
REQUESTS_PER_MINUTE = 3000
TOKEN_BOUND_RPM = 1200  # in a `tpm` case the token limit is worth this many requests per minute


def write_judge(folder: Path, backend: str, base_url: str, concurrency: int) -> Path:
    settings = {"name": f"bench-{backend}", "backend": backend, "model": "bench-judge", "base_url": base_url,
                "api_key_env": "", "prompt": str(PROMPT), "rule": "v2", "concurrency": concurrency,
                "timeout_s": 30, "max_retries": 6}
    path = folder / f"{settings['name']}.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def request_tokens(backend: str, folder: Path) -> tuple[int, int]:
    """Input and output tokens of one benchmark request as the fake servers count them."""
    config = load_judge_config(str(write_judge(folder, backend, "http://127.0.0.1:1", 1)))
    body, _ = make_backend(config).build_request(view_of(synthetic_pairs(1)[0], "forward"))
    return request_chars(body) // 4, COMPLETION_TOKENS if backend == "openai" else OUTPUT_TOKENS


def limits(backend: str, kind: str, tokens: tuple[int, int]) -> tuple[dict[str, float], float]:
    """The server's per-minute limits for a case, and the requests per second they allow."""
    per_minute: dict[str, float] = {"requests": REQUESTS_PER_MINUTE}
    if kind == "tpm":
        inputs, outputs = tokens
        if backend == "openai":
            per_minute["tokens"] = TOKEN_BOUND_RPM * (inputs + outputs)
        else:
            per_minute["input-tokens"] = TOKEN_BOUND_RPM * inputs
            per_minute["output-tokens"] = 10 * TOKEN_BOUND_RPM * outputs
    return per_minute, (TOKEN_BOUND_RPM if kind == "tpm" else REQUESTS_PER_MINUTE) / 60


def serve(backend: str, limit: RateLimit, latency_s: float, pipe: Connection) -> None:
    """In a process of its own (so the server does not take the judge's CPU): serve until told to stop,
    then report how many requests were admitted and refused."""
    if backend == "openai":
        server, base_url = start_server(ServerState(latency_s=latency_s, rate_limit=limit))
    else:
        server, base_url = start_anthropic_server(AnthropicState(latency_s=latency_s, rate_limit=limit))
    pipe.send(base_url)
    pipe.recv()
    server.shutdown()
    pipe.send((limit.admitted, limit.refused))


def run_case(backend: str, concurrency: int, kind: str, n: int, latency_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_minute, bound = limits(backend, kind.removesuffix("-bare"), request_tokens(backend, folder))
        ours, theirs = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, daemon=True, args=(
            backend, RateLimit(per_minute, headers=not kind.endswith("-bare")), latency_s, theirs))
        server.start()
        try:
            base_url = ours.recv()
            backend_ = make_backend(load_judge_config(str(write_judge(folder, backend, base_url, concurrency))))
            with JudgmentStore(folder / "cache.sqlite3") as store:
                started = time.perf_counter()
                _, counts = judge_pairs(backend_, synthetic_pairs(n), store, show_progress=False)
                elapsed = time.perf_counter() - started
        finally:
            ours.send("stop")
            admitted, refused = ours.recv()
            server.join()
    return {"judged": counts["judged"], "failed": counts["failed"], "elapsed": elapsed,
            "share": counts["judged"] / elapsed / bound, "refused": refused / max(admitted + refused, 1),
            "waited": counts.get("limit_wait_s", 0.0), "bound": bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="pairs per case")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the server's latency per request")
    parser.add_argument("--cases", default="openai:64:rpm,openai:256:rpm,anthropic:64:rpm,anthropic:256:rpm,"
                                           "openai:64:tpm,anthropic:64:tpm", help="backend:concurrency:limit,...")
    args = parser.parse_args()
    print(f"{machine()}; n={args.n} per case, latency {args.latency_ms:g} ms")
    print(f"{'backend':>9} {'conc':>5} {'limit':>9} {'bound/s':>8} {'judged':>7} {'failed':>6} {'seconds':>8} "
          f"{'% of limit':>10} {'% 429':>6} {'waited s':>9}")
    for case in args.cases.split(","):
        backend, concurrency, kind = case.split(":")
        result = run_case(backend, int(concurrency), kind, args.n, args.latency_ms / 1000)
        print(f"{backend:>9} {concurrency:>5} {kind:>9} {result['bound']:>8.1f} {result['judged']:>7} "
              f"{result['failed']:>6} {result['elapsed']:>8.1f} {100 * result['share']:>9.1f}% "
              f"{100 * result['refused']:>5.2f}% {result['waited']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
