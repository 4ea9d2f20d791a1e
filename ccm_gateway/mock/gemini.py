"""The mock upstream's Gemini dialect: ``/v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, steered like the others by directives in the model name
(``+status=``, ``+auth=``, ``+tools=``, ``+text=``, ``+script=``, ``+delay_ms=``, and the error and fault
directives of replies.py: ``error_type`` becomes the ErrorInfo reason, ratelimit_reset has no Gemini header)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from .faults import reset_connection
from .replies import count_tokens, error_message, fault_headers, reply_for
from .scripts import SCRIPTS

if TYPE_CHECKING:
    from .server import MockUpstream

_encode = msgspec.json.encode
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(status: int, message: str, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com"}]
    return web.Response(status=status, body=_encode({"error": error}), content_type="application/json",
                        headers=headers)


def _prompt(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role") == "user":
            return "".join(p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict))
    return ""


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\r\n\r\n"  # Gemini ends SSE lines with CRLF


def routes(server: MockUpstream) -> list[tuple[str, Any]]:
    async def generate(request: web.Request) -> web.StreamResponse:
        return await _generate(server, request, stream=False)

    async def stream(request: web.Request) -> web.StreamResponse:
        return await _generate(server, request, stream=True)

    return [("/v1beta/models/{model}:generateContent", generate),
            ("/v1beta/models/{model}:streamGenerateContent", stream)]


async def _generate(server: MockUpstream, request: web.Request, *, stream: bool) -> web.StreamResponse:
    model = request.match_info["model"]
    try:
        plan = server.plan_for(model)
        body = msgspec.json.decode(await request.read())
    except (ValueError, msgspec.DecodeError) as exc:
        return gemini_error(400, str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
        return gemini_error(400, "Invalid JSON payload received. Unknown name or missing 'contents'.")
    if stream and request.query.get("alt") != "sse":
        return gemini_error(400, "the mock only streams with alt=sse")
    key = request.headers.get("x-goog-api-key")
    if not key or (plan.auth is not None and key != plan.auth):
        return gemini_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
    if plan.ttfb_ms:
        await asyncio.sleep(plan.ttfb_ms / 1000)
    if plan.fault == "reset":
        reset_connection(request)
        raise asyncio.CancelledError  # nothing may be written: the connection is gone
    if plan.status >= 400:
        return gemini_error(plan.status, error_message(plan.status), plan.error_type, fault_headers(plan, "gemini"))
    if plan.script is not None:
        script = SCRIPTS.get(plan.script)
        if script is None or script.protocol != "gemini":
            return gemini_error(400, f"no gemini mock script named {plan.script!r}")
        if script.status >= 400:
            return web.Response(status=script.status, body=script.body, content_type="application/json")
        if stream and script.events:  # a script without events ignores ``stream`` and answers JSON
            return await server._stream(request, "gemini", list(script.events), plan.delay_ms, model, plan)
        return await server._reply_json(request, "gemini", script.body, plan, {"content-type": "application/json"})
    prompt = _prompt(body)
    reply = reply_for(plan, prompt)
    calls = [{"functionCall": {"name": f"mock_tool_{i}", "args": {"index": i, "query": f"mock query {i}"}}}
             for i in range(plan.tools)]
    usage = {"promptTokenCount": count_tokens(prompt), "candidatesTokenCount": count_tokens(reply),
             "totalTokenCount": count_tokens(prompt) + count_tokens(reply)}
    parts = ([{"text": reply}] if reply else []) + calls
    if not stream:
        return await server._reply_json(request, "gemini", _encode({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": plan.model}), plan, {"content-type": "application/json"})
    frames = [_frame({"candidates": [{"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}],
                      "modelVersion": plan.model}) for word in re.findall(r"\S+\s*|\s+", reply)]
    frames.append(_frame({"candidates": [{"content": {"role": "model", "parts": calls or [{"text": ""}]},
                                          "finishReason": "STOP", "index": 0}],
                          "usageMetadata": usage, "modelVersion": plan.model}))
    return await server._stream(request, "gemini", frames, plan.delay_ms, model, plan)
