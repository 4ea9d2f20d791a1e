"""The token-count stage: the prompt estimate on the Exchange, and a context-window check.

Rate limits, budgets and the translated message_start read ``ex.token_estimate``; a prompt that
cannot fit the target model's window is refused here, in the provider's own words, before any
upstream call — or, when the route has ``context_window_fallbacks``, sent to the first whose window
fits. Exact (OpenAI) counts are refused at the window; estimates only beyond the estimator's error
margin, so a prompt the provider would accept is never turned away.
"""

from __future__ import annotations

import msgspec

from ..dialects import Dialect
from ..errors import GatewayError, InvalidRequest
from ..exchange import Exchange, exchange_of
from ..routing import Route, Router
from ..tokens import TokenCounter, known_window
from ..tokens.counting import THREAD_THRESHOLD
from .types import ASGIApp, Receive, Scope, Send

ESTIMATE_MARGIN = 0.15  # Anthropic/Gemini estimates can be this far off (PROTOCOLS.md §6.3)


class ContextWindowExceeded(InvalidRequest):
    openai_code = "context_length_exceeded"


class TokenCountMiddleware:
    def __init__(self, app: ASGIApp, counter: TokenCounter, router: Router) -> None:
        self.app = app
        self.counter = counter
        self.router = router
        self.windows: dict[str, int | None] = {}  # upstream model → known context window, looked up once

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is not None and ex.operation == "chat" and ex.body:
            await self.estimate(ex)
        await self.app(scope, receive, send)

    async def estimate(self, ex: Exchange) -> None:
        head = ex.head()
        try:
            route = self.router.resolve(head.model)
        except GatewayError:
            return  # the endpoint answers unknown models in the caller's protocol
        target = route.deployments[0].model
        try:
            if len(ex.body) < THREAD_THRESHOLD:  # counted here, without a coroutine
                count, exact = self.counter.count(ex.body, ex.dialect.value, target)
            else:
                count, exact = await self.counter.count_async(ex.body, ex.dialect.value, target)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not a shape we can count; the endpoint or the upstream will say what is wrong
        ex.token_estimate = count
        window = route.context_window or self._known_window(target)
        if window is not None and count * (1.0 if exact else 1.0 - ESTIMATE_MARGIN) > window:
            fallback = self.larger(route, count)
            if fallback is None:
                raise too_long(ex.dialect, count, window)
            ex.fallback = fallback  # the endpoint routes there instead of refusing

    def larger(self, route: Route, count: int) -> str | None:
        """The first of the route's context-window fallbacks whose window fits the prompt (or whose
        window is unknown: the upstream decides); None when the route has none that fits."""
        for name in route.context_window_fallbacks:
            fallback = self.router.routes.get(name)
            if fallback is None:
                continue
            window = fallback.context_window or known_window(fallback.deployments[0].model)
            if window is None or count * (1.0 - ESTIMATE_MARGIN) <= window:
                return name
        return None

    def _known_window(self, model: str) -> int | None:
        try:
            return self.windows[model]
        except KeyError:
            if len(self.windows) >= MODEL_CACHE:  # clients choose model names: bounded
                self.windows.clear()
            window = self.windows[model] = known_window(model)
            return window


MODEL_CACHE = 10_000


def too_long(dialect: Dialect, count: int, window: int) -> ContextWindowExceeded:
    """The refusal in the wording the caller's own provider uses (agents key on it to compact)."""
    if dialect is Dialect.ANTHROPIC_MESSAGES:
        return ContextWindowExceeded(f"prompt is too long: {count} tokens > {window} maximum")
    return ContextWindowExceeded(
        f"This model's maximum context length is {window} tokens. However, your messages resulted in "
        f"{count} tokens. Please reduce the length of the messages.", param="messages")
