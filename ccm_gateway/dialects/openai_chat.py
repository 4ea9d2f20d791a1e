"""OpenAI Chat Completions: request head, error bodies and frames, usage from responses.

What pass-through needs lives here; translation to and from the canonical model is in the
``*_translate`` and ``*_stream`` modules beside it.
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from ..errors import GatewayError
from ..exchange import Usage
from . import head


def parse_head(body: bytes) -> head.RequestHead:
    fields = head.read_fields(body)
    model = head.string(fields, "model")
    head.array(fields, "messages")
    stream = head.flag(fields, "stream")
    head.obj(fields, "stream_options")
    head.integer(fields, "max_tokens", optional=True)
    head.integer(fields, "max_completion_tokens", optional=True)
    return head.RequestHead(fields, model, stream)


_OPTIONS = msgspec.json.Decoder(dict)


def forced_usage(fields: dict[str, msgspec.Raw]) -> dict[str, msgspec.Raw] | None:
    """For a stream whose client did not ask for usage (no ``stream_options.include_usage``, or an
    explicit false): the ``stream_options`` field that asks the upstream for it (the client's other
    options kept). None when the client asked itself. The caller then strips the usage-only chunk
    from what the client receives (PROTOCOLS.md §5 P12)."""
    raw = fields.get("stream_options")
    options = {} if raw is None or bytes(raw) == b"null" else _OPTIONS.decode(raw)  # parse_head checked: an object
    if options.get("include_usage") is True:
        return None
    options["include_usage"] = True
    return {"stream_options": msgspec.Raw(_encode(options))}


class _ErrorDetail(Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorBody(Struct):
    error: _ErrorDetail


class _MaybeError(Struct):
    error: dict | None = None


_encode = msgspec.json.encode
_maybe_error = msgspec.json.Decoder(_MaybeError)


def error_body(err: GatewayError, request_id: str = "") -> bytes:
    detail = _ErrorDetail(err.message, err.openai_type, err.param, err.openai_code)
    return _encode(_ErrorBody(detail))


def error_frame(err: GatewayError) -> bytes:
    """A mid-stream error: the python SDK raises APIError on a data payload with an ``error`` key."""
    return b"data: " + error_body(err) + b"\n\n"


def is_native_error(body: bytes) -> bool:
    """True when an upstream error body is already OpenAI-shaped (it then passes through as is)."""
    try:
        return _maybe_error.decode(body).error is not None
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


# --- usage -----------------------------------------------------------------------------------------


class PromptDetails(Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class WireUsage(Struct):
    """OpenAI's usage object, in responses and in the final stream chunk."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None


class _WithUsage(Struct):
    usage: WireUsage | None = None


_with_usage = msgspec.json.Decoder(_WithUsage)


def apply_usage(payload: bytes | memoryview, usage: Usage) -> None:
    """Fill ``usage`` from a response body or a stream chunk that carries a usage object."""
    try:
        found = _with_usage.decode(payload).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    if found is not None:
        fill_usage(found, usage)


def fill_usage(u: WireUsage, usage: Usage) -> None:
    """prompt_tokens includes cached (and written) tokens, completion_tokens includes reasoning
    (§4.8): the cache is taken out of input so it is never counted twice."""
    details = u.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    written = (details.cache_write_tokens or 0) if details else 0
    usage.cache_read = cached
    usage.cache_write = written
    usage.input = max((u.prompt_tokens or 0) - cached - written, 0)
    usage.output = u.completion_tokens or 0
    reasoning = u.completion_tokens_details
    usage.reasoning = (reasoning.reasoning_tokens or 0) if reasoning else 0
    usage.reported = True
