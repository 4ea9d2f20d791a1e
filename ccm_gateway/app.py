"""``create_app(config)``: the routes, the middleware chain and the lifespan that owns the sessions.

Mounting inside another app (``Mount("/llm", app=create_app(cfg))``) works as is; Starlette does
not run a mounted app's lifespan, so the gateway opens its upstream sessions on first use, and the
host app can close them from its own lifespan with ``gateway_lifespan(app)`` (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .admin_api import AdminEndpoint
from .billing.meter import Meter
from .billing.pricing import Price
from .config import DEFAULT_CONFIG_PATH, Config, load_config
from .count_tokens import CountTokensEndpoint
from .dialects import Dialect
from .embeddings import EmbeddingsEndpoint
from .errors import MethodNotAllowed, NotFound
from .exchange import exchange_of
from .middleware import AuthMiddleware, ExchangeMiddleware, RateLimitMiddleware, RequestIdMiddleware
from .middleware.auth import key_table
from .middleware.billing import BillingMiddleware
from .middleware.breaker import BreakerMiddleware
from .middleware.endpoints import EndpointDispatch
from .middleware.observe import ObserveMiddleware, refusal_recorder
from .middleware.tokens import TokenCountMiddleware
from .observability.metrics import Metrics, multiprocess_dir
from .observability.redaction import config_secrets, register_secrets
from .observability.scrape import metrics_endpoint
from .providers.mock import MockProvider
from .providers.upstream import Upstream
from .proxy import ChatEndpoint
from .request_guard import RequestGuard, RequestGuardMiddleware
from .resilience.health import Health
from .routing import Router, serves
from .shutdown import Drain
from .state import backend_from_config
from .tokens import TokenCounter, get_encoding
from .usage_api import UsageEndpoint

log = logging.getLogger("ccm_gateway")
_encode = msgspec.json.encode
_API_PATHS = {"/v1/chat/completions": "POST", "/v1/messages": "POST", "/v1/models": "GET", "/v1/embeddings": "POST"}


class Gateway:
    """What the app holds for its life: the config, one Upstream per provider, the router."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.upstreams: dict[str, Upstream] = {
            name: (MockProvider if p.kind == "mock" else Upstream)(name, p) for name, p in config.providers.items()
        }
        self.router = Router(config, self.upstreams)
        for upstream in self.upstreams.values():
            upstream.max_response_bytes = config.requests.max_response_bytes
        self.drain = Drain()  # in-flight requests, ended with an error when the grace period runs out
        self.state = backend_from_config(config.state)  # rate-limit counters: memory or Redis
        self.counter = TokenCounter(multipliers={**TokenCounter().multipliers, **config.tokens.multipliers},
                                    cache_chars=config.tokens.cache_chars, cache_ttl=config.tokens.cache_ttl,
                                    engine=config.tokens.engine)
        self.meter = Meter(config)  # billing: prices, budgets, the usage ledger
        self.meter.route_price = _route_price(self.router, self.meter)
        self.health = Health(config.resilience)  # breakers, cooldowns, the retry budget (one per process)
        for route in self.router.routes.values():
            self.health.register_group(route.name, route.members)
        self.sharer: Any = None  # shares breaker state through Redis when [state] backend = "redis"
        self.started = False
        self.created = int(time.time())
        self.metrics = Metrics({m.name for m in config.models}) if config.metrics.enabled else None

    async def start(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start()
        if self.config.tokens.count_prompts:  # load the encoding now, not during the first request
            await asyncio.to_thread(get_encoding, "o200k_base", self.config.tokens.engine)
        await self.meter.start()  # the usage ledger: recovery of a killed process's open requests, budgets
        await self._share_health()
        self.started = True
        for upstream in self.upstreams.values():
            if not upstream.available:
                log.info("provider %s has no API key configured; its models are unavailable", upstream.name)

    async def _share_health(self) -> None:
        """With Redis state, open breakers are shared with the other instances (the state backend's client)."""
        if self.sharer is not None or self.config.state.backend != "redis" or not self.config.resilience.enabled:
            return
        from .resilience.shared import HealthSharer

        client = getattr(getattr(self.state, "primary", None), "client", None)
        if client is None:
            return
        self.sharer = HealthSharer(self.health, client, "ccm:breaker:", self.config.resilience.share_interval)
        await self.sharer.start()

    async def close(self) -> None:
        self.started = False
        self.drain.cancel_timer()
        if self.sharer is not None:
            sharer, self.sharer = self.sharer, None
            await sharer.close()
        for upstream in self.upstreams.values():
            await upstream.close()
        await self.state.close()
        await self.meter.close()  # writes every queued ledger record
        if multiprocess_dir() and self.metrics is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # its live gauges stop counting

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.close()


def create_app(
    config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """Build the gateway ASGI app from a loaded Config, a mapping, a TOML path, or (None) the
    embedded default config that ``make run`` uses.

    ``middleware`` adds your own stages after the built-in ones (they see a filled Exchange).
    """
    if not isinstance(config, Config):
        config = load_config(DEFAULT_CONFIG_PATH if config is None else config)
    register_secrets(config_secrets(config))  # masked in every log record from now on
    gateway = Gateway(config)
    resilience = config.resilience if config.resilience.enabled else None
    chat = ChatEndpoint(gateway.router, resilience)
    counting = CountTokensEndpoint(gateway.router, gateway.counter)
    posts = {  # dispatched by EndpointDispatch; also routes, for the router's 405s and the route list
        "/v1/chat/completions": chat,
        "/v1/messages": chat,
        "/v1/messages/count_tokens": counting,
        "/v1/chat/completions/count_tokens": counting,
        "/v1/embeddings": EmbeddingsEndpoint(gateway.router, resilience),
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in posts.items()),
        Route("/v1/models", _models(gateway), methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/ready", _ready(gateway), methods=["GET"]),
        *_metrics_routes(config, gateway),
        Route("/v1/{rest:path}", _api_fallback, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    middleware = [
        Middleware(ExchangeMiddleware, max_body_bytes=config.server.max_body_bytes, drain=gateway.drain,
                   read_timeout=config.server.read_timeout,
                   refused=refusal_recorder(gateway.metrics, config.logging.access)),
        Middleware(RequestIdMiddleware),
        Middleware(ObserveMiddleware, metrics=gateway.metrics, tracing=_tracing(config), access=config.logging.access),
        *_admin_stages(config, gateway),
        *_guard_stages(config, gateway),
        *([Middleware(BreakerMiddleware, health=gateway.health, router=gateway.router)]
          if config.resilience.enabled else []),
        *([Middleware(BillingMiddleware, meter=gateway.meter)] if config.billing.enabled else []),
        *middleware,
        Middleware(EndpointDispatch, endpoints=posts),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app


def _guard_stages(config: Config, gateway: Gateway) -> list[Middleware]:
    """Auth (on when ``[auth] enabled``, or when unset and ``[[keys]]`` exist) and rate limits (when
    any limit is configured)."""
    stages: list[Middleware] = []
    auth = config.auth.enabled if config.auth.enabled is not None else bool(config.keys)
    if auth:
        stages.append(Middleware(AuthMiddleware, keys=key_table(config.keys)))  # hashed now, plain keys dropped
    else:
        log.warning("auth is off: anyone who can reach this gateway's port can use every configured provider%s",
                    " ([[keys]] are configured but auth.enabled = false)" if config.keys else "")
    # The body checks cost time in proportion to the body: only for callers that passed auth.
    stages.append(Middleware(RequestGuardMiddleware, guard=RequestGuard(config.requests)))
    if config.tokens.count_prompts:  # before rate limits: TPM reserves the estimate
        stages.append(Middleware(TokenCountMiddleware, counter=gateway.counter, router=gateway.router))
    lim = config.limits
    keyed = auth and any(k.rpm or k.tpm or k.concurrency for k in config.keys)
    if keyed or any((lim.rpm, lim.tpm, lim.concurrency, lim.ip_rpm, lim.ip_tpm, lim.ip_concurrency)):
        # A slot outlives the longest request: all attempts (request_deadline) or a capped stream. A stream
        # without stream_deadline can outlive it; its slot is still released when it ends.
        longest = [config.resilience.retry.request_deadline if config.resilience.enabled else 0.0]
        longest += [max(p.timeout.deadline, p.timeout.stream_deadline or 0.0) for p in config.providers.values()]
        ttl = max(longest, default=600.0) + 5.0
        stages.append(Middleware(RateLimitMiddleware, limits=lim, backend=gateway.state, ttl=ttl))
    return stages


def _admin_stages(config: Config, gateway: Gateway) -> list[Middleware]:
    """``GET /v1/usage`` answers before auth (the admin key is not a gateway key); without an admin key
    it is not served at all."""
    key = config.admin.key.reveal() if config.admin.key else None
    stages = [Middleware(AdminEndpoint, config=config, admin_key=key, port=config.admin.port)] \
        if key or config.admin.port is not None else []  # config view; admin paths only on [admin] port
    if not key:
        return stages
    return [*stages, Middleware(UsageEndpoint, meter=gateway.meter, admin_key=key)]


def _metrics_routes(config: Config, gateway: Gateway) -> list[Route]:
    """``GET /metrics`` (Prometheus text), behind the admin key when ``[metrics] require_admin_key``."""
    if gateway.metrics is None:
        return []
    admin = config.admin.key.reveal() if config.metrics.require_admin_key and config.admin.key else None
    return [Route("/metrics", metrics_endpoint(gateway, gateway.metrics, admin, config.admin.port), methods=["GET"])]


def _tracing(config: Config) -> Any:
    """Request spans when ``[tracing] enabled`` (load_config checked that OpenTelemetry is installed)."""
    if not config.tracing.enabled:
        return None
    from .observability.tracing import Tracing

    return Tracing(config.tracing.propagate)


def _route_price(router: Router, meter: Meter) -> Callable[[str], Price | None]:
    """The price a reservation assumes for a model name: the dearest deployment of its route and of
    every fallback of any kind (any of them may serve it)."""
    def price(name: str) -> Price | None:
        route = router.resolve(name)
        routes = list(router.chain(route))
        for extra in (*route.context_window_fallbacks, *route.content_policy_fallbacks):
            routes += router.chain(router.routes[extra])
        deployments = [d for r in routes for d in r.deployments]
        prices = [p for d in deployments if (p := meter.prices.for_deployment(d.label)) is not None]
        return max(prices, key=lambda p: p.base.output + p.base.input, default=None)

    return price


def gateway_lifespan(app: Starlette) -> contextlib.AbstractAsyncContextManager[None]:
    """The gateway's lifespan, for a host app that mounts it: ``async with gateway_lifespan(gw):``."""
    return app.state.gateway.lifespan()


def _json(data: object, status: int = 200) -> Response:
    return Response(_encode(data), status_code=status, media_type="application/json")


async def _health(request: Request) -> Response:
    return _json({"status": "ok"})


def _ready(gateway: Gateway):
    async def ready(request: Request) -> Response:
        providers = {
            name: {"kind": u.kind.name, "available": u.available} for name, u in gateway.upstreams.items()
        }
        models = [name for name, _ in gateway.router.listed()]
        ok = bool(models)  # sessions open at start-up, or lazily when mounted without lifespan
        status = "ready" if ok else "not ready"
        body: dict[str, Any] = {"status": status, "started": gateway.started, "providers": providers,
                                "models": models}
        if gateway.config.resilience.enabled:
            health = gateway.health
            members = health.public_states()
            blocked = [r.name for r in gateway.router.routes.values()
                       if r.available and not any(serves(c, Dialect.OPENAI_CHAT) and health.available(c.member)
                                                  for c in r.candidates)]
            # Not ready only when no configured model can be served at all: one provider's outage must
            # not take every replica out of a load balancer that routes healthy models too.
            if ok and blocked and len(blocked) == len(models):
                ok, status = False, "not ready"
            elif ok and (blocked or any(m["state"] != "closed" or m["cooled_for"] or m["ejected_for"]
                                        for m in members.values())):
                status = "degraded"  # still serving: some members or whole models are out
            body.update(status=status, deployments=members, unavailable_models=blocked)
        stores = _shared_stores(gateway)
        if stores:  # Redis-backed limits and budgets: "redis", or "local" while Redis is unreachable
            body["shared_state"] = stores
            if ok and "local" in stores.values() and body["status"] == "ready":
                body["status"] = "degraded"
        return _json(body, 200 if ok else 503)

    return ready


def _shared_stores(gateway: Gateway) -> dict[str, str]:
    """Which shared stores (rate limits, budgets) decide through Redis now and which fell back to local
    decisions (state/failover.py)."""
    out: dict[str, str] = {}
    for name, store in (("limits", gateway.state), ("budgets", gateway.meter.budgets)):
        health = getattr(store, "health", None)
        if health is not None:
            out[name] = "local" if health.degraded else "redis"
    return out


def _models(gateway: Gateway):
    async def models(request: Request) -> Response:
        ex = exchange_of(request.scope)
        listed = gateway.router.listed()
        principal = ex.principal if ex is not None else None
        if principal is not None:  # a key sees only the models it may use
            listed = [(name, owner) for name, owner in listed if principal.allows(name)]
        if ex is not None and ex.dialect is Dialect.ANTHROPIC_MESSAGES:
            stamp = datetime.fromtimestamp(gateway.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            data = [{"type": "model", "id": name, "display_name": name, "created_at": stamp}
                    for name, _ in listed]
            return _json({"data": data, "has_more": False,
                          "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None})
        data = [{"id": name, "object": "model", "created": gateway.created, "owned_by": owner}
                for name, owner in listed]
        return _json({"object": "list", "data": data})

    return models


async def _api_fallback(request: Request) -> Response:
    path = "/v1/" + request.path_params["rest"]
    if path in _API_PATHS:
        raise MethodNotAllowed(f"{request.method} is not allowed on {path}; use {_API_PATHS[path]}")
    raise NotFound(f"no such endpoint: {request.method} {path}")
