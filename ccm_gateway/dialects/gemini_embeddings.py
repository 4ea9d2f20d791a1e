"""OpenAI embeddings ⇄ Gemini ``models/{model}:batchEmbedContents``.

Gemini takes text only, at most ``BATCH`` texts per call, and reports no token usage: the gateway
splits larger inputs into several calls and estimates usage at ~4 characters per token (§6.4).
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from .openai_embeddings import to_base64

BATCH = 100  # Gemini's limit on requests in one batchEmbedContents call

_encode = msgspec.json.encode


class _Part(Struct):
    text: str


class _Content(Struct):
    parts: list[_Part]


class _EmbedRequest(Struct, omit_defaults=True):
    model: str
    content: _Content
    outputDimensionality: int | None = None


class _BatchRequest(Struct):
    requests: list[_EmbedRequest]


class _Values(Struct):
    values: list[float]


class _BatchResponse(Struct):
    embeddings: list[_Values]


class _ErrorDetail(Struct):
    message: str = ""
    status: str = ""


class _ErrorBody(Struct):
    error: _ErrorDetail


_decode_batch = msgspec.json.Decoder(_BatchResponse).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]


def request_body(model: str, texts: list[str], dimensions: int | None) -> bytes:
    """One batchEmbedContents body; every request names the model again, as Gemini requires."""
    name = f"models/{model}"
    requests = [_EmbedRequest(name, _Content([_Part(t)]), dimensions) for t in texts]
    return _encode(_BatchRequest(requests))


def vectors(body: bytes, expected: int) -> list[list[float]]:
    """The vectors of a batchEmbedContents answer; ValueError when it is not one or is short."""
    try:
        found = [e.values for e in _decode_batch(body).embeddings]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a batchEmbedContents response ({exc})") from None
    if len(found) != expected:
        raise ValueError(f"{len(found)} embeddings for {expected} inputs")
    return found


def estimate_tokens(texts: list[str]) -> int:
    """Gemini reports no usage for embeddings; Google's rule of thumb is ~4 characters a token."""
    return sum(max(1, (len(t) + 3) // 4) for t in texts)


def openai_response(model: str, vecs: list[list[float]], encoding_format: str, prompt_tokens: int) -> bytes:
    """The OpenAI ``{"object":"list","data":[…]}`` answer, base64 vectors when the client asked."""
    b64 = encoding_format == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": to_base64(v) if b64 else v}
        for i, v in enumerate(vecs)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return _encode({"object": "list", "data": data, "model": model, "usage": usage})


def error_message(body: bytes) -> str | None:
    """``error.message`` (with its status word) of a Gemini error body, None when it is not one."""
    try:
        err = _decode_error(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not err.message:
        return None
    return f"{err.status}: {err.message}" if err.status else err.message
