"""``create_app(config)``: the routes, the middleware chain and the lifespan that owns the sessions.

Mounting inside another app (``Mount("/llm", app=create_app(cfg))``) works as is; Starlette does
not run a mounted app's lifespan, so the gateway opens its upstream sessions on first use, and the
host app can close them from its own lifespan with ``gateway_lifespan(app)`` (see the README).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import DEFAULT_CONFIG_PATH, Config, load_config
from .dialects import Dialect
from .errors import MethodNotAllowed, NotFound
from .exchange import exchange_of
from .middleware import ExchangeMiddleware, RequestIdMiddleware
from .providers.mock import MockProvider
from .providers.upstream import Upstream
from .proxy import ChatEndpoint
from .routing import Router

log = logging.getLogger("ccm_gateway")
_encode = msgspec.json.encode
_API_PATHS = {"/v1/chat/completions": "POST", "/v1/messages": "POST", "/v1/models": "GET"}


class Gateway:
    """What the app holds for its life: the config, one Upstream per provider, the router."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.upstreams: dict[str, Upstream] = {
            name: (MockProvider if p.kind == "mock" else Upstream)(name, p) for name, p in config.providers.items()
        }
        self.router = Router(config, self.upstreams)
        self.started = False
        self.created = int(time.time())

    async def start(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start()
        self.started = True
        for upstream in self.upstreams.values():
            if not upstream.available:
                log.info("provider %s has no API key configured; its models are unavailable", upstream.name)

    async def close(self) -> None:
        self.started = False
        for upstream in self.upstreams.values():
            await upstream.close()

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
    gateway = Gateway(config)
    chat = ChatEndpoint(gateway.router)
    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", chat, methods=["POST"]),
        Route("/v1/models", _models(gateway), methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
        Route("/ready", _ready(gateway), methods=["GET"]),
        Route("/v1/{rest:path}", _api_fallback, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    middleware = [
        Middleware(ExchangeMiddleware, max_body_bytes=config.server.max_body_bytes),
        Middleware(RequestIdMiddleware),
        *middleware,
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app


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
        body = {"status": "ready" if ok else "not ready", "started": gateway.started,
                "providers": providers, "models": models}
        return _json(body, 200 if ok else 503)

    return ready


def _models(gateway: Gateway):
    async def models(request: Request) -> Response:
        ex = exchange_of(request.scope)
        listed = gateway.router.listed()
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
