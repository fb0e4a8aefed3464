"""answers/follow.py: a reader whose producer is gone ends, whatever it had."""

from __future__ import annotations

import asyncio

from qa_service.answers.follow import FollowTiming, follow
from qa_service.core.errors import PRODUCER_LOST
from qa_service.core.events import AnswerEvent, AnswerMeta, Failed, Meta, Text
from qa_service.stores.memory_answers import MemoryAnswerStore

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))
QUICK = FollowTiming(poll_seconds=0.05)


async def _follow(store: MemoryAnswerStore, after: int) -> list[AnswerEvent]:
    async with asyncio.timeout(5):
        return [event async for event in follow(store, "a", after, QUICK)]


async def _store_with_a_dead_producer() -> MemoryAnswerStore:
    store = MemoryAnswerStore(60)
    await store.create("a", "fp")  # no lease: its producer is gone
    for event in (META, Text(1, "x"), Text(2, "y")):
        assert await store.append("a", event)
    return store


async def test_a_reader_at_the_logs_end_ends_it_with_producer_lost_at_the_next_seq() -> None:
    store = await _store_with_a_dead_producer()

    assert await _follow(store, 2) == [Failed(3, PRODUCER_LOST)]
    assert await store.read("a", 2, 0) == [Failed(3, PRODUCER_LOST)]  # every reader's end


async def test_a_reader_ahead_of_the_log_ends_past_what_it_had_and_the_log_where_it_ends() -> None:
    """It read the producer's memory, and the producer died before its last
    batch reached the store: seq 4 and 5 exist nowhere now."""
    store = await _store_with_a_dead_producer()

    assert await _follow(store, 5) == [Failed(6, PRODUCER_LOST)]
    assert await store.read("a", 2, 0) == [Failed(3, PRODUCER_LOST)]
    # A second reader ahead finds the log ended below it: the same end.
    assert await _follow(store, 4) == [Failed(5, PRODUCER_LOST)]
