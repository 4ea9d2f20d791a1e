"""Mock embeddings: OpenAI ``/v1/embeddings``, Gemini ``batchEmbedContents``, and Azure's guard.

Vectors are deterministic (a hash of the input) and made of multiples of 1/1024, which float32 and
JSON both hold exactly — so a test can compare what the SDK decoded from base64 with ``vector()``.
The base64 packing is written here independently of the gateway's, so the two check each other.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:  # the in-process mock provider uses the pure builders without aiohttp.web
    from aiohttp import web
from .replies import count_tokens, error_message, new_request_id, openai_error, parse_plan

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 4096
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The mock's embedding of a text or a token-id list: values in [-1, 1], float32-exact."""
    key = item if isinstance(item, str) else "tokens:" + ",".join(map(str, item))
    raw = hashlib.shake_128(key.encode()).digest(2 * dimensions)
    return [(int.from_bytes(raw[i:i + 2], "little") % 2049 - 1024) / 1024 for i in range(0, 2 * dimensions, 2)]


def pack_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def openai_embeddings(body: bytes) -> tuple[int, bytes]:
    """(status, body) of an OpenAI embeddings answer; directives in the model name apply (+status=)."""
    try:
        req = _decode(body)
        model, items = req["model"], req["input"]
        plan = parse_plan(model)
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        return 400, openai_error(400, f"invalid embeddings request: {exc}")
    if plan.status >= 400:
        return plan.status, openai_error(plan.status, error_message(plan.status))
    dims = req.get("dimensions") or DEFAULT_DIMENSIONS
    if not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS:
        return 400, openai_error(400, f"dimensions: must be 1..{MAX_DIMENSIONS}")
    if isinstance(items, str) or (isinstance(items, list) and items and isinstance(items[0], int)):
        items = [items]
    b64 = req.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for i, item in enumerate(items):
        values = vector(item, dims)
        data.append({"object": "embedding", "index": i, "embedding": pack_base64(values) if b64 else values})
        tokens += count_tokens(item) if isinstance(item, str) else len(item)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return 200, _encode({"object": "list", "data": data, "model": plan.model, "usage": usage})


def gemini_error(status: int, message: str) -> bytes:
    """Gemini's ``{"error":{code,message,status}}`` (PROTOCOLS.md §3)."""
    return _encode({"error": {"code": status, "message": message, "status": _GEMINI_STATUS.get(status, "UNKNOWN")}})


def gemini_batch_embed(model: str, body: bytes) -> tuple[int, bytes]:
    """(status, body) of ``models/{model}:batchEmbedContents``; every request must name that model."""
    try:
        plan = parse_plan(model)
        requests = _decode(body)["requests"]
        embeddings = []
        for i, request in enumerate(requests):
            if request.get("model") != f"models/{model}":
                return 400, gemini_error(400, f"requests[{i}].model: must be models/{model}")
            text = "".join(part["text"] for part in request["content"]["parts"])
            dims = request.get("outputDimensionality") or DEFAULT_DIMENSIONS
            embeddings.append({"values": vector(text, dims)})
    except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
        return 400, gemini_error(400, f"Invalid JSON payload received. {exc}")
    if plan.status >= 400:
        return plan.status, gemini_error(plan.status, error_message(plan.status))
    if len(requests) > 100:
        return 400, gemini_error(400, "at most 100 requests can be in one batch")
    return 200, _encode({"embeddings": embeddings})


def _reply(status: int, body: bytes, request_id: str) -> web.Response:
    from aiohttp import web

    headers = {"content-type": "application/json", "x-request-id": request_id}
    if status == 429:
        headers["retry-after"] = "1"
    return web.Response(status=status, body=body, headers=headers)


async def handle_openai(request: web.Request) -> web.Response:
    status, body = openai_embeddings(await request.read())
    return _reply(status, body, new_request_id("openai"))


async def handle_gemini(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    plan_auth = _auth_directive(model)
    key = request.headers.get("x-goog-api-key")
    if not key or (plan_auth is not None and key != plan_auth):
        # Gemini answers a bad key with 400 INVALID_ARGUMENT / API_KEY_INVALID (§3), echoing nothing.
        return _reply(400, gemini_error(400, "API key not valid. Please pass a valid API key."), "")
    status, body = gemini_batch_embed(model, await request.read())
    return _reply(status, body, new_request_id("openai"))


def _auth_directive(model: str) -> str | None:
    try:
        return parse_plan(model).auth
    except ValueError:
        return None


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def azure(handler: Handler) -> Handler:
    """Azure's deployment routes: ``api-key`` header and ``api-version`` query are required, as on Azure."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("api-key"):
            body = {"error": {"code": "401", "message": "Access denied due to invalid subscription key or "
                              "wrong API endpoint. Make sure to provide a valid key for an active subscription "
                              "and use a correct regional API endpoint for your resource."}}
            return _reply(401, _encode(body), "")
        if not request.query.get("api-version"):
            return _reply(404, _encode({"error": {"code": "404", "message": "Resource not found"}}), "")
        return await handler(request)

    return guarded


def routes(chat: Handler) -> list[tuple[str, Any]]:
    """(path, handler) pairs for the server: OpenAI and Gemini embeddings, Azure chat and embeddings."""
    return [
        ("/v1/embeddings", handle_openai),
        ("/embeddings", handle_openai),
        ("/v1beta/models/{model}:batchEmbedContents", handle_gemini),
        ("/openai/deployments/{deployment}/chat/completions", azure(chat)),
        ("/openai/deployments/{deployment}/embeddings", azure(handle_openai)),
    ]
