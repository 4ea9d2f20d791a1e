"""Wait before the next attempt: full-jitter exponential backoff, so retrying clients do not move in step."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff"]


def backoff(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry): uniform in
    [0, min(cap, base × 2^(attempt-1))]."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 64))
    return rng() * ceiling
