"""Wire protocols the gateway speaks, to clients and to upstreams.

Same dialect on both sides is byte pass-through (``openai_chat``, ``anthropic_messages``: request head,
error shapes, usage sniffing). Across dialects, requests and answers go through the canonical model
(``canonical``) with per-dialect codecs: ``openai_translate`` + ``openai_stream``,
``anthropic_translate`` + ``anthropic_stream``, ``gemini``; ``translate.py`` drives them.
"""

from enum import StrEnum


class Dialect(StrEnum):
    OPENAI_CHAT = "openai_chat"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    GEMINI = "gemini"
