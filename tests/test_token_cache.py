"""The token-count cache: counts come back until they are too old or pushed out by newer texts, and
the cache never holds more than its size bound."""

from __future__ import annotations

from ccm_gateway.tokens.cache import TextCache

from .fake_clock import FakeClock


def test_counts_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = TextCache(maxsize=1000, ttl=60, clock=clock)
    cache.put("a", 5, 10)
    clock.now += 59
    assert cache.get("a") == 5  # a hit does not extend the entry's life
    clock.now += 2
    assert cache.get("a") is None
    assert cache.currsize == 0


def test_least_recently_used_texts_leave_first_and_size_stays_bounded() -> None:
    cache = TextCache(maxsize=30, ttl=60, clock=FakeClock())
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    cache.put("c", 3, 10)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("d", 4, 10)
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [1, 3, 4]
    assert cache.currsize == 30
    cache.put("huge", 9, 31)  # bigger than the whole cache: not kept, nothing evicted for it
    assert cache.get("huge") is None and len(cache) == 3


def test_old_entries_nobody_asks_for_are_swept_on_later_writes() -> None:
    clock = FakeClock()
    cache = TextCache(maxsize=1000, ttl=60, clock=clock)
    for i in range(10):
        cache.put(i, i, 10)
    clock.now += 61
    cache.put("new", 1, 10)
    assert len(cache) == 1 and cache.currsize == 10


def test_rewriting_a_key_replaces_its_size() -> None:
    cache = TextCache(maxsize=100, ttl=60, clock=FakeClock())
    cache.put("a", 1, 40)
    cache.put("a", 2, 50)
    assert cache.get("a") == 2 and cache.currsize == 50
