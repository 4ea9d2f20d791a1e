"""Log output for the standalone server: one JSON object (or one text line) per record, redacted.

The formatter sits on the root handler, so every logger's records — the gateway's, aiohttp's,
hypercorn's, asyncio's — pass through the same redaction. Hosts that embed the app keep their own
logging and can add ``redaction.RedactionFilter`` to their handlers.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from .redaction import RedactingFormatter, redact

ACCESS_LOGGER = "ccm_gateway.access"
_encode = msgspec.json.encode


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, "exc"?}`` per record. An access record's
    message is already a JSON object (``access_log``) and is written as it is."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER and not record.args:
            return redact(record.msg if isinstance(record.msg, str) else str(record.msg))
        out: dict[str, object] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = str(request_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(record.stack_info)
        return _encode(out).decode()


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def choose_format(fmt: str) -> str:
    """``auto``: text on a terminal (``make run``), JSON when stderr goes to a file or a collector."""
    if fmt != "auto":
        return fmt
    return "text" if sys.stderr.isatty() else "json"


def configure_logging(level: str, fmt: str = "auto") -> logging.Handler:
    """One stderr handler on the root logger with the redacting formatter; replaces handlers a
    previous call installed (not a host's own)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "ccm_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.ccm_gateway = True  # type: ignore[attr-defined]
    if choose_format(fmt) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
