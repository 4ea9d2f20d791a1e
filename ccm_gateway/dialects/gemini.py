"""Gemini generateContent / streamGenerateContent ⇄ canonical (PROTOCOLS §3, §4.13), upstream side only.

Gemini differs from the other two in ways that need state: function calls have no ids (we
synthesize them), each call must get exactly one functionResponse in the next turn (P21), and
``thoughtSignature`` must come back on the same part (P15). The signature is carried inside the
tool-call id the client sees (``…__ts__<url-safe signature>``), so it survives any client history.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

import msgspec
from msgspec import Struct

from ..exchange import Usage
from . import canonical as c
from .translate_errors import upstream_error

_decode = msgspec.json.decode
_encode = msgspec.json.encode
_SIG = "__ts__"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.:-]")
_REFUSAL = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}

# --- ids that carry thoughtSignature ------------------------------------------------------------------------


def tool_id(signature: str | None, given: str | None = None) -> str:
    base = given if given and c.safe_id(given) == given else c.new_id("call_")
    if not signature:
        return base
    return base + _SIG + signature.replace("+", "-").replace("/", "_").rstrip("=")


def signature_of(tool_use_id: str) -> str | None:
    if _SIG not in tool_use_id:
        return None
    sig = tool_use_id.split(_SIG, 1)[1].replace("-", "+").replace("_", "/")
    return sig + "=" * (-len(sig) % 4)


def _name_out(names: c.Names, name: str) -> str:
    """Gemini names: ≤64 of ``[a-zA-Z0-9_.:-]``, starting with a letter or underscore."""
    out = _NAME_BAD.sub("_", c.short_name(name))
    if not (out[:1].isalpha() or out[:1] == "_"):
        out = ("_" + out)[:64]
    if out != name:
        names.names[out] = name
    return out


# --- JSON schema → Gemini's OpenAPI subset (P19) -------------------------------------------------------------

_KEEP = {"type", "format", "description", "nullable", "enum", "properties", "required", "items", "minItems",
         "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern", "anyOf", "propertyOrdering",
         "title", "default", "example", "minProperties", "maxProperties"}


def sanitize_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """Inline ``$ref``s, ``const`` → ``enum``, ``type: [X, "null"]`` → ``type: X, nullable``, drop the rest."""
    if not isinstance(schema, dict) or depth > 32:
        return schema
    defs = {**(defs or {}), **(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        return sanitize_schema(target, defs, depth + 1) if target is not None else {"type": "object"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key in ("oneOf", "anyOf"):
            out["anyOf"] = [sanitize_schema(v, defs, depth + 1) for v in value]
        elif key == "allOf" and value:
            out.update(sanitize_schema(value[0], defs, depth + 1))
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out["type"] = kinds[0] if kinds else "string"
            if "null" in value:
                out["nullable"] = True
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: sanitize_schema(v, defs, depth + 1) for k, v in value.items()}
        elif key == "items":
            out["items"] = sanitize_schema(value, defs, depth + 1)
        elif key in _KEEP:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


# --- canonical → Gemini request -----------------------------------------------------------------------------------


def _part(b: Any) -> dict[str, Any]:
    if isinstance(b, c.Text):
        return {"text": b.text}
    if isinstance(b, c.Image):
        if b.url:
            guessed = mimetypes.guess_type(b.url.split("?", 1)[0])[0] or ""  # an OpenAI image_url has no type
            mime = b.media_type or (guessed if guessed.startswith("image/") else "image/jpeg")
            return {"fileData": {"mimeType": mime, "fileUri": b.url}}
        return {"inlineData": {"mimeType": b.media_type, "data": b.data}}
    if isinstance(b, c.Document):
        if b.text:
            return {"text": b.text}
        if b.url:
            return {"fileData": {"mimeType": b.media_type, "fileUri": b.url}}
        return {"inlineData": {"mimeType": b.media_type, "data": b.data}}
    raise TypeError(type(b).__name__)


def _contents(req: c.Request, names: c.Names) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    calls: list[tuple[str, str]] = []  # (id, Gemini name) of the last model turn's function calls
    for m in req.messages:
        parts: list[dict[str, Any]] = []
        if m.role == "assistant":
            for b in m.content:
                if isinstance(b, c.Text) and b.text:
                    parts.append({"text": b.text})
                elif isinstance(b, c.ToolUse):
                    name = _name_out(names, b.name)
                    part: dict[str, Any] = {"functionCall": {"name": name, "args": b.input}}
                    sig = b.signature or signature_of(b.id)
                    if sig:
                        part["thoughtSignature"] = sig
                    parts.append(part)
                    calls.append((b.id, name))
            if parts:
                out.append({"role": "model", "parts": parts})
            continue
        answered: dict[str, dict[str, Any]] = {}
        for b in m.content:
            if isinstance(b, c.ToolResult):
                name = next((n for i, n in calls if i == b.tool_use_id), None)
                text = c.block_text(b.content)
                if name is None:
                    parts.append({"text": f"[tool result {b.tool_use_id}] {text}"})
                    continue
                response = {"error": text} if b.is_error else {"result": text}
                answered[b.tool_use_id] = {"functionResponse": {"name": name, "response": response}}
                parts.extend(_part(x) for x in b.content if not isinstance(x, c.Text))
            else:
                parts.append(_part(b))
        # exactly one functionResponse per functionCall, in call order (P21)
        responses = [answered.get(i) or {"functionResponse": {"name": n, "response": {"error": "no result"}}}
                     for i, n in calls]
        calls = []
        if responses or parts:
            out.append({"role": "user", "parts": responses + parts})
    return out


def encode_request(req: c.Request, model: str, names: c.Names, *, max_output: int | None) -> bytes:
    body: dict[str, Any] = {"contents": _contents(req, names)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": t.text} for t in req.system]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": _name_out(names, t.name), **({"description": t.description} if t.description else {}),
             **({"parameters": sanitize_schema(t.schema)} if t.schema.get("properties") else {})}
            for t in req.tools]}]
        choice = req.tool_choice
        if choice is not None:
            mode = {"auto": "AUTO", "any": "ANY", "tool": "ANY", "none": "NONE"}.get(choice.type, "AUTO")
            config: dict[str, Any] = {"mode": mode}
            if choice.type == "tool" and choice.name:
                config["allowedFunctionNames"] = [_name_out(names, choice.name)]
            body["toolConfig"] = {"functionCallingConfig": config}
    gen: dict[str, Any] = {}
    max_tokens = req.max_tokens
    if max_tokens is not None:
        gen["maxOutputTokens"] = min(max_tokens, max_output) if max_output else max_tokens
    for key, value in (("temperature", req.temperature), ("topP", req.top_p), ("topK", req.top_k)):
        if value is not None:
            gen[key] = value
    if req.stop:
        gen["stopSequences"] = req.stop[:5]
    if req.json_schema is not None:
        gen["responseMimeType"] = "application/json"
        gen["responseSchema"] = sanitize_schema(req.json_schema.get("schema") or {})
    elif req.json_object:
        gen["responseMimeType"] = "application/json"
    budget = req.thinking_budget or (c.EFFORT_BUDGET.get(req.reasoning_effort or "") if req.reasoning_effort else None)
    if budget:
        gen["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
    if gen:
        body["generationConfig"] = gen
    return _encode(body)


# --- responses ------------------------------------------------------------------------------------------------------


def stop_reason(finish: str | None, has_tools: bool) -> str:
    if finish == "MAX_TOKENS":
        return "max_tokens"
    if has_tools:
        return "tool_use"  # Gemini says STOP on function-call turns (P7)
    return "refusal" if finish in _REFUSAL else "end_turn"


def usage_of(u: dict[str, Any] | None) -> Usage:
    """usageMetadata → Usage: thoughts are output and billed (P14); cached content is part of the prompt."""
    usage = Usage()
    if not isinstance(u, dict):
        return usage
    cached = u.get("cachedContentTokenCount") or 0
    usage.cache_read = cached
    usage.input = max((u.get("promptTokenCount") or 0) + (u.get("toolUsePromptTokenCount") or 0) - cached, 0)
    usage.reasoning = u.get("thoughtsTokenCount") or 0
    usage.output = (u.get("candidatesTokenCount") or 0) + usage.reasoning
    usage.reported = True
    return usage


def _blocks(parts: list[dict[str, Any]], names: c.Names) -> list[c.Block]:
    blocks: list[c.Block] = []
    for p in parts:
        if "functionCall" in p:
            call = p["functionCall"] or {}
            args = call.get("args")
            blocks.append(c.ToolUse(tool_id(p.get("thoughtSignature"), call.get("id")),
                                    names.name_back(str(call.get("name", ""))), args if isinstance(args, dict) else {}))
        elif isinstance(p.get("text"), str):
            blocks.append(c.Thinking(p["text"]) if p.get("thought") else c.Text(p["text"]))
    return blocks


def decode_response(body: bytes, names: c.Names) -> c.Response:
    resp = _decode(body)
    candidate = (resp.get("candidates") or [{}])[0]
    blocks = _blocks((candidate.get("content") or {}).get("parts") or [], names)
    merged: list[c.Block] = []
    for b in blocks:  # adjacent text parts are one block
        if merged and type(b) is type(merged[-1]) and isinstance(b, (c.Text, c.Thinking)):
            prev = merged[-1]
            merged[-1] = c.Text(prev.text + b.text) if isinstance(b, c.Text) else c.Thinking(  # type: ignore[union-attr]
                prev.thinking + b.thinking)  # type: ignore[union-attr]
        else:
            merged.append(b)
    blocked = not resp.get("candidates") and (resp.get("promptFeedback") or {}).get("blockReason")
    has_tools = any(isinstance(b, c.ToolUse) for b in merged)
    return c.Response(id=str(resp.get("responseId") or c.new_id("gen_")), model=str(resp.get("modelVersion") or ""),
                      content=merged, stop_reason="refusal" if blocked else stop_reason(candidate.get("finishReason"),
                                                                                         has_tools),
                      usage=usage_of(resp.get("usageMetadata")))


def error_from(status: int, body: bytes) -> tuple[str, str | None]:
    """(message, reason or status string) of a Gemini error; API_KEY_INVALID wins (P22)."""
    try:
        err = _decode(body).get("error")
    except (msgspec.DecodeError, AttributeError):
        return "", None
    if not isinstance(err, dict):
        return "", None
    for detail in err.get("details") or ():
        if isinstance(detail, dict) and detail.get("reason") == "API_KEY_INVALID":
            return str(err.get("message") or ""), "API_KEY_INVALID"
    return str(err.get("message") or ""), err.get("status") if isinstance(err.get("status"), str) else None


# --- stream ---------------------------------------------------------------------------------------------------


class _Call(Struct):
    name: str = ""
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(Struct):
    text: str | None = None
    thought: bool = False
    functionCall: _Call | None = None
    thoughtSignature: str | None = None


class _Content(Struct):
    parts: list[_Part] | None = None


class _Candidate(Struct):
    content: _Content | None = None
    finishReason: str | None = None


class _Frame(Struct):
    candidates: list[_Candidate] | None = None
    usageMetadata: dict[str, Any] | None = None
    promptFeedback: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_frame = msgspec.json.Decoder(_Frame)


class StreamDecoder(c.SSEDecoder):
    """Gemini ``alt=sse`` frames → canonical events. Each frame carries only new parts; a function
    call arrives whole (one tool_start + one tool_args); EOF ends the stream (no ``[DONE]``)."""

    __slots__ = ("_names", "_tools", "complete", "finished", "parsed")

    def __init__(self, names: c.Names) -> None:
        super().__init__()
        self._names = names
        self._tools = 0
        self.complete = False
        self.finished = False
        self.parsed = False

    def _event(self, data: bytes, out: list[c.Ev]) -> None:
        try:
            frame = _frame.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if frame.error is not None:
            message, code = error_from(500, b'{"error":' + _encode(frame.error) + b"}")
            out.append(c.ErrorEv(upstream_error(500, message, code)))
            return
        self.parsed = True
        for cand in (frame.candidates or [])[:1]:
            for p in (cand.content.parts if cand.content else None) or ():
                if p.functionCall is not None:
                    call = p.functionCall
                    index = self._tools
                    self._tools += 1
                    tid = tool_id(p.thoughtSignature, call.id)
                    out.append(c.ToolStart(index, tid, self._names.name_back(call.name)))
                    out.append(c.ToolArgs(index, _encode(call.args or {}).decode()))
                elif p.text:
                    out.append(c.ThinkingDelta(p.text) if p.thought else c.TextDelta(p.text))
            if cand.finishReason:
                self.finished = self.complete = True
                out.append(c.Finish(stop_reason(cand.finishReason, self._tools > 0)))
        if not frame.candidates and frame.promptFeedback and frame.promptFeedback.get("blockReason"):
            self.finished = self.complete = True
            out.append(c.Finish("refusal"))
        if frame.usageMetadata:
            u = usage_of(frame.usageMetadata)
            out.append(c.UsageEv(input=u.input, output=u.output, cache_read=u.cache_read, cache_write=0,
                                 reasoning=u.reasoning))
