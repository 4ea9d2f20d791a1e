"""The breaker stage: puts the gateway's Health on the request and answers at once when it cannot go anywhere.

Runs after auth, token counting and rate limits and before billing, so a request whose route and
fallbacks are all open (breakers) or cooling down (429s, dead keys) gets its 503 with Retry-After
before any budget is reserved. Every chat and embeddings request deposits into the retry budget here; the endpoint's
attempt loop (``routing.Attempts``) withdraws per retry. The response head gets ``x-ccm-deployment``,
``x-ccm-attempts`` and ``x-ccm-fallback``, and an error after retries ``x-should-retry: false`` (the
SDKs would otherwise retry what the gateway already retried). Without this stage the endpoint makes
exactly one attempt.
"""

from __future__ import annotations

import math

from ..errors import GatewayError, ServiceUnavailable
from ..exchange import Exchange, exchange_of
from ..providers.kinds import EMBEDDINGS
from ..resilience.health import Health
from ..routing import Router, blocked_for
from .types import ASGIApp, Message, Receive, Scope, Send

_ATTEMPTED = frozenset({"chat", EMBEDDINGS})  # operations served through the attempt loop


class BreakerMiddleware:
    def __init__(self, app: ASGIApp, health: Health, router: Router) -> None:
        self.app = app
        self.health = health
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is None or ex.operation not in _ATTEMPTED or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        ex.health = self.health
        self.health.retry_budget().deposit()
        wait = self.blocked(ex)
        if wait is not None:
            raise ServiceUnavailable(
                f"every deployment of model '{ex.model}' is unavailable right now (circuit open or cooling down)",
                headers={"retry-after": str(max(1, math.ceil(wait))), "x-should-retry": "false"})
        ex.on_response_start(add_tags)
        await self.app(scope, receive, send)

    def blocked(self, ex: Exchange) -> float | None:
        """Seconds until a member can serve when none of the route's and its fallbacks' can now."""
        try:
            route = self.router.resolve(ex.head().model)
        except GatewayError:
            return None  # the endpoint answers unknown models and bad bodies in the caller's protocol
        chain = self.router.chain(route)
        if ex.fallback is not None:
            chain = self.router.chain(self.router.resolve(ex.fallback))
        return blocked_for(chain, ex.dialect if ex.operation == "chat" else EMBEDDINGS, self.health)


def add_tags(ex: Exchange, message: Message) -> None:
    """What happened, on the response head (run when it leaves: the attempts are over by then)."""
    message["headers"] = [*message.get("headers", ()), *tags(ex, message["status"])]


def tags(ex: Exchange, status: int) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if ex.deployment is not None and ex.deployment.isprintable():  # names from a client (provider/model)
        out.append((b"x-ccm-deployment", ex.deployment.encode()))
    if ex.attempts:
        out.append((b"x-ccm-attempts", str(ex.attempts).encode()))
    if ex.fallback is not None and ex.fallback.isprintable():
        out.append((b"x-ccm-fallback", ex.fallback.encode()))
    if status >= 400 and ex.attempts >= 2:
        out.append((b"x-should-retry", b"false"))
    return out
