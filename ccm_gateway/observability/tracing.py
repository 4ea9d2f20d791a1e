"""OpenTelemetry spans (optional: ``pip install 'ccm_gateway[otel]'`` and ``[tracing] enabled = true``).

One server span per API request (route, deployment, status, tokens, cost, attempts — never prompt
text) and one client span per upstream attempt (``attempt_span``). A client's W3C ``traceparent``
is continued; it is sent upstream only with ``[tracing] propagate = true``. The gateway uses the
global tracer provider: the host (or ``opentelemetry-instrument``) configures exporters.

``attempt_span`` also times the attempt into ``ex.upstream_time`` for the metrics, so it is cheap
when tracing is off: one small object and two clock reads.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..exchange import Exchange

log = logging.getLogger("ccm_gateway.tracing")

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]

AVAILABLE = trace is not None
# A proxy until a tracer provider is set, then the provider's tracer: made once, not per span.
_TRACER = trace.get_tracer("ccm_gateway") if AVAILABLE else None
_TRACE_HEADERS = ("traceparent", "tracestate")


class Tracing:
    """The request-span half, used by the observe stage; ``None`` of it runs when tracing is off."""

    def __init__(self, propagate: bool = False) -> None:
        assert AVAILABLE, "opentelemetry is not installed"
        self.tracer = _TRACER
        self.propagator = TraceContextTextMapPropagator()
        self.propagate = propagate

    def start(self, ex: Exchange, scope: dict[str, Any]) -> Any:
        """Start the request span (continuing the client's trace) and make it current; returns the
        token for ``end``."""
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
                   if name in (b"traceparent", b"tracestate")}
        parent = self.propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(f"{scope['method']} {ex.operation}", context=parent, kind=SpanKind.SERVER,
                                      attributes={"http.request.method": scope["method"], "url.path": scope["path"],
                                                  "ccm.request_id": ex.request_id, "ccm.dialect": ex.dialect.value})
        ex.span = span
        token = otel_context.attach(trace.set_span_in_context(span))
        if self.propagate:
            headers: dict[str, str] = {}
            self.propagator.inject(headers)
            ex.trace_headers = headers
        return token

    def end(self, ex: Exchange, token: Any, status: int, error: str | None) -> None:
        span = ex.span
        try:
            usage = ex.usage
            provider, _, model = (ex.deployment or "").partition("/")
            span.set_attributes({
                "http.response.status_code": status, "ccm.route": ex.route or "", "ccm.deployment": ex.deployment or "",
                "ccm.provider": provider, "ccm.model": model, "ccm.stream": ex.stream, "ccm.attempts": ex.attempts,
                "gen_ai.usage.input_tokens": usage.input, "gen_ai.usage.output_tokens": usage.output,
                "ccm.tokens.cache_read": usage.cache_read, "ccm.tokens.cache_write": usage.cache_write,
                "ccm.tokens.reasoning": usage.reasoning,
            })
            if ex.cost is not None:
                span.set_attribute("ccm.cost_usd", ex.cost)
            fallback = getattr(ex, "fallback", None)
            if fallback:
                span.set_attribute("ccm.fallback", fallback)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, error or f"HTTP {status}"))
            elif error:
                span.set_attribute("error.type", error)
        finally:
            span.end()
            otel_context.detach(token)


class _Attempt:
    """One upstream attempt: timed always, traced when the request has a span."""

    __slots__ = ("ex", "label", "number", "span", "started", "token")

    def __init__(self, ex: Exchange, label: str, number: int) -> None:
        self.ex = ex
        self.label = label
        self.number = number
        self.span: Any = None
        self.token: Any = None

    def __enter__(self) -> _Attempt:
        ex = self.ex
        if ex.span is not None:
            provider, _, model = self.label.partition("/")
            self.span = _TRACER.start_span(  # type: ignore[union-attr]
                f"upstream {self.label}", kind=SpanKind.CLIENT,
                attributes={"ccm.deployment": self.label, "ccm.provider": provider, "ccm.model": model,
                            "ccm.attempt": self.number})
            self.token = otel_context.attach(trace.set_span_in_context(self.span))
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        ex = self.ex
        ex.upstream_time += time.perf_counter() - self.started
        span = self.span
        if span is None:
            return
        try:
            if ex.upstream_status is not None:
                span.set_attribute("http.response.status_code", ex.upstream_status)
            if exc is not None and not isinstance(exc, GeneratorExit):
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
            elif ex.upstream_status is not None and ex.upstream_status >= 400:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {ex.upstream_status}"))
        finally:
            span.end()
            otel_context.detach(self.token)


def attempt_span(ex: Exchange, deployment_label: str, attempt_no: int) -> _Attempt:
    """``with attempt_span(ex, deployment.label, n):`` around one upstream attempt (send + relay)."""
    return _Attempt(ex, deployment_label, attempt_no)
