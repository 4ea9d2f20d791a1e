"""Shared fixtures: the loopback mock upstream, and the gateway served by real hypercorn in front of it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.middleware import Middleware

from ccm_gateway import Exchange, create_app, exchange_of, load_config
from ccm_gateway.mock import MockUpstream

from .servers import ServerThread

# Upstream credentials are canaries: no test output, log, header or body may ever contain them.
OPENAI_KEY = "sk-canary-openai-7f3a9c1e5b2d4f60"
ANTHROPIC_KEY = "sk-ant-canary-2b8e6d4c0a1f3e57"
AZURE_KEY = "azure-canary-5c1d9e7a3b2f40681d"
GEMINI_KEY = "AIza-canary-8e2b4d6f0a1c3e59b7"
CANARIES = (OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY, GEMINI_KEY)
# Short upstream timeouts so timeout tests stay quick: 1 s to a stream's head, 1 s between chunks,
# 4 s for a whole JSON answer.
TIMEOUTS = {"connect": 2.0, "first_byte": 1.0, "idle": 1.0, "deadline": 4.0}
CLOSED_PORT = 9  # discard: nothing listens there on loopback


class ExchangeRecorder:
    """A stage of our own: keeps every finished Exchange (one class is all a new stage needs)."""

    finished: list[Exchange] = []

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ex = exchange_of(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            if ex is not None:
                ExchangeRecorder.finished.append(ex)


def exchange_for(request_id: str) -> Exchange:
    """The finished Exchange of a request. The client may see the last byte a moment before the
    server-side stages finish, so this waits (bounded: at most ~10 s)."""
    for _ in range(200):
        for ex in reversed(ExchangeRecorder.finished):
            if ex.request_id == request_id:
                return ex
        threading.Event().wait(0.05)
    raise AssertionError(f"no exchange recorded for {request_id}")


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstream]:
    mock = MockUpstream().start_in_thread()
    yield mock
    mock.stop_thread()


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    """A mock upstream of the module's own (its request counters and streams start empty)."""
    server = MockUpstream().start_in_thread()
    try:
        yield server
    finally:
        server.stop_thread()


def gateway_config(upstream_url: str, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "providers": {
            "oai": {"kind": "openai", "base_url": upstream_url + "/v1", "api_keys": [OPENAI_KEY], "timeout": TIMEOUTS},
            "ant": {"kind": "anthropic", "base_url": upstream_url, "api_keys": [ANTHROPIC_KEY], "timeout": TIMEOUTS},
            "local": {"kind": "openai-compatible", "base_url": upstream_url + "/v1"},
            "down": {"kind": "openai-compatible", "base_url": f"http://127.0.0.1:{CLOSED_PORT}/v1"},
            "down-ant": {"kind": "anthropic", "base_url": f"http://127.0.0.1:{CLOSED_PORT}", "api_keys": ["k" * 12]},
            "nokey": {"kind": "openai", "api_keys": ["env:CCM_TEST_NEVER_SET?"]},
            "mock": {"kind": "mock"},
            # Translated streams: keep-alives after 0.2 s of upstream silence (idle stays 1 s).
            "oai-ka": {"kind": "openai", "base_url": upstream_url + "/v1", "api_keys": [OPENAI_KEY],
                       "timeout": {**TIMEOUTS, "keepalive": 0.2}},
            "azure": {"kind": "azure", "base_url": upstream_url, "api_keys": [AZURE_KEY], "timeout": TIMEOUTS},
            "gem": {"kind": "gemini", "base_url": upstream_url + "/v1beta", "api_keys": [GEMINI_KEY],
                    "timeout": TIMEOUTS},
        },
        "models": [
            {"name": "gpt-4.1", "targets": [{"provider": "oai", "model": "gpt-4.1-2025-04-14"}]},
            {"name": "claude-sonnet", "targets": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
            {"name": "local-llama", "targets": [{"provider": "local", "model": "llama3.1:8b"}]},
            {"name": "unreachable", "targets": [{"provider": "down", "model": "m"}]},
            {"name": "unreachable-claude", "targets": [{"provider": "down-ant", "model": "m"}]},
            {"name": "needs-key", "targets": [{"provider": "nokey", "model": "gpt-4o"}]},
            {"name": "azure-gpt", "targets": [{"provider": "azure", "model": "gpt-4o-deploy"}]},
            {"name": "embed-small", "targets": [{"provider": "oai", "model": "text-embedding-3-small"}]},
            {"name": "embed-local", "targets": [{"provider": "local", "model": "nomic-embed-text"}]},
            {"name": "embed-azure", "targets": [{"provider": "azure", "model": "embed-deploy"}]},
            {"name": "embed-gemini", "targets": [{"provider": "gem", "model": "gemini-embedding-001"}]},
        ],
        "routing": {"allow_direct": True, "detect_provider": True},
        # These tests pin one attempt's protocol behaviour on a shared gateway: no retries, and breakers that
        # never trip (test order must not matter). The resilience wiring has its own gateways (test_fault_matrix).
        "resilience": {"retry": {"max_attempts": 1},
                       "breaker": {"consecutive_failures": 1_000_000, "min_calls": 1_000_000}},
    }


@pytest.fixture(scope="session")
def gateway(upstream: MockUpstream) -> Iterator[ServerThread]:
    config = load_config(gateway_config(upstream.base_url, max_body_bytes=256 * 1024), env={}, dotenv=False)
    app = create_app(config, middleware=[Middleware(ExchangeRecorder)])
    with ServerThread(app) as server:
        yield server
