"""A loopback fake of the OpenAI and Anthropic HTTP APIs, built on :mod:`ccm_gateway.mock.replies`.

Tests point the gateway (or the official SDKs) at it and then assert on ``MockUpstream.requests``;
benchmarks use it as a zero-cost upstream, so the hot path does no logging and no per-request setup.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from . import embeddings, gemini
from .faults import close_connection, reset_connection
from .replies import (
    MockPlan,
    RequestInfo,
    anthropic_error,
    anthropic_json,
    anthropic_sse,
    count_tokens,
    error_message,
    fault_headers,
    html_error,
    new_request_id,
    openai_error,
    openai_json,
    openai_sse,
    parse_plan,
    read_request,
    reply_for,
)
from .scripts import SCRIPTS

__all__ = ["MockUpstream", "RecordedRequest", "StreamResult"]

_OPENAI = "openai"
_ANTHROPIC = "anthropic"
_MAX_RECORDED = 1000
_MAX_BODY = 64 * 1024 * 1024  # aiohttp's 1 MiB default would 413 large-context benchmarks
_encode = msgspec.json.Encoder().encode

_MODEL_IDS = ("mock-1", "gpt-4o-mini", "claude-sonnet-4-5")
_OPENAI_MODELS = _encode(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "ccm-mock"} for m in _MODEL_IDS
        ],
    }
)
_ANTHROPIC_MODELS = _encode(
    {
        "data": [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in _MODEL_IDS
        ],
        "has_more": False,
        "first_id": _MODEL_IDS[0],
        "last_id": _MODEL_IDS[-1],
    }
)


@dataclass
class RecordedRequest:
    """One request as the mock received it, so tests can assert on what the gateway forwarded."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (convenience for assertions)."""
        return msgspec.json.decode(self.body)


def _id_headers(protocol: str) -> dict[str, str]:
    if protocol == _ANTHROPIC:
        return {"request-id": new_request_id(protocol), "anthropic-ratelimit-requests-remaining": "99"}
    return {"x-request-id": new_request_id(protocol), "x-ratelimit-remaining-requests": "99"}


def _error_response(protocol: str, status: int, message: str, *, html: bool = False,
                    plan: MockPlan | None = None) -> web.Response:
    headers = _id_headers(protocol)
    if status == 429:
        headers["retry-after"] = "1"
    error_type = None
    if plan is not None:
        headers.update(fault_headers(plan, protocol))
        error_type = plan.error_type
    if html:
        headers["content-type"] = "text/html"
        body = html_error(status)
    else:
        headers["content-type"] = "application/json"
        if protocol == _ANTHROPIC:
            body = anthropic_error(status, message, error_type)
        else:
            body = openai_error(status, message, error_type)
    return web.Response(status=status, body=body, headers=headers)


def _presented_key(request: web.Request, protocol: str) -> str:
    if protocol == _ANTHROPIC and "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else auth


@dataclass
class StreamResult:
    """How far one streamed answer got: ``sent < total`` means the reader hung up early."""

    model: str
    total: int
    sent: int = 0
    reader_left: bool = False  # the reader closed the connection before the stream's end
    reset: bool = False  # the mock cut the connection on purpose (``reset_after``)


class MockUpstream:
    """A loopback fake of the OpenAI and Anthropic HTTP APIs, for tests and benchmarks."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, record: bool = True) -> None:
        self.host = host
        self.port = port
        self.record = record  # keep ``requests`` (tests); benchmarks switch it off
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamResult] = []  # every streamed answer, newest last (same cap)
        self.open_streams = 0  # responses being written right now (streams and stalled JSON)
        self._hits: dict[str, int] = {}  # exact model string → requests seen (``fail_first``, ``hits``)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- counters ---------------------------------------------------------------------------------

    def hits(self, model: str) -> int:
        """Requests seen whose model string was exactly ``model`` (directives included)."""
        return self._hits.get(model, 0)

    def reset_counters(self) -> None:
        """Forget the per-model request counts, so ``fail_first`` plans fail again."""
        self._hits = {}

    def plan_for(self, model: str) -> MockPlan:
        """Count a request for ``model`` and return its plan, without its faults once ``fail_first`` is used up.
        Raises ValueError for a bad directive (the caller answers 400)."""
        hits = self._hits[model] = self._hits.get(model, 0) + 1
        plan = parse_plan(model)
        if plan.fail_first is not None and hits > plan.fail_first:
            return plan.healthy()
        return plan

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen in the running event loop; `base_url` is valid afterwards."""
        # handler_cancellation: a handler sleeping in a stall learns at once that its reader left.
        runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=0.25, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Close the listener and any open (possibly still streaming) connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def start_in_thread(self, timeout: float = 10.0) -> MockUpstream:
        """Run the server on its own event loop in a daemon thread; returns self once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                # Connections the peer left open still have handler tasks; end them quietly.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="ccm-mock-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"mock upstream did not start within {timeout}s")
        if failure:
            raise failure[0]
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop a server started with start_in_thread and join its thread."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> MockUpstream:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    async def __aenter__(self) -> MockUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- application ------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            body = await request.read()  # aiohttp caches it, so handlers re-read for free
            requests = self.requests
            requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    headers={name.lower(): value for name, value in request.headers.items()},
                    body=body,
                )
            )
            if len(requests) > _MAX_RECORDED:
                del requests[: len(requests) - _MAX_RECORDED]
            return await handler(request)

        middlewares = [record] if self.record else []  # benchmarks run without the bookkeeping
        app = web.Application(middlewares=middlewares, client_max_size=_MAX_BODY)
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/chat/completions", self._openai_chat)
            app.router.add_get(prefix + "/models", self._models)
        app.router.add_post("/v1/messages", self._anthropic_messages)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic_count_tokens)
        for path, handler in gemini.routes(self):  # Gemini generateContent / streamGenerateContent
            app.router.add_post(path, handler)
        for path, handler in embeddings.routes(self._openai_chat):  # embeddings, Gemini, Azure deployments
            app.router.add_post(path, handler)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        anthropic = "anthropic-version" in request.headers
        protocol = _ANTHROPIC if anthropic else _OPENAI
        body = _ANTHROPIC_MODELS if anthropic else _OPENAI_MODELS
        headers = _id_headers(protocol)
        headers["content-type"] = "application/json"
        return web.Response(body=body, headers=headers)

    async def _prepare(
        self, request: web.Request, protocol: str
    ) -> tuple[RequestInfo, MockPlan] | web.Response:
        """Validate the request and apply ttfb / auth / planned errors; a Response means "answer this"."""
        if protocol == _ANTHROPIC and "anthropic-version" not in request.headers:
            return _error_response(protocol, 400, "anthropic-version: header is required")
        try:
            info = read_request(await request.read())
        except ValueError as exc:
            return _error_response(protocol, 400, str(exc))
        if not info.model:
            return _error_response(protocol, 400, "model: field required")
        try:
            plan = self.plan_for(info.model)
        except ValueError as exc:
            return _error_response(protocol, 400, str(exc))
        if plan.ttfb_ms:
            await asyncio.sleep(plan.ttfb_ms / 1000)
        if plan.fault == "reset":
            reset_connection(request)
            raise asyncio.CancelledError  # nothing may be written: the connection is gone
        if plan.auth is not None:
            ok = request.headers.get("authorization") == f"Bearer {plan.auth}"
            if protocol == _ANTHROPIC:
                # Recent anthropic SDKs send the API key as a Bearer token; the API accepts both forms.
                ok = ok or request.headers.get("x-api-key") == plan.auth
            if not ok:
                # Echo the presented key like real providers do, so redaction by the gateway is testable.
                presented = _presented_key(request, protocol)
                return _error_response(protocol, 401, f"Incorrect API key provided: {presented}")
        if plan.status >= 400:
            return _error_response(
                protocol, plan.status, error_message(plan.status), html=plan.error_body == "html", plan=plan
            )
        return info, plan

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, _OPENAI)

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, _ANTHROPIC)

    async def _chat(self, request: web.Request, protocol: str) -> web.StreamResponse:
        prepared = await self._prepare(request, protocol)
        if isinstance(prepared, web.Response):
            return prepared
        info, plan = prepared
        if plan.script is not None:
            return await self._script(request, protocol, plan, info)
        reply = reply_for(plan, info.prompt)
        prompt_tokens = count_tokens(info.prompt)
        if protocol == _OPENAI:
            if info.stream:
                events = openai_sse(plan, plan.model, prompt_tokens, reply, info.include_usage)
                return await self._stream(request, protocol, events, plan.delay_ms, info.model, plan)
            return await self._reply_json(request, protocol, openai_json(plan, plan.model, prompt_tokens, reply), plan)
        if info.stream:
            events = anthropic_sse(plan, plan.model, prompt_tokens, reply)
            return await self._stream(request, protocol, events, plan.delay_ms, info.model, plan)
        return await self._reply_json(request, protocol, anthropic_json(plan, plan.model, prompt_tokens, reply), plan)

    async def _script(
        self, request: web.Request, protocol: str, plan: MockPlan, info: RequestInfo
    ) -> web.StreamResponse:
        """Replay a recorded-shape fixture (``+script=NAME``, see scripts.py) in its own protocol."""
        script = SCRIPTS.get(plan.script or "")
        if script is None or script.protocol != protocol:
            return _error_response(protocol, 400, f"no {protocol} mock script named {plan.script!r}")
        if script.status >= 400:
            return web.Response(status=script.status, body=script.body, headers={
                **_id_headers(protocol), "content-type": "application/json"})
        if info.stream and script.events:  # a script without events ignores ``stream`` and answers JSON
            return await self._stream(request, protocol, list(script.events), plan.delay_ms, info.model, plan)
        if not script.body:
            return _error_response(protocol, 400, f"mock script {plan.script!r} has no JSON form")
        return await self._reply_json(request, protocol, script.body, plan)

    async def _anthropic_count_tokens(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._prepare(request, _ANTHROPIC)
        if isinstance(prepared, web.Response):
            return prepared
        info, _ = prepared
        return self._json(_ANTHROPIC, _encode({"input_tokens": count_tokens(info.prompt)}))

    @staticmethod
    def _json(protocol: str, body: bytes) -> web.Response:
        headers = _id_headers(protocol)
        headers["content-type"] = "application/json"
        return web.Response(body=body, headers=headers)

    async def _reply_json(
        self, request: web.Request, protocol: str, body: bytes, plan: MockPlan, headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        """A JSON answer; with ``stall_first_ms`` its head goes first and the body after the stall."""
        if not plan.stall_first_ms:
            if headers is None:
                return self._json(protocol, body)
            return web.Response(body=body, headers=headers)
        if headers is None:
            headers = _id_headers(protocol)
            headers["content-type"] = "application/json"
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        self.open_streams += 1  # before the head leaves, so a reader that has the head sees the count
        try:
            await response.prepare(request)
            await asyncio.sleep(plan.stall_first_ms / 1000)
            await response.write(body)
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.open_streams -= 1
        return response

    async def _stream(
        self, request: web.Request, protocol: str, events: list[bytes], delay_ms: int, model: str | None,
        plan: MockPlan | None = None,
    ) -> web.StreamResponse:
        headers = _id_headers(protocol)
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        delay = delay_ms / 1000
        result = StreamResult(model or "", len(events))
        if self.record:
            self.streams.append(result)
            del self.streams[:-_MAX_RECORDED]
        stall_first = plan.stall_first_ms / 1000 if plan is not None else 0.0
        reset_after = plan.reset_after if plan is not None else None
        stall_after = plan.stall_after if plan is not None else None
        drip = plan.drip_bytes if plan is not None else None
        self.open_streams += 1  # before the head leaves, so a reader that has the head sees the count
        # A client hanging up mid-stream is normal in tests (e.g. cancellation); just stop writing.
        try:
            await response.prepare(request)
            if stall_first:
                await asyncio.sleep(stall_first)
            for position, event in enumerate(events):
                if position == reset_after:
                    result.reset = True
                    close_connection(request)
                    return response
                if position == stall_after and plan is not None:
                    await asyncio.sleep(plan.stall_ms / 1000)
                if drip is None:
                    if delay and position:
                        await asyncio.sleep(delay)
                    await response.write(event)  # one write per event so each is flushed on its own
                else:
                    for start in range(0, len(event), drip):
                        if delay and (position or start):
                            await asyncio.sleep(delay)
                        await response.write(event[start:start + drip])
                result.sent += 1
        except ConnectionError:
            result.reader_left = True
        except asyncio.CancelledError:  # handler cancellation: the reader closed the connection
            result.reader_left = True
            raise
        finally:
            self.open_streams -= 1
        return response
