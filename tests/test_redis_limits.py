"""Limits shared through a real ``redis-server`` (started here on a free loopback port): the Lua
script's decisions, two gateway apps enforcing one combined limit, a Redis crash that falls back to
local limits without a single error, and shared limits again once Redis is back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream
from ccm_gateway.state import Rate, Slots
from ccm_gateway.state.redis import RedisBackend

from .redis_server import RedisServer
from .servers import ServerThread

CHAT = {"model": "mock/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
KEYS = ("shared", "outage", "recovered", "headers")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def key_of(name: str) -> str:
    return f"gk-redis-test-{name}-0123456789"


def redis_config(url: str, upstream_url: str = "http://127.0.0.1:9") -> dict[str, Any]:
    keys = [{"name": n, "key": key_of(n), "rpm": 6} for n in KEYS]
    keys.append({"name": "probe", "key": key_of("probe"), "rpm": 100_000})
    keys.append({"name": "stream", "key": key_of("stream"), "concurrency": 1, "tpm": 100_000})
    return {
        "providers": {"mock": {"kind": "mock"},
                      "local": {"kind": "openai-compatible", "base_url": upstream_url + "/v1"}},
        "keys": keys,
        # A generous timeout: a slow CI machine must not look like an outage. A dead Redis refuses
        # connections at once, so the outage test does not wait for it.
        "state": {"backend": "redis", "url": url, "timeout_ms": 1000, "instances": 2, "recheck_ms": 50},
    }


@pytest.fixture(scope="module")
def two_gateways(redis_server: RedisServer, upstream: MockUpstream) -> Iterator[tuple[ServerThread, ServerThread]]:
    config = load_config(redis_config(redis_server.url, upstream.base_url), env={}, dotenv=False)
    with ServerThread(create_app(config)) as a, ServerThread(create_app(config)) as b:
        yield a, b


def ready(server: ServerThread) -> dict[str, Any]:
    return httpx.get(server.base_url + "/ready", timeout=10).json()


def ask(server: ServerThread, name: str) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, timeout=10,
                      headers={"authorization": f"Bearer {key_of(name)}"})


def statuses(server: ServerThread, name: str, n: int) -> list[int]:
    return [ask(server, name).status_code for _ in range(n)]


def degraded(server: ServerThread) -> bool:
    return server.app.state.gateway.state.degraded


def until_shared(*servers: ServerThread) -> None:
    """An earlier outage test may have left an instance waiting to recheck Redis (bounded wait)."""
    for server in servers:
        for _ in range(200):
            if ask(server, "probe").status_code == 200 and not degraded(server):
                break
            threading.Event().wait(0.02)
        assert not degraded(server)
        assert ready(server)["shared_state"]["limits"] == "redis"


# --- the Lua script, directly ---------------------------------------------------------------------


def run_backend(url: str, scenario: Any) -> Any:
    async def go() -> Any:
        backend = RedisBackend(url, timeout=1.0)
        try:
            return await scenario(backend)
        finally:
            await backend.close()

    return asyncio.run(go())


def test_script_gcra_slots_and_settlement(redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).flushall()
    rpm = Rate("ccm:{key:t}:rpm", 6 / 60, 6, 1)  # refills one per 10 s: nothing refills during the test
    tpm = Rate("ccm:{key:t}:tpm", 600 / 60, 600, 500)
    slot = Slots("ccm:{key:t}:conc", 1, "holder-1")

    async def scenario(b: RedisBackend) -> None:
        first = await b.admit([rpm, tpm], [slot], 30)
        assert first.allowed and first.source == "redis"
        assert first.meters[0][0] == 5 and first.meters[1][0] == 100
        denied = await b.admit([rpm], [slot._replace(holder="holder-2")], 30)
        assert not denied.allowed and denied.retry_after >= 1  # the slot is taken
        assert not (await b.admit([rpm, tpm], [], 30)).allowed  # tokens refuse: rpm not charged either
        await b.finish([tpm._replace(cost=-400)], [slot], "redis")  # used 100 of 500; slot freed
        again = await b.admit([rpm, tpm], [slot._replace(holder="holder-3")], 30)
        assert again.allowed and again.meters[0][0] == 4 and again.meters[1][0] == pytest.approx(0, abs=1)
        for _ in range(4):
            assert (await b.admit([rpm], [], 30)).allowed
        refused = await b.admit([rpm], [], 30)
        assert not refused.allowed and 9 < refused.retry_after <= 10

    run_backend(redis_server.url, scenario)


def test_script_reloads_after_script_flush(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.script_flush()

    async def scenario(b: RedisBackend) -> bool:
        return (await b.admit([Rate("ccm:{key:f}:rpm", 1, 5, 1)], [], 30)).allowed

    assert run_backend(redis_server.url, scenario)  # NOSCRIPT → EVAL
    assert client.script_exists(__import__("ccm_gateway.state.redis", fromlist=["x"]).SCRIPT_SHA) == [True]


def test_abandoned_slot_expires_in_redis(redis_server: RedisServer) -> None:
    slot = Slots("ccm:{key:x}:conc", 2, "crashed-worker")

    async def scenario(b: RedisBackend) -> None:
        assert (await b.admit([], [slot], 0.05)).allowed
        assert (await b.admit([], [slot._replace(holder="long-lived")], 30)).allowed  # keeps the key alive
        assert not (await b.admit([], [slot._replace(holder="next")], 30)).allowed
        for _ in range(100):  # bounded wait for Redis' clock to pass the 50 ms deadline
            if (await b.admit([], [slot._replace(holder="next")], 30)).allowed:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("abandoned slot never expired")

    run_backend(redis_server.url, scenario)


# --- two gateways, one Redis ----------------------------------------------------------------------


def test_two_gateways_share_one_limit_and_survive_an_outage(
    redis_server: RedisServer, two_gateways: tuple[ServerThread, ServerThread]
) -> None:
    a, b = two_gateways
    # Shared: 6 per minute for the key, whichever instance is asked.
    assert ready(a)["shared_state"]["limits"] == "redis"
    first = statuses(a, "shared", 4) + statuses(b, "shared", 4)
    assert first.count(200) == 6 and first.count(429) == 2
    assert statuses(a, "shared", 2) == [429, 429]

    # Redis dies: no request fails for it; each instance enforces its share (6 ÷ 2 instances).
    redis_server.kill()
    during_a, during_b = statuses(a, "outage", 5), statuses(b, "outage", 5)
    assert during_a == [200, 200, 200, 429, 429] and during_b == [200, 200, 200, 429, 429]
    assert degraded(a) and degraded(b)
    assert ready(a)["shared_state"]["limits"] == "local"  # /ready tells operators the limits are local now
    assert a.app.state.gateway.state.metrics["state_fallback_decisions_total"] >= 5

    # Redis is back (empty): after the recheck interval both instances share limits again.
    redis_server.start()
    for server in (a, b):
        for _ in range(200):  # bounded: recheck_ms is 50
            assert ask(server, "probe").status_code == 200
            if not degraded(server):
                break
            threading.Event().wait(0.02)
        assert not degraded(server)
        assert ready(server)["shared_state"]["limits"] == "redis"
    only_a = statuses(a, "recovered", 8)
    assert only_a.count(200) == 6  # more than one instance's local share: the shared limit again
    assert statuses(b, "recovered", 2) == [429, 429]


def test_headers_and_429_through_redis(two_gateways: tuple[ServerThread, ServerThread]) -> None:
    a, b = two_gateways
    until_shared(a, b)
    ok = ask(a, "headers")
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-requests"] == "6" and ok.headers["x-ratelimit-remaining-requests"] == "5"
    for _ in range(5):
        ask(b, "headers")
    r = httpx.post(b.base_url + "/v1/messages", json={**CHAT, "max_tokens": 8}, timeout=10,
                   headers={"x-api-key": key_of("headers"), "anthropic-version": "2023-06-01"})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) >= 1 and r.headers["x-should-retry"] == "true"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"


def test_hangup_frees_the_shared_slot(two_gateways: tuple[ServerThread, ServerThread]) -> None:
    """One concurrent request per key across both instances; a client that hangs up mid-stream gives
    its slot back at once (not at the deadline)."""
    a, b = two_gateways
    until_shared(a, b)
    body = {"model": "local/m+chunks=3+delay_ms=3000", "stream": True, "max_tokens": 100,
            "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", a.base_url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key_of('stream')}"}) as r:
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "100000"
        lines = r.iter_lines()  # kept: a dropped iterator closes the connection (a hang-up)
        assert next(lines).startswith("data: ")
        busy = ask(b, "stream")
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    for _ in range(200):  # the server side finishes a moment after the client hung up
        if ask(b, "stream").status_code == 200:
            return
        threading.Event().wait(0.02)
    raise AssertionError("the slot of the abandoned stream was not released")
