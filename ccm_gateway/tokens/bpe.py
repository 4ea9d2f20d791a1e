"""Exact tiktoken token counts from one compact copy of the ranks (about 5 MB for ``o200k_base``).

tiktoken's Rust core keeps three copies of the 200k token byte strings, each its own heap allocation:
~47 MB per worker for ``o200k_base``, more than half of a worker's memory. Counting needs neither the
token ids nor the decoder, so this keeps the tokens in one ``bytes`` blob (rank order, with offsets)
and an open-addressing hash table of ranks in an ``array``; it splits text with tiktoken's pattern
(the ``regex`` module, which tiktoken itself depends on; the stdlib ``re`` with ASCII classes for
ASCII-only text under ``LARGE_ASCII``, three times faster), counts each distinct piece once per text
(a whole token in one lookup, else tiktoken's byte-pair merge) and remembers the counts of short
pieces. ``tests/test_tokens.py`` checks the counts against tiktoken's own on a varied corpus and on
every code point.

The merge is pure Python (~2 µs per byte here, GIL held; tiktoken's Rust merge is ~10x faster and
releases the GIL), and a client chooses the text: 32 MB of random letters would cost a minute of CPU. So
each prompt gets a ``MergeBudget``: after ``MERGE_BUDGET`` bytes of pieces that needed merging, the
other pieces of that text that need merging are estimated at the bytes per token of the pieces merged
so far (from a merged sample of its head if one is huge), the prompt's later texts, unsplit, at its
characters per token so far (at most ``MAX_CHARS_PER_TOKEN``), and the budget says the count is an estimate
(``TokenCounter.count`` then reports it as not exact). Measured, o200k_base:
a 100k-token English/code conversation merges 0 bytes, this repository's 1.6 MB of sources and docs
(400k tokens) 50 KiB, Russian prose ~65 KiB per 100k tokens, Chinese and Japanese prose 260-290 KiB per
100k tokens: real prompts stay exact up to ~130k tokens of CJK; past the budget, estimates of real prose
were within 7% (tiny budgets), of 32 MB of random letters within 0.3%, in ~1 s of CPU instead of minutes.
"""

from __future__ import annotations

import binascii
import heapq
import re
from array import array
from collections import Counter

import regex

MEMO_PIECES = 16_384  # distinct short pieces whose counts are remembered (≈1.5 MB at most)
MEMO_PIECE_CHARS = 32
LONG_PIECE = 256  # bytes above which a piece is merged with a heap (the list merge is quadratic)
_ABSENT = 1 << 62  # the rank of a byte string that is not a token: merged never
MERGE_BUDGET = 384 * 1024  # bytes of pieces one prompt may merge: ≈0.7 s of CPU (≈1 s in all) at worst here
BYTES_PER_TOKEN = 2.5  # estimate for merged-looking pieces before a prompt has merged SAMPLE bytes of its own
MAX_BYTES_PER_TOKEN = 4.0  # never estimate fewer tokens than bytes / 4: a huge body is never estimated small
MAX_CHARS_PER_TOKEN = 6.0  # the same for whole texts estimated after the budget ran out (English: ~4.5)
SAMPLE = 4096  # merged bytes from which a prompt's own bytes-per-token ratio is trusted
# ASCII text this long is split by ``regex`` too, 3x slower than ``re`` but with the GIL released (its
# default for str): ``re`` held it through one C call, ~75-100 ms for a 1.2 MB text counted on a worker
# thread, and the event loop stalled that long; now ≤ ~25 ms (measured; concurrent=False: 150 ms for 2 MB).
LARGE_ASCII = 256 * 1024

# Code points that the ``regex`` module's Unicode tables (17.0) classify as letters, marks or numbers
# while tiktoken's Rust regex (an older Unicode) still sees them unassigned: found by comparing every
# code point with tiktoken. Text containing one is split with a pattern that excludes them from
# ``\p{…}``, so the split (and the count) stays tiktoken's; other text takes the faster plain pattern.
_NEWER_UNICODE = (
    "0558 058B-058C 05C8-05C9 088F 0B53-0B54 0C5C 0CDC 1ACF-1AF0 208F 209D-209F A7CE-A7CF A7D2 A7D4 A7DD A7E2 "
    "A7F1 AB6C-AB6D 107BB-107BF 10940-10959 10EC5-10EC7 10ECB-10ECF 10ED9-10EEE 10EF0-10EFB 11B0A 11B60-11B67 "
    "11DB0-11DDB 11DE0-11DE9 11DF0-11DF1 1246F 12475-1247F 12550-12686 16EA0-16EB8 16EBB-16ED3 16FF2-16FF6 "
    "187F8-187FF 18CD6-18CDA 18D09-18D20 18D80-18DF2 18E00-19191 191A0-191D2 1B123-1B128 1B168 1D127-1D128 "
    "1D250-1D252 1D25B-1D25C 1D25F 1D280-1D281 1D6A6 1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96 1DFCD-1DFFF "
    "1E6C0-1E6DE 1E6E0-1E6F5 1E6FE-1E6FF 2B73A-2B73F 2B81E 2CEA2-2CEAD 323B0-33479 3D000-3FC3F"
)
_NEWER_SPANS = [(int(span[0], 16), int(span[-1], 16)) for span in (s.split("-") for s in _NEWER_UNICODE.split())]
_NEWER_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _NEWER_SPANS)
_NEWER = regex.compile(f"[{_NEWER_CLASS}]")


def _hull(spans: list[tuple[int, int]], gap: int = 0x2000) -> str:
    """A few ranges covering ``spans``: a class the ``re`` module scans fast, to find candidate runs."""
    hull = [list(spans[0])]
    for lo, hi in spans[1:]:
        if lo - hull[-1][1] < gap:
            hull[-1][1] = hi
        else:
            hull.append([lo, hi])
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in hull)


_MAYBE_NEWER = re.compile(f"[{_hull(_NEWER_SPANS)}]+")
_PROPERTIES = (r"\p{Lu}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}", r"\p{Ll}", r"\p{L}", r"\p{N}", r"\p{M}")


def _older_unicode(pattern: str) -> str:
    """``pattern`` with the newer code points taken out of every Unicode property it uses."""
    for prop in _PROPERTIES:
        pattern = pattern.replace(prop, f"[{prop}--[{_NEWER_CLASS}]]")
    return "(?V1)" + pattern


class MergeBudget:
    """The merge work one prompt may still do (shared by all its texts), and what it estimated past it.

    Pieces that do not fit are estimated at the bytes per token of the pieces merged so far (whole tokens
    still count one each); the texts that follow, unsplit, at the characters per token of the prompt's
    texts so far (a text's later pieces are its rarer ones, so its own prefix would be a biased sample)."""

    __slots__ = ("chars", "estimates", "left", "merged_bytes", "merged_tokens", "tokens")

    def __init__(self, size: int = MERGE_BUDGET) -> None:
        self.left = size
        self.merged_bytes = self.merged_tokens = self.estimates = 0
        self.chars = 0  # characters of this prompt counted so far, and their tokens (exact or estimated)
        self.tokens = 0.0

    @property
    def estimated(self) -> bool:
        """Whether the budget ran out: the count is then no longer tiktoken's exactly."""
        return self.estimates > 0

    def spend(self, size: int, tokens: int) -> None:
        self.left -= size
        self.merged_bytes += size
        self.merged_tokens += tokens

    def estimate(self, size: int) -> float:
        """Tokens of ``size`` bytes of pieces that are not one token, without merging them."""
        self.estimates += 1
        ratio = self.merged_bytes / self.merged_tokens if self.merged_bytes >= SAMPLE else BYTES_PER_TOKEN
        return size / min(ratio, MAX_BYTES_PER_TOKEN)

    def estimate_rest(self, chars: int) -> float:
        """Tokens of ``chars`` more characters of this prompt, at its characters per token so far."""
        self.estimates += 1
        ratio = self.chars / self.tokens if self.tokens else BYTES_PER_TOKEN
        return chars / min(ratio, MAX_CHARS_PER_TOKEN)


class BytePairCounter:
    """Counts the tokens tiktoken's ``encode(text, disallowed_special=())`` would return (exactly, within
    the ``MergeBudget``)."""

    def __init__(self, name: str, pattern: str, ranks_file: bytes, ascii_pattern: str | None = None) -> None:
        """``ranks_file``: the ``.tiktoken`` format, one ``base64-token rank`` line per token, ranks 0..n-1.
        ``ascii_pattern``: the split ``pattern`` makes of ASCII-only text, for the faster stdlib ``re``."""
        self.name = name
        self._pattern = regex.compile(pattern)
        self._ascii_pattern = re.compile(ascii_pattern, re.ASCII) if ascii_pattern else self._pattern
        self._exact_pattern: regex.Pattern[str] | None = None  # compiled when text needs it
        self._source = pattern
        n = ranks_file.count(b"\n")
        size = 1 << max(n * 5 // 2, 1).bit_length()  # load factor ≤ 0.4: about one probe per lookup
        self._mask = size - 1
        self._table = table = array("I", bytes(4 * size))  # rank + 1; 0 = empty slot
        self._offsets = offsets = array("I", bytes(4 * (n + 1)))  # token r is blob[offsets[r]:offsets[r + 1]]
        blob = bytearray()
        mask = self._mask
        start = rank = 0
        while (end := ranks_file.find(b"\n", start)) >= 0:
            space = ranks_file.find(b" ", start, end)
            if space < 0 or int(ranks_file[space + 1:end]) != rank:
                raise ValueError(f"{name}: line {rank + 1} is not 'token {rank}'")
            token = binascii.a2b_base64(ranks_file[start:space])
            offsets[rank] = len(blob)
            blob += token
            slot = hash(token) & mask
            while table[slot]:
                slot = (slot + 1) & mask
            table[slot] = rank + 1
            rank += 1
            start = end + 1
        offsets[rank] = len(blob)
        self._blob = bytes(blob)
        self._memo: dict[str, int] = {}

    def count(self, text: str, budget: MergeBudget | None = None) -> int:
        """Tokens in ``text``; merging spends ``budget`` (a fresh ``MERGE_BUDGET`` when None)."""
        if budget is None:
            budget = MergeBudget()
        if budget.estimated:  # out of budget: not even split
            return max(1, round(budget.estimate_rest(len(text)))) if text else 0
        is_ascii = text.isascii()
        if is_ascii and len(text) < LARGE_ASCII:
            return self._count(self._ascii_pattern.findall(text), budget, len(text))
        pattern = self._pattern
        if not is_ascii and any(_NEWER.search(run) for run in _MAYBE_NEWER.findall(text)):
            if self._exact_pattern is None:
                self._exact_pattern = regex.compile(_older_unicode(self._source))
            pattern = self._exact_pattern
        try:
            return self._count(pattern.findall(text, concurrent=True), budget, len(text))
        except UnicodeEncodeError:
            # Lone surrogates: tiktoken re-reads the text with them replaced, and so do we.
            return self.count(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), budget)

    def _count(self, pieces: list[str], budget: MergeBudget, size: int) -> int:
        """Tokens of the ``pieces`` of a ``size``-character text."""
        memo = self._memo
        total = 0
        estimated = 0.0
        for piece, times in Counter(pieces).items():
            tokens = memo.get(piece)
            if tokens is None:
                data = piece.encode()
                if self._rank(data) != _ABSENT:
                    tokens = 1
                elif len(data) <= budget.left:
                    tokens = self._merge(data)
                    budget.spend(len(data), tokens)
                else:  # over budget: estimated (after merging a sample of its head if the budget allows)
                    head = data[:min(budget.left, 4 * SAMPLE)] if budget.left >= SAMPLE else b""
                    if head:
                        merged = self._merge(head)
                        budget.spend(len(head), merged)
                        total += merged * times
                    estimated += max(2.0, budget.estimate(len(data) - len(head))) * times
                    continue
                if len(piece) <= MEMO_PIECE_CHARS:
                    if len(memo) >= MEMO_PIECES:
                        memo.clear()
                    memo[piece] = tokens
            total += tokens * times
        budget.chars += size
        budget.tokens += total + estimated
        return total + round(estimated)

    def rank(self, token: bytes) -> int | None:
        """The token's rank, or None when these bytes are not one token."""
        rank = self._rank(token)
        return None if rank == _ABSENT else rank

    def _rank(self, token: bytes) -> int:
        table, offsets, blob, mask = self._table, self._offsets, self._blob, self._mask
        size = len(token)
        slot = hash(token) & mask
        while entry := table[slot]:
            start = offsets[entry - 1]
            if offsets[entry] - start == size and blob.startswith(token, start):
                return entry - 1
            slot = (slot + 1) & mask
        return _ABSENT

    def _merge(self, piece: bytes) -> int:
        """Tokens in one split piece that is not a token: tiktoken's merge (lowest rank first)."""
        rank = self._rank
        if len(piece) > LONG_PIECE:
            return self._long_piece(piece)
        bounds = list(range(len(piece) + 1))
        ranks = [rank(piece[i:i + 2]) for i in range(len(piece) - 1)]  # of the pair starting at part i
        while ranks:
            lowest = min(ranks)
            if lowest == _ABSENT:
                break
            i = ranks.index(lowest)  # the leftmost of equal ranks, as tiktoken
            del bounds[i + 1]
            del ranks[i]
            if i < len(ranks):
                ranks[i] = rank(piece[bounds[i]:bounds[i + 2]])
            if i > 0:
                ranks[i - 1] = rank(piece[bounds[i - 1]:bounds[i + 1]])
        return len(bounds) - 1

    def _long_piece(self, piece: bytes) -> int:
        """The same merge for a long piece (a run of letters without spaces: a client can send megabytes
        of it) in O(n log n): a heap of (rank, start, end) for the adjacent pairs, stale ones skipped."""
        rank = self._rank
        size = len(piece)
        end_of = list(range(1, size + 1))  # end of the part starting at i; -1 once merged into its left part
        start_of_previous = list(range(-1, size - 1))
        heap = [(r, i, i + 2) for i in range(size - 1) if (r := rank(piece[i:i + 2])) != _ABSENT]
        heapq.heapify(heap)
        parts = size
        while heap:
            _, start, end = heapq.heappop(heap)
            middle = end_of[start]
            if middle < 0 or middle >= size or end_of[middle] != end:
                continue  # one of the two parts has merged since this pair was pushed
            end_of[start] = end
            end_of[middle] = -1
            parts -= 1
            if end < size:
                start_of_previous[end] = start
                if (r := rank(piece[start:end_of[end]])) != _ABSENT:
                    heapq.heappush(heap, (r, start, end_of[end]))
            previous = start_of_previous[start]
            if previous >= 0 and (r := rank(piece[previous:end])) != _ABSENT:
                heapq.heappush(heap, (r, previous, end))
        return parts
