"""Pure builders of exact OpenAI / Anthropic wire bytes for the mock provider.

Everything here is deterministic except ids and ``created`` timestamps, performs no I/O and applies no
delays, so the in-process mock transport and the loopback mock server (``server.py``) share one source of
truth for what a "faithful" upstream sends (PROTOCOLS.md §1.5-1.9 and §2.5-2.7).
"""

from __future__ import annotations

import http
import itertools
import re
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import msgspec

__all__ = [
    "MockPlan",
    "RequestInfo",
    "anthropic_error",
    "anthropic_error_type",
    "anthropic_json",
    "anthropic_sse",
    "count_tokens",
    "error_message",
    "html_error",
    "new_request_id",
    "openai_error",
    "openai_json",
    "openai_sse",
    "parse_plan",
    "prompt_text",
    "read_request",
    "reply_for",
]

# Module-level codecs: building them per call costs more than encoding a small chunk.
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


# --------------------------------------------------------------------------------------------------
# Plan (directives embedded in the model name)


@dataclass(frozen=True, slots=True)
class MockPlan:
    """What the mock should do for one request; parsed from the requested model name."""

    model: str  # model name with the directives removed
    status: int = 200  # >= 400: answer with an error of this status instead of a reply
    error_body: str = "native"  # "native" = protocol-shaped error JSON; "html" = a text/html proxy page
    chunks: int | None = None  # number of text deltas in a stream (default: one per word of the reply)
    delay_ms: int = 0  # sleep between stream chunks
    ttfb_ms: int = 0  # sleep before the response head is sent
    truncate: int | None = None  # stream: stop after this many SSE events (no terminator / message_stop)
    tools: int = 0  # emit this many (parallel) tool calls after the text
    text: str | None = None  # exact reply text override (URL-unquoted)
    size: int | None = None  # reply text of about this many bytes
    auth: str | None = None  # require this API key (Bearer for OpenAI, x-api-key for Anthropic)
    script: str | None = None  # replay this recorded-shape fixture (mock/scripts.py) instead of a reply


# key -> (minimum, maximum) for the integer directives; bounds keep a typo from hanging a benchmark.
_INT_DIRECTIVES: dict[str, tuple[int, int]] = {
    "status": (200, 599),
    "chunks": (1, 1_000_000),
    "delay_ms": (0, 600_000),
    "ttfb_ms": (0, 600_000),
    "truncate": (0, 10_000_000),
    "tools": (0, 128),
    "size": (0, 64 * 1024 * 1024),
}
_STR_DIRECTIVES = ("error_body", "text", "auth", "script")
_KNOWN = ", ".join([*_INT_DIRECTIVES, *_STR_DIRECTIVES])


@lru_cache(maxsize=4096)
def parse_plan(model: str) -> MockPlan:
    """Parse ``name+key=value+...`` into a MockPlan; cached because benchmarks call it per request.

    Raises ValueError naming the offending directive for unknown keys or bad values.
    """
    if "+" not in model:
        return MockPlan(model=model)
    name, *parts = model.split("+")
    values: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise ValueError(f"mock directive {part!r} in model {model!r} must look like key=value")
        if key in values:
            raise ValueError(f"mock directive {key!r} given twice in model {model!r}")
        if key in _INT_DIRECTIVES:
            try:
                number = int(raw)
            except ValueError:
                raise ValueError(f"mock directive {key!r} expects an integer, got {raw!r}") from None
            low, high = _INT_DIRECTIVES[key]
            if not low <= number <= high or (key == "status" and 200 < number < 400):
                allowed = "200 or 400..599" if key == "status" else f"{low}..{high}"
                raise ValueError(f"mock directive {key!r} must be {allowed}, got {number}")
            values[key] = number
        elif key == "error_body":
            if raw not in ("native", "html"):
                raise ValueError(f"mock directive 'error_body' must be 'native' or 'html', got {raw!r}")
            values[key] = raw
        elif key == "text":
            values[key] = unquote(raw)
        elif key == "script":
            if not raw:
                raise ValueError("mock directive 'script' needs a fixture name")
            values[key] = raw
        elif key == "auth":
            if not raw:
                raise ValueError("mock directive 'auth' needs a non-empty key")
            values[key] = unquote(raw)
        else:
            raise ValueError(f"unknown mock directive {key!r} in model {model!r} (known: {_KNOWN})")
    return MockPlan(model=name, **values)


# --------------------------------------------------------------------------------------------------
# Request inspection


class _StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class _Envelope(msgspec.Struct):
    # `messages` stays raw so that only the last user message is ever fully decoded.
    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    messages: msgspec.Raw = msgspec.Raw()


class _MessagesOnly(msgspec.Struct):
    messages: msgspec.Raw = msgspec.Raw()


class _Role(msgspec.Struct):
    role: Any = None


class _Message(msgspec.Struct):
    role: Any = None
    content: Any = None


_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_messages_only = msgspec.json.Decoder(_MessagesOnly).decode
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_role = msgspec.json.Decoder(_Role).decode
_decode_message = msgspec.json.Decoder(_Message).decode


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The few request fields the mock reacts to, read in one msgspec pass."""

    model: str | None
    stream: bool
    include_usage: bool
    prompt: str


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: msgspec.Raw) -> str:
    if not messages:
        return ""
    try:
        items = _decode_raw_list(messages)
        for item in reversed(items):
            if _decode_role(item).role == "user":
                return _content_text(_decode_message(item).content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""
    return ""


def read_request(body: bytes) -> RequestInfo:
    """Read model / stream / include_usage / prompt from an OpenAI or Anthropic request body.

    Raises ValueError when the body is not a JSON object of the expected field types, so callers can
    answer with a native 400.
    """
    try:
        env = _decode_envelope(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"invalid JSON request body: {exc}") from None
    include_usage = bool(env.stream_options and env.stream_options.include_usage)
    return RequestInfo(env.model, bool(env.stream), include_usage, _last_user_text(env.messages))


def prompt_text(body: bytes) -> str:
    """Text of the last user message (string content or concatenated text parts/blocks), else ""."""
    try:
        return _last_user_text(_decode_messages_only(body).messages)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


# --------------------------------------------------------------------------------------------------
# Reply text and token counts

_DEFAULT_PREFIX = "Hello from the ccm_gateway mock. You said: "
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
    "quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
)


@lru_cache(maxsize=64)
def _sized_text(size: int) -> str:
    # Exactly `size` ASCII bytes of words; never ends in a space so it looks like prose.
    text = (_WORDS * (size // len(_WORDS) + 1))[:size]
    if text.endswith(" "):
        text = text[:-1] + "."
    return text


def reply_for(plan: MockPlan, prompt: str) -> str:
    """The deterministic reply text: `text` override, else `size` bytes of words, else an echo."""
    if plan.text is not None:
        return plan.text
    if plan.size is not None:
        return _sized_text(plan.size)
    return _DEFAULT_PREFIX + prompt[:200]


def count_tokens(text: str) -> int:
    """Rough deterministic token count (4 chars per token, at least 1) so usage is never zero."""
    return max(1, len(text) // 4)


_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")


def _split_text(reply: str, chunks: int | None) -> list[str]:
    """Pieces whose concatenation is `reply`: one per word, or exactly `chunks` near-equal pieces."""
    if chunks is None:
        return _WORD_BOUNDARY.split(reply) if reply else []
    base, extra = divmod(len(reply), chunks)
    pieces, start = [], 0
    for i in range(chunks):
        end = start + base + (1 if i < extra else 0)
        pieces.append(reply[start:end])
        start = end
    return pieces


# --------------------------------------------------------------------------------------------------
# Ids and tool calls

_RUN = secrets.token_hex(4)
_counter = itertools.count(1)


def _new_id(prefix: str) -> str:
    """Unique per process and per run: a random run tag plus a counter (cheaper than uuid4)."""
    return f"{prefix}{_RUN}{next(_counter):012d}"


def new_request_id(protocol: str) -> str:
    """A response request-id header value in the provider's style."""
    return _new_id("req_mock" if protocol == "anthropic" else "req-mock-")


@lru_cache(maxsize=32)
def _tool_specs(count: int) -> tuple[tuple[str, dict[str, Any], str], ...]:
    """(name, input object, input JSON) for each mock tool call; the JSON is long enough to split."""
    specs = []
    for i in range(count):
        args = {"index": i, "query": f"mock query {i}"}
        specs.append((f"mock_tool_{i}", args, _encode(args).decode()))
    return tuple(specs)


def _halves(text: str) -> tuple[str, str]:
    mid = len(text) // 2
    return text[:mid], text[mid:]


def _output_tokens(reply: str, tools: tuple[tuple[str, dict[str, Any], str], ...]) -> int:
    return count_tokens(reply + "".join(name + args for name, _, args in tools))


# --------------------------------------------------------------------------------------------------
# OpenAI Chat Completions (PROTOCOLS §2.5-2.6)


def _openai_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def openai_json(plan: MockPlan, model: str, prompt_tokens: int, reply: str) -> bytes:
    """A non-streaming ``chat.completion`` body (content null when only tool calls are returned)."""
    tools = _tool_specs(plan.tools)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply or (None if tools else ""),
        "refusal": None,
    }
    if tools:
        message["tool_calls"] = [
            {"id": _new_id("call_mock"), "type": "function", "function": {"name": name, "arguments": args}}
            for name, _, args in tools
        ]
    body = {
        "id": _new_id("chatcmpl-mock"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tools else "stop",
            }
        ],
        "usage": _openai_usage(prompt_tokens, _output_tokens(reply, tools)),
    }
    return _encode(body)


def openai_sse(
    plan: MockPlan, model: str, prompt_tokens: int, reply: str, include_usage: bool
) -> list[bytes]:
    """Complete ``data: …\\n\\n`` events of a chat.completion.chunk stream, ``data: [DONE]`` last.

    Chunks are assembled from a shared prefix/suffix because large streams are benchmark hot paths.
    """
    tools = _tool_specs(plan.tools)
    head = {
        "id": _new_id("chatcmpl-mock"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_mock",
    }
    head_json = _encode(head)
    prefix = b"data: " + head_json[:-1] + b',"choices":[{"index":0,"delta":'
    suffix = (b',"usage":null' if include_usage else b"") + b"}\n\n"
    open_tail = b',"logprobs":null,"finish_reason":null}]' + suffix

    events = [prefix + b'{"role":"assistant","content":""}' + open_tail]
    events.extend(
        prefix + _encode({"content": piece}) + open_tail for piece in _split_text(reply, plan.chunks)
    )
    for index, (name, _, args) in enumerate(tools):
        first = {
            "index": index,
            "id": _new_id("call_mock"),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(prefix + _encode({"tool_calls": [first]}) + open_tail)
        for fragment in _halves(args):
            delta = {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            events.append(prefix + _encode(delta) + open_tail)
    finish = b'"tool_calls"' if tools else b'"stop"'
    events.append(prefix + b'{},"logprobs":null,"finish_reason":' + finish + b"}]" + suffix)
    if include_usage:
        usage = _openai_usage(prompt_tokens, _output_tokens(reply, tools))
        events.append(b"data: " + _encode({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events if plan.truncate is None else events[: plan.truncate]


def _openai_error_kind(status: int) -> tuple[str, str | None]:
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 403:
        return "permission_error", None
    if status == 404:
        return "invalid_request_error", "model_not_found"
    if status == 429:
        return "rate_limit_exceeded", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def openai_error(status: int, message: str) -> bytes:
    """``{"error":{message,type,param,code}}`` with the type/code OpenAI uses for `status` (§2.7)."""
    kind, code = _openai_error_kind(status)
    return _encode({"error": {"message": message, "type": kind, "param": None, "code": code}})


# --------------------------------------------------------------------------------------------------
# Anthropic Messages (PROTOCOLS §1.5-1.9)

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic ``error.type`` for an HTTP status (§1.9); unknown statuses are ``api_error``."""
    return _ANTHROPIC_ERROR_TYPES.get(status, "api_error")


def anthropic_error(status: int, message: str) -> bytes:
    """``{"type":"error","error":{type,message}}`` with the type Anthropic uses for `status`."""
    return _encode({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})


def _has_text_block(reply: str, tools: tuple[tuple[str, dict[str, Any], str], ...]) -> bool:
    """Whether a text block is emitted: always, unless the reply is empty and tool calls follow."""
    return bool(reply) or not tools


def anthropic_json(plan: MockPlan, model: str, prompt_tokens: int, reply: str) -> bytes:
    """A non-streaming ``message`` body with the same blocks the stream would accumulate to."""
    tools = _tool_specs(plan.tools)
    content: list[dict[str, Any]] = []
    if _has_text_block(reply, tools):
        content.append({"type": "text", "text": reply})
    content.extend(
        {"type": "tool_use", "id": _new_id("toolu_mock"), "name": name, "input": args}
        for name, args, _ in tools
    )
    body = {
        "id": _new_id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tools else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": _output_tokens(reply, tools),
        },
    }
    return _encode(body)


def _event(kind: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + kind + b"\ndata: " + _encode(data) + b"\n\n"


_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def anthropic_sse(plan: MockPlan, model: str, prompt_tokens: int, reply: str) -> list[bytes]:
    """Complete ``event: …\\ndata: …\\n\\n`` events in the exact §1.8 order, message_stop last."""
    tools = _tool_specs(plan.tools)
    start = {
        "type": "message_start",
        "message": {
            "id": _new_id("msg_mock"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        },
    }
    events = [_event(b"message_start", start)]
    index = 0
    if _has_text_block(reply, tools):
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        events += [_event(b"content_block_start", block), _PING]
        prefix = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
        events.extend(
            prefix + _encode({"type": "text_delta", "text": piece}) + b"}\n\n"
            for piece in _split_text(reply, plan.chunks)
        )
        events.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for name, _, args in tools:
        shell = {"type": "tool_use", "id": _new_id("toolu_mock"), "name": name, "input": {}}
        events.append(
            _event(
                b"content_block_start",
                {"type": "content_block_start", "index": index, "content_block": shell},
            )
        )
        if index == 0:
            events.append(_PING)
        for fragment in ("", *_halves(args)):
            delta = {"type": "input_json_delta", "partial_json": fragment}
            events.append(
                _event(
                    b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
            )
        events.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": _output_tokens(reply, tools)},
    }
    events += [_event(b"message_delta", message_delta), _MESSAGE_STOP]
    return events if plan.truncate is None else events[: plan.truncate]


# --------------------------------------------------------------------------------------------------
# Protocol-independent error helpers

_MESSAGES = {
    400: "Invalid request (mock).",
    401: "Invalid API key (mock).",
    403: "Permission denied (mock).",
    404: "The model does not exist (mock).",
    413: "Request too large (mock).",
    429: "Rate limit exceeded (mock); retry after 1 second.",
    500: "Internal server error (mock).",
    502: "Bad gateway (mock).",
    503: "Service unavailable (mock).",
    504: "Upstream timed out (mock).",
    529: "Overloaded",
}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Error"


def error_message(status: int) -> str:
    """The default human message for a planned error of `status`."""
    return _MESSAGES.get(status) or f"Mock error: HTTP {status} {_reason(status)}."


def html_error(status: int) -> bytes:
    """A reverse proxy's HTML error page (what a misbehaving upstream hop returns instead of JSON)."""
    title = f"{status} {_reason(status)}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
