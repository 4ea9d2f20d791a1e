"""Budgets shared through a real ``redis-server`` (started here on a free loopback port): the reserve
script's all-or-nothing decision over a key's and its team's lines, two gateway apps spending one
budget, and a Redis crash that falls back to each instance's share of the budget without an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from ccm_gateway import create_app, load_config
from ccm_gateway.billing.budgets import Decision, FailoverBudgetStore, Line, MemoryBudgetStore, Period
from ccm_gateway.billing.redis_budgets import GRACE, RedisBudgetStore, keys_for

from .redis_server import RedisServer
from .servers import ServerThread

BUDGET = 0.1  # USD; a request costs about $0.02 at the test price
PRICE = {"input": 1000.0, "output": 1000.0}  # USD per million tokens: $0.001 a token


def key_of(name: str) -> str:
    return f"gk-budget-test-{name}-0123456789"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def two_gateways(redis_server: RedisServer) -> Iterator[tuple[ServerThread, ServerThread]]:
    config = load_config({
        "providers": {"mock": {"kind": "mock"}},
        "keys": [{"name": n, "key": key_of(n), "budget_usd": BUDGET, "budget_period": "30d"}
                 for n in ("shared", "outage")],
        "pricing": {"models": {"mock/*": PRICE}},
        "state": {"backend": "redis", "url": redis_server.url, "timeout_ms": 1000, "instances": 2,
                  "recheck_ms": 50},
    }, env={}, dotenv=False)
    with ServerThread(create_app(config)) as a, ServerThread(create_app(config)) as b:
        yield a, b


def ask(server: ServerThread, name: str) -> httpx.Response:
    body = {"model": "mock/m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}
    return httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key_of(name)}"})


def store_of(server: ServerThread) -> FailoverBudgetStore:
    store = server.app.state.gateway.meter.budgets
    assert isinstance(store, FailoverBudgetStore)
    return store


def spend(servers: tuple[ServerThread, ...], name: str, rounds: int) -> tuple[list[int], float, float]:
    """Ask the servers in turn; (statuses, total actual cost of the answered ones, largest reservation)."""
    statuses: list[int] = []
    total = reservation = 0.0
    for i in range(rounds):
        r = ask(servers[i % len(servers)], name)
        statuses.append(r.status_code)
        if r.status_code == 200:
            total += float(r.headers["x-ccm-cost-usd"])
            reservation = max(reservation, float(r.headers["x-ccm-cost-reserved-usd"]))
    return statuses, total, reservation


# --- the scripts, directly ------------------------------------------------------------------------


def test_reserve_is_all_or_nothing_over_key_and_team(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    window, _, end = Period("1d").window(time.time())
    key, team = Line("key:k", 1.0, window, end), Line("team:t", 0.5, window, end)
    names = keys_for([key, team])
    assert all(n.startswith("ccm:{team:t}:budget:") for n in names)  # one slot for both lines

    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url, timeout=1.0)
        try:
            first = await store.reserve([key, team], 0.3)
            assert first.allowed and first.source == "redis" and first.remaining == (1.0, 0.5)
            refused = await store.reserve([key, team], 0.3)  # the team has 0.2 left
            assert not refused.allowed and refused.refused_by == "team:t"
            assert refused.remaining == pytest.approx((0.7, 0.2))
            await store.settle([key, team], 0.3, 0.1)  # actual below the reservation: room comes back
            again = await store.reserve([key, team], 0.3)
            assert again.allowed and again.remaining == pytest.approx((0.9, 0.4))
            next_window = [key._replace(window="1d:next"), team._replace(window="1d:next")]
            assert (await store.reserve(next_window, 0.5)).allowed  # a new window starts at zero
        finally:
            await store.close()

    asyncio.run(scenario())
    assert float(client.hget(names[0], "reserved")) == pytest.approx(0.3)  # the other key: untouched by the refusal
    assert float(client.hget(names[0], "spent")) == pytest.approx(0.1)
    ttl = client.pttl(names[1]) / 1000
    assert 0 < ttl <= end - time.time() + GRACE + 1  # expires after its window, on Redis' clock


def test_a_settlement_the_shared_store_missed_is_replayed() -> None:
    """Redis fails just when a request settles: its reservation must not stay counted for the window."""

    class Flaky(MemoryBudgetStore):
        fail = 0

        async def reserve(self, lines: Any, amount: float) -> Decision:
            return self.reserve_now(lines, amount)._replace(source="redis")

        async def settle(self, lines: Any, reserved: float, actual: float, source: str = "redis") -> None:
            if self.fail:
                self.fail -= 1
                raise ConnectionError("redis went away")
            self.settle_now(lines, reserved, actual)

    async def scenario() -> None:
        primary = Flaky()
        store = FailoverBudgetStore(primary, instances=2, timeout=1.0, recheck=0.0)
        line = Line("key:k", 1.0, "1d:1", 0.0)
        assert (await store.reserve([line], 0.6)).source == "redis"
        primary.fail = 1
        await store.settle([line], 0.6, 0.1, "redis")
        assert store.pending and primary.accounts["key:k"].reserved == 0.6
        decision = await store.reserve([line], 0.2)  # Redis answers again: the missed settlement follows
        assert decision.allowed and decision.source == "redis"
        await asyncio.wait_for(asyncio.shield(store._replay or asyncio.sleep(0)), 5)
        assert not store.pending
        assert primary.accounts["key:k"].reserved == pytest.approx(0.2)
        assert primary.accounts["key:k"].spent == pytest.approx(0.1)

    asyncio.run(scenario())


# --- two gateways, one Redis ----------------------------------------------------------------------


def test_two_gateways_spend_one_budget(two_gateways: tuple[ServerThread, ServerThread]) -> None:
    a, b = two_gateways
    statuses, total, reservation = spend((a, b), "shared", 30)
    assert reservation > 0 and statuses.count(200) >= 2
    assert statuses[-4:] == [429] * 4  # both instances refuse once the shared budget is spent
    # Per-process budgets would let each instance spend the whole budget (about twice in total).
    assert total <= BUDGET + reservation
    assert not store_of(a).degraded and not store_of(b).degraded


def test_redis_outage_falls_back_to_each_instances_share(
    redis_server: RedisServer, two_gateways: tuple[ServerThread, ServerThread]
) -> None:
    a, b = two_gateways
    redis_server.kill()
    try:
        answers: dict[str, Any] = {}
        for server, label in ((a, "a"), (b, "b")):
            answers[label] = spend((server,), "outage", 12)
        for statuses, total, reservation in answers.values():
            assert set(statuses) <= {200, 429}  # never a 5xx because Redis is down
            assert statuses[0] == 200 and statuses[-1] == 429
            assert total <= BUDGET / 2 + reservation  # each instance spends only its share
        assert store_of(a).degraded and store_of(a).metrics["budget_fallback_decisions_total"] >= 12
    finally:
        redis_server.start()
    for _ in range(200):  # bounded: recheck_ms is 50; Redis is back (empty)
        if ask(a, "shared").status_code == 200 and not store_of(a).degraded:
            break
        time.sleep(0.02)
    assert not store_of(a).degraded
