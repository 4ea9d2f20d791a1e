"""Breaker sharing through a real redis-server (ccm_gateway/resilience/shared.py): a trip on one instance
opens the member on the others, never shortens a local open time, and Redis outages never raise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ccm_gateway.resilience import BreakerPolicy, Health, Member, Outcome, ResilienceConfig
from ccm_gateway.resilience.shared import HealthSharer

from .fake_clock import FakeClock
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)

EPOCH = 1_700_000_000.0
M = Member("openai", "https://api.openai.com/v1", "gpt-4o", 0)
OTHER = Member("openai", "https://api.openai.com/v1", "gpt-4o", 1)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server




def client(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


def instance(clock: FakeClock, offset: float = 0.0, open_base: float = 10.0) -> Health:
    """A gateway instance's registry; ``offset`` skews its monotonic clock against the shared wall clock."""
    config = ResilienceConfig(breaker=BreakerPolicy(consecutive_failures=1, open_base=open_base, jitter=0.0))
    def mono() -> float:
        return clock.now + offset

    h = Health(config, clock=mono, wall=lambda: EPOCH + clock.now)
    h.register_group("gpt", [M, OTHER, Member("openai", "https://api.openai.com/v1", "gpt-4o", 2)])
    return h


def test_a_trip_on_one_instance_opens_the_member_on_another(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock(100.0)
        one, two = instance(clock), instance(clock, offset=5000.0)
        r1, r2 = client(redis_server.url), client(redis_server.url)
        s1 = HealthSharer(one, r1, prefix="t1:")
        s2 = HealthSharer(two, r2, prefix="t1:")
        try:
            one.record(M, Outcome.FAILURE)
            await s1.sync()
            assert await r1.ttl("t1:open") > 0  # the hash expires on its own
            await s2.sync()
            assert not two.available(M) and two.available(OTHER)
            assert two.snapshot()[M.id]["open_for"] == pytest.approx(10)
            await s1.sync()  # its own entry does not re-open or extend anything
            assert one.transitions == {("closed", "open"): 1}
            clock.now += 10
            assert one.available(M) and two.available(M)  # both half-open on their own clocks
            await s2.sync()
            assert two.available(M)  # an expired remote entry is ignored
        finally:
            await r1.aclose()
            await r2.aclose()

    asyncio.run(scenario())


def test_a_remote_open_never_shortens_a_local_one(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock(100.0)
        one, two = instance(clock, open_base=5), instance(clock, open_base=60)
        r1, r2 = client(redis_server.url), client(redis_server.url)
        s1, s2 = HealthSharer(one, r1, prefix="t2:"), HealthSharer(two, r2, prefix="t2:")
        try:
            two.record(M, Outcome.FAILURE)  # open 60 s here
            one.record(M, Outcome.FAILURE)  # open 5 s there
            await s1.sync()
            await s2.sync()
            assert two.snapshot()[M.id]["open_for"] == pytest.approx(60)
            await s1.sync()
            assert one.snapshot()[M.id]["open_for"] == pytest.approx(60)  # the longer remote one wins
        finally:
            await r1.aclose()
            await r2.aclose()

    asyncio.run(scenario())


def test_garbage_and_unknown_members_in_the_hash_are_ignored(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock(100.0)
        h = instance(clock)
        r = client(redis_server.url)
        sharer = HealthSharer(h, r, prefix="t3:")
        try:
            await r.hset("t3:open", mapping={M.id: "not a number", "nobody|x|y|k0": str(EPOCH + 500)})
            await sharer.sync()
            assert h.available(M) and h.transitions == {}
        finally:
            await r.aclose()

    asyncio.run(scenario())


def test_redis_outage_is_logged_once_and_trips_are_written_after_it(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(server: RedisServer) -> None:
        clock = FakeClock(100.0)
        one, two = instance(clock), instance(clock)
        r1, r2 = client(server.url), client(server.url)
        s1, s2 = HealthSharer(one, r1, prefix="t4:"), HealthSharer(two, r2, prefix="t4:")
        try:
            await s1.sync()
            server.kill()
            one.record(M, Outcome.FAILURE)
            with caplog.at_level(logging.INFO, logger="ccm_gateway.resilience"):
                for _ in range(3):
                    await s1.sync()  # never raises
                assert not one.available(M)  # the local breaker works without Redis
                server.start()
                await s1.sync()  # the trip made during the outage is written now
            await s2.sync()
            assert not two.available(M)
        finally:
            await r1.aclose()
            await r2.aclose()

    server = RedisServer().start()
    try:
        asyncio.run(scenario(server))
    finally:
        server.kill()
    messages = [r.getMessage() for r in caplog.records if r.name == "ccm_gateway.resilience"]
    assert sum("paused" in m for m in messages) == 1 and sum("resumed" in m for m in messages) == 1


def test_start_syncs_in_the_background_and_close_stops_it(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock(100.0)
        one, two = instance(clock), instance(clock)
        r1, r2 = client(redis_server.url), client(redis_server.url)
        s1 = HealthSharer(one, r1, prefix="t5:", interval=0.05)
        s2 = HealthSharer(two, r2, prefix="t5:", interval=0.05)
        await s1.start()
        await s2.start()
        try:
            one.record(M, Outcome.FAILURE)
            for _ in range(200):  # bounded: 10 s at most
                if not two.available(M):
                    break
                await asyncio.sleep(0.05)
            assert not two.available(M)
        finally:
            await s1.close()
            await s2.close()
            await r1.aclose()
            await r2.aclose()

    asyncio.run(scenario())
