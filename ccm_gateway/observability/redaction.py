"""Scrub credentials out of log text: known secret values and credential-shaped patterns.

Exact-value replacement of every configured secret is the strongest guard (it catches a key
wherever it turns up: an echoed upstream error, a repr, a traceback); the patterns catch what the
gateway never saw in its config — a client's own key in a header dump, ``?key=`` in a URL,
``user:pass@`` in a DSN. ``RedactingFormatter`` and ``RedactionFilter`` apply it to log records.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..secrets import Secret

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words

_HEADERS = r"proxy-authorization|authorization|x-goog-api-key|x-api-key|api-key"
# (substrings, lower case, without which the pattern cannot match; pattern; replacement). Most log
# lines contain none of the substrings, and a few C substring searches cost far less than a regex.
_RULES: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = tuple(
    (triggers, re.compile(pattern, re.IGNORECASE), replacement) for triggers, pattern, replacement in (
        # A credential header followed by its value: "authorization: Bearer x", {'x-api-key': 'x'},
        # (b'api-key', b'x'), authorization=x.
        (("authorization", "api-key"),
         rf"((?:{_HEADERS})(?:[\"']?\s*[:=]\s*|[\"']\s*,\s*b?)[\"']?)(?:(?:bearer|basic)\s+)?[^\s\"',;}}\]>)]+",
         rf"\1{MASK}"),
        (("bearer",), r"\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}", rf"\1{MASK}"),
        (("key=", "token="), r"([?&](?:key|api[-_]?key|access_token|token)=)[^&\s\"'#]+", rf"\1{MASK}"),
        (("://",), r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@\"']*:[^/\s@\"']*@", rf"\1{MASK}:{MASK}@"),
        (("sk-",), r"\bsk-[A-Za-z0-9_-]{8,}", MASK),
        (("aiza",), r"\bAIza[0-9A-Za-z_-]{20,}", MASK),
    ))

_lock = threading.Lock()
_secrets: set[str] = set()
_lowered: tuple[str, ...] = ()  # the registered values, lower-cased, for the cheap pre-check
_exact: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str | Secret | None]) -> None:
    """Mask these exact values from now on (the app registers its resolved secrets at start-up)."""
    global _exact, _lowered
    added = False
    with _lock:
        for value in values:
            if isinstance(value, Secret):
                value = value.reveal() if value else None
            if value and len(value) >= MIN_SECRET_CHARS and value not in _secrets:
                _secrets.add(value)
                added = True
        if added:
            ordered = sorted(_secrets, key=len, reverse=True)
            _exact = re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE)
            _lowered = tuple(s.lower() for s in ordered)


def config_secrets(config: object) -> list[str]:
    """Every secret value a Config holds: provider keys, provider header values and base-URL
    passwords, gateway keys, the admin key, the Redis URL and its password."""
    found: list[str] = []
    for provider in getattr(config, "providers", {}).values():
        found += [k.key.reveal() for k in provider.api_keys if k.key]
        # Fixed upstream headers often carry a second credential (an AI gateway's auth header).
        found += [v for v in getattr(provider, "headers", {}).values() if len(v) >= 8]
        password = urlsplit(provider.base_url or "").password
        if password:
            found.append(password)
    found += [k.key.reveal() for k in getattr(config, "keys", []) if k.key]
    admin = getattr(getattr(config, "admin", None), "key", None)
    if admin:
        found.append(admin.reveal())
    url = getattr(getattr(config, "state", None), "url", None)
    if url:
        password = urlsplit(url.reveal()).password
        if password:  # the URL itself is no secret without one (and names the host operators look for)
            found += [url.reveal(), password]
    return found


def redact(text: str) -> str:
    """``text`` with every registered secret and credential-shaped substring masked."""
    low = text.lower()
    for secret in _lowered:
        if secret in low:
            text = _exact.sub(MASK, text)  # type: ignore[union-attr]
            low = text.lower()
            break
    for triggers, pattern, replacement in _RULES:
        for trigger in triggers:
            if trigger in low:
                text = pattern.sub(replacement, text)
                break
    return text


class RedactingFormatter(logging.Formatter):
    """A plain-text formatter whose whole output (message, arguments, traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactionFilter(logging.Filter):
    """For hosts that keep their own formatters: add to a handler, and the records it emits carry
    a redacted message and traceback (``record.args`` are folded into the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
