"""core/loops.py: a background loop stops when asked, even when it swallows a cancel."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from qa_service.core.loops import Loop, pause


async def test_a_loop_that_swallows_every_cancel_still_stops() -> None:
    async def body(stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Swallowed, as asyncio.wait_for can on 3.11 (CPython gh-86296).
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    loop = Loop(body, "swallows")
    await asyncio.sleep(0.05)
    assert await loop.stop(5.0)
    assert loop.task.done()


async def test_a_cancel_swallowed_while_the_loop_is_blocked_is_given_again() -> None:
    swallowed = 0
    blocked = asyncio.Event()

    async def body(stop: asyncio.Event) -> None:
        nonlocal swallowed
        while not stop.is_set():
            # One step: two commands that never end by themselves and do not
            # watch `stop`; the first cancel is swallowed (gh-86296), so only
            # a second one ends the step.
            for _ in range(2):
                blocked.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if swallowed:
                        raise
                    swallowed += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]

    loop = Loop(body, "blocked")
    async with asyncio.timeout(5):
        await blocked.wait()
    assert await loop.stop(5.0)
    assert swallowed == 1  # the case under test did happen
    assert loop.task.done()


async def test_a_loop_asked_to_stop_without_waiting_ends_at_its_next_step() -> None:
    async def body(stop: asyncio.Event) -> None:
        while not await pause(stop, 0.01):
            with suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    loop = Loop(body, "asked")
    loop.ask_to_stop()
    await asyncio.wait({loop.task}, timeout=5.0)
    assert loop.task.done()


async def test_pause_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await pause(stop, 60)
    assert not await pause(asyncio.Event(), 0.01)
