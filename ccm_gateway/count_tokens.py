"""``POST /v1/messages/count_tokens`` (Anthropic shape) and ``POST /v1/chat/completions/count_tokens``.

Claude Code calls the Anthropic endpoint to decide when to compact. When the route's upstream is
Anthropic the request goes to Anthropic's own (free, exact) endpoint; otherwise, or when that
endpoint is overloaded or unreachable, the local counter answers. ``x-ccm-token-count`` says which:
``upstream``, ``exact`` (tiktoken for an OpenAI model) or ``estimate``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec

from .dialects import Dialect
from .errors import GatewayError, InvalidRequest
from .exchange import Exchange, exchange_of
from .middleware.types import Receive, Scope, Send
from .proxy import relay_error, response_headers, upstream_headers
from .responses import send_bytes
from .routing import Deployment, Router
from .tokens import TokenCounter

_encode = msgspec.json.encode
_FALL_BACK_ON = frozenset({429, 500, 502, 503, 504, 529})  # upstream trouble, not a bad request


class CountTokensEndpoint:
    def __init__(self, router: Router, counter: TokenCounter) -> None:
        self.router = router
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        assert ex is not None, "CountTokensEndpoint needs ExchangeMiddleware in front of it"
        head = ex.head()
        route = self.router.resolve(head.model)
        usable = [d for d in route.deployments if d.upstream.available] or route.deployments
        deployment = usable[0]
        forward = ex.dialect is Dialect.ANTHROPIC_MESSAGES and deployment.upstream.kind.name == "anthropic"
        if not (forward and await self._ask_upstream(scope, send, ex, deployment)):
            await self._answer_locally(send, ex, deployment.model)

    async def _ask_upstream(self, scope: Scope, send: Send, ex: Exchange, deployment: Deployment) -> bool:
        """True when the upstream's answer (or its client error) was relayed."""
        upstream = deployment.upstream
        headers = upstream_headers(scope, ex, upstream)
        headers.update(upstream.auth_headers(upstream.pick_key()))
        deadline = asyncio.get_running_loop().time() + min(upstream.timeout.deadline, 30.0)
        body = ex.head().body_for(deployment.model, ex.body)
        try:
            resp = await upstream.send("count_tokens", body, headers, False, deadline, model=deployment.model)
        except GatewayError:
            return False
        try:
            if resp.status in _FALL_BACK_ON:
                return False
            if resp.status >= 400:
                await relay_error(send, ex, upstream, resp)
                return True
            try:
                async with asyncio.timeout(upstream.timeout.idle):
                    answer = await resp.read(64 * 1024)
            except (aiohttp.ClientError, TimeoutError):
                return False
            extra = [*response_headers(ex, resp.headers), (b"x-ccm-token-count", b"upstream")]
            await send_bytes(send, 200, answer, extra)
            return True
        finally:
            resp.close()

    async def _answer_locally(self, send: Send, ex: Exchange, model: str) -> None:
        try:
            count, exact = await self.counter.count_async(ex.body, ex.dialect.value, model)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise InvalidRequest(f"cannot count this request: {exc}") from None
        provenance = b"exact" if exact else b"estimate"
        if ex.dialect is Dialect.ANTHROPIC_MESSAGES:
            body = _encode({"input_tokens": count})
        else:
            body = _encode({"object": "chat.completion.token_count", "model": ex.model, "input_tokens": count,
                            "exact": exact})
        await send_bytes(send, 200, body, [(b"x-ccm-token-count", provenance)])
