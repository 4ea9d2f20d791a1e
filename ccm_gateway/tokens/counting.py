"""Prompt token counts: exact for OpenAI models (tiktoken's counts, from ``bpe.py`` or tiktoken, + the cookbook's chat
and tool formulas), calibrated estimates for Anthropic and Gemini models (× a per-family multiplier).

Counting is incremental: the tokens of every text are cached by the text itself (bounded by total
characters and by age), so a conversation re-sent with one new message costs one message of
byte-pair work plus a msgspec decode and a hash per message (PROTOCOLS.md §6).

With the compact engine a prompt's byte-pair merging is bounded (``bpe.MergeBudget``, ~0.7 s of CPU at
worst); a prompt that exhausts it (megabytes of text that is not whole tokens, which real prompts are
not) gets an estimate, reported as not exact, and its estimated texts are not cached.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field

import msgspec
from msgspec import Raw, Struct

from .bpe import MERGE_BUDGET, MergeBudget
from .cache import TextCache
from .encodings import Engine, get_encoding

# §6.1: tiktoken's model → encoding table (prefixes; more specific first). Anything else: o200k_base.
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5-turbo", "gpt-35-turbo", "text-embedding-ada-002", "text-embedding-3-",
                    "davinci-002", "babbage-002", "ft:gpt-4:", "ft:gpt-3.5-turbo")
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o", "ft:gpt-4o")

# §6.2 overheads (gpt-4o family constants; gpt-3.5/gpt-4 use func_init=10).
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
FUNC_INIT, PROP_INIT, PROP_KEY, ENUM_INIT, ENUM_ITEM, FUNC_END = 7, 3, 3, -3, 3, 12
FUNC_INIT_CL100K = 10
# Images: OpenAI high detail at 1024×1024 = 85 + 170 × 4 tiles; Anthropic's cap for one image (§6.3/§6.4).
OPENAI_IMAGE_HIGH, OPENAI_IMAGE_LOW = 765, 85
ANTHROPIC_IMAGE = 1600
GEMINI_IMAGE = 258
# Anthropic's tool-use system prompt (documented as a few hundred tokens; §6.3).
ANTHROPIC_TOOL_PREAMBLE = 300

_ROLE_TOKENS = {"system": 1, "user": 1, "assistant": 1, "tool": 1, "developer": 1, "function": 1}
THREAD_THRESHOLD = 256 * 1024  # bytes of request body above which counting runs on a thread
MODEL_CACHE = 10_000  # model names whose family and encoding are remembered


def encoding_for_model(model: str) -> str:
    """tiktoken's encoding for an OpenAI model name (``provider/`` prefixes ignored)."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def family_of(model: str) -> str:
    """Which estimator a model gets: "openai" (exact), "anthropic" or "gemini" (calibrated), "other"."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith(("claude", "anthropic.")):
        return "anthropic"
    if name.startswith(("gemini", "gemma")):
        return "gemini"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt-", "ft:gpt", "text-embedding", "codex")):
        return "openai"
    return "other"


# --- the few request fields counting reads ---------------------------------------------------------


_EMPTY = Raw(b"")


class _Function(Struct):
    name: str = ""
    arguments: str = ""


class _ToolCall(Struct):
    function: _Function | None = None


class _ImageUrl(Struct):
    url: str = ""
    detail: str = "auto"


class _OpenAIPart(Struct):
    type: str = "text"
    text: str | None = None
    image_url: _ImageUrl | None = None


class _OpenAIMessage(Struct):
    role: str = ""
    content: str | list[_OpenAIPart] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Schema(Struct):
    properties: dict[str, dict[str, object]] | None = None


class _FunctionDef(Struct):
    name: str = ""
    description: str = ""
    parameters: _Schema | None = None


class _OpenAITool(Struct):
    function: _FunctionDef | None = None


class _OpenAIRequest(Struct):
    messages: list[_OpenAIMessage] = []
    tools: list[_OpenAITool] | None = None


class _Block(Struct):
    type: str = "text"
    text: str | None = None
    name: str | None = None
    input: Raw = _EMPTY  # msgspec does not take Raw in a union; empty means absent
    content: str | list[_Block] | None = None
    thinking: str | None = None


class _AnthropicMessage(Struct):
    role: str = ""
    content: str | list[_Block] = ""


class _AnthropicTool(Struct):
    name: str = ""
    description: str = ""
    input_schema: Raw = _EMPTY


class _AnthropicRequest(Struct):
    messages: list[_AnthropicMessage] = []
    system: str | list[_Block] | None = None
    tools: list[_AnthropicTool] | None = None


_openai_request = msgspec.json.Decoder(_OpenAIRequest)
_anthropic_request = msgspec.json.Decoder(_AnthropicRequest)


@dataclass
class TokenCounter:
    """Counts prompts for any model; one per process (the cache is the point)."""

    multipliers: dict[str, float] = field(default_factory=lambda: {"anthropic": 1.15, "gemini": 1.0, "other": 1.0})
    cache_chars: int = 64 * 1024 * 1024
    cache_ttl: float = 3600.0
    engine: Engine = "compact"  # [tokens] engine: the compact BytePairCounter or tiktoken (encodings.py)
    merge_budget: int = MERGE_BUDGET  # bytes of byte-pair merging per prompt (compact engine), then estimates
    _cache: TextCache = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    _models: dict[str, tuple[str, str]] = field(init=False, repr=False, default_factory=dict)  # → family, encoding

    def __post_init__(self) -> None:
        # Bounded by the total length of the cached texts (≈ their memory), and by age.
        self._cache = TextCache(self.cache_chars, self.cache_ttl)

    def text(self, text: str, encoding: str = "o200k_base", budget: MergeBudget | None = None) -> int:
        """Tokens in one text; merging spends the prompt's ``budget`` (a fresh one when None)."""
        if not text:
            return 0
        key = (encoding, text)
        with self._lock:  # large bodies are counted on a worker thread (count_async)
            count = self._cache.get(key)
        if count is not None:
            return count
        if budget is None:
            budget = MergeBudget(self.merge_budget)
        estimates = budget.estimates
        count = get_encoding(encoding, self.engine).count(text, budget)
        if budget.estimates == estimates:  # an estimate is not cached: a later prompt may count it exactly
            with self._lock:
                self._cache.put(key, count, len(text) + 64)
        return count

    async def count_async(self, body: bytes, client_dialect: str, model: str) -> tuple[int, bool]:
        """``count`` off the event loop for large bodies: a new 100k-token conversation takes tens
        of milliseconds of byte-pair work, which must not stall every other stream on this worker."""
        if len(body) < THREAD_THRESHOLD:
            return self.count(body, client_dialect, model)
        return await asyncio.to_thread(self.count, body, client_dialect, model)

    def count(self, body: bytes, client_dialect: str, model: str) -> tuple[int, bool]:
        """(prompt tokens, exact?) for a chat request body in the client's dialect, sent to ``model``.

        Exact means the OpenAI cookbook count for an OpenAI model, within the merge budget; everything
        else is an estimate.
        Raises msgspec errors on bodies that are not requests of that dialect.
        """
        try:
            family, encoding = self._models[model]
        except KeyError:
            family = family_of(model)
            encoding = encoding_for_model(model) if family == "openai" else "o200k_base"
            if len(self._models) >= MODEL_CACHE:  # clients choose model names: bounded
                self._models.clear()
            self._models[model] = family, encoding
        budget = MergeBudget(self.merge_budget)
        if client_dialect == "anthropic_messages":
            raw = self._anthropic(_anthropic_request.decode(body), encoding, family, budget)
        else:
            raw = self._openai(_openai_request.decode(body), encoding, family, budget)
        if family == "openai":
            return raw, client_dialect != "anthropic_messages" and not budget.estimated
        return math.ceil(raw * self.multipliers.get(family, 1.0)), False

    # -- OpenAI-shaped requests (§6.2) ----------------------------------------------------------------

    def _openai(self, request: _OpenAIRequest, encoding: str, family: str, budget: MergeBudget) -> int:
        text = self.text
        total = REPLY_PRIMING
        roles = _ROLE_TOKENS  # role names encode to one token in both encodings
        for m in request.messages:
            total += PER_MESSAGE + (roles.get(m.role) or text(m.role, encoding, budget))
            if isinstance(m.content, str):
                total += text(m.content, encoding, budget)
            elif m.content:
                for part in m.content:
                    if part.text is not None:
                        total += text(part.text, encoding, budget)
                    elif part.image_url is not None:
                        total += self._image(family, part.image_url.detail)
            if m.name:
                total += PER_NAME + text(m.name, encoding, budget)
            for call in m.tool_calls or ():
                if call.function is not None:  # no published formula: name + arguments + framing
                    total += 3 + text(call.function.name, encoding, budget)
                    total += text(call.function.arguments, encoding, budget)
        for tool in request.tools or ():
            if tool.function is not None:
                total += self._openai_function(tool.function, encoding, budget)
        return total

    def _openai_function(self, f: _FunctionDef, encoding: str, budget: MergeBudget) -> int:
        """The cookbook's num_tokens_for_tools, per function."""
        init = FUNC_INIT_CL100K if encoding == "cl100k_base" else FUNC_INIT
        total = init + self.text(f"{f.name}:{f.description.rstrip('.')}", encoding, budget)
        properties = (f.parameters.properties if f.parameters else None) or {}
        if properties:
            total += PROP_INIT
            for key, spec in properties.items():
                kind = spec.get("type", "")
                description = str(spec.get("description", "")).rstrip(".")
                total += PROP_KEY + self.text(f"{key}:{kind}:{description}", encoding, budget)
                enum = spec.get("enum")
                if isinstance(enum, list):
                    total += ENUM_INIT + sum(ENUM_ITEM + self.text(str(item), encoding, budget) for item in enum)
        return total + FUNC_END

    # -- Anthropic-shaped requests (§6.3 estimate on tiktoken counts) ---------------------------------

    def _anthropic(self, request: _AnthropicRequest, encoding: str, family: str, budget: MergeBudget) -> int:
        total = 0
        if isinstance(request.system, str):
            total += self.text(request.system, encoding, budget)
        elif request.system:
            total += self._blocks(request.system, encoding, family, budget)
        live = _live_thinking_turn(request.messages)
        for i, m in enumerate(request.messages):
            total += PER_MESSAGE
            if isinstance(m.content, str):
                total += self.text(m.content, encoding, budget)
            else:
                total += self._blocks(m.content, encoding, family, budget, thinking=i == live)
        if request.tools:
            total += ANTHROPIC_TOOL_PREAMBLE
            for tool in request.tools:
                total += self.text(tool.name, encoding, budget) + self.text(tool.description, encoding, budget)
                total += self.text(bytes(tool.input_schema).decode(), encoding, budget)
        return total

    def _blocks(self, blocks: list[_Block], encoding: str, family: str, budget: MergeBudget,
                thinking: bool = True) -> int:
        total = 0
        for b in blocks:
            if b.text is not None:
                total += self.text(b.text, encoding, budget)
            elif b.type == "image" or b.type == "document":
                total += self._image(family)
            elif b.type == "tool_use":
                total += 3 + self.text(b.name or "", encoding, budget)
                total += self.text(bytes(b.input).decode(), encoding, budget)
            elif b.type == "tool_result":
                if isinstance(b.content, str):
                    total += 3 + self.text(b.content, encoding, budget)
                elif b.content:
                    total += 3 + self._blocks(b.content, encoding, family, budget)
            elif b.type == "thinking" and thinking and b.thinking:
                total += self.text(b.thinking, encoding, budget)
        return total

    @staticmethod
    def _image(family: str, detail: str = "auto") -> int:
        if family == "anthropic":
            return ANTHROPIC_IMAGE
        if family == "gemini":
            return GEMINI_IMAGE
        return OPENAI_IMAGE_LOW if detail == "low" else OPENAI_IMAGE_HIGH


def _live_thinking_turn(messages: list[_AnthropicMessage]) -> int:
    """The one assistant turn whose thinking still counts as input: the last message when it is the
    assistant's, or the assistant turn a trailing tool_result answers (a tool-use loop). Thinking in
    every earlier turn is stripped by the API and not counted (§1.10)."""
    if not messages:
        return -1
    last = len(messages) - 1
    if messages[last].role == "assistant":
        return last
    content = messages[last].content
    answers_tools = not isinstance(content, str) and any(b.type == "tool_result" for b in content)
    return last - 1 if last >= 1 and messages[last - 1].role == "assistant" and answers_tools else -1
