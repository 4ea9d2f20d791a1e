"""Retry budget and backoff (ccm_gateway/resilience/budget.py, backoff.py) on a fake clock."""

from __future__ import annotations

import random

import pytest

from ccm_gateway.resilience import RetryBudget, backoff

from .fake_clock import FakeClock


def test_budget_allows_a_share_of_requests_plus_a_floor() -> None:
    clock = FakeClock(500.0)
    budget = RetryBudget(ratio=0.2, window=10, min_per_second=0.5, clock=clock)
    assert sum(budget.withdraw() for _ in range(20)) == 5  # quiet gateway: the floor only (0.5/s × 10 s)
    for _ in range(50):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(20)) == 10  # 0.2 × 50 more
    assert not budget.withdraw() and budget.available == 0


def test_budget_refills_as_the_window_slides() -> None:
    clock = FakeClock(500.0)
    budget = RetryBudget(ratio=0.5, window=10, min_per_second=0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(10)) == 5
    clock.now += 5
    for _ in range(10):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(10)) == 5  # 20 requests, 10 retries in the window
    clock.now += 5  # the first second's 10 requests and 5 retries left the window
    assert budget.available == 0  # 10 requests → 5 allowed, 5 already used
    clock.now += 5
    assert budget.available == 0  # nothing left in the window: no requests, no retries
    budget.deposit()
    budget.deposit()
    assert budget.withdraw() and not budget.withdraw()


def test_budget_without_floor_or_ratio_never_retries() -> None:
    budget = RetryBudget(ratio=0, window=10, min_per_second=0, clock=FakeClock(500.0))
    budget.deposit()
    assert not budget.withdraw()


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff(1, 0.1, 2.0, rng=lambda: 0.999999) == pytest.approx(0.1, rel=1e-5)
    assert backoff(3, 0.1, 2.0, rng=lambda: 0.999999) == pytest.approx(0.4, rel=1e-5)
    assert backoff(10, 0.1, 2.0, rng=lambda: 0.999999) == pytest.approx(2.0, rel=1e-5)
    assert backoff(10_000, 0.1, 2.0, rng=lambda: 0.5) == pytest.approx(1.0)  # no overflow
    assert backoff(2, 0.1, 2.0, rng=lambda: 0.0) == 0.0
    rng = random.Random(7).random
    for attempt in range(1, 12):
        ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
        samples = [backoff(attempt, 0.1, 2.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # spread over the whole range, not a fixed delay
