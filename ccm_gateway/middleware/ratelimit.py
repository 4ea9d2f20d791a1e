"""Requests per minute, tokens per minute and concurrent requests, per gateway key and per client IP.

A request is admitted when every meter that applies has room (GCRA with burst, ``state/base.py``),
all decided in one backend call. Tokens are reserved up front — the prompt estimate plus
min(max_tokens, cap) — and settled to the real usage when the response ends, also when the client
hung up: the difference is refunded or becomes debt. A concurrency slot expires with the request
deadline, so a crashed worker cannot hold it. Rejections are 429s in the caller's protocol with
``Retry-After``; every answer carries OpenAI-style ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
from typing import Any

from ..config import LimitsConfig
from ..dialects.head import integer
from ..errors import InvalidRequest, RateLimited
from ..exchange import Exchange, exchange_of
from ..state import Admission, MemoryBackend, Rate, Slots, StateBackend
from .types import ASGIApp, Receive, Scope, Send

_PREFIX = b"x-ratelimit-"
_MAX_HOPS = 16  # X-Forwarded-For entries looked at, from the right
_holders = itertools.count()
_INSTANCE = os.urandom(6).hex()  # slot holders must be unique across instances sharing Redis


class _Meters:
    """The keys and rates of one subject (a gateway key or a client IP), built once per subject, so a
    request only adds its token cost."""

    __slots__ = ("conc_key", "concurrency", "requests", "rpm", "rpm_key", "tpm", "tpm_burst", "tpm_key",
                 "tpm_per_second")

    def __init__(self, tag: str, rpm: int | None, tpm: int | None, concurrency: int | None, burst: float) -> None:
        base = f"ccm:{{{tag}}}:"  # the hash tag keeps one subject's keys in one Redis Cluster slot
        self.rpm, self.tpm, self.concurrency = rpm, tpm, concurrency
        self.rpm_key, self.tpm_key, self.conc_key = base + "rpm", base + "tpm", base + "conc"
        self.requests = Rate(self.rpm_key, rpm / 60.0, max(rpm * burst, 1.0), 1.0) if rpm else None
        self.tpm_per_second = tpm / 60.0 if tpm else 0.0
        self.tpm_burst = max(tpm * burst, 1.0) if tpm else 0.0


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: LimitsConfig, backend: StateBackend, ttl: float = 605.0) -> None:
        self.app = app
        self.limits = limits
        self.backend = backend
        # The in-process backend is asked without awaiting: admit and settle are plain calls, no coroutines.
        self.local = backend if isinstance(backend, MemoryBackend) and _plain(type(backend)) else None
        self.ttl = ttl  # seconds a concurrency slot lives if never released: the request deadline
        self.burst = limits.burst
        self.cap = limits.max_tokens_cap
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in limits.trusted_proxies]
        self.by_ip = bool(limits.ip_rpm or limits.ip_tpm or limits.ip_concurrency)
        self.keyed: dict[str, _Meters | None] = {}
        self.ips: dict[str, _Meters] = {}  # saves building keys per request; cleared when it reaches IP_CACHE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        subjects = self._subjects(scope, ex) if ex is not None else ()
        if ex is None or not subjects:
            await self.app(scope, receive, send)
            return
        reserved = reservation(ex, self.cap) if ex.body else 0
        rates, slots, kinds = self._plan(subjects, reserved)
        local = self.local
        if local is not None:
            admission = local.admit_now(rates, slots, self.ttl)
        else:
            admission = await self.backend.admit(rates, slots, self.ttl)
        if not admission.allowed:
            headers = {k.decode(): v.decode() for k, v in limit_headers(kinds, admission)}
            raise RateLimited(_message(admission.retry_after), headers=_retry_headers(admission.retry_after, headers))
        ours = limit_headers(kinds, admission)

        def add_limits(_: Exchange, message: dict[str, Any]) -> None:  # ours replace an upstream's
            message["headers"] = [h for h in message.get("headers", ()) if not h[0].startswith(_PREFIX)] + ours

        ex.on_response_start(add_limits)
        try:
            await self.app(scope, receive, send)
        finally:
            adjust = settlement(ex, rates, kinds, reserved)
            if adjust or slots:
                if local is not None and admission.source == local.name:
                    local.finish_now(adjust, slots)
                else:
                    await self.backend.finish(adjust, slots, admission.source)

    def _subjects(self, scope: Scope, ex: Exchange) -> list[_Meters]:
        subjects: list[_Meters] = []
        principal = ex.principal
        if principal is not None:
            meters = self.keyed.get(principal.name, False)
            if meters is False:
                meters = self.keyed[principal.name] = self._for_key(principal)
            if meters is not None:
                subjects.append(meters)
        if self.by_ip:
            ip = client_ip(scope, self.trusted)
            meters = self.ips.get(ip)
            if meters is None:
                if len(self.ips) >= IP_CACHE:
                    self.ips.clear()
                lim = self.limits
                meters = self.ips[ip] = _Meters("ip:" + ip, lim.ip_rpm, lim.ip_tpm, lim.ip_concurrency, self.burst)
            subjects.append(meters)
        return subjects

    def _for_key(self, principal: Any) -> _Meters | None:
        lim = self.limits
        rpm, tpm = principal.rpm or lim.rpm, principal.tpm or lim.tpm
        concurrency = principal.concurrency or lim.concurrency
        if not (rpm or tpm or concurrency):
            return None
        return _Meters("key:" + principal.name, rpm, tpm, concurrency, self.burst)

    @staticmethod
    def _plan(subjects: list[_Meters], reserved: int) -> tuple[list[Rate], list[Slots], list[tuple[str, int]]]:
        rates: list[Rate] = []
        kinds: list[tuple[str, int]] = []  # ("requests" | "tokens", limit per minute), parallel to rates
        slots: list[Slots] = []
        for m in subjects:
            if m.requests is not None:
                rates.append(m.requests)
                kinds.append(("requests", m.rpm or 0))  # rpm is set whenever requests is
            if m.tpm and reserved:
                rates.append(Rate(m.tpm_key, m.tpm_per_second, m.tpm_burst, float(reserved)))
                kinds.append(("tokens", m.tpm))
            if m.concurrency:
                slots.append(Slots(m.conc_key, m.concurrency, f"{_INSTANCE}:{next(_holders)}"))
        return rates, slots, kinds


IP_CACHE = 10_000


def _plain(cls: type) -> bool:
    """True when ``cls`` keeps MemoryBackend's admit and finish (a subclass may hook the async ones)."""
    return cls.admit is MemoryBackend.admit and cls.finish is MemoryBackend.finish


def reservation(ex: Exchange, cap: int) -> int:
    """Tokens to reserve: the token-count stage's estimate when there is one, else len(body) // 4
    (about 4 bytes of JSON per token), plus the output the request may produce, capped."""
    prompt = ex.token_estimate if ex.token_estimate is not None else len(ex.body) // 4
    if getattr(ex, "operation", "chat") == "embeddings":
        return prompt  # no output tokens
    output = cap
    try:
        fields = ex.head().fields
        asked = integer(fields, "max_tokens", optional=True)
        if asked is None:
            asked = integer(fields, "max_completion_tokens", optional=True)
    except InvalidRequest:  # the endpoint answers 400 for it; the request still counts
        asked = None
    if asked is not None and 0 < asked < cap:
        output = asked
    return prompt + output


def settlement(ex: Exchange, rates: list[Rate], kinds: list[tuple[str, int]], reserved: int) -> list[Rate]:
    """Token Rates carrying (actual − reserved): the usage the provider reported; nothing when the
    upstream was never called; when it was but reported nothing (cut off), the reservation stands."""
    if ex.usage.reported:
        actual = ex.usage.prompt_total + ex.usage.output
    elif ex.attempts == 0:
        actual = 0
    else:
        return []
    delta = float(actual - reserved)
    if delta == 0:
        return []
    return [Rate(r.key, r.per_second, r.burst, delta) for r, (kind, _) in zip(rates, kinds, strict=True)
            if kind == "tokens"]


def client_ip(scope: Scope, trusted: list[Any]) -> str:
    """The peer address, or — when the peer is a trusted proxy — the rightmost X-Forwarded-For entry
    that is not itself a trusted proxy. IPv6 clients count per /64 (one host's usual allocation)."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if trusted and _is_trusted(peer, trusted):
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops = value.decode("latin-1").split(",")[-_MAX_HOPS:]
                for hop in reversed(hops):
                    hop = hop.strip()
                    if not _is_trusted(hop, trusted):
                        if _valid(hop):
                            peer = hop
                        break
                break
    if ":" in peer:
        try:
            return str(ipaddress.ip_network(peer + "/64", strict=False).network_address) + "/64"
        except ValueError:
            return peer
    return peer


def _is_trusted(address: str, trusted: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


_HEADER_NAMES = {kind: (f"x-ratelimit-limit-{kind}".encode(), f"x-ratelimit-remaining-{kind}".encode(),
                        f"x-ratelimit-reset-{kind}".encode()) for kind in ("requests", "tokens")}


def limit_headers(kinds: list[tuple[str, int]], admission: Admission) -> list[tuple[bytes, bytes]]:
    """OpenAI-style headers for the tightest requests meter and the tightest tokens meter."""
    tightest: dict[str, tuple[float, int, float]] = {}
    for (kind, limit), (remaining, reset) in zip(kinds, admission.meters, strict=True):
        known = tightest.get(kind)
        if known is None or remaining < known[0]:
            tightest[kind] = (remaining, limit, reset)
    headers: list[tuple[bytes, bytes]] = []
    for kind, (remaining, limit, reset) in tightest.items():
        limit_name, remaining_name, reset_name = _HEADER_NAMES[kind]
        headers += ((limit_name, b"%d" % limit), (remaining_name, b"%d" % remaining),
                    (reset_name, duration(reset).encode()))
    return headers


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``"120ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


def _retry_headers(retry_after: float, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "retry-after": str(max(1, math.ceil(retry_after))),
            "retry-after-ms": str(math.ceil(retry_after * 1000)), "x-should-retry": "true"}


def _message(retry_after: float) -> str:
    return (f"rate limit exceeded (requests, tokens or concurrent requests); "
            f"retry after {max(1, math.ceil(retry_after))} s")
