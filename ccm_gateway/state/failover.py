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
        self.recheck = recheck
        self.clock = clock
        self.down_until = 0.0
        self.degraded = False
        self.metrics = {"state_backend_errors_total": 0, "state_fallback_decisions_total": 0}

    async def admit(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        if not self.degraded or self.clock() >= self.down_until:
            try:
                async with asyncio.timeout(self.timeout):
                    admission = await self.primary.admit(rates, slots, ttl)
            except Exception as exc:  # any Redis trouble: decide locally instead
                self._failed(exc)
            else:
                if self.degraded:
                    self.degraded = False
                    log.warning("state backend %s is back: limits are shared again", self.primary.name)
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
        self.metrics["state_backend_errors_total"] += 1
        self.down_until = self.clock() + self.recheck
        if not self.degraded:
            self.degraded = True
            log.warning(
                "state backend %s unavailable (%s): limits are enforced per instance at 1/%d of each limit",
                self.primary.name, type(exc).__name__, round(1 / self.share),
            )

    def _local(self, rates: Sequence[Rate]) -> list[Rate]:
        return [r.scaled(self.share) for r in rates]

    def _local_slots(self, slots: Sequence[Slots]) -> list[Slots]:
        return [s._replace(limit=max(1, int(s.limit * self.share))) for s in slots]
