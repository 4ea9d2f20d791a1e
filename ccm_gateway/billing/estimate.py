"""Local token counts for when the provider reports none: a stream cut off or left by its client,
an OpenAI stream without ``include_usage``, a compatible server that sends no usage.

The counter sees every body chunk the endpoint passes on — which is every chunk read from the
upstream, since the endpoint awaits each send — and sums the characters of the generated strings
(text, thinking, tool arguments). Four characters make a token: a rough estimate, always marked
as such in the ledger, never presented as a provider's number.
"""

from __future__ import annotations

import re

from ..exchange import Exchange

CHARS_PER_TOKEN = 4
# String values of the fields that carry generated text in OpenAI and Anthropic responses/streams.
_GENERATED = re.compile(
    rb'"(?:content|text|thinking|partial_json|arguments|reasoning_content|reasoning)":\s*"((?:[^"\\]|\\.)*)"'
)
_ENDINGS = (b"[DONE]", b"message_stop")
_TAIL = 64


class OutputCounter:
    """Counts generated characters in the bytes of one response, and whether the stream ended."""

    __slots__ = ("chars", "ended", "tail")

    def __init__(self) -> None:
        self.chars = 0
        self.ended = False
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        for m in _GENERATED.finditer(chunk):
            self.chars += len(m.group(1))
        window = self.tail + chunk[:_TAIL]
        if any(end in window or end in chunk[-_TAIL:] for end in _ENDINGS):
            self.ended = True
        self.tail = chunk[-_TAIL:]

    @property
    def tokens(self) -> int:
        return -(-self.chars // CHARS_PER_TOKEN)


def prompt_estimate(ex: Exchange) -> int:
    """The token-count stage's estimate when there is one, else about 4 bytes of JSON per token."""
    return ex.token_estimate if ex.token_estimate is not None else max(len(ex.body) // 4, 1)
