"""Background loops that stop when asked, even when a cancel is lost on the way.

A single `task.cancel()` is not enough on Python 3.11: redis-py sends every
command through `asyncio.wait_for`, which swallows a cancel that lands as its
command completes (CPython gh-86296), and the loop then runs for ever. So a
loop here also gets a stop event, which it checks between steps and waits on
instead of sleeping; stopping sets it, cancels, and cancels again until the
task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

log = logging.getLogger(__name__)

# How often a stop repeats its cancel while the loop has not ended.
_RECANCEL_SECONDS = 0.1


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stop` is set meanwhile; True if it was."""
    if not stop.is_set():
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            pass
    return stop.is_set()


class Loop:
    """A task running `body(stop)`; `body` returns soon after `stop` is set.

    A body must not await in its cleanup (`finally`, `except CancelledError`,
    `async with` exits): `stop` cancels it again every 100 ms until it has
    ended, and a repeated cancel would cut such cleanup short. Cleanup that
    must await belongs to the loop's owner, after `stop` returns.
    """

    def __init__(self, body: Callable[[asyncio.Event], Coroutine[Any, Any, None]], name: str):
        self._stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(body(self._stop), name=name)

    def ask_to_stop(self) -> None:
        """Set the stop event and cancel, without waiting: for sync callers
        (finalizers). The event alone ends the loop at its next step."""
        self._stop.set()
        self.task.cancel()

    async def stop(self, deadline: float) -> bool:
        """Ask it to stop and wait up to `deadline` seconds for it to end,
        shielded (callers run in a cancelled task's cleanup); True if it ended."""
        self.ask_to_stop()
        with anyio.move_on_after(deadline, shield=True):
            while not self.task.done():
                await asyncio.wait({self.task}, timeout=_RECANCEL_SECONDS)
                # A cancel swallowed by wait_for (gh-86296) is given again.
                self.task.cancel()
        if not self.task.done():
            log.warning("background loop %s did not stop in %.1f s", self.task.get_name(), deadline)
            return False
        if not self.task.cancelled() and (error := self.task.exception()) is not None:
            log.warning(
                "background loop %s failed (%s)", self.task.get_name(), type(error).__name__
            )
        return True
