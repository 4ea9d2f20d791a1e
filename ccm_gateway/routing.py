"""Model routes: the name a client asks for → weighted deployments of configured providers.

A name resolves, in order, to a configured route (alias), to ``provider/model`` when
``routing.allow_direct`` is on, or — with ``routing.detect_provider`` — to the first configured
provider whose kind recognises the name (``claude-…`` → anthropic, ``gpt-…`` → openai).

A request's attempts follow an ``Attempts`` schedule: the route's members (deployment × credential)
chosen by weight among those whose breaker and cooldown let them serve, a retry on another member
(another deployment first), backoff when staying on the same deployment, a retry budget, one overall
deadline, then the fallback routes.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from .config import Config, RouteTimeouts, Timeouts
from .dialects import Dialect
from .errors import InvalidRequest, ModelNotFound
from .providers.kinds import EMBEDDINGS
from .providers.upstream import Upstream
from .resilience.backoff import backoff
from .resilience.breaker import PROBE
from .resilience.health import Member
from .resilience.outcome import Outcome, retryable

if TYPE_CHECKING:
    from .resilience.health import Health
    from .resilience.policy import RetryPolicy


@dataclass(frozen=True, slots=True)
class Deployment:
    """One (provider, upstream model) pair; the credential is picked per request by weight."""

    upstream: Upstream
    model: str
    weight: int = 1
    timeout: Timeouts | None = None  # the provider's timeouts with the route's overrides; None: the provider's
    label: str = field(init=False, compare=False, repr=False)  # "provider/model", made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.upstream.name}/{self.model}")

    @property
    def timeouts(self) -> Timeouts:
        return self.timeout or self.upstream.timeout


@dataclass(frozen=True, slots=True)
class Candidate:
    """One member of a route: a deployment with one of its provider's credentials (``key_index``)."""

    deployment: Deployment
    key_index: int
    member: Member
    weight: int  # the credential's weight within its deployment

    @property
    def key(self):  # the Secret, or None for a provider without keys
        keys = self.deployment.upstream.keys
        return keys[self.key_index] if keys else None


def candidates_of(deployment: Deployment) -> list[Candidate]:
    up = deployment.upstream
    weights = [k.weight for k in up.config.api_keys] or [1]
    return [Candidate(deployment, i, Member(up.name, up.base_url, deployment.model, i), w)
            for i, w in enumerate(weights)]


def with_overrides(base: Timeouts, route: RouteTimeouts | None) -> Timeouts | None:
    """A route's ``timeout`` table over its provider's timeouts (None when the route sets none)."""
    if route is None:
        return None
    changes = {k: v for k, v in msgspec.structs.asdict(route).items() if v is not None}
    return msgspec.structs.replace(base, **changes) if changes else None


ADHOC_ROUTES = 4096  # direct/detected routes kept; the cache starts over when full


class Route:
    __slots__ = ("_cum", "candidates", "chain", "content_policy_fallbacks", "context_window",
                 "context_window_fallbacks", "deployments", "fallbacks", "max_output_tokens", "name")

    def __init__(self, name: str, deployments: list[Deployment], fallbacks: list[str] | None = None,
                 max_output_tokens: int | None = None, context_window: int | None = None, *,
                 context_window_fallbacks: list[str] | None = None,
                 content_policy_fallbacks: list[str] | None = None) -> None:
        self.name = name
        self.context_window = context_window  # from the config; else the token stage's known table
        self.deployments = deployments
        self.fallbacks = fallbacks or []
        self.context_window_fallbacks = context_window_fallbacks or []
        self.content_policy_fallbacks = content_policy_fallbacks or []
        self.max_output_tokens = max_output_tokens  # clamp for translated requests (P17)
        self._cum = list(itertools.accumulate(d.weight for d in deployments))
        self.candidates = [c for d in deployments for c in candidates_of(d)]
        self.chain: list[Route] | None = None  # Router.chain's answer, once computed

    @property
    def members(self) -> list[Member]:
        return [c.member for c in self.candidates]

    @property
    def available(self) -> bool:
        return any(d.upstream.available for d in self.deployments)

    def check(self, dialect: Dialect | str) -> None:
        """Raise what ``pick`` would when no deployment can serve ``dialect`` at all (health aside)."""
        if not any(d.upstream.available and _serves(d.upstream, dialect) for d in self.deployments):
            raise self._unusable(dialect)

    def pick(self, dialect: Dialect) -> Deployment:
        """A deployment chosen by weight among those that can serve this request now: in the caller's
        dialect (pass-through) or in one the gateway translates to."""
        if len(self.deployments) == 1:
            choice = self.deployments[0]
        else:
            choice = self.deployments[bisect.bisect_right(self._cum, random.random() * self._cum[-1])]
        if not (choice.upstream.available and _serves(choice.upstream, dialect)):
            usable = [d for d in self.deployments if d.upstream.available and _serves(d.upstream, dialect)]
            if not usable:
                raise self._unusable(dialect)
            choice = random.choices(usable, weights=[d.weight for d in usable])[0]
        return choice

    def _unusable(self, dialect: Dialect | str) -> Exception:
        if not self.available:
            names = ", ".join(sorted({d.upstream.name for d in self.deployments}))
            return ModelNotFound(
                f"model '{self.name}' is not available: provider {names} has no API key configured"
            )
        if dialect == EMBEDDINGS:
            names = ", ".join(sorted({f"{d.upstream.name} (kind {d.upstream.kind.name})" for d in self.deployments}))
            return InvalidRequest(
                f"model '{self.name}' does not support embeddings: provider {names} has no embeddings endpoint",
                param="model")
        return InvalidRequest(
            f"model '{self.name}' is served by a provider whose protocol the gateway cannot translate "
            f"{dialect.value} requests to",
            param="model",
        )


# Upstream dialects the translated path (translate.py) has codecs for.
TRANSLATABLE = frozenset({Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES, Dialect.GEMINI})


def _serves(upstream: Upstream, op: Dialect | str) -> bool:
    """Can this provider take ``op``: a chat request of a dialect (spoken or translated), or "embeddings"."""
    if op == EMBEDDINGS:
        return upstream.kind.supports(EMBEDDINGS)
    return upstream.speaks(op) or not TRANSLATABLE.isdisjoint(upstream.kind.dialects)


class Router:
    def __init__(self, config: Config, upstreams: dict[str, Upstream]) -> None:
        self.upstreams = upstreams
        self.allow_direct = config.routing.allow_direct
        self.detect = config.routing.detect_provider
        self.default_fallbacks = list(config.routing.default_fallbacks)
        self._adhoc: dict[str, Route] = {}  # direct and detected names already resolved
        self.routes: dict[str, Route] = {
            m.name: Route(
                m.name,
                [Deployment(upstreams[t.provider], t.model, t.weight,
                            with_overrides(upstreams[t.provider].timeout, m.timeout)) for t in m.targets],
                list(m.fallbacks),
                m.max_output_tokens,
                m.context_window,
                context_window_fallbacks=list(m.context_window_fallbacks),
                content_policy_fallbacks=list(m.content_policy_fallbacks),
            )
            for m in config.models
        }

    def chain(self, route: Route) -> list[Route]:
        """The route, then its fallbacks, then the default fallbacks (each route once; kept on the route,
        which never changes). Callers must not modify the list."""
        if route.chain is not None:
            return route.chain
        out = [route]
        for name in (*route.fallbacks, *self.default_fallbacks):
            fallback = self.routes.get(name)
            if fallback is not None and fallback not in out:
                out.append(fallback)
        route.chain = out
        return out

    def resolve(self, name: str) -> Route:
        route = self.routes.get(name) or self._adhoc.get(name)
        if route is not None:
            return route
        route = self._adhoc_route(name)
        if len(self._adhoc) >= ADHOC_ROUTES:  # bounded: clients choose these names
            self._adhoc.clear()
        self._adhoc[name] = route
        return route

    def _adhoc_route(self, name: str) -> Route:
        """A one-deployment route for ``provider/model`` or a detected name (cached by resolve)."""
        if self.allow_direct and "/" in name:
            provider, _, model = name.partition("/")
            upstream = self.upstreams.get(provider)
            if upstream is not None and model:
                return Route(name, [Deployment(upstream, model)])
        if self.detect:
            candidates = [u for u in self.upstreams.values() if name.startswith(u.kind.detect)]
            if candidates:
                ready = [u for u in candidates if u.available]
                return Route(name, [Deployment((ready or candidates)[0], name)])
        raise ModelNotFound(f"The model '{name}' does not exist or is not configured on this gateway", param="model")

    def listed(self) -> list[tuple[str, str]]:
        """(model name, owning provider) for every route that can be served now."""
        return [(r.name, r.deployments[0].upstream.name) for r in self.routes.values() if r.available]


def serves(candidate: Candidate, dialect: Dialect | str) -> bool:
    up = candidate.deployment.upstream
    return up.available and _serves(up, dialect)


def _weighted(items: list[Candidate], weights: list[float]) -> Candidate:
    return items[0] if len(items) == 1 else random.choices(items, weights=weights)[0]


def _rendezvous(items: list[Candidate], weights: list[float], affinity: str,
                name: Callable[[Candidate], str]) -> Candidate:
    """Weighted rendezvous hashing: the same affinity key picks the same item while it is available,
    and losing one item moves only the sessions that were on it."""
    best, best_score = items[0], -math.inf
    for item, weight in zip(items, weights, strict=True):
        digest = hashlib.blake2b(f"{affinity}\x00{name(item)}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1)
        score = -weight / math.log(u)
        if score > best_score:
            best, best_score = item, score
    return best


def choose(pool: list[Candidate], affinity: str | None) -> Candidate:
    """A deployment by its weight, then one of its credentials by theirs (rendezvous with affinity)."""
    if len(pool) == 1:
        return pool[0]
    by_deployment: dict[str, list[Candidate]] = {}
    for c in pool:
        by_deployment.setdefault(c.deployment.label, []).append(c)
    groups = list(by_deployment.values())
    heads = [g[0] for g in groups]
    weights = [float(h.deployment.weight) for h in heads]
    if affinity:
        head = _rendezvous(heads, weights, affinity, lambda c: c.deployment.label)
    else:
        head = _weighted(heads, weights)
    group = by_deployment[head.deployment.label]
    key_weights = [float(c.weight) for c in group]
    if affinity:
        return _rendezvous(group, key_weights, affinity, lambda c: c.member.id)
    return _weighted(group, key_weights)


def blocked_for(chain: list[Route], dialect: Dialect | str, health: Health) -> float | None:
    """None when some member of the routes can serve now; else seconds until the soonest may again."""
    members: list[Member] = []
    for route in chain:
        for c in route.candidates:
            if serves(c, dialect):
                if health.available(c.member):
                    return None  # the common case: the first member can serve
                members.append(c.member)
    if not members:
        return None
    return health.reopen_in(members) or 0.0


# Error-body markers of a content-policy refusal (OpenAI and Azure codes).
_CONTENT_POLICY = (b"content_policy_violation", b"content_filter", b"responsible_ai_policy")


class Failure:
    """An attempt that failed before its commit point: what to relay if it stays the last one."""

    __slots__ = ("body", "error", "headers", "outcome", "retry_after", "source", "status")

    def __init__(self, outcome: Outcome, *, status: int | None = None, headers: Any = None, body: bytes = b"",
                 error: Exception | None = None, source: Any = None, retry_after: float | None = None) -> None:
        self.outcome = outcome
        self.status = status  # None: no response (the transport's ``error`` says why)
        self.headers = headers or {}
        self.body = body
        self.error = error  # a GatewayError of the transport (timeout, connection refused, early end)
        self.source = source  # the attempt that relays an upstream error response (``relay(send, failure)``)
        self.retry_after = retry_after


class Attempts:
    """The attempt schedule of one request. ``next(last)`` gives the member to try, after waiting
    for a backoff or a Retry-After when that is the better move, or None when the request must end
    with ``last``'s error. Without a Health (the breaker stage is off) there is exactly one attempt."""

    __slots__ = ("affinity", "chain", "count", "deadline", "dialect", "excluded", "health", "in_route", "last",
                 "policy", "position", "probe", "resolve", "tried", "tried_deployments")

    def __init__(self, chain: list[Route], dialect: Dialect | str, health: Health | None, policy: RetryPolicy | None,
                 affinity: str | None = None, start_at: int = 0,
                 resolve: Callable[[str], Route | None] | None = None) -> None:
        self.chain = chain
        self.resolve = resolve  # configured route by name (content-policy fallbacks)
        self.dialect = dialect
        self.health = health
        self.policy = policy
        self.affinity = affinity
        self.position = start_at  # index in chain of the route being tried
        self.count = 0
        self.in_route = 0
        self.tried: set[str] = set()
        self.tried_deployments: set[str] = set()
        self.excluded: set[str] = set()  # busy half-open members, rate-limited and refused credentials
        self.last: Candidate | None = None
        self.probe = False  # the attempt in flight holds a half-open probe slot
        self.deadline = math.inf if policy is None else asyncio.get_running_loop().time() + policy.request_deadline

    @property
    def route(self) -> Route:
        return self.chain[self.position]

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def next(self, last: Failure | None) -> Candidate | None:
        if self.count == 0:
            return self._take(self._first())
        health, policy = self.health, self.policy
        if health is None or policy is None or last is None:
            return None
        if last.outcome is Outcome.CLIENT_ERROR and self._content_policy(last):
            return self._take(self._first()) if health.retry_budget().withdraw() else None
        if not retryable(last.outcome):
            return None
        if self.remaining() <= 0 or not health.retry_budget().withdraw():
            return None
        while self.position < len(self.chain):
            if self.in_route < policy.max_attempts:
                choice = self._retry_pick()
                waited = False
                if (choice is None and last.retry_after is not None and self.in_route > 0 and self.last is not None
                        and not any(self._usable(r) for r in self.chain[self.position + 1:])):
                    # Nothing else to try here or in the fallbacks: honour the Retry-After when it fits the
                    # deadline, then try again; otherwise end with the upstream's answer.
                    wait = max(last.retry_after, health.reopen_in(self.route.members) or 0.0)
                    if wait < min(self.remaining(), health.config.cooldown.max):
                        await asyncio.sleep(wait)
                        self.excluded.discard(self.last.member.id)
                        choice, waited = self._retry_pick(), True
                if choice is not None:
                    if not waited and choice.deployment.label in self.tried_deployments:  # staying: back off
                        pause = min(backoff(self.count, policy.backoff_base, policy.backoff_max, random.random),
                                    max(self.remaining(), 0.0))
                        if pause > 0:
                            await asyncio.sleep(pause)
                    return self._take(choice)
            self.position += 1
            self.in_route = 0
        return None

    def _content_policy(self, last: Failure) -> bool:
        """The upstream refused the content: move to the route's content-policy fallbacks (once)."""
        names = self.route.content_policy_fallbacks
        if not names or self.resolve is None or not any(m in last.body[:4096] for m in _CONTENT_POLICY):
            return False
        routes = [r for n in names if (r := self.resolve(n)) is not None and r not in self.chain]
        if not routes:
            return False
        self.chain = [*self.chain[:self.position + 1], *routes]
        self.position += 1
        self.in_route = 0
        return True

    def _usable(self, route: Route) -> list[Candidate]:
        health, dialect, excluded = self.health, self.dialect, self.excluded
        return [c for c in route.candidates if serves(c, dialect) and c.member.id not in excluded
                and (health is None or health.available(c.member))]

    def _first(self) -> Candidate | None:
        for i in range(self.position, len(self.chain)):
            pool = self._usable(self.chain[i])
            if pool:
                self.position = i
                return choose(pool, self.affinity)
        return None

    def _retry_pick(self) -> Candidate | None:
        pool = self._usable(self.route)
        if not pool:
            return None
        fresh = [c for c in pool if c.deployment.label not in self.tried_deployments]
        if not fresh:
            fresh = [c for c in pool if c.member.id not in self.tried]
        return choose(fresh or pool, self.affinity)

    def _take(self, choice: Candidate | None) -> Candidate | None:
        if choice is None:
            return None
        admitted = self.health.acquire(choice.member) if self.health is not None else True
        if not admitted:
            self.excluded.add(choice.member.id)  # its half-open probe slot is taken: another member
            pool = self._usable(self.route)
            return self._take(choose(pool, self.affinity)) if pool else None
        self.probe = admitted is PROBE  # this attempt holds the member's half-open probe slot
        self.count += 1
        self.in_route += 1
        self.last = choice
        self.tried.add(choice.member.id)
        self.tried_deployments.add(choice.deployment.label)
        return choice

    def record(self, choice: Candidate, outcome: Outcome, retry_after: float | None = None) -> None:
        health = self.health
        if health is None:
            return
        probe, self.probe = self.probe, False  # only the probe's own answer settles a half-open breaker
        if outcome is Outcome.DEAD_KEY or outcome is Outcome.RATE_LIMITED:
            self.excluded.add(choice.member.id)  # not again in this request (unless its Retry-After is waited out)
            if not self._serving_left():
                # Nothing else in its route or its fallbacks can serve: ejecting or cooling it would only
                # turn the upstream's own 401/403/429 (with its message and reset headers) into 503s. It
                # stays in — but a half-open probe slot it held is freed.
                health.record(choice.member, Outcome.CANCELLED, probe=probe)
                return
        health.record(choice.member, outcome, retry_after, probe=probe)

    def _serving_left(self) -> bool:
        """Can any member of the current route or of the fallbacks after it serve now?"""
        return any(self._usable(route) for route in self.chain[self.position:])

    def reopen_in(self) -> float | None:
        """Seconds until the soonest member of the route or its fallbacks may serve again."""
        if self.health is None:
            return None
        return self.health.reopen_in([m for r in self.chain for m in r.members])
