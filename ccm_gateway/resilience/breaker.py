"""One deployment's circuit breaker: closed → open → half-open → closed, on an injected clock.

Time is only read, never waited on: an open breaker becomes half-open the first time it is looked at
after its open time, so there is no timer task per breaker.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Hashable

from .policy import BreakerPolicy
from .window import SlidingCounts

__all__ = ["Breaker", "State"]


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Transition = Callable[[Hashable, State, State], None]


class _Probe(int):
    """True, and marks the one half-open probe (``try_acquire``'s answer)."""

    def __repr__(self) -> str:
        return "PROBE"


PROBE = _Probe(1)


class Breaker:
    """Trips on ``consecutive_failures`` failures in a row or a failure rate ≥ ``failure_rate`` over the
    sliding ``window`` (once it holds ``min_calls`` calls). Open for min(open_max, open_base ×
    open_multiplier^(trips-1)) ± jitter, never shorter than a Retry-After given to the trip; half-open
    admits one probe at a time and closes after ``half_open_successes`` successes in a row.

    ``may_trip(member)`` may refuse a trip from closed (the ejection cap): the breaker then stays closed
    with fresh counters. ``on_transition(member, old, new)`` reports every state change."""

    __slots__ = ("_calls", "_clock", "_closed_since", "_may_trip", "_on_transition", "_probe", "_rng", "_state",
                 "consecutive", "member", "open_until", "policy", "successes", "trips")

    def __init__(self, policy: BreakerPolicy, member: Hashable = None, *, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random, on_transition: Transition | None = None,
                 may_trip: Callable[[Hashable], bool] | None = None) -> None:
        self.policy = policy
        self.member = member
        self._clock = clock
        self._rng = rng
        self._on_transition = on_transition
        self._may_trip = may_trip
        self._state = State.CLOSED
        self._calls = SlidingCounts(policy.window)  # a: calls, b: failures
        self._closed_since = clock()
        self._probe = False  # a half-open probe is in flight
        self.consecutive = 0  # failures in a row
        self.successes = 0  # probe successes in a row (half-open)
        self.trips = 0
        self.open_until = 0.0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() >= self.open_until:
            self._move(State.HALF_OPEN)
        return self._state

    @property
    def failures(self) -> int:
        """Failures in the sliding window."""
        self._calls.advance(self._clock())
        return self._calls.b

    def open_for(self) -> float:
        """Seconds until an open breaker half-opens (0 unless open)."""
        return max(0.0, self.open_until - self._clock()) if self.state is State.OPEN else 0.0

    def available(self) -> bool:
        """Would a request be let through now? Does not take the half-open probe slot."""
        if self._state is State.CLOSED:
            return True
        return self.state is State.HALF_OPEN and not self._probe

    def try_acquire(self) -> bool:
        """Call right before sending: True if the request may go — ``PROBE`` (also true) when it took the
        one half-open probe slot, so its caller can say so when it reports the outcome."""
        if self._state is State.CLOSED:
            return True
        if self.state is State.HALF_OPEN and not self._probe:
            self._probe = True
            return PROBE
        return False

    def _answers_probe(self, probe: bool | None) -> bool:
        """Does this outcome settle the half-open probe? Only the probe's own (``probe=True``); an
        outcome whose sender is unknown (None) when a probe is out."""
        return self._probe if probe is None else probe and self._probe

    def success(self, probe: bool | None = None) -> None:
        if self._state is State.CLOSED:  # the common case, first
            self.consecutive = 0
            self._calls.add(self._clock(), a=1)
        elif self.state is State.HALF_OPEN and self._answers_probe(probe):  # else a late answer from before the trip
            self._probe = False
            self.successes += 1
            if self.successes >= self.policy.half_open_successes:
                self._close()

    def failure(self, retry_after: float | None = None, probe: bool | None = None) -> None:
        state = self.state
        if state is State.CLOSED:
            self.consecutive += 1
            calls = self._calls
            calls.add(self._clock(), a=1, b=1)
            policy = self.policy
            if self.consecutive >= policy.consecutive_failures or (
                    calls.a >= policy.min_calls and calls.b >= policy.failure_rate * calls.a):
                self.trip(retry_after)
        elif state is State.HALF_OPEN and self._answers_probe(probe):
            self._probe = False
            self._open(retry_after)
        # open, or half-open without a probe out: a late answer to a request sent before the trip changes nothing

    def release(self, probe: bool | None = None) -> None:
        """The attempt said nothing about health (cancelled, client error, rate limit): free the probe
        slot — if it held it (an attempt sent before the trip never frees the probe's slot)."""
        if probe is not False:
            self._probe = False

    def trip(self, retry_after: float | None = None) -> bool:
        """Open a closed breaker now (unless the ejection cap refuses); False if refused or not closed."""
        if self.state is not State.CLOSED:
            return False
        if self._may_trip is not None and not self._may_trip(self.member):
            self._reset_counts()
            return False
        if self._clock() - self._closed_since >= self.policy.open_max:
            self.trips = 0  # closed for long enough: the next trip starts from open_base again
        self._open(retry_after)
        return True

    def force_open(self, until: float) -> bool:
        """Open until ``until`` (this clock) on another instance's word; never shortens a local open time,
        and obeys the ejection cap when opening from closed. True if it changed anything."""
        state = self.state
        if state is State.OPEN:
            if until <= self.open_until:
                return False
            self.open_until = until
            return True
        if until <= self._clock():
            return False
        if state is State.CLOSED and self._may_trip is not None and not self._may_trip(self.member):
            return False
        self.trips += 1
        self._probe = False
        self.open_until = until
        self._move(State.OPEN)
        return True

    def _open(self, retry_after: float | None) -> None:
        policy = self.policy
        self.trips += 1
        base = min(policy.open_max, policy.open_base * policy.open_multiplier ** min(self.trips - 1, 64))
        duration = min(policy.open_max, base * (1.0 + policy.jitter * (2.0 * self._rng() - 1.0)))
        if retry_after is not None and retry_after > duration:
            duration = retry_after
        self.open_until = self._clock() + duration
        self._probe = False
        self._move(State.OPEN)

    def _close(self) -> None:
        self._reset_counts()
        self._closed_since = self._clock()
        self._move(State.CLOSED)

    def _reset_counts(self) -> None:
        self.consecutive = 0
        self.successes = 0
        self._calls.clear()

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        if new is State.HALF_OPEN:
            self.successes = 0
            self._probe = False
        if self._on_transition is not None:
            self._on_transition(self.member, old, new)
