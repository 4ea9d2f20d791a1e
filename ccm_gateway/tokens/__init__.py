"""Token counting: bundled tiktoken encodings, exact OpenAI counts, calibrated estimates for other
families, an incremental per-text cache, and known context windows."""

from .counting import TokenCounter, encoding_for_model, family_of
from .encodings import get_encoding
from .windows import known_window

__all__ = ["TokenCounter", "encoding_for_model", "family_of", "get_encoding", "known_window"]
