"""The access line: one JSON object per API request, from an allow-list of fields.

Only what is named here is ever written — no headers, no bodies, no key values — so a new field on
the Exchange cannot leak into logs by accident. The line is a msgspec Struct encoded once.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..exchange import Exchange


class Tokens(msgspec.Struct, array_like=False):
    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int


class AccessLine(msgspec.Struct, omit_defaults=True):
    ts: str
    request_id: str
    method: str
    path: str
    status: int
    latency_ms: float
    dialect: str
    operation: str
    stream: bool
    attempts: int
    key: str | None = None
    team: str | None = None
    route: str | None = None
    provider: str | None = None
    model: str | None = None  # the upstream model of the deployment
    upstream_status: int | None = None
    upstream_ms: float | None = None
    ttft_ms: float | None = None
    max_chunk_gap_ms: float | None = None
    tokens: Tokens | None = None
    tokens_estimated: tuple[str, ...] = ()
    cost_usd: float | None = None
    fallback: str | None = None
    error: str | None = None  # the gateway error class, when the gateway answered with one
    disconnected: bool = False
    client: str | None = None


_encode = msgspec.json.encode


def access_line(ex: Exchange, scope: dict, status: int, total: float, ttft: float | None,
                error: str | None) -> str:
    """The JSON text of one request's access line."""
    principal = ex.principal
    provider, _, model = (ex.deployment or "").partition("/")
    usage = ex.usage
    client = scope.get("client")
    line = AccessLine(
        ts=_now(),
        request_id=ex.request_id,
        method=scope["method"],
        path=scope["path"],
        status=status,
        latency_ms=round(total * 1000, 3),
        dialect=ex.dialect.value,
        operation=ex.operation,
        stream=ex.stream,
        attempts=ex.attempts,
        key=principal.name if principal is not None else None,
        team=getattr(principal, "team", None),
        route=ex.route,
        provider=provider or None,
        model=model or None,
        upstream_status=ex.upstream_status,
        upstream_ms=round(ex.upstream_time * 1000, 3) if ex.upstream_time else None,
        ttft_ms=round(ttft * 1000, 3) if ttft is not None else None,
        max_chunk_gap_ms=round(ex.chunk_gap * 1000, 3) if ex.chunk_gap else None,
        tokens=Tokens(usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning)
        if ex.attempts else None,
        tokens_estimated=usage.estimated,
        cost_usd=round(ex.cost, 12) if ex.cost is not None else None,
        fallback=getattr(ex, "fallback", None),
        error=error,
        disconnected=ex.client_disconnected,
        client=client[0] if client else None,
    )
    return _encode(line).decode()


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def _now() -> str:
    """UTC ISO-8601 with milliseconds; the part up to the second is formatted once a second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
    return f"{_second[1]}{int((now - second) * 1000):03d}Z"
