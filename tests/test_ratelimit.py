"""Rate limits with an injected clock (no sleeps): GCRA bursts at window edges, token reservations
and their settlement, concurrency, abandoned reservations, the Redis fallback, and the stage itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ccm_gateway.config import KeyConfig, LimitsConfig
from ccm_gateway.dialects import Dialect
from ccm_gateway.errors import RateLimited
from ccm_gateway.exchange import Exchange
from ccm_gateway.middleware.auth import Principal
from ccm_gateway.middleware.ratelimit import RateLimitMiddleware, client_ip, duration, reservation
from ccm_gateway.state import FailoverBackend, MemoryBackend, Rate, Slots, StateBackend

from .fake_clock import FakeClock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def rpm(limit: int, cost: float = 1.0, key: str = "k:rpm", burst: float = 1.0) -> Rate:
    return Rate(key, limit / 60.0, limit * burst, cost)


def admit(backend: MemoryBackend, *rates: Rate, slots: tuple[Slots, ...] = (), ttl: float = 30.0) -> bool:
    return backend.admit_now(rates, slots, ttl).allowed


# --- GCRA ----------------------------------------------------------------------------------------


def test_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock)
    assert all(admit(mem, rpm(60)) for _ in range(60))  # a whole minute's worth at once
    denied = mem.admit_now([rpm(60)], [], 30)
    assert not denied.allowed and denied.retry_after == pytest.approx(1.0)
    clock.now += 0.99
    assert not admit(mem, rpm(60))
    clock.now += 0.01
    assert admit(mem, rpm(60))
    assert not admit(mem, rpm(60))


def test_no_double_burst_across_a_window_boundary() -> None:
    """A fixed window would allow 60 at 0:59.9 and 60 more at 1:00.1; GCRA allows only what refilled."""
    clock = FakeClock(59.9)
    mem = MemoryBackend(clock)
    assert sum(admit(mem, rpm(60)) for _ in range(100)) == 60
    clock.now = 60.1
    assert sum(admit(mem, rpm(60)) for _ in range(100)) == 0
    clock.now = 60.9  # one interval after the burst ended
    assert sum(admit(mem, rpm(60)) for _ in range(100)) == 1


def test_smaller_burst_smooths() -> None:
    mem = MemoryBackend(FakeClock())
    assert sum(admit(mem, rpm(600, burst=0.1)) for _ in range(200)) == 60


def test_remaining_and_reset_reported() -> None:
    mem = MemoryBackend(FakeClock())
    first = mem.admit_now([rpm(60)], [], 30)
    assert first.meters == ((59.0, 1.0),)
    assert duration(0.25) == "250ms" and duration(1.5) == "1.5s" and duration(360) == "6m0s"


def test_all_or_nothing() -> None:
    """When the tokens meter refuses, the requests meter is not charged either."""
    mem = MemoryBackend(FakeClock())
    tokens = Rate("k:tpm", 1000 / 60, 1000, 800)
    assert admit(mem, rpm(2), tokens)
    assert not admit(mem, rpm(2), tokens)
    assert admit(mem, rpm(2))  # the refused request did not use up the second request
    assert not admit(mem, rpm(2))


def test_cost_above_burst_admitted_only_into_a_full_bucket() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock)
    big = Rate("k:tpm", 1000 / 60, 1000, 3000)
    assert admit(mem, Rate("k:tpm", 1000 / 60, 1000, 1))
    assert not admit(mem, big)  # not full: refused
    clock.now += 0.06
    assert admit(mem, big)  # full again: admitted, and the bucket runs into debt
    clock.now += 60 * 2.0  # 3000 tokens of a 1000/min bucket: 2 minutes of debt, 1 left to refill
    assert not admit(mem, Rate("k:tpm", 1000 / 60, 1000, 200))
    clock.now += 12.0  # 200 tokens' worth
    assert admit(mem, Rate("k:tpm", 1000 / 60, 1000, 200))


# --- token reservations and settlement -----------------------------------------------------------


def tpm(cost: float) -> Rate:
    return Rate("k:tpm", 1000 / 60, 1000, cost)


def test_settlement_refunds_unused_reservation() -> None:
    mem = MemoryBackend(FakeClock())
    assert admit(mem, tpm(600))
    assert not admit(mem, tpm(600))
    mem.finish_now([tpm(100 - 600)], [])  # really used 100
    assert admit(mem, tpm(600))
    assert mem.admit_now([tpm(1)], [], 30).meters[0][0] == pytest.approx(299, abs=1)


def test_settlement_turns_overuse_into_debt() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock)
    assert admit(mem, tpm(100))
    mem.finish_now([tpm(1000)], [])  # used 1100 of a 1000 bucket
    denied = mem.admit_now([tpm(1)], [], 30)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(6.06, abs=0.01)  # 101 tokens of debt at 1000/min
    clock.now += 6.1
    assert admit(mem, tpm(1))


def test_refund_never_overfills() -> None:
    mem = MemoryBackend(FakeClock())
    assert admit(mem, tpm(10))
    mem.finish_now([tpm(-5000)], [])
    assert sum(admit(mem, tpm(100)) for _ in range(20)) == 10


# --- concurrency and abandoned reservations ------------------------------------------------------


def test_concurrency_slots() -> None:
    mem = MemoryBackend(FakeClock())
    a, b, c = (Slots("k:conc", 2, h) for h in "abc")
    assert admit(mem, slots=(a,)) and admit(mem, slots=(b,))
    assert not admit(mem, slots=(c,))
    mem.finish_now([], [a])
    assert admit(mem, slots=(c,))


def test_abandoned_slot_expires_with_the_deadline() -> None:
    """A worker that crashed never releases its slot; the slot's deadline frees it."""
    clock = FakeClock()
    mem = MemoryBackend(clock)
    assert admit(mem, slots=(Slots("k:conc", 1, "crashed"),), ttl=600)
    clock.now += 599.9
    assert not admit(mem, slots=(Slots("k:conc", 1, "next"),))
    clock.now += 0.2
    assert admit(mem, slots=(Slots("k:conc", 1, "next"),))
    mem.finish_now([], [Slots("k:conc", 1, "crashed")])  # a late release does not free the new holder
    assert not admit(mem, slots=(Slots("k:conc", 1, "third"),))


def test_abandoned_token_reservation_does_not_hold_quota_past_the_deadline() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock)
    assert admit(mem, tpm(1000))  # reserved, never settled
    assert not admit(mem, tpm(500))
    clock.now += 600  # the request deadline
    assert mem.admit_now([tpm(1)], [], 30).meters[0][0] == 999  # all of it back


def test_memory_table_stays_bounded() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock, max_keys=100)
    for i in range(1000):
        admit(mem, rpm(60, key=f"ip:{i}"))
    assert len(mem.tats) <= 101


# --- the Redis fallback (a fake primary, the injected clock) -------------------------------------


class Broken(StateBackend):
    name = "redis"

    def __init__(self) -> None:
        self.down = True
        self.hang = False
        self.calls = 0

    async def admit(self, rates: Any, slots: Any, ttl: float) -> Any:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("refused")
        return MemoryBackend().admit_now(rates, slots, ttl)._replace(source="redis")

    async def finish(self, adjust: Any, slots: Any, source: str) -> None:
        if self.down:
            raise ConnectionError("refused")


def test_fallback_enforces_a_share_and_recovers() -> None:
    clock = FakeClock()
    primary = Broken()
    fb = FailoverBackend(primary, instances=4, timeout=0.05, recheck=1.0, clock=clock)

    async def scenario() -> None:
        allowed = [(await fb.admit([rpm(40)], [], 30)).allowed for _ in range(20)]
        assert sum(allowed) == 10  # 40 ÷ 4 instances
        assert primary.calls == 1  # not retried on every request while down
        assert fb.degraded and fb.metrics["state_fallback_decisions_total"] == 20
        adm = await fb.admit([rpm(40)], [Slots("k:conc", 8, "h")], 30)
        await fb.finish([], [Slots("k:conc", 8, "h")], adm.source)  # local settle, no error
        primary.down = False
        clock.now += 1.0
        back = await fb.admit([rpm(40)], [], 30)
        assert back.allowed and back.source == "redis" and not fb.degraded

    run(scenario())


def test_slow_primary_times_out_into_the_fallback() -> None:
    primary = Broken()
    primary.hang = True
    fb = FailoverBackend(primary, instances=1, timeout=0.01, recheck=60, clock=FakeClock())
    adm = run(fb.admit([rpm(10)], [], 30))
    assert adm.allowed and adm.source == "fallback"
    assert fb.metrics["state_backend_errors_total"] == 1


# --- the stage, driven directly ------------------------------------------------------------------


def principal(**limits: Any) -> Principal:
    return Principal(KeyConfig(name="team-a", key_sha256="0" * 64, **limits), b"\0" * 32)


def exchange(body: dict[str, Any] | None = None, who: Principal | None = None) -> Exchange:
    ex = Exchange(Dialect.OPENAI_CHAT)
    ex.body = json.dumps(body or {"model": "m", "messages": [], "max_tokens": 100}).encode()
    ex.principal = who
    return ex


def scope_for(ex: Exchange, client: str = "10.1.1.1", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers or [],
            "client": (client, 5000), "state": {"ccm": ex}}


def upstream_app(used: int | None = None, fail: BaseException | None = None):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        ex = scope["state"]["ccm"]
        ex.attempts = 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-ratelimit-remaining-requests", b"99")]})
        if used is not None:
            ex.usage.input, ex.usage.output, ex.usage.reported = used // 2, used - used // 2, True
        if fail is not None:
            raise fail
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def call(stage: RateLimitMiddleware, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    # the exchange stage's sender: it runs the stages' response-head hooks
    run(stage(scope, receive, scope["state"]["ccm"].sender(send)))
    return sent


def test_stage_headers_replace_upstream_ones_and_tokens_settle() -> None:
    clock = FakeClock()
    mem = MemoryBackend(clock)
    stage = RateLimitMiddleware(upstream_app(used=50), LimitsConfig(), mem)
    who = principal(rpm=10, tpm=10_000)
    sent = call(stage, scope_for(exchange(who=who)))
    headers = dict(sent[0]["headers"])
    assert headers[b"x-ratelimit-remaining-requests"] == b"9"  # ours, not the upstream's 99
    assert [n for n, _ in sent[0]["headers"]].count(b"x-ratelimit-remaining-requests") == 1
    assert headers[b"x-ratelimit-limit-tokens"] == b"10000"
    reserved = reservation(exchange(), 4096)
    assert int(headers[b"x-ratelimit-remaining-tokens"]) == 10_000 - reserved
    # settled to the 50 tokens really used: the next response shows them, not the reservation
    sent = call(stage, scope_for(exchange(who=who)))
    assert int(dict(sent[0]["headers"])[b"x-ratelimit-remaining-tokens"]) == 10_000 - 50 - reserved


def test_stage_rejects_with_429_headers() -> None:
    stage = RateLimitMiddleware(upstream_app(), LimitsConfig(), MemoryBackend(FakeClock()))
    who = principal(rpm=1)
    call(stage, scope_for(exchange(who=who)))
    with pytest.raises(RateLimited) as caught:
        call(stage, scope_for(exchange(who=who)))
    h = caught.value.headers
    assert h["retry-after"] == "60" and h["x-should-retry"] == "true" and h["retry-after-ms"] == "60000"
    assert h["x-ratelimit-remaining-requests"] == "0" and h["x-ratelimit-limit-requests"] == "1"


def test_disconnect_settles_and_frees_the_slot() -> None:
    """A client that hangs up mid-stream: the usage seen so far is settled and the slot is freed."""
    mem = MemoryBackend(FakeClock())
    who = principal(tpm=100_000, concurrency=1)
    stage = RateLimitMiddleware(upstream_app(used=40, fail=asyncio.CancelledError()), LimitsConfig(), mem)
    with pytest.raises(asyncio.CancelledError):
        call(stage, scope_for(exchange(who=who)))
    assert not mem.slots
    assert mem.admit_now([Rate("ccm:{key:team-a}:tpm", 100_000 / 60, 100_000, 1)], [], 30).meters[0][0] == (
        pytest.approx(100_000 - 41, abs=1))


def test_never_sent_upstream_refunds_everything() -> None:
    mem = MemoryBackend(FakeClock())

    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("unknown model")

    stage = RateLimitMiddleware(not_found, LimitsConfig(tpm=5000), mem)
    with pytest.raises(LookupError):
        call(stage, scope_for(exchange(who=principal())))
    assert mem.admit_now([Rate("ccm:{key:team-a}:tpm", 5000 / 60, 5000, 1)], [], 30).meters[0][0] == 4999


def test_ip_limits_and_forwarded_for() -> None:
    mem = MemoryBackend(FakeClock())
    limits = LimitsConfig(ip_rpm=1, trusted_proxies=["10.0.0.0/8"])
    stage = RateLimitMiddleware(upstream_app(), limits, mem)
    xff = [(b"x-forwarded-for", b"203.0.113.9, 10.2.2.2")]
    call(stage, scope_for(exchange(), headers=xff))
    with pytest.raises(RateLimited):
        call(stage, scope_for(exchange(), client="10.9.9.9", headers=xff))  # same client, other proxy
    call(stage, scope_for(exchange(), headers=[(b"x-forwarded-for", b"203.0.113.10")]))  # another client


def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    import ipaddress

    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    spoof = [(b"x-forwarded-for", b"1.1.1.1")]
    assert client_ip(scope_for(exchange(), client="198.51.100.7", headers=spoof), trusted) == "198.51.100.7"
    assert client_ip(scope_for(exchange(), client="10.0.0.2", headers=spoof), trusted) == "1.1.1.1"
    assert client_ip(scope_for(exchange(), client="10.0.0.2", headers=spoof), []) == "10.0.0.2"
    chain = [(b"x-forwarded-for", b"1.1.1.1, 203.0.113.9, 10.2.2.2")]  # spoofed, client, inner proxy
    assert client_ip(scope_for(exchange(), client="10.0.0.2", headers=chain), trusted) == "203.0.113.9"
    junk = [(b"x-forwarded-for", b"not-an-ip")]
    assert client_ip(scope_for(exchange(), client="10.0.0.2", headers=junk), trusted) == "10.0.0.2"
    assert client_ip(scope_for(exchange(), client="2001:db8:1:2:3::4"), []) == "2001:db8:1:2::/64"


def test_reservation_uses_max_tokens_capped() -> None:
    body = {"model": "m", "messages": [], "max_tokens": 100}
    ex = exchange(body)
    assert reservation(ex, 4096) == len(ex.body) // 4 + 100
    assert reservation(exchange({"model": "m", "messages": [], "max_completion_tokens": 10**6}), 4096) > 4096
    ex = exchange({"model": "m", "messages": []})
    ex.token_estimate = 7
    assert reservation(ex, 4096) == 7 + 4096
    ex = exchange({"model": "m", "messages": [], "max_tokens": "lots"})
    assert reservation(ex, 50) == len(ex.body) // 4 + 50  # the endpoint answers 400 for it
    ex = exchange({"model": "text-embedding-3-small", "input": "hello"})
    ex.operation = "embeddings"
    assert reservation(ex, 4096) == len(ex.body) // 4  # embeddings produce no output tokens
