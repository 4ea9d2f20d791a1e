"""tiktoken's encodings loaded from the files shipped inside the package: no download, ever.

tiktoken fetches its BPE files from the internet on first use; an air-gapped deployment cannot. The
package carries ``o200k_base`` and ``cl100k_base`` (xz-compressed, verified against the same SHA-256
digests tiktoken checks) and builds a counter from them on first use: by default (``[tokens] engine =
"compact"``) a ``BytePairCounter``, tiktoken's counts from about 5 MB per encoding instead of tiktoken's
~47 MB (``bpe.py``); with ``engine = "tiktoken"`` a ``tiktoken.Encoding`` (imported only then), faster on
text that is not whole tokens and with the GIL released, for the memory. Both answer ``.count(text)``.
"""

from __future__ import annotations

import base64
import hashlib
import lzma
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from .bpe import BytePairCounter, MergeBudget

if TYPE_CHECKING:
    import tiktoken

DATA = Path(__file__).resolve().parent.parent / "data" / "tiktoken"
ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"

# Split patterns and special tokens as tiktoken defines them (tiktoken_ext/openai_public.py): counts
# equal OpenAI's only when these match exactly.
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)

# The same patterns for ASCII-only text (most of a coding conversation), where \p{L} is [A-Za-z], \p{N}
# [0-9], \p{Lt}, \p{Lm}, \p{Lo} and \p{M} are empty and \s is [\t\n\v\f\r ]: the stdlib ``re`` splits
# such text about 3x faster than the ``regex`` module (tests/test_tokens.py checks the splits agree).
_O200K_ASCII = "|".join([
    r"""[^\r\nA-Za-z0-9]?[A-Z]*[a-z]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\nA-Za-z0-9]?[A-Z]+[a-z]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[0-9]{1,3}""",
    r""" ?[^\sA-Za-z0-9]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_ASCII = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{1,3}+| ?[^\sA-Za-z0-9]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
ASCII_PATTERNS = {"o200k_base": _O200K_ASCII, "cl100k_base": _CL100K_ASCII}

_SPECS: dict[str, tuple[str, dict[str, int], str]] = {
    "o200k_base": (_O200K_PATTERN, {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "cl100k_base": (_CL100K_PATTERN, {ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                      "<|fim_suffix|>": 100260, ENDOFPROMPT: 100276},
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
}
NAMES = tuple(_SPECS)
ENGINES = ("compact", "tiktoken")
Engine = Literal["compact", "tiktoken"]


class Encoding(Protocol):
    """What counting needs of an encoding: tiktoken's ``len(encode(text, disallowed_special=()))``."""

    name: str

    def count(self, text: str, budget: MergeBudget | None = None) -> int: ...


class TiktokenCounter:
    """tiktoken's own encoding behind the same ``count``; its Rust merge, fast and without the GIL, needs no
    budget: its counts are always exact."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.name = encoding.name
        self.encoding = encoding

    def count(self, text: str, budget: MergeBudget | None = None) -> int:
        return len(self.encoding.encode(text, disallowed_special=()))


_loaded: dict[tuple[str, str], Encoding] = {}
_lock = threading.Lock()


class EncodingUnavailable(RuntimeError):
    """A bundled encoding file is missing or does not match its digest (a broken install)."""


def get_encoding(name: str, engine: Engine = "compact") -> Encoding:
    """The named encoding from ``engine``, built once per process from the bundled file (thread-safe)."""
    key = (engine, name)
    encoding = _loaded.get(key)
    if encoding is not None:
        return encoding
    if engine not in ENGINES:
        raise ValueError(f"unknown token-counting engine {engine!r} (known: {', '.join(ENGINES)})")
    with _lock:
        if key not in _loaded:
            _loaded[key] = _build(name, engine)
    return _loaded[key]


def _build(name: str, engine: Engine) -> Encoding:
    pattern, special, digest = _SPECS[name]
    path = DATA / f"{name}.tiktoken.xz"
    try:
        raw = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise EncodingUnavailable(f"bundled encoding {path} cannot be read: {exc}") from None
    if hashlib.sha256(raw).hexdigest() != digest:
        raise EncodingUnavailable(f"bundled encoding {path} does not match its SHA-256 digest")
    if engine == "compact":
        return BytePairCounter(name, pattern, raw, ASCII_PATTERNS[name])
    import tiktoken  # only when chosen: its encoding costs ~47 MB per worker

    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    encoding = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    # The Rust core keeps its own copy of the ranks; tiktoken keeps the Python dict only for pickling.
    # Dropping it saves ~26 MB per process for o200k_base (measured), and we never pickle encodings.
    encoding._mergeable_ranks = {}
    return TiktokenCounter(encoding)
