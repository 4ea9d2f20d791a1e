"""``GET /v1/usage`` for operators: ledger aggregates per key, route, provider, model and UTC day.

It answers before the auth stage (the admin key is not a gateway key), so it is a stage of its own
that serves one path and passes everything else on. Only when ``[admin] key`` is configured is it
in the chain at all; otherwise the path is the API's ordinary 404.

Query: ``since`` / ``until`` (``2025-11-01``, ISO 8601, or Unix seconds; default: the last 30 days)
and ``key`` (one gateway key's rows).
"""

from __future__ import annotations

import hmac
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs

import msgspec

from .billing.meter import Meter
from .errors import AuthenticationFailed, InvalidRequest, NotFound
from .exchange import exchange_of
from .middleware.types import ASGIApp, Receive, Scope, Send
from .responses import send_bytes

_AUTH_HEADERS = (b"authorization", b"x-api-key")
_SUMS = ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
         "unpriced_requests", "estimated_requests", "recovered_requests")


def parse_time(text: str, name: str) -> float:
    """Unix seconds from a date, an ISO 8601 time (UTC unless it says otherwise) or a number."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name}: expected a date (2025-11-01), an ISO 8601 time or Unix seconds",
                             param=name) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UsageEndpoint:
    """Serves ``GET …/v1/usage`` to the admin key; every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, meter: Meter, admin_key: str) -> None:
        self.app = app
        self.meter = meter
        self.admin_key = admin_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if exchange_of(scope) is None or not scope["path"].endswith("/v1/usage") or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if not self._is_admin(scope):
            raise AuthenticationFailed("invalid or missing admin key")
        ledger = self.meter.ledger
        if ledger is None:
            raise NotFound("the usage ledger is off ([ledger] path is not set)")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        now = time.time()
        since = parse_time(query["since"][0], "since") if "since" in query else now - 30 * 86400
        until = parse_time(query["until"][0], "until") if "until" in query else now + 1
        key = query["key"][0] if "key" in query else None
        await self.meter.start()
        await ledger.flush()  # include what is still queued
        rows = await ledger.run(ledger.backend.aggregate, since, until, key)
        totals = {name: sum(r[name] or 0 for r in rows) for name in _SUMS}
        totals["cost_usd"] = round(sum(r["cost_usd"] or 0.0 for r in rows), 10)
        body = {"object": "usage", "since": iso(since), "until": iso(until), "key": key,
                "data": rows, "totals": totals, "unpriced_deployments": dict(self.meter.unpriced)}
        await send_bytes(send, 200, msgspec.json.encode(body))

    def _is_admin(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name in _AUTH_HEADERS:
                token = value[7:] if value[:7].lower() == b"bearer " else value
                if hmac.compare_digest(token.strip(), self.admin_key):
                    return True
        return False
