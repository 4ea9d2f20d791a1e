"""Wire protocols the gateway speaks, to clients and to upstreams.

Cross-protocol translation (the canonical model and one module per dialect) is not built yet; today
every request is served by an upstream of the client's own dialect, byte for byte (pass-through).
"""

from enum import StrEnum


class Dialect(StrEnum):
    OPENAI_CHAT = "openai_chat"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    GEMINI = "gemini"
