"""How an answer's producer ends when something below it misbehaves: a heartbeat
whose cancel is swallowed (Python 3.11's asyncio.wait_for, CPython gh-86296),
and a cancel that lands while an append's reply is on its way (issue 20, items
1 and 5). tests/integration/test_producer_ends.py measures both against Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from qa_service.answers.model import AnswerRequest, answer_ref
from qa_service.answers.ports import LogInfo
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import RunTiming
from qa_service.core.errors import SHUTTING_DOWN, StoreUnavailableError
from qa_service.core.events import AnswerEvent, AnswerMeta, Failed, Text
from qa_service.generation.prompts import load_prompts
from qa_service.generation.writer import AIWriter
from qa_service.stores.memory_answers import MemoryAnswerStore

PROMPTS = load_prompts(Path(__file__).resolve().parents[2] / "prompts")
META = AnswerMeta(request_id="rid", provider="demo", model="m", prompt="explain")
REQUEST = AnswerRequest("question", "explain", {})


class _EndlessWriter:
    """Writes a piece every few milliseconds until it is stopped."""

    async def stream(self, question: str, **kwargs: Any) -> AsyncIterator[str]:
        while True:
            await asyncio.sleep(0.002)
            yield "more "


def _registry(store: MemoryAnswerStore, lease: float = 3.0, close: float = 1.0) -> AnswerRegistry:
    timing = RunTiming(close_seconds=close, lease_seconds=lease, grace_seconds=0.0)
    return AnswerRegistry(store, cast(AIWriter, _EndlessWriter()), timing)


class _SwallowingHeartbeats(MemoryAnswerStore):
    """Each renewal takes a round trip, and the first cancel that lands in one is
    swallowed, as asyncio.wait_for can on Python 3.11 (redis-py sends every
    command through it)."""

    def __init__(self) -> None:
        super().__init__(300)
        self.renewals = 0
        self.swallowed = 0
        self.beating = asyncio.Event()
        self.beaters: set[asyncio.Task[Any]] = set()  # the tasks that renewed

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        self.renewals += 1
        self.beaters.add(asyncio.current_task())  # type: ignore[arg-type]
        if self.renewals >= 3:
            self.beating.set()
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            if self.swallowed:
                raise  # the race is rare: once, so that a test's end can stop it
            self.swallowed += 1
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await super().renew_lease(answer_id, seconds)


async def test_a_heartbeat_whose_cancel_is_swallowed_still_stops() -> None:
    # A lease of 30 ms: a beat every 10 ms, so a renewal is nearly always under way.
    store = _SwallowingHeartbeats()
    registry = _registry(store, lease=0.03)
    run = await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.beating.wait()

    await registry.cancel(run.id)
    assert run.ended

    assert store.swallowed == 1  # the case under test did happen
    # No clock: every task that ever renewed the lease has ended, so none can again.
    assert store.beaters
    assert all(beater.done() for beater in store.beaters)
    assert not await store.producer_alive(run.id)


class _ReplyInFlight(MemoryAnswerStore):
    """The 4th event is stored, and its reply is still on its way when the cancel
    lands: the producer cannot know the append's outcome."""

    def __init__(self) -> None:
        super().__init__(300)
        self.in_flight = asyncio.Event()

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        stored = await super().append(answer_id, event)
        if isinstance(event, Text) and event.seq == 3:
            self.in_flight.set()
            await asyncio.sleep(30)  # the cancel lands here
        return stored


async def test_a_cancel_during_an_append_ends_the_log_after_what_it_stored() -> None:
    store = _ReplyInFlight()
    registry = _registry(store)
    run = await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.in_flight.wait()

    async with asyncio.timeout(5):
        await registry.cancel(run.id)

    log = await store.read(run.id, -1, 0)
    assert [e.seq for e in log] == list(range(5))
    assert isinstance(log[-1], Failed)
    assert log[-1].error.code == "cancelled"  # never producer_lost, for want of an end
    assert run.stats.outcome == "cancelled"
    assert not await store.producer_alive(run.id)


async def test_no_task_of_an_answer_is_named_by_its_id() -> None:
    # core/loops.py logs a loop's task name, and asyncio's own "Task was
    # destroyed" and "exception was never retrieved" lines print it: an id
    # there reads and cancels its answer (docs/operations.md, "Logs").
    store = _SwallowingHeartbeats()
    registry = _registry(store, lease=0.03)
    run = await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.beating.wait()
    run.cancel_soon()

    names = [task.get_name() for task in asyncio.all_tasks()]

    assert any(answer_ref(run.id) in name for name in names)  # the answer's tasks are there
    assert not [name for name in names if run.id in name]
    await registry.cancel(run.id)


class _StalledEnds(MemoryAnswerStore):
    """Once `stalled`, every append runs into the store's own bound (Redis
    stalled: 0.5 s here) and fails with an outcome nobody knows."""

    def __init__(self) -> None:
        super().__init__(300)
        self.stalled = False
        self.writing = asyncio.Event()
        self.stalled_appends = 0
        self.describes = 0

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        if event.seq >= 3:
            self.writing.set()
        if self.stalled:
            self.stalled_appends += 1
            await asyncio.sleep(0.5)
            raise StoreUnavailableError
        return await super().append(answer_id, event)

    async def describe(self, answer_id: str) -> LogInfo | None:
        if self.stalled:
            self.describes += 1
        return await super().describe(answer_id)


async def test_an_ending_on_a_stalled_store_is_over_before_shutdown_closes_the_stores() -> None:
    # close 0.1 s: the last event's tries stop after 0.2 s, shutdown waits 0.2 s more.
    store = _StalledEnds()
    registry = _registry(store, close=0.1)
    await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.writing.wait()
    store.stalled = True

    async with asyncio.timeout(5):
        await registry.abort_all(SHUTTING_DOWN)

    # Nothing of the answer is left to run on the store's closed client (before:
    # three tries of an append and a read went on for 2 s, "Task was destroyed
    # but it is pending" at the loop's end). A heartbeat already stopped and
    # cancelled may still need a turn of a busy loop to finish: half a second,
    # far less than the old tries' 2 s, which also show in the counts below.
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.wait(others, timeout=0.5)
    assert [t for t in others if not t.done()] == []
    # The append under way was not cut short; none started past the deadline.
    assert (store.stalled_appends, store.describes) == (1, 0)


class _FailingWithSlowHeartbeat(MemoryAnswerStore):
    """The 4th event cannot be stored, and a lease renewal takes 0.3 s whatever
    cancels it, so stopping the heartbeat takes a while."""

    def __init__(self) -> None:
        super().__init__(300)
        self.failed = asyncio.Event()
        self.released = 0

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        if event.seq == 3:
            self.failed.set()
            raise StoreUnavailableError
        return await super().append(answer_id, event)

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        clock = asyncio.get_running_loop()
        end = clock.time() + 0.3
        while (left := end - clock.time()) > 0:
            try:
                await asyncio.sleep(left)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await super().renew_lease(answer_id, seconds)

    async def release_lease(self, answer_id: str) -> None:
        self.released += 1
        await super().release_lease(answer_id)


async def test_a_native_cancel_while_a_failed_answer_ends_still_releases_the_lease() -> None:
    store = _FailingWithSlowHeartbeat()
    registry = _registry(store, lease=0.03)
    run = await registry.start(REQUEST, META)
    async with asyncio.timeout(5):
        await store.failed.wait()

    # asyncio's own cancel (not AnswerRun.cancel, which never cancels an ending
    # answer), landing while the answer waits for its heartbeat to stop:
    # anyio's shield does not hold it off.
    task = run.start()
    task.cancel()
    async with asyncio.timeout(5):
        await asyncio.wait({task})
        await registry.abort_all(SHUTTING_DOWN)  # waits for the endings

    assert store.released == 1
    assert run.stats.error_code == "store_unavailable"
