"""The request path's timeouts on one coarse timer wheel per event loop (ccm_gateway/timer_wheel.py)."""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time

import pytest
import uvloop

from ccm_gateway import timer_wheel
from ccm_gateway.timer_wheel import IdleTimeout


async def _chunks(timer: IdleTimeout, gaps: list[float]) -> int:
    """Simulated chunks arriving after ``gaps`` seconds each; returns how many arrived."""
    loop = asyncio.get_running_loop()
    seen = 0
    for gap in gaps:
        await asyncio.sleep(gap)
        timer.last = loop.time()
        seen += 1
    return seen


def test_progress_keeps_the_block_alive_past_the_idle_time() -> None:
    asyncio.run(_progress_keeps_the_block_alive_past_the_idle_time())


async def _progress_keeps_the_block_alive_past_the_idle_time() -> None:
    # 12 chunks 20 ms apart: 240 ms in all, four times the 60 ms idle limit, never idle for 60 ms.
    async with IdleTimeout(0.06) as timer:
        seen = await _chunks(timer, [0.02] * 12)
    assert seen == 12


def test_a_gap_longer_than_idle_times_out() -> None:
    asyncio.run(_a_gap_longer_than_idle_times_out())


async def _a_gap_longer_than_idle_times_out() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen = 0
    with pytest.raises(TimeoutError):
        async with IdleTimeout(0.05) as timer:
            for gap in (0.01, 0.01, 0.5):
                await asyncio.sleep(gap)
                timer.last = loop.time()
                seen += 1
    assert seen == 2
    # timed out 50 ms after the last progress, not 50 ms after entering, nor after the long sleep
    assert 0.06 <= loop.time() - started < 0.4


def test_the_cap_ends_the_block_whatever_the_progress() -> None:
    asyncio.run(_the_cap_ends_the_block_whatever_the_progress())


async def _the_cap_ends_the_block_whatever_the_progress() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with IdleTimeout(0.05, cap=started + 0.12) as timer:
            await _chunks(timer, [0.01] * 100)
    assert loop.time() - started < 0.5


def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    asyncio.run(_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout())


async def _a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    async def body() -> None:
        async with IdleTimeout(10.0) as timer:
            await _chunks(timer, [0.01] * 1000)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


def test_the_timer_is_gone_after_the_block() -> None:
    asyncio.run(_the_timer_is_gone_after_the_block())


async def _the_timer_is_gone_after_the_block() -> None:
    loop = asyncio.get_running_loop()
    async with IdleTimeout(0.02) as timer:
        timer.last = loop.time()
    await asyncio.sleep(0.06)  # a timer left armed would cancel this task now
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


def test_an_exception_in_the_block_passes_through() -> None:
    asyncio.run(_an_exception_in_the_block_passes_through())


async def _an_exception_in_the_block_passes_through() -> None:
    with pytest.raises(ValueError):
        async with IdleTimeout(math.inf):
            raise ValueError("boom")


def test_nested_in_an_outer_timeout_each_keeps_its_own_expiry() -> None:
    asyncio.run(_nested_in_an_outer_timeout_each_keeps_its_own_expiry())


async def _nested_in_an_outer_timeout_each_keeps_its_own_expiry() -> None:
    # the outer asyncio.timeout expires first: its TimeoutError, not ours (ours is idle 10 s)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            async with IdleTimeout(10.0) as timer:
                await _chunks(timer, [0.01] * 100)
    # ours expires inside an outer timeout that has not: the outer one does not swallow it
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5):
            async with IdleTimeout(0.03):
                await asyncio.sleep(1)


def test_a_cancellation_that_meets_the_expiry_stays_a_cancellation() -> None:
    asyncio.run(_a_cancellation_that_meets_the_expiry_stays_a_cancellation())


async def _a_cancellation_that_meets_the_expiry_stays_a_cancellation() -> None:
    # The task is cancelled from elsewhere and its idle time runs out in the same loop turn: the
    # caller's cancellation must win (a shutdown or a client that left is not an upstream timeout).
    loop = asyncio.get_running_loop()

    async def body() -> None:
        async with IdleTimeout(0.01):
            time.sleep(0.05)  # blocks the loop: the cancel below and the expiry both fall due meanwhile
            await asyncio.sleep(1)

    task = asyncio.create_task(body())
    loop.call_later(0.005, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await task


def test_timeout_at_fires_after_its_time_and_not_before() -> None:
    asyncio.run(_timeout_at_fires_after_its_time_and_not_before())


async def _timeout_at_fires_after_its_time_and_not_before() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with timer_wheel.timeout_at(started + 0.05):
            await asyncio.sleep(1)
    # at the wheel's precision: never early, at most two ticks (plus scheduling) late
    assert 0.05 <= loop.time() - started < 0.05 + 2 * timer_wheel.TICK + 0.1
    async with timer_wheel.timeout(0.2):
        await asyncio.sleep(0.05)  # done in time: nothing raised


def test_call_at_runs_its_callback_once_unless_cancelled() -> None:
    asyncio.run(_call_at_runs_its_callback_once_unless_cancelled())


async def _call_at_runs_its_callback_once_unless_cancelled() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    timer_wheel.call_at(loop.time() + 0.02, lambda: ran.append("due"))
    dropped = timer_wheel.call_at(loop.time() + 0.02, lambda: ran.append("cancelled"))
    dropped.cancel()
    timer_wheel.call_at(loop.time() - 1, lambda: ran.append("past"))  # already due: the next visit
    await asyncio.sleep(0.1)
    assert sorted(ran) == ["due", "past"]


def test_a_callback_may_cancel_an_entry_of_the_same_slot() -> None:
    asyncio.run(_a_callback_may_cancel_an_entry_of_the_same_slot())


async def _a_callback_may_cancel_an_entry_of_the_same_slot() -> None:
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    when = loop.time() + 0.02
    later: list[timer_wheel.Later] = []
    timer_wheel.call_at(when, lambda: (ran.append("first"), later[0].cancel()))
    later.append(timer_wheel.call_at(when, lambda: ran.append("second")))
    await asyncio.sleep(0.1)
    assert ran == ["first"]


def test_a_stalled_loop_fires_what_fell_due_once_and_the_idle_wheel_is_forgotten() -> None:
    asyncio.run(_a_stalled_loop_fires_what_fell_due_once_and_the_idle_wheel_is_forgotten())


async def _a_stalled_loop_fires_what_fell_due_once_and_the_idle_wheel_is_forgotten() -> None:
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    for i in range(20):
        timer_wheel.call_at(loop.time() + 0.01 * i, lambda i=i: ran.append(i))
    time.sleep(0.5)  # the loop is blocked for fifty ticks
    await asyncio.sleep(0.05)
    assert ran == list(range(20))
    assert loop not in timer_wheel._wheels  # nothing armed: no timer left running, no loop kept


def test_timeouts_and_streams_of_progress_on_uvloop() -> None:
    """The standalone server runs on uvloop: many timeouts at once, some expiring, some kept alive."""
    async def main() -> tuple[int, int]:
        async def one(i: int) -> str:
            try:
                async with IdleTimeout(0.05) as timer:
                    for _ in range(5):
                        await asyncio.sleep(0.02 if i % 2 else 0.2)  # odd: progress in time; even: too slow
                        timer.last = asyncio.get_running_loop().time()
                return "done"
            except TimeoutError:
                return "timed out"

        results = await asyncio.gather(*(one(i) for i in range(200)))
        return results.count("done"), results.count("timed out")

    assert uvloop.run(main()) == (100, 100)


def test_the_wheel_sleeps_until_its_earliest_timeout() -> None:
    """Timeouts seconds ahead must not wake the process every tick (an idle gateway with open streams)."""
    asyncio.run(_the_wheel_sleeps_until_its_earliest_timeout())


async def _the_wheel_sleeps_until_its_earliest_timeout() -> None:
    loop = asyncio.get_running_loop()
    far = [timer_wheel.call_at(loop.time() + 60 + i, lambda: None) for i in range(5)]
    wheel = timer_wheel._wheels[loop]
    assert wheel._handle is not None and wheel._handle.when() >= loop.time() + 59.9
    soon = timer_wheel.call_at(loop.time() + 1, lambda: None)  # an earlier one moves the timer forward
    assert wheel._handle.when() <= loop.time() + 1.1
    for entry in [*far, soon]:
        entry.cancel()


def test_a_block_that_turns_the_expiry_into_another_error_leaves_no_cancel_behind() -> None:
    asyncio.run(_a_block_that_turns_the_expiry_into_another_error_leaves_no_cancel_behind())


async def _a_block_that_turns_the_expiry_into_another_error_leaves_no_cancel_behind() -> None:
    # as asyncio.timeout: once the timeout fired its cancel is taken back, whatever ends the block
    with pytest.raises(ValueError):
        async with timer_wheel.timeout(0.02):
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                raise ValueError("converted") from None
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # and the task is not cancelled at its next await


def test_loops_in_several_threads_share_the_wheel_table_safely() -> None:
    """An app run on its own loop in a thread next to other loops (the test servers do this, an embedder
    may): wheels made, dropped and purged (loops closed with timeouts armed) concurrently never fail."""
    errors: list[str] = []
    stop = time.monotonic() + 1.5

    async def once() -> None:
        async with timer_wheel.timeout(0.001):
            await asyncio.sleep(0)
        timer_wheel.call_at(asyncio.get_running_loop().time() + 60, lambda: None)  # armed when the loop closes

    def worker() -> None:
        for _ in range(5000):  # bounded; the clock ends it sooner
            if time.monotonic() > stop:
                return
            try:
                asyncio.run(once())
            except Exception as exc:  # any error is the failure looked for
                errors.append(f"{type(exc).__name__}: {exc}")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the table is changed under a scan
    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
