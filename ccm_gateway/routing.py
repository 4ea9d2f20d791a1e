"""Model routes: the name a client asks for → weighted deployments of configured providers.

A name resolves, in order, to a configured route (alias), to ``provider/model`` when
``routing.allow_direct`` is on, or — with ``routing.detect_provider`` — to the first configured
provider whose kind recognises the name (``claude-…`` → anthropic, ``gpt-…`` → openai).
Retries and fallbacks across deployments belong to the resilience issue.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from .config import Config
from .dialects import Dialect
from .errors import InvalidRequest, ModelNotFound
from .providers.upstream import Upstream


@dataclass(frozen=True, slots=True)
class Deployment:
    """One (provider, upstream model) pair; the credential is picked per request by weight."""

    upstream: Upstream
    model: str
    weight: int = 1

    @property
    def label(self) -> str:
        return f"{self.upstream.name}/{self.model}"


ADHOC_ROUTES = 4096  # direct/detected routes kept; the cache starts over when full


class Route:
    __slots__ = ("_cum", "context_window", "deployments", "fallbacks", "max_output_tokens", "name")

    def __init__(self, name: str, deployments: list[Deployment], fallbacks: list[str] | None = None,
                 max_output_tokens: int | None = None, context_window: int | None = None) -> None:
        self.name = name
        self.context_window = context_window  # from the config; else the token stage's known table
        self.deployments = deployments
        self.fallbacks = fallbacks or []
        self.max_output_tokens = max_output_tokens  # clamp for translated requests (P17)
        self._cum = list(itertools.accumulate(d.weight for d in deployments))

    @property
    def available(self) -> bool:
        return any(d.upstream.available for d in self.deployments)

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

    def _unusable(self, dialect: Dialect) -> Exception:
        if not self.available:
            names = ", ".join(sorted({d.upstream.name for d in self.deployments}))
            return ModelNotFound(
                f"model '{self.name}' is not available: provider {names} has no API key configured"
            )
        return InvalidRequest(
            f"model '{self.name}' is served by a provider whose protocol the gateway cannot translate "
            f"{dialect.value} requests to",
            param="model",
        )


# Upstream dialects the translated path (translate.py) has codecs for.
TRANSLATABLE = frozenset({Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES, Dialect.GEMINI})


def _serves(upstream: Upstream, dialect: Dialect) -> bool:
    return upstream.speaks(dialect) or not TRANSLATABLE.isdisjoint(upstream.kind.dialects)


class Router:
    def __init__(self, config: Config, upstreams: dict[str, Upstream]) -> None:
        self.upstreams = upstreams
        self.allow_direct = config.routing.allow_direct
        self.detect = config.routing.detect_provider
        self._adhoc: dict[str, Route] = {}  # direct and detected names already resolved
        self.routes: dict[str, Route] = {
            m.name: Route(
                m.name,
                [Deployment(upstreams[t.provider], t.model, t.weight) for t in m.targets],
                list(m.fallbacks),
                m.max_output_tokens,
                m.context_window,
            )
            for m in config.models
        }

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
