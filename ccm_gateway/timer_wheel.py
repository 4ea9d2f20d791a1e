"""The request path's timeouts on one coarse timer wheel per event loop.

Arming and cancelling an event-loop timer costs ~3 µs under uvloop, and ``asyncio.timeout`` ~5 µs
around it (29k instructions, counted); a streamed request needs four such timers — its body read,
its head and first chunk, its idle time between chunks, and the moment its disconnect watcher
starts — and a stream's idle timer would be re-armed for every chunk. None of them needs millisecond
precision: they are seconds long. Here a timeout is an entry in a slot of a wheel of ``TICK``-wide
slots, and one loop timer is set for the earliest occupied slot, so arming and disarming are dict
operations (the timer moves only when a new slot comes before all others), a timeout fires at most
one tick (10 ms, plus 0.5 ms of slack) late, and a wheel whose timeouts lie far ahead does not
wake its process. An idle timeout only records its progress (``timer.last = now``); when its slot
comes round it moves to a later slot instead of firing if there was progress since.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import Callable
from types import TracebackType

TICK = 0.01  # seconds per slot
_PER_TICK = 1 / TICK
_SLACK = 0.0005  # the timer is set this long after a slot's end, so a visit never comes early

UNTIMED = contextlib.nullcontext()  # ``async with``-able stand-in where a path needs no timeout

_wheels: dict[asyncio.AbstractEventLoop, _Wheel] = {}


class _Entry:
    """Something due at ``due()`` (loop time; ``when`` unless a subclass moves it): ``fire()`` runs
    once it has passed."""

    __slots__ = ("_slot", "_wheel", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self._slot: int | None = None

    def due(self) -> float:
        return self.when

    def fire(self) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        wheel = _wheels.get(loop)
        if wheel is None:
            # Loops closed with timeouts armed; a snapshot, since loops in other threads add and drop theirs.
            for closed in [other for other in list(_wheels) if other.is_closed()]:
                _wheels.pop(closed, None)
            wheel = _wheels[loop] = _Wheel(loop)
        self._wheel = wheel
        wheel.place(self, self.due())

    def _disarm(self) -> None:
        if self._slot is not None:
            self._wheel.remove(self)


class _Wheel:
    """One event loop's slots: ``{slot index: {entry: None}}``, and a heap of the occupied indices.
    Its one loop timer is set for the earliest occupied slot, so a wheel whose timeouts lie seconds
    ahead sleeps until then. An idle wheel forgets itself (and a loop closed while its wheel was not
    idle is forgotten when the next wheel is made), so closed loops are not kept."""

    __slots__ = ("_at", "_handle", "_heap", "_loop", "_next", "_queued", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, dict[_Entry, None]] = {}
        self._heap: list[int] = []  # occupied indices (and some emptied since: dropped when met)
        self._queued: set[int] = set()  # what the heap holds, so an index is pushed once
        self._next = int(loop.time() * _PER_TICK)  # the first slot not visited yet
        self._handle: asyncio.TimerHandle | None = None
        self._at: int | None = None  # the slot the timer is set for

    def place(self, entry: _Entry, due: float) -> None:
        if due == math.inf:  # never due: nothing to arm
            return
        index = int(due * _PER_TICK)
        if index < self._next:  # already due: the next visit fires it
            index = self._next
        slot = self._slots.get(index)
        if slot is None:
            slot = self._slots[index] = {}
            if index not in self._queued:
                self._queued.add(index)
                heapq.heappush(self._heap, index)
            if self._at is None or index < self._at:
                self._set(index)
        slot[entry] = None
        entry._slot = index

    def remove(self, entry: _Entry) -> None:
        index = entry._slot
        entry._slot = None
        slot = self._slots.get(index)  # type: ignore[arg-type]
        if slot is not None:  # else its slot is being visited: the visit skips it
            del slot[entry]
            if not slot:
                del self._slots[index]  # type: ignore[arg-type]

    def _set(self, index: int) -> None:
        """The timer, for just after slot ``index`` has passed."""
        if self._handle is not None:
            self._handle.cancel()
        self._at = index
        self._handle = self._loop.call_at((index + 1) * TICK + _SLACK, self._visit)

    def _visit(self) -> None:
        """Fire what is due in the slots that have passed; move idle timeouts that made progress."""
        self._handle = self._at = None
        now = self._loop.time()
        upto = int(now * _PER_TICK)  # slots before this one lie wholly in the past
        if upto > self._next:
            self._next = upto
        slots, heap, queued = self._slots, self._heap, self._queued
        while heap and heap[0] < upto:
            i = heapq.heappop(heap)
            queued.discard(i)
            slot = slots.pop(i, None)
            if slot:
                for entry in slot:
                    if entry._slot != i:  # cancelled by what an entry before it ran
                        continue
                    entry._slot = None
                    due = entry.due()
                    if due > now:
                        self.place(entry, due)
                    else:
                        entry.fire()
        while heap and heap[0] not in slots:
            queued.discard(heapq.heappop(heap))
        if heap:
            if self._at != heap[0]:
                self._set(heap[0])
        elif _wheels.get(self._loop) is self:
            _wheels.pop(self._loop, None)


class Timeout(_Entry):
    """``async with timeout_at(when):`` — like ``asyncio.timeout_at``, at the wheel's precision:
    TimeoutError out of the block once ``when`` (loop time) has passed; a cancellation from
    elsewhere passes through unchanged (told apart by the task's cancel count, as asyncio does)."""

    __slots__ = ("_cancelling", "_expired", "_task")

    def __init__(self, when: float) -> None:
        super().__init__(when)
        self._expired = False

    def fire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aenter__(self) -> Timeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a timeout needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._arm()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._slot is not None:
            self._wheel.remove(self)
        # As asyncio's Timeout: once it fired, its cancel is taken back whatever ends the block.
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


def timeout_at(when: float) -> Timeout:
    return Timeout(when)


def timeout(seconds: float) -> Timeout:
    return Timeout(asyncio.get_running_loop().time() + seconds)


class IdleTimeout(Timeout):
    """``async with IdleTimeout(idle, cap) as timer:`` — TimeoutError out of the block when ``idle``
    seconds pass without progress (``timer.last = loop.time()``, a plain store because it runs for
    every chunk of a stream), or at ``cap`` (loop time, kept as ``when``) in any case."""

    __slots__ = ("idle", "last")

    def __init__(self, idle: float, cap: float = math.inf) -> None:
        super().__init__(cap)
        self.idle = idle
        self.last = asyncio.get_running_loop().time()

    def due(self) -> float:
        due = self.last + self.idle
        return due if due < self.when else self.when


class Later(_Entry):
    """``callback()`` once ``when`` (loop time) has passed, unless cancelled first."""

    __slots__ = ("_callback",)

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        super().__init__(when)
        self._callback = callback

    def fire(self) -> None:
        try:
            self._callback()
        except Exception as exc:  # a callback's failure must not stop the wheel's other entries
            asyncio.get_running_loop().call_exception_handler(
                {"message": "timer_wheel callback failed", "exception": exc})

    def cancel(self) -> None:
        self._disarm()


def call_at(when: float, callback: Callable[[], object]) -> Later:
    """Run ``callback`` at ``when`` (loop time), at the wheel's precision; ``.cancel()`` to drop it."""
    entry = Later(when, callback)
    entry._arm()
    return entry
