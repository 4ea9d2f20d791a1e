"""The health registry (ccm_gateway/resilience/health.py): breakers per member, 429 cooldowns, dead-key
ejection across members, the ejection cap per route group, reopen times and the snapshot — on a fake clock."""

from __future__ import annotations

import logging

import pytest

from ccm_gateway.resilience import (
    BreakerPolicy,
    CooldownPolicy,
    Health,
    Member,
    Outcome,
    ResilienceConfig,
    RetryBudget,
)

from .fake_clock import FakeClock


def health(clock: FakeClock, *, trip_after: int = 1, share: float = 0.5, **cooldown: float) -> Health:
    config = ResilienceConfig(
        breaker=BreakerPolicy(consecutive_failures=trip_after, open_base=10, jitter=0.2, max_ejected_share=share,
                              half_open_successes=1),
        cooldown=CooldownPolicy(**cooldown),
    )
    return Health(config, clock=clock, rng=lambda: 0.5, wall=lambda: 1_700_000_000.0 + clock.now)


A0 = Member("openai", "https://api.openai.com/v1", "gpt-4o", 0)
A1 = Member("openai", "https://api.openai.com/v1", "gpt-4o", 1)
B0 = Member("openai", "https://api.openai.com/v1", "gpt-4o-mini", 0)
C0 = Member("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5", 0)


def test_member_identity_names_the_key_by_index_only() -> None:
    assert A1.id == "openai|https://api.openai.com/v1|gpt-4o|k1"
    assert A0.credential == B0.credential == ("openai", "https://api.openai.com/v1", 0)
    assert A0.credential != A1.credential
    assert Member("openai", "https://api.openai.com/v1", "gpt-4o", 0) == A0 and len({A0, A1, B0}) == 3


def test_failures_open_the_member_and_a_probe_closes_it() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=2)
    assert h.acquire(A0)
    h.record(A0, Outcome.FAILURE)
    assert h.available(A0)
    h.record(A0, Outcome.FAILURE)
    assert not h.available(A0) and not h.acquire(A0)
    assert h.available(A1)  # another key of the same model is its own member
    assert h.reopen_in([A0]) == pytest.approx(10)
    clock.advance(10)
    assert h.available(A0) and h.acquire(A0)
    assert not h.available(A0) and not h.acquire(A0)  # the probe slot is taken
    h.record(A0, Outcome.SUCCESS)
    assert h.available(A0) and h.acquire(A0) and h.acquire(A0)
    assert h.transitions == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}


def test_successes_before_the_first_failure_count_in_the_rate() -> None:
    clock = FakeClock()
    config = ResilienceConfig(breaker=BreakerPolicy(consecutive_failures=100, failure_rate=0.5, min_calls=10))
    h = Health(config, clock=clock)
    for _ in range(20):
        h.record(A0, Outcome.SUCCESS)
    for _ in range(10):
        h.record(A0, Outcome.FAILURE)
        h.record(A0, Outcome.SUCCESS)
    assert h.available(A0)  # 10 failures in 40 calls
    for _ in range(19):
        h.record(A0, Outcome.FAILURE)
    assert h.available(A0)  # 29 in 59: below half (the first 20 successes count)
    h.record(A0, Outcome.FAILURE)
    assert not h.available(A0)  # 30 in 60


def test_client_errors_and_cancellations_do_not_count_but_free_the_probe() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=2)
    for outcome in (Outcome.CLIENT_ERROR, Outcome.CANCELLED, Outcome.CLIENT_ERROR):
        h.record(A0, Outcome.FAILURE)
        h.record(A0, outcome)  # between two failures: the run of failures goes on, nothing else
    assert not h.available(A0)  # FAILURE, x, FAILURE tripped at the second failure
    clock.advance(10)
    assert h.acquire(A0) and not h.acquire(A0)
    h.record(A0, Outcome.CANCELLED)
    assert h.acquire(A0)  # the slot is free again; still half-open
    h.record(A0, Outcome.CLIENT_ERROR)
    assert h.snapshot()[A0.id]["state"] == "half_open"


def test_429_cools_the_member_without_counting_as_a_failure() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=1, default=5, min=1, max=60)
    h.record(A0, Outcome.RATE_LIMITED, retry_after=3)
    assert not h.available(A0) and not h.acquire(A0)
    assert h.available(A1) and h.available(B0)  # only this member
    assert h.reopen_in([A0]) == pytest.approx(3)
    snap = h.snapshot()[A0.id]
    assert snap["state"] == "closed" and snap["trips"] == 0 and snap["cooled_for"] == pytest.approx(3)
    clock.advance(3)
    assert h.available(A0) and h.acquire(A0)
    assert h.transitions == {}


@pytest.mark.parametrize(("asked", "cooled"), [(None, 5.0), (0.2, 1.0), (3.0, 3.0), (3600.0, 60.0), (-5.0, 1.0)])
def test_cooldown_is_clamped(asked: float | None, cooled: float) -> None:
    clock = FakeClock()
    h = health(clock, default=5, min=1, max=60)
    h.record(A0, Outcome.RATE_LIMITED, retry_after=asked)
    assert h.reopen_in([A0]) == pytest.approx(cooled)


def test_a_shorter_429_does_not_shorten_a_cooldown() -> None:
    clock = FakeClock()
    h = health(clock)
    h.record(A0, Outcome.RATE_LIMITED, retry_after=30)
    h.record(A0, Outcome.RATE_LIMITED, retry_after=2)
    assert h.reopen_in([A0]) == pytest.approx(30)


def test_dead_key_ejects_the_credential_for_every_model(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    h = health(clock, eject=300)
    with caplog.at_level(logging.WARNING, logger="ccm_gateway.resilience"):
        h.record(A0, Outcome.DEAD_KEY)
        h.record(B0, Outcome.DEAD_KEY)  # the same credential again: no second warning
    assert not h.available(A0) and not h.available(B0)  # same provider + base URL + key index
    assert h.available(A1) and h.available(C0)  # another key, another provider
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "openai" in warnings[0] and "key #0" in warnings[0]
    assert A0.base_url not in caplog.text  # logs name members without their URL (it may carry credentials)
    assert h.snapshot()[B0.id]["ejected_for"] == pytest.approx(300)
    assert h.transitions == {}  # ejection is not a breaker trip
    clock.advance(300)
    assert h.available(A0) and h.available(B0)


def test_ejection_cap_keeps_half_of_a_group_closed(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    h = health(clock, share=0.5)
    h.register_group("gpt", [A0, A1])
    h.record(A0, Outcome.FAILURE)
    assert not h.available(A0)
    with caplog.at_level(logging.INFO, logger="ccm_gateway.resilience"):
        h.record(A1, Outcome.FAILURE)  # would open 2 of 2 > max(1, floor(0.5 × 2)) = 1
    assert h.available(A1) and h.snapshot()[A1.id]["failures"] == 0
    assert "stays closed" in caplog.text and A1.base_url not in caplog.text
    clock.advance(10)
    assert h.acquire(A0)
    h.record(A0, Outcome.SUCCESS)  # A0 closed again: A1 may open now
    h.record(A1, Outcome.FAILURE)
    assert not h.available(A1)


def test_ejection_cap_lets_a_one_member_group_open_and_counts_half_open() -> None:
    clock = FakeClock()
    h = health(clock, share=0.5)
    h.register_group("solo", [C0])
    h.record(C0, Outcome.FAILURE)
    assert not h.available(C0)
    members = [Member("p", "u", "m", i) for i in range(4)]
    h.register_group("four", members)  # cap: max(1, floor(0.5 × 4)) = 2
    for m in members:
        h.record(m, Outcome.FAILURE)
    assert [h.available(m) for m in members] == [False, False, True, True]
    clock.advance(10)  # both open ones are half-open now: still not closed, still counted
    h.record(members[2], Outcome.FAILURE)
    assert h.available(members[2])
    assert h.snapshot()[members[2].id]["state"] == "closed"


def test_ejection_cap_applies_per_group_and_ungrouped_members_are_uncapped() -> None:
    clock = FakeClock()
    h = health(clock, share=0.5)
    h.register_group("big", [A0, A1, B0, C0])  # cap 2
    h.register_group("pair", [A0, A1])  # cap 1: the stricter group decides for A0 and A1
    h.record(A0, Outcome.FAILURE)
    h.record(A1, Outcome.FAILURE)
    h.record(B0, Outcome.FAILURE)
    assert [h.available(m) for m in (A0, A1, B0, C0)] == [False, True, False, True]
    loose = [Member("x", "u", "m", i) for i in range(3)]
    for m in loose:
        h.record(m, Outcome.FAILURE)
    assert not any(h.available(m) for m in loose)


def test_reopen_in_is_the_soonest_member() -> None:
    clock = FakeClock()
    h = health(clock)
    assert h.reopen_in([A0, A1]) is None
    h.record(A0, Outcome.FAILURE)  # open 10 s
    h.record(A1, Outcome.RATE_LIMITED, retry_after=4)
    assert h.reopen_in([A0, A1]) == pytest.approx(4)
    assert h.reopen_in([A0, A1, C0]) is None  # C0 can be tried now
    h.record(B0, Outcome.DEAD_KEY)  # ejects A0's credential for 300 s as well
    assert h.reopen_in([A0]) == pytest.approx(300)
    clock.advance(300)
    assert h.reopen_in([A0]) is None


def test_snapshot_lists_grouped_and_touched_members() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=2)
    h.register_group("gpt", [A0, A1])
    h.record(A0, Outcome.FAILURE)
    h.record(C0, Outcome.RATE_LIMITED, retry_after=2)
    snap = h.snapshot()
    assert set(snap) == {A0.id, A1.id, C0.id}
    assert snap[A0.id] == {"state": "closed", "open_for": 0.0, "trips": 0, "cooled_for": 0.0, "ejected_for": 0.0,
                           "failures": 1}
    h.record(A0, Outcome.FAILURE)
    assert h.snapshot()[A0.id]["state"] == "open" and h.snapshot()[A0.id]["open_for"] == pytest.approx(10)


def test_retry_budget_comes_from_the_retry_policy() -> None:
    clock = FakeClock()
    h = health(clock)
    budget = h.retry_budget()
    assert isinstance(budget, RetryBudget) and budget is h.retry_budget()
    for _ in range(100):
        budget.deposit()
    allowed = sum(budget.withdraw() for _ in range(100))
    assert allowed == 30  # 0.2 × 100 requests + 1/s × 10 s


def test_listeners_see_transitions_and_remote_opens_obey_the_cap() -> None:
    clock = FakeClock()
    h = health(clock)
    h.register_group("gpt", [A0, A1])
    seen: list[tuple[str, str, str]] = []
    h.subscribe(lambda m, old, new: seen.append((m.id, str(old), str(new))))
    assert h.member(A0.id) is A0
    until = h.wall() + 30
    assert h.open_remote(A0, until)
    assert h.open_until_wall(A0) == pytest.approx(until)
    assert not h.open_remote(A1, until)  # the cap holds for remote opens too
    assert not h.open_remote(A0, until - 10)  # never shortens
    assert seen == [(A0.id, "closed", "open")]


def test_idle_ungrouped_members_are_forgotten_past_max_tracked() -> None:
    clock = FakeClock()
    h = health(clock, trip_after=3)
    h.max_tracked = 10
    h.register_group("gpt", [A0, A1])
    failing = Member("direct", "u", "failing", 0)
    for _ in range(3):
        h.record(failing, Outcome.FAILURE)  # ungrouped and open: kept
    h.record(C0, Outcome.RATE_LIMITED, retry_after=60)  # still cooling: kept

    def spray(prefix: str, n: int) -> set[str]:  # a client asking for model names that fail once, then work
        ids = set()
        for i in range(n):
            m = Member("direct", "u", f"{prefix}-{i}", 0)
            h.record(m, Outcome.FAILURE)
            h.record(m, Outcome.SUCCESS)
            ids.add(m.id)
        return ids

    old = spray("old", 20)
    assert old <= set(h.snapshot())  # failures in the window: nothing to forget yet
    clock.advance(31)  # the old failures leave the 30-second window
    new = spray("new", 5)
    assert set(h.snapshot()) == {A0.id, A1.id, C0.id, failing.id} | new
    assert h.member(A0.id) is A0 and h.member(failing.id) is failing and h.member("direct|u|old-0|k0") is None


def test_metrics_see_configured_members_and_only_troubled_others() -> None:
    """Direct ``provider/model`` members are client text: metrics list them only while they are not
    closed (bounded), configured members always."""
    clock = FakeClock()
    h = health(clock)
    h.register_group("gpt", [A0])
    h.record(C0, Outcome.FAILURE)  # outside any group, tripped (trip_after=1)
    h.record(B0, Outcome.SUCCESS)  # outside any group, closed
    assert set(h.public_states(bounded=True)) == {A0.label, C0.label}
    assert set(h.public_states()) == {A0.label, B0.label, C0.label}  # /ready shows all of them
