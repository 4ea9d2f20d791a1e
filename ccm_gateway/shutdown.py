"""Graceful shutdown: in-flight requests get the grace period, then end with a proper error.

hypercorn stops accepting on SIGTERM and waits ``graceful_timeout`` for open connections, then
cancels whatever is left — mid-stream, with no word to the client. ``Drain`` keeps the set of
in-flight request tasks (a set add and discard per request: no task, no timer of its own); when the
server begins to stop (``begin``), one timer fires shortly before hypercorn's deadline and cancels
the remaining tasks. The exchange stage recognises that cancellation (``ended``) and answers in the
caller's protocol: a 503, or the dialect's SSE error event when a stream was under way. Every stage's
``finally`` runs on the way out, so billing settles and queues its final record, and the lifespan
shutdown that follows writes the ledger (``Meter.close``).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("ccm_gateway.shutdown")


class Drain:
    """The in-flight requests of one app, and the timer that ends them at shutdown."""

    __slots__ = ("_timer", "ending", "over", "tasks")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()
        self.ending: set[asyncio.Task[object]] = set()  # tasks this drain cancelled
        self.over = False  # the grace period has run out: a request arriving now gets 503 at once
        self._timer: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Task[object] | None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[object]) -> None:
        self.tasks.discard(task)
        self.ending.discard(task)

    @staticmethod
    def margin(grace: float) -> float:
        """How long before the server's own deadline the drain ends requests: time for the error
        events and the billing ``finally`` blocks (a tenth of the grace period, at most 1 s)."""
        return min(1.0, grace / 10)

    def begin(self, grace: float) -> None:
        """The server is stopping and gives open connections ``grace`` seconds: end what is still
        running after ``grace - margin``. Call on the event loop; a second call changes nothing."""
        if self._timer is None:
            delay = max(0.0, grace - self.margin(grace))
            self._timer = asyncio.get_running_loop().call_later(delay, self.end_all)
            log.info("shutting down: %d request(s) in flight get %.1fs to finish", len(self.tasks), delay)

    def end_all(self) -> None:
        """Cancel every in-flight request now (the exchange stage answers each one)."""
        self.over = True
        if self.tasks:
            log.warning("grace period over: ending %d request(s) with an error", len(self.tasks))
        for task in list(self.tasks):
            if not task.done():
                self.ending.add(task)
                task.cancel("ccm-gateway shutdown")

    def ended(self, task: asyncio.Task[object]) -> bool:
        """Was ``task`` cancelled by this drain? If so its cancellation is consumed (the request
        goes on to write its error and finish normally)."""
        if task not in self.ending:
            return False
        self.ending.discard(task)
        task.uncancel()
        return True

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
