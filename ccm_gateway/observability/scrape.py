"""``GET /metrics``: the request metrics plus what is read at scrape time.

Read at scrape time, from the process that answers the scrape: budget left per key and team (the
billing meter's store; Redis when budgets are shared), breaker state and transitions (duck-typed:
``gateway.health``: ``public_states()`` and ``transitions``), whether a
Redis-backed store is on its local fallback, asyncio task count, and upstream connections per
provider (aiohttp connector, active vs idle).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response

from ..billing.budgets import Line, keys_for
from .metrics import Metrics, multiprocess_dir

log = logging.getLogger("ccm_gateway.metrics")
BREAKER_STATES = ("closed", "open", "half_open")
REDIS_READ_TIMEOUT = 0.25


class _Families:
    """What ``generate_latest`` needs: an object whose ``collect()`` yields metric families."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def metrics_endpoint(gateway: Any, metrics: Metrics, admin_key: str | None, admin_port: int | None = None):
    """The Starlette endpoint; with ``admin_key`` it wants ``Authorization: Bearer <admin key>``; with
    ``admin_port`` it answers only on that listener (like the other operator endpoints)."""
    expected = ("Bearer " + admin_key).encode() if admin_key else None

    async def endpoint(request: Request) -> Response:
        if admin_port is not None and (request.scope.get("server") or (None, None))[1] != admin_port:
            return Response(b'{"error":{"message":"not found","type":"not_found_error"}}', status_code=404,
                            media_type="application/json")
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return Response(b'{"error":{"message":"the admin key is required","type":"authentication_error"}}',
                                status_code=401, media_type="application/json")
        live = await live_families(gateway)
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
        else:
            body = generate_latest(metrics.registry)
        return Response(body + generate_latest(_Families(live)), media_type=CONTENT_TYPE_LATEST)

    return endpoint


async def live_families(gateway: Any) -> list[Metric]:
    families = [_tasks(), _connections(gateway), _fallback(gateway)]
    families += _breakers(gateway)
    budget = await _budgets(gateway)
    if budget is not None:
        families.append(budget)
    return families


def _tasks() -> Metric:
    gauge = GaugeMetricFamily("ccm_asyncio_tasks", "asyncio tasks alive in the answering process")
    gauge.add_metric([], len(asyncio.all_tasks()))
    return gauge


def _connections(gateway: Any) -> Metric:
    gauge = GaugeMetricFamily("ccm_upstream_connections", "Upstream HTTP connections per provider",
                              labels=("provider", "state"))
    for name, upstream in gateway.upstreams.items():
        session = getattr(upstream, "_session", None)
        connector = getattr(session, "connector", None) if session is not None else None
        active = len(getattr(connector, "_acquired", ()))  # aiohttp keeps these privately; 0 when absent
        idle = sum(len(v) for v in getattr(connector, "_conns", {}).values())
        gauge.add_metric([name, "active"], active)
        gauge.add_metric([name, "idle"], idle)
    return gauge


def _fallback(gateway: Any) -> Metric:
    gauge = GaugeMetricFamily("ccm_redis_fallback_active", "1 while a Redis-backed store decides locally",
                              labels=("store",))
    for store, obj in (("limits", gateway.state), ("budgets", gateway.meter.budgets)):
        health = getattr(obj, "health", None)
        if health is not None:
            gauge.add_metric([store], 1.0 if health.degraded else 0.0)
    return gauge


def _breakers(gateway: Any) -> list[Metric]:
    health = getattr(gateway, "health", None)
    if health is None or not hasattr(health, "public_states"):
        return []
    state = GaugeMetricFamily("ccm_breaker_state", "1 for the breaker's current state", labels=("member", "state"))
    for member, info in sorted(health.public_states(bounded=True).items()):
        current = info.get("state") if isinstance(info, dict) else None
        for name in BREAKER_STATES:
            state.add_metric([str(member), name], 1.0 if current == name else 0.0)
    moved = CounterMetricFamily("ccm_breaker_transitions", "Breaker state changes", labels=("from", "to"))
    for (old, new), count in sorted(getattr(health, "transitions", {}).items()):
        moved.add_metric([str(old), str(new)], count)
    return [state, moved]


async def _budgets(gateway: Any) -> Metric | None:
    """Budget left in the current window of every key and team with a budget."""
    config = gateway.config
    meter = gateway.meter
    now = time.time()
    # Each budget line with the Redis key it is stored under, built the way a request's are (a key's
    # line shares its team's hash tag when the team has a budget).
    lines: list[Line] = []
    names: list[str] = []
    for key in config.keys:
        if key.budget_usd is not None:
            request_lines = meter.lines_for(key.name, key.budget_usd, key.budget_period, key.team, now)
            lines.append(request_lines[0])
            names.append(keys_for(request_lines)[0])
    for name in config.billing.teams:
        (line,) = meter.lines_for(None, None, None, name, now)
        lines.append(line)
        names.append(keys_for([line])[0])
    if not lines:
        return None
    gauge = GaugeMetricFamily("ccm_budget_remaining_usd", "Budget left in the current window",
                              labels=("subject", "name"))
    store = meter.budgets
    primary = getattr(store, "primary", None)
    if primary is not None and hasattr(primary, "client") and not store.degraded:
        spent = await _redis_spent(primary.client, names)
        if spent is not None:
            for line, used in zip(lines, spent, strict=True):
                gauge.add_metric(list(line.subject.split(":", 1)), line.limit - used)
        return gauge
    local = getattr(store, "fallback", store)  # in memory, or this instance's share while Redis is down
    accounts = getattr(local, "accounts", None)
    if accounts is None:
        return gauge
    share = getattr(store, "share", 1.0) if local is not store else 1.0
    for line in lines:
        acct = accounts.get(line.subject)
        used = acct.spent + acct.reserved if acct is not None and acct.window == line.window else 0.0
        gauge.add_metric(list(line.subject.split(":", 1)), line.limit * share - used)
    return gauge


async def _redis_spent(client: Any, names: list[str]) -> list[float] | None:
    """spent + reserved of each budget hash, in one round trip; None when Redis does not answer."""
    try:
        async with asyncio.timeout(REDIS_READ_TIMEOUT):
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(name, "spent", "reserved")
                replies = await pipe.execute()
    except Exception as exc:  # a scrape must not fail because Redis does
        log.debug("budget read from Redis failed: %s", type(exc).__name__)
        return None
    return [float(spent or 0) + float(reserved or 0) for spent, reserved in replies]
