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
_STYLE_PROBE = 2048  # bytes of the first read that tell compact JSON from Python's ": " style


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
        if cut:
            if self._compact is None:  # the style shows in the first event; a whole stream may be one read
                head = data[:_STYLE_PROBE]
                self._compact = b'": ' not in head and b'", "' not in head
            # One scan of the read (two for spaced JSON), continued past the first hit in the rare read
            # that holds a usage object (one or two per stream) to find the lines that carry one.
            at = data.find(_COMPACT, 0, cut)
            spaced = -1 if self._compact else data.find(_SPACED, 0, cut)
            if at >= 0 or spaced >= 0:
                for start, end in _lines_with(data, cut, ((_COMPACT, at), (_SPACED, spaced))):
                    if data.startswith(b"data:", start):
                        self._apply(data[start + 5:end], self._usage)
            if cut == len(data):  # the usual read: whole events, nothing left over
                self._tail = b""
                return
        tail = data[cut:]
        self._tail = tail if len(tail) <= _MAX_LINE else b""


def _lines_with(data: bytes, cut: int, hits: tuple[tuple[bytes, int], ...]) -> list[tuple[int, int]]:
    """(start, end) of each complete line (before ``cut``) holding one of the needles, in stream order,
    given each needle with its first position (-1: none): found with C-speed searches, so a read that
    holds a whole stream (a fast upstream's fifty events arrive at once) costs a few searches, not a
    test of every line."""
    spans: set[tuple[int, int]] = set()
    for needle, at in hits:
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at, cut)
            spans.add((start, end))
            at = data.find(needle, end, cut)
    return sorted(spans)


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


_EMPTY_CHOICES = (b'"choices":[]', b'"choices": []')
_CONTENT_CHOICES = (b'"choices":[{', b'"choices": [{')


def _usage_only(line: bytes) -> bool:
    return line.startswith(b"data:") and (_EMPTY_CHOICES[0] in line or _EMPTY_CHOICES[1] in line) \
        and carries_usage_object(line)


class UsageChunkStripper:
    """Drops OpenAI's usage-only chunk (``"choices":[]`` with a usage object) from a pass-through
    stream whose client did not ask for usage, when the gateway asked the upstream for it (P12).

    Whatever the chunk boundaries: complete lines are passed on at once (a substring search per
    chunk; only a block holding ``"choices":[]`` is split into lines). A trailing partial line is
    held back until its end arrives — unless it already shows it is a content chunk
    (``"choices":[{``) or no ``data:`` line, then it goes on at once and the rest of that line follows
    unexamined."""

    __slots__ = ("_open", "_skip_blank", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._open = False  # the current line was partly sent: pass on up to its end
        self._skip_blank = False  # a dropped event's blank line has not arrived yet

    def feed(self, chunk: bytes) -> bytes:
        head = b""
        if self._open:
            end = chunk.find(b"\n")
            if end < 0:
                return chunk
            self._open = False
            head, chunk = chunk[:end + 1], chunk[end + 1:]
        data = self._tail + chunk if self._tail else chunk
        if self._skip_blank and data:
            self._skip_blank = False
            if data.startswith(b"\n"):
                data = data[1:]
            elif data.startswith(b"\r\n"):
                data = data[2:]
            elif data == b"\r":
                self._skip_blank, data = True, b""
        cut = data.rfind(b"\n") + 1
        body, tail = data[:cut], data[cut:]
        if body and (_EMPTY_CHOICES[0] in body or _EMPTY_CHOICES[1] in body):
            body = self._drop(body)
        if tail and (b"data:"[:len(tail)] != tail[:5] or _CONTENT_CHOICES[0] in tail
                     or _CONTENT_CHOICES[1] in tail):
            body, tail, self._open = body + tail, b"", True
        self._tail = tail if len(tail) <= _MAX_LINE else b""
        return head + body if head else body

    def close(self) -> bytes:
        """What was held back when the stream ended (a last line without its newline)."""
        tail, self._tail = self._tail, b""
        return b"" if _usage_only(tail) else tail

    def _drop(self, block: bytes) -> bytes:
        lines = block.split(b"\n")  # the block ends with a newline: the last item is empty
        out: list[bytes] = []
        skip = False
        for line in lines[:-1]:
            if skip:
                skip = False
                if line == b"" or line == b"\r":
                    continue
            if _usage_only(line):
                skip = True
                continue
            out.append(line)
        self._skip_blank = skip  # the blank line that ends the dropped event is in the next chunk
        return b"\n".join(out) + b"\n" if out else b""
