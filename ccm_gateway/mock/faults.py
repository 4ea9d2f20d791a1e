"""Connection-level faults of the loopback mock: a reset before any response, a body cut off mid-way."""

from __future__ import annotations

import contextlib
import socket
import struct

from aiohttp import web

__all__ = ["close_connection", "reset_connection"]

_LINGER_RESET = struct.pack("ii", 1, 0)


def reset_connection(request: web.Request) -> None:
    """Abort the request's TCP connection with a RST (SO_LINGER 0): the client sees a reset, no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def close_connection(request: web.Request) -> None:
    """Close the connection after what was written so far (a response cut off mid-body, no terminator)."""
    transport = request.transport
    if transport is not None:
        transport.close()
