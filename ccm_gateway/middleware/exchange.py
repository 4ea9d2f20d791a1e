"""The outermost stage: opens the Exchange, reads the body once, renders errors.

Every later stage and the endpoints may simply ``raise`` a GatewayError; this stage answers it in
the caller's protocol. Anything unexpected becomes a plain 500 in that protocol too — the trace goes
to the log, never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from ..dialects import Dialect
from ..errors import GatewayError, InvalidRequest, RequestTooLarge
from ..exchange import STATE_KEY, Exchange
from ..responses import send_error
from .types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("ccm_gateway")


def dialect_for(scope: Scope) -> Dialect | None:
    """The caller's protocol, from the path (mount prefixes allowed); None outside the API."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if not path.startswith("/v1/"):
        return None
    if path.startswith("/v1/messages"):
        return Dialect.ANTHROPIC_MESSAGES
    if path.startswith("/v1/chat/"):
        return Dialect.OPENAI_CHAT
    for name, _ in scope["headers"]:
        if name == b"anthropic-version":
            return Dialect.ANTHROPIC_MESSAGES
    return Dialect.OPENAI_CHAT


class ExchangeMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int = 32 * 1024 * 1024) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_for(scope) if scope["type"] == "http" else None
        if dialect is None:
            await self.app(scope, receive, send)
            return
        ex = Exchange(dialect)
        scope.setdefault("state", {})[STATE_KEY] = ex
        started = False

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if scope["method"] == "POST":
                ex.body = await read_body(scope, receive, self.max_body_bytes)
            await self.app(scope, receive, send_tracked)
        except GatewayError as err:
            if started:
                raise
            await send_error(send, err, dialect, ex.request_id)
        except Exception:
            if started:
                raise
            log.exception("unhandled error", extra={"request_id": ex.request_id})
            err = GatewayError(f"internal gateway error (request {ex.request_id or 'unknown'})")
            await send_error(send, err, dialect, ex.request_id)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with 413 once it is known to exceed ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise InvalidRequest("Content-Length is not a number") from None
            if declared > limit:
                raise RequestTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
