"""The chat endpoint: pick a member, send the request bytes upstream, pipe the answer back.

Attempts follow ``routing.Attempts``; each one reaches its commit point (``open_attempt``) before
anything is written to the client, so a failure up to there is retried elsewhere. Same protocol on
both sides is pass-through: the body goes upstream with only the model name
changed, and the upstream's bytes — JSON or SSE — are written to the client as they arrive. Each
``send`` is awaited, so a slow client slows the upstream read instead of filling a queue; a client
that hangs up cancels the upstream read at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import msgspec

from . import timer_wheel
from .config import Timeouts
from .dialects import Dialect, openai_chat
from .dialects.registry import WIRE
from .errors import (
    GatewayError,
    Overloaded,
    ServiceUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
)
from .exchange import Exchange, exchange_of
from .middleware.types import Receive, Scope, Send
from .observability.tracing import attempt_span
from .providers.upstream import Upstream, UpstreamResponse
from .resilience.outcome import Outcome, classify, retry_after
from .resilience.policy import ResilienceConfig
from .responses import send_bytes, send_error
from .routing import Attempts, Candidate, Deployment, Failure, Router
from .scrub import host_needles, scrub_internals
from .streaming import UsageChunkStripper, UsageSniffer

log = logging.getLogger("ccm_gateway.proxy")

ANTHROPIC_VERSION = "2023-06-01"
MAX_ERROR_BODY = 1024 * 1024
MAX_USAGE_BODY = 16 * 1024 * 1024
# Upstream response headers worth handing to the client (names lower-case).
_PROPAGATE = frozenset({"request-id", "retry-after", "retry-after-ms", "openai-processing-ms"})
_PROPAGATE_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
# Error types in an upstream's own stream error event that count against the deployment (not the client's errors).
_UPSTREAM_FAULTS = (b"overloaded_error", b"api_error")
# Stream terminators: a stream that ends without one was cut off upstream.
_ENDINGS = {Dialect.OPENAI_CHAT: (b"[DONE]",), Dialect.ANTHROPIC_MESSAGES: (b"message_stop", b"event: error")}


class ChatEndpoint:
    """ASGI app behind ``POST /v1/chat/completions`` and ``POST /v1/messages``.

    One attempt loop serves both paths. An attempt first reaches its *commit point* without writing
    to the client: the response head (and, for a stream, its first chunk) within the timeouts. Before
    it, a retryable outcome closes the upstream response and ``routing.Attempts`` picks the next member;
    after it nothing is retried. Every attempt's outcome goes to the Health (CANCELLED when the client
    leaves, so a half-open probe slot is never kept)."""

    def __init__(self, router: Router, resilience: ResilienceConfig | None = None) -> None:
        self.router = router
        self.resilience = resilience

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        assert ex is not None, "ChatEndpoint needs ExchangeMiddleware in front of it"
        head = ex.head()
        route = self.router.resolve(head.model)
        chain = self.router.chain(route)
        start = 0
        if ex.fallback is not None:  # the token stage chose a context-window fallback
            chain = [route, *self.router.chain(self.router.resolve(ex.fallback))]
            start = 1
        health = ex.health
        policy = self.resilience.retry if health is not None and self.resilience is not None else None
        plan = Attempts(chain, ex.dialect, health, policy, self._affinity(scope, ex), start, self.router.routes.get)
        ex.route = route.name
        await until_disconnect(self._run(scope, send, ex, plan), receive, ex)

    def _affinity(self, scope: Scope, ex: Exchange) -> str | None:
        """The session key that pins a conversation to one member: the affinity header, or an Anthropic
        client's ``metadata.user_id``."""
        cfg = self.resilience
        if cfg is None or ex.health is None:
            return None
        name = cfg.affinity_header.lower().encode()
        for key, value in scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        if cfg.affinity_metadata and ex.dialect is Dialect.ANTHROPIC_MESSAGES:
            raw = ex.head().fields.get("metadata")
            if raw is not None:
                try:
                    user = _METADATA.decode(raw).user_id
                except msgspec.DecodeError:
                    return None
                return user or None
        return None

    async def _run(self, scope: Scope, send: Send, ex: Exchange, plan: Attempts) -> None:
        request: Any = None  # the client request in the canonical model, decoded once for translations

        def attempt(choice: Candidate) -> Any:
            nonlocal request
            if choice.deployment.upstream.speaks(ex.dialect):
                return PassThrough(scope, ex, choice)
            from .translate import Translated, decode_client  # another dialect (translate.py imports us)

            if request is None:
                request = decode_client(ex.dialect, ex.body)
            return Translated(ex, choice.deployment, plan.route.max_output_tokens, request, choice.key)

        await run_attempts(send, ex, plan, attempt, ex.dialect)


async def run_attempts(send: Send, ex: Exchange, plan: Attempts, attempt: Callable[[Candidate], Any],
                       op: Any) -> None:
    """The attempt loop: ``attempt(choice)`` builds the call for a member (``PassThrough``,
    ``translate.Translated``, the embeddings calls); each is opened to its commit point, retried
    elsewhere on a retryable failure before it, delivered after it. ``op`` (a Dialect, or
    "embeddings") names what the route's members must serve, for the errors when none can."""
    last: Failure | None = None
    while (choice := await plan.next(last)) is not None:
        deployment = choice.deployment
        ex.deployment = deployment.label
        ex.fallback = plan.route.name if plan.position else None
        outcome, retry_after = Outcome.CANCELLED, None
        try:
            call = attempt(choice)
            with attempt_span(ex, deployment.label, ex.attempts + 1):  # upstream time; a span when tracing
                opened = await open_attempt(call, ex, plan.remaining())
                if isinstance(opened, Failure):
                    last, outcome, retry_after = opened, opened.outcome, opened.retry_after
                    continue
                try:
                    outcome = Outcome.SUCCESS if await call.deliver(send, opened) else Outcome.FAILURE
                except GatewayError:  # a JSON answer that could not be read, was cut or was too large
                    outcome = Outcome.FAILURE
                    raise
                finally:
                    opened.resp.close()  # released, not drained (a client that left ends here too)
            return
        finally:
            plan.record(choice, outcome, retry_after)
    if last is None:
        plan.route.check(op)  # no key configured / no codec: the errors a single pick gave
        raise all_open(ex, plan)
    await relay_failure(send, ex, last)


class _Metadata(msgspec.Struct):
    user_id: str | None = None


_METADATA = msgspec.json.Decoder(_Metadata)


def all_open(ex: Exchange, plan: Attempts) -> GatewayError:
    """Every member of the route and its fallbacks is open or cooling down: 503 at once."""
    wait = plan.reopen_in()
    headers = {"x-should-retry": "false"}
    if wait is not None:
        headers["retry-after"] = str(max(1, math.ceil(wait)))
    return ServiceUnavailable(f"every deployment of model '{ex.model}' is unavailable right now; retry later",
                              headers=headers)


class Opened:
    """An attempt past its commit point: the response, and a stream's first chunk already read."""

    __slots__ = ("chunks", "deadline", "first", "resp")

    def __init__(self, resp: UpstreamResponse, deadline: float, chunks: AsyncIterator[bytes] | None = None,
                 first: bytes | None = None) -> None:
        self.resp = resp
        self.deadline = deadline  # loop time: bounds a JSON body (never a stream)
        self.chunks = chunks
        self.first = first


async def open_attempt(call: Any, ex: Exchange, remaining: float) -> Opened | Failure:
    """Send one attempt and wait for its commit point, writing nothing to the client. An upstream error
    is read (bounded) and closed, so it can be classified and relayed later if it stays the last."""
    upstream: Upstream = call.upstream
    timeouts = call.timeouts
    loop = asyncio.get_running_loop()
    now = loop.time()
    stream = call.stream
    left = max(remaining, 0.001)  # the request's own deadline (all attempts together)
    # A JSON answer is bounded by ``deadline``; a stream's head and first chunk only by ``first_byte``
    # (streams are never cut by the cap meant for whole answers).
    deadline = now + (left if stream else min(timeouts.deadline, left))
    first_by = min(now + timeouts.first_byte, deadline)
    ex.attempts += 1
    ex.upstream_status = None
    resp: UpstreamResponse | None = None
    first = b""
    try:
        # A stream's head and first chunk share one timer (both are due by ``first_by``); a JSON
        # answer's head is bounded inside ``send`` by ``deadline``.
        async with timer_wheel.timeout_at(first_by) if stream else timer_wheel.UNTIMED:
            resp = await upstream.send(call.op, call.body, call.headers(), stream, deadline, model=call.model,
                                       bounded=stream, **call.send_options)
            ex.upstream_status = resp.status  # it answered: a failure from here on is "cut", not "no upstream"
            if stream and resp.status < 400 and resp.headers.get("content-type", "").startswith("text/event-stream"):
                chunks = aiter(resp.chunks())
                first = await anext(chunks, b"")
            else:
                stream = False
    except TimeoutError:  # only a stream's timer raises it here
        if resp is None:
            return Failure(classify(None, timeout=True), error=UpstreamTimeout(
                f"upstream {upstream.name} did not answer within {max(first_by - now, 0):g}s"))
        resp.close()
        return Failure(classify(None, timeout=True),
                       error=UpstreamTimeout(f"upstream {upstream.name} sent no data within {timeouts.first_byte:g}s"))
    except UpstreamTimeout as err:
        return Failure(classify(None, timeout=True), error=err)
    except UpstreamUnavailable as err:
        return Failure(classify(None, connect_error=True), error=err)
    except aiohttp.ClientError as exc:  # reading the first chunk
        assert resp is not None
        resp.close()
        return Failure(classify(None), error=UpstreamUnavailable(
            f"upstream {upstream.name} connection failed ({type(exc).__name__})"))
    except BaseException:
        if resp is not None:
            resp.close()
        raise
    if resp.status >= 400:
        try:
            try:
                async with asyncio.timeout(timeouts.idle):
                    body = await resp.read(MAX_ERROR_BODY)
            except (aiohttp.ClientError, TimeoutError):
                body = b""
        finally:
            resp.close()
        return Failure(classify(resp.status, body), status=resp.status, headers=resp.headers, body=body,
                       source=call, retry_after=retry_after(resp.headers))
    if not stream:
        return Opened(resp, deadline)  # JSON (also a JSON answer to a stream request): committed at its head
    if not first:
        resp.close()
        return Failure(classify(None), error=UpstreamUnavailable(f"upstream {upstream.name} ended the stream early"))
    if first.startswith(b"event: error") and any(e in first for e in _UPSTREAM_FAULTS):
        resp.close()  # an Anthropic stream that is only an "overloaded" error: nothing reached the client yet
        return Failure(classify(None), error=Overloaded(f"upstream {upstream.name} is overloaded"))
    return Opened(resp, deadline, chunks, first)


async def relay_failure(send: Send, ex: Exchange, last: Failure) -> None:
    """The last attempt's error, as the client would have seen it without retries."""
    if last.status is None:
        assert isinstance(last.error, GatewayError)
        raise last.error
    ex.upstream_status = last.status
    await last.source.relay(send, last)


class PassThrough:
    """One pass-through attempt: the client's body with the deployment's model name, its credential."""

    __slots__ = ("body", "deployment", "ex", "key", "model", "op", "scope", "send_options", "stream", "strip_usage",
                 "timeouts", "upstream")

    def __init__(self, scope: Scope, ex: Exchange, choice: Candidate) -> None:
        deployment = choice.deployment
        upstream = deployment.upstream
        self.scope, self.ex, self.upstream, self.deployment = scope, ex, upstream, deployment
        self.key = choice.key
        self.model = deployment.model
        self.op = ex.dialect
        self.stream = ex.stream
        self.timeouts = deployment.timeouts
        self.send_options = send_options(deployment)
        replace = None
        if ex.stream and upstream.stream_options and ex.dialect is Dialect.OPENAI_CHAT:
            replace = openai_chat.forced_usage(ex.head().fields)  # ask for usage the client did not (P12)
        self.strip_usage = bool(replace)
        self.body = ex.head().body_for(deployment.model, ex.body, replace)

    def headers(self) -> dict[str, str]:
        headers = upstream_headers(self.scope, self.ex, self.upstream)
        headers.update(self.upstream.auth_headers(self.key))
        return headers

    async def relay(self, send: Send, failure: Failure) -> None:
        await relay_error_body(send, self.ex, self.upstream, failure.status or 500, failure.headers, failure.body)

    async def deliver(self, send: Send, opened: Opened) -> bool:
        return await Pipe(self.ex, self.upstream, opened.resp, send, self.strip_usage, self.timeouts).run(
            opened.deadline, opened.chunks, opened.first)


def send_options(deployment: Deployment) -> dict[str, float]:
    """A route's ``timeout`` overrides for ``Upstream.send`` (nothing when the route sets none; the
    in-process mock provider has no network timeouts to override)."""
    if deployment.timeout is None or deployment.upstream.kind.name == "mock":
        return {}
    base, own = deployment.upstream.timeout, deployment.timeout
    options = {}
    if own.first_byte != base.first_byte:
        options["first_byte"] = own.first_byte
    if own.connect != base.connect:
        options["connect"] = own.connect
    return options


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

    timer = timer_wheel.call_at(loop.time() + WATCH_AFTER, start_watching)
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
    """An upstream error response, read (bounded) and relayed (embeddings, token counting)."""
    try:
        async with asyncio.timeout(upstream.timeout.idle):
            body = await resp.read(MAX_ERROR_BODY)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    await relay_error_body(send, ex, upstream, resp.status, resp.headers, body)


async def relay_error_body(send: Send, ex: Exchange, upstream: Upstream, status: int, headers: Mapping[str, str],
                           body: bytes) -> None:
    """An upstream error in the caller's protocol passes through; anything else is re-shaped."""
    wire = WIRE[ex.dialect]
    if wire.is_native_error(body):
        content_type = (b"content-type", b"application/json")
        out = response_headers(ex, headers)
        await send_bytes(send, status, redact_credentials(body, upstream), out, content_type)
        return
    err = error_for_status(status, f"upstream {upstream.name} returned HTTP {status}")
    retry_after = headers.get("retry-after")
    if retry_after:
        err.headers["retry-after"] = retry_after
    await send_error(send, err, ex.dialect, ex.request_id)


class Pipe:
    """Writes one upstream response to the client, observing usage on the way: a stream chunk by chunk,
    a JSON answer whole (``_whole``). ``strip_usage``: the gateway asked an OpenAI upstream for usage
    the client did not want, so the usage-only chunk is taken out of the stream
    (``streaming.UsageChunkStripper``). A stream is bounded by ``idle`` between chunks (and
    ``stream_deadline`` when set), a JSON body by ``deadline``."""

    __slots__ = ("ex", "resp", "send", "strip_usage", "timeouts", "upstream")

    def __init__(self, ex: Exchange, upstream: Upstream, resp: UpstreamResponse, send: Send,
                 strip_usage: bool = False, timeouts: Timeouts | None = None) -> None:
        self.ex = ex
        self.upstream = upstream
        self.resp = resp
        self.send = send
        self.strip_usage = strip_usage
        self.timeouts = timeouts or upstream.timeout

    async def run(self, deadline: float, chunks: AsyncIterator[bytes] | None = None,
                  first: bytes | None = None) -> bool:
        """Pipe the answer (``first``: a stream's first chunk, already read from ``chunks``); False
        when a stream failed after its head was sent (the client got the dialect's error event)."""
        ex, resp, send = self.ex, self.resp, self.send
        wire = WIRE[ex.dialect]
        content_type = resp.headers.get("content-type", "application/json")
        streaming = content_type.startswith("text/event-stream")
        if not streaming:
            await self._whole(deadline, content_type)
            return True
        headers = response_headers(ex, resp.headers)
        headers += [(b"content-type", content_type.encode("latin-1")), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        feed = UsageSniffer(wire.apply_usage, ex.usage).feed
        stripper = UsageChunkStripper() if self.strip_usage else None
        last = previous = b""
        loop = asyncio.get_running_loop()
        t = self.timeouts
        idle = t.idle
        cap = loop.time() + t.stream_deadline if t.stream_deadline else math.inf
        # One loop turn per chunk, no generator in between: the first chunk (read at the commit point)
        # is taken before asking the iterator for more.
        next_chunk = (chunks if chunks is not None else aiter(resp.chunks())).__anext__
        chunk: bytes | None = first
        chunk_at = gap = 0.0  # observability: the longest gap between chunks
        try:
            async with timer_wheel.IdleTimeout(idle, cap) as timer:
                while True:
                    if chunk is None:
                        try:
                            chunk = await next_chunk()
                        except StopAsyncIteration:
                            break
                    now = timer.last = loop.time()
                    if ex.first_byte_at is None:
                        ex.first_byte_at = now
                    elif now - chunk_at > gap:
                        gap = now - chunk_at
                    chunk_at = now
                    feed(chunk)
                    previous, last = last, chunk
                    if stripper is not None:
                        chunk = stripper.feed(chunk)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    chunk = None
        except TimeoutError:
            await self._fail(UpstreamTimeout(f"upstream {self.upstream.name} stopped sending"))
            return False
        except aiohttp.ClientError as exc:
            await self._fail(UpstreamUnavailable(
                f"upstream {self.upstream.name} connection failed ({type(exc).__name__})"))
            return False
        ex.chunk_gap = max(ex.chunk_gap, gap)
        tail = (previous + last)[-256:]
        if not any(end in tail for end in _ENDINGS[ex.dialect]):
            await self._fail(UpstreamUnavailable(f"upstream {self.upstream.name} ended the stream early"))
            return False
        if stripper is not None and (rest := stripper.close()):
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        # An upstream error event ends an Anthropic stream "properly": overloaded/api errors still count.
        return b"event: error" not in tail or not any(e in tail for e in _UPSTREAM_FAULTS)


    async def _whole(self, deadline: float, content_type: str) -> None:
        """A JSON answer: read whole (bounded by the deadline and ``[requests] max_response_bytes``), then
        sent with its length in one message — before anything is sent, a cut or an oversized answer is
        still a clean 502/504, and the client gets ``content-length`` instead of chunked framing."""
        ex, resp, upstream = self.ex, self.resp, self.upstream
        limit = upstream.max_response_bytes
        if int(resp.headers.get("content-length") or 0) > limit:
            raise UpstreamUnavailable(f"upstream {upstream.name} answer exceeds {limit} bytes")
        body = await read_whole(upstream, resp, deadline, limit)
        if ex.first_byte_at is None:
            ex.first_byte_at = asyncio.get_running_loop().time()
        if len(body) <= MAX_USAGE_BODY:
            WIRE[ex.dialect].apply_usage(body, ex.usage)
        await send_bytes(self.send, resp.status, body, response_headers(ex, resp.headers),
                         (b"content-type", content_type.encode("latin-1")))

    async def _fail(self, err: GatewayError) -> None:
        """After the head is sent a status cannot change: end the SSE stream with an error event."""
        log.warning("upstream failure after response start: %s", err.message,
                    extra={"request_id": self.ex.request_id})
        await self.send({"type": "http.response.body", "body": WIRE[self.ex.dialect].error_frame(err),
                         "more_body": False})


async def read_whole(upstream: Upstream, resp: UpstreamResponse, deadline: float, limit: int) -> bytes:
    """An upstream answer read whole: 504 past ``deadline`` (loop time), 502 when the connection
    fails or the answer exceeds ``limit`` bytes."""
    try:
        async with timer_wheel.timeout_at(deadline):
            body = await resp.read(limit + 1)
    except TimeoutError:
        raise UpstreamTimeout(f"upstream {upstream.name} did not finish its answer in time") from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"upstream {upstream.name} connection failed ({type(exc).__name__})") from None
    if len(body) > limit:
        raise UpstreamUnavailable(f"upstream {upstream.name} answer exceeds {limit} bytes")
    return body


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A stream's chunks with the first one, read at the commit point, put back in front."""
    yield first
    async for chunk in rest:
        yield chunk
