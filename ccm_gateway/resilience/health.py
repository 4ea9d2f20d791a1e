"""The health registry the routing layer asks before each attempt and tells after it: one breaker per
deployment member, cooldowns for rate-limited members, ejections for dead credentials, and the retry budget."""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .breaker import Breaker, State
from .budget import RetryBudget
from .outcome import Outcome
from .policy import ResilienceConfig

__all__ = ["Health", "Member"]

log = logging.getLogger("ccm_gateway.resilience")

Listener = Callable[["Member", State, State], None]
_HALF_OPEN_BUSY_WAIT = 1.0  # reopen_in's guess while a half-open probe is in flight


@dataclass(frozen=True, slots=True)
class Member:
    """One deployment: provider + base URL + upstream model + which of the provider's keys (by index —
    the key itself never enters the health state, its logs or its metrics)."""

    provider: str
    base_url: str
    model: str
    key_index: int
    # Derived once (the attempt schedule reads them per request): ``id`` keys the health state;
    # ``label`` (``provider/model#k<key index>``) names the member in /ready, metrics and logs, without
    # the base URL (it may carry credentials or name internal hosts).
    id: str = field(init=False, compare=False, repr=False)
    label: str = field(init=False, compare=False, repr=False)
    credential: tuple[str, str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "id", f"{self.provider}|{self.base_url}|{self.model}|k{self.key_index}")
        setattr_(self, "label", f"{self.provider}/{self.model}#k{self.key_index}")
        setattr_(self, "credential", (self.provider, self.base_url, self.key_index))


MAX_LISTED = 100  # members outside configured routes shown in metrics


class Health:
    """Per-process health of every member. Pure bookkeeping on an injected clock: no tasks, no I/O.

    Members outside any registered group (direct ``provider/model`` requests) are tracked too; past
    ``max_tracked`` of them, idle ones (closed, no recent failure) are forgotten so clients cannot grow it."""

    max_tracked = 10_000

    def __init__(self, config: ResilienceConfig, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self._rng = rng
        self._breakers: dict[Member, Breaker] = {}
        self._cooled: dict[Member, float] = {}  # member → monotonic time its 429 cooldown ends
        self._ejected: dict[tuple[str, str, int], float] = {}  # credential → monotonic time it may return
        self._groups: dict[str, tuple[Member, ...]] = {}
        self._member_groups: dict[Member, list[tuple[Member, ...]]] = {}
        self._by_id: dict[str, Member] = {}
        self._listeners: list[Listener] = []
        self.transitions: collections.Counter[tuple[str, str]] = collections.Counter()
        retry = config.retry
        self._budget = RetryBudget(retry.budget_ratio, retry.budget_window, retry.budget_min_per_second, clock)

    # -- registration -------------------------------------------------------------------------

    def register_group(self, name: str, members: Sequence[Member]) -> None:
        """A route's members: the ejection cap keeps most of each group closed. Re-registering replaces."""
        group = tuple(dict.fromkeys(members))
        old = self._groups.get(name)
        if old is not None:
            for m in old:
                self._member_groups[m].remove(old)
        self._groups[name] = group
        for m in group:
            self._member_groups.setdefault(m, []).append(group)
            self._by_id[m.id] = m

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(member, old, new)`` on every breaker transition (the Redis sharer uses this)."""
        self._listeners.append(listener)

    def member(self, member_id: str) -> Member | None:
        """The known member with this id (from a group or a recorded outcome), if any."""
        return self._by_id.get(member_id)

    # -- the routing layer's calls ------------------------------------------------------------

    def available(self, member: Member) -> bool:
        """Closed, not cooled and not ejected — or half-open with its probe slot free (not taken here)."""
        if (self._cooled or self._ejected) and self._out(member, self.clock()):
            return False
        breaker = self._breakers.get(member)
        return breaker is None or breaker.available()

    def acquire(self, member: Member) -> bool:
        """Call right before sending: False if the member may not be tried now; takes a half-open probe slot."""
        if (self._cooled or self._ejected) and self._out(member, self.clock()):
            return False
        breaker = self._breakers.get(member)
        return breaker is None or breaker.try_acquire()

    def record(self, member: Member, outcome: Outcome, retry_after: float | None = None,
               probe: bool | None = None) -> None:
        """The outcome of an attempt on ``member`` (``retry_after``: what the upstream asked, in seconds;
        ``probe``: whether that attempt held the half-open probe slot — ``acquire`` said ``PROBE`` —
        or None when the caller does not know)."""
        if outcome is Outcome.SUCCESS:
            self._breaker(member).success(probe)  # successes count in the failure-rate window from the start
        elif outcome is Outcome.FAILURE:
            if retry_after is not None:
                retry_after = min(max(retry_after, 0.0), self.config.breaker.open_max)
            self._breaker(member).failure(retry_after, probe)
        else:
            breaker = self._breakers.get(member)
            if breaker is not None:
                breaker.release(probe)
            if outcome is Outcome.RATE_LIMITED:
                self._cool(member, retry_after)
            elif outcome is Outcome.DEAD_KEY:
                self._eject(member)

    def reopen_in(self, members: Iterable[Member]) -> float | None:
        """Seconds until the soonest of ``members`` may be tried again; None if one may be tried now."""
        now = self.clock()
        soonest: float | None = None
        for m in members:
            wait = self._wait(m, now)
            if wait <= 0.0:
                return None
            soonest = wait if soonest is None else min(soonest, wait)
        return soonest

    def retry_budget(self) -> RetryBudget:
        return self._budget

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Member id → its state (every member in a group or with a history)."""
        return {m.id: state for m, state in self._states()}

    def public_states(self, bounded: bool = False) -> dict[str, dict[str, Any]]:
        """``Member.label`` → its state, for ``/ready`` and ``/metrics`` (no base URLs). ``bounded``
        (metrics): configured routes' members, and at most MAX_LISTED others that are not closed —
        direct ``provider/model`` names are client text, and each would be a time series."""
        out: dict[str, dict[str, Any]] = {}
        others = 0
        for m, state in self._states():
            if bounded and m not in self._member_groups:
                if state["state"] == "closed" or others >= MAX_LISTED:
                    continue
                others += 1
            out[m.label] = state
        return out

    def _states(self) -> list[tuple[Member, dict[str, Any]]]:
        now = self.clock()
        members = dict.fromkeys([*self._member_groups, *self._breakers, *self._cooled])
        members.update(dict.fromkeys(m for m in self._by_id.values() if m.credential in self._ejected))
        out: list[tuple[Member, dict[str, Any]]] = []
        for m in members:
            breaker = self._breakers.get(m)
            out.append((m, {
                "state": str(breaker.state) if breaker else str(State.CLOSED),
                "open_for": round(breaker.open_for(), 3) if breaker else 0.0,
                "trips": breaker.trips if breaker else 0,
                "cooled_for": round(max(0.0, self._cooled.get(m, now) - now), 3),
                "ejected_for": round(max(0.0, self._ejected.get(m.credential, now) - now), 3),
                "failures": breaker.failures if breaker else 0,
            }))
        return out

    # -- for the Redis sharer -----------------------------------------------------------------

    def breaker(self, member: Member) -> Breaker:
        """The member's breaker (created on first use)."""
        return self._breaker(member)

    def open_remote(self, member: Member, until_wall: float) -> bool:
        """Another instance opened ``member`` until ``until_wall`` (wall clock): open it here too. Never
        shortens a local open time; obeys the ejection cap. True if it changed anything."""
        return self._breaker(member).force_open(self.clock() + (until_wall - self.wall()))

    def open_until_wall(self, member: Member) -> float | None:
        """Wall-clock time an open member half-opens, or None if it is not open."""
        breaker = self._breakers.get(member)
        if breaker is None or breaker.state is not State.OPEN:
            return None
        return self.wall() + (breaker.open_until - self.clock())

    # -- internals ----------------------------------------------------------------------------

    def _breaker(self, member: Member) -> Breaker:
        breaker = self._breakers.get(member)
        if breaker is None:
            self._track(member)
            breaker = self._breakers[member] = Breaker(
                self.config.breaker, member, clock=self.clock, rng=self._rng,
                on_transition=self._transition, may_trip=self._may_trip)
        return breaker

    def _track(self, member: Member) -> None:
        if member.id not in self._by_id:
            if len(self._by_id) >= self.max_tracked:
                self._prune()
            self._by_id[member.id] = member

    def _prune(self) -> None:
        """Forget ungrouped members with nothing to remember, and cooldowns / ejections that are over."""
        now = self.clock()
        grouped = self._member_groups
        for m in [m for m, b in self._breakers.items()
                  if m not in grouped and b.state is State.CLOSED and b.consecutive == 0 and b.failures == 0]:
            del self._breakers[m]
        self._cooled = {m: t for m, t in self._cooled.items() if t > now}
        self._ejected = {c: t for c, t in self._ejected.items() if t > now}
        self._by_id = {i: m for i, m in self._by_id.items()
                       if m in grouped or m in self._breakers or m in self._cooled or m.credential in self._ejected}

    def _out(self, member: Member, now: float) -> bool:
        cooled = self._cooled.get(member)
        if cooled is not None:
            if now < cooled:
                return True
            del self._cooled[member]
        if self._ejected:
            until = self._ejected.get(member.credential)
            if until is not None:
                if now < until:
                    return True
                del self._ejected[member.credential]
        return False

    def _wait(self, member: Member, now: float) -> float:
        wait = max(self._cooled.get(member, now), self._ejected.get(member.credential, now)) - now
        breaker = self._breakers.get(member)
        if breaker is not None:
            state = breaker.state
            if state is State.OPEN:
                wait = max(wait, breaker.open_until - now)
            elif state is State.HALF_OPEN and not breaker.available():
                wait = max(wait, _HALF_OPEN_BUSY_WAIT)
        return wait

    def _cool(self, member: Member, retry_after: float | None) -> None:
        policy = self.config.cooldown
        seconds = policy.default if retry_after is None else min(max(retry_after, policy.min), policy.max)
        until = self.clock() + seconds
        if until > self._cooled.get(member, 0.0):
            self._track(member)
            self._cooled[member] = until

    def _eject(self, member: Member) -> None:
        now = self.clock()
        credential = member.credential
        if self._ejected.get(credential, 0.0) <= now:
            log.warning("resilience: ejecting provider %s key #%d for %.0f s: the upstream refused the "
                        "credential or it is out of credit", member.provider, member.key_index,
                        self.config.cooldown.eject)
        self._track(member)
        self._ejected[credential] = now + self.config.cooldown.eject

    def _may_trip(self, member: Any) -> bool:
        groups = self._member_groups.get(member)
        if not groups:
            return True
        share = self.config.breaker.max_ejected_share
        for group in groups:
            cap = max(1, math.floor(share * len(group)))
            out = 0
            for m in group:
                if m != member:
                    b = self._breakers.get(m)
                    if b is not None and b.state is not State.CLOSED:
                        out += 1
            if out + 1 > cap:
                log.info("resilience: breaker of %s stays closed: %d of its group's %d deployments are already "
                         "open (max_ejected_share %.2f)", member.label, out, len(group), share)
                return False
        return True

    def _transition(self, member: Any, old: State, new: State) -> None:
        self.transitions[(str(old), str(new))] += 1
        for listener in self._listeners:
            listener(member, old, new)
