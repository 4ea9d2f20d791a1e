"""OpenTelemetry: a span per request and per upstream attempt, W3C traceparent continued and (only
when asked) propagated — checked with the SDK's in-memory exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ccm_gateway import Exchange, create_app, load_config
from ccm_gateway.dialects import Dialect
from ccm_gateway.mock import MockUpstream
from ccm_gateway.observability.tracing import attempt_span

from .conftest import gateway_config
from .servers import ServerThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"
PROMPT = "secret-prompt-words-b7c1"

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)  # once per process; no other test sets one
    return _exporter


def served(upstream: MockUpstream, propagate: bool) -> ServerThread:
    raw = gateway_config(upstream.base_url)
    raw["tracing"] = {"enabled": True, "propagate": propagate}
    return ServerThread(create_app(load_config(raw, env={}, dotenv=False)))


@pytest.fixture(scope="module")
def gateway_traced(upstream: MockUpstream, exporter: InMemorySpanExporter) -> Iterator[ServerThread]:
    with served(upstream, propagate=False) as server:
        yield server


def spans_for(exporter: InMemorySpanExporter, request_id: str) -> tuple:
    """(request span, attempt spans) of one request; the request span ends a moment after the answer."""
    for _ in range(200):
        finished = exporter.get_finished_spans()
        server = [s for s in finished if s.attributes.get("ccm.request_id") == request_id]
        if server:
            children = [s for s in finished if s.parent is not None and s.parent.span_id == server[0].context.span_id]
            return server[0], children
        threading.Event().wait(0.02)
    raise AssertionError(f"no span for {request_id}")


def test_request_and_attempt_spans_continue_the_client_trace(gateway_traced: ServerThread,
                                                             exporter: InMemorySpanExporter,
                                                             upstream: MockUpstream) -> None:
    r = httpx.post(gateway_traced.base_url + "/v1/chat/completions", timeout=10,
                   headers={"traceparent": TRACEPARENT, "x-request-id": "traced-1"},
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200
    usage = r.json()["usage"]
    request, attempts = spans_for(exporter, "traced-1")
    assert request.kind is SpanKind.SERVER and request.name == "POST chat"  # low-cardinality name
    assert format(request.context.trace_id, "032x") == TRACE_ID and format(request.parent.span_id, "016x") == PARENT
    a = request.attributes
    assert (a["ccm.route"], a["ccm.deployment"], a["http.response.status_code"]) == (
        "gpt-4.1", "oai/gpt-4.1-2025-04-14", 200)
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert a["ccm.attempts"] == 1 and a["ccm.cost_usd"] > 0
    [attempt] = attempts
    assert attempt.kind is SpanKind.CLIENT and attempt.name == "upstream oai/gpt-4.1-2025-04-14"
    assert attempt.attributes["ccm.attempt"] == 1 and attempt.attributes["http.response.status_code"] == 200
    for span in (request, attempt):
        assert PROMPT not in str(dict(span.attributes)) and PROMPT not in span.name
    # propagate = false: the client's trace context does not leave for the provider.
    sent = next(q for q in reversed(upstream.requests) if q.headers.get("x-request-id") == "traced-1")
    assert "traceparent" not in sent.headers


def test_upstream_error_marks_both_spans(gateway_traced: ServerThread, exporter: InMemorySpanExporter) -> None:
    r = httpx.post(gateway_traced.base_url + "/v1/messages", timeout=10,
                   headers={"anthropic-version": "2023-06-01", "x-request-id": "traced-503"},
                   json={"model": "claude-sonnet+status=503", "max_tokens": 5, "stream": True, "messages": []})
    assert r.status_code == 503
    request, [attempt] = spans_for(exporter, "traced-503")
    assert request.status.status_code is StatusCode.ERROR and attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["http.response.status_code"] == 503
    assert request.attributes["ccm.dialect"] == "anthropic_messages"


def test_traceparent_sent_upstream_when_propagating(upstream: MockUpstream, exporter: InMemorySpanExporter) -> None:
    with served(upstream, propagate=True) as server:
        r = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                       headers={"traceparent": TRACEPARENT, "x-request-id": "traced-prop"},
                       json={"model": "gpt-4.1", "messages": []})
        assert r.status_code == 200
        r = httpx.post(server.base_url + "/v1/messages", timeout=10,  # translated: Anthropic client → OpenAI
                       headers={"anthropic-version": "2023-06-01", "x-request-id": "traced-prop-2"},
                       json={"model": "gpt-4.1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
    for request_id, continued in (("traced-prop", True), ("traced-prop-2", False)):
        request, [attempt] = spans_for(exporter, request_id)
        assert attempt.attributes["ccm.deployment"] == "oai/gpt-4.1-2025-04-14"
        sent = next(q for q in reversed(upstream.requests) if q.headers.get("x-request-id") == request_id)
        version, trace_id, parent, _flags = sent.headers["traceparent"].split("-")
        assert version == "00" and trace_id == format(request.context.trace_id, "032x")
        assert (trace_id == TRACE_ID) is continued  # a client without a traceparent starts a new trace
        assert parent == format(request.context.span_id, "016x")  # the provider's parent is the gateway's span


def test_attempt_span_times_without_tracing(exporter: InMemorySpanExporter) -> None:
    ex = Exchange(Dialect.OPENAI_CHAT)  # no request span: tracing is off for this request
    before = len(exporter.get_finished_spans())
    with attempt_span(ex, "oai/m", 1):
        threading.Event().wait(0.01)
    first = ex.upstream_time
    with attempt_span(ex, "oai/m", 2):
        threading.Event().wait(0.01)
    assert 0 < first < ex.upstream_time  # attempts add up
    assert len(exporter.get_finished_spans()) == before
