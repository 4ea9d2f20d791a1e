"""Anthropic Messages streams ⇄ canonical stream events (PROTOCOLS §1.8, §4.5, §4.6).

``StreamEncoder`` is the state machine of §4.5 for Anthropic clients (Claude Code): message_start
first with a seeded input estimate (P4), contiguous block indices, balanced start/stop, tool arguments
only as input_json_delta (P11), one message_delta with cumulative final usage, tool_use whenever a tool
was emitted unless truncated (P7), an ``event:`` line on every frame (P6). ``StreamDecoder`` reads an
Anthropic upstream's events.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from ..errors import GatewayError
from ..exchange import Usage
from . import canonical as c
from .anthropic_messages import WireUsage
from .translate_errors import upstream_error

_encode = msgspec.json.encode

# --- encoder: canonical → Anthropic client ------------------------------------------------------------------

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_TEXT_START = b'"content_block":{"type":"text","text":""}}\n\n'
_THINKING_START = b'"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'


def _frame(kind: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind + b"\ndata: " + _encode(payload) + b"\n\n"


class StreamEncoder:
    __slots__ = ("_emitted", "_next", "_open", "_open_kind", "_out_chars", "_stop", "_stop_seq", "_tools",
                 "estimate", "model", "msg_id", "usage")

    def __init__(self, model: str, estimate: int, usage: Usage) -> None:
        self.model = model
        self.msg_id = c.new_id("msg_")
        self.estimate = estimate
        self.usage = usage
        self._next = 0  # next block index
        self._open = -1  # index of the open block, -1 when none
        self._open_kind = ""  # "text" | "thinking" | "tool"
        self._tools: dict[int, int] = {}  # canonical tool index → block index
        self._emitted = False  # a tool_use block was emitted
        self._stop: str | None = None
        self._stop_seq: str | None = None
        self._out_chars = 0

    def start(self) -> bytes:
        start = {"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self.estimate, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1}}}
        return _frame(b"message_start", start) + _PING

    def keepalive(self) -> bytes:
        return _PING

    def _close(self, out: list[bytes]) -> None:
        if self._open >= 0:
            out.append(b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % self._open)
            self._open = -1
            self._open_kind = ""

    def _begin(self, out: list[bytes], kind: str, shell: bytes) -> int:
        self._close(out)
        index = self._next
        self._next += 1
        out.append(b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,' % index + shell)
        self._open, self._open_kind = index, kind
        return index

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":' % index
                + _encode(delta) + b"}\n\n")

    def feed(self, events: list[c.Ev]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            kind = type(ev)
            if kind is c.TextDelta:
                if self._open_kind != "text":
                    self._begin(out, "text", _TEXT_START)
                self._out_chars += len(ev.text)  # type: ignore[attr-defined]
                out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'  # hot path
                           b'"delta":{"type":"text_delta","text":%b}}\n\n' % (self._open, _encode(ev.text)))  # type: ignore[attr-defined]
            elif kind is c.ToolArgs:
                block = self._tools.get(ev.index)  # type: ignore[attr-defined]
                if block is not None and block == self._open:
                    self._out_chars += len(ev.fragment)  # type: ignore[attr-defined]
                    out.append(self._delta(block, {"type": "input_json_delta", "partial_json": ev.fragment}))  # type: ignore[attr-defined]
            elif kind is c.ThinkingDelta:
                if self._open_kind != "thinking":
                    self._begin(out, "thinking", _THINKING_START)
                self._out_chars += len(ev.text)  # type: ignore[attr-defined]
                out.append(self._delta(self._open, {"type": "thinking_delta", "thinking": ev.text}))  # type: ignore[attr-defined]
            elif kind is c.SignatureDelta:
                if self._open_kind != "thinking":
                    self._begin(out, "thinking", _THINKING_START)
                out.append(self._delta(self._open, {"type": "signature_delta", "signature": ev.signature}))  # type: ignore[attr-defined]
                self._close(out)  # the signature is the thinking block's last delta
            elif kind is c.RedactedThinkingEv:
                shell = _encode({"type": "redacted_thinking", "data": ev.data})  # type: ignore[attr-defined]
                self._begin(out, "redacted", b'"content_block":' + shell + b"}\n\n")
                self._close(out)
            elif kind is c.ToolStart:
                shell = _encode({"type": "tool_use", "id": c.safe_id(ev.id), "name": ev.name, "input": {}})  # type: ignore[attr-defined]
                self._tools[ev.index] = self._begin(out, "tool", b'"content_block":' + shell + b"}\n\n")  # type: ignore[attr-defined]
                self._emitted = True
            elif kind is c.Finish:
                self._stop = ev.reason  # type: ignore[attr-defined]
                self._stop_seq = ev.stop_sequence  # type: ignore[attr-defined]
                self._close(out)
            elif kind is c.UsageEv:
                ev.apply(self.usage)  # type: ignore[attr-defined]
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the open block; one message_delta with the final cumulative usage; message_stop."""
        out: list[bytes] = []
        self._close(out)
        stop = self._stop or "end_turn"
        if self._emitted and stop != "max_tokens":
            stop = "tool_use"
        elif stop == "tool_use":  # no tool block was emitted: a tool_use stop would mislead the client
            stop = "end_turn"
        u = self.usage
        if not u.reported:  # no usage from upstream: the estimates stand
            u.input = u.input or self.estimate
            u.output = max(1, self._out_chars // 4)
        out.append(_frame(b"message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": self._stop_seq},
            "usage": {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
                      "cache_read_input_tokens": u.cache_read, "output_tokens": u.output}}))
        out.append(_STOP)
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        from .anthropic_messages import error_frame

        return error_frame(err)


# --- decoder: Anthropic upstream → canonical -----------------------------------------------------------------


class _Block(Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    data: str | None = None


class _Delta(Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class _Message(Struct):
    usage: WireUsage | None = None


class _Error(Struct):
    type: str = "api_error"
    message: str = ""


class _Event(Struct):
    type: str = ""
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: WireUsage | None = None
    message: _Message | None = None
    error: _Error | None = None


_event = msgspec.json.Decoder(_Event)


def _usage_ev(u: WireUsage) -> c.UsageEv:
    details = u.output_tokens_details
    return c.UsageEv(input=u.input_tokens, output=u.output_tokens, cache_read=u.cache_read_input_tokens,
                     cache_write=u.cache_creation_input_tokens,
                     reasoning=details.thinking_tokens if details else None,
                     cache_write_1h=u.cache_creation.ephemeral_1h_input_tokens if u.cache_creation else None)


class StreamDecoder(c.SSEDecoder):
    """Upstream Anthropic SSE bytes → canonical events; ``complete`` once message_stop was seen."""

    __slots__ = ("_names", "_tools", "complete", "finished", "parsed")

    def __init__(self, names: c.Names) -> None:
        super().__init__()
        self._names = names
        self._tools: dict[int, int] = {}  # block index → canonical tool index
        self.complete = False
        self.finished = False
        self.parsed = False

    def _event(self, data: bytes, out: list[c.Ev]) -> None:
        try:
            ev = _event.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        kind = ev.type
        if kind != "error":
            self.parsed = True
        if kind == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            if d.type == "text_delta" and d.text:
                out.append(c.TextDelta(d.text))
            elif d.type == "input_json_delta":
                tool = self._tools.get(ev.index)
                if tool is not None and d.partial_json:
                    out.append(c.ToolArgs(tool, d.partial_json))
            elif d.type == "thinking_delta" and d.thinking:
                out.append(c.ThinkingDelta(d.thinking))
            elif d.type == "signature_delta" and d.signature:
                out.append(c.SignatureDelta(d.signature))
        elif kind == "content_block_start" and ev.content_block is not None:
            b = ev.content_block
            if b.type == "tool_use":
                tool = len(self._tools)
                self._tools[ev.index] = tool
                out.append(c.ToolStart(tool, self._names.id_back(b.id or c.new_id("toolu_")),
                                       self._names.name_back(b.name or "")))
            elif b.type == "redacted_thinking":
                out.append(c.RedactedThinkingEv(b.data or ""))
        elif kind == "message_start" and ev.message is not None and ev.message.usage is not None:
            out.append(_usage_ev(ev.message.usage))
        elif kind == "message_delta":
            if ev.delta is not None and ev.delta.stop_reason:
                self.finished = True
                out.append(c.Finish(ev.delta.stop_reason, ev.delta.stop_sequence))
            if ev.usage is not None:
                out.append(_usage_ev(ev.usage))
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error" and ev.error is not None:
            out.append(c.ErrorEv(upstream_error(500, ev.error.message, ev.error.type)))
