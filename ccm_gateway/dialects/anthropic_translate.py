"""Anthropic Messages ⇄ canonical: requests, JSON responses and error bodies (PROTOCOLS §4.1–4.4).

Streams are in ``anthropic_stream.py``. Anthropic validates strictly (P24), so the upstream body is
built from an allow-list; the client's unknown fields are accepted and dropped.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from ..errors import InvalidRequest
from ..exchange import Usage
from . import anthropic_messages
from . import canonical as c

_decode = msgspec.json.decode
_encode = msgspec.json.encode
DEFAULT_MAX_TOKENS = 4096
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# --- client request → canonical ------------------------------------------------------------------------


def _source(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    return source if isinstance(source, dict) else {}


def _media(block: dict[str, Any]) -> c.Text | c.Image | c.Document | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return c.Text(text) if isinstance(text, str) and text.strip() else None
    src = _source(block)
    if kind == "image":
        if src.get("type") == "url":
            return c.Image(url=str(src.get("url", "")))
        return c.Image(media_type=str(src.get("media_type", "")), data=str(src.get("data", "")))
    if kind == "document":
        title = block.get("title") if isinstance(block.get("title"), str) else None
        stype = src.get("type")
        if stype == "url":
            return c.Document(url=str(src.get("url", "")), title=title)
        if stype == "text":
            return c.Document(media_type="text/plain", text=str(src.get("data", "")), title=title)
        if stype == "content":
            inner = src.get("content")
            text = inner if isinstance(inner, str) else "".join(
                b.get("text", "") for b in inner or () if isinstance(b, dict))
            return c.Document(media_type="text/plain", text=text, title=title)
        return c.Document(media_type=str(src.get("media_type", "application/pdf")), data=str(src.get("data", "")),
                          title=title)
    return None


def _block(block: Any) -> c.Block | None:
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    if kind == "tool_use":
        inp = block.get("input")
        return c.ToolUse(str(block.get("id", "")), str(block.get("name", "")), inp if isinstance(inp, dict) else {})
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            parts: list[c.Text | c.Image | c.Document] = [c.Text(content)] if content else []
        else:
            parts = [p for p in (_media(b) for b in content or () if isinstance(b, dict)) if p is not None]
        return c.ToolResult(str(block.get("tool_use_id", "")), parts, bool(block.get("is_error")))
    if kind == "thinking":
        return c.Thinking(str(block.get("thinking", "")), str(block.get("signature") or ""))
    if kind == "redacted_thinking":
        return c.RedactedThinking(str(block.get("data", "")))
    return _media(block)  # text, image, document; server tools and unknown blocks are dropped


def _blocks(content: Any) -> list[c.Block]:
    if isinstance(content, str):
        return [c.Text(content)] if content.strip() else []
    if isinstance(content, list):
        return [b for b in (_block(x) for x in content) if b is not None]
    return []


def decode_request(body: bytes) -> c.Request:
    """An Anthropic Messages request from a client (e.g. Claude Code) → canonical."""
    req = _decode(body)
    if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
        raise InvalidRequest("messages: expected an array", param="messages")
    system: list[c.Text] = [b for b in _blocks(req.get("system")) if isinstance(b, c.Text)]
    messages: list[c.Message] = []
    for i, m in enumerate(req["messages"]):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages.{i}: expected an object", param="messages")
        role = m.get("role")
        if role == "system":  # newer Claude Code sends mid-conversation system turns (P20): hoisted
            system.extend(b for b in _blocks(m.get("content")) if isinstance(b, c.Text))
        elif role in ("user", "assistant"):
            messages.append(c.Message(role, _blocks(m.get("content"))))
        else:
            raise InvalidRequest(f"messages.{i}.role: unknown role {role!r}", param="messages")
    tools = [
        c.Tool(t["name"], t.get("description"), t.get("input_schema") or {"type": "object", "properties": {}})
        for t in req.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("type") in (None, "custom")
    ]
    choice = req.get("tool_choice") if isinstance(req.get("tool_choice"), dict) else {}
    tool_choice = c.ToolChoice(choice["type"], choice.get("name")) if choice.get("type") else None
    thinking = req.get("thinking") if isinstance(req.get("thinking"), dict) else {}
    budget = None
    if thinking.get("type") == "enabled":
        budget = int(thinking.get("budget_tokens") or 1024)
    elif thinking.get("type") == "adaptive":
        budget = c.EFFORT_BUDGET["medium"]
    output = req.get("output_config") if isinstance(req.get("output_config"), dict) else {}
    fmt = output.get("format") or req.get("output_format")
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": "structured_output", "schema": fmt.get("schema") or {}, "strict": True}
    metadata = req.get("metadata") if isinstance(req.get("metadata"), dict) else {}
    effort = output.get("effort") if isinstance(output.get("effort"), str) else None
    return c.Request(
        model=str(req.get("model")),
        messages=c.merge_turns(messages),
        system=system,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=False if choice.get("disable_parallel_tool_use") else None,
        max_tokens=req.get("max_tokens"),
        temperature=req.get("temperature"),
        top_p=req.get("top_p"),
        top_k=req.get("top_k"),
        stop=[s for s in req.get("stop_sequences") or () if isinstance(s, str)],
        stream=bool(req.get("stream")),
        user=metadata.get("user_id") if isinstance(metadata.get("user_id"), str) else None,
        thinking_budget=budget,
        reasoning_effort=effort,
        json_schema=schema,
    )


# --- canonical → upstream request ---------------------------------------------------------------------------


def _media_out(b: Any) -> dict[str, Any]:
    if isinstance(b, c.Text):
        return {"type": "text", "text": b.text}
    if isinstance(b, c.Image):
        if b.url:
            return {"type": "image", "source": {"type": "url", "url": b.url}}
        if b.media_type not in IMAGE_TYPES:
            raise InvalidRequest(f"image: media type {b.media_type or 'unknown'!r} is not supported; "
                                 "use jpeg, png, gif or webp", param="messages")
        return {"type": "image", "source": {"type": "base64", "media_type": b.media_type, "data": b.data}}
    if isinstance(b, c.Document):
        if b.text:
            src: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": b.text}
        elif b.url:
            src = {"type": "url", "url": b.url}
        else:
            src = {"type": "base64", "media_type": b.media_type, "data": b.data}
        doc: dict[str, Any] = {"type": "document", "source": src}
        if b.title:
            doc["title"] = b.title
        return doc
    raise TypeError(type(b).__name__)


def _messages_out(req: c.Request, names: c.Names) -> list[dict[str, Any]]:
    """Anthropic's conversation rules (§1.3, §4.2 steps 2–4): ids sanitised in uses and results alike,
    unsigned thinking dropped, results first, every tool_use answered in the next user turn."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # tool_use ids of the last assistant turn still without a result
    for m in req.messages:
        blocks: list[dict[str, Any]] = []
        if m.role == "assistant":
            for b in m.content:
                if isinstance(b, c.Thinking):
                    if b.signature:  # an invented signature would be a 400 (P15)
                        blocks.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature})
                elif isinstance(b, c.RedactedThinking):
                    blocks.append({"type": "redacted_thinking", "data": b.data})
                elif isinstance(b, c.ToolUse):
                    blocks.append({"type": "tool_use", "id": names.id_out(b.id), "name": names.name_out(b.name),
                                   "input": b.input})
                elif isinstance(b, c.Text) and b.text.strip():
                    blocks.append({"type": "text", "text": b.text})
            if pending:
                out.append({"role": "user", "content": _orphans(pending)})
            pending = [b["id"] for b in blocks if b["type"] == "tool_use"]
        else:
            results: list[dict[str, Any]] = []
            for b in m.content:
                if isinstance(b, c.ToolResult):
                    tid = names.id_out(b.tool_use_id)
                    if tid in pending:
                        pending.remove(tid)
                        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tid,
                                                  "content": [_media_out(x) for x in b.content]}
                        if b.is_error:
                            result["is_error"] = True
                        results.append(result)
                    else:  # a result with no tool_use before it: keep its text rather than fail
                        text = c.block_text(b.content)
                        if text.strip():
                            blocks.append({"type": "text", "text": f"[tool result {b.tool_use_id}] {text}"})
                else:
                    blocks.append(_media_out(b))
            blocks = results + _orphans(pending) + blocks
            pending = []
        if blocks:
            if out and out[-1]["role"] == m.role:
                out[-1]["content"].extend(blocks)
            else:
                out.append({"role": m.role, "content": blocks})
    if out and out[0]["role"] == "assistant":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continued)"}]})
    return out


def _replayable(messages: list[dict[str, Any]]) -> bool:
    """Thinking can be on unless the last assistant turn used tools without starting with its thinking."""
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if last is None or not any(b["type"] == "tool_use" for b in last["content"]):
        return True
    return last["content"][0]["type"] in ("thinking", "redacted_thinking")


def _orphans(ids: list[str]) -> list[dict[str, Any]]:
    return [{"type": "tool_result", "tool_use_id": i, "is_error": True, "content": "no result was recorded"}
            for i in ids]


def encode_request(req: c.Request, model: str, names: c.Names, *, max_output: int | None) -> bytes:
    """Canonical → an Anthropic Messages upstream body, sampling and thinking constraints applied."""
    body: dict[str, Any] = {"model": model, "messages": _messages_out(req, names)}
    max_tokens = req.max_tokens or DEFAULT_MAX_TOKENS
    if max_output is not None:
        max_tokens = min(max_tokens, max_output)
    if req.system or req.json_object:
        system = [{"type": "text", "text": t.text} for t in req.system]
        if req.json_object:
            system.append({"type": "text", "text": "Respond with a JSON object only."})
        body["system"] = system
    thinking = req.thinking_budget
    if thinking and not _replayable(body["messages"]):
        thinking = None  # a tool turn without its signed thinking would be a 400 (P15): answer without thinking
    if thinking:
        budget = max(thinking, 1024)
        if max_tokens <= budget:
            max_tokens = budget + DEFAULT_MAX_TOKENS if max_output is None else max_tokens
            budget = min(budget, max_tokens - 1)
        if budget >= 1024:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        else:
            thinking = None
    body["max_tokens"] = max_tokens
    if not thinking:  # thinking needs temperature unset, and no top_p/top_k (P16)
        temperature = req.temperature
        if temperature is not None:
            body["temperature"] = min(max(float(temperature), 0.0), 1.0)
        elif req.top_p is not None:
            body["top_p"] = req.top_p
        if req.top_k is not None:
            body["top_k"] = req.top_k
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.tools:
        body["tools"] = [{"name": names.name_out(t.name), **({"description": t.description} if t.description else {}),
                          "input_schema": t.schema} for t in req.tools]
        choice: dict[str, Any] | None = None
        if req.tool_choice is not None:
            kind = req.tool_choice.type
            if thinking and kind in ("any", "tool"):
                kind = "auto"  # forced tool use is rejected with thinking
            choice = {"type": kind}
            if kind == "tool":
                choice["name"] = names.name_out(req.tool_choice.name or "")
        if req.parallel_tool_calls is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice is not None:
            body["tool_choice"] = choice
    if req.json_schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": req.json_schema.get("schema") or {}}}
    if req.stream:
        body["stream"] = True
    return _encode(body)


# --- responses ----------------------------------------------------------------------------------------------------


def usage_in(u: Any) -> Usage:
    usage = Usage()
    if isinstance(u, dict):
        with contextlib.suppress(msgspec.ValidationError):
            anthropic_messages.fill_usage(msgspec.convert(u, anthropic_messages.WireUsage), usage)
    return usage


def usage_out(u: Usage) -> dict[str, Any]:
    return {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
            "cache_read_input_tokens": u.cache_read, "output_tokens": u.output}


def decode_response(body: bytes, names: c.Names) -> c.Response:
    resp = _decode(body)
    blocks: list[c.Block] = []
    for b in resp.get("content") or ():
        block = _block(b)
        if isinstance(block, c.ToolUse):
            block = c.ToolUse(names.id_back(block.id), names.name_back(block.name), block.input)
        if block is not None:
            blocks.append(block)
    return c.Response(id=str(resp.get("id", "")), model=str(resp.get("model", "")), content=blocks,
                      stop_reason=str(resp.get("stop_reason") or "end_turn"), stop_sequence=resp.get("stop_sequence"),
                      usage=usage_in(resp.get("usage")))


def encode_response(resp: c.Response, model: str) -> bytes:
    """Canonical → an Anthropic message: thinking → text → every tool_use; usage never omitted."""
    content: list[dict[str, Any]] = []
    for b in resp.content:
        if isinstance(b, c.Text):
            if b.text:
                content.append({"type": "text", "text": b.text})
        elif isinstance(b, c.ToolUse):
            content.append({"type": "tool_use", "id": c.safe_id(b.id), "name": b.name, "input": b.input})
        elif isinstance(b, (c.Thinking, c.RedactedThinking)):
            content.append(msgspec.to_builtins(b))
    rid = resp.id if resp.id.startswith("msg_") else c.new_id("msg_")
    stop = resp.stop_reason
    if any(b["type"] == "tool_use" for b in content) and stop != "max_tokens":
        stop = "tool_use"
    elif stop == "tool_use":
        stop = "end_turn"
    return _encode({"id": rid, "type": "message", "role": "assistant", "model": model, "content": content,
                    "stop_reason": stop, "stop_sequence": resp.stop_sequence,
                    "usage": usage_out(resp.usage or Usage())})


def error_from(status: int, body: bytes) -> tuple[str, str | None]:
    """(message, error type) of an upstream Anthropic error body, or ("", None)."""
    try:
        err = _decode(body).get("error")
    except (msgspec.DecodeError, AttributeError):
        return "", None
    if isinstance(err, dict):
        return str(err.get("message") or ""), err.get("type") if isinstance(err.get("type"), str) else None
    return "", None
