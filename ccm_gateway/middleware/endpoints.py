"""The innermost stage: an API ``POST`` goes straight to its endpoint.

Starlette's router would get there too, through its exception middleware, a scan of the route
table and the route's own wrapper — another ``send`` wrapper on every message of every answer. The
chat, token-count and embeddings endpoints need none of that (the exchange stage renders their
errors), so their ``POST``s are dispatched here by path; anything else (``GET /v1/models``, health,
a wrong method, an unknown path) continues to the router, whose routes stay the reference.
"""

from __future__ import annotations

from collections.abc import Mapping

from .exchange import route_path
from .types import ASGIApp, Receive, Scope, Send


class EndpointDispatch:
    def __init__(self, app: ASGIApp, endpoints: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)  # path below the mount point → ASGI endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoints.get(route_path(scope))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)
