"""Provider kinds: which dialect an upstream speaks, where it lives and how it authenticates.

OpenAI-compatible servers are configuration, not code: each preset below is a base URL and a few
quirk flags on top of the ``openai-compatible`` kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from ..dialects import Dialect

OPENAI = frozenset({Dialect.OPENAI_CHAT})
ANTHROPIC = frozenset({Dialect.ANTHROPIC_MESSAGES})


# Operation → path template under base_url. A chat operation is named by its Dialect (a StrEnum, so
# ``path(dialect)`` works); ``"<op>:stream"`` overrides the path for streamed calls; ``{model}`` is
# the upstream model (Azure: the deployment name), URL-quoted.
EMBEDDINGS = "embeddings"
OPENAI_PATHS = {Dialect.OPENAI_CHAT.value: "/chat/completions", EMBEDDINGS: "/embeddings"}
ANTHROPIC_PATHS = {Dialect.ANTHROPIC_MESSAGES.value: "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
AZURE_PATHS = {
    Dialect.OPENAI_CHAT.value: "/openai/deployments/{model}/chat/completions",
    EMBEDDINGS: "/openai/deployments/{model}/embeddings",
}
GEMINI_PATHS = {
    Dialect.GEMINI.value: "/models/{model}:generateContent",
    f"{Dialect.GEMINI.value}:stream": "/models/{model}:streamGenerateContent?alt=sse",
    EMBEDDINGS: "/models/{model}:batchEmbedContents",
}
# Azure's data-plane api-version when the config gives none: the current GA version, which has
# stream_options.include_usage and embeddings ``dimensions`` (override with ``api_version``).
AZURE_API_VERSION = "2024-10-21"


@dataclass(frozen=True, slots=True, eq=False)
class ProviderKind:
    name: str
    dialects: frozenset[Dialect]
    base_url: str | None  # None: the config must give one
    auth: str  # "bearer", "none", or the header that carries the bare key: "x-api-key", "api-key", …
    needs_key: bool
    stream_options: bool = True  # accepts OpenAI's stream_options (some compat servers reject it)
    detect: tuple[str, ...] = ()  # model-name prefixes that identify this kind (routing.detect_provider)
    paths: Mapping[str, str] = field(default_factory=lambda: OPENAI_PATHS)
    api_version: str | None = None  # default ``api-version`` query value (Azure); None: no query

    def supports(self, op: str) -> bool:
        """Whether this kind has an endpoint for ``op`` (a Dialect, or "embeddings")."""
        return op in self.paths

    def path(self, op: str, model: str = "", stream: bool = False) -> str:
        """The request path under base_url for ``op`` (a chat call in a Dialect, or "embeddings")."""
        template = (stream and self.paths.get(f"{op}:stream")) or self.paths[op]
        return template.format(model=quote(model, safe="+=@,")) if "{" in template else template


def _compat(name: str, base_url: str | None, *, needs_key: bool = True, stream_options: bool = True):
    return ProviderKind(name, OPENAI, base_url, "bearer", needs_key, stream_options)


KINDS: dict[str, ProviderKind] = {
    k.name: k
    for k in (
        ProviderKind(
            "openai", OPENAI, "https://api.openai.com/v1", "bearer", True,
            detect=("gpt-", "chatgpt-", "o1", "o3", "o4", "codex-", "text-embedding-3-", "text-embedding-ada-"),
        ),
        ProviderKind(
            "anthropic", ANTHROPIC, "https://api.anthropic.com", "x-api-key", True, detect=("claude-",),
            paths=ANTHROPIC_PATHS,
        ),
        ProviderKind("azure", OPENAI, None, "api-key", True, paths=AZURE_PATHS, api_version=AZURE_API_VERSION),
        ProviderKind(
            "gemini", frozenset({Dialect.GEMINI}), "https://generativelanguage.googleapis.com/v1beta",
            "x-goog-api-key", True, detect=("gemini-", "text-embedding-004"), paths=GEMINI_PATHS,
        ),
        ProviderKind("mock", OPENAI | ANTHROPIC, None, "none", False, detect=("mock",),
                     paths={**OPENAI_PATHS, **ANTHROPIC_PATHS}),
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

# Kinds that have a name in DESIGN.md but are not built yet (none left; kept for config.py's message).
PLANNED_KINDS: set[str] = set()
