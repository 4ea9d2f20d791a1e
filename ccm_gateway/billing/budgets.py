"""Budgets per key and per team: periods, and an atomic reserve-then-settle store.

Before the upstream call a request reserves its estimated cost on every budget line that applies
(its key, its team); the reservation is refused unless ``spent + reserved + amount <= limit`` holds
on all of them at once. When the request ends the reservation is replaced by the actual cost. So
concurrent requests can overrun a budget only by what actual costs exceed their reservations.

``BudgetStore`` is the seam: ``MemoryBudgetStore`` is exact within one process;
``billing/redis_budgets.py`` ``RedisBudgetStore`` shares the budgets of every instance through Redis
(selected by ``[state] backend = "redis"``), always behind ``FailoverBudgetStore``: while Redis fails,
each instance enforces budget ÷ ``state.instances`` in memory. The state backends of
``ccm_gateway.state`` keep GCRA meters (a rolling rate), not calendar windows with reservations, so
budgets keep their own small interface.
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from ..state.failover import SharedStoreHealth

if TYPE_CHECKING:
    from ..config import StateConfig

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


def keys_for(lines: Sequence[Line]) -> list[str]:
    """The Redis hash of each line (``redis_budgets``), all under one hash tag (the team's when there is
    a team line). Here, not beside the store, so ``/metrics`` names them without importing redis."""
    tag = next((li.subject for li in lines if li.subject.startswith("team:")), lines[0].subject if lines else "")
    return [f"ccm:{{{tag}}}:budget:{li.subject}:{li.window}" for li in lines]


class Decision(NamedTuple):
    allowed: bool
    remaining: tuple[float, ...]  # per line, before this request: limit − spent − reserved
    refused_by: str | None = None
    source: str = "memory"  # which store decided ("memory", "redis", "fallback"): settle goes back to it


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
    async def settle(self, lines: Sequence[Line], reserved: float, actual: float, source: str = "memory") -> None:
        """Release ``reserved`` and charge ``actual`` (never refused: the spend happened) on the store
        that took the reservation (``Decision.source``)."""

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
        return self.reserve_now(lines, amount)

    def reserve_now(self, lines: Sequence[Line], amount: float) -> Decision:
        accounts = [self._account(line) for line in lines]
        remaining = tuple(line.limit - a.spent - a.reserved for line, a in zip(lines, accounts, strict=True))
        for line, left in zip(lines, remaining, strict=True):
            if left <= 0 or amount > left + 1e-12:
                return Decision(False, remaining, line.subject)
        for acct in accounts:
            acct.reserved += amount
        return Decision(True, remaining)

    async def settle(self, lines: Sequence[Line], reserved: float, actual: float, source: str = "memory") -> None:
        self.settle_now(lines, reserved, actual)

    def settle_now(self, lines: Sequence[Line], reserved: float, actual: float) -> None:
        for line in lines:
            acct = self.accounts.get(line.subject)
            if acct is None or acct.window != line.window:
                continue  # the window ended meanwhile; the ledger keeps the charge
            acct.reserved = max(acct.reserved - reserved, 0.0)
            acct.spent += actual

    def seed(self, subject: str, window: str, spent: float) -> None:
        self.accounts[subject] = _Account(window, spent)


MAX_PENDING = 10_000  # settlements kept while the shared store is unreachable


class FailoverBudgetStore(BudgetStore):
    """A shared store (Redis) with a local fallback, like ``state.FailoverBackend``: while the shared
    store errors or takes longer than ``timeout``, reservations are decided in memory at each limit ÷
    ``instances`` (this instance's share of the budget), and the shared store is tried again after
    ``recheck`` seconds. A budget decision never becomes a 5xx because Redis is down. A settlement
    the shared store could not take is kept (up to ``MAX_PENDING``) and replayed after the next
    successful call, so a reservation does not stay counted until its window ends.

    Seeds (the ledger's spend at start-up) go to the local store only: the shared store keeps its own
    totals, and this instance's ledger knows only this instance's spend."""

    def __init__(self, primary: BudgetStore, *, instances: int = 1, timeout: float = 0.05, recheck: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.fallback = MemoryBudgetStore()
        self.share = 1.0 / instances
        self.timeout = timeout
        self.metrics = {"budget_store_errors_total": 0, "budget_fallback_decisions_total": 0}
        self.health = SharedStoreHealth("budget store", clock, recheck, self.metrics, "budget_store_errors_total")
        self.pending: list[tuple[Sequence[Line], float, float]] = []  # settlements Redis did not take
        self._replay: asyncio.Task[None] | None = None

    async def reserve(self, lines: Sequence[Line], amount: float) -> Decision:
        if self.health.usable():
            try:
                async with asyncio.timeout(self.timeout):
                    decision = await self.primary.reserve(lines, amount)
            except Exception as exc:  # any Redis trouble: decide locally instead
                self._failed(exc)
            else:
                self.health.succeeded("budgets are shared again")
                if self.pending and self._replay is None:
                    self._replay = asyncio.get_running_loop().create_task(self._settle_pending())
                return decision
        self.metrics["budget_fallback_decisions_total"] += 1
        return self.fallback.reserve_now(self._local(lines), amount)._replace(source="fallback")

    async def settle(self, lines: Sequence[Line], reserved: float, actual: float, source: str = "memory") -> None:
        if source != "redis":
            self.fallback.settle_now(self._local(lines), reserved, actual)
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.primary.settle(lines, reserved, actual, source)
        except Exception as exc:  # kept, and replayed once the shared store answers again
            self._failed(exc)
            if len(self.pending) < MAX_PENDING:
                self.pending.append((lines, reserved, actual))

    async def _settle_pending(self) -> None:
        try:
            while self.pending:
                lines, reserved, actual = self.pending[0]
                async with asyncio.timeout(self.timeout):
                    await self.primary.settle(lines, reserved, actual, "redis")
                self.pending.pop(0)
        except Exception as exc:  # still failing: the rest waits for the next successful call
            self._failed(exc)
        finally:
            self._replay = None

    def seed(self, subject: str, window: str, spent: float) -> None:
        self.fallback.seed(subject, window, spent)

    async def close(self) -> None:
        if self._replay is not None:
            await asyncio.wait([self._replay], timeout=self.timeout * 2)
        await self.primary.close()

    @property
    def degraded(self) -> bool:
        return self.health.degraded

    def _failed(self, exc: Exception) -> None:
        self.health.failed(exc, f"budgets are enforced per instance at 1/{round(1 / self.share)} of each budget")

    def _local(self, lines: Sequence[Line]) -> list[Line]:
        return [line._replace(limit=line.limit * self.share) for line in lines]


def budget_store_from_config(config: StateConfig) -> BudgetStore:
    """In memory, or shared through Redis (behind its local fallback) when ``[state] backend = "redis"``."""
    if config.backend != "redis":
        return MemoryBudgetStore()
    from .redis_budgets import RedisBudgetStore  # imports redis only when it is used

    assert config.url is not None  # load_config checks it
    timeout = config.timeout_ms / 1000
    return FailoverBudgetStore(RedisBudgetStore(config.url.reveal(), timeout), instances=config.instances,
                               timeout=timeout, recheck=config.recheck_ms / 1000)
