"""The chat endpoint: pick a deployment, send the request bytes upstream, pipe the answer back.

Same protocol on both sides is pass-through: the body goes upstream with only the model name
changed, and the upstream's bytes — JSON or SSE — are written to the client as they arrive. Each
``send`` is awaited, so a slow client slows the upstream read instead of filling a queue; a client
that hangs up cancels the upstream read at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import aiohttp

from .dialects import Dialect, openai_chat
from .dialects.registry import WIRE
from .errors import GatewayError, UpstreamTimeout, UpstreamUnavailable, error_for_status
from .exchange import Exchange, exchange_of
from .middleware.types import Receive, Scope, Send
from .observability.tracing import attempt_span
from .providers.upstream import Upstream, UpstreamResponse
from .responses import send_bytes, send_error
from .routing import Router
from .scrub import host_needles, scrub_internals
from .streaming import UsageChunkStripper, UsageSniffer

log = logging.getLogger("ccm_gateway.proxy")

ANTHROPIC_VERSION = "2023-06-01"
MAX_ERROR_BODY = 1024 * 1024
MAX_USAGE_BODY = 16 * 1024 * 1024
# Upstream response headers worth handing to the client (names lower-case).
_PROPAGATE = frozenset({"request-id", "retry-after", "retry-after-ms", "openai-processing-ms"})
_PROPAGATE_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
# Stream terminators: a stream that ends without one was cut off upstream.
_ENDINGS = {Dialect.OPENAI_CHAT: (b"[DONE]",), Dialect.ANTHROPIC_MESSAGES: (b"message_stop", b"event: error")}


class ChatEndpoint:
    """ASGI app behind ``POST /v1/chat/completions`` and ``POST /v1/messages``."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        assert ex is not None, "ChatEndpoint needs ExchangeMiddleware in front of it"
        head = ex.head()
        route = self.router.resolve(head.model)
        deployment = route.pick(ex.dialect)
        ex.route, ex.deployment = route.name, deployment.label
        upstream = deployment.upstream
        if upstream.speaks(ex.dialect):  # same dialect: pass-through
            headers = upstream_headers(scope, ex, upstream)
            headers.update(upstream.auth_headers(upstream.pick_key()))
            replace = None
            if ex.stream and upstream.stream_options and ex.dialect is Dialect.OPENAI_CHAT:
                replace = openai_chat.forced_usage(head.fields)  # ask for usage the client did not (P12)
            body = head.body_for(deployment.model, ex.body, replace)
            run = self._exchange(send, ex, upstream, body, headers, deployment.model, strip_usage=bool(replace))
        else:  # another dialect: through the canonical model (translate.py; imported late, it imports us)
            from .translate import Translated

            run = Translated(ex, deployment, route.max_output_tokens).run(send)
        with attempt_span(ex, deployment.label, ex.attempts + 1):  # observability: upstream time, trace span
            await until_disconnect(run, receive, ex)

    async def _exchange(
        self, send: Send, ex: Exchange, upstream: Upstream, body: bytes, headers: dict[str, str], model: str,
        strip_usage: bool = False,
    ) -> None:
        deadline = asyncio.get_running_loop().time() + upstream.timeout.deadline
        ex.attempts += 1
        resp = await upstream.send(ex.dialect, body, headers, ex.stream, deadline, model=model)
        ex.upstream_status = resp.status
        try:
            if resp.status >= 400:
                await relay_error(send, ex, upstream, resp)
            else:
                await Pipe(ex, upstream, resp, send, strip_usage).run(deadline)
        finally:
            resp.close()


WATCH_AFTER = 0.05  # seconds before a request gets its disconnect watcher


async def until_disconnect(run: Awaitable[None], receive: Receive, ex: Exchange) -> None:
    """Await ``run``, cancelling it the moment the client hangs up (a normal end, not an error).

    The watcher task starts only after WATCH_AFTER: most JSON answers are done by then, and a task
    per request was the costliest part of watching (measured; docs/performance.md). A hang-up in the
    first 50 ms is noticed when the watcher starts, or by the next write."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watcher: asyncio.Task[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch_disconnect(receive, ex, task))

    timer = loop.call_later(WATCH_AFTER, start_watching)
    try:
        await run
    except asyncio.CancelledError:
        if not ex.client_disconnected:
            raise
        task.uncancel()  # we cancelled ourselves because the client left: a normal end
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def watch_disconnect(receive: Receive, ex: Exchange, task: asyncio.Task[Any]) -> None:
    """Cancel the request's task the moment its client hangs up, so the upstream call ends at once
    (whether it is waiting for the first byte or between chunks). The body was read already, so
    the next message ``receive`` gives is the disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ex.client_disconnected = True
            task.cancel()
            return


def upstream_headers(scope: Scope, ex: Exchange, upstream: Upstream) -> dict[str, str]:
    """Headers for the upstream call, from an allow-list: client credentials never go upstream."""
    headers = {"content-type": "application/json", "x-request-id": ex.request_id}
    headers.update(ex.trace_headers)  # observability: traceparent when [tracing] propagate
    headers.update(upstream.config.headers)
    if ex.dialect is Dialect.ANTHROPIC_MESSAGES:
        headers["anthropic-version"] = ANTHROPIC_VERSION
        for name, value in scope["headers"]:
            if name == b"anthropic-version" or name == b"anthropic-beta":
                headers[name.decode()] = value.decode("latin-1")
    return headers


def response_headers(ex: Exchange, upstream_headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in upstream_headers.items():
        lower = name.lower()
        if lower in _PROPAGATE or lower.startswith(_PROPAGATE_PREFIXES):
            out.append((lower.encode(), value.encode("latin-1")))
        elif lower == "x-request-id":
            out.append((b"x-upstream-request-id", value.encode("latin-1")))
    return out


def redact_credentials(body: bytes, upstream: Upstream) -> bytes:
    """Upstreams echo keys in auth errors ("Incorrect API key provided: sk-…"); never pass them on."""
    for key in upstream.keys:
        value = key.reveal().encode()
        if len(value) >= 8:
            body = body.replace(value, b"***").replace(value[:20], b"***")
    return scrub_internals(body, host_needles(upstream.base_url))  # hardening: internal hosts, URL credentials


async def relay_error(send: Send, ex: Exchange, upstream: Upstream, resp: UpstreamResponse) -> None:
    """An upstream error in the caller's protocol passes through; anything else is re-shaped."""
    try:
        async with asyncio.timeout(upstream.timeout.idle):
            body = await resp.read(MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    wire = WIRE[ex.dialect]
    if wire.is_native_error(body):
        content_type = (b"content-type", b"application/json")
        headers = response_headers(ex, resp.headers)
        await send_bytes(send, resp.status, redact_credentials(body, upstream), headers, content_type)
        return
    err = error_for_status(resp.status, f"upstream {upstream.name} returned HTTP {resp.status}")
    retry_after = resp.headers.get("retry-after")
    if retry_after:
        err.headers["retry-after"] = retry_after
    await send_error(send, err, ex.dialect, ex.request_id)


class Pipe:
    """Writes one upstream response to the client chunk by chunk, observing usage on the way.
    ``strip_usage``: the gateway asked an OpenAI upstream for usage the client did not want, so the
    usage-only chunk is taken out of the stream (``streaming.UsageChunkStripper``)."""

    __slots__ = ("ex", "resp", "send", "strip_usage", "upstream")

    def __init__(self, ex: Exchange, upstream: Upstream, resp: UpstreamResponse, send: Send,
                 strip_usage: bool = False) -> None:
        self.ex = ex
        self.upstream = upstream
        self.resp = resp
        self.send = send
        self.strip_usage = strip_usage

    async def run(self, deadline: float) -> None:
        ex, resp, send = self.ex, self.resp, self.send
        wire = WIRE[ex.dialect]
        content_type = resp.headers.get("content-type", "application/json")
        streaming = content_type.startswith("text/event-stream")
        limit = None if streaming else self.upstream.max_response_bytes  # hardening: [requests] max_response_bytes
        if limit is not None and int(resp.headers.get("content-length") or 0) > limit:
            raise UpstreamUnavailable(f"upstream {self.upstream.name} answer exceeds {limit} bytes")
        headers = response_headers(ex, resp.headers)
        headers.append((b"content-type", content_type.encode("latin-1")))
        if streaming:
            headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        sniffer = UsageSniffer(wire.apply_usage, ex.usage) if streaming else None
        stripper = UsageChunkStripper() if streaming and self.strip_usage else None
        kept: list[bytes] | None = None if streaming else []
        kept_size = 0
        last = previous = b""
        loop = asyncio.get_running_loop()
        chunk_at = 0.0  # observability: the longest gap between chunks
        idle = self.upstream.timeout.idle
        try:
            async with asyncio.timeout(min(loop.time() + idle, deadline)) as timer:
                async for chunk in resp.chunks():
                    now = loop.time()
                    if ex.first_byte_at is None:
                        ex.first_byte_at = now
                    elif now - chunk_at > ex.chunk_gap:  # observability: the longest chunk gap
                        ex.chunk_gap = now - chunk_at
                    chunk_at = now  # observability
                    if sniffer is not None:
                        sniffer.feed(chunk)
                    else:
                        kept_size += len(chunk)
                        if kept is not None:
                            kept.append(chunk)
                            if kept_size > MAX_USAGE_BODY:
                                kept = None
                        if limit is not None and kept_size > limit:  # hardening: 502, or cut off once started
                            raise UpstreamUnavailable(f"upstream {self.upstream.name} answer exceeds {limit} bytes")
                    previous, last = last, chunk
                    if stripper is not None:
                        chunk = stripper.feed(chunk)
                        if not chunk:
                            timer.reschedule(min(loop.time() + idle, deadline))
                            continue
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    timer.reschedule(min(loop.time() + idle, deadline))
        except TimeoutError:
            await self._fail(UpstreamTimeout(f"upstream {self.upstream.name} stopped sending"), streaming)
            return
        except aiohttp.ClientError as exc:
            err = UpstreamUnavailable(f"upstream {self.upstream.name} connection failed ({type(exc).__name__})")
            await self._fail(err, streaming)
            return
        if streaming:
            tail = (previous + last)[-256:]
            if not any(end in tail for end in _ENDINGS[ex.dialect]):
                await self._fail(UpstreamUnavailable(f"upstream {self.upstream.name} ended the stream early"), True)
                return
        if kept:
            wire.apply_usage(b"".join(kept), ex.usage)
        if stripper is not None and (rest := stripper.close()):
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _fail(self, err: GatewayError, streaming: bool) -> None:
        """After the head is sent a status cannot change: end an SSE stream with an error event,
        and cut a JSON body off (the client sees a broken connection, not a truncated 200)."""
        log.warning("upstream failure after response start: %s", err.message,
                    extra={"request_id": self.ex.request_id})
        if not streaming:
            raise _AbortResponse(err.message)
        await self.send({"type": "http.response.body", "body": WIRE[self.ex.dialect].error_frame(err),
                         "more_body": False})


class _AbortResponse(Exception):
    """Raised to make the server drop a connection whose JSON body cannot be completed."""

