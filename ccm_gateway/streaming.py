"""Server-sent-event helpers for pass-through streams: usage sniffing without decoding events.

A pass-through stream is written to the client as it arrives; the gateway only needs the one or two
events that carry usage. The sniffer looks for the bytes ``"usage"`` followed by an object and
decodes just that line; every other chunk costs a substring search.
"""

from __future__ import annotations

from collections.abc import Callable

from .exchange import Usage

_COMPACT = b'"usage":{'
_SPACED = b'"usage": {'
_MAX_LINE = 4 * 1024 * 1024  # an event line longer than this is not worth keeping for usage


def carries_usage_object(data: bytes) -> bool:
    """True when ``"usage"`` is followed by an object, not ``null`` (OpenAI streams with
    ``include_usage`` repeat ``"usage":null`` on every chunk). Two C-speed substring searches cover
    compact JSON and the ``": "`` style of Python's json module; other spacings are not recognised."""
    return _COMPACT in data or _SPACED in data


class UsageSniffer:
    """Feeds the ``data:`` lines of an SSE stream that carry usage to a dialect's ``apply_usage``."""

    __slots__ = ("_apply", "_tail", "_usage")

    def __init__(self, apply: Callable[[bytes, Usage], None], usage: Usage) -> None:
        self._apply = apply
        self._usage = usage
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n") + 1
        if cut and carries_usage_object(data):
            for line in data[:cut].split(b"\n"):
                if line.startswith(b"data:") and carries_usage_object(line):
                    self._apply(line[5:], self._usage)
        tail = data[cut:]
        self._tail = tail if len(tail) <= _MAX_LINE else b""
