"""The judge client's own cost per call: HTTP client CPU per judge call against the simulator at speed 0.

    .venv/bin/python bench/judge_client_bench.py [--calls 3000] [--in-flight 64 256] [--modes ...]

One simulator process (`worker.sim`, `--speed 0`: answers at once, its own ~1 ms per call is spent in
its own process) serves every mode. This process only sends: for each mode and each in-flight count,
that many coroutines keep one call each in flight until `--calls` calls have completed (after a
warm-up). Measured here: the CPU time of this process (`time.process_time`, every thread of the bench
process and nothing else) per completed call, and completed calls per second of wall time (bounded by
the simulator when the client is cheap, so the CPU per call is the figure that compares clients).

Modes:
  httpx          httpx.AsyncClient with the pool limits the worker used (the transport before issue 13)
  aiohttp        aiohttp.ClientSession, default TCPConnector sized to the in-flight count (what vLLM's
                 own benchmark client uses), a per-request ClientTimeout
  aiohttp-tuned  the same plus JudgeClient's session settings (no cookie jar, idle connections kept
                 60 s) and no User-Agent/Accept/Accept-Encoding headers (a tuning that did not pay)
  judge          the project's JudgeClient.judge end to end: request building (token budget), the HTTP
                 call, completion parsing, answer validation, logprobs and the audit record

The transports post the exact body JudgeClient builds for one short post (json_schema, logprobs) and
parse the answer with orjson, so they differ only in the HTTP client. Prints a table, then one JSON
line: {"results": [{"mode", "in_flight", "calls", "cpu_us_per_call", "calls_s"}, ...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.config import Tier1JudgeSettings  # noqa: E402
from worker.contracts import Post  # noqa: E402
from worker.judges.client import JudgeClient  # noqa: E402
from worker.judges.protocol import build_request  # noqa: E402
from worker.policies.files import Policy, load_policy_dir  # noqa: E402
from worker.sim.process import SimulatorProcess  # noqa: E402

MODES = ("httpx", "aiohttp", "aiohttp-tuned", "judge")
TIMEOUT_S = 120.0
Call = Callable[[int], Awaitable[None]]


def _post(i: int) -> Post:
    return Post(id=f"b{i}", text=f"selling cheap watches, message me for the link, offer number {i}")


async def _drive(call: Call, in_flight: int, calls: int, warmup: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for `calls` calls, `in_flight` at a time, after `warmup` calls."""

    async def run(total: int) -> None:
        left = total

        async def lane() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call(left)

        await asyncio.gather(*(lane() for _ in range(in_flight)))

    await run(warmup)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run(calls)
    return time.process_time() - cpu0, time.perf_counter() - wall0


async def _transport(mode: str, url: str, body: bytes, in_flight: int, calls: int, warmup: int) -> tuple[float, float]:
    headers = {"content-type": "application/json"}

    def check(status: int, data: bytes) -> None:
        if status != 200 or not orjson.loads(data)["choices"]:
            raise RuntimeError(f"{mode}: unexpected answer {status}")

    if mode == "httpx":
        limits = httpx.Limits(max_connections=in_flight + 8, max_keepalive_connections=in_flight)
        async with httpx.AsyncClient(limits=limits) as http:

            async def call_httpx(_: int) -> None:
                response = await http.post(url, content=body, headers=headers, timeout=TIMEOUT_S)
                check(response.status_code, response.content)

            return await _drive(call_httpx, in_flight, calls, warmup)
    if mode == "aiohttp":
        connector = aiohttp.TCPConnector(limit=in_flight)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    else:
        connector = aiohttp.TCPConnector(limit=in_flight, keepalive_timeout=60.0)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    tuned = mode == "aiohttp-tuned"
    cookie_jar = aiohttp.DummyCookieJar() if tuned else None
    skip = ("User-Agent", "Accept", "Accept-Encoding") if tuned else ()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=cookie_jar, skip_auto_headers=skip) as session:

        async def call_aiohttp(_: int) -> None:
            async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
                check(response.status, await response.read())

        return await _drive(call_aiohttp, in_flight, calls, warmup)


async def _judge(base_url: str, policy: Policy, in_flight: int, calls: int, warmup: int) -> tuple[float, float]:
    settings = Tier1JudgeSettings(base_urls=[base_url], max_in_flight=in_flight)
    client = JudgeClient("t1", settings)
    try:

        async def call(i: int) -> None:
            done = await client.judge(policy, _post(i))
            if done.answer is None:
                raise RuntimeError(f"judge: no answer ({done.failure})")

        return await _drive(call, in_flight, calls, warmup)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per mode and in-flight count")
    parser.add_argument("--warmup", type=int, default=500, help="calls before measuring (connections, caches)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[64, 256], help="calls kept in flight")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()

    policy = load_policy_dir(ROOT / "policies").by_id()["spam-scams"]
    body = orjson.dumps(build_request(policy, _post(0), Tier1JudgeSettings(base_urls=["http://x/v1"])))
    results: list[dict[str, Any]] = []
    # max_num_seqs above every in-flight count: no request waits in the simulator's queue.
    with SimulatorProcess(speed=0, max_num_seqs=max(args.in_flight) + 8) as sim:
        url = f"{sim.base_url}/chat/completions"
        print(f"{'mode':<14} {'in flight':>9} {'calls':>6} {'CPU µs/call':>12} {'calls/s':>8}", flush=True)
        for mode in args.modes:
            for in_flight in args.in_flight:
                if mode == "judge":
                    run = _judge(sim.base_url, policy, in_flight, args.calls, args.warmup)
                else:
                    run = _transport(mode, url, body, in_flight, args.calls, args.warmup)
                cpu_s, wall_s = asyncio.run(run)
                row = {
                    "mode": mode,
                    "in_flight": in_flight,
                    "calls": args.calls,
                    "cpu_us_per_call": round(cpu_s / args.calls * 1e6, 1),
                    "calls_s": round(args.calls / wall_s, 1),
                }
                results.append(row)
                cpu, rate = row["cpu_us_per_call"], row["calls_s"]
                print(f"{mode:<14} {in_flight:>9} {args.calls:>6} {cpu:>12,.1f} {rate:>8,.1f}", flush=True)
    print(orjson.dumps({"results": results}).decode())


if __name__ == "__main__":
    main()
