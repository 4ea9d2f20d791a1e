"""Breaker state shared between gateway instances through Redis (optional, with ``[state] backend = "redis"``).

A local trip writes the member's open-until (wall clock) into one Redis hash; every ``interval`` each
instance reads the hash and opens its own breakers whose remote open-until is later. Closing is never
shared: breakers half-open on their own clocks. Redis trouble is logged once per outage and otherwise
ignored — sharing is an optimisation, never a reason to fail a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from .breaker import State
from .health import Health, Member

__all__ = ["HealthSharer"]

log = logging.getLogger("ccm_gateway.resilience")

_TOLERANCE = 0.05  # seconds: a remote open-until this close to the local one is the same trip (clock rounding)


class HealthSharer:
    """Syncs ``health``'s open breakers through ``redis_client`` (a ``redis.asyncio.Redis``, built like
    ``state/redis.py`` builds its client: short socket timeouts, no client-side retries)."""

    def __init__(self, health: Health, redis_client: Any, prefix: str = "ccm:breaker:",
                 interval: float | None = None) -> None:
        self.health = health
        self.client = redis_client
        self.key = f"{prefix}open"
        self.interval = health.config.share_interval if interval is None else interval
        self._pending: dict[str, float] = {}  # member id → open-until (wall) still to be written
        self._written: dict[str, float] = {}  # what this instance wrote last, not to be re-applied
        self._applying = False
        self._task: asyncio.Task[None] | None = None
        self._down = False  # inside a Redis outage (logged once)
        health.subscribe(self._on_transition)

    async def start(self) -> None:
        """Start the periodic sync (one task for the process, not per request)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ccm-breaker-sharer")

    async def close(self) -> None:
        """Stop syncing and flush local trips not yet written (bounded by the client's timeouts)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()

    async def sync(self) -> None:
        """One round: write pending local trips, then apply remote ones. Never raises for Redis errors."""
        await self._flush()
        try:
            remote = await self.client.hgetall(self.key)
        except Exception as exc:  # any Redis trouble just skips this round
            self._failed(exc)
            return
        self._recovered()
        self._apply(remote)

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # whatever goes wrong, sharing must not end for the process' lifetime
                self._failed(exc)
            await asyncio.sleep(self.interval)

    def _on_transition(self, member: Member, old: State, new: State) -> None:
        if new is State.OPEN and not self._applying:
            until = self.health.open_until_wall(member)
            if until is not None:
                self._pending[member.id] = until

    async def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        ttl = math.ceil(max(max(pending.values()) - self.health.wall(), self.health.config.breaker.open_max)) + 1
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(self.key, mapping={k: repr(v) for k, v in pending.items()})
                pipe.expire(self.key, ttl)
                await pipe.execute()
        except Exception as exc:  # keep the trips for the next round
            for k, v in pending.items():
                self._pending[k] = max(v, self._pending.get(k, v))
            self._failed(exc)
            return
        self._recovered()
        self._written.update(pending)

    def _apply(self, remote: dict[Any, Any]) -> None:
        health, now = self.health, self.health.wall()
        self._applying = True
        try:
            for raw_id, raw_until in remote.items():
                member_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                try:
                    until = float(raw_until)
                except (TypeError, ValueError):
                    continue
                if until <= now or abs(until - self._written.get(member_id, -1.0)) < 1e-6:
                    continue
                member = health.member(member_id)
                if member is None:
                    continue
                local = health.open_until_wall(member)
                if local is not None and until <= local + _TOLERANCE:
                    continue
                health.open_remote(member, until)
        finally:
            self._applying = False
        for member_id in [k for k, v in self._written.items() if v <= now]:
            del self._written[member_id]

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.warning("resilience: breaker sharing through Redis paused (%s); local breakers go on",
                        type(exc).__name__)

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.info("resilience: breaker sharing through Redis resumed")
