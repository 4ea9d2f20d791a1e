"""Context windows of well-known models, used to refuse a prompt that cannot fit before any upstream
call. A route's ``context_window`` in the config always wins; Anthropic models are left to the
config because their window depends on beta headers (``context-1m-…``)."""

from __future__ import annotations

# (prefix, window) — more specific prefixes first.
KNOWN: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-5", 400_000),
    ("gpt-4o", 128_000),
    ("chatgpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-3.5-turbo", 16_385),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("gemini-2.5", 1_048_576),
    ("gemini-2.0", 1_048_576),
    ("gemini-1.5-pro", 2_097_152),
    ("gemini-1.5-flash", 1_048_576),
)


def known_window(model: str) -> int | None:
    name = model.rsplit("/", 1)[-1]
    for prefix, window in KNOWN:
        if name.startswith(prefix):
            return window
    return None
