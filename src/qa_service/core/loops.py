"""The event loop the service runs on, and background loops that stop when asked.

The event loop: uvloop, with eager task start where Python has it (3.12+).
An eager task runs its first step inside `create_task`, up to its first real
wait, instead of being queued behind everything already ready. A new answer's
set-up (its producer task, the read-ahead, sse-starlette's task group) then
costs one pass through the loop, not one per task (benchmarks/interpreters.py
measures it). On 3.11 the factory does not exist, and tasks start as before.

Background loops: a single `task.cancel()` is not enough on Python 3.11: redis-py sends every
command through `asyncio.wait_for`, which swallows a cancel that lands as its
command completes (CPython gh-86296), and the loop then runs for ever. So a
loop here also gets a stop event, which it checks between steps and waits on
instead of sleeping; stopping sets it, cancels, and cancels again until the
task has ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

import anyio
import uvloop

log = logging.getLogger(__name__)

# asyncio.eager_task_factory came in 3.12.
EAGER_TASKS_SUPPORTED = sys.version_info >= (3, 12)


class EagerLoop(uvloop.Loop):
    """uvloop's loop, its tasks started eagerly by `asyncio.eager_task_factory`.

    That factory itself, not one of our own: anyio recognises it (by its code
    object) and builds the tasks of its task groups lazily, because it must
    record a task's cancel scope before the task runs. Under any other eager
    factory, every anyio task group (httpcore's connect, sse-starlette's
    stream) failed with "Attempted to exit a cancel scope that isn't the
    current task's current cancel scope".

    `create_task` calls the factory itself, because uvloop's (0.23) does not
    fit it: on 3.13 it passes the factory `eager_start=`, a keyword that
    3.12's and 3.13's factory do not take, so every task failed with
    TypeError (uvloop issue 754 is the same keyword from the other side);
    and it names the task only once the factory has returned, after an eager
    first step ran under the default name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
        eager_start: bool | None = None,
    ) -> asyncio.Task[Any]:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        factory = self.get_task_factory()
        if factory is None or eager_start is False:
            # Someone replaced the factory, or asked for a lazy task (3.14's keyword).
            return asyncio.Task(coro, loop=self, name=name, context=context)
        return cast("asyncio.Task[Any]", factory(self, coro, name=name, context=context))  # type: ignore[call-arg,arg-type,unused-ignore]


def new_eager_event_loop() -> asyncio.AbstractEventLoop:
    """A loop whose tasks start eagerly (uvicorn's `loop=`, as an import string)."""
    return EagerLoop()


def tasks_start_eagerly() -> bool:
    """Whether the running loop starts tasks eagerly (the ready log line says)."""
    factory = asyncio.get_running_loop().get_task_factory()
    return factory is not None and factory is getattr(asyncio, "eager_task_factory", None)


def event_loop_setting(eager_tasks: bool) -> str:
    """uvicorn's `loop=` for QA_EAGER_TASKS: eager where Python supports it."""
    if eager_tasks and EAGER_TASKS_SUPPORTED:
        return f"{__name__}:{new_eager_event_loop.__name__}"
    return "uvloop"


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
