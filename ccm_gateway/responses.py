"""Whole responses sent over raw ASGI: JSON bodies and errors in the caller's protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .dialects import Dialect
from .dialects.registry import WIRE
from .errors import GatewayError

Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = (b"content-type", b"application/json")


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = (), content_type=JSON
) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [content_type, (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


def error_headers(err: GatewayError, request_id: str) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    return headers


async def send_error(send: Send, err: GatewayError, dialect: Dialect, request_id: str = "") -> None:
    """Render ``err`` as ``dialect`` expects it (OpenAI or Anthropic error body and status)."""
    body = WIRE.get(dialect, WIRE[Dialect.OPENAI_CHAT]).error_body(err, request_id)
    await send_bytes(send, err.status_for(dialect), body, error_headers(err, request_id))
