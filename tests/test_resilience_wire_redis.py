"""Breaker state shared through Redis: a deployment that one gateway instance found broken is skipped
by the other instance too (the gateway starts a HealthSharer on the state backend's client)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream

from .redis_server import RedisServer
from .servers import ServerThread
from .test_fault_matrix import config, member_state, post, unique, wait_for


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_an_open_breaker_is_shared_with_the_other_instance(redis_server: RedisServer, upstream: MockUpstream) -> None:
    bad = unique("m+status=503")
    raw = config(upstream, "openai", bad, resilience={
        "share_interval": 0.05,
        "breaker": {"consecutive_failures": 2, "open_base": 30, "open_max": 60, "jitter": 0.0}})
    raw["state"] = {"backend": "redis", "url": redis_server.url, "timeout_ms": 1000}
    cfg = load_config(raw, env={}, dotenv=False)
    with ServerThread(create_app(cfg)) as one, ServerThread(create_app(cfg)) as two:
        for _ in range(2):
            assert post(one, "openai").headers["x-ccm-deployment"] == "b/ok"
        assert member_state(one, "a", bad)["state"] == "open"
        assert upstream.hits(bad) == 2
        wait_for(lambda: member_state(two, "a", bad)["state"] == "open")  # synced, bounded polling
        r = post(two, "openai")  # the second instance never tries a itself
        assert r.headers["x-ccm-deployment"] == "b/ok" and r.headers["x-ccm-attempts"] == "1"
        assert upstream.hits(bad) == 2
        assert httpx.get(two.base_url + "/ready").json()["status"] == "degraded"
