"""Operator endpoints beside ``GET /v1/usage``: ``GET /v1/admin/config``, and the admin port.

The config view is what ``ccm-gateway check-config`` prints (secrets as their source only). With
``[admin] port`` set, the server listens there too and this stage routes by the listener a request
came in on (``scope["server"]``): admin paths answer only there, and the API does not answer there.
"""

from __future__ import annotations

import hmac

import msgspec

from .config import Config
from .errors import AuthenticationFailed, NotFound
from .exchange import exchange_of
from .middleware.types import ASGIApp, Receive, Scope, Send
from .responses import send_bytes

ADMIN_PATHS = ("/v1/usage", "/v1/admin/config")
_AUTH_HEADERS = (b"authorization", b"x-api-key")


def is_admin(scope: Scope, key: bytes) -> bool:
    """Does the request carry the admin key (``Authorization: Bearer`` or ``x-api-key``)?"""
    for name, value in scope["headers"]:
        if name in _AUTH_HEADERS:
            token = value[7:] if value[:7].lower() == b"bearer " else value
            if hmac.compare_digest(token.strip(), key):
                return True
    return False


class AdminEndpoint:
    """Serves ``GET …/v1/admin/config`` to the admin key and keeps admin paths on the admin port."""

    def __init__(self, app: ASGIApp, config: Config, admin_key: str | None, port: int | None = None) -> None:
        self.app = app
        self.view = msgspec.json.encode(config.redacted())
        self.admin_key = admin_key.encode() if admin_key else None  # None: the view is not served (404)
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if exchange_of(scope) is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        admin_path = path.endswith(ADMIN_PATHS)
        if self.port is not None:
            server = scope.get("server")
            on_admin_port = server is not None and server[1] == self.port
            if admin_path != on_admin_port:
                raise NotFound(f"no such endpoint: {scope['method']} {path}")
        if self.admin_key is None or not path.endswith("/v1/admin/config") or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if not is_admin(scope, self.admin_key):
            raise AuthenticationFailed("invalid or missing admin key")
        await send_bytes(send, 200, self.view)
