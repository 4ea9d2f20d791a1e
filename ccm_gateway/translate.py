"""The translated path: a client of one dialect served by an upstream of another (PROTOCOLS §4).

A sibling of ``proxy.PassThrough`` in the endpoint's attempt loop. The client request is decoded
into the canonical model and the upstream body built from it; the upstream's answer is decoded into
canonical events (streams) or a canonical response (JSON) and encoded for the client. Nothing is
sent to the client before the first upstream event is understood, so an upstream error up to then is
a normal JSON error with its mapped status; after that, failures end the stream with the client
dialect's error frame. During long upstream silence the client gets keep-alives (Anthropic ``ping``,
OpenAI ``: keep-alive``) so idle timeouts downstream do not kill the stream (P10).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec

from . import timer_wheel
from .dialects import Dialect, anthropic_stream, anthropic_translate, gemini, openai_stream, openai_translate
from .dialects import canonical as c
from .dialects.translate_errors import upstream_error
from .errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from .exchange import Exchange
from .middleware.types import Send
from .providers.upstream import Upstream, UpstreamResponse
from .proxy import (
    ANTHROPIC_VERSION,
    MAX_USAGE_BODY,
    Opened,
    open_attempt,
    prepend,
    redact_credentials,
    response_headers,
    send_options,
)
from .responses import send_bytes, send_error
from .routing import Deployment, Failure
from .secrets import Secret

log = logging.getLogger("ccm_gateway.translate")

# Dialects that have a canonical codec, in the order an upstream's dialect is chosen for translation.
UPSTREAM_DIALECTS = (Dialect.OPENAI_CHAT, Dialect.ANTHROPIC_MESSAGES, Dialect.GEMINI)
# Upstream dialect → its response decoder, stream decoder and error reader.
_DECODE_RESPONSE = {Dialect.OPENAI_CHAT: openai_translate.decode_response,
                    Dialect.ANTHROPIC_MESSAGES: anthropic_translate.decode_response,
                    Dialect.GEMINI: gemini.decode_response}
_STREAM_DECODER: dict[Dialect, Any] = {Dialect.OPENAI_CHAT: openai_stream.StreamDecoder,
                                       Dialect.ANTHROPIC_MESSAGES: anthropic_stream.StreamDecoder,
                                       Dialect.GEMINI: gemini.StreamDecoder}
_ERROR_FROM = {Dialect.OPENAI_CHAT: openai_translate.error_from,
               Dialect.ANTHROPIC_MESSAGES: anthropic_translate.error_from, Dialect.GEMINI: gemini.error_from}
# Kinds that are OpenAI itself (max_completion_tokens, reasoning_effort, no reasoning_content).
_OPENAI_PROPER = frozenset({"openai", "azure"})
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def upstream_dialect(upstream: Upstream) -> Dialect:
    for dialect in UPSTREAM_DIALECTS:
        if upstream.speaks(dialect):
            return dialect
    raise InvalidRequest(f"provider {upstream.name} speaks no dialect the gateway can translate to")


def decode_client(dialect: Dialect, body: bytes) -> c.Request:
    decode = anthropic_translate.decode_request if dialect is Dialect.ANTHROPIC_MESSAGES else \
        openai_translate.decode_request
    try:
        return decode(body)
    except GatewayError:
        raise
    except (msgspec.DecodeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"request could not be translated: {exc}") from None


class Translated:
    """One translated attempt; all state is per request (P25). ``request`` is the client request in
    the canonical model (decoded once per request, reused by every attempt)."""

    def __init__(self, ex: Exchange, deployment: Deployment, max_output: int | None, request: c.Request | None = None,
                 key: Secret | None = None) -> None:
        self.ex = ex
        self.upstream = deployment.upstream
        self.model = deployment.model
        self.key = key if key is not None else self.upstream.pick_key()
        self.target = upstream_dialect(self.upstream)
        self.op = self.target
        self.timeouts = deployment.timeouts
        self.send_options = send_options(deployment)
        self.names = c.Names()
        self.keepalive = self.timeouts.keepalive
        self.request = request if request is not None else decode_client(ex.dialect, ex.body)
        self.stream = self.request.stream
        self.body = self._encode_request(max_output)

    def _encode_request(self, max_output: int | None) -> bytes:
        req, up = self.request, self.upstream
        if self.target is Dialect.ANTHROPIC_MESSAGES:
            return anthropic_translate.encode_request(req, self.model, self.names, max_output=max_output)
        if self.target is Dialect.GEMINI:
            return gemini.encode_request(req, self.model, self.names, max_output=max_output)
        return openai_translate.encode_request(req, self.model, self.names, compat=up.kind.name not in _OPENAI_PROPER,
                                               stream_options=up.stream_options, max_output=max_output)

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "x-request-id": self.ex.request_id}
        headers.update(self.ex.trace_headers)  # observability: traceparent when [tracing] propagate
        headers.update(self.upstream.config.headers)
        if self.target is Dialect.ANTHROPIC_MESSAGES:
            headers["anthropic-version"] = ANTHROPIC_VERSION
        headers.update(self.upstream.auth_headers(self.key))
        return headers

    async def run(self, send: Send) -> None:
        """One attempt, no retries (tests and embedders that drive a translation themselves)."""
        opened = await open_attempt(self, self.ex, self.timeouts.deadline)
        if isinstance(opened, Failure):
            if opened.status is None:
                assert isinstance(opened.error, GatewayError)
                raise opened.error
            await self.relay(send, opened)
            return
        try:
            await self.deliver(send, opened)
        finally:
            opened.resp.close()

    async def deliver(self, send: Send, opened: Opened) -> bool:
        """Serve an attempt past its commit point; False when the upstream failed while serving it."""
        resp = opened.resp
        if not self.request.stream:
            await self._json(send, resp, opened.deadline)
            return True
        if opened.chunks is not None:
            return await _Stream(self, resp, send).run(opened.chunks, opened.first)
        # a stream was asked for but the upstream answered whole: stream its content
        canonical = await self._read_response(resp, opened.deadline)
        await _Stream(self, resp, send).replay(c.response_events(canonical))
        return True

    async def relay(self, send: Send, failure: Failure) -> None:
        """An upstream error, re-shaped for the client with the status §4.12 gives."""
        body = redact_credentials(failure.body, self.upstream)
        status = failure.status or 500
        message, code = _ERROR_FROM[self.target](status, body)
        err = upstream_error(status, message or f"upstream {self.upstream.name} returned HTTP {status}", code)
        retry_after = failure.headers.get("retry-after")
        if retry_after:
            err.headers["retry-after"] = retry_after
        await send_error(send, err, self.ex.dialect, self.ex.request_id)

    async def _json(self, send: Send, resp: UpstreamResponse, deadline: float) -> None:
        canonical = await self._read_response(resp, deadline)
        if canonical.usage is not None:
            for name in ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning", "reported"):
                setattr(self.ex.usage, name, getattr(canonical.usage, name))
        model = self.ex.model or self.model
        if self.ex.dialect is Dialect.ANTHROPIC_MESSAGES:
            out = anthropic_translate.encode_response(canonical, model)
        else:
            out = openai_translate.encode_response(canonical, model)
        await send_bytes(send, 200, out, response_headers(self.ex, resp.headers))

    async def _read_response(self, resp: UpstreamResponse, deadline: float) -> c.Response:
        try:
            async with timer_wheel.timeout_at(deadline):
                body = await resp.read(MAX_USAGE_BODY)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.upstream.name} did not finish its answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"upstream {self.upstream.name} connection failed ({type(exc).__name__})") \
                from None
        try:
            return _DECODE_RESPONSE[self.target](body, self.names)
        except (msgspec.DecodeError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise UpstreamError(f"upstream {self.upstream.name} sent an answer that could not be read: "
                                f"{type(exc).__name__}", status=502) from None

    def decoder(self) -> Any:
        return _STREAM_DECODER[self.target](self.names)

    def encoder(self) -> Any:
        ex = self.ex
        model = ex.model or self.model
        if ex.dialect is Dialect.ANTHROPIC_MESSAGES:
            estimate = ex.token_estimate if ex.token_estimate is not None else max(1, len(ex.body) // 4)
            return anthropic_stream.StreamEncoder(model, estimate, ex.usage)
        return openai_stream.StreamEncoder(model, self.request.include_usage, ex.usage)


class _Stream:
    """Upstream SSE → canonical events → client SSE, with keep-alives while the upstream is silent."""

    __slots__ = ("call", "decoder", "encoder", "ended", "last_write", "lock", "resp", "send", "started")

    def __init__(self, call: Translated, resp: UpstreamResponse, send: Send) -> None:
        self.call = call
        self.resp = resp
        self.send = send
        self.decoder = call.decoder()
        self.encoder = call.encoder()
        self.started = False
        self.ended = False
        self.lock = asyncio.Lock()
        self.last_write = 0.0

    async def _write(self, data: bytes, more: bool = True) -> None:
        async with self.lock:
            if self.ended:
                return
            if not self.started:
                self.started = True
                headers = response_headers(self.call.ex, self.resp.headers) + _SSE_HEADERS
                await self.send({"type": "http.response.start", "status": 200, "headers": headers})
                data = self.encoder.start() + data
            self.ended = not more
            self.last_write = asyncio.get_running_loop().time()
            await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def _pinger(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.call.keepalive
        while not self.ended:
            await asyncio.sleep(max(0.05, self.last_write + interval - loop.time()))
            if not self.ended and loop.time() - self.last_write >= interval:
                await self._write(self.encoder.keepalive())

    async def _fail(self, err: GatewayError) -> None:
        async with self.lock:  # checked under the lock: the pinger may be starting the stream right now
            if not self.started:  # nothing sent yet: a normal JSON error with its status
                self.ended = True
                await send_error(self.send, err, self.call.ex.dialect, self.call.ex.request_id)
                return
        log.warning("translated stream failed: %s", err.message, extra={"request_id": self.call.ex.request_id})
        await self._write(self.encoder.error(err), more=False)

    async def _events(self, events: list[c.Ev]) -> bool:
        """Write the client bytes for ``events``; False once an upstream error ended the stream."""
        for i, ev in enumerate(events):
            if type(ev) is c.ErrorEv:
                if i:
                    await self._write(self.encoder.feed(events[:i]))
                await self._fail(ev.error)  # type: ignore[attr-defined]
                return False
        data = self.encoder.feed(events)
        if data or not self.started:
            await self._write(data)
        return True

    async def replay(self, events: list[c.Ev]) -> None:
        """Stream a whole answer's events (an upstream that ignored ``stream: true``)."""
        if await self._events(events):
            await self._write(self.encoder.finish(), more=False)

    async def run(self, chunks: AsyncIterator[bytes], first: bytes | None) -> bool:
        """Stream the answer (``first``: its first chunk, read at the commit point); False when the
        upstream failed (the client got the error event)."""
        self.last_write = asyncio.get_running_loop().time()
        pinger = asyncio.create_task(self._pinger())
        try:
            return await self._pump(prepend(first, chunks) if first is not None else chunks)
        finally:  # after the last write (the pinger then only sleeps or waits for the lock)
            pinger.cancel()

    async def _pump(self, chunks: AsyncIterator[bytes]) -> bool:
        call, ex = self.call, self.call.ex
        loop = asyncio.get_running_loop()
        idle = call.timeouts.idle  # streams: the gap between chunks, and stream_deadline when set
        cap = loop.time() + call.timeouts.stream_deadline if call.timeouts.stream_deadline else math.inf
        feed: Callable[[bytes], list[c.Ev]] = self.decoder.feed
        chunk_at = 0.0  # observability: the longest gap between chunks
        try:
            async with timer_wheel.IdleTimeout(idle, cap) as timer:
                async for chunk in chunks:
                    now = loop.time()
                    if ex.first_byte_at is None:
                        ex.first_byte_at = now
                    elif now - chunk_at > ex.chunk_gap:  # observability: the longest chunk gap
                        ex.chunk_gap = now - chunk_at
                    chunk_at = now  # observability
                    events = feed(chunk)
                    if events:
                        if not await self._events(events):
                            return False
                    elif not self.started and self.decoder.parsed:  # e.g. OpenAI's role-only first chunk
                        await self._write(b"")
                    timer.last = loop.time()  # after the writes: a slow client's send is not upstream idleness
            events = self.decoder.close()
            if events and not await self._events(events):
                return False
        except TimeoutError:
            await self._fail(UpstreamTimeout(f"upstream {call.upstream.name} stopped sending"))
            return False
        except aiohttp.ClientError as exc:
            await self._fail(UpstreamUnavailable(f"upstream {call.upstream.name} connection failed "
                                                 f"({type(exc).__name__})"))
            return False
        except ValueError as exc:  # an SSE event beyond the size limit
            await self._fail(UpstreamError(f"upstream {call.upstream.name} sent an unreadable stream: {exc}",
                                           status=502))
            return False
        if not self.decoder.complete:  # cut before its end: an error, never a clean stop
            await self._fail(UpstreamUnavailable(f"upstream {call.upstream.name} ended the stream early"))
            return False
        await self._write(self.encoder.finish(), more=False)
        return True
