"""The per-request Exchange that every stage shares, and the normalised Usage it collects.

It lives at ``scope["state"]["ccm"]``; a stage reads what earlier stages wrote and writes only its
own fields. Requests outside the API (health, readiness) carry no Exchange, and stages let them by.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from .dialects import Dialect

STATE_KEY = "ccm"


class Usage:
    """Token counts normalised across dialects. ``input`` excludes cache reads and writes;
    ``output`` includes ``reasoning``. ``reported`` is True when the provider gave the numbers."""

    __slots__ = ("cache_read", "cache_write", "input", "output", "reasoning", "reported")

    def __init__(self) -> None:
        self.input = 0
        self.cache_read = 0
        self.cache_write = 0
        self.output = 0
        self.reasoning = 0
        self.reported = False

    @property
    def prompt_total(self) -> int:
        return self.input + self.cache_read + self.cache_write

    def as_dict(self) -> dict[str, int | bool]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"Usage({self.as_dict()})"


class Exchange:
    """One API request on its way through the stages."""

    __slots__ = (
        "_head",
        "attempts",
        "body",
        "client_disconnected",
        "cost",
        "deployment",
        "dialect",
        "first_byte_at",
        "model",
        "principal",
        "request_id",
        "route",
        "started_at",
        "stream",
        "token_estimate",
        "upstream_status",
        "usage",
    )

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.request_id = ""
        self.body = b""
        self.model: str | None = None  # as the client asked
        self.stream = False
        self.route: str | None = None
        self.deployment: str | None = None  # "provider/upstream-model"
        self.attempts = 0
        self.upstream_status: int | None = None
        self.usage = Usage()
        self.cost: float | None = None
        self.principal: Any = None  # filled by the auth stage
        self.token_estimate: int | None = None  # filled by the token-count stage
        self.client_disconnected = False
        self.started_at = time.perf_counter()
        self.first_byte_at: float | None = None
        self._head: Any = None

    def head(self) -> Any:
        """The request's model, stream flag and raw fields (a ``dialects.head.RequestHead``), decoded
        once on first use by whichever stage needs it first; raises InvalidRequest (400) when the
        body is not a valid request of the caller's dialect."""
        if self._head is None:
            from .dialects.registry import WIRE  # late: the dialects import this module

            self._head = WIRE[self.dialect].parse_head(self.body)
            self.model, self.stream = self._head.model, self._head.stream
        return self._head


def exchange_of(scope: MutableMapping[str, Any]) -> Exchange | None:
    """The request's Exchange, or None for requests outside the API."""
    state = scope.get("state")
    return state.get(STATE_KEY) if state is not None else None
