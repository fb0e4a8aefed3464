"""ReadAhead: closing it ends its reading task, even when a cancel is swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from qa_service.core.readahead import Ended, ReadAhead


async def _swallows_cancels(
    times: int, swallowed: list[int], waiting: asyncio.Event
) -> AsyncGenerator[int]:
    """A source whose waits swallow `times` cancels, as asyncio.wait_for can on
    Python 3.11 when the awaited command completes as the cancel lands."""
    n = 0
    while n < 200:  # 10 s at most: a test that finds the task alive still ends
        try:
            waiting.set()
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if len(swallowed) >= times:
                raise
            swallowed.append(n)
        n += 1
        yield n


async def test_close_ends_the_reading_task_even_when_its_source_swallows_cancels() -> None:
    swallowed: list[int] = []
    waiting = asyncio.Event()
    ahead = ReadAhead(_swallows_cancels(3, swallowed, waiting))
    async with asyncio.timeout(5):
        await ahead.queue.get()
        waiting.clear()
        await waiting.wait()  # the cancel lands inside the source's wait

    ahead.close()
    await asyncio.wait({ahead._task}, timeout=5)

    assert len(swallowed) == 3
    assert ahead._task.cancelled()


async def test_a_source_that_ends_hands_over_everything_then_ended() -> None:
    async def three() -> AsyncGenerator[int]:
        for n in range(3):
            yield n

    ahead = ReadAhead(three())
    async with asyncio.timeout(5):
        items = [await ahead.queue.get() for _ in range(4)]

    assert items == [0, 1, 2, Ended()]
    ahead.close()
