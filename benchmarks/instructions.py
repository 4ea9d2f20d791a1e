"""Instructions per request of the whole server process, counted by valgrind (callgrind), not timed.

CPU-time ratios on a shared two-core machine move by ±20 % from one run to the next (the other
processes, the other hyperthread); counted instructions do not (±0.5 % here). Each proxy — the bare
proxy and the gateway with every stage on — runs under ``valgrind --tool=callgrind``; after a warm-up
its counters are zeroed, a fixed number of requests is sent, and the counters are dumped. The ratio
gateway ÷ bare is the user-space share of "CPU per request"; kernel time (socket calls, the same
for both) is not in it, so the ratio of total CPU is lower still.

Under valgrind every request takes ~50× longer, so a request's disconnect watcher (started after
50 ms) runs for every gateway request here, unlike at full speed: the figure errs against the gateway.

    python -m benchmarks.instructions [--requests 1000] [--only sse] [--keep DIR]   # needs valgrind
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .loadgen import run_load
from .runner import BENCH_KEY, PY, ROOT, Processes, Scenario, free_port, gateway_config, request_for, wait_port

SCENARIOS = (
    Scenario("json c=64", concurrency=64),
    Scenario("sse 50 chunks c=16", stream=True, chunks=50, concurrency=16),
    # Paced: every event is its own upstream read and client write, so per-chunk work is what is counted.
    # 20 ms apart at c=4 keeps each proxy, ~50x slower under valgrind, well below saturation.
    Scenario("paced sse 50 chunks 20 ms apart c=4", stream=True, chunks=50, delay_ms=20, concurrency=4),
)


def count(procs: Processes, target: str, requests: int, scenarios: tuple[Scenario, ...] = SCENARIOS,
          keep: Path | None = None) -> dict[str, float]:
    """Instructions per request of ``target`` ("bare" or a gateway chain) for each scenario; with
    ``keep``, each scenario's dump is copied there for ``callgrind_annotate``."""
    port = free_port()
    out = procs.tmp / f"callgrind-{target}"
    out.mkdir()
    if target == "bare":
        args = ["-m", "benchmarks.bare_proxy", "--port", str(port), "--upstream", procs.upstream[0]]
    else:
        config = procs.tmp / f"callgrind-{target}.toml"
        config.write_text(gateway_config(procs.upstream[0], 1, target))
        args = ["-m", "ccm_gateway", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/out.%p",
                             "--dump-instr=no", PY, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.procs.append(proc)
    wait_port(port, proc, timeout=900)
    results = {}
    for s in scenarios:
        url, body, headers = request_for(s, "bare" if target == "bare" else "gateway", f"http://127.0.0.1:{port}")
        if target != "bare":
            headers = {**headers, "authorization": f"Bearer {BENCH_KEY}"}
        asyncio.run(run_load(url, body, headers=headers, concurrency=s.concurrency,
                             max_requests=16 if s.delay_ms else 256, duration=900))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        result = asyncio.run(run_load(url, body, headers=headers, concurrency=s.concurrency,
                                      max_requests=max(requests // 5, 20) if s.delay_ms else requests, duration=1800))
        before = set(out.iterdir())
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        dump = _new_dump(out, before)
        if result.errors:
            raise RuntimeError(f"{target}: {result.errors} errors in {s.name}")
        results[s.name] = _total(dump) / result.count
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, keep / f"{target}-{s.name.split()[0]}.callgrind")
    proc.terminate()
    return results


def _new_dump(folder: Path, before: set[Path]) -> Path:
    for _ in range(300):
        new = [p for p in folder.iterdir() if p not in before and p.stat().st_size > 0]
        if new:
            time.sleep(0.5)  # written whole
            return new[0]
        time.sleep(0.1)
    raise RuntimeError("callgrind wrote no dump")


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--only", choices=("json", "sse", "paced"), help="one scenario instead of all three")
    parser.add_argument("--keep", type=Path, help="copy each dump here (for callgrind_annotate)")
    args = parser.parse_args()
    scenarios = tuple(s for s in SCENARIOS if args.only is None or s.name.startswith(args.only))
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind")
    procs = Processes()
    targets = ("bare", "core", "full")
    try:
        with ThreadPoolExecutor(len(targets)) as pool:  # counts do not depend on the machine's load
            counts = pool.map(lambda t: count(procs, t, args.requests, scenarios, args.keep), targets)
            counted = dict(zip(targets, counts, strict=True))
    finally:
        procs.stop()
    print(f"{'instructions per request':<28}" + "".join(f"{t:>14}" for t in targets) + f"{'full ÷ bare':>14}")
    for s in scenarios:
        row = [counted[t][s.name] for t in targets]
        print(f"{s.name:<28}" + "".join(f"{v:>14,.0f}" for v in row) + f"{row[-1] / row[0]:>13.2f}×")


if __name__ == "__main__":
    main()
