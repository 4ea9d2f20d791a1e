"""Request ids: accept a sane ``x-request-id`` from the client or make one; return it and send it
upstream, so one id follows a request through client logs, gateway logs and provider support."""

from __future__ import annotations

import os
import re
from typing import Any

from ..exchange import exchange_of
from .types import ASGIApp, Receive, Scope, Send

_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_HEADER = b"x-request-id"


def new_request_id() -> str:
    """128 random bits, like a uuid4, at a fifth of uuid4's cost."""
    return "req_" + os.urandom(16).hex()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        if ex is None:
            await self.app(scope, receive, send)
            return
        ex.request_id = client_request_id(scope) or new_request_id()
        value = ex.request_id.encode()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                for name, _ in headers:
                    if name == _HEADER:
                        break
                else:
                    message["headers"] = [*headers, (_HEADER, value)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER:
            return value.decode() if _VALID.fullmatch(value) else None
    return None
