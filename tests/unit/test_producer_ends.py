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
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import RunTiming
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


def _registry(store: MemoryAnswerStore, lease: float = 3.0) -> AnswerRegistry:
    timing = RunTiming(close_seconds=1.0, lease_seconds=lease, grace_seconds=0.0)
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

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        self.renewals += 1
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
    renewals = store.renewals
    await asyncio.sleep(0.2)  # twenty beats, had it gone on

    assert store.swallowed == 1  # the case under test did happen
    assert store.renewals == renewals
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
