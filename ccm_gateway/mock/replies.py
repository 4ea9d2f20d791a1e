"""Pure builders of exact OpenAI / Anthropic wire bytes for the mock provider.

Everything here is deterministic except ids and ``created`` timestamps, performs no I/O and applies no
delays, so the in-process mock transport and the loopback mock server (``server.py``) share one source of
truth for what a "faithful" upstream sends (PROTOCOLS.md §1.5-1.9 and §2.5-2.7).

Directives ride in the model name, ``name+key=value+…`` (:func:`parse_plan`, every value bounds-checked):

- replies: ``chunks=N``, ``delay_ms=MS`` (between stream events), ``ttfb_ms=MS`` (before the head),
  ``truncate=N`` (stream ends cleanly after N events, no terminator), ``tools=N``, ``text=URL-QUOTED``,
  ``size=BYTES``, ``auth=KEY``, ``script=NAME`` (mock/scripts.py);
- errors: ``status=CODE`` (200 or 400..599), ``error_body=native|html``, ``error_type=NAME`` (the native
  body's type/code: ``insufficient_quota``, ``context_length_exceeded``, ``overloaded_error``; 529 is
  Anthropic's ``overloaded_error`` anyway), ``retry_after=S`` (``retry-after``; a 429 sends "1" without it),
  ``retry_after_ms=MS`` (``retry-after-ms``), ``ratelimit_reset=URL-QUOTED`` (OpenAI
  ``x-ratelimit-reset-requests`` or Anthropic ``anthropic-ratelimit-requests-reset``, with that bucket's
  remaining count "0");
- faults (the loopback server only): ``fault=reset`` (the TCP connection is reset, no response head),
  ``stall_first_ms=MS`` (head sent, then MS before the first body byte; JSON and streams),
  ``reset_after=N`` (stream: the connection is closed after N events, mid-body, no terminator),
  ``stall_after=N`` with ``stall_ms=MS`` (stream: one pause of MS after N events), ``drip_bytes=K`` (stream:
  each event written in K-byte pieces, ``delay_ms`` between pieces);
- ``fail_first=N``: the error or fault directives above (and ``ttfb_ms``) apply only to the first N requests
  whose model string is exactly this one; later ones are served normally (counted per ``MockUpstream``).
"""

from __future__ import annotations

import http
import itertools
import re
import secrets
import time
from dataclasses import dataclass, replace
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
    "fault_headers",
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
    error_type: str | None = None  # native error body's type/code instead of the status's usual one
    retry_after: int | None = None  # error response: ``retry-after`` seconds
    retry_after_ms: int | None = None  # error response: ``retry-after-ms``
    ratelimit_reset: str | None = None  # error response: the requests bucket's reset header (remaining "0")
    fail_first: int | None = None  # errors/faults only for the first N requests with this exact model string
    fault: str | None = None  # "reset": abort the connection without a response
    stall_first_ms: int = 0  # pause between the response head and the first body byte
    reset_after: int | None = None  # stream: close the connection after this many events
    stall_after: int | None = None  # stream: pause ``stall_ms`` once after this many events
    stall_ms: int = 0
    drip_bytes: int | None = None  # stream: write events in pieces of this many bytes

    @property
    def faulty(self) -> bool:
        """Does this plan ask for an error or a fault (what ``fail_first`` limits)?"""
        return (self.status >= 400 or self.fault is not None or bool(self.stall_first_ms) or self.ttfb_ms > 0
                or self.reset_after is not None or self.stall_after is not None)

    def healthy(self) -> MockPlan:
        """This plan without its errors and faults (``fail_first`` exhausted)."""
        return replace(self, status=200, fault=None, stall_first_ms=0, ttfb_ms=0, reset_after=None,
                       stall_after=None, stall_ms=0, fail_first=None)


# key -> (minimum, maximum) for the integer directives; bounds keep a typo from hanging a benchmark.
_INT_DIRECTIVES: dict[str, tuple[int, int]] = {
    "status": (200, 599),
    "chunks": (1, 1_000_000),
    "delay_ms": (0, 600_000),
    "ttfb_ms": (0, 600_000),
    "truncate": (0, 10_000_000),
    "tools": (0, 128),
    "size": (0, 64 * 1024 * 1024),
    "retry_after": (0, 86_400),
    "retry_after_ms": (0, 86_400_000),
    "fail_first": (1, 1_000_000),
    "stall_first_ms": (0, 600_000),
    "reset_after": (0, 10_000_000),
    "stall_after": (0, 10_000_000),
    "stall_ms": (0, 600_000),
    "drip_bytes": (1, 1024 * 1024),
}
_STR_DIRECTIVES = ("error_body", "text", "auth", "script", "error_type", "ratelimit_reset", "fault")
_FAULTS = ("reset",)
_ERROR_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
_ERROR_ONLY = ("error_type", "retry_after", "retry_after_ms", "ratelimit_reset")
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
        elif key == "error_type":
            if not _ERROR_TYPE.fullmatch(raw):
                raise ValueError(f"mock directive 'error_type' must be a name like insufficient_quota, got {raw!r}")
            values[key] = raw
        elif key == "ratelimit_reset":
            text = unquote(raw)
            if not text or not text.isprintable() or len(text) > 64:
                raise ValueError(f"mock directive 'ratelimit_reset' must be 1..64 printable characters, got {raw!r}")
            values[key] = text
        elif key == "fault":
            if raw not in _FAULTS:
                raise ValueError(f"mock directive 'fault' must be one of {', '.join(_FAULTS)}, got {raw!r}")
            values[key] = raw
        else:
            raise ValueError(f"unknown mock directive {key!r} in model {model!r} (known: {_KNOWN})")
    plan = MockPlan(model=name, **values)
    if plan.status < 400 and any(k in values for k in _ERROR_ONLY):
        given = ", ".join(k for k in _ERROR_ONLY if k in values)
        raise ValueError(f"mock directive(s) {given} need an error status (status=400..599) in model {model!r}")
    if ("stall_after" in values) != ("stall_ms" in values):
        raise ValueError(f"mock directives 'stall_after' and 'stall_ms' go together in model {model!r}")
    if plan.fail_first is not None and not plan.faulty:
        raise ValueError(f"mock directive 'fail_first' needs an error status or a fault to limit in model {model!r}")
    return plan


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


def openai_error(status: int, message: str, error_type: str | None = None) -> bytes:
    """``{"error":{message,type,param,code}}`` with the type/code OpenAI uses for `status` (§2.7);
    ``error_type`` sets the code (and the type too when it names one, like ``insufficient_quota``)."""
    kind, code = _openai_error_kind(status)
    if error_type is not None:
        code = error_type
        if error_type.endswith("_error") or error_type == "insufficient_quota":
            kind = error_type
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


def anthropic_error(status: int, message: str, error_type: str | None = None) -> bytes:
    """``{"type":"error","error":{type,message}}`` with the type Anthropic uses for `status` (or ``error_type``)."""
    kind = error_type or anthropic_error_type(status)
    return _encode({"type": "error", "error": {"type": kind, "message": message}})


def fault_headers(plan: MockPlan, protocol: str) -> dict[str, str]:
    """The rate-limit / retry headers a planned error response carries (``retry_after``, ``retry_after_ms``,
    ``ratelimit_reset``); ``protocol`` is "openai", "anthropic" or "gemini" (no reset headers there)."""
    headers: dict[str, str] = {}
    if plan.retry_after is not None:
        headers["retry-after"] = str(plan.retry_after)
    if plan.retry_after_ms is not None:
        headers["retry-after-ms"] = str(plan.retry_after_ms)
    if plan.ratelimit_reset is not None:
        if protocol == "anthropic":
            headers["anthropic-ratelimit-requests-reset"] = plan.ratelimit_reset
            headers["anthropic-ratelimit-requests-remaining"] = "0"
        elif protocol == "openai":
            headers["x-ratelimit-reset-requests"] = plan.ratelimit_reset
            headers["x-ratelimit-remaining-requests"] = "0"
    return headers


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
