"""The attempt schedule (``routing.Attempts``) on its own: which member comes next, when it waits,
and when it stops. A Health on an injected clock; backoff set to zero so nothing sleeps."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from ccm_gateway import load_config
from ccm_gateway.dialects import Dialect
from ccm_gateway.providers.upstream import Upstream
from ccm_gateway.resilience.health import Health
from ccm_gateway.resilience.outcome import Outcome
from ccm_gateway.routing import Attempts, Candidate, Failure, Router, choose

from .fake_clock import FakeClock

PROVIDERS = {
    "a": {"kind": "openai", "api_keys": [{"key": "sk-a-key0-000000", "weight": 3}, {"key": "sk-a-key1-000000"}]},
    "b": {"kind": "openai", "api_keys": ["sk-b-key0-000000"]},
    "c": {"kind": "anthropic", "api_keys": ["sk-c-key0-000000"]},
}
MODELS = [
    {"name": "duo", "targets": [{"provider": "a", "model": "ma", "weight": 1000}, {"provider": "b", "model": "mb"}],
     "fallbacks": ["third"]},
    {"name": "third", "targets": [{"provider": "c", "model": "mc"}]},
    {"name": "solo", "targets": [{"provider": "a", "model": "ma"}]},
    {"name": "even", "targets": [{"provider": "a", "model": "ma"}, {"provider": "b", "model": "mb"}]},
]




def setup(retry: dict[str, Any] | None = None, breaker: dict[str, Any] | None = None,
          routing: dict[str, Any] | None = None) -> tuple[Router, Health, Any]:
    config = load_config({"providers": PROVIDERS, "models": MODELS, "routing": routing or {},
                          "resilience": {"retry": {"backoff_base": 0.0, "backoff_max": 0.0, **(retry or {})},
                                         "breaker": breaker or {}}}, env={}, dotenv=False)
    router = Router(config, {n: Upstream(n, p) for n, p in config.providers.items()})
    health = Health(config.resilience, clock=FakeClock(100.0), rng=lambda: 0.5)
    for route in router.routes.values():
        health.register_group(route.name, route.members)
    return router, health, config.resilience.retry


def schedule(router: Router, health: Health | None, policy: Any, name: str = "duo") -> Any:
    """A schedule factory (an Attempts is made inside the running loop, like the endpoint does)."""
    return lambda: Attempts(router.chain(router.routes[name]), Dialect.OPENAI_CHAT, health, policy)


def run(make: Any, outcomes: list[Outcome], retry_after: float | None = None, out: list | None = None) -> list[str]:
    """Drive a schedule: each attempt gets the next outcome; returns 'provider/model#k' per attempt."""
    async def drive() -> list[str]:
        plan = make()
        if out is not None:
            out.append(plan)
        seen: list[str] = []
        last: Failure | None = None
        for outcome in outcomes:
            choice = await plan.next(last)
            if choice is None:
                break
            seen.append(f"{choice.deployment.label}#k{choice.key_index}")
            plan.record(choice, outcome, retry_after)
            last = Failure(outcome, status=503, retry_after=retry_after)
        return seen

    return asyncio.run(drive())


def test_a_retry_goes_to_another_deployment_then_the_fallback_route() -> None:
    router, health, policy = setup()
    seen = run(schedule(router, health, policy), [Outcome.FAILURE] * 10)
    # duo (3 attempts): a first (its weight), then b (another deployment beats a's other key), then
    # a's untried key; then the fallback route "third" gets its own 3 (its only member, with backoff).
    assert seen[0].startswith("a/ma") and seen[1] == "b/mb#k0"
    assert seen[2].startswith("a/ma") and seen[2] != seen[0]
    assert seen[3:] == ["c/mc#k0"] * 3


def test_a_refused_key_moves_to_the_other_key_of_the_same_deployment() -> None:
    router, health, policy = setup()
    seen = run(schedule(router, health, policy, name="solo"), [Outcome.DEAD_KEY, Outcome.SUCCESS])
    assert seen == ["a/ma#k0", "a/ma#k1"] or seen == ["a/ma#k1", "a/ma#k0"]
    ejected = [m for m in router.routes["solo"].members if not health.available(m)]
    assert [f"k{m.key_index}" for m in ejected] == [seen[0][-2:]]


def test_the_only_member_left_is_not_ejected_for_a_refused_key() -> None:
    router, health, policy = setup()
    seen = run(schedule(router, health, policy, name="third"), [Outcome.DEAD_KEY, Outcome.SUCCESS])
    assert seen == ["c/mc#k0"]  # no retry on the same refused key, and no fallback configured
    assert health.available(router.routes["third"].members[0])


def test_a_client_error_is_never_retried_and_leaves_health_alone() -> None:
    router, health, policy = setup()
    seen = run(schedule(router, health, policy), [Outcome.CLIENT_ERROR, Outcome.SUCCESS])
    assert len(seen) == 1
    assert all(health.available(m) for m in router.routes["duo"].members)


def test_max_attempts_is_per_route_and_the_budget_can_stop_retries() -> None:
    router, health, policy = setup(retry={"max_attempts": 1})
    assert [s.split("/")[0] for s in run(schedule(router, health, policy), [Outcome.FAILURE] * 5)] == ["a", "c"]
    router, health, policy = setup(retry={"budget_ratio": 0.0, "budget_min_per_second": 0.0})
    assert len(run(schedule(router, health, policy), [Outcome.FAILURE] * 5)) == 1


def test_without_health_there_is_exactly_one_attempt() -> None:
    router, _, _ = setup()
    assert len(run(schedule(router, None, None), [Outcome.FAILURE] * 5)) == 1


def test_open_members_are_skipped_and_all_open_gives_no_member() -> None:
    router, health, policy = setup(breaker={"consecutive_failures": 1, "max_ejected_share": 1.0})
    for route in router.routes.values():
        for member in route.members:
            health.record(member, Outcome.FAILURE)
    plans: list[Attempts] = []
    assert run(schedule(router, health, policy), [Outcome.SUCCESS], out=plans) == []
    wait = plans[0].reopen_in()
    assert wait is not None and wait > 0


def test_the_weights_decide_among_members() -> None:
    router, _, _ = setup()
    random.seed(11)
    pool = router.routes["solo"].candidates
    picks = Counter(choose(pool, None).key_index for _ in range(4000))
    assert 0.70 < picks[0] / 4000 < 0.80  # key weights 3:1


def test_affinity_is_stable_and_moves_only_the_sessions_of_a_lost_member() -> None:
    router, _, _ = setup()
    pool: list[Candidate] = router.routes["even"].candidates
    sessions = [f"session-{i}" for i in range(300)]
    before = {s: choose(pool, s).deployment.label for s in sessions}
    assert before == {s: choose(pool, s).deployment.label for s in sessions}  # stable
    assert set(before.values()) == {"a/ma", "b/mb"}  # spread
    without_b = [c for c in pool if c.deployment.label != "b/mb"]
    after = {s: choose(without_b, s).deployment.label for s in sessions}
    assert all(after[s] == before[s] for s in sessions if before[s] == "a/ma")  # a's sessions stay


@pytest.mark.parametrize("retry_after", [0.05])
def test_a_retry_after_that_fits_is_waited_out_on_the_only_member(retry_after: float) -> None:
    router, health, policy = setup()
    seen = run(schedule(router, health, policy, name="third"), [Outcome.RATE_LIMITED, Outcome.SUCCESS],
               retry_after=retry_after)
    assert seen == ["c/mc#k0", "c/mc#k0"]
    seen = run(schedule(router, health, policy, name="third"), [Outcome.RATE_LIMITED, Outcome.SUCCESS],
               retry_after=3600.0)  # beyond cooldown.max: not waited for, nothing else to try
    assert seen == ["c/mc#k0"]


def test_a_half_open_probe_answered_429_frees_its_slot() -> None:
    """The only member of a route, half-open, probes and gets a 429: it is not cooled (nothing else
    could serve), and its probe slot is free again for the next request."""
    router, health, policy = setup(breaker={"consecutive_failures": 1, "open_base": 5, "jitter": 0.0})
    member = router.routes["third"].members[0]
    run(schedule(router, health, policy, name="third"), [Outcome.FAILURE])  # trips
    assert not health.available(member)
    health.clock.now += 5  # half-open
    assert run(schedule(router, health, policy, name="third"), [Outcome.RATE_LIMITED]) == ["c/mc#k0"]
    assert health.available(member)  # the probe slot was released, not leaked
    assert health.acquire(member)


def test_a_retry_after_is_not_waited_out_while_a_fallback_can_serve() -> None:
    """One member left in the route, answering 429 with a Retry-After: the fallback route serves at once
    (no sleep), and the member cools down so later requests skip it."""
    router, health, policy = setup()
    member = router.routes["solo"].members[0]
    router.routes["solo"].fallbacks = ["third"]
    plan_out: list[Any] = []
    make = lambda: Attempts(router.chain(router.routes["solo"]), Dialect.OPENAI_CHAT, health, policy)  # noqa: E731
    seen = run(make, [Outcome.RATE_LIMITED, Outcome.RATE_LIMITED, Outcome.SUCCESS], retry_after=30.0, out=plan_out)
    assert seen[-1] == "c/mc#k0" and len(seen) == 3  # both keys of a, then the fallback, no 30 s wait
    assert not health.available(member)  # cooled: a fallback could serve, so the 429 counts
