"""The breaker stage on its own: Health on the Exchange, the retry-budget deposit, the all-open 503
before anything after it runs, and the x-ccm-* response headers. An injected clock, no sleeps."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ccm_gateway import load_config
from ccm_gateway.exchange import exchange_of
from ccm_gateway.middleware.breaker import BreakerMiddleware
from ccm_gateway.middleware.exchange import ExchangeMiddleware
from ccm_gateway.providers.upstream import Upstream
from ccm_gateway.resilience.health import Health
from ccm_gateway.resilience.outcome import Outcome
from ccm_gateway.routing import Router

from .fake_clock import FakeClock

CONFIG = {
    "providers": {"a": {"kind": "openai", "api_keys": ["sk-aaaaaaaaaaaa"]},
                  "b": {"kind": "anthropic", "api_keys": ["sk-ant-bbbbbbbbbb"]}},
    "models": [{"name": "duo", "targets": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]},
               {"name": "solo", "targets": [{"provider": "a", "model": "m3"}], "fallbacks": ["duo"]}],
    "resilience": {"breaker": {"consecutive_failures": 1, "open_base": 12.5, "jitter": 0.0,
                               "max_ejected_share": 1.0}},
}


def stage(endpoint: Any) -> tuple[Any, Health, Router, FakeClock]:
    config = load_config(CONFIG, env={}, dotenv=False)
    router = Router(config, {name: Upstream(name, p) for name, p in config.providers.items()})
    clock = FakeClock()
    health = Health(config.resilience, clock=clock, rng=lambda: 0.5, wall=clock)
    for route in router.routes.values():
        health.register_group(route.name, route.members)
    return ExchangeMiddleware(BreakerMiddleware(endpoint, health=health, router=router)), health, router, clock


def call(app: Any, body: dict[str, Any], path: str = "/v1/chat/completions") -> tuple[int, dict[bytes, bytes], Any]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(payload) if payload else None


def endpoint_answering(status: int, attempts: int, deployment: str = "a/m1", fallback: str | None = None) -> Any:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ex = exchange_of(scope)
        seen.append(ex)
        ex.attempts, ex.deployment, ex.fallback = attempts, deployment, fallback
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    app.seen = seen  # type: ignore[attr-defined]
    return app


CHAT = {"model": "duo", "messages": [{"role": "user", "content": "hi"}]}


def test_the_head_tells_which_deployment_served_after_how_many_attempts() -> None:
    app, *_ = stage(endpoint_answering(200, 2, "b/m2", fallback="duo"))
    status, headers, _ = call(app, CHAT)
    assert status == 200
    assert headers[b"x-ccm-deployment"] == b"b/m2" and headers[b"x-ccm-attempts"] == b"2"
    assert headers[b"x-ccm-fallback"] == b"duo" and b"x-should-retry" not in headers


def test_an_error_after_retries_tells_the_client_not_to_retry() -> None:
    app, *_ = stage(endpoint_answering(503, 2))
    assert call(app, CHAT)[1][b"x-should-retry"] == b"false"
    app, *_ = stage(endpoint_answering(503, 1))  # one attempt: the client's SDK may retry
    assert b"x-should-retry" not in call(app, CHAT)[1]


def test_every_member_open_answers_503_before_the_endpoint_runs() -> None:
    endpoint = endpoint_answering(200, 1)
    app, health, router, clock = stage(endpoint)
    for member in router.routes["duo"].members:
        health.record(member, Outcome.FAILURE)
    status, headers, body = call(app, CHAT)
    assert status == 503 and headers[b"retry-after"] == b"13"  # 12.5 s, rounded up
    assert headers[b"x-should-retry"] == b"false"
    assert body["error"]["type"] == "server_error" and not endpoint.seen
    status, _, body = call(app, {**CHAT, "max_tokens": 5}, "/v1/messages")
    assert status == 503 and body["error"]["type"] == "overloaded_error"
    clock.now += 13  # open time over: the half-open probe may go
    assert call(app, CHAT)[0] == 200 and endpoint.seen


def test_a_route_whose_fallback_can_serve_is_not_refused() -> None:
    endpoint = endpoint_answering(200, 1)
    app, health, router, _ = stage(endpoint)
    health.record(router.routes["solo"].members[0], Outcome.FAILURE)
    assert call(app, {**CHAT, "model": "solo"})[0] == 200


def test_health_and_the_retry_budget_deposit_are_per_chat_request() -> None:
    endpoint = endpoint_answering(200, 1)
    app, health, _, _ = stage(endpoint)
    before = health.retry_budget().available
    call(app, CHAT)
    assert endpoint.seen[0].health is health
    assert health.retry_budget().available > before


def test_client_chosen_names_that_cannot_be_header_values_are_left_out() -> None:
    app, *_ = stage(endpoint_answering(200, 1, deployment="a/m\r\nx-evil: 1"))
    headers = call(app, CHAT)[1]
    assert b"x-ccm-deployment" not in headers and headers[b"x-ccm-attempts"] == b"1"
