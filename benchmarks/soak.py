"""Soak test: the gateway under minutes of mixed traffic with injected upstream faults, sampled for leaks
(``make soak``; not part of ``make test``). Loopback only, bounded by ``--minutes``.

It starts the mock upstream and a gateway process (auth, high rate limits, billing with a budget, the
SQLite ledger, two OpenAI deployments behind one route plus an Anthropic provider), drives OpenAI- and
Anthropic-shaped requests (JSON, streams, translated both ways, some ~30k-token prompts) at a fixed
concurrency, ~5 % of them with a fault directive for the mock (503, 429, a stream cut short, a slow first
byte, slow chunks), and every ``--sample`` seconds records the gateway's RSS, open file descriptors and
TCP connections (from /proc) and, when ``/metrics`` answers, its task, pool and in-flight gauges.

    python -m benchmarks.soak                       # 10 minutes, writes docs/soak.md
    python -m benchmarks.soak --minutes 2 --out /tmp/soak.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from . import procstats
from .runner import PY, ROOT, Processes, free_port, history, machine, wait_port

SOAK_KEY = "ccm-soak-key-0123456789"
ADMIN_KEY = "ccm-soak-admin-0123456789"
GAUGES = ("ccm_asyncio_tasks", "ccm_upstream_connections", "ccm_in_flight_requests")
RSS_GROWTH_LIMIT = 0.05  # RSS over the second half of the run may grow at most this much
FD_SLACK = 4  # idle descriptors after the run may exceed the idle baseline by this many (log files, sqlite)
# hypercorn notices a client's FIN on an idle keep-alive connection only when this timer fires, so a
# closed client's socket stays in CLOSE_WAIT until then: the idle waits outlast it.
KEEP_ALIVE = 75.0  # [server] keep_alive_timeout, the default
PROVIDERS = 3  # up, up2, upa: each keeps its own connection pool


@dataclass(frozen=True)
class Kind:
    """One sort of request in the mix: its protocol, route or direct model name, and whether it streams."""

    name: str
    client: str  # "openai" or "anthropic"
    model: str
    stream: bool = False
    large: bool = False
    fault: str = ""  # "" = must succeed; else the directive that makes it fail or slow down
    weight: float = 1.0

    def expected(self, outcome: str) -> bool:
        """Ordinary and merely slow requests answer 200; an upstream error status comes back as an error
        (never 500); a stream cut short ends with an error event (or an error status before its head)."""
        if not self.fault or self.fault.startswith(("ttfb_ms", "delay_ms")):
            return outcome == "200"
        if self.fault.startswith("truncate"):
            return outcome == "200 + error event" or (outcome[:1] in "45" and outcome != "500")
        return outcome[:1] in "45" and outcome != "500"


# ~95 % ordinary requests, ~5 % faults. ``soak`` is a route over two OpenAI deployments (up, up2).
MIX = [
    Kind("openai json (route, 2 deployments)", "openai", "soak", weight=20),
    Kind("openai sse", "openai", "up/gpt-4.1-mini+chunks=30+delay_ms=3", stream=True, weight=20),
    Kind("anthropic json", "anthropic", "upa/claude-sonnet-4-5", weight=15),
    Kind("anthropic sse", "anthropic", "upa/claude-sonnet-4-5+chunks=30+delay_ms=3", stream=True, weight=15),
    Kind("anthropic→openai sse (translated)", "anthropic", "up/gpt-4.1-mini+chunks=30+delay_ms=3", stream=True,
         weight=10),
    Kind("openai→anthropic json (translated)", "openai", "upa/claude-sonnet-4-5", weight=8),
    Kind("openai json, ~30k-token prompt", "openai", "up2/gpt-4.1-mini", large=True, weight=4),
    Kind("fault: upstream 503", "openai", "up/gpt-4.1-mini+status=503", fault="status=503", weight=1.2),
    Kind("fault: upstream 429", "anthropic", "upa/claude-sonnet-4-5+status=429", fault="status=429", weight=1.2),
    Kind("fault: stream cut after 3 events", "openai", "up/gpt-4.1-mini+chunks=30+truncate=3", stream=True,
         fault="truncate=3", weight=1.2),
    Kind("fault: translated stream cut", "anthropic", "up/gpt-4.1-mini+chunks=30+truncate=4", stream=True,
         fault="truncate=4", weight=0.6),
    Kind("fault: first byte after 1.5 s", "openai", "up/gpt-4.1-mini+ttfb_ms=1500", fault="ttfb_ms=1500",
         weight=0.4),
    Kind("fault: 200 ms between chunks", "anthropic", "upa/claude-sonnet-4-5+chunks=10+delay_ms=200",
         stream=True, fault="delay_ms=200", weight=0.4),
]


@dataclass
class Sample:
    t: float  # seconds since the load started (negative: before it)
    label: str
    requests: int
    rss: int
    fds: int
    fd_kinds: Counter[str]
    upstream_conns: int  # established TCP connections from the gateway to the mock upstream
    client_conns: int  # established TCP connections from clients to the gateway
    close_wait: int  # the process's sockets whose peer has closed but the gateway has not yet
    gauges: dict[str, float] | None  # None: /metrics answered 404 (or not at all)


@dataclass
class Tally:
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    done: int = 0
    failures: int = 0
    unexpected: list[str] = field(default_factory=list)

    def add(self, kind: Kind, outcome: str, detail: str = "") -> None:
        self.by_kind.setdefault(kind.name, Counter())[outcome] += 1
        self.done += 1
        if not kind.expected(outcome):
            self.failures += 1
            if len(self.unexpected) < 20:
                self.unexpected.append(f"{kind.name}: {outcome} {detail}".strip())


# --- the gateway under test ------------------------------------------------------------------------------


def soak_config(upstream: str, ledger: Path) -> str:
    """Every stage on: auth (limits far above the load, a budget that is never reached), billing and the ledger
    (directive-laden model names priced like their base model). Timeouts and pools are the defaults."""
    return f"""
[server]
graceful_timeout = 10.0
keep_alive_timeout = {KEEP_ALIVE}
[logging]
level = "warning"
[admin]
key = "{ADMIN_KEY}"
[[keys]]
name = "soak"
key = "{SOAK_KEY}"
rpm = 100000000
tpm = 1000000000
concurrency = 100000
budget_usd = 1000000.0
budget_period = "1d"
[limits]
ip_rpm = 100000000
[ledger]
path = "{ledger}"
[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_keys = ["sk-soak-openai-000000000000"]
[providers.up2]
kind = "openai"
base_url = "{upstream}/v1"
api_keys = ["sk-soak-openai-111111111111"]
[providers.upa]
kind = "anthropic"
base_url = "{upstream}"
api_keys = ["sk-soak-anthropic-00000000"]
[pricing.models."gpt-4.1-mini+*"]
same_as = "gpt-4.1-mini"
[pricing.models."claude-sonnet-4-5+*"]
same_as = "claude-sonnet-4-5"
[[models]]
name = "soak"
targets = [{{ provider = "up", model = "gpt-4.1-mini" }}, {{ provider = "up2", model = "gpt-4.1-mini" }}]
"""


def start_gateway(procs: Processes) -> tuple[str, int, Path]:
    """The gateway as users run it (``python -m ccm_gateway serve``), stderr kept to count tracebacks."""
    config = procs.tmp / "soak.toml"
    config.write_text(soak_config(procs.upstream[0], procs.tmp / "soak-ledger.sqlite3"))
    log = procs.tmp / "gateway.log"
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen([PY, "-m", "ccm_gateway", "serve", "--config", str(config), "--port", str(port)],
                                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    procs.procs.append(proc)
    wait_port(port, proc)
    return f"http://127.0.0.1:{port}", proc.pid, log


# --- sampling ---------------------------------------------------------------------------------------------


def open_fds(pid: int) -> Counter[str]:
    """The process tree's open descriptors by what they are: socket, pipe, anon_inode:…, file."""
    kinds: Counter[str] = Counter()
    for p in procstats.tree(pid):
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in names:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            kinds[target.split(":", 1)[0] if target.startswith(("socket:", "pipe:", "anon_inode:")) else "file"] += 1
    return kinds


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for p in procstats.tree(pid):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    target = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def tcp_connections(pid: int, upstream_port: int, gateway_port: int) -> tuple[int, int, int]:
    """(to the upstream, from clients, in CLOSE_WAIT): the process's TCP sockets by state and port."""
    mine = _socket_inodes(pid)
    up = down = close_wait = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] not in mine:
                continue
            close_wait += fields[3] == "08"
            if fields[3] != "01":  # 01 = ESTABLISHED
                continue
            local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
            up += remote == upstream_port
            down += local == gateway_port
    return up, down, close_wait


def parse_gauges(text: str) -> dict[str, float]:
    """Sums of the soak's gauges over their label sets; ``ccm_upstream_connections`` also per state."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("ccm_"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        if name not in GAUGES:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        found[name] = found.get(name, 0.0) + number
        if name == "ccm_upstream_connections" and 'state="' in name_labels:
            state = name_labels.split('state="', 1)[1].split('"', 1)[0]
            key = f"{name}[{state}]"
            found[key] = found.get(key, 0.0) + number
    return found


async def scrape(session: aiohttp.ClientSession, base: str) -> dict[str, float] | None:
    try:
        async with session.get(base + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}) as resp:
            if resp.status != 200:
                return None
            return parse_gauges(await resp.text())
    except (aiohttp.ClientError, TimeoutError):
        return None


async def take_sample(
    session: aiohttp.ClientSession, base: str, pid: int, upstream_port: int, t: float, label: str, tally: Tally
) -> Sample:
    gateway_port = int(base.rsplit(":", 1)[1])
    up, down, close_wait = tcp_connections(pid, upstream_port, gateway_port)
    fds = open_fds(pid)
    rss = procstats.sample(pid).rss
    return Sample(t, label, tally.done, rss, fds.total(), fds, up, down, close_wait, await scrape(session, base))


# --- traffic ----------------------------------------------------------------------------------------------


def request_body(kind: Kind, large_history: list[dict[str, str]]) -> tuple[str, bytes, dict[str, str]]:
    messages = large_history if kind.large else [{"role": "user", "content": "Summarise the soak test in a line."}]
    if kind.client == "openai":
        body: dict[str, object] = {"model": kind.model, "messages": messages, "stream": kind.stream}
        if kind.stream:
            body["stream_options"] = {"include_usage": True}
        return "/v1/chat/completions", msgspec.json.encode(body), {"authorization": f"Bearer {SOAK_KEY}"}
    body = {"model": kind.model, "max_tokens": 512, "messages": messages, "stream": kind.stream}
    return "/v1/messages", msgspec.json.encode(body), {"x-api-key": SOAK_KEY, "anthropic-version": "2023-06-01"}


async def one(session: aiohttp.ClientSession, base: str, kind: Kind, prepared: tuple[str, bytes, dict[str, str]],
              tally: Tally) -> None:
    path, body, headers = prepared
    try:
        async with session.post(base + path, data=body, headers=headers) as resp:
            data = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.add(kind, "client error", f"{type(exc).__name__}: {exc}")
        return
    outcome = str(resp.status)
    if resp.status == 200 and kind.stream and (b"event: error" in data or b'"error"' in data):
        outcome = "200 + error event"  # a stream cut short upstream ends with an error event, never silently
    elif resp.status == 200 and kind.stream and not (b"[DONE]" in data or b"message_stop" in data):
        outcome = "200 without end"
    tally.add(kind, outcome, data[:200].decode(errors="replace") if outcome != "200" and not kind.fault else "")


async def drive(base: str, concurrency: int, seconds: float, tally: Tally, seed: int) -> None:
    """A closed loop: ``concurrency`` workers, each sending its next request as soon as one ends."""
    rng = random.Random(seed)
    large = history(30_000)
    prepared = {k.name: request_body(k, large) for k in MIX}
    weights = [k.weight for k in MIX]
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            while time.monotonic() < stop_at:
                kind = rng.choices(MIX, weights)[0]
                await one(session, base, kind, prepared[kind.name], tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def soak(base: str, pid: int, upstream_port: int, minutes: float, concurrency: int, every: float,
               idle: float) -> tuple[list[Sample], Tally, Tally]:
    warm, tally = Tally(), Tally()
    samples: list[Sample] = []
    # The probe's own connection must not count as a client left open: one connection per scrape.
    probe_connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=probe_connector, timeout=aiohttp.ClientTimeout(total=10)) as probe:

        async def sample(t: float, label: str, source: Tally) -> None:
            s = await take_sample(probe, base, pid, upstream_port, t, label, source)
            samples.append(s)
            print(row(s), flush=True)

        print(header(), flush=True)
        await sample(-idle - 10, "start", warm)
        await drive(base, concurrency, 10.0, warm, seed=1)  # imports, caches and pools warm up, unrecorded
        await asyncio.sleep(idle)
        await sample(0.0, "idle baseline", tally)
        start = time.monotonic()
        load = asyncio.create_task(drive(base, concurrency, minutes * 60, tally, seed=2))
        while not load.done():
            await asyncio.wait({load}, timeout=every)
            if not load.done():
                await sample(time.monotonic() - start, "load", tally)
        await load
        await sample(time.monotonic() - start, "load end", tally)
        await asyncio.sleep(idle)
        await sample(time.monotonic() - start, "idle after", tally)
    return samples, warm, tally


# --- verdict and report -----------------------------------------------------------------------------------


Check = tuple[str, bool | None, str]  # (what, passed — None: not measurable on this build, detail)


def verdict(samples: list[Sample], tally: Tally, tracebacks: int, pool_bound: int) -> list[Check]:
    """The checks behind the verdict; "flat" when every measured one passes."""
    baseline = next(s for s in samples if s.label == "idle baseline")
    loaded = [s for s in samples if s.label in ("load", "load end")]
    after = samples[-1]
    checks: list[Check] = []
    if len(loaded) >= 2:
        mid = loaded[len(loaded) // 2 - (len(loaded) % 2 == 0)]
        peak = max(s.rss for s in loaded[loaded.index(mid):])
        growth = peak / mid.rss - 1
        detail = f"{mb(mid.rss)} at {mid.t:.0f} s → peak {mb(peak)} ({growth:+.1%}; limit +{RSS_GROWTH_LIMIT:.0%})"
        checks.append(("RSS over the second half of the load", growth <= RSS_GROWTH_LIMIT, detail))
    else:
        checks.append(("RSS over the second half of the load", False, "too few samples: run longer"))
    checks.append(("open fds back to the idle baseline", after.fds <= baseline.fds + FD_SLACK,
                   f"{baseline.fds} before → {after.fds} after (slack {FD_SLACK}); peak "
                   f"{max(s.fds for s in samples)}; after by kind: {dict(sorted(after.fd_kinds.items()))}"))
    checks.append(("TCP connections closed when idle", after.upstream_conns <= baseline.upstream_conns
                   and after.client_conns == 0 and after.close_wait <= baseline.close_wait,
                   f"upstream {baseline.upstream_conns} → {after.upstream_conns}, clients {after.client_conns}, "
                   f"CLOSE_WAIT {baseline.close_wait} → {after.close_wait} (at the load's end: "
                   f"{next(s for s in samples if s.label == 'load end').close_wait})"))
    if baseline.gauges is not None and after.gauges is not None:
        tasks_before = baseline.gauges.get("ccm_asyncio_tasks", 0.0)
        tasks_after = after.gauges.get("ccm_asyncio_tasks", 0.0)
        checks.append(("asyncio tasks back to the idle baseline", tasks_after <= tasks_before + 2,
                       f"{tasks_before:.0f} → {tasks_after:.0f}"))
        in_flight = after.gauges.get("ccm_in_flight_requests", 0.0)
        checks.append(("no request left in flight", in_flight == 0, f"{in_flight:.0f}"))
    else:
        checks.append(("asyncio tasks and in-flight requests back to the idle baseline", None,
                       "/metrics is absent on this build"))
    peak_pool = max(s.upstream_conns for s in samples)
    checks.append(("upstream pools bounded by concurrency × providers", peak_pool <= pool_bound,
                   f"peak {peak_pool} established connections to the upstream (bound {pool_bound})"))
    example = f", e.g. {tally.unexpected[0]}" if tally.unexpected else ""
    checks.append(("ordinary requests answered 200, faults as errors, never a 500", tally.failures == 0,
                   f"{tally.failures} unexpected of {tally.done}{example}"))
    checks.append(("no traceback in the gateway's log", tracebacks == 0, f"{tracebacks}"))
    return checks


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def header() -> str:
    return (f"{'t (s)':>7} {'phase':<14} {'requests':>9} {'RSS':>9} {'fds':>5} {'up conns':>8} {'clients':>7} "
            f"{'CLOSE_WAIT':>10} {'tasks':>6} {'pool':>5} {'in-flight':>9}")


def _gauge(s: Sample, name: str) -> str:
    if s.gauges is None:
        return "n/a"
    return f"{s.gauges[name]:.0f}" if name in s.gauges else "—"


def row(s: Sample) -> str:
    return (f"{s.t:7.0f} {s.label:<14} {s.requests:9d} {mb(s.rss):>9} {s.fds:5d} {s.upstream_conns:8d} "
            f"{s.client_conns:7d} {s.close_wait:10d} {_gauge(s, 'ccm_asyncio_tasks'):>6} "
            f"{_gauge(s, 'ccm_upstream_connections'):>5} {_gauge(s, 'ccm_in_flight_requests'):>9}")


def outcome(ok: bool | None) -> str:
    return "not measured" if ok is None else "pass" if ok else "**fail**"


def is_flat(checks: list[Check]) -> bool:
    return all(ok is not False for _, ok, _ in checks)


def markdown(samples: list[Sample], tally: Tally, checks: list[Check], args: argparse.Namespace,
             title: str) -> str:
    flat = is_flat(checks)
    unmeasured = [name for name, ok, _ in checks if ok is None]
    lines = [
        f"# {title}", "",
        f"Command: `python -m benchmarks.soak --minutes {args.minutes:g} --concurrency {args.concurrency}`  ",
        f"Machine: {machine()}  ",
        f"Load: {args.minutes:g} min closed loop at concurrency {args.concurrency}, {tally.done} requests "
        f"({tally.done / (args.minutes * 60):.0f}/s), samples every {args.sample:g} s; idle waits of "
        f"{args.idle:g} s before the baseline and after the load.", "",
        f"**Verdict: {'flat' if flat else 'NOT flat'}**"
        + (f" (not measured: {'; '.join(unmeasured)})" if unmeasured else ""), "",
        "| check | result | detail |", "|---|---|---|",
        *[f"| {name} | {outcome(ok)} | {detail} |" for name, ok, detail in checks], "",
        "## Over time", "",
        "RSS, fds and TCP connections are read from /proc (upstream conns: the gateway's established connections "
        "to the mock upstream, i.e. its pools, one per provider; clients: connections from the load generator; "
        "CLOSE_WAIT: sockets whose peer has closed and the gateway has not yet). tasks, pool and in-flight are the "
        "`ccm_asyncio_tasks`, `ccm_upstream_connections` (sum over providers and states) and "
        "`ccm_in_flight_requests` gauges scraped from `/metrics`; `n/a` where the endpoint is absent.", "",
        "| t (s) | phase | requests | RSS | fds | upstream conns | clients | CLOSE_WAIT | tasks | pool | in-flight |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in samples:
        lines.append(f"| {s.t:.0f} | {s.label} | {s.requests} | {mb(s.rss)} | {s.fds} | {s.upstream_conns} | "
                     f"{s.client_conns} | {s.close_wait} | {_gauge(s, 'ccm_asyncio_tasks')} | "
                     f"{_gauge(s, 'ccm_upstream_connections')} | {_gauge(s, 'ccm_in_flight_requests')} |")
    lines += ["", "Sockets in CLOSE_WAIT are client connections the load generator has closed: hypercorn notices "
              "the client's FIN on an idle keep-alive connection only when `keep_alive_timeout` "
              f"({KEEP_ALIVE:g} s) fires, so they are counted at the load's end and gone after the idle wait.",
              "", "## Traffic", "",
              "Faults are mock directives in the model name (`ccm_gateway/mock/replies.py`). A stream cut short "
              "must end in an error event; slow first bytes and slow chunks must still answer 200.", "",
              "| request | directive | outcomes |", "|---|---|---|"]
    for kind in MIX:
        outcomes = ", ".join(f"{o}: {n}" for o, n in sorted(tally.by_kind.get(kind.name, Counter()).items()))
        lines.append(f"| {kind.name} | {kind.fault or '—'} | {outcomes or 'none'} |")
    faults = sum(n for k in MIX if k.fault for n in tally.by_kind.get(k.name, Counter()).values())
    lines += ["", f"Faults injected: {faults} of {tally.done} requests ({faults / max(tally.done, 1):.1%})."]
    if tally.unexpected:
        lines += ["", "Unexpected outcomes (first 20):", "", *[f"- `{u}`" for u in tally.unexpected]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the measured load (default 10)")
    parser.add_argument("--concurrency", type=int, default=12, help="requests in flight (default 12)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--idle", type=float, default=KEEP_ALIVE + 10,
                        help=f"idle seconds before the baseline and at the end (default {KEEP_ALIVE + 10:g}: "
                             "past the keep-alive timeout)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "soak.md", help="Markdown report")
    parser.add_argument("--title", default="", help="report title (default: says how long it ran)")
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.concurrency <= 1024:
        parser.error("--minutes must be in (0, 1440] and --concurrency in [1, 1024]")
    procs = Processes()
    try:
        base, pid, log = start_gateway(procs)
        upstream_port = int(procs.upstream[0].rsplit(":", 1)[1])
        samples, _, tally = asyncio.run(
            soak(base, pid, upstream_port, args.minutes, args.concurrency, args.sample, args.idle))
    finally:
        procs.stop()
    tracebacks = log.read_text(errors="replace").count("Traceback")
    checks = verdict(samples, tally, tracebacks, pool_bound=args.concurrency * PROVIDERS)
    title = args.title or f"Soak test: {args.minutes:g} minutes of mixed traffic with injected faults"
    text = markdown(samples, tally, checks, args, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print()
    for name, ok, detail in checks:
        print(f"{outcome(ok).strip('*').upper():<12}  {name}: {detail}")
    flat = is_flat(checks)
    print(f"\nverdict: {'flat' if flat else 'NOT flat'}; report written to {args.out}")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
