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

    __slots__ = ("_apply", "_compact", "_tail", "_usage")

    def __init__(self, apply: Callable[[bytes, Usage], None], usage: Usage) -> None:
        self._apply = apply
        self._usage = usage
        self._tail = b""
        self._compact: bool | None = None  # the upstream writes compact JSON: one search per chunk

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n") + 1
        if self._compact is None and cut:
            self._compact = b'": ' not in data and b'", "' not in data
        if cut and (_COMPACT in data if self._compact else carries_usage_object(data)):
            for line in data[:cut].split(b"\n"):
                if line.startswith(b"data:") and carries_usage_object(line):
                    self._apply(line[5:], self._usage)
        tail = data[cut:]
        self._tail = tail if len(tail) <= _MAX_LINE else b""


class SSEParser:
    """Splits an SSE byte stream into ``(event name, data)`` pairs, whatever the chunk boundaries.

    Used by the translated path, which must decode every event (pass-through only sniffs). Comment
    lines (``: keep-alive``) are skipped; ``\\r\\n`` line ends are accepted (Gemini sends them).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        data = self._buf + chunk if self._buf else chunk
        if b"\r" in data:
            keep_cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n")
            if not keep_cr:
                data = data.replace(b"\r", b"\n")
        events: list[tuple[bytes, bytes]] = []
        start = 0
        find = data.find
        while True:
            end = find(b"\n\n", start)
            if end < 0:
                break
            _parse_block(data[start:end], events)
            start = end + 2
        self._buf = data[start:]
        if len(self._buf) > _MAX_LINE:
            raise ValueError("SSE event larger than the gateway accepts")
        return events

    def close(self) -> list[tuple[bytes, bytes]]:
        """An unterminated last event (a stream that ended without its blank line)."""
        events: list[tuple[bytes, bytes]] = []
        if self._buf.strip():
            _parse_block(self._buf.rstrip(b"\r\n"), events)
        self._buf = b""
        return events


def _parse_block(block: bytes, out: list[tuple[bytes, bytes]]) -> None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common one-line event
        out.append((b"", block[6:]))
        return
    name = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    if data or name:
        out.append((name, b"\n".join(data)))
