"""Throughput of calibrate's judge runner against a local OpenAI-compatible server with a set latency.

For each (latency, concurrency) it judges N synthetic pairs through the real runner (prompt
rendering, the transport (the default aiohttp, or --transport sdk), the pacer, validation, the SQLite cache)
and compares the achieved rate with the bound (concurrency / latency) and with bare aiohttp and
httpx clients posting same-sized requests to the same server. It then re-runs the same pairs with
every judgment cached and checks that no request is sent.

Run from the repo root:
    python -m benchmarks.bench_judging [--n 6000] [--repeats 3] [--cases 200:64,200:256,0:64,0:256] [--layers]
                                       [--transport aiohttp|sdk]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from statistics import median

from benchmarks import machine
from benchmarks.bare_clients import run_client
from calibrate.data.pairs import Pair
from calibrate.judging.base import view_of
from calibrate.judging.registry import load_judge_config, make_backend
from calibrate.judging.runner import judge_pairs
from calibrate.judging.transport import TRANSPORTS, make_transport
from calibrate.store.judgments import JudgmentStore
from tests.fakes.latency_server import start_in_subprocess

PROMPTS = Path(__file__).resolve().parent.parent / "judges" / "prompts"
PARAGRAPH = ("Supporters argue that the measure widens access and lowers costs for families, while critics "
             "say it strains budgets and shifts responsibility away from local communities. ")


def synthetic_pairs(n: int) -> list[Pair]:
    """Distinct pairs with answers of about 1 KB each, so requests weigh like real judge calls."""
    return [Pair(id=i, set_name="bench", issue_description=f"Whether policy {i} should be adopted.",
                 for_question=f"Explain why policy {i} should be adopted.",
                 against_question=f"Explain why policy {i} should not be adopted.",
                 for_response=f"Answer {i}. " + PARAGRAPH * 5, against_response=f"Reply {i}. " + PARAGRAPH * 5)
            for i in range(n)]


def write_judge(folder: Path, base_url: str, concurrency: int, transport: str = "aiohttp") -> Path:
    path = folder / "bench.toml"
    path.write_text(f'name = "bench"\nbackend = "openai"\nmodel = "bench-judge"\nbase_url = "{base_url}/v1"\n'
                    f'api_key_env = ""\nprompt = "{PROMPTS / "valbench-v2.txt"}"\nconcurrency = {concurrency}\n'
                    f'timeout_s = 60\nmax_retries = 2\ntransport = "{transport}"\n')
    return path


def run_calibrate(base_url: str, n: int, concurrency: int, transport: str) -> tuple[float, float, int]:
    """Judged pairs per second with a cold cache, seconds for the cached re-run, and its request count."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_judge_config(str(write_judge(Path(tmp), base_url, concurrency, transport)))
        items = synthetic_pairs(n)
        with JudgmentStore(Path(tmp) / "cache.sqlite3") as store:
            started = time.perf_counter()
            _, counts = judge_pairs(make_backend(config), items, store)
            rate = counts["judged"] / (time.perf_counter() - started)
            assert counts["judged"] == n and counts["failed"] == 0, counts
            started = time.perf_counter()
            _, again = judge_pairs(make_backend(config), items, store)
            return rate, time.perf_counter() - started, again["requests"]


def run_layer(layer: str, base_url: str, n: int, concurrency: int, transport: str) -> float:
    """Requests per second through one layer only: `transport` (calibrate's HTTP transport posting a
    fixed judge request) or `backend` (OpenAIBackend.judge: prompt, call layer, parse, validate).
    The gap between these and the full runner shows where a judgment's CPU goes."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_judge_config(str(write_judge(Path(tmp), base_url, concurrency, transport)))
    items = synthetic_pairs(n)

    async def go() -> float:
        backend = make_backend(config)
        body, _ = backend.build_request(view_of(items[0], "forward"))
        transport = make_transport(config.settings["transport"], "bench", f"{base_url}/v1", concurrency, 60.0,
                                   config.settings["max_reply_bytes"])
        pending = iter(items)

        async def worker() -> None:
            for pair in pending:
                if layer == "transport":
                    await transport.post(body)
                else:
                    await backend.judge(view_of(pair, "forward"))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await transport.close()
        await backend.aclose()
        return n / elapsed

    return asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000, help="requests per measurement")
    parser.add_argument("--cases", default="200:64,200:256,0:64,0:256", help="latency_ms:concurrency,...")
    parser.add_argument("--repeats", type=int, default=3, help="runs per client and case; the median is shown")
    parser.add_argument("--layers", action="store_true",
                        help="also time calibrate's transport alone and the backend alone, as %% of bare aiohttp")
    parser.add_argument("--transport", default="aiohttp", choices=TRANSPORTS, help="what carries calibrate's requests")
    args = parser.parse_args()
    print(f"{machine()}; n={args.n} per measurement, transport {args.transport}")
    print(f"{'latency':>8} {'conc':>5} {'bound/s':>8} {'calibrate/s':>12} {'aiohttp/s':>10} {'httpx/s':>8} "
          f"{'% bound':>8} {'% aiohttp':>10} {'cached re-run':>14}")
    for case in args.cases.split(","):
        latency_ms, concurrency = (int(v) for v in case.split(":"))
        process, base_url = start_in_subprocess(latency_ms)
        try:
            # httpx is 5-20x slower here; one shorter run tells its rate well enough
            bare_httpx = run_client("httpx", base_url, min(args.n, 2000), concurrency)
            bare_runs, runs = [], []
            for _ in range(args.repeats):  # interleaved, so drifts of the machine hit both alike
                bare_runs.append(run_client("aiohttp", base_url, args.n, concurrency))
                runs.append(run_calibrate(base_url, args.n, concurrency, args.transport))
            bare, ours = median(bare_runs), median(rate for rate, _, _ in runs)
            cached_s, cached_requests = max(s for _, s, _ in runs), max(r for _, _, r in runs)
            layers = {layer: median(run_layer(layer, base_url, args.n, concurrency, args.transport)
                                    for _ in range(args.repeats))
                      for layer in (("transport", "backend") if args.layers else ())}
        finally:
            process.terminate()
            process.wait()
        bound = concurrency / (latency_ms / 1000) if latency_ms else float("nan")
        share = f"{100 * ours / bound:7.0f}%" if latency_ms else f"{'-':>8}"
        print(f"{latency_ms:>6}ms {concurrency:>5} {bound:>8.0f} {ours:>12.0f} {bare:>10.0f} {bare_httpx:>8.0f} "
              f"{share} {100 * ours / bare:>9.0f}% {cached_s:>8.2f}s/{cached_requests}req"
              + "".join(f"  {layer} alone {100 * rate / bare:.0f}%" for layer, rate in layers.items()))


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
