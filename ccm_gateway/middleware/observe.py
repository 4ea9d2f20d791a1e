"""Metrics, the access line and the request span for every API request.

Sits right after the request-id stage, so it sees every later refusal (auth, rate limits, budgets)
as the GatewayError that passes through it, and the finished Exchange in its ``finally``. One
``perf_counter`` pair per request; the access line is built only when its logger is enabled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import GatewayError, RateLimited
from ..exchange import Exchange, exchange_of
from ..observability.access_log import access_line
from ..observability.log_format import ACCESS_LOGGER
from ..observability.metrics import Metrics
from ..observability.tracing import Tracing
from .types import ASGIApp, Receive, Scope, Send

access_log = logging.getLogger(ACCESS_LOGGER)


class ObserveMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None, tracing: Tracing | None = None,
                 access: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        loop_started = asyncio.get_running_loop().time()
        status = 0  # until the response head is sent (the exchange stage's sender records it)
        error: str | None = None
        limited = False
        metrics, tracing = self.metrics, self.tracing
        token = tracing.start(ex, scope) if tracing is not None else None
        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        except GatewayError as err:  # answered by the exchange stage, outside this one
            error = type(err).__name__
            if not ex.status:
                status = err.status_for(ex.dialect)
            limited = isinstance(err, RateLimited) and ex.attempts == 0  # the gateway's limit, not an upstream's
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            total = time.perf_counter() - started
            status = ex.status or status
            if not status:  # nothing was sent: the client left first (499, as nginx logs it), the drain
                # cancelled it at shutdown (the exchange stage answers 503), or a crash
                status = 499 if ex.client_disconnected else 503 if error == "CancelledError" else 500
            ttft = ex.first_byte_at - loop_started if ex.stream and ex.first_byte_at is not None else None
            try:
                if metrics is not None:
                    metrics.in_flight.dec()
                    metrics.record(ex, status, total, ttft, limited)
                if self.access and access_log.isEnabledFor(logging.INFO):
                    access_log.info(access_line(ex, scope, status, total, ttft, error))
            finally:
                if token is not None:
                    tracing.end(ex, token, status, error)



def refusal_recorder(metrics: Metrics | None, access: bool) -> Callable[[Exchange, Scope, int, str], None]:
    """For the exchange stage's own refusals (413, 408, shutting down), made before this stage runs:
    counted and logged like any other request."""
    def record(ex: Exchange, scope: Scope, status: int, error: str) -> None:
        total = time.perf_counter() - ex.started_at
        if metrics is not None:
            metrics.record(ex, status, total, None, False)
        if access and access_log.isEnabledFor(logging.INFO):
            access_log.info(access_line(ex, scope, status, total, None, error))

    return record
