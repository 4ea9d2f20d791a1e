"""Upstream error bodies are echoed to clients; these scrub what would tell them about the inside.

``proxy.redact_credentials`` removes the configured keys; ``scrub_internals`` removes the provider's
host (an internal IP or service name in ``base_url`` is nobody's business outside) and any
credentials written into a URL (``https://user:secret@host``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL_CREDENTIALS = re.compile(rb"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@")


def host_needles(base_url: str) -> tuple[bytes, ...]:
    """The spellings of a base URL's host worth removing, longest first (``host:port``, ``host``)."""
    try:
        parts = urlsplit(base_url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return ()
    if not host:
        return ()
    needles = [f"{host}:{port}".encode()] if port else []
    needles.append(host.encode())
    return tuple(needles)


def scrub_internals(body: bytes, hosts: tuple[bytes, ...]) -> bytes:
    """``body`` without URL credentials and without the upstream's host names (cheap: a memchr-speed
    ``in`` test before each replace; error bodies are at most 1 MB)."""
    if b"@" in body:
        body = _URL_CREDENTIALS.sub(rb"\1***@", body)
    for needle in hosts:
        if needle in body:
            body = body.replace(needle, b"upstream")
    return body
