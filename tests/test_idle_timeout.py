"""IdleTimeout: a stream's idle timeout without a timer operation per chunk (ccm_gateway/idle_timeout.py)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from ccm_gateway.idle_timeout import IdleTimeout


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
