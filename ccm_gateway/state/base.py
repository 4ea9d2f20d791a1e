"""The state interface every limiter (and later budget and breaker) talks to, and the GCRA maths.

Two kinds of meter cover what the gateway needs to share between instances:

- a **Rate** (GCRA, a leaky bucket kept as one "theoretical arrival time" per key): requests and
  tokens per minute now; a rolling budget later (rate = budget / period, burst = budget); error
  rates for circuit breakers later.
- a **Slots** meter (a set of holders, each with an expiry): concurrent requests now; a breaker's
  half-open probe later (limit 1). Expiry means a crashed worker never holds a slot for long.

``admit`` checks and charges all meters of one request atomically (all or nothing); ``finish``
settles the Rate charges to what was really used (refund or debt) and frees the Slots. Both are one
round trip on a shared backend. Times come from the backend (an injected clock, or Redis ``TIME``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Admission", "Rate", "Slots", "StateBackend", "gcra_charge", "gcra_settle", "meter_state"]


class Rate(NamedTuple):
    """Charge ``cost`` units to a bucket refilled at ``per_second`` that holds ``burst`` units."""

    key: str
    per_second: float
    burst: float
    cost: float

    def scaled(self, share: float) -> Rate:
        """The same meter at a share of its rate and burst (a local fallback's part of the limit)."""
        return Rate(self.key, self.per_second * share, max(self.burst * share, 1.0), self.cost)


class Slots(NamedTuple):
    """Hold one of ``limit`` slots under ``key`` as ``holder``; released by ``finish`` or at expiry."""

    key: str
    limit: int
    holder: str


class Admission(NamedTuple):
    """The decision, plus (remaining units, seconds until full) per Rate, for response headers."""

    allowed: bool
    retry_after: float  # seconds; 0 when allowed
    meters: tuple[tuple[float, float], ...]
    source: str  # which backend decided: "memory", "redis", "fallback"


class StateBackend(ABC):
    """Where counters live. Implementations: MemoryBackend (one process), RedisBackend (shared),
    FailoverBackend (Redis with a local fallback)."""

    name = "state"

    @abstractmethod
    async def admit(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        """Charge every Rate and take every Slot, or none of them; slots expire after ``ttl`` s."""

    @abstractmethod
    async def finish(self, adjust: Sequence[Rate], slots: Sequence[Slots], source: str) -> None:
        """Apply Rate cost deltas (negative refunds) and free Slots taken by an earlier ``admit``
        that ``source`` decided. Never checks a limit: usage already happened."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections; the in-memory backend has none."""


# --- GCRA, shared by the Python backends and mirrored by the Redis Lua script --------------------


def gcra_charge(tat: float, now: float, rate: Rate) -> tuple[bool, float, float]:
    """(allowed, new TAT, retry_after) for charging ``rate.cost`` to a bucket whose theoretical
    arrival time is ``tat``. A cost above the whole burst is admitted only into a full bucket (and
    then runs into debt) so one large request is never refused forever."""
    interval = 1.0 / rate.per_second
    tolerance = rate.burst * interval
    base = tat if tat > now else now
    check = base + min(rate.cost, rate.burst) * interval - now
    if check > tolerance + 1e-9:
        return False, tat, check - tolerance
    return True, base + rate.cost * interval, 0.0


def gcra_settle(tat: float, now: float, rate: Rate) -> float:
    """The TAT after adding ``rate.cost`` (debt) or taking it back (refund, never above full)."""
    delta = rate.cost / rate.per_second
    if delta >= 0:
        return (tat if tat > now else now) + delta
    return max(tat + delta, now)


def meter_state(tat: float, now: float, rate: Rate) -> tuple[float, float]:
    """(whole units still available now, seconds until the bucket is full again)."""
    used = tat - now if tat > now else 0.0
    remaining = (rate.burst / rate.per_second - used) * rate.per_second
    return float(max(math.floor(remaining + 1e-9), 0)), used
