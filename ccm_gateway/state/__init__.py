"""Counters shared by the stages: in memory (default) or in Redis (shared across instances).

Rate limits use them now; circuit-breaker state is meant to live here too (see ``base.py``).
Budgets use the same ``[state]`` settings (Redis URL, timeout, instances, recheck) but keep their
own store with calendar windows and reservations (``billing/redis_budgets.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Admission, Rate, Slots, StateBackend
from .failover import FailoverBackend
from .memory import MemoryBackend

if TYPE_CHECKING:
    from ..config import StateConfig

__all__ = ["Admission", "FailoverBackend", "MemoryBackend", "Rate", "Slots", "StateBackend", "backend_from_config"]


def backend_from_config(config: StateConfig) -> StateBackend:
    """The configured backend; Redis always comes wrapped in its local fallback."""
    if config.backend == "memory":
        return MemoryBackend()
    from .redis import RedisBackend  # imports redis only when it is used

    assert config.url is not None  # load_config checks it
    timeout = config.timeout_ms / 1000
    return FailoverBackend(
        RedisBackend(config.url.reveal(), timeout),
        instances=config.instances,
        timeout=timeout,
        recheck=config.recheck_ms / 1000,
    )
