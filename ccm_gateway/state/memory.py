"""Counters in this process: the default backend, and the fallback while Redis is unreachable."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .base import Admission, Rate, Slots, StateBackend, gcra_charge, gcra_settle, meter_state

Clock = Callable[[], float]


class MemoryBackend(StateBackend):
    """GCRA buckets and slot sets in dicts. Single-threaded by design (one event loop), so every
    method is atomic without locks. Buckets that are full again are swept once the table is big, so
    many distinct client IPs cannot grow it without bound."""

    name = "memory"

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.tats: dict[str, float] = {}
        self.slots: dict[str, dict[str, float]] = {}  # key → holder → expiry

    async def admit(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        return self.admit_now(rates, slots, ttl)

    def admit_now(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        now = self.clock()
        tats = self.tats
        new: list[float] = []
        wait = 0.0
        for rate in rates:
            ok, tat, retry = gcra_charge(tats.get(rate.key, now), now, rate)
            new.append(tat)
            if not ok and retry > wait:
                wait = retry
        for slot in slots:
            held = self.slots.get(slot.key)
            # Expired holders (requests that never finished) are dropped only when they could matter.
            if held is not None and len(held) >= slot.limit and len(self._live(slot.key, now)) >= slot.limit:
                wait = max(wait, 1.0)  # unknown: a slot frees when some request ends
        if wait > 0:
            meters = tuple([meter_state(tats.get(r.key, now), now, r) for r in rates])
            return Admission(False, wait, meters, self.name)
        meters = []
        for rate, tat in zip(rates, new, strict=True):
            tats[rate.key] = tat
            meters.append(meter_state(tat, now, rate))
        for slot in slots:
            holders = self.slots.get(slot.key)
            if holders is None:
                holders = self.slots[slot.key] = {}
            holders[slot.holder] = now + ttl
        if len(tats) > self.max_keys:
            self._sweep(now)
        return Admission(True, 0.0, tuple(meters), self.name)

    async def finish(self, adjust: Sequence[Rate], slots: Sequence[Slots], source: str = "memory") -> None:
        self.finish_now(adjust, slots)

    def finish_now(self, adjust: Sequence[Rate], slots: Sequence[Slots]) -> None:
        now = self.clock()
        for rate in adjust:
            self.tats[rate.key] = gcra_settle(self.tats.get(rate.key, now), now, rate)
        for slot in slots:
            holders = self.slots.get(slot.key)
            if holders is not None:
                holders.pop(slot.holder, None)
                if not holders:
                    del self.slots[slot.key]

    def _live(self, key: str, now: float) -> dict[str, float]:
        holders = self.slots.get(key)
        if holders is None:
            return {}
        expired = [h for h, until in holders.items() if until <= now]
        for holder in expired:
            del holders[holder]
        return holders

    def _sweep(self, now: float) -> None:
        """Forget full buckets (a missing key means full); if still too many, the oldest go."""
        self.tats = {k: t for k, t in self.tats.items() if t > now}
        excess = len(self.tats) - self.max_keys
        if excess > 0:
            for key in list(self.tats)[:excess]:
                del self.tats[key]
        for key in [k for k, holders in self.slots.items() if not self._live(k, now)]:
            del self.slots[key]
