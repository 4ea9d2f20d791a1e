"""Budgets per key and per team: periods, and an atomic reserve-then-settle store.

Before the upstream call a request reserves its estimated cost on every budget line that applies
(its key, its team); the reservation is refused unless ``spent + reserved + amount <= limit`` holds
on all of them at once. When the request ends the reservation is replaced by the actual cost. So
concurrent requests can overrun a budget only by what actual costs exceed their reservations.

``BudgetStore`` is the seam for a shared store (Redis, PostgreSQL) when several instances run; the
in-memory store here is exact within one process. The state backends of ``ccm_gateway.state`` keep
GCRA meters (a rolling rate), not calendar windows with reservations, so budgets keep their own
small interface.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

_PERIOD = re.compile(r"(\d+)([hd])")
MONTH = ("month", "calendar_month", "1mo")


class Period:
    """A budget period: ``Nh``/``Nd`` are fixed UTC windows aligned to the Unix epoch (``1d`` is the
    UTC day), ``month`` the calendar month in UTC. Fixed windows keep a reset time everyone can read."""

    __slots__ = ("seconds", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        if text in MONTH:
            self.seconds = 0
            return
        m = _PERIOD.fullmatch(text)
        if m is None or int(m.group(1)) < 1:
            raise ValueError(f'expected a period like "1d", "30d", "12h" or "month", got "{text}"')
        self.seconds = int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)

    def window(self, now: float) -> tuple[str, float, float]:
        """(window id, start, end) in Unix seconds for the window holding ``now``."""
        if self.seconds:
            index = int(now // self.seconds)
            return f"{self.text}:{index}", float(index * self.seconds), float((index + 1) * self.seconds)
        day = datetime.fromtimestamp(now, UTC)
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        end = datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=UTC)
        return f"month:{day.year}-{day.month:02d}", start.timestamp(), end.timestamp()


def check_period(text: str) -> str | None:
    """None when ``text`` is a valid period, else the problem (for config validation)."""
    try:
        Period(text)
    except ValueError as exc:
        return str(exc)
    return None


class Line(NamedTuple):
    """One budget a request is charged to: ``subject`` is ``"key:NAME"`` or ``"team:NAME"``."""

    subject: str
    limit: float
    window: str
    resets_at: float


class Decision(NamedTuple):
    allowed: bool
    remaining: tuple[float, ...]  # per line, before this request: limit − spent − reserved
    refused_by: str | None = None


@dataclass(slots=True)
class _Account:
    window: str
    spent: float = 0.0
    reserved: float = 0.0


class BudgetStore(ABC):
    """Where budget lines live. ``reserve`` is all-or-nothing across lines and atomic per store."""

    @abstractmethod
    async def reserve(self, lines: Sequence[Line], amount: float) -> Decision:
        """Reserve ``amount`` USD on every line, or on none of them."""

    @abstractmethod
    async def settle(self, lines: Sequence[Line], reserved: float, actual: float) -> None:
        """Release ``reserved`` and charge ``actual`` (never refused: the spend happened)."""

    @abstractmethod
    def seed(self, subject: str, window: str, spent: float) -> None:
        """Start a window at ``spent`` (the ledger's sum at start-up)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the memory store holds none."""


class MemoryBudgetStore(BudgetStore):
    """Accounts in a dict; one event loop, no awaits inside a method, so each call is atomic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.accounts: dict[str, _Account] = {}

    def _account(self, line: Line) -> _Account:
        acct = self.accounts.get(line.subject)
        if acct is None or acct.window != line.window:
            acct = self.accounts[line.subject] = _Account(line.window)  # a new window starts at zero
        return acct

    async def reserve(self, lines: Sequence[Line], amount: float) -> Decision:
        accounts = [self._account(line) for line in lines]
        remaining = tuple(line.limit - a.spent - a.reserved for line, a in zip(lines, accounts, strict=True))
        for line, left in zip(lines, remaining, strict=True):
            if left <= 0 or amount > left + 1e-12:
                return Decision(False, remaining, line.subject)
        for acct in accounts:
            acct.reserved += amount
        return Decision(True, remaining)

    async def settle(self, lines: Sequence[Line], reserved: float, actual: float) -> None:
        for line in lines:
            acct = self.accounts.get(line.subject)
            if acct is None or acct.window != line.window:
                continue  # the window ended meanwhile; the ledger keeps the charge
            acct.reserved = max(acct.reserved - reserved, 0.0)
            acct.spent += actual

    def seed(self, subject: str, window: str, spent: float) -> None:
        self.accounts[subject] = _Account(window, spent)
