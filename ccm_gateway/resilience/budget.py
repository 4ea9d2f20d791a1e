"""A retry budget: retries stay a bounded share of the traffic, so an outage cannot triple the load on it."""

from __future__ import annotations

import time
from collections.abc import Callable

from .window import SlidingCounts

__all__ = ["RetryBudget"]


class RetryBudget:
    """Over the last ``window`` seconds, allow at most ``ratio`` × requests + ``min_per_second`` × window
    retries (the fixed part lets a quiet gateway still retry). Bucketed per second, O(1) per call."""

    __slots__ = ("_clock", "_counts", "_floor", "ratio")

    def __init__(self, ratio: float, window: float, min_per_second: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self._floor = min_per_second * window
        self._clock = clock
        self._counts = SlidingCounts(window)  # a: requests, b: retries

    def deposit(self) -> None:
        """One request came in (call once per request, not per attempt)."""
        self._counts.add(self._clock(), a=1)

    def withdraw(self) -> bool:
        """May one more retry be sent now? Counts it when it may."""
        counts, now = self._counts, self._clock()
        counts.advance(now)
        if counts.b + 1 > self.ratio * counts.a + self._floor:
            return False
        counts.add(now, b=1)
        return True

    @property
    def available(self) -> float:
        """Retries left in the current window (for metrics)."""
        counts = self._counts
        counts.advance(self._clock())
        return max(0.0, self.ratio * counts.a + self._floor - counts.b)
