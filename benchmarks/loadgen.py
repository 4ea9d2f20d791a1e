"""An asyncio + aiohttp load generator: fixed concurrency or fixed arrival rate, bounded by duration
and request count, with latency percentiles, time to first byte, throughput and errors.

    python -m benchmarks.loadgen http://127.0.0.1:8080/v1/chat/completions --concurrency 64 --duration 10 \\
        --body '{"model":"mock","messages":[{"role":"user","content":"hi"}]}'
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, request sent → last byte
    ttfb: list[float] = field(default_factory=list)  # seconds, request sent → first body byte
    events: int = 0  # SSE events received (streams)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float, data: list[float] | None = None) -> float:
        """The q-th percentile (0..100) in milliseconds, nearest-rank."""
        values = sorted(self.latencies if data is None else data)
        if not values:
            return float("nan")
        rank = max(0, min(len(values) - 1, round(q / 100 * len(values) + 0.5) - 1))
        return values[rank] * 1000

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.count, "errors": self.errors, "rps": self.throughput,
            "p50": self.pct(50), "p90": self.pct(90), "p99": self.pct(99),
            "max": max(self.latencies, default=float("nan")) * 1000, "ttfb_p50": self.pct(50, self.ttfb),
            "events": self.events,
        }


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], out: Result) -> None:
    start = time.perf_counter()
    first = 0.0
    events = 0
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                if not first:
                    first = time.perf_counter()
                events += chunk.count(b"\n\n")
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
    except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
        out.errors += 1
        if len(out.error_samples) < 5:
            out.error_samples.append(f"{type(exc).__name__}: {exc}")
        return
    end = time.perf_counter()
    out.latencies.append(end - start)
    out.ttfb.append((first or end) - start)
    out.events += events


async def run_load(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    concurrency: int = 1,
    rate: float | None = None,
    duration: float = 5.0,
    max_requests: int | None = None,
    warmup: float = 0.0,
    progress: bool = False,
) -> Result:
    """Closed loop (``concurrency`` workers back to back) or, with ``rate``, an open loop that starts
    ``rate`` requests per second (at most ``concurrency`` in flight). Both stop at ``duration``
    seconds or ``max_requests``, whichever comes first; ``warmup`` seconds run first, unrecorded."""
    headers = {"content-type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1), force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup:
            await _drive(session, url, body, headers, Result(), concurrency, rate, warmup, None, False)
        result = Result()
        await _drive(session, url, body, headers, result, concurrency, rate, duration, max_requests, progress)
        return result


async def _drive(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], out: Result,
    concurrency: int, rate: float | None, duration: float, max_requests: int | None, progress: bool,
) -> None:
    start = time.perf_counter()
    stop_at = start + duration
    budget = max_requests if max_requests is not None else 1 << 62
    issued = 0
    reporter = asyncio.create_task(_report(out, start)) if progress else None

    async def worker() -> None:
        nonlocal issued
        while issued < budget and time.perf_counter() < stop_at:
            issued += 1
            await _one(session, url, body, headers, out)

    try:
        if rate is None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            in_flight: set[asyncio.Task[None]] = set()
            interval = 1.0 / rate
            next_at = start
            while issued < budget and time.perf_counter() < stop_at:
                if len(in_flight) < concurrency:
                    issued += 1
                    task = asyncio.create_task(_one(session, url, body, headers, out))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if in_flight:
                await asyncio.gather(*in_flight)
    finally:
        out.elapsed = time.perf_counter() - start
        if reporter is not None:
            reporter.cancel()
            sys.stderr.write("\n")


async def _report(out: Result, start: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - start
        sys.stderr.write(f"\r  {elapsed:5.1f}s  {out.count:7d} ok  {out.errors:5d} errors  "
                         f"{out.count / elapsed:8.1f} req/s   ")
        sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="request body (JSON text), or @file")
    parser.add_argument("--header", action="append", default=[], help="name:value (repeatable)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    body = open(args.body[1:], "rb").read() if args.body.startswith("@") else args.body.encode()  # noqa: SIM115
    headers = dict(h.split(":", 1) for h in args.header)
    result = asyncio.run(run_load(args.url, body, headers=headers, concurrency=args.concurrency, rate=args.rate,
                                  duration=args.duration, max_requests=args.requests, warmup=args.warmup,
                                  progress=True))
    for name, value in result.summary().items():
        print(f"{name:>9}: {value:,.2f}")
    for sample in result.error_samples:
        print("error:", sample)


if __name__ == "__main__":
    main()
