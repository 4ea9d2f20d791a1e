"""Turns a run's measurements into the Markdown report, the headline ratios and PNG charts."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import Measurement, Run


def _fmt(value: float | None, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _lat(m: Measurement | None) -> str:
    if m is None or not m.result.count:
        return "-" if m is None else f"failed ({m.note or 'errors'})"
    return f"{m.result.pct(50):.2f} / {m.result.pct(99):.2f}"


def _added(m: Measurement | None, direct: Measurement | None) -> str:
    if m is None or direct is None or not m.result.count or not direct.result.count:
        return "-"
    return f"{m.result.pct(50) - direct.result.pct(50):+.2f}"


def _by(run: Run) -> dict[str, dict[str, Measurement]]:
    table: dict[str, dict[str, Measurement]] = {}
    for m in run.measurements:
        table.setdefault(m.scenario.name, {})[m.target] = m
    return table


def headline(run: Run) -> list[tuple[str, str, str, str]]:
    """(target, measured, goal, verdict) for the issue's targets that this run measured."""
    t = _by(run)
    rows: list[tuple[str, str, str, str]] = []

    def added(s: str, target: str) -> float | None:
        row = t.get(s, {})
        if target in row and "direct" in row and row[target].result.count and row["direct"].result.count:
            return row[target].result.pct(50) - row["direct"].result.pct(50)
        return None

    gw, bare = added("json c=1 (added latency)", "gateway"), added("json c=1 (added latency)", "bare")
    if gw is not None and bare is not None:
        rows.append(("added latency, JSON, c=1 (gateway − bare proxy, p50)", f"{gw - bare:+.3f} ms",
                     "≤ +0.25 ms", "met" if gw - bare <= 0.25 else "not met"))
    row = t.get("json c=64 (throughput)", {})
    if row.get("gateway") and row.get("bare") and row["bare"].result.throughput:
        ratio = row["gateway"].result.throughput / row["bare"].result.throughput
        rows.append(("throughput, JSON, c=64, 1 worker (gateway ÷ bare)", f"{ratio:.2f}×", "≥ 0.8×",
                     "met" if ratio >= 0.8 else "not met"))
    for scenario, label in (("sse 50 chunks 2 ms apart c=16", "events 2 ms apart: one read and write each"),
                            ("sse 50 chunks c=16", "50 events at once: per stream ÷ 50")):
        row = t.get(scenario, {})
        if row.get("gateway") and row.get("bare") and row["bare"].cpu_per_event_us:
            ratio = (row["gateway"].cpu_per_event_us or 0) / row["bare"].cpu_per_event_us
            rows.append((f"stream pass-through CPU per chunk, {label} (gateway ÷ bare)", f"{ratio:.2f}×", "≤ 1.2×",
                         "met" if ratio <= 1.2 else "not met"))
    translated = t.get("anthropic→openai sse 50 chunks c=16", {}).get("gateway")
    passthrough = t.get("anthropic sse 50 chunks c=16", {}).get("gateway")
    if translated and passthrough and passthrough.cpu_per_event_us:
        if translated.result.count:
            ratio = (translated.cpu_per_event_us or 0) / passthrough.cpu_per_event_us
            rows.append(("translated ÷ pass-through CPU per chunk", f"{ratio:.2f}×", "≤ 2×",
                         "met" if ratio <= 2 else "not met"))
        else:
            rows.append(("translated ÷ pass-through CPU per chunk", "n/a", "≤ 2×",
                         "not measurable: translation not built"))
    gw_added = added("json c=1 (added latency)", "gateway")
    peer_added = added("json c=1 (added latency)", "litellm")
    if gw_added is not None and peer_added is not None and gw_added > 0:
        rows.append(("LiteLLM proxy added latency ÷ gateway's (JSON, c=1)", f"{peer_added / gw_added:.1f}×", "≥ 10×",
                     "met" if peer_added / gw_added >= 10 else "not met"))
    row = t.get("json c=64 (throughput)", {})
    if row.get("gateway") and row.get("litellm") and row["litellm"].result.throughput:
        ratio = row["gateway"].result.throughput / row["litellm"].result.throughput
        rows.append(("gateway ÷ LiteLLM proxy throughput (JSON, c=64, 1 worker)", f"{ratio:.1f}×", "≥ 10×",
                     "met" if ratio >= 10 else "not met"))
    if run.rss_series:
        peak = max(rss for _, rss in run.rss_series) / 2**20
        growth = (run.rss_series[-1][1] - run.rss_series[1][1]) / 2**20
        rows.append(("gateway RSS after 10k requests (1 worker)", f"{peak:.0f} MB (growth {growth:+.1f} MB)",
                     "≤ 80 MB, flat", "met" if peak <= 80 and growth < 5 else "not met"))
    return rows


def write_report(run: Run, out: Path, machine: str, command: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    t = _by(run)
    lines = [f"Machine: {machine}.", f"Command: `{command}`.", ""]
    lines += ["| target | measured | goal | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in headline(run)]
    lines += ["", "Latency (ms, p50 / p99) and throughput (req/s); *added* is p50 minus the direct call's p50.", ""]
    peers = any(m.target == "litellm" for m in run.measurements)
    extra_head = " LiteLLM | LiteLLM added | LiteLLM req/s |" if peers else ""
    lines += ["| scenario | direct | bare proxy | gateway | bare added | gateway added | bare req/s | "
              "gateway req/s | gateway ÷ bare req/s |" + extra_head,
              "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if peers else "")]
    for name, row in t.items():
        d, b, g, p = row.get("direct"), row.get("bare"), row.get("gateway"), row.get("litellm")
        ratio = (g.result.throughput / b.result.throughput) if g and b and b.result.throughput else None
        extra = (f" {_lat(p)} | {_added(p, d)} | {_fmt(p.result.throughput if p else None, '.0f')} |"
                 if peers else "")
        lines.append(f"| {name} | {_lat(d)} | {_lat(b)} | {_lat(g)} | {_added(b, d)} | {_added(g, d)} | "
                     f"{_fmt(b.result.throughput if b else None, '.0f')} | "
                     f"{_fmt(g.result.throughput if g else None, '.0f')} | {_fmt(ratio)} |" + extra)
    lines += ["", "Proxy-process CPU (µs per request, and per streamed event for SSE).", ""]
    lines += ["| scenario | bare µs/req | gateway µs/req | bare µs/event | gateway µs/event | gateway ÷ bare |",
              "|---|---|---|---|---|---|"]
    for name, row in t.items():
        b, g = row.get("bare"), row.get("gateway")
        per = [(m.cpu_per_event_us if m.scenario.stream else m.cpu_per_request_us) if m else None for m in (b, g)]
        ratio = per[1] / per[0] if per[0] and per[1] else None
        lines.append(f"| {name} | {_fmt(b.cpu_per_request_us if b else None, '.0f')} | "
                     f"{_fmt(g.cpu_per_request_us if g else None, '.0f')} | "
                     f"{_fmt(b.cpu_per_event_us if b and b.scenario.stream else None, '.1f')} | "
                     f"{_fmt(g.cpu_per_event_us if g and g.scenario.stream else None, '.1f')} | {_fmt(ratio)} |")
    if run.rss_series:
        lines += ["", "Gateway RSS (1 worker) while serving 10k streamed requests: " + ", ".join(
            f"{n:,} → {rss / 2**20:.0f} MB" for n, rss in run.rss_series)]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    _charts(t, out)
    return text


def _charts(t: dict[str, dict[str, Measurement]], out: Path) -> None:
    try:
        import matplotlib  # optional: the bench extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(t)
    targets = ["direct", "bare", "gateway", *(["litellm"] if any("litellm" in r for r in t.values()) else [])]
    for metric, title, fname, getter in (
        ("ms", "p50 latency", "latency.png", lambda m: m.result.pct(50)),
        ("req/s", "throughput", "throughput.png", lambda m: m.result.throughput),
    ):
        fig, ax = plt.subplots(figsize=(max(11, 1.1 * len(names)), 5))
        width = 0.8 / len(targets)
        for i, target in enumerate(targets):
            values = [getter(t[n][target]) if target in t[n] and t[n][target].result.count else 0 for n in names]
            ax.bar([x + (i - (len(targets) - 1) / 2) * width for x in range(len(names))], values, width, label=target)
        ax.set_xticks(range(len(names)), [textwrap.fill(n, 16) for n in names], fontsize=7)
        ax.set_ylabel(metric)
        peers = " vs LiteLLM" if len(targets) > 3 else ""
        ax.set_title(f"{title}: upstream direct vs bare proxy vs ccm_gateway{peers}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
