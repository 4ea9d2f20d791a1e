"""The per-request Exchange that every stage shares, and the normalised Usage it collects.

It lives at ``scope["state"]["ccm"]``; a stage reads what earlier stages wrote and writes only its
own fields. Requests outside the API (health, readiness) carry no Exchange, and stages let them by.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .dialects import Dialect

STATE_KEY = "ccm"

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]


USAGE_FIELDS = ("input", "cache_read", "cache_write", "output", "reasoning")


class Usage:
    """Token counts normalised across dialects. ``input`` excludes cache reads and writes;
    ``output`` includes ``reasoning``; ``cache_write_1h`` is the part of ``cache_write`` written with
    Anthropic's 1-hour TTL (priced apart; the rest is the 5-minute TTL). ``reported`` is True when
    the provider gave the numbers; ``estimated`` names the fields the gateway counted itself instead
    (the billing stage fills it when a stream ended without usage), so every number carries its
    provenance."""

    __slots__ = ("cache_read", "cache_write", "cache_write_1h", "estimated", "input", "output", "reasoning",
                 "reported")

    def __init__(self) -> None:
        self.input = 0
        self.cache_read = 0
        self.cache_write = 0
        self.cache_write_1h = 0  # ⊂ cache_write
        self.output = 0
        self.reasoning = 0
        self.reported = False
        self.estimated: tuple[str, ...] = ()

    @property
    def prompt_total(self) -> int:
        return self.input + self.cache_read + self.cache_write

    def provenance(self) -> dict[str, str]:
        """``{field: "reported" | "estimated"}`` for the five counts."""
        return {name: "reported" if self.reported and name not in self.estimated else "estimated"
                for name in USAGE_FIELDS}

    def as_dict(self) -> dict[str, int | bool]:
        return {name: getattr(self, name) for name in (*USAGE_FIELDS, "reported")}

    def __repr__(self) -> str:
        return f"Usage({self.as_dict()})"


class Exchange:
    """One API request on its way through the stages."""

    __slots__ = (
        "_head",
        "_hooks",
        "attempts",
        "body",
        "chunk_gap",
        "client_disconnected",
        "cost",
        "deployment",
        "dialect",
        "fallback",
        "first_byte_at",
        "health",
        "model",
        "operation",
        "principal",
        "request_id",
        "route",
        "span",
        "started_at",
        "status",
        "stream",
        "token_estimate",
        "trace_headers",
        "upstream_status",
        "upstream_time",
        "usage",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.operation = "chat"  # "embeddings", "count_tokens", "other": which request shape head() parses
        self.request_id = ""
        self.body = b""
        self.model: str | None = None  # as the client asked
        self.stream = False
        self.route: str | None = None
        self.deployment: str | None = None  # "provider/upstream-model"
        self.attempts = 0
        self.fallback: str | None = None  # the fallback route that served (or was chosen for the window)
        self.health: Any = None  # the gateway's resilience.Health, put here by the breaker stage
        self.upstream_status: int | None = None
        self.usage = Usage()
        self.cost: float | None = None
        self.principal: Any = None  # filled by the auth stage
        self.token_estimate: int | None = None  # filled by the token-count stage
        self.client_disconnected = False
        self.started_at = time.perf_counter()
        self.first_byte_at: float | None = None
        self.upstream_time = 0.0  # seconds inside upstream attempts (observability.tracing.attempt_span)
        self.chunk_gap = 0.0  # the longest gap between two upstream chunks, seconds (loop time)
        self.span: Any = None  # the request's OpenTelemetry span, when tracing is on
        self.trace_headers: Any = ()  # ``traceparent`` for upstream calls when [tracing] propagate is on
        self._head: Any = None
        self.status = 0  # of the response head once it is sent (0: nothing sent yet)
        self._hooks: list[Callable[[Message], None]] | None = None

    def on_response_start(self, hook: Callable[[Exchange, Message], None]) -> None:
        """Have ``hook(exchange, message)`` amend the response head (add or replace headers) before it
        leaves.

        The stages that only add headers register a hook instead of wrapping ``send``: one wrapper
        (``sender``) serves the whole chain, rather than a coroutine per stage for every message —
        every chunk of a stream. Hooks run innermost stage first, as nested wrappers would. A hook
        gets the Exchange as an argument so it need not hold it: an Exchange that referred to itself
        through its hooks would outlive its request until the cyclic GC ran (its body with it)."""
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)

    def sender(self, send: Send) -> Send:
        """``send`` that records the status and runs the hooks on the response head (the exchange
        stage wraps the server's ``send`` with it, once per request)."""
        async def send_with_hooks(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                hooks, self._hooks = self._hooks, None  # a head is sent once
                if hooks:
                    for hook in reversed(hooks):
                        hook(self, message)
            await send(message)

        return send_with_hooks

    def head(self) -> Any:
        """The request's model, stream flag and raw fields (a ``dialects.head.RequestHead``), decoded
        once on first use by whichever stage needs it first; raises InvalidRequest (400) when the
        body is not a valid request of the caller's dialect."""
        if self._head is None:
            parsers = _parsers()
            self._head = (parsers.get(self.operation) or parsers[self.dialect])(self.body)
            self.model, self.stream = self._head.model, self._head.stream
        return self._head


_PARSERS: dict[object, Callable[[bytes], Any]] = {}


def _parsers() -> dict[object, Callable[[bytes], Any]]:
    """Operation or dialect → request-head parser, built on first use (the dialects import this
    module, so they cannot be imported at the top)."""
    if not _PARSERS:
        from .dialects import head, openai_embeddings
        from .dialects.registry import WIRE

        def count_tokens_head(body: bytes) -> Any:  # a chat request without the sampling fields
            fields = head.read_fields(body)
            model = head.string(fields, "model")
            head.array(fields, "messages")
            return head.RequestHead(fields, model, False)

        _PARSERS.update({dialect: module.parse_head for dialect, module in WIRE.items()})
        _PARSERS.update({"embeddings": openai_embeddings.parse_head, "count_tokens": count_tokens_head})
    return _PARSERS


def exchange_of(scope: MutableMapping[str, Any]) -> Exchange | None:
    """The request's Exchange, or None for requests outside the API."""
    state = scope.get("state")
    return state.get(STATE_KEY) if state is not None else None
