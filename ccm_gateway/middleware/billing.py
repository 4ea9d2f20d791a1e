"""The billing stage: reserve the budget, let the request run, settle the actual cost, write the ledger.

Runs after auth and rate limits. Before the endpoint it reserves the request's estimated cost on the
key's and team's budgets (refused → 402/429 ``x-should-retry: false``) and commits a reserve record.
The response head carries ``x-ccm-cost-reserved-usd`` and ``x-ccm-budget-remaining-usd``; a JSON
answer is held until its last byte so its head can also carry the actual ``x-ccm-cost-usd`` and
``x-ccm-usage`` (a stream's head leaves before its tokens exist: its cost is in the ledger). The
settlement runs in a shielded ``finally``, so a client that hangs up is still charged for what the
upstream produced. Without auth every request is priced and recorded under the key "anonymous".
"""

from __future__ import annotations

from typing import Any

from ..billing.estimate import OutputCounter
from ..billing.meter import Hold, Meter, usd
from ..exchange import Exchange, exchange_of
from .types import ASGIApp, Message, Receive, Scope, Send

MAX_HELD = 16 * 1024 * 1024  # a JSON answer bigger than this is sent on without cost headers


class BillingMiddleware:
    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is None or scope["method"] != "POST" or scope["path"].endswith("/count_tokens"):
            await self.app(scope, receive, send)
            return
        meter = self.meter
        if not meter.ready:
            await meter.start()  # lazily here when mounted without lifespan
        hold = meter.plan(ex)
        if hold.lines or meter.ledger is not None:  # else there is nothing to reserve or record
            await meter.reserve(ex, hold)
        sender = _BilledSend(send, ex, hold, meter)
        try:
            await self.app(scope, receive, sender)
        finally:
            sender.count_held()
            if meter.finish_now(ex, hold, sender.counter, sender.complete):  # in-process budgets settle here
                await meter.settle_shared(ex, hold)  # shielded


class _BilledSend:
    """The send wrapper: counts generated text, adds the billing headers, holds JSON answers."""

    __slots__ = ("complete", "counter", "ex", "held", "held_size", "hold", "meter", "send", "streaming")

    def __init__(self, send: Send, ex: Exchange, hold: Hold, meter: Meter) -> None:
        self.send, self.ex, self.hold, self.meter = send, ex, hold, meter
        self.counter = OutputCounter()
        self.complete = False
        self.streaming = False  # the head said text/event-stream: every later message is a stream chunk
        self.held: list[Message] | None = None
        self.held_size = 0

    async def __call__(self, message: Message) -> None:
        if self.streaming:  # a stream's chunks: the shortest way through, it runs for every one
            self.counter.feed(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = self.counter.ended
            await self.send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            headers = list(message.get("headers", ()))
            streaming = any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in headers)
            self.hold.streaming = self.streaming = streaming
            message["headers"] = headers + self._head_headers()
            if not streaming:
                self.held = [message]  # until the body is complete: then the cost is known
                return
        elif kind == "http.response.body":  # a JSON answer (held; counted only if it lacks usage)
            body = message.get("body", b"")
            last = not message.get("more_body", False)
            if last:
                self.complete = True
            if self.held is not None:
                self.held.append(message)
                self.held_size += len(body)
                if last:
                    await self._release(with_cost=True)
                elif self.held_size > MAX_HELD:
                    await self._release(with_cost=False)
                return
        await self.send(message)

    def _head_headers(self) -> list[tuple[bytes, bytes]]:
        hold = self.hold
        out = [(b"x-ccm-cost-reserved-usd", usd(hold.amount).encode())]
        if hold.remaining is not None:
            out.append((b"x-ccm-budget-remaining-usd", usd(max(hold.remaining - hold.amount, 0.0)).encode()))
        return out

    def count_held(self) -> None:
        """Count a held JSON body's generated text when the provider reported no usage (rare)."""
        if self.held is not None and not self.ex.usage.reported:
            for message in self.held[1:]:
                self.counter.feed(message.get("body", b""))

    async def _release(self, with_cost: bool) -> None:
        self.count_held()
        held, self.held = self.held, None
        assert held
        if with_cost:
            start = held[0]
            self.meter.final_usage(self.ex, self.hold, self.counter, True)
            if self.hold.remaining is not None:  # the head's figure is replaced by the one after this request
                start["headers"] = [h for h in start["headers"] if h[0] != b"x-ccm-budget-remaining-usd"]
            start["headers"] += cost_headers(self.ex, self.hold)
        for message in held:
            await self.send(message)


def cost_headers(ex: Exchange, hold: Hold) -> list[tuple[bytes, bytes]]:
    """``x-ccm-cost-usd`` (``unknown`` when the model has no price), ``x-ccm-usage``, which counts
    were estimated, and the budget left after this request."""
    u = ex.usage
    cost = hold.cost.total if hold.cost is not None else None
    out: list[tuple[bytes, Any]] = [
        (b"x-ccm-cost-usd", (usd(cost) if cost is not None else "unknown").encode()),
        (b"x-ccm-usage", (f"input={u.input}, cache_read={u.cache_read}, cache_write={u.cache_write}, "
                          f"output={u.output}, reasoning={u.reasoning}").encode()),
    ]
    if u.estimated:
        out.append((b"x-ccm-usage-estimated", ",".join(u.estimated).encode()))
    if hold.remaining is not None:
        out.append((b"x-ccm-budget-remaining-usd", usd(max(hold.remaining - (cost or 0.0), 0.0)).encode()))
    return out
