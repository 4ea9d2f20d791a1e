"""Anthropic Messages: request head, error bodies and frames, usage from responses and events.

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
    head.integer(fields, "max_tokens")
    stream = head.flag(fields, "stream")
    return head.RequestHead(fields, model, stream)


class _ErrorDetail(Struct):
    type: str
    message: str


class _ErrorBody(Struct, tag_field="type", tag="error"):
    error: _ErrorDetail
    request_id: str | None = None


class _MaybeError(Struct):
    type: str = ""
    error: dict | None = None


_encode = msgspec.json.encode
_maybe_error = msgspec.json.Decoder(_MaybeError)


def error_body(err: GatewayError, request_id: str = "") -> bytes:
    return _encode(_ErrorBody(_ErrorDetail(err.anthropic_type, err.message), request_id or None))


def error_frame(err: GatewayError) -> bytes:
    """A mid-stream error event: the SDKs dispatch on the ``event:`` line, so it is always written."""
    return b"event: error\ndata: " + _encode(_ErrorBody(_ErrorDetail(err.anthropic_type, err.message))) + b"\n\n"


def is_native_error(body: bytes) -> bool:
    """True when an upstream error body is already Anthropic-shaped (it then passes through as is)."""
    try:
        found = _maybe_error.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return found.type == "error" and found.error is not None


# --- usage -----------------------------------------------------------------------------------------


class OutputDetails(Struct):
    thinking_tokens: int | None = None


class CacheCreation(Struct):
    """The cache writes split by TTL (newer responses); their sum is ``cache_creation_input_tokens``."""

    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class WireUsage(Struct):
    """Anthropic's usage object as it appears in responses, message_start and message_delta."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputDetails | None = None


class _Message(Struct):
    usage: WireUsage | None = None


class _Payload(Struct):
    """A whole response (``usage`` at top level), a message_delta (same) or a message_start."""

    usage: WireUsage | None = None
    message: _Message | None = None


_payload = msgspec.json.Decoder(_Payload)


def apply_usage(payload: bytes | memoryview, usage: Usage) -> None:
    """Fill ``usage`` from a response body, a message_start or a message_delta."""
    try:
        found = _payload.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    u = found.usage or (found.message.usage if found.message else None)
    if u is not None:
        fill_usage(u, usage)


def fill_usage(u: WireUsage, usage: Usage) -> None:
    """Like the SDK's accumulator: output is overwritten (it is cumulative), input and cache fields
    only when present. Anthropic's input_tokens excludes cache reads and writes (§4.8)."""
    if u.input_tokens is not None:
        usage.input = u.input_tokens
    if u.cache_read_input_tokens is not None:
        usage.cache_read = u.cache_read_input_tokens
    if u.cache_creation_input_tokens is not None:
        usage.cache_write = u.cache_creation_input_tokens
    split = u.cache_creation
    if split is not None and split.ephemeral_1h_input_tokens is not None:
        usage.cache_write_1h = split.ephemeral_1h_input_tokens  # the rest of cache_write is the 5-minute TTL
        if u.cache_creation_input_tokens is None:  # only the split was sent
            usage.cache_write = (split.ephemeral_5m_input_tokens or 0) + split.ephemeral_1h_input_tokens
    if u.output_tokens is not None:
        usage.output = u.output_tokens
    if u.output_tokens_details and u.output_tokens_details.thinking_tokens is not None:
        usage.reasoning = u.output_tokens_details.thinking_tokens
    usage.reported = True
