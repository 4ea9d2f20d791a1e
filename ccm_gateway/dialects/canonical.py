"""The gateway's neutral model of a chat call: cross-dialect calls go client → canonical → upstream.

Requests and responses are msgspec Structs of typed content blocks (close to Anthropic's, which is
the richest of the three). Stream events are tiny slotted classes: decoders turn upstream bytes into
them and encoders turn them into client bytes, each with its own per-request state (PROTOCOLS §5 P25).
Stop reasons use Anthropic's vocabulary (end_turn, max_tokens, stop_sequence, tool_use, refusal,
pause_turn).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

import msgspec
from msgspec import Struct, field

from ..errors import GatewayError
from ..exchange import Usage
from ..streaming import SSEParser

# --- content blocks ---------------------------------------------------------------------------------


class Text(Struct, tag="text", tag_field="type"):
    text: str


class Image(Struct, tag="image", tag_field="type"):
    media_type: str = ""
    data: str = ""  # base64 without a data: prefix
    url: str = ""  # a remote URL instead of data


class Document(Struct, tag="document", tag_field="type"):
    media_type: str = "application/pdf"
    data: str = ""  # base64
    url: str = ""
    text: str = ""  # a plain-text document
    title: str | None = None


class ToolUse(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]
    signature: str | None = None  # Gemini thoughtSignature, replayed on the same part


class ToolResult(Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: list[Text | Image | Document]
    is_error: bool = False


class Thinking(Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""  # empty: unsigned (compat reasoning_content); never replayed to Anthropic


class RedactedThinking(Struct, tag="redacted_thinking", tag_field="type"):
    data: str


Block = Text | Image | Document | ToolUse | ToolResult | Thinking | RedactedThinking


class Message(Struct):
    role: str  # "user" | "assistant"
    content: list[Block]


class Tool(Struct):
    name: str
    description: str | None = None
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoice(Struct):
    type: str  # "auto" | "any" | "tool" | "none"
    name: str | None = None


class Request(Struct, kw_only=True):
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # False ⇄ disable_parallel_tool_use
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # the client asked for OpenAI's usage chunk
    user: str | None = None
    thinking_budget: int | None = None  # thinking on, with this budget
    reasoning_effort: str | None = None  # as the client said it (OpenAI), or derived
    json_schema: dict[str, Any] | None = None  # {"name", "schema", "strict"?}
    json_object: bool = False


class Response(Struct, kw_only=True):
    id: str
    model: str
    content: list[Block]
    stop_reason: str
    stop_sequence: str | None = None
    usage: Any = None  # an exchange.Usage


# --- stream events ------------------------------------------------------------------------------------


class Ev:
    __slots__ = ()


class TextDelta(Ev):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class ThinkingDelta(Ev):
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class SignatureDelta(Ev):
    __slots__ = ("signature",)

    def __init__(self, signature: str) -> None:
        self.signature = signature


class RedactedThinkingEv(Ev):
    __slots__ = ("data",)

    def __init__(self, data: str) -> None:
        self.data = data


class ToolStart(Ev):
    """A new tool call; ``index`` is the canonical tool number (0, 1, … in order of appearance)."""

    __slots__ = ("id", "index", "name", "signature")

    def __init__(self, index: int, id: str, name: str, signature: str | None = None) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.signature = signature


class ToolArgs(Ev):
    __slots__ = ("fragment", "index")

    def __init__(self, index: int, fragment: str) -> None:
        self.index = index
        self.fragment = fragment


class Finish(Ev):
    __slots__ = ("reason", "stop_sequence")

    def __init__(self, reason: str, stop_sequence: str | None = None) -> None:
        self.reason = reason
        self.stop_sequence = stop_sequence


class UsageEv(Ev):
    """Usage seen so far; None fields are unknown (merge, do not overwrite with them)."""

    __slots__ = ("cache_read", "cache_write", "cache_write_1h", "input", "output", "reasoning")

    def __init__(self, input: int | None = None, output: int | None = None, cache_read: int | None = None,
                 cache_write: int | None = None, reasoning: int | None = None,
                 cache_write_1h: int | None = None) -> None:
        self.input = input
        self.output = output
        self.cache_read = cache_read
        self.cache_write = cache_write
        self.reasoning = reasoning
        self.cache_write_1h = cache_write_1h  # ⊂ cache_write: Anthropic's 1-hour TTL writes

    def apply(self, usage: Usage) -> None:
        for name in ("input", "output", "cache_read", "cache_write", "reasoning", "cache_write_1h"):
            value = getattr(self, name)
            if value is not None:
                setattr(usage, name, value)
        usage.reported = True


class ErrorEv(Ev):
    __slots__ = ("error",)

    def __init__(self, error: GatewayError) -> None:
        self.error = error


# --- per-request maps: tool names over 64 characters, tool-call ids -----------------------------------

MAX_TOOL_NAME = 64
_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")


def short_name(name: str) -> str:
    """A stable ≤64-character name: 55 characters, ``_``, 8 hex of sha256 (LiteLLM's scheme, P18)."""
    if len(name) <= MAX_TOOL_NAME:
        return name
    return name[:55] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]


_ID_PREFIX = "ccmid_"


def safe_id(tool_id: str) -> str:
    """An id matching Anthropic's ``^[a-zA-Z0-9_-]+$`` (P2). Other ids (``functions.Bash:0``) are
    encoded reversibly — prefix + url-safe base64 — so the next turn can give the upstream its own id
    back (``original_id``) without any state kept between requests."""
    if _ID_OK.match(tool_id) and not tool_id.startswith(_ID_PREFIX):
        return tool_id
    return _ID_PREFIX + base64.urlsafe_b64encode(tool_id.encode()).decode().rstrip("=")


def original_id(tool_id: str) -> str:
    """The id an upstream gave, from ``safe_id``'s encoding (other ids are returned as they are)."""
    if not tool_id.startswith(_ID_PREFIX):
        return tool_id
    raw = tool_id[len(_ID_PREFIX):]
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return tool_id


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class Names:
    """Per-request tool-name and tool-id maps, so the upstream's answer is restored for the client."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # upstream name → client name
        self.ids: dict[str, str] = {}  # upstream id → client id

    def name_out(self, name: str) -> str:
        short = short_name(name)
        if short != name:
            self.names[short] = name
        return short

    def name_back(self, name: str) -> str:
        return self.names.get(name, name)

    def id_out(self, tool_id: str) -> str:
        safe = safe_id(tool_id)
        if safe != tool_id:
            self.ids[safe] = tool_id
        return safe

    def id_back(self, tool_id: str) -> str:
        return self.ids.get(tool_id, original_id(tool_id))


# --- small shared helpers -------------------------------------------------------------------------------

_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*?);base64,(.*)$", re.S)
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"%PDF", "application/pdf"))


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<payload>`` → (mime, payload); the mime is sniffed when missing."""
    m = _DATA_URL.match(url.strip())
    if not m:
        return None
    mime, payload = m.group(1).strip().lower(), "".join(m.group(3).split())
    if not mime:
        import base64

        try:
            head = base64.b64decode(payload[:16] + "=" * (-len(payload[:16]) % 4))
        except ValueError:
            head = b""
        mime = next((t for magic, t in _MAGIC if head.startswith(magic)), "")
        if not mime and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            mime = "image/webp"
    return mime, payload


def block_text(blocks: list[Text | Image | Document]) -> str:
    return "\n".join(b.text for b in blocks if isinstance(b, Text))


def merge_turns(messages: list[Message]) -> list[Message]:
    """Drop empty turns and merge consecutive same-role turns, tool results first (P3)."""
    out: list[Message] = []
    for m in messages:
        if not m.content:
            continue
        if out and out[-1].role == m.role:
            out[-1].content.extend(m.content)
        else:
            out.append(Message(m.role, list(m.content)))
    for m in out:
        if m.role == "user" and any(isinstance(b, ToolResult) for b in m.content):
            m.content.sort(key=lambda b: not isinstance(b, ToolResult))  # stable: results first
    return out


def budget_to_effort(budget: int) -> str:
    return "high" if budget >= 4096 else "medium" if budget >= 2048 else "low"


EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}


def response_events(resp: Response) -> list[Ev]:
    """A whole response as stream events (for an upstream that answered a stream request in one piece)."""
    out: list[Ev] = []
    tools = 0
    for b in resp.content:
        if isinstance(b, Text):
            out.append(TextDelta(b.text))
        elif isinstance(b, Thinking):
            if b.thinking:
                out.append(ThinkingDelta(b.thinking))
            if b.signature:
                out.append(SignatureDelta(b.signature))
        elif isinstance(b, RedactedThinking):
            out.append(RedactedThinkingEv(b.data))
        elif isinstance(b, ToolUse):
            out.append(ToolStart(tools, b.id, b.name, b.signature))
            out.append(ToolArgs(tools, msgspec.json.encode(b.input).decode()))
            tools += 1
    out.append(Finish(resp.stop_reason, resp.stop_sequence))
    u = resp.usage
    if u is not None and u.reported:
        out.append(UsageEv(u.input, u.output, u.cache_read, u.cache_write, u.reasoning, u.cache_write_1h))
    return out


class SSEDecoder:
    """Base of the upstream stream decoders: SSE framing here (any chunk boundaries), one event at
    a time in ``_event``, and ``_end`` for what only the end of the stream can settle."""

    __slots__ = ("_sse",)

    def __init__(self) -> None:
        self._sse = SSEParser()

    def feed(self, chunk: bytes) -> list[Ev]:
        out: list[Ev] = []
        for _, data in self._sse.feed(chunk):
            self._event(data, out)
        return out

    def close(self) -> list[Ev]:
        out: list[Ev] = []
        for _, data in self._sse.close():
            self._event(data, out)
        self._end(out)
        return out

    def _event(self, data: bytes, out: list[Ev]) -> None:
        raise NotImplementedError

    def _end(self, out: list[Ev]) -> None:
        return None
