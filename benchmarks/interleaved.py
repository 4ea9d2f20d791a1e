"""The two JSON targets measured in alternating slices, for a machine whose load changes under the run.

``make bench`` measures the bare proxy for a few seconds, then the gateway: when other work starts or
stops in between, the ratio moves by more than the gateway's stages cost. Here the bare proxy and the
gateway (every stage on) take turns in short slices, round after round, and each round gives its own
ratio; the median over the rounds is the figure, the spread says how far to trust it.

    python -m benchmarks.interleaved [--rounds 7] [--seconds 2]
    python -m benchmarks.interleaved --stream [--paced] [--rounds 9]   # the streaming target: CPU per stream
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

from . import procstats
from .loadgen import Result, run_load
from .runner import BENCH_KEY, Processes, Scenario, request_for


def slice_of(procs: Processes, target: str, s: Scenario, seconds: float) -> tuple[Result, float]:
    """One measured slice (after a short warm-up): the load result and the proxy's CPU seconds."""
    base, pid = procs.bare_proxy(1) if target == "bare" else procs.gateway(1)
    url, body, headers = request_for(s, target, base)
    if target == "gateway":
        headers = {**headers, "authorization": f"Bearer {BENCH_KEY}"}
    asyncio.run(run_load(url, body, headers=headers, concurrency=s.concurrency, duration=0.3))
    before = procstats.sample(pid)
    result = asyncio.run(run_load(url, body, headers=headers, concurrency=s.concurrency, duration=seconds,
                                  progress=False))
    return result, procstats.sample(pid).cpu - before.cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--stream", action="store_true", help="the streaming target (50 chunks, c=16) instead")
    parser.add_argument("--paced", action="store_true", help="with --stream: the upstream's events 2 ms apart")
    args = parser.parse_args()
    if args.stream:
        streaming(args.rounds, args.seconds, 2 if args.paced else 0)
        return
    procs = Processes()
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        added: list[float] = []  # c=1: gateway p50 − bare p50, ms
        ratios: list[float] = []  # c=64: gateway req/s ÷ bare req/s
        cpu: list[float] = []  # c=64: gateway CPU per request ÷ bare's
        one, many = Scenario("json c=1", concurrency=1), Scenario("json c=64", concurrency=64)
        for n in range(args.rounds):
            bare1, _ = slice_of(procs, "bare", one, args.seconds)
            gw1, _ = slice_of(procs, "gateway", one, args.seconds)
            bare64, bare_cpu = slice_of(procs, "bare", many, args.seconds)
            gw64, gw_cpu = slice_of(procs, "gateway", many, args.seconds)
            added.append(gw1.pct(50) - bare1.pct(50))
            ratios.append(gw64.throughput / bare64.throughput)
            cpu.append((gw_cpu / gw64.count) / (bare_cpu / bare64.count))
            print(f"round {n + 1}: c=1 gateway − bare p50 {added[-1]:+.3f} ms; c=64 gateway ÷ bare req/s "
                  f"{ratios[-1]:.2f}× ({gw64.throughput:.0f} / {bare64.throughput:.0f}), CPU per request "
                  f"{cpu[-1]:.2f}×; errors {gw1.errors + gw64.errors}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"median over {args.rounds} rounds: added latency {statistics.median(added):+.3f} ms "
              f"(range {min(added):+.3f} … {max(added):+.3f}); throughput {statistics.median(ratios):.2f}× "
              f"(range {min(ratios):.2f} … {max(ratios):.2f}); CPU per request {statistics.median(cpu):.2f}×")
    finally:
        procs.stop()


def streaming(rounds: int, seconds: float, delay_ms: float) -> None:
    """Stream pass-through CPU per streamed event, gateway ÷ bare proxy, in alternating slices;
    ``delay_ms`` apart, each event is its own read and write, else a stream arrives in two or three reads."""
    procs = Processes()
    try:
        s = Scenario("sse 50 chunks c=16", stream=True, chunks=50, delay_ms=delay_ms, concurrency=16)
        ratios: list[float] = []
        for n in range(rounds):
            bare, bare_cpu = slice_of(procs, "bare", s, seconds)
            gateway, gw_cpu = slice_of(procs, "gateway", s, seconds)
            bare_us, gw_us = bare_cpu / bare.count * 1e6, gw_cpu / gateway.count * 1e6
            ratios.append(gw_us / bare_us)
            print(f"round {n + 1}: CPU per stream bare {bare_us:.0f} µs, gateway {gw_us:.0f} µs: {ratios[-1]:.2f}×; "
                  f"errors {bare.errors + gateway.errors}", flush=True)
        print(f"median over {rounds} rounds: stream CPU per event {statistics.median(ratios):.2f}× the bare proxy's "
              f"(range {min(ratios):.2f} … {max(ratios):.2f})")
    finally:
        procs.stop()


if __name__ == "__main__":
    main()
