"""The ``mock`` provider kind: answers both dialects in-process, so the gateway works with no keys.

It produces the same bytes as the loopback mock upstream (``ccm_gateway.mock``), including its
directives in the model name (``mock-1+chunks=5+delay_ms=50``), but without any network hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from ..dialects import Dialect
from ..errors import InvalidRequest
from ..mock import embeddings as mock_embeddings
from ..mock import replies
from .kinds import EMBEDDINGS
from .upstream import Upstream

_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class MockProvider(Upstream):
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(
        self, op: str, body: bytes, headers: dict[str, str], stream: bool, deadline: float, *, model: str = "",
        bounded: bool = False,
    ) -> _MockResponse:
        """No network to wait for: ``bounded`` (the caller's timer covers the wait) changes nothing."""
        if op == EMBEDDINGS:
            status, answer = mock_embeddings.openai_embeddings(body)
            return _MockResponse(status, _JSON, [answer], 0)
        try:
            request = replies.read_request(body)
            plan = replies.parse_plan(request.model or "mock")
        except ValueError as exc:
            raise InvalidRequest(f"mock provider: {exc}", param="model") from None
        anthropic = op == Dialect.ANTHROPIC_MESSAGES
        if plan.ttfb_ms:
            await asyncio.sleep(plan.ttfb_ms / 1000)
        if plan.status >= 400:
            error = replies.anthropic_error if anthropic else replies.openai_error
            return _MockResponse(plan.status, _JSON, [error(plan.status, "mock error")], 0)
        reply = replies.reply_for(plan, request.prompt)
        tokens = replies.count_tokens(request.prompt)
        if not stream:
            make = replies.anthropic_json if anthropic else replies.openai_json
            return _MockResponse(200, _JSON, [make(plan, plan.model, tokens, reply)], 0)
        if anthropic:
            events = replies.anthropic_sse(plan, plan.model, tokens, reply)
        else:
            events = replies.openai_sse(plan, plan.model, tokens, reply, request.include_usage)
        return _MockResponse(200, _SSE, events, plan.delay_ms / 1000)


class _MockResponse:
    __slots__ = ("_delay", "_parts", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], parts: list[bytes], delay: float) -> None:
        self.status = status
        self.headers = headers
        self._parts = parts
        self._delay = delay

    async def chunks(self) -> AsyncIterator[bytes]:
        for i, part in enumerate(self._parts):
            if i and self._delay:
                await asyncio.sleep(self._delay)
            yield part

    async def read(self, limit: int) -> bytes:
        return b"".join(self._parts)[:limit]

    def close(self) -> None:
        return None
