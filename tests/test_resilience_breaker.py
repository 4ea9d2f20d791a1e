"""The circuit breaker state machine (ccm_gateway/resilience/breaker.py) on a fake clock: no sleeps."""

from __future__ import annotations

import pytest

from ccm_gateway.resilience import Breaker, BreakerPolicy, State
from ccm_gateway.resilience.breaker import PROBE

from .fake_clock import FakeClock


def middle() -> float:
    return 0.5  # no jitter: the open time is exactly the nominal one


def make(clock: FakeClock, rng=middle, **policy: float) -> tuple[Breaker, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    breaker = Breaker(BreakerPolicy(**policy), "m", clock=clock, rng=rng,
                      on_transition=lambda member, old, new: seen.append((str(old), str(new))))
    return breaker, seen


def test_consecutive_failures_trip_and_a_success_resets_the_run() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=3)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state is State.CLOSED and b.available()
    b.failure()
    assert b.state is State.OPEN and not b.available() and not b.try_acquire()
    assert seen == [("closed", "open")]


def test_failure_rate_needs_min_calls_in_the_window() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=100, failure_rate=0.5, window=10, min_calls=6)
    for _ in range(2):  # 2 failures, 2 successes: 50 % but only 4 calls
        b.failure()
        b.success()
    assert b.state is State.CLOSED
    b.success()  # 5 calls, 40 %
    assert b.state is State.CLOSED
    b.failure()  # 6 calls, 3 failures: 50 % ≥ 50 %
    assert b.state is State.OPEN


def test_failures_leave_the_rate_window() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=100, failure_rate=0.5, window=10, min_calls=4)
    b.failure()
    b.failure()
    b.success()
    assert b.failures == 2
    clock.advance(11)  # both failures are older than the window now
    assert b.failures == 0
    b.success()
    b.failure()
    b.success()
    assert b.state is State.CLOSED  # 1 failure in 3 calls: below min_calls (the old ones do not count)
    b.failure()
    assert b.state is State.OPEN  # 2 failures in 4 calls


def test_window_counts_stay_exact_across_long_gaps() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=100, failure_rate=0.9, window=5, min_calls=100)
    for step in range(40):  # one failure every 0.7 s: at most 8 of them in a 5-second window
        b.failure()
        assert b.failures == sum(1 for i in range(step + 1) if int(1000 + 0.7 * i) > int(clock.now) - 5)
        clock.advance(0.7)
    clock.advance(1000)
    assert b.failures == 0


def test_open_time_grows_per_trip_and_is_capped() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=1, open_base=5, open_multiplier=2, open_max=30)
    b.failure()
    for nominal in (5, 10, 20, 30, 30):
        assert b.state is State.OPEN and b.open_for() == pytest.approx(nominal)
        clock.advance(nominal - 0.01)
        assert b.state is State.OPEN
        clock.advance(0.01)
        assert b.state is State.HALF_OPEN
        assert b.try_acquire()
        b.failure()  # the probe fails: open again, for the next (longer) time
    assert b.trips == 6


@pytest.mark.parametrize(("draw", "low", "high"), [(0.0, 8.0, 8.0), (0.999999, 11.99, 12.0), (0.25, 9.0, 9.0)])
def test_jitter_stays_within_its_share(draw: float, low: float, high: float) -> None:
    clock = FakeClock()
    b, _ = make(clock, rng=lambda: draw, consecutive_failures=1, open_base=10, jitter=0.2)
    b.failure()
    assert low <= b.open_for() <= high


def test_jitter_never_exceeds_open_max() -> None:
    clock = FakeClock()
    b, _ = make(clock, rng=lambda: 0.999999, consecutive_failures=1, open_base=30, open_max=30, jitter=0.5)
    b.failure()
    assert b.open_for() == pytest.approx(30)


def test_retry_after_is_a_floor_for_the_open_time() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=1, open_base=5)
    b.failure(retry_after=42)
    assert b.open_for() == pytest.approx(42)
    clock.advance(42)
    assert b.try_acquire()
    b.failure(retry_after=1)  # shorter than the nominal 10 s: the nominal time stands
    assert b.open_for() == pytest.approx(10)


def test_half_open_admits_one_probe_at_a_time_and_closes_after_successes() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=1, half_open_successes=2)
    b.failure()
    clock.advance(5)
    assert b.available() and b.available()  # looking does not take the slot
    assert b.try_acquire()
    assert not b.available() and not b.try_acquire()  # one probe at a time
    b.success()
    assert b.state is State.HALF_OPEN and b.try_acquire() and not b.try_acquire()
    b.success()
    assert b.state is State.CLOSED and b.try_acquire() and b.try_acquire()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_reopens() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=1, half_open_successes=2)
    b.failure()
    clock.advance(5)
    assert b.try_acquire()
    b.success()
    assert b.try_acquire()
    b.failure()  # successes must be consecutive
    assert b.state is State.OPEN and b.open_for() == pytest.approx(10)
    assert seen[-2:] == [("open", "half_open"), ("half_open", "open")]


def test_a_cancelled_probe_only_frees_the_slot() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=1)
    b.failure()
    clock.advance(5)
    assert b.try_acquire() and not b.try_acquire()
    b.release()  # client went away / client error / rate limit: says nothing about health
    assert b.state is State.HALF_OPEN and b.try_acquire()
    assert seen == [("closed", "open"), ("open", "half_open")]


def test_late_answers_while_open_change_nothing() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=1)
    b.failure()
    until = b.open_until
    b.failure()
    b.success()
    assert b.state is State.OPEN and b.open_until == until and b.trips == 1
    assert seen == [("closed", "open")]


def test_half_open_ignores_answers_while_no_probe_is_out() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=1, half_open_successes=1)
    b.failure()
    clock.advance(5)
    b.success()  # a request sent before the trip finishes now: not a probe
    b.failure()
    assert b.state is State.HALF_OPEN and b.trips == 1
    assert b.try_acquire()
    b.success()
    assert b.state is State.CLOSED


def test_trip_count_decays_after_staying_closed_for_open_max() -> None:
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=1, half_open_successes=1, open_base=5, open_max=60)

    def trip_and_recover() -> float:
        b.failure()
        opened = b.open_for()
        clock.advance(opened)
        assert b.try_acquire()
        b.success()
        assert b.state is State.CLOSED
        return opened

    assert trip_and_recover() == pytest.approx(5)
    clock.advance(59)  # closed for less than open_max: the next trip is longer
    assert trip_and_recover() == pytest.approx(10)
    clock.advance(60)  # closed for open_max: start over
    assert trip_and_recover() == pytest.approx(5)


def test_a_refused_trip_keeps_the_breaker_closed_with_fresh_counters() -> None:
    clock = FakeClock()
    allow = [False]
    b = Breaker(BreakerPolicy(consecutive_failures=2), "m", clock=clock, rng=middle, may_trip=lambda m: allow[0])
    b.failure()
    b.failure()
    assert b.state is State.CLOSED and b.consecutive == 0 and b.failures == 0
    allow[0] = True
    b.failure()
    assert b.state is State.CLOSED  # counting starts over after a refusal
    b.failure()
    assert b.state is State.OPEN


def test_force_open_extends_but_never_shortens() -> None:
    clock = FakeClock()
    b, seen = make(clock, consecutive_failures=1, open_base=10)
    assert not b.force_open(clock.now - 1)  # already over: nothing to do
    assert b.force_open(clock.now + 20)
    assert b.state is State.OPEN and b.open_for() == pytest.approx(20)
    assert not b.force_open(clock.now + 5)
    assert b.open_for() == pytest.approx(20)
    assert b.force_open(clock.now + 30)
    assert b.open_for() == pytest.approx(30)
    assert seen == [("closed", "open")]


def test_policy_validation() -> None:
    import msgspec

    from ccm_gateway.resilience import ResilienceConfig

    with pytest.raises(msgspec.ValidationError, match="open_base"):
        msgspec.convert({"breaker": {"open_base": 600}}, ResilienceConfig)
    with pytest.raises(msgspec.ValidationError, match="failure_rate"):
        msgspec.convert({"breaker": {"failure_rate": 0}}, ResilienceConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"retry": {"attempts": 3}}, ResilienceConfig)
    with pytest.raises(msgspec.ValidationError, match="min must not exceed max"):
        msgspec.convert({"cooldown": {"min": 10, "max": 5}}, ResilienceConfig)
    config = msgspec.convert({"retry": {"max_attempts": 5}}, ResilienceConfig)
    assert config.retry.max_attempts == 5 and config.breaker.consecutive_failures == 5


def test_only_the_probes_own_answer_settles_half_open() -> None:
    """A long request sent before the trip ends while the probe is out: its cancellation does not free
    the probe's slot (no second probe), its success does not close the breaker, its failure does not
    reopen it; the probe's own answer does."""
    clock = FakeClock()
    b, _ = make(clock, consecutive_failures=1, open_base=5, jitter=0.0, half_open_successes=1)
    b.failure()
    clock.advance(5)
    assert b.try_acquire() is PROBE
    b.release(probe=False)  # the old request was cancelled
    assert not b.try_acquire()  # still one probe at a time
    b.success(probe=False)
    b.failure(probe=False)
    assert b.state is State.HALF_OPEN
    b.success(probe=True)
    assert b.state is State.CLOSED and b.try_acquire() is True
