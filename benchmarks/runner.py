"""Runs the benchmark scenarios: the mock upstream called directly, through the bare proxy, and
through the gateway, in one run on one machine, and reports the ratios (``make bench``).

    python -m benchmarks.runner            # the short set (under ~3 minutes)
    python -m benchmarks.runner --full     # everything, longer runs, RSS over 10k requests
    python -m benchmarks.runner --out docs/perf   # where report.md and the PNG charts go
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from . import procstats
from .loadgen import Result, run_load
from .report import write_report

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass(frozen=True)
class Scenario:
    name: str
    client: str = "openai"  # or "anthropic"
    stream: bool = False
    chunks: int = 20  # text deltas per answer
    delay_ms: float = 0  # between the upstream's events: 0 sends a stream at once (a proxy reads it in 2-3 reads)
    concurrency: int = 1
    prompt_tokens: int = 20  # ~size of the conversation sent
    workers: int = 1
    upstream: str = ""  # "" = the client's own protocol (pass-through); else the upstream protocol
    chain: str = "full"  # gateway stages: "core" (exchange + request id), "full" (every stage), "redis"
    quick: bool = True
    targets: tuple[str, ...] = ("direct", "bare", "gateway")


SCENARIOS = [
    Scenario("json c=1 (added latency)", concurrency=1),
    Scenario("json c=64 (throughput)", concurrency=64),
    Scenario("sse 50 chunks c=16", stream=True, chunks=50, concurrency=16),
    Scenario("sse 50 chunks 2 ms apart c=16", stream=True, chunks=50, delay_ms=2, concurrency=16),
    Scenario("anthropic sse 50 chunks c=16", client="anthropic", stream=True, chunks=50, concurrency=16),
    Scenario("anthropic→openai sse 50 chunks c=16", client="anthropic", stream=True, chunks=50, concurrency=16,
             upstream="openai", targets=("direct", "gateway")),
    Scenario("100k-token history c=1", prompt_tokens=100_000, concurrency=1),
    Scenario("json c=64, limits on Redis", concurrency=64, chain="redis", targets=("gateway",)),
    Scenario("json c=1, core stages only", concurrency=1, chain="core", targets=("gateway",), quick=False),
    Scenario("json c=64, core stages only", concurrency=64, chain="core", targets=("gateway",), quick=False),
    Scenario("json c=64, 2 workers", concurrency=64, workers=2, quick=False),
    Scenario("sse 50 chunks c=1 (added latency)", stream=True, chunks=50, concurrency=1, quick=False),
]
BENCH_KEY = "ccm-bench-key-0123456789"


@dataclass
class Measurement:
    scenario: Scenario
    target: str
    result: Result
    cpu: float | None = None  # seconds of proxy-process CPU while measured
    rss: int | None = None
    note: str = ""

    @property
    def cpu_per_event_us(self) -> float | None:
        if self.cpu is None or not self.result.events:
            return None
        return self.cpu / self.result.events * 1e6

    @property
    def cpu_per_request_us(self) -> float | None:
        if self.cpu is None or not self.result.count:
            return None
        return self.cpu / self.result.count * 1e6


@dataclass
class Run:
    measurements: list[Measurement] = field(default_factory=list)
    rss_series: list[tuple[int, int]] = field(default_factory=list)  # (requests served, gateway RSS)
    started: float = field(default_factory=time.time)


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}: {proc.args}")


class Processes:
    """Starts and remembers the upstream, bare proxies and gateways; stops them all at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="ccm-bench-"))
        self.upstream = self._start(["-m", "benchmarks.upstream", "--port", "{port}"])
        self.bare: dict[int, tuple[str, int]] = {}
        self.gateways: dict[tuple[int, str], tuple[str, int]] = {}
        self.redis_url = ""

    def _start(self, args: list[str], env: dict[str, str] | None = None) -> tuple[str, int]:
        port = free_port()
        cmd = [PY, *[a.replace("{port}", str(port)) for a in args]]
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_port(port, proc)
        return f"http://127.0.0.1:{port}", proc.pid

    def bare_proxy(self, workers: int) -> tuple[str, int]:
        if workers not in self.bare:
            self.bare[workers] = self._start(["-m", "benchmarks.bare_proxy", "--port", "{port}",
                                              "--upstream", self.upstream[0], "--workers", str(workers)])
        return self.bare[workers]

    def litellm(self, binary: str) -> tuple[str, int]:
        """The LiteLLM proxy (a peer, from its own virtualenv) on the same mock upstream, no database."""
        if not hasattr(self, "_litellm"):
            config = self.tmp / "litellm.yaml"
            config.write_text(
                "model_list:\n  - model_name: \"*\"\n    litellm_params:\n      model: \"openai/*\"\n"
                f"      api_base: \"{self.upstream[0]}/v1\"\n      api_key: \"sk-bench\"\n")
            env = {"LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                   "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
            port = free_port()
            cmd = [str(Path(binary).resolve()), "--config", str(config), "--port", str(port),
                   "--host", "127.0.0.1", "--num_workers", "1"]
            proc = subprocess.Popen(cmd, cwd=self.tmp, env={**os.environ, **env},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            wait_port(port, proc, timeout=120)
            self._litellm = (f"http://127.0.0.1:{port}", proc.pid)
        return self._litellm

    def redis(self) -> str:
        """A throwaway redis-server for the shared-limits scenario (``apt-get install redis-server``)."""
        if not self.redis_url:
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("redis-server is not installed")
            port = free_port()
            proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(proc)
            wait_port(port, proc)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self.redis_url

    def gateway(self, workers: int, chain: str = "full") -> tuple[str, int]:
        if (workers, chain) not in self.gateways:
            config = self.tmp / f"gateway-{workers}-{chain}.toml"
            redis = self.redis() if chain == "redis" else ""
            config.write_text(gateway_config(self.upstream[0], workers, chain, redis))
            self.gateways[workers, chain] = self._start(
                ["-m", "ccm_gateway", "serve", "--config", str(config), "--port", "{port}"])
        return self.gateways[workers, chain]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def gateway_config(upstream: str, workers: int, chain: str = "full", redis: str = "") -> str:
    """The gateway under test, its providers pointing at the mock upstream. ``full``: every stage on
    (auth, token counting, rate limits with limits far above the load); ``core``: none of those."""
    stages = ""
    if chain == "core":
        stages = "[auth]\nenabled = false\n[tokens]\ncount_prompts = false\n"
    else:
        stages = (f'[[keys]]\nname = "bench"\nkey = "{BENCH_KEY}"\nrpm = 100000000\ntpm = 1000000000\n'
                  "concurrency = 100000\n[limits]\nip_rpm = 100000000\n")
        if redis:
            stages += f'[state]\nbackend = "redis"\nurl = "{redis}"\n'
    return f"""
[server]
workers = {workers}
[logging]
level = "warning"
{stages}
[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_keys = ["sk-bench-openai-0000000000"]
[providers.upa]
kind = "anthropic"
base_url = "{upstream}"
api_keys = ["sk-bench-anthropic-000000000"]
"""


# --- requests -------------------------------------------------------------------------------------


def history(tokens: int) -> list[dict[str, str]]:
    """A Claude Code-like conversation of about ``tokens`` tokens (≈4 bytes each), ending with a user turn."""
    turn = ("Here is the file you asked for, with the change applied and the tests run again. " * 12)
    messages = []
    size = 0
    while size < tokens * 4:
        messages.append({"role": "user" if len(messages) % 2 == 0 else "assistant", "content": turn})
        size += len(turn)
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "continue"})
    return messages


def request_for(s: Scenario, target: str, base: str) -> tuple[str, bytes, dict[str, str]]:
    directives = f"+chunks={s.chunks}" + (f"+delay_ms={s.delay_ms:g}" if s.delay_ms else "")
    client_dialect = s.client
    upstream_dialect = s.upstream or s.client
    if target == "gateway":
        model = ("up/" if upstream_dialect == "openai" else "upa/") + f"m{directives}"
    else:
        model = f"m{directives}"
    messages = [{"role": "user", "content": "hello"}] if s.prompt_tokens <= 20 else history(s.prompt_tokens)
    if client_dialect == "openai":
        body: dict[str, object] = {"model": model, "messages": messages, "stream": s.stream}
        if s.stream:
            body["stream_options"] = {"include_usage": True}
        return base + "/v1/chat/completions", msgspec.json.encode(body), {}
    body = {"model": model, "max_tokens": 1024, "messages": messages, "stream": s.stream}
    return base + "/v1/messages", msgspec.json.encode(body), {"anthropic-version": "2023-06-01"}


# --- measuring ------------------------------------------------------------------------------------


def measure(
    procs: Processes, s: Scenario, target: str, duration: float, warmup: float, litellm: str = ""
) -> Measurement:
    if target == "direct":
        base, pid = procs.upstream
        pid = 0
    elif target == "litellm":
        base, pid = procs.litellm(litellm)
    elif target == "bare":
        base, pid = procs.bare_proxy(s.workers)
    else:
        base, pid = procs.gateway(s.workers, s.chain)
    url, body, headers = request_for(s, target, base)
    if target == "gateway" and s.chain != "core":
        headers = {**headers, "authorization": f"Bearer {BENCH_KEY}"}
    before = procstats.sample(pid) if pid else None
    result = asyncio.run(_load_with_baseline(url, body, headers, s.concurrency, duration, warmup, pid))
    m = Measurement(s, target, result[0])
    if pid and result[1] is not None:
        after = procstats.sample(pid)
        m.cpu = after.cpu - result[1].cpu
        m.rss = after.rss
    elif before is not None:
        m.rss = before.rss
    if result[0].errors and not result[0].count:
        m.note = "; ".join(result[0].error_samples[:1])
    return m


async def _load_with_baseline(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float, warmup: float, pid: int
) -> tuple[Result, procstats.Sample | None]:
    """Warm up, take the CPU baseline, then measure — so warm-up work is not billed to the target."""
    if warmup:
        await run_load(url, body, headers=headers, concurrency=concurrency, duration=warmup)
    baseline = procstats.sample(pid) if pid else None
    result = await run_load(url, body, headers=headers, concurrency=concurrency, duration=duration, progress=False)
    return result, baseline


def rss_over_requests(procs: Processes, total: int) -> list[tuple[int, int]]:
    """Gateway RSS after every ``total // 5`` requests: flat means no leak."""
    base, pid = procs.gateway(1)
    s = Scenario("rss", stream=True, chunks=20, concurrency=32)
    url, body, headers = request_for(s, "gateway", base)
    headers = {**headers, "authorization": f"Bearer {BENCH_KEY}"}
    series = [(0, procstats.sample(pid).rss)]
    step = total // 5
    for i in range(1, 6):
        asyncio.run(run_load(url, body, headers=headers, concurrency=32, duration=600, max_requests=step))
        series.append((i * step, procstats.sample(pid).rss))
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every scenario, longer runs, the RSS series")
    parser.add_argument("--duration", type=float, help="seconds measured per target (default 4, full 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", help="run scenarios whose name contains this text")
    parser.add_argument("--peers", metavar="LITELLM", help="path of a litellm binary: measure its proxy too")
    args = parser.parse_args()
    duration = args.duration or (10.0 if args.full else 4.0)
    warmup = 2.0 if args.full else 1.0
    scenarios = [s for s in SCENARIOS if (args.full or s.quick) and (not args.only or args.only in s.name)]
    run = Run()
    procs = Processes()
    try:
        for s in scenarios:
            peer = ("litellm",) if args.peers and s.client == "openai" and s.workers == 1 else ()
            for target in (*s.targets, *peer):
                print(f"{s.name:<40} {target:<8}", end="", flush=True)
                try:
                    m = measure(procs, s, target, duration, warmup, args.peers or "")
                except RuntimeError as exc:  # e.g. no redis-server here: report it, measure the rest
                    m = Measurement(s, target, Result(), note=f"not run: {exc}")
                run.measurements.append(m)
                cpu = f"{m.cpu_per_request_us:8.0f} µs CPU/req" if m.cpu_per_request_us else ""
                print(f"p50 {m.result.pct(50):8.2f} ms  {m.result.throughput:8.1f} req/s  "
                      f"{m.result.errors} err  {cpu} {m.note}", flush=True)
        if args.full:
            print("RSS over 10k requests …", flush=True)
            run.rss_series = rss_over_requests(procs, 10_000)
    finally:
        procs.stop()
    text = write_report(run, args.out, machine(), " ".join(["python -m benchmarks.runner", *sys.argv[1:]]))
    print()
    print(text)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return (f"{os.cpu_count()} CPU ({model or platform.machine()}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}, commit {commit.stdout.strip() or 'unknown'}; "
            "upstream, proxies and load generator share the machine")


if __name__ == "__main__":
    main()
