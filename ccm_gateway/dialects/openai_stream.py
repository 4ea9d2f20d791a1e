"""OpenAI chat.completion.chunk streams ⇄ canonical stream events (PROTOCOLS §2.6, §4.5, §4.6).

``StreamDecoder`` reads an upstream's chunks, including the non-conformant shapes of compat servers
(P9, P13): a missing tool ``index``, index 0 reused for a second call, whole arguments per chunk,
content and finish_reason in one chunk. ``StreamEncoder`` writes chunks for an OpenAI client.
Both keep all state per instance (one per request, P25).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from msgspec import Struct

from ..errors import GatewayError, UpstreamError
from ..exchange import Usage
from . import canonical as c
from .openai_chat import WireUsage
from .openai_translate import FINISH_TO_STOP, error_from, finish_reason, usage_out
from .translate_errors import upstream_error

_encode = msgspec.json.encode


class _Fn(Struct):
    name: str | None = None
    arguments: Any = None  # a string; some servers send an object


class _ToolCall(Struct):
    index: int | None = None
    id: str | None = None
    function: _Fn | None = None


class _Delta(Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: Any = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(Struct):
    choices: list[_Choice] | None = None
    usage: WireUsage | None = None
    error: Any = None


_chunk = msgspec.json.Decoder(_Chunk)
_any = msgspec.json.Decoder()


class _Tool:
    __slots__ = ("args", "held", "id", "index")

    def __init__(self, index: int, tool_id: str) -> None:
        self.index = index
        self.id = tool_id
        self.args = ""
        self.held = ""  # the last fragment, held while the arguments so far form a complete JSON value


def _complete(text: str) -> bool:
    if not text.rstrip().endswith("}"):
        return False
    try:
        _any.decode(text)
    except msgspec.DecodeError:
        return False
    return True


def fn_arguments(call: _ToolCall) -> str:
    fn = call.function
    if fn is None or fn.arguments is None:
        return ""
    return fn.arguments if isinstance(fn.arguments, str) else _encode(fn.arguments).decode()


class StreamDecoder(c.SSEDecoder):
    """Upstream OpenAI SSE bytes → canonical events; ``done`` once the stream finished properly."""

    __slots__ = ("_current", "_keys", "_names", "_tools", "done", "finished", "parsed")

    def __init__(self, names: c.Names) -> None:
        super().__init__()
        self._names = names
        self._keys: dict[int, _Tool] = {}
        self._tools: list[_Tool] = []
        self._current: _Tool | None = None
        self.finished = False  # a finish_reason was seen
        self.done = False  # [DONE] seen
        self.parsed = False  # a chunk was understood (the client's stream may start, even if it said nothing)

    def _end(self, out: list[c.Ev]) -> None:
        self._flush(out)

    @property
    def complete(self) -> bool:
        return self.finished

    def _flush(self, out: list[c.Ev]) -> None:
        tool = self._current
        if tool is not None and tool.held:
            out.append(c.ToolArgs(tool.index, tool.held))
            tool.held = ""

    def _event(self, data: bytes, out: list[c.Ev]) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        try:
            chunk = _chunk.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # not a chunk we understand (e.g. a vendor's keep-alive payload)
        if chunk.error is not None:
            message, code = error_from(500, data)
            out.append(c.ErrorEv(upstream_error(500, message or "upstream stream error", code)))
            return
        self.parsed = True
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_content or (delta.reasoning if isinstance(delta.reasoning, str) else None)
                if reasoning:
                    self._flush(out)
                    self._current = None
                    out.append(c.ThinkingDelta(reasoning))
                if delta.content:
                    self._flush(out)
                    self._current = None
                    out.append(c.TextDelta(delta.content))
                if delta.tool_calls:
                    for position, call in enumerate(delta.tool_calls):
                        self._tool_call(position, call, out)
            if choice.finish_reason:  # after the content of the same chunk (P13)
                self._flush(out)
                self.finished = True
                out.append(c.Finish(FINISH_TO_STOP.get(choice.finish_reason, "end_turn")))
        u = chunk.usage
        if u is not None:
            d = u.prompt_tokens_details
            read = (d.cached_tokens or 0) if d else 0
            write = (d.cache_write_tokens or 0) if d else 0
            r = u.completion_tokens_details
            out.append(c.UsageEv(input=max((u.prompt_tokens or 0) - read - write, 0), output=u.completion_tokens or 0,
                                 cache_read=read, cache_write=write, reasoning=(r.reasoning_tokens or 0) if r else 0))

    def _tool_call(self, position: int, call: _ToolCall, out: list[c.Ev]) -> None:
        key = call.index if call.index is not None else position  # P9: index missing → array position
        tool = self._keys.get(key)
        if tool is None or (call.id and call.id != tool.id):  # P9: index 0 reused for a new call
            self._flush(out)
            tool = _Tool(len(self._tools), call.id or c.new_id("call_"))
            self._keys[key] = tool
            self._tools.append(tool)
            name = call.function.name if call.function and call.function.name else ""
            out.append(c.ToolStart(tool.index, tool.id, self._names.name_back(name)))
        elif tool is not self._current:
            # A call whose block is already closed (another call or text came in between): more
            # arguments for it cannot be streamed faithfully, and a client would run the truncated
            # call, so the stream ends with an error instead (interleaved parallel calls are rare).
            if fn_arguments(call):
                self._flush(out)
                out.append(c.ErrorEv(UpstreamError("upstream interleaved the arguments of parallel tool calls, "
                                                   "which cannot be streamed faithfully", status=502)))
            return
        self._current = tool
        fragment = fn_arguments(call)
        if not fragment:
            return
        if tool.held:
            if _complete(fragment) and not _complete(tool.args + fragment):
                # whole arguments per chunk (P9): the new value replaces the held one
                tool.args = tool.args[: len(tool.args) - len(tool.held)] + fragment
                tool.held = fragment
                return
            out.append(c.ToolArgs(tool.index, tool.held))
            tool.held = ""
        tool.args += fragment
        if _complete(tool.args):
            tool.held = fragment
        else:
            out.append(c.ToolArgs(tool.index, fragment))


class StreamEncoder:
    """Canonical events → chat.completion.chunk SSE for an OpenAI client (§4.6 and §7.3)."""

    __slots__ = ("_blocks", "_finish", "_include_usage", "_prefix", "_suffix", "_thinking", "_tools",
                 "chunk_id", "created", "model", "usage")

    def __init__(self, model: str, include_usage: bool, usage: Usage) -> None:
        self.chunk_id = c.new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = model
        self._include_usage = include_usage
        self.usage = usage
        head = _encode({"id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created,
                        "model": model})
        self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        usage_null = b',"usage":null' if include_usage else b""
        self._suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
        self._tools: dict[int, int] = {}  # canonical tool index → OpenAI tool_calls index
        self._finish: str | None = None
        self._thinking: list[Any] = []  # [text, signature, redacted data] of the block being streamed
        self._blocks = 0  # thinking_blocks entries sent (their list index)

    def start(self) -> bytes:
        return self._prefix + b'{"role":"assistant","content":""}' + self._suffix

    def keepalive(self) -> bytes:
        return b": keep-alive\n\n"

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._prefix + _encode(delta) + self._suffix

    def _end_thinking(self) -> bytes:
        """The finished thinking block as a replayable ``thinking_blocks`` entry (signature kept)."""
        if not self._thinking:
            return b""
        text, signature, redacted = self._thinking
        self._thinking = []
        index = self._blocks
        self._blocks += 1
        block = ({"index": index, "type": "redacted_thinking", "data": redacted} if redacted is not None else
                 {"index": index, "type": "thinking", "thinking": text, "signature": signature})
        return self._delta({"thinking_blocks": [block]})

    def feed(self, events: list[c.Ev]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            kind = type(ev)
            if kind is c.TextDelta:
                if self._thinking:
                    out.append(self._end_thinking())
                out.append(self._prefix + b'{"content":' + _encode(ev.text) + b"}" + self._suffix)  # type: ignore[attr-defined]
            elif kind is c.ToolArgs:
                k = self._tools.get(ev.index)  # type: ignore[attr-defined]
                if k is not None:
                    out.append(self._delta({"tool_calls": [{"index": k, "function": {"arguments": ev.fragment}}]}))  # type: ignore[attr-defined]
            elif kind is c.ThinkingDelta:
                if self._thinking and self._thinking[1]:  # a signed block ended: a new one starts
                    out.append(self._end_thinking())
                if not self._thinking:
                    self._thinking = ["", "", None]
                self._thinking[0] += ev.text  # type: ignore[attr-defined]
                out.append(self._delta({"reasoning_content": ev.text}))  # type: ignore[attr-defined]
            elif kind is c.SignatureDelta:
                if not self._thinking:
                    self._thinking = ["", "", None]
                self._thinking[1] += ev.signature  # type: ignore[attr-defined]
            elif kind is c.RedactedThinkingEv:
                out.append(self._end_thinking())
                self._thinking = ["", "", ev.data]  # type: ignore[attr-defined]
                out.append(self._end_thinking())
            elif kind is c.ToolStart:
                out.append(self._end_thinking())
                k = len(self._tools)
                self._tools[ev.index] = k  # type: ignore[attr-defined]
                call = {"index": k, "id": ev.id, "type": "function", "function": {"name": ev.name, "arguments": ""}}  # type: ignore[attr-defined]
                out.append(self._delta({"tool_calls": [call]}))
            elif kind is c.Finish:
                self._finish = ev.reason  # type: ignore[attr-defined]
            elif kind is c.UsageEv:
                ev.apply(self.usage)  # type: ignore[attr-defined]
        return b"".join(out)

    def finish(self) -> bytes:
        """The one finish chunk, the usage chunk when the client asked for it, then ``[DONE]``."""
        out = [self._end_thinking()]
        reason = finish_reason(self._finish or "end_turn", bool(self._tools))
        out.append(self._prefix + b'{},"logprobs":null,"finish_reason":"' + reason.encode() + b'"}]'
                   + (b',"usage":null' if self._include_usage else b"") + b"}\n\n")
        if self._include_usage:
            out.append(b"data: " + _encode({"id": self.chunk_id, "object": "chat.completion.chunk",
                                            "created": self.created, "model": self.model, "choices": [],
                                            "usage": usage_out(self.usage)}) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        from .openai_chat import error_frame

        return error_frame(err)
