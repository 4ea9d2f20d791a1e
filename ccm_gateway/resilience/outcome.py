"""What one upstream attempt tells about the deployment's health, and how long the upstream asks us to wait.

Only a deployment's own trouble is a FAILURE (breaker); a 429 is a cooldown, a dead key an ejection, and
the client's own mistakes or departures say nothing about the upstream at all.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["Outcome", "classify", "retry_after", "retryable"]


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # the deployment misbehaved: counts for its breaker
    RATE_LIMITED = "rate_limited"  # 429: cool the deployment down, not a failure
    DEAD_KEY = "dead_key"  # the credential is refused or out of credit: eject it
    CLIENT_ERROR = "client_error"  # the client's own 4xx: no retry, no health effect
    CANCELLED = "cancelled"  # the client went away: no health effect


_DEAD_STATUSES = frozenset({401, 402, 403})
# Error bodies that mean "this credential cannot be used" whatever the status (OpenAI sends
# insufficient_quota as a 429, Gemini a bad key as a 400). Quoted so a message merely mentioning billing
# does not match.
_DEAD_MARKERS = (b'"insufficient_quota"', b'"billing_error"', b'"billing_not_active"', b'"API_KEY_INVALID"')
_OVERLOADED = b'"overloaded_error"'
# 5xx that describe the request rather than the deployment's health; 408: the upstream gave up waiting for
# our request bytes, a problem of the path to it (the SDKs retry it too).
_REQUEST_5XX = frozenset({501, 505})
_SNIFF = 4096  # error bodies put their type near the start; never scan a large body
_RETRYABLE = frozenset({Outcome.FAILURE, Outcome.RATE_LIMITED, Outcome.DEAD_KEY})


def classify(status: int | None, body: bytes = b"", *, timeout: bool = False, connect_error: bool = False,
             cancelled: bool = False) -> Outcome:
    """One attempt's outcome. ``status`` None (no response head) with no flag set means the connection
    was reset or closed early; ``body`` is the error body's start (only its first 4 KB are looked at)."""
    if cancelled:
        return Outcome.CANCELLED
    if timeout or connect_error or status is None:
        return Outcome.FAILURE
    if status < 400:
        return Outcome.SUCCESS
    head = body[:_SNIFF]
    if status in _DEAD_STATUSES or (head and any(m in head for m in _DEAD_MARKERS)):
        return Outcome.DEAD_KEY
    if status == 429:
        return Outcome.RATE_LIMITED
    if (status >= 500 and status not in _REQUEST_5XX) or status == 408 or (head and _OVERLOADED in head):
        return Outcome.FAILURE  # 500/502/503/504, 529, a CDN's 52x, …
    return Outcome.CLIENT_ERROR


def retryable(outcome: Outcome) -> bool:
    """May the request be tried again on another deployment (before any byte reached the client)?"""
    return outcome in _RETRYABLE


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_OPENAI_RESETS = (("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests"),
                  ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"))
_ANTHROPIC_RESETS = tuple((f"anthropic-ratelimit-{kind}-reset", f"anthropic-ratelimit-{kind}-remaining")
                          for kind in ("requests", "tokens", "input-tokens", "output-tokens"))


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the upstream asks us to wait, from its headers (lower-case names, or a case-insensitive
    mapping such as aiohttp's); ``now`` is the wall clock for dates. Unparseable values are ignored.

    An explicit ``retry-after-ms`` / ``retry-after`` wins; otherwise the latest reset of an exhausted
    (remaining "0") OpenAI or Anthropic rate-limit bucket."""
    value = _seconds(headers.get("retry-after-ms"))
    if value is not None:
        return value / 1000.0
    raw = headers.get("retry-after")
    if raw is not None:
        value = _seconds(raw)
        if value is None:
            value = _until(_http_date(raw), now)
        if value is not None:
            return value
    wait: float | None = None
    for reset, remaining in _OPENAI_RESETS:
        if _exhausted(headers.get(remaining)):
            wait = _later(wait, _duration(headers.get(reset)))
    for reset, remaining in _ANTHROPIC_RESETS:
        if _exhausted(headers.get(remaining)):
            wait = _later(wait, _until(_rfc3339(headers.get(reset)), now))
    return wait


def _exhausted(remaining: str | None) -> bool:
    return remaining is not None and remaining.strip() == "0"


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _duration(raw: str | None) -> float | None:
    """Go-style durations as OpenAI sends them: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s`` (a bare number: seconds)."""
    if raw is None:
        return None
    text = raw.strip()
    plain = _seconds(text)
    if plain is not None or not text:
        return plain
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and math.isfinite(total) else None


def _http_date(raw: str) -> float | None:
    try:
        moment = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _rfc3339(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _until(moment: float | None, now: float | None) -> float | None:
    if moment is None:
        return None
    return max(0.0, moment - (time.time() if now is None else now))
