"""Profiles the gateway under load with py-spy (sampling, out of process) and writes a flame graph.

    python -m benchmarks.profile [--scenario "sse 50 chunks c=16"] [--seconds 10] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from .loadgen import run_load
from .runner import BENCH_KEY, ROOT, SCENARIOS, Processes, request_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="sse 50 chunks c=16")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--format", default="flamegraph", choices=["flamegraph", "speedscope", "raw"])
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / ("profile.svg" if args.format == "flamegraph" else f"profile.{args.format}")
    procs = Processes()
    try:
        base, pid = procs.gateway(1)
        url, body, headers = request_for(scenario, "gateway", base)
        headers = {**headers, "authorization": f"Bearer {BENCH_KEY}"}
        asyncio.run(run_load(url, body, headers=headers, concurrency=scenario.concurrency, duration=1.0))
        recorder = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--rate",
                                     "250", "--format", args.format, "--output", str(target), "--nonblocking"])
        result = asyncio.run(run_load(url, body, headers=headers, concurrency=scenario.concurrency,
                                      duration=args.seconds + 1, progress=True))
        recorder.wait(60)
    finally:
        procs.stop()
    print(f"{result.count} requests, {result.throughput:.0f} req/s; profile written to {target}")


if __name__ == "__main__":
    main()
