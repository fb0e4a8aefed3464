"""answers/readers.py: the readers' bounds, and places given back however a
connection ends, even when its response never started its body."""

from __future__ import annotations

import asyncio
import gc
from typing import cast

import anyio
import pytest

from qa_service.answers.connection import connection_events
from qa_service.answers.readers import LocalReaders, ReaderLimits, TooManyReadersError
from qa_service.answers.registry import AnswerRegistry
from qa_service.answers.run import RunTiming
from qa_service.generation.writer import AIWriter
from qa_service.stores.memory_answers import MemoryAnswerStore


def _readers(per_answer: int = 0, per_client: int = 0) -> LocalReaders:
    return LocalReaders(MemoryAnswerStore(300), 5.0, ReaderLimits(per_answer, per_client))


async def test_a_reader_past_the_answers_bound_is_refused_and_let_in_once_one_leaves() -> None:
    readers = _readers(per_answer=2)
    starter = readers.admit("a")  # the connection that started it: counted
    readers.admit("a", "client 1")
    with pytest.raises(TooManyReadersError):
        readers.admit("a", "client 2")
    await starter.leave()
    readers.admit("a", "client 2")
    await readers.close()


async def test_a_clients_resumes_past_its_bound_are_refused_whatever_the_answer() -> None:
    readers = _readers(per_client=2)
    first = readers.admit("a", "client")
    readers.admit("b", "client")
    with pytest.raises(TooManyReadersError):
        readers.admit("c", "client")
    readers.admit("c")  # a start is never refused
    readers.admit("c", "another client")
    await first.leave()
    await first.leave()  # twice is harmless
    readers.admit("c", "client")
    await readers.close()


async def test_a_reader_that_leaves_after_the_readers_closed_is_let_go() -> None:
    readers = _readers(per_answer=1, per_client=1)
    place = readers.admit("a", "client")
    await readers.close()  # the app's end, with a connection still attached
    await place.leave()
    readers.admit("a", "client")  # its count was let go: it is let in again


async def test_a_stream_whose_body_never_started_gives_its_place_back() -> None:
    timing = RunTiming(close_seconds=1.0, lease_seconds=3.0, grace_seconds=5.0)
    registry = AnswerRegistry(MemoryAnswerStore(300), cast(AIWriter, None), timing)
    events = connection_events(
        registry, "a", -1, anyio.Event(), drain_seconds=0, coalesce_seconds=0, client="c"
    )
    assert registry.readers.answers == 1
    del events  # what a HEAD response, or a client gone before the body, leaves
    gc.collect()
    await asyncio.sleep(0)
    assert registry.readers.answers == 0


async def test_bounds_of_zero_bound_nothing() -> None:
    """QA_MAX_READERS_PER_ANSWER=0 and QA_CLIENT_MAX_READERS=0 turn the bounds off."""
    readers = _readers(per_answer=0, per_client=0)
    for _ in range(100):
        readers.admit("a", "client")
    assert readers.answers == 1
    await readers.close()


async def test_in_process_a_reader_is_present_while_attached_and_for_the_presence_after() -> None:
    store = MemoryAnswerStore(300)
    await store.create("a", "fingerprint")
    readers = LocalReaders(store, presence_seconds=30)
    assert not await store.reader_present("a")

    place = readers.admit("a")
    assert await store.reader_present("a")  # attached: no loop needs to renew it
    await place.leave()
    assert await store.reader_present("a")  # for the presence time after leaving

    gone = LocalReaders(store, presence_seconds=0.001)
    await gone.admit("a").leave()
    await asyncio.sleep(0.01)
    assert not await store.reader_present("a")
