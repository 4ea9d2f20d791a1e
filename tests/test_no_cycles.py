"""A served request leaves nothing for the cyclic garbage collector: its Exchange (and the body it
holds — up to tens of MB) is freed the moment the request ends. The standalone server runs the
collector rarely (``[server] gc_threshold``), so an Exchange caught in a reference cycle would stay
in memory long after its answer: a worker serving 100k-token conversations grew to 300 MB that way."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.exchange import Exchange
from ccm_gateway.mock import MockUpstream

from .conftest import gateway_config

CHAT = {"messages": [{"role": "user", "content": "hello"}]}
REQUESTS = [
    ("/v1/chat/completions", {"model": "gpt-4.1", **CHAT}, {}),  # pass-through JSON
    ("/v1/chat/completions", {"model": "gpt-4.1", "stream": True, **CHAT}, {}),  # pass-through stream
    ("/v1/messages", {"model": "gpt-4.1", "max_tokens": 50, "stream": True, **CHAT},  # translated stream
     {"anthropic-version": "2023-06-01"}),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 50, **CHAT}, {"anthropic-version": "2023-06-01"}),
    ("/v1/chat/completions", {"model": "no-such-model", **CHAT}, {}),  # an error answer
    ("/v1/chat/completions", {"model": "gpt-4.1"}, {}),  # a bad request
]


@pytest.fixture
def collector_paused() -> Iterator[None]:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()


def test_requests_leave_no_exchange_in_a_reference_cycle(upstream: MockUpstream, collector_paused: None) -> None:
    app = create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))

    async def serve_all() -> list[int]:
        statuses = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            for path, body, headers in REQUESTS * 3:
                r = await client.post(path, json=body, headers=headers)
                statuses.append(r.status_code)
        await app.state.gateway.close()
        return statuses

    statuses = asyncio.run(serve_all())
    assert statuses.count(200) == 12 and set(statuses) - {200} and all(s < 500 for s in statuses)
    gc.collect()
    cycled: list[Any] = [o for o in gc.garbage if isinstance(o, Exchange)]
    assert cycled == []
