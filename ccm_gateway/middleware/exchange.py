"""The outermost stage: opens the Exchange, reads the body once, renders errors.

Every later stage and the endpoints may simply ``raise`` a GatewayError; this stage answers it in
the caller's protocol. Anything unexpected becomes a plain 500 in that protocol too — the trace goes
to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .. import timer_wheel
from ..dialects import Dialect
from ..dialects.registry import WIRE
from ..errors import GatewayError, InvalidRequest, RequestTooLarge, ServiceUnavailable
from ..exchange import STATE_KEY, Exchange
from ..responses import send_error
from .request_id import client_request_id, new_request_id
from .types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("ccm_gateway")


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point (``Mount("/llm", app)`` → ``/v1/...``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path


def dialect_for(scope: Scope) -> Dialect | None:
    """The caller's protocol, from the path (mount prefixes allowed); None outside the API."""
    path = route_path(scope)
    if not path.startswith("/v1/"):
        return None
    if path.startswith("/v1/messages"):
        return Dialect.ANTHROPIC_MESSAGES
    if path.startswith("/v1/chat/") or path == "/v1/embeddings":
        return Dialect.OPENAI_CHAT
    for name, _ in scope["headers"]:
        if name == b"anthropic-version":
            return Dialect.ANTHROPIC_MESSAGES
    return Dialect.OPENAI_CHAT


_OPERATIONS = (
    ("/v1/chat/completions/count_tokens", "count_tokens"),
    ("/v1/messages/count_tokens", "count_tokens"),
    ("/v1/chat/completions", "chat"),
    ("/v1/messages", "chat"),
    ("/v1/embeddings", "embeddings"),
)


def operation_for(path: str) -> str:
    """What an API request asks for; "other" (models list, unknown paths) carries no model to read."""
    for suffix, operation in _OPERATIONS:
        if path.endswith(suffix):
            return operation
    return "other"


class ExchangeMiddleware:
    """``drain``: the ``shutdown.Drain`` that ends in-flight requests at shutdown; ``read_timeout``:
    seconds the whole body may take to arrive (408 after)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = 32 * 1024 * 1024, drain: Any = None,
                 read_timeout: float | None = None,
                 refused: Callable[[Exchange, Scope, int, str], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain = drain
        self.read_timeout = read_timeout
        self.refused = refused  # told of the refusals made here, before later stages (metrics, access log) ran

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_for(scope) if scope["type"] == "http" else None
        if dialect is None:
            await self.app(scope, receive, send)
            return
        ex = Exchange(dialect)
        ex.operation = operation_for(scope["path"])  # so ex.head() parses the right shape, for any stage
        # Named before the body is read, so even this stage's own refusals (413, 408, shutting down)
        # carry the id; the request-id stage returns it on every other answer.
        ex.request_id = client_request_id(scope) or new_request_id()
        scope.setdefault("state", {})[STATE_KEY] = ex
        ending = self.drain
        task = ending.enter() if ending is not None else None
        inside = False  # the later stages are running (they observe their own outcome)
        try:
            if ending is not None and ending.over:
                raise ServiceUnavailable("the gateway is shutting down; retry the request")
            if scope["method"] == "POST":
                ex.body = await read_body_within(scope, receive, self.max_body_bytes, self.read_timeout)
            inside = True
            await self.app(scope, receive, ex.sender(send))
        except asyncio.CancelledError:
            if task is None or not ending.ended(task):
                raise
            await ended_by_shutdown(send, ex, ex.status != 0)
        except GatewayError as err:
            if ex.status:
                raise
            if isinstance(err, RequestTooLarge):
                await drain(receive)  # before answering: the server stops reading once we have answered
            await send_error(send, err, dialect, ex.request_id)
            if not inside and self.refused is not None:
                self.refused(ex, scope, err.status_for(dialect), type(err).__name__)
        except Exception:
            if ex.status:
                raise
            log.exception("unhandled error", extra={"request_id": ex.request_id})
            err = GatewayError(f"internal gateway error (request {ex.request_id or 'unknown'})")
            await send_error(send, err, dialect, ex.request_id)
        finally:
            if task is not None:
                ending.leave(task)


async def ended_by_shutdown(send: Send, ex: Exchange, started: bool) -> None:
    """The drain cancelled this request at the end of the grace period: a 503 when nothing was sent
    yet, the dialect's error event when an SSE stream was under way (a JSON body already started
    cannot be ended properly; the connection closes)."""
    err = ServiceUnavailable("the gateway is shutting down; retry the request")
    if not started:
        await send_error(send, err, ex.dialect, ex.request_id)
    elif ex.stream:
        await send({"type": "http.response.body", "body": WIRE[ex.dialect].error_frame(err), "more_body": False})
    else:
        raise asyncio.CancelledError


DRAIN_BYTES = 8 * 1024 * 1024
DRAIN_SECONDS = 2.0


async def drain(receive: Receive) -> None:
    """Read and drop the rest of a refused body (bounded), so the client finishes sending and reads
    our 413 instead of a connection reset; a larger or slower body is cut off."""
    received = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while received < DRAIN_BYTES:
                message = await receive()
                received += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        return


async def read_body_within(scope: Scope, receive: Receive, limit: int, seconds: float | None) -> bytes:
    """``read_body`` bounded in time: a client dribbling its body gets 408 (slowloris)."""
    if seconds is None:
        return await read_body(scope, receive, limit)
    try:
        async with timer_wheel.timeout(seconds):
            return await read_body(scope, receive, limit)
    except TimeoutError:
        raise InvalidRequest(f"request body not received within {seconds:g}s", status=408) from None


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
