"""Redis with a local fallback: a Redis outage or a slow Redis never becomes a client-facing error.

While Redis fails (error or over ``timeout``), decisions are made in memory at limit ÷ instances —
each instance keeps its share of the shared limit — and Redis is tried again after ``recheck``
seconds; the first success switches back. ``metrics`` holds counters for the metrics issue to
export; the transitions (not each request) are logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from .base import Admission, Rate, Slots, StateBackend
from .memory import Clock, MemoryBackend

log = logging.getLogger("ccm_gateway.state")


class SharedStoreHealth:
    """Whether a shared store (Redis) may be asked now: after a failure it is skipped for ``recheck``
    seconds, and each change of state — not each request — is logged once. Shared by the rate-limit
    and the budget failovers."""

    __slots__ = ("_clock", "_errors", "_metrics", "_recheck", "_what", "degraded", "down_until")

    def __init__(self, what: str, clock: Clock, recheck: float, metrics: dict[str, int], errors_metric: str) -> None:
        self._what = what
        self._clock = clock
        self._recheck = recheck
        self._metrics = metrics
        self._errors = errors_metric
        self.degraded = False
        self.down_until = 0.0

    def usable(self) -> bool:
        return not self.degraded or self._clock() >= self.down_until

    def failed(self, exc: Exception, consequence: str) -> None:
        self._metrics[self._errors] += 1
        self.down_until = self._clock() + self._recheck
        if not self.degraded:
            self.degraded = True
            log.warning("%s unavailable (%s): %s", self._what, type(exc).__name__, consequence)

    def succeeded(self, consequence: str) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("%s is back: %s", self._what, consequence)


class FailoverBackend(StateBackend):
    name = "failover"

    def __init__(
        self,
        primary: StateBackend,
        *,
        instances: int = 1,
        timeout: float = 0.05,
        recheck: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = MemoryBackend(clock)
        self.share = 1.0 / instances
        self.timeout = timeout
        self.metrics = {"state_backend_errors_total": 0, "state_fallback_decisions_total": 0}
        self.health = SharedStoreHealth(f"state backend {primary.name}", clock, recheck, self.metrics,
                                        "state_backend_errors_total")

    @property
    def degraded(self) -> bool:
        return self.health.degraded

    async def admit(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        if self.health.usable():
            try:
                async with asyncio.timeout(self.timeout):
                    admission = await self.primary.admit(rates, slots, ttl)
            except Exception as exc:  # any Redis trouble: decide locally instead
                self._failed(exc)
            else:
                self.health.succeeded("limits are shared again")
                return admission
        self.metrics["state_fallback_decisions_total"] += 1
        admission = self.fallback.admit_now(self._local(rates), self._local_slots(slots), ttl)
        return admission._replace(source="fallback")

    async def finish(self, adjust: Sequence[Rate], slots: Sequence[Slots], source: str) -> None:
        if source == "fallback":
            self.fallback.finish_now(self._local(adjust), slots)
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.primary.finish(adjust, slots, source)
        except Exception as exc:  # the slot expires and the reservation stands: both bounded
            self._failed(exc)

    async def close(self) -> None:
        await self.primary.close()

    def _failed(self, exc: Exception) -> None:
        self.health.failed(exc, f"limits are enforced per instance at 1/{round(1 / self.share)} of each limit")

    def _local(self, rates: Sequence[Rate]) -> list[Rate]:
        return [r.scaled(self.share) for r in rates]

    def _local_slots(self, slots: Sequence[Slots]) -> list[Slots]:
        return [s._replace(limit=max(1, int(s.limit * self.share))) for s in slots]
