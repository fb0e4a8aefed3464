"""core/loops.py: a background loop stops when asked, even when it swallows a cancel;
the event loop `serve` runs on starts tasks eagerly where Python has it (3.12+)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from uvicorn.importer import import_from_string

from qa_service.core import loops
from qa_service.core.loops import (
    EAGER_TASKS_SUPPORTED,
    Loop,
    event_loop_setting,
    new_eager_event_loop,
    pause,
    tasks_start_eagerly,
)


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


# ---------------------------------------------------------------- the event loop

eager_only = pytest.mark.skipif(
    not EAGER_TASKS_SUPPORTED, reason="eager task start needs Python 3.12 or later"
)


def run_on_eager_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # Each test gets a fresh loop of the kind `serve` runs on.
    runner = asyncio.Runner(loop_factory=new_eager_event_loop)
    with runner:
        runner.run(main())


@eager_only
def test_a_task_runs_its_first_step_inside_create_task_under_its_own_name() -> None:
    seen: list[str] = []

    async def first_step() -> None:
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.get_name())
        await asyncio.sleep(0)

    async def main() -> None:
        assert tasks_start_eagerly()
        # uvloop's own create_task named the task only after its first step.
        task = asyncio.get_running_loop().create_task(first_step(), name="answer-1")
        assert seen == ["answer-1"]
        await task
        # asyncio.create_task: on 3.13, uvloop's own create_task failed here with
        # TypeError (it passes the factory an eager_start= it does not take).
        # (3.12's asyncio.create_task itself names a task after creating it.)
        task = asyncio.create_task(first_step(), name="answer-2")
        assert len(seen) == 2
        await task

    run_on_eager_loop(main)


@eager_only
def test_anyio_task_groups_work_under_eager_start() -> None:
    # httpcore's connect and sse-starlette's stream are anyio task groups: under
    # an eager factory anyio does not recognise, each failed on exit ("Attempted
    # to exit a cancel scope that isn't the current task's current cancel scope").
    finished: list[int] = []

    async def child(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(n)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for n in range(3):
                group.start_soon(child, n)
        with anyio.move_on_after(0.01):
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep_forever)
        assert sorted(finished) == [0, 1, 2]

    run_on_eager_loop(main)


@eager_only
def test_a_lazy_task_asked_for_by_name_still_waits_its_turn() -> None:
    started: list[bool] = []

    async def step() -> None:
        started.append(True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(step(), eager_start=False)  # type: ignore[call-arg,unused-ignore]
        assert started == []
        await task
        assert started == [True]

    run_on_eager_loop(main)


def test_the_served_loop_is_eager_where_python_has_it_and_the_setting_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loops, "EAGER_TASKS_SUPPORTED", True)
    assert import_from_string(event_loop_setting(True)) is new_eager_event_loop
    assert event_loop_setting(False) == "uvloop"
    monkeypatch.setattr(loops, "EAGER_TASKS_SUPPORTED", False)
    assert event_loop_setting(True) == "uvloop"


def test_a_plain_loop_does_not_count_as_eager() -> None:
    async def main() -> bool:
        return tasks_start_eagerly()

    assert not asyncio.run(main())
