"""Upstream clients: one per configured provider, each owning one aiohttp ClientSession.

Like an httpx transport, this layer only does I/O: it takes finished request bytes and headers and
returns a response whose body is read chunk by chunk. Deciding what to send and what to do with the
answer is the endpoint's job.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Protocol
from urllib.parse import urlencode

import aiohttp

from .. import timer_wheel
from ..config import ProviderConfig
from ..dialects import Dialect
from ..errors import UpstreamTimeout, UpstreamUnavailable
from ..secrets import Secret
from .kinds import KINDS, ProviderKind

USER_AGENT = "ccm-gateway/0.1"


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    def close(self) -> None: ...


class Upstream:
    """A configured provider: its kind, base URL, weighted credentials and HTTP session."""

    max_response_bytes = 32 * 1024 * 1024  # a non-streaming answer's cap; the app sets [requests] max_response_bytes

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self.kind: ProviderKind = KINDS[config.kind]
        base = config.base_url or self.kind.base_url or ""
        self.base_url = base.rstrip("/")
        self.keys: list[Secret] = [k.key for k in config.api_keys]
        self._cum_weights = list(itertools.accumulate(k.weight for k in config.api_keys))
        self.timeout = config.timeout
        self.stream_options = (
            config.stream_options if config.stream_options is not None else self.kind.stream_options
        )
        version = config.api_version or self.kind.api_version
        self.query = urlencode({"api-version": version}) if version else ""  # Azure's api-version
        self._session: aiohttp.ClientSession | None = None

    @property
    def available(self) -> bool:
        """False when the kind needs a key and none was configured (e.g. an unset optional env:)."""
        return bool(self.keys) or not self.kind.needs_key

    def speaks(self, dialect: Dialect) -> bool:
        return dialect in self.kind.dialects

    def pick_key(self) -> Secret | None:
        """A credential chosen at random in proportion to its weight (embeddings, token counting; chat
        requests choose theirs with the route's members, ``routing.Attempts``)."""
        if not self.keys:
            return None
        if len(self.keys) == 1:
            return self.keys[0]
        point = random.random() * self._cum_weights[-1]
        return self.keys[bisect.bisect_right(self._cum_weights, point)]

    def auth_headers(self, key: Secret | None) -> dict[str, str]:
        """The credential header: ``Authorization: Bearer`` or the kind's own header with the bare key."""
        if key is None or self.kind.auth == "none":
            return {}
        if self.kind.auth == "bearer":
            return {"authorization": f"Bearer {key.reveal()}"}
        return {self.kind.auth: key.reveal()}

    def url(self, op: str, model: str = "", stream: bool = False) -> str:
        """The full URL for ``op`` (a Dialect for a chat call, or "embeddings") with ``model``."""
        url = self.base_url + self.kind.path(op, model, stream)
        if self.query:
            url += ("&" if "?" in url else "?") + self.query
        return url

    async def start(self) -> None:
        if self._session is not None:
            return
        c = self.config.connections
        connector = aiohttp.TCPConnector(
            limit=c.limit,
            limit_per_host=c.limit_per_host,
            ttl_dns_cache=c.dns_cache_ttl,
            use_dns_cache=True,
            keepalive_timeout=c.keepalive_timeout,
            family=socket.AF_UNSPEC,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout.connect,
                                          sock_connect=self.timeout.connect),
            auto_decompress=True,
            trust_env=False,  # never route credentials through an environment-chosen proxy
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(
        self, op: str, body: bytes, headers: dict[str, str], stream: bool, deadline: float, *, model: str = "",
        first_byte: float | None = None, connect: float | None = None, bounded: bool = False,
    ) -> UpstreamResponse:
        """POST a request for ``op`` (a Dialect for a chat call, or "embeddings") to the URL built for
        ``model`` (Azure and Gemini put it in the path); returns once the response head has arrived.

        Raises UpstreamUnavailable on connection failures and UpstreamTimeout when the head does not
        come within ``first_byte`` (streams) or by ``deadline`` (loop time; JSON answers arrive whole).
        ``first_byte`` and ``connect`` override the provider's (a route's ``timeout`` table). ``bounded``:
        the caller's own timer covers the wait (a stream's head and first chunk share one), so none is
        set here and its TimeoutError passes through.
        """
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = self.url(op, model, stream)
        # Ours unless the provider's config sets one. Given per request, not as the session's default
        # with skip_auto_headers: aiohttp merges those into a new header dict on every request.
        headers.setdefault("user-agent", USER_AGENT)
        loop = asyncio.get_running_loop()
        wait = deadline - loop.time()
        if stream:
            wait = min(wait, first_byte or self.timeout.first_byte)
        extra = {} if connect is None else {"timeout": aiohttp.ClientTimeout(total=None, connect=connect,
                                                                               sock_connect=connect)}
        try:
            async with timer_wheel.UNTIMED if bounded else timer_wheel.timeout_at(loop.time() + wait):
                resp = await self._session.post(url, data=body, headers=headers, allow_redirects=False, **extra)
        except TimeoutError:
            if bounded:
                raise
            raise UpstreamTimeout(f"upstream {self.name} did not answer within {wait:g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(
                f"cannot reach upstream {self.name} ({type(exc).__name__})"
            ) from None
        return _AiohttpResponse(resp)


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    async def read(self, limit: int) -> bytes:
        length = self._resp.content_length
        if length is not None and length < limit and self._resp.headers.get("content-encoding") is None:
            return await self._resp.read()  # the common JSON answer: one read of a known length
        parts: list[bytes] = []
        size = 0
        async for chunk in self._resp.content.iter_any():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    def close(self) -> None:
        self._resp.close()
