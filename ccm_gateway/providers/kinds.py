"""Provider kinds: which dialect an upstream speaks, where it lives and how it authenticates.

OpenAI-compatible servers are configuration, not code: each preset below is a base URL and a few
quirk flags on top of the ``openai-compatible`` kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dialects import Dialect

OPENAI = frozenset({Dialect.OPENAI_CHAT})
ANTHROPIC = frozenset({Dialect.ANTHROPIC_MESSAGES})


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    dialects: frozenset[Dialect]
    base_url: str | None  # None: the config must give one
    auth: str  # "bearer" | "x-api-key" | "none"
    needs_key: bool
    stream_options: bool = True  # accepts OpenAI's stream_options (some compat servers reject it)
    detect: tuple[str, ...] = ()  # model-name prefixes that identify this kind (routing.detect_provider)

    def path(self, dialect: Dialect) -> str:
        """The request path under base_url for a chat call in ``dialect``."""
        return "/v1/messages" if dialect is Dialect.ANTHROPIC_MESSAGES else "/chat/completions"


def _compat(name: str, base_url: str | None, *, needs_key: bool = True, stream_options: bool = True):
    return ProviderKind(name, OPENAI, base_url, "bearer", needs_key, stream_options)


KINDS: dict[str, ProviderKind] = {
    k.name: k
    for k in (
        ProviderKind(
            "openai", OPENAI, "https://api.openai.com/v1", "bearer", True,
            detect=("gpt-", "chatgpt-", "o1", "o3", "o4", "codex-"),
        ),
        ProviderKind("anthropic", ANTHROPIC, "https://api.anthropic.com", "x-api-key", True, detect=("claude-",)),
        ProviderKind("mock", OPENAI | ANTHROPIC, None, "none", False, detect=("mock",)),
        _compat("openai-compatible", None, needs_key=False),
        _compat("groq", "https://api.groq.com/openai/v1"),
        _compat("together", "https://api.together.xyz/v1"),
        _compat("deepseek", "https://api.deepseek.com/v1"),
        _compat("openrouter", "https://openrouter.ai/api/v1"),
        _compat("mistral", "https://api.mistral.ai/v1"),
        _compat("xai", "https://api.x.ai/v1"),
        _compat("fireworks", "https://api.fireworks.ai/inference/v1", stream_options=False),
        _compat("cerebras", "https://api.cerebras.ai/v1"),
        _compat("ollama", "http://127.0.0.1:11434/v1", needs_key=False),
        _compat("vllm", "http://127.0.0.1:8000/v1", needs_key=False),
        _compat("lmstudio", "http://127.0.0.1:1234/v1", needs_key=False),
    )
}

# Kinds that have a name in DESIGN.md but whose dialect is not built yet (cross-protocol issue).
PLANNED_KINDS = {"gemini", "azure"}
