"""Counts over a sliding window of whole seconds: a ring of per-second buckets, O(1) amortised per update."""

from __future__ import annotations

import math

__all__ = ["SlidingCounts"]


class SlidingCounts:
    """Two counters (``a``, ``b``: calls and failures, or requests and retries) summed over the last
    ``window`` seconds of the caller's clock. Buckets older than the window are dropped when time moves on."""

    __slots__ = ("_a", "_b", "_head", "_size", "a", "b")

    def __init__(self, window: float) -> None:
        self._size = max(1, math.ceil(window))
        self._a = [0] * self._size
        self._b = [0] * self._size
        self._head = 0  # the second the newest bucket belongs to
        self.a = 0
        self.b = 0

    def advance(self, now: float) -> None:
        """Move the window's end to ``now``, dropping the buckets that fell out."""
        second = int(now)
        gap = second - self._head
        if gap <= 0:
            return
        if gap >= self._size:
            self.clear()
        else:
            for s in range(self._head + 1, second + 1):
                i = s % self._size
                self.a -= self._a[i]
                self.b -= self._b[i]
                self._a[i] = self._b[i] = 0
        self._head = second

    def add(self, now: float, a: int = 0, b: int = 0) -> None:
        self.advance(now)
        i = self._head % self._size
        self._a[i] += a
        self._b[i] += b
        self.a += a
        self.b += b

    def clear(self) -> None:
        for i in range(self._size):
            self._a[i] = self._b[i] = 0
        self.a = self.b = 0
