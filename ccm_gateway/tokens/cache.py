"""The per-text token-count cache: bounded by the total size of the cached texts and by their age.

A conversation's second turn looks up every earlier message, so a lookup must cost next to nothing:
an ``OrderedDict`` (C) keeps the least recently used entry first, and an entry carries its own
expiry. cachetools' ``TTLCache`` did the same in Python, at about half of a 100k-token second turn.
Not thread-safe on its own: ``TokenCounter`` holds its lock around every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TextCache:
    """key → count; ``size`` is what an entry weighs against ``maxsize`` (≈ its text's length)."""

    __slots__ = ("_clock", "_entries", "_next_sweep", "currsize", "maxsize", "ttl")

    def __init__(self, maxsize: int, ttl: float, clock: Clock = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self.currsize = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[int, int, float]] = OrderedDict()  # count, size, expires
        self._next_sweep = clock() + ttl / 4

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> int | None:
        """The cached count, or None when absent or expired (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[2] <= self._clock():
            del self._entries[key]
            self.currsize -= entry[1]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, count: int, size: int) -> None:
        """Keep ``count`` for ``ttl`` seconds, evicting the least recently used entries to make room;
        an entry bigger than the whole cache is not kept."""
        if size > self.maxsize:
            return
        now = self._clock()
        if now >= self._next_sweep:  # entries nobody asks for again still leave once they are old
            self._sweep(now)
        old = self._entries.pop(key, None)
        if old is not None:
            self.currsize -= old[1]
        self._entries[key] = (count, size, now + self.ttl)
        self.currsize += size
        while self.currsize > self.maxsize:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self.currsize -= evicted

    def _sweep(self, now: float) -> None:
        expired = [key for key, (_, _, expires) in self._entries.items() if expires <= now]
        for key in expired:
            self.currsize -= self._entries.pop(key)[1]
        self._next_sweep = now + self.ttl / 4
