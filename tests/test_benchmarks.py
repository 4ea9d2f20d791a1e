"""The benchmark tooling itself (no timings judged here: those live in `make bench`): the paced
streaming scenario reaches the mock upstream, the load generator counts what it gets, and the
report judges both streaming scenarios against the target."""

from __future__ import annotations

import asyncio

from benchmarks.loadgen import Result, run_load
from benchmarks.report import headline
from benchmarks.runner import Measurement, Run, Scenario, request_for
from ccm_gateway.mock import MockUpstream


def _load(upstream: MockUpstream, s: Scenario, requests: int) -> Result:
    url, body, headers = request_for(s, "bare", upstream.base_url)
    return asyncio.run(run_load(url, body, headers=headers, concurrency=2, max_requests=requests, duration=30))


def test_a_paced_scenario_paces_the_upstreams_events_and_every_event_is_counted(upstream: MockUpstream) -> None:
    at_once = _load(upstream, Scenario("at once", stream=True, chunks=5), 4)
    paced = _load(upstream, Scenario("paced", stream=True, chunks=5, delay_ms=30), 4)
    assert (at_once.count, at_once.errors, paced.count, paced.errors) == (4, 0, 4, 0)
    assert paced.events == at_once.events > 4 * 5  # the same events (role, 5 deltas, finish, usage, [DONE])
    # the delay directive reached the mock: each stream took at least its events' gaps (a lower bound only)
    assert min(paced.latencies) >= (paced.events / 4 - 2) * 0.03


def _measured(name: str, target: str, cpu: float, events: int) -> Measurement:
    return Measurement(Scenario(name, stream=True, chunks=50), target, Result(latencies=[0.01], events=events,
                                                                              elapsed=1.0), cpu=cpu)


def test_the_report_judges_per_chunk_cpu_in_both_streaming_scenarios() -> None:
    run = Run()
    run.measurements += [
        _measured("sse 50 chunks 2 ms apart c=16", "bare", 1.00, 1000),
        _measured("sse 50 chunks 2 ms apart c=16", "gateway", 1.15, 1000),  # 1.15x per event: met
        _measured("sse 50 chunks c=16", "bare", 1.00, 2000),
        _measured("sse 50 chunks c=16", "gateway", 1.30, 2000),  # 1.30x per event: not met
    ]
    rows = {row[0]: (row[1], row[3]) for row in headline(run)}
    paced = next(v for k, v in rows.items() if "2 ms apart" in k)
    at_once = next(v for k, v in rows.items() if "at once" in k)
    assert paced == ("1.15×", "met")
    assert at_once == ("1.30×", "not met")
