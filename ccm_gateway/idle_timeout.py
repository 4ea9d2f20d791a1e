"""A stream's idle timeout that costs one attribute store per chunk.

``asyncio.Timeout.reschedule`` after every chunk cancels a timer and arms a new one: two event-loop
timer operations per chunk of every stream. Here the chunk loop only records when it last made
progress (``timer.last = now``); the one timer, when it fires, re-arms itself at ``last progress + idle`` if there
was progress since, and times the block out otherwise. On a steady stream the timer is re-armed
about once per ``idle`` seconds instead of once per chunk.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType


class IdleTimeout:
    """``async with IdleTimeout(idle, cap) as timer:`` raises TimeoutError out of the block when
    ``idle`` seconds pass without progress (``timer.last = loop.time()``, a plain store because it runs
    for every chunk), or at ``cap`` (loop time) in any case.

    Cancellation from elsewhere passes through unchanged; like ``asyncio.timeout``, the block's own
    expiry is told apart from it by the task's cancel count."""

    __slots__ = ("_cancelling", "_cap", "_due", "_expired", "_handle", "_idle", "_loop", "_task", "last")

    def __init__(self, idle: float, cap: float = math.inf) -> None:
        self._idle = idle
        self._cap = cap
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        self.last = 0.0  # loop time of the last progress

    async def __aenter__(self) -> IdleTimeout:
        loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("IdleTimeout should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.last = loop.time()
        self._arm(min(self.last + self._idle, self._cap))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc

    def _arm(self, due: float) -> None:
        self._due = due
        self._handle = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        due = min(self.last + self._idle, self._cap)
        if due > self._due:  # progress since the timer was armed: wait for the rest of the idle time
            self._arm(due)
            return
        self._handle = None
        self._expired = True
        self._task.cancel()
