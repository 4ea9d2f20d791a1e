"""OpenAI Chat Completions ⇄ canonical: requests, JSON responses and error bodies (PROTOCOLS §4.1–4.4).

Streams are in ``openai_stream.py``. Requests are decoded leniently (unknown client fields are
accepted and never forwarded); upstream bodies are built from an allow-list of fields.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec

from ..errors import GatewayError, InvalidRequest
from ..exchange import Usage
from . import canonical as c
from . import openai_chat

_decode = msgspec.json.decode
_encode = msgspec.json.encode

STOP_TO_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length"}
FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                  "content_filter": "refusal"}


def stop_reason(finish: str | None, has_tools: bool) -> str:
    """OpenAI finish_reason → canonical; tool calls win over anything but truncation (P7)."""
    reason = FINISH_TO_STOP.get(finish or "stop", "end_turn")
    if has_tools and reason != "max_tokens":
        return "tool_use"
    return "end_turn" if reason == "tool_use" else reason


def finish_reason(stop: str, has_tools: bool) -> str:
    """Canonical → OpenAI; ``tool_calls`` exactly when tool calls were produced (unless truncated)."""
    finish = STOP_TO_FINISH.get(stop, "stop")
    if has_tools and finish != "length":
        return "tool_calls"
    return "stop" if finish == "tool_calls" else finish


# --- client request → canonical ------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _part(part: Any) -> c.Text | c.Image | c.Document | None:
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return c.Text(text) if isinstance(text, str) and text.strip() else None
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
        if not isinstance(url, str) or not url:
            raise InvalidRequest("image_url.url: expected a URL", param="messages")
        if url.startswith("data:"):
            parsed = c.parse_data_url(url)
            if parsed is None or not parsed[0].startswith("image/"):
                raise InvalidRequest("image_url: data URL must be data:image/<type>;base64,…", param="messages")
            return c.Image(media_type=parsed[0], data=parsed[1])
        return c.Image(url=url)
    if kind == "file":
        file = part.get("file") if isinstance(part.get("file"), dict) else {}
        data = file.get("file_data")
        parsed = c.parse_data_url(data) if isinstance(data, str) else None
        if parsed is None:
            raise InvalidRequest("file: only inline file_data (a base64 data URL) can be translated", param="messages")
        return c.Document(media_type=parsed[0] or "application/pdf", data=parsed[1], title=file.get("filename"))
    if kind == "input_audio":
        raise InvalidRequest("input_audio is not supported by this model's provider", param="messages")
    return None


def _content(content: Any) -> list[c.Block]:
    if isinstance(content, str):
        return [c.Text(content)] if content.strip() else []
    if isinstance(content, list):
        return [b for b in (_part(p) for p in content) if b is not None]
    return []


def _arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) → an object; never forward invalid JSON upstream."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = _decode(raw)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _assistant(m: dict[str, Any]) -> list[c.Block]:
    blocks: list[c.Block] = []
    replay = m.get("thinking_blocks")
    if isinstance(replay, list):
        for b in replay:
            if isinstance(b, dict) and b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
                blocks.append(c.RedactedThinking(b["data"]))
            elif isinstance(b, dict) and isinstance(b.get("thinking"), str):
                blocks.append(c.Thinking(b["thinking"], b.get("signature") or ""))
    elif isinstance(m.get("reasoning_content"), str) and m["reasoning_content"]:
        blocks.append(c.Thinking(m["reasoning_content"]))
    text = _text_of(m.get("content"))
    if text.strip():
        blocks.append(c.Text(text))
    for call in m.get("tool_calls") or ():
        fn = (call.get("function") or {}) if isinstance(call, dict) else {}
        if not isinstance(fn.get("name"), str):
            raise InvalidRequest("tool_calls[].function.name: field required", param="messages")
        blocks.append(c.ToolUse(str(call.get("id") or c.new_id("call_")), fn["name"], _arguments(fn.get("arguments"))))
    return blocks


def decode_request(body: bytes) -> c.Request:
    """An OpenAI chat request from a client → canonical (system/developer messages hoisted, §4.2)."""
    req = _decode(body)
    if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
        raise InvalidRequest("messages: expected an array", param="messages")
    if isinstance(req.get("n"), int) and req["n"] > 1:
        raise InvalidRequest("n: only 1 choice can be produced by this model's provider", param="n")
    system: list[c.Text] = []
    messages: list[c.Message] = []
    for i, m in enumerate(req["messages"]):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages.{i}: expected an object", param="messages")
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text_of(m.get("content"))
            if text.strip():
                system.append(c.Text(text))
        elif role == "user":
            messages.append(c.Message("user", _content(m.get("content"))))
        elif role == "assistant":
            messages.append(c.Message("assistant", _assistant(m)))
        elif role in ("tool", "function"):
            tool_id = m.get("tool_call_id") or m.get("name") or ""
            content = m.get("content")
            parts: list[c.Text | c.Image | c.Document] = (
                [c.Text(content)] if isinstance(content, str) else
                [b for b in _content(content) if not isinstance(b, (c.ToolUse, c.ToolResult))]  # type: ignore[misc]
            )
            messages.append(c.Message("user", [c.ToolResult(str(tool_id), parts)]))
        else:
            raise InvalidRequest(f"messages.{i}.role: unknown role {role!r}", param="messages")
    tools = []
    for t in req.get("tools") or ():
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            schema = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
            tools.append(c.Tool(fn["name"], fn.get("description"), {"type": "object", "properties": {}, **schema}))
    choice = req.get("tool_choice")
    tool_choice = None
    if choice in ("auto", "none"):
        tool_choice = c.ToolChoice(choice)
    elif choice == "required":
        tool_choice = c.ToolChoice("any")
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        tool_choice = c.ToolChoice("tool", choice["function"].get("name"))
    stop = req.get("stop")
    fmt = req.get("response_format") if isinstance(req.get("response_format"), dict) else {}
    effort = req.get("reasoning_effort")
    options = req.get("stream_options") if isinstance(req.get("stream_options"), dict) else {}
    parallel = req.get("parallel_tool_calls")
    return c.Request(
        model=str(req.get("model")),
        messages=c.merge_turns(messages),
        system=system,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        max_tokens=req.get("max_completion_tokens") or req.get("max_tokens"),
        temperature=req.get("temperature"),
        top_p=req.get("top_p"),
        stop=[stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)],
        stream=bool(req.get("stream")),
        include_usage=bool(options.get("include_usage")),
        user=req.get("user") or req.get("safety_identifier"),
        reasoning_effort=effort if isinstance(effort, str) and effort != "none" else None,
        thinking_budget=c.EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None,
        json_schema=fmt.get("json_schema") if fmt.get("type") == "json_schema" else None,
        json_object=fmt.get("type") == "json_object",
    )


# --- canonical → upstream request ------------------------------------------------------------------------


def _parts_out(blocks: list[Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, c.Text):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, c.Image):
            url = b.url or f"data:{b.media_type};base64,{b.data}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(b, c.Document):
            if b.text:
                parts.append({"type": "text", "text": b.text})
            elif b.data:
                parts.append({"type": "file", "file": {"file_data": f"data:{b.media_type};base64,{b.data}",
                                                       "filename": b.title or "document.pdf"}})
            else:
                raise InvalidRequest("document: URL sources cannot be sent to this model's provider", param="messages")
    return parts


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _unanswered(ids: list[str]) -> list[dict[str, Any]]:
    """Every tool call needs a tool message before the next turn (P3): a missing one is an error result."""
    return [{"role": "tool", "tool_call_id": i, "content": "Error: no result was recorded"} for i in ids]


def encode_request(req: c.Request, model: str, names: c.Names, *, compat: bool, stream_options: bool,
                   max_output: int | None) -> bytes:
    """Canonical → an OpenAI (``compat=False``) or OpenAI-compatible upstream body (§4.1)."""
    msgs: list[dict[str, Any]] = []
    if req.system:
        system = "\n\n".join(t.text for t in req.system)
        if req.json_object:
            system += "\n\nRespond with a JSON object only."
        msgs.append({"role": "system", "content": system})
    pending: list[str] = []  # tool_call ids of the last assistant turn still without a tool message
    for m in req.messages:
        if m.role == "user":
            follow: list[dict[str, Any]] = []
            rest: list[Any] = []
            for b in m.content:
                if isinstance(b, c.ToolResult):
                    tid = c.original_id(b.tool_use_id)
                    text = c.block_text(b.content)
                    if b.is_error:
                        text = "Error: " + text
                    if tid not in pending:  # no tool call before it: OpenAI would reject a lone tool message
                        rest.append(c.Text(f"[tool result {b.tool_use_id}] {text}"))
                        continue
                    pending.remove(tid)
                    msgs.append({"role": "tool", "tool_call_id": tid, "content": text})
                    follow.extend(_parts_out([x for x in b.content if not isinstance(x, c.Text)]))  # no images in tool
                else:
                    rest.append(b)
            msgs.extend(_unanswered(pending))
            pending = []
            parts = follow + _parts_out(rest)
            if parts:
                msgs.append({"role": "user", "content": _user_content(parts)})
        else:
            msgs.extend(_unanswered(pending))
            out: dict[str, Any] = {"role": "assistant"}
            text = "".join(b.text for b in m.content if isinstance(b, c.Text))
            out["content"] = text or None
            calls = [
                {"id": c.original_id(b.id), "type": "function",
                 "function": {"name": names.name_out(b.name), "arguments": _encode(b.input).decode()}}
                for b in m.content if isinstance(b, c.ToolUse)
            ]
            if calls:
                out["tool_calls"] = calls
            thinking = "".join(b.thinking for b in m.content if isinstance(b, c.Thinking))
            if compat and thinking:
                out["reasoning_content"] = thinking  # DeepSeek/Kimi want it back (P15)
            if out["content"] is None and not calls:
                out["content"] = ""
            msgs.append(out)
            pending = [call["id"] for call in calls]
    body: dict[str, Any] = {"model": model, "messages": msgs}
    max_tokens = req.max_tokens
    if max_tokens is not None and max_output is not None:
        max_tokens = min(max_tokens, max_output)
    if max_tokens is not None:
        body["max_tokens" if compat else "max_completion_tokens"] = max_tokens
    reasoning = req.reasoning_effort or (c.budget_to_effort(req.thinking_budget) if req.thinking_budget else None)
    if reasoning and not compat:
        body["reasoning_effort"] = reasoning
    else:
        if req.temperature is not None:
            body["temperature"] = req.temperature
        if req.top_p is not None:
            body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = req.stop[:4]
    if req.user:
        body["user"] = req.user
    if req.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": names.name_out(t.name),
                                              **({"description": t.description} if t.description else {}),
                                              "parameters": t.schema}}
            for t in req.tools
        ]
        choice = req.tool_choice
        if choice is not None:
            if choice.type == "tool" and choice.name:
                body["tool_choice"] = {"type": "function", "function": {"name": names.name_out(choice.name)}}
            else:
                body["tool_choice"] = {"any": "required"}.get(choice.type, choice.type)
        if req.parallel_tool_calls is False:
            body["parallel_tool_calls"] = False
    if req.json_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": req.json_schema}
    elif req.json_object:
        body["response_format"] = {"type": "json_object"}
    if req.stream:
        body["stream"] = True
        if stream_options:
            body["stream_options"] = {"include_usage": True}
    return _encode(body)


# --- responses -----------------------------------------------------------------------------------------------


def usage_in(u: Any) -> Usage:
    """An OpenAI usage object → normalised Usage (prompt_tokens includes the cache, §4.8)."""
    usage = Usage()
    if isinstance(u, dict):
        with contextlib.suppress(msgspec.ValidationError):
            openai_chat.fill_usage(msgspec.convert(u, openai_chat.WireUsage), usage)
    return usage


def usage_out(u: Usage) -> dict[str, Any]:
    prompt = u.input + u.cache_read + u.cache_write
    details: dict[str, int] = {"cached_tokens": u.cache_read}
    if u.cache_write:
        details["cache_write_tokens"] = u.cache_write
    return {"prompt_tokens": prompt, "completion_tokens": u.output, "total_tokens": prompt + u.output,
            "prompt_tokens_details": details, "completion_tokens_details": {"reasoning_tokens": u.reasoning}}


def decode_response(body: bytes, names: c.Names) -> c.Response:
    """An upstream chat.completion → canonical: thinking, text, then every tool call (§4.4)."""
    resp = _decode(body)
    choice = (resp.get("choices") or [{}])[0]
    m = choice.get("message") or {}
    blocks: list[c.Block] = []
    replay = m.get("thinking_blocks")
    reasoning = m.get("reasoning_content") or m.get("reasoning")
    if isinstance(replay, list) and replay:
        blocks.extend(b for b in _assistant({"thinking_blocks": replay}))
    elif isinstance(reasoning, str) and reasoning:
        blocks.append(c.Thinking(reasoning))
    text = _text_of(m.get("content"))
    if text:
        blocks.append(c.Text(text))
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append(c.ToolUse(names.id_back(call.get("id") or c.new_id("call_")), names.name_back(fn.get("name", "")),
                                _arguments(fn.get("arguments"))))
    has_tools = any(isinstance(b, c.ToolUse) for b in blocks)
    return c.Response(id=str(resp.get("id") or c.new_id("chatcmpl-")), model=str(resp.get("model") or ""),
                      content=blocks, stop_reason=stop_reason(choice.get("finish_reason"), has_tools),
                      usage=usage_in(resp.get("usage")))


def encode_response(resp: c.Response, model: str) -> bytes:
    """Canonical → a chat.completion for an OpenAI client (§4.3); thinking kept for replay."""
    text = "".join(b.text for b in resp.content if isinstance(b, c.Text))
    calls = [{"id": b.id, "type": "function", "function": {"name": b.name, "arguments": _encode(b.input).decode()}}
             for b in resp.content if isinstance(b, c.ToolUse)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    thinking = [b for b in resp.content if isinstance(b, (c.Thinking, c.RedactedThinking))]
    if thinking:
        reasoning = "".join(b.thinking for b in thinking if isinstance(b, c.Thinking))
        if reasoning:
            message["reasoning_content"] = reasoning
        message["thinking_blocks"] = [msgspec.to_builtins(b) for b in thinking]
    rid = resp.id if resp.id.startswith("chatcmpl") else "chatcmpl-" + resp.id
    body = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(resp.stop_reason, bool(calls))}],
            "usage": usage_out(resp.usage or Usage())}
    return _encode(body)


# --- errors ------------------------------------------------------------------------------------------------------


def error_from(status: int, body: bytes) -> tuple[str, str | None]:
    """(message, code) of an upstream OpenAI error body, or ("", None) when it is not one."""
    try:
        err = _decode(body).get("error")
    except (msgspec.DecodeError, AttributeError):
        return "", None
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else err.get("type")
        return str(err.get("message") or ""), code if isinstance(code, str) else None
    if isinstance(err, str):
        return err, None
    return "", None


def error_chunk(err: GatewayError) -> bytes:
    from .openai_chat import error_frame

    return error_frame(err)
