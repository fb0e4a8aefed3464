"""ReadAhead: closing it ends its reading task, even when a cancel is swallowed,
and never cuts short its source's own closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from qa_service.core.readahead import Ended, ReadAhead


async def _swallows_cancels(
    swallowed: list[int], closed: list[str], waiting: asyncio.Event
) -> AsyncGenerator[int]:
    """A source whose waits swallow every cancel, as asyncio.wait_for can on
    Python 3.11 when the awaited command completes as the cancel lands; its
    closing takes a while (an upstream response being closed)."""
    n = 0
    try:
        while n < 200:  # 10 s at most: a test that finds the task alive still ends
            try:
                waiting.set()
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                swallowed.append(n)
            n += 1
            yield n
    finally:
        await asyncio.sleep(0.3)
        closed.append("closed")


async def test_close_ends_the_reading_task_even_when_its_source_swallows_the_cancel() -> None:
    swallowed: list[int] = []
    closed: list[str] = []
    waiting = asyncio.Event()
    ahead = ReadAhead(_swallows_cancels(swallowed, closed, waiting))
    async with asyncio.timeout(5):
        await ahead.get()
        waiting.clear()
        await waiting.wait()  # the cancel lands inside the source's wait

    ahead.close()
    await asyncio.wait({ahead._task}, timeout=5)

    assert ahead._task.done()
    assert len(swallowed) == 1
    # The source was closed, all the way: nothing cut its closing short.
    assert closed == ["closed"]


async def test_a_source_that_ends_hands_over_everything_then_ended() -> None:
    async def three() -> AsyncGenerator[int]:
        for n in range(3):
            yield n

    ahead = ReadAhead(three())
    async with asyncio.timeout(5):
        items = [await ahead.get() for _ in range(4)]

    assert items == [0, 1, 2, Ended()]
    ahead.close()


async def test_a_wait_cancelled_after_its_item_came_loses_nothing() -> None:
    """coalescing.py waits for the next item with a deadline. A wait cancelled
    in the moment after its item arrived, before it resumed, must leave that
    item for the next `get` (a hand-over through the waiter lost it)."""
    release = asyncio.Event()

    async def one_then_waits() -> AsyncGenerator[str]:
        yield "first"
        await release.wait()
        yield "second"

    ahead = ReadAhead(one_then_waits())
    async with asyncio.timeout(5):
        assert await ahead.get() == "first"
        waiter = asyncio.create_task(ahead.get())
        await asyncio.sleep(0)  # it waits
        release.set()
        await asyncio.sleep(0)  # the source puts "second": the waiter is due to resume
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        items = [await ahead.get(), await ahead.get()]

    assert items == ["second", Ended()]
    ahead.close()
