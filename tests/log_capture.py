"""What a logger emits, captured as the served gateway writes it (JSON lines), for the duration of a test."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from ccm_gateway.observability.log_format import JsonFormatter


@contextlib.contextmanager
def json_lines(logger: logging.Logger, level: int) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
