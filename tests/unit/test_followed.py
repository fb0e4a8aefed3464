"""stores/followed.py: one read of the store per followed answer, for all its readers."""

from __future__ import annotations

import asyncio

import pytest

from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Meta, Text
from qa_service.stores.followed import FollowedAnswers
from qa_service.stores.write_behind import WriteTiming, WrittenAnswers
from tests.support.batch_log import BatchLog


class _Log:
    """A store's log the feed reads, counting the reads at once."""

    def __init__(self) -> None:
        self.events: list[AnswerEvent] = []
        self.reading = 0
        self.most_at_once = 0
        self.grew = asyncio.Event()
        self.broken = False
        self.afters: list[int] = []  # where each read started

    async def read(self, answer_id: str, after: int, wait: float) -> list[AnswerEvent]:
        self.afters.append(after)
        self.reading += 1
        self.most_at_once = max(self.most_at_once, self.reading)
        try:
            if self.broken:
                raise StoreUnavailableError
            if len(self.events) <= after + 1:
                self.grew.clear()
                try:
                    await asyncio.wait_for(self.grew.wait(), wait)
                except TimeoutError:
                    return []
            return self.events[after + 1 :]
        finally:
            self.reading -= 1

    def add(self, event: AnswerEvent) -> None:
        self.events.append(event)
        self.grew.set()


async def _read_all(followed: FollowedAnswers, answer_id: str) -> list[AnswerEvent]:
    got: list[AnswerEvent] = []
    while not got or not isinstance(got[-1], Done):
        batch = await followed.read(answer_id, len(got) - 1, 0.05)
        assert batch is not None
        got.extend(batch)
    return got


async def test_many_readers_of_one_answer_share_one_read_of_the_store() -> None:
    store = _Log()
    followed = FollowedAnswers(store.read, poll_seconds=0.05)
    loop = followed.start("a")
    readers = [asyncio.create_task(_read_all(followed, "a")) for _ in range(50)]
    for n in range(5):
        await asyncio.sleep(0.01)
        store.add(Text(n, f"t{n}"))
    store.add(Done(5, AnswerSummary("stop", None, 1.0, 10, 2.0)))
    results = await asyncio.gather(*readers)
    assert all(r == store.events for r in results)
    assert store.most_at_once == 1
    assert await loop.stop(5.0)
    assert followed.followed == 0
    assert await followed.read("a", -1, 0) is None


async def test_a_feed_that_cannot_read_the_store_ends_its_readers_with_store_unavailable() -> None:
    store = _Log()
    store.broken = True
    followed = FollowedAnswers(store.read, poll_seconds=0.05)
    loop = followed.start("a")
    with pytest.raises(StoreUnavailableError):
        await followed.read("a", -1, 1.0)
    assert await loop.stop(5.0)


DONE = Done(3, AnswerSummary("stop", None, 1.0, 10, 2.0))
META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))


async def test_an_answer_let_go_by_its_writer_is_served_from_memory_not_the_store() -> None:
    store = _Log()
    followed = FollowedAnswers(store.read, poll_seconds=0.05)
    written = WrittenAnswers(BatchLog().send, WriteTiming(batch_seconds=0.01), followed.hand_over)
    written.expect("a", "fp")
    loop = followed.start("a")
    answer = [META, Text(1, "x"), Text(2, "y"), DONE]
    for event in answer:
        assert written.add("a", event)
    async with asyncio.timeout(5):
        assert await written.wait_settled("a")
    assert await written.read("a", 0, 0) is None  # let go: its readers come here
    assert await followed.read("a", 0, 0) == answer[1:]  # at once, not after a copy
    assert await followed.read("a", -1, 0) == answer
    assert await loop.stop(5.0)
    assert store.afters == []


async def test_a_late_resume_starts_the_feed_where_it_is_and_an_older_one_reads_the_store() -> None:
    store = _Log()
    store.events = [META, Text(1, "x"), Text(2, "y"), DONE]
    followed = FollowedAnswers(store.read, poll_seconds=0.05)
    loop = followed.start("a")
    assert await followed.read("a", 1, 5.0) == [Text(2, "y"), DONE]
    assert await followed.read("a", -1, 0) is None  # older than the feed holds
    assert await loop.stop(5.0)
    assert store.afters == [1]  # not a copy from seq 0
