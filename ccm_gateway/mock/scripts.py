"""Recorded-shape upstream streams, replayed by the mock upstream for ``+script=NAME`` in the model name.

Each script is one upstream answer in one protocol, as a stream (SSE events exactly as providers
send them, quirks included: PROTOCOLS §5 P9, P13) and as the JSON body with the same content, so
tests can compare what a client accumulates from the translated stream with the translated JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..dialects.canonical import short_name

_encode = msgspec.json.encode
# An MCP-style tool name over 64 characters: upstreams see (and answer with) its shortened form.
LONG_TOOL_NAME = "mcp__server_with_a_long_name__" + "x" * 24 + "_tool_with_a_very_long_suffix"


@dataclass(frozen=True, slots=True)
class Script:
    protocol: str  # "openai" | "anthropic" | "gemini"
    events: tuple[bytes, ...]  # complete SSE events; a stream without its terminator is "truncated"
    body: bytes  # the non-streaming answer with the same content (b"" when there is none)
    status: int = 200  # >= 400: an HTTP error answer (``body`` is the provider's error JSON), stream or not


# --- OpenAI chat.completion.chunk streams ------------------------------------------------------------------

_OAI_HEAD = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 1760000000,
             "model": "gpt-script", "system_fingerprint": "fp_script"}
_OAI_USAGE = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160,
              "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 12}}


def _oc(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return b"data: " + _encode({**_OAI_HEAD, "choices": [choice], **extra}) + b"\n\n"


def _tc(index: int | None, fragment: str, tool_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"arguments": fragment}}
    if index is not None:
        call["index"] = index
    if tool_id:
        call.update(id=tool_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


_OAI_USAGE_CHUNK = b"data: " + _encode({**_OAI_HEAD, "choices": [], "usage": _OAI_USAGE}) + b"\n\n"
_DONE = b"data: [DONE]\n\n"
_ROLE = _oc({"role": "assistant", "content": ""})


def _oai_body(message: dict[str, Any], finish: str) -> bytes:
    return _encode({"id": "chatcmpl-script", "object": "chat.completion", "created": 1760000000,
                    "model": "gpt-script", "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                                         "logprobs": None, "finish_reason": finish}],
                    "usage": _OAI_USAGE})


def _call(tool_id: str, name: str, args: str) -> dict[str, Any]:
    return {"id": tool_id, "type": "function", "function": {"name": name, "arguments": args}}


_WEATHER = '{"city": "Paris", "unit": "celsius"}'
_TIME = '{"timezone": "Europe/Paris"}'

OPENAI_SCRIPTS: dict[str, Script] = {
    "oai_text": Script("openai", (
        _ROLE, _oc({"content": "Hello"}), _oc({"content": ", world"}), _oc({"content": "!"}), _oc(finish="stop"),
        _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": "Hello, world!"}, "stop")),
    "oai_tool": Script("openai", (
        _ROLE, _oc({"content": "Let me check."}),
        _oc(_tc(0, "", "call_w1", "get_weather")), _oc(_tc(0, '{"city": "Pa')), _oc(_tc(0, 'ris", "unit": "celsius"}')),
        _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": "Let me check.", "tool_calls": [_call("call_w1", "get_weather", _WEATHER)]},
                 "tool_calls")),
    "oai_parallel": Script("openai", (
        _oc({"role": "assistant", "content": None, **_tc(0, "", "call_A", "get_weather")}),
        _oc(_tc(0, '{"city": "Paris", ')), _oc(_tc(0, '"unit": "celsius"}')),
        _oc(_tc(1, "", "call_B", "get_time")), _oc(_tc(1, _TIME)),
        _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call("call_A", "get_weather", _WEATHER),
                                                  _call("call_B", "get_time", _TIME)]}, "tool_calls")),
    # A compat reasoning model (DeepSeek style): reasoning_content deltas, then a tool call; finish "stop"
    # although a tool was called (some servers do), which must still end as tool_use.
    "oai_reasoning_tool": Script("openai", (
        _ROLE, _oc({"reasoning_content": "The user wants "}), _oc({"reasoning_content": "the weather."}),
        _oc(_tc(0, "", "call_r1", "get_weather")), _oc(_tc(0, _WEATHER)),
        _oc(finish="stop"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "reasoning_content": "The user wants the weather.",
                  "tool_calls": [_call("call_r1", "get_weather", _WEATHER)]}, "stop")),
    # A fake-streamed provider: the whole answer and finish_reason in one chunk (P13), usage on it too.
    "oai_combined": Script("openai", (
        _oc({"role": "assistant", "content": "All in one chunk."}, "stop", usage=_OAI_USAGE), _DONE,
    ), _oai_body({"content": "All in one chunk."}, "stop")),
    # Ollama / Gemini-compat: tool calls without "index", each whole in one chunk (P9).
    "oai_no_index": Script("openai", (
        _ROLE, _oc(_tc(None, _WEATHER, "call_n1", "get_weather")), _oc(_tc(None, _TIME, "call_n2", "get_time")),
        _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call("call_n1", "get_weather", _WEATHER),
                                                  _call("call_n2", "get_time", _TIME)]}, "tool_calls")),
    # Whole arguments per chunk: "{}" first, then the full object (autogen#7549).
    "oai_whole_args": Script("openai", (
        _ROLE, _oc(_tc(0, "{}", "call_x1", "get_weather")), _oc(_tc(0, _WEATHER)),
        _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call("call_x1", "get_weather", _WEATHER)]}, "tool_calls")),
    # sglang/ollama: index 0 reused for a second call with a new id (P9).
    "oai_index_reused": Script("openai", (
        _ROLE, _oc(_tc(0, _WEATHER, "call_i1", "get_weather")), _oc(_tc(0, _TIME, "call_i2", "get_time")),
        _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call("call_i1", "get_weather", _WEATHER),
                                                  _call("call_i2", "get_time", _TIME)]}, "tool_calls")),
    "oai_error": Script("openai", (
        _ROLE, _oc({"content": "Partial"}),
        b'data: {"error":{"message":"The server had an error while processing your request.","type":"server_error",'
        b'"param":null,"code":null}}\n\n',
    ), b""),
    "oai_length": Script("openai", (
        _ROLE, _oc(_tc(0, "", "call_t1", "get_weather")), _oc(_tc(0, '{"city": "Pa')), _oc(finish="length"),
        _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call("call_t1", "get_weather", '{"city": "Pa')]}, "length")),
    "oai_filtered": Script("openai", (
        _ROLE, _oc({"content": "I can"}), _oc(finish="content_filter"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": "I can"}, "content_filter")),
    "oai_error_first": Script("openai", (
        b'data: {"error":{"message":"Rate limit reached.","type":"requests","param":null,'
        b'"code":"rate_limit_exceeded"}}\n\n',
    ), b""),
    "oai_truncated": Script("openai", (_ROLE, _oc({"content": "Cut off mid"}), _oc({"content": " sentence"})), b""),
    "oai_long_name": Script("openai", (
        _ROLE, _oc(_tc(0, "", "call_l1", short_name(LONG_TOOL_NAME))),
        _oc(_tc(0, "{}")), _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), b""),
}

# --- Anthropic Messages streams ---------------------------------------------------------------------------------

_ANT_USAGE_START = {"input_tokens": 20, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 100,
                    "output_tokens": 1}
_ANT_USAGE_END = {"input_tokens": 20, "cache_creation_input_tokens": 30, "cache_read_input_tokens": 100,
                  "output_tokens": 55}


def _ae(kind: str, **data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **data}) + b"\n\n"


def _astart() -> bytes:
    return _ae("message_start", message={"id": "msg_script", "type": "message", "role": "assistant",
                                         "model": "claude-script", "content": [], "stop_reason": None,
                                         "stop_sequence": None, "usage": _ANT_USAGE_START})


def _ablock(index: int, block: dict[str, Any], *deltas: dict[str, Any]) -> tuple[bytes, ...]:
    return (_ae("content_block_start", index=index, content_block=block),
            *(_ae("content_block_delta", index=index, delta=d) for d in deltas),
            _ae("content_block_stop", index=index))


def _aend(stop: str) -> tuple[bytes, ...]:
    return (_ae("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage=_ANT_USAGE_END),
            _ae("message_stop"))


def _ant_body(content: list[dict[str, Any]], stop: str) -> bytes:
    return _encode({"id": "msg_script", "type": "message", "role": "assistant", "model": "claude-script",
                    "content": content, "stop_reason": stop, "stop_sequence": None, "usage": _ANT_USAGE_END})


def _text(index: int, *pieces: str) -> tuple[bytes, ...]:
    return _ablock(index, {"type": "text", "text": ""}, *({"type": "text_delta", "text": p} for p in pieces))


def _tool(index: int, tool_id: str, name: str, *fragments: str) -> tuple[bytes, ...]:
    return _ablock(index, {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
                   *({"type": "input_json_delta", "partial_json": f} for f in ("", *fragments)))


_PING = _ae("ping")
_SIG = "EqQBCkYIBxgCKkDsignatureScript0123456789=="

ANTHROPIC_SCRIPTS: dict[str, Script] = {
    "ant_text": Script("anthropic", (
        _astart(), *_text(0, "Hello", ", world", "!"), _PING, *_aend("end_turn"),
    ), _ant_body([{"type": "text", "text": "Hello, world!"}], "end_turn")),
    "ant_thinking_tool": Script("anthropic", (
        _astart(),
        *_ablock(0, {"type": "thinking", "thinking": "", "signature": ""},
                 {"type": "thinking_delta", "thinking": "The user wants "},
                 {"type": "thinking_delta", "thinking": "the weather."},
                 {"type": "signature_delta", "signature": _SIG}),
        *_text(1, "Let me check."),
        *_tool(2, "toolu_01A", "get_weather", '{"city": "Pa', 'ris", "unit": "celsius"}'),
        *_aend("tool_use"),
    ), _ant_body([{"type": "thinking", "thinking": "The user wants the weather.", "signature": _SIG},
                  {"type": "text", "text": "Let me check."},
                  {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                   "input": {"city": "Paris", "unit": "celsius"}}], "tool_use")),
    "ant_parallel": Script("anthropic", (
        _astart(), *_tool(0, "toolu_01B", "get_weather", '{"city": "Paris", ', '"unit": "celsius"}'),
        *_tool(1, "toolu_01C", "get_time", _TIME), *_aend("tool_use"),
    ), _ant_body([{"type": "tool_use", "id": "toolu_01B", "name": "get_weather",
                   "input": {"city": "Paris", "unit": "celsius"}},
                  {"type": "tool_use", "id": "toolu_01C", "name": "get_time", "input": {"timezone": "Europe/Paris"}}],
                 "tool_use")),
    "ant_redacted": Script("anthropic", (
        _astart(), *_ablock(0, {"type": "redacted_thinking", "data": "opaque-redacted-data"}),
        *_text(1, "Done."), *_aend("end_turn"),
    ), _ant_body([{"type": "redacted_thinking", "data": "opaque-redacted-data"}, {"type": "text", "text": "Done."}],
                 "end_turn")),
    "ant_max_tokens": Script("anthropic", (
        _astart(), *_tool(0, "toolu_01D", "get_weather", '{"city": "Pa'), *_aend("max_tokens"),
    ), b""),
    "ant_refusal": Script("anthropic", (
        _astart(), *_text(0, "I can"), *_aend("refusal"),
    ), _ant_body([{"type": "text", "text": "I can"}], "refusal")),
    "ant_error": Script("anthropic", (
        _astart(), *_text(0, "Partial"),
        _ae("error", error={"type": "overloaded_error", "message": "Overloaded"}),
    ), b""),
    "ant_error_first": Script("anthropic", (
        _ae("error", error={"type": "overloaded_error", "message": "Overloaded"}),
    ), b""),
    "ant_truncated": Script("anthropic", (_astart(), *_text(0, "Cut off mid", " sentence")[:3]), b""),
}

SCRIPTS: dict[str, Script] = {**OPENAI_SCRIPTS, **ANTHROPIC_SCRIPTS}

# --- Gemini streamGenerateContent?alt=sse frames --------------------------------------------------------------------

_GEM_USAGE = {"promptTokenCount": 120, "cachedContentTokenCount": 100, "candidatesTokenCount": 28,
              "thoughtsTokenCount": 12, "totalTokenCount": 160}
_GEM_SIG = "CiQBjz1rX2thoughtSignature+script/0123=="


def _gf(parts: list[dict[str, Any]], finish: str | None = None, usage: bool = False) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    frame: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-script", "responseId": "resp-script"}
    if usage:
        frame["usageMetadata"] = _GEM_USAGE
    return b"data: " + _encode(frame) + b"\r\n\r\n"


def _gem_body(parts: list[dict[str, Any]], finish: str) -> bytes:
    return _encode({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish,
                                    "index": 0}], "usageMetadata": _GEM_USAGE, "modelVersion": "gemini-script",
                    "responseId": "resp-script"})


_GEM_CALLS = [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}},
               "thoughtSignature": _GEM_SIG},
              {"functionCall": {"name": "get_time", "args": {"timezone": "Europe/Paris"}}}]

GEMINI_SCRIPTS: dict[str, Script] = {
    "gem_text": Script("gemini", (
        _gf([{"text": "Thinking about ", "thought": True}]), _gf([{"text": "greetings.", "thought": True}]),
        _gf([{"text": "Hello"}]), _gf([{"text": ", world!"}], "STOP", usage=True),
    ), _gem_body([{"text": "Thinking about greetings.", "thought": True}, {"text": "Hello, world!"}], "STOP")),
    # Two parallel calls, whole in one frame; only the first carries the signature; finishReason STOP (P7).
    "gem_tools": Script("gemini", (
        _gf([{"text": "Let me check."}]), _gf(_GEM_CALLS), _gf([], "STOP", usage=True),
    ), _gem_body([{"text": "Let me check."}, *_GEM_CALLS], "STOP")),
    "gem_one_tool": Script("gemini", (
        _gf([_GEM_CALLS[0]], "STOP", usage=True),
    ), _gem_body([_GEM_CALLS[0]], "STOP")),
    "gem_error_first": Script("gemini", (
        b'data: {"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}\r\n\r\n',
    ), b""),
    "gem_max_tokens": Script("gemini", (_gf([{"text": "Cut"}], "MAX_TOKENS", usage=True),),
                             _gem_body([{"text": "Cut"}], "MAX_TOKENS")),
    "gem_safety": Script("gemini", (_gf([], "SAFETY", usage=True),), _gem_body([], "SAFETY")),
    "gem_error": Script("gemini", (
        _gf([{"text": "Partial"}]),
        b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\r\n\r\n',
    ), b""),
    "gem_truncated": Script("gemini", (_gf([{"text": "Cut off mid"}]),), b""),
}

SCRIPTS.update(GEMINI_SCRIPTS)


# --- Matrix additions: quirks and errors replayed for every protocol pair (tests/test_translate_matrix.py) ----------


def _split(events: tuple[bytes, ...], size: int, crlf: bool = False) -> tuple[bytes, ...]:
    """The same stream cut at arbitrary byte boundaries (every ``size`` bytes), optionally with CRLF lines."""
    whole = b"".join(events)
    if crlf:
        whole = whole.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return tuple(whole[i:i + size] for i in range(0, len(whole), size))


def _err(protocol: str, status: int, error: dict[str, Any]) -> Script:
    return Script(protocol, (), _encode({"type": "error", "error": error} if protocol == "anthropic"
                                        else {"error": error}), status)


_KIMI_ID = "functions.get_weather:0"
MATRIX_SCRIPTS: dict[str, Script] = {
    # Kimi/Moonshot-style tool id, not valid for Anthropic (P2).
    "oai_kimi_id": Script("openai", (
        _ROLE, _oc(_tc(0, _WEATHER, _KIMI_ID, "get_weather")), _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), _oai_body({"content": None, "tool_calls": [_call(_KIMI_ID, "get_weather", _WEATHER)]}, "tool_calls")),
    # Arguments of two parallel calls interleaved: call 0 is not finished when call 1 starts.
    "oai_interleaved": Script("openai", (
        _ROLE, _oc(_tc(0, '{"cmd": "rm -rf /tmp/x', "call_1", "bash")), _oc(_tc(1, "{}", "call_2", "noop")),
        _oc(_tc(0, '"}')), _oc(finish="tool_calls"), _OAI_USAGE_CHUNK, _DONE,
    ), b""),
    "ant_long_name": Script("anthropic", (
        _astart(), *_tool(0, "toolu_01L", short_name(LONG_TOOL_NAME), "{}"), *_aend("tool_use"),
    ), _ant_body([{"type": "tool_use", "id": "toolu_01L", "name": short_name(LONG_TOOL_NAME), "input": {}}],
                 "tool_use")),
    "gem_long_name": Script("gemini", (
        _gf([{"functionCall": {"name": short_name(LONG_TOOL_NAME), "args": {}}}], "STOP", usage=True),
    ), _gem_body([{"functionCall": {"name": short_name(LONG_TOOL_NAME), "args": {}}}], "STOP")),
    # Providers that ignore ``stream: true`` and answer JSON (no events: the JSON body even for a stream).
    "oai_ignores_stream": Script("openai", (), OPENAI_SCRIPTS["oai_tool"].body),
    "ant_ignores_stream": Script("anthropic", (), ANTHROPIC_SCRIPTS["ant_thinking_tool"].body),
    "gem_ignores_stream": Script("gemini", (), GEMINI_SCRIPTS["gem_tools"].body),
    # HTTP errors with the providers' own bodies (PROTOCOLS §4.12).
    "oai_402": _err("openai", 402, {"message": "Payment required.", "type": "billing", "param": None, "code": None}),
    "oai_quota": _err("openai", 429, {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                                      "param": None, "code": "insufficient_quota"}),
    "oai_context": _err("openai", 400, {"message": "This model's maximum context length is 128000 tokens.",
                                        "type": "invalid_request_error", "param": "messages",
                                        "code": "context_length_exceeded"}),
    "ant_402": _err("anthropic", 402, {"type": "billing_error", "message": "Your credit balance is too low."}),
    "ant_context": _err("anthropic", 400, {"type": "invalid_request_error",
                                           "message": "prompt is too long: 210000 tokens > 200000 maximum"}),
    "ant_500_overloaded": _err("anthropic", 500, {"type": "overloaded_error", "message": "Overloaded"}),
    "gem_context": _err("gemini", 400, {"code": 400, "status": "INVALID_ARGUMENT",
                                        "message": "The input token count exceeds the maximum number of tokens."}),
    "gem_deadline": _err("gemini", 504, {"code": 504, "status": "DEADLINE_EXCEEDED", "message": "Deadline expired."}),
}
for _name in ("oai_parallel", "ant_thinking_tool", "gem_tools"):  # arbitrary chunk boundaries, CRLF lines
    _script = SCRIPTS[_name]
    MATRIX_SCRIPTS[_name + "_split"] = Script(_script.protocol, _split(_script.events, 7, crlf=True), _script.body)
SCRIPTS.update(MATRIX_SCRIPTS)
