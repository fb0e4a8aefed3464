"""stores/write_behind.py: the producer's events held here, written behind in
batches, and written again wherever the store lost them."""

from __future__ import annotations

import asyncio

import pytest

from qa_service.core.errors import PRODUCER_LOST, StoreUnavailableError
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Failed, Meta, Text
from qa_service.stores.write_behind import BatchReply, WriteTiming, WrittenAnswers
from tests.support.batch_log import BatchLog

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))
QUICK = WriteTiming(batch_seconds=0.02, unwatched_batch_seconds=0.02, outage_seconds=5.0)
SLOW = WriteTiming(batch_seconds=30.0, unwatched_batch_seconds=30.0)


def _answer(pieces: int) -> list[AnswerEvent]:
    texts: list[AnswerEvent] = [Text(n, f"t{n}") for n in range(1, pieces + 1)]
    return [META, *texts, Done(pieces + 1, AnswerSummary("stop", None, 1.0, pieces, 1.0))]


class _LetGo:
    def __init__(self) -> None:
        self.answers: dict[str, list[AnswerEvent]] = {}

    def __call__(self, answer_id: str, events: list[AnswerEvent]) -> None:
        self.answers[answer_id] = list(events)


async def _write(written: WrittenAnswers, events: list[AnswerEvent]) -> bool:
    for event in events[:-1]:
        assert written.add("a", event)
    assert written.add("a", events[-1])
    async with asyncio.timeout(10):
        return await written.wait_settled("a")


async def test_what_a_producer_makes_at_once_goes_in_one_batch_and_the_end_at_once() -> None:
    store, let_go = BatchLog(), _LetGo()
    written = WrittenAnswers(store.send, SLOW, let_go)
    written.expect("a", "fp")
    answer = _answer(200)

    assert await _write(written, answer)  # the end did not wait out the 30 s batch

    assert store.events == answer
    assert len(store.batches) == 1
    assert store.fingerprint == "fp"  # the first batch restores the answer's keys
    assert let_go.answers == {"a": answer}
    assert not written.holds("a")


async def test_readers_here_read_each_event_at_once_before_the_store_has_it() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, SLOW, _LetGo())
    written.expect("a", "fp")
    waiting = asyncio.create_task(written.read("a", -1, 5.0))
    await asyncio.sleep(0)
    assert written.add("a", META)

    async with asyncio.timeout(1):
        assert await waiting == [META]
    assert store.events == []  # still gathering its batch
    await written.aclose()


async def test_a_failover_that_lost_the_newest_batches_gets_them_again_with_no_gap() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, QUICK, _LetGo())
    written.expect("a", "fp")
    answer = _answer(6)
    for event in answer[:5]:
        assert written.add("a", event)
    async with asyncio.timeout(5):
        await store.holding(5)
    store.lose_newest(3)  # the new primary never had them

    assert await _write(written, answer[5:])

    assert store.events == answer


async def test_a_store_that_restarted_empty_gets_the_whole_answer_and_its_fingerprint() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, QUICK, _LetGo())
    written.expect("a", "fp")
    answer = _answer(4)
    for event in answer[:3]:
        assert written.add("a", event)
    async with asyncio.timeout(5):
        await store.holding(3)
    store.forget_everything()
    written.rewrite_all("a")  # what the heartbeat finds: the answer's keys are gone

    async with asyncio.timeout(5):
        await store.holding(3)
    assert store.fingerprint == "fp"
    assert await _write(written, answer[3:])
    assert store.events == answer


async def test_an_outage_shorter_than_its_bound_is_ridden_out() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, QUICK, _LetGo())
    written.expect("a", "fp")
    answer = _answer(5)
    store.unavailable = True
    for event in answer[:4]:
        assert written.add("a", event)  # the producer goes on: its events are held here
    await asyncio.sleep(0.5)
    assert store.calls > 1  # tried again, and again
    store.unavailable = False

    assert await _write(written, answer[4:])
    assert store.events == answer


async def test_past_its_bound_the_log_is_given_up_and_its_readers_told() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, WriteTiming(0.01, 0.01, outage_seconds=0.3), _LetGo())
    written.expect("a", "fp")
    store.unavailable = True
    assert written.add("a", META)
    reading = asyncio.create_task(written.read("a", 0, 10.0))

    with pytest.raises(StoreUnavailableError):
        async with asyncio.timeout(5):
            await written.wait_settled("a")
    with pytest.raises(StoreUnavailableError):
        async with asyncio.timeout(1):
            await reading


async def test_a_log_ended_elsewhere_refuses_the_producers_next_event() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, QUICK, _LetGo())
    written.expect("a", "fp")
    store.events = [META, Failed(1, PRODUCER_LOST)]  # a reader elsewhere declared it lost
    assert written.add("a", META)

    async with asyncio.timeout(5):
        assert not await written.wait_settled("a")
    assert not written.add("a", Text(1, "too late"))


async def test_an_event_that_is_not_the_next_seq_is_refused() -> None:
    written = WrittenAnswers(BatchLog().send, QUICK, _LetGo())
    written.expect("a", "fp")
    assert written.add("a", META)
    assert not written.add("a", Text(2, "skips one"))
    await written.aclose()


async def test_a_writer_that_fails_unexpectedly_never_lets_the_end_count_as_stored() -> None:
    async def broken(*_: object) -> BatchReply:
        raise ValueError("a bug in a writer")

    written = WrittenAnswers(broken, QUICK, _LetGo())
    written.expect("a", "fp")
    assert written.add("a", META)
    assert written.add("a", Done(1, AnswerSummary("stop", None, 1.0, 0, 1.0)))

    with pytest.raises(StoreUnavailableError):
        async with asyncio.timeout(5):
            await written.wait_settled("a")


async def test_unwatched_answers_go_in_long_batches_until_a_reader_elsewhere_follows() -> None:
    store = BatchLog()
    written = WrittenAnswers(
        store.send, WriteTiming(batch_seconds=0.01, unwatched_batch_seconds=30.0), _LetGo()
    )
    written.expect("a", "fp")
    assert written.add("a", META)
    await asyncio.sleep(0.1)
    assert store.events == []  # gathering a long batch: nobody elsewhere reads it

    written.set_watched_elsewhere("a", True)  # the heartbeat found a reader elsewhere
    async with asyncio.timeout(5):
        await store.holding(1)  # at once, not 30 s later
    assert written.add("a", Text(1, "x"))
    async with asyncio.timeout(5):
        await store.holding(2)  # and then every 10 ms
    await written.aclose()


async def test_its_own_end_stored_by_a_try_whose_reply_was_lost_counts_as_stored() -> None:
    store = BatchLog()
    answer = _answer(2)
    lost_reply = True

    async def send(*args: object) -> BatchReply:
        nonlocal lost_reply
        reply = await store.send(*args)  # type: ignore[arg-type]
        if lost_reply and store.events == answer:
            lost_reply = False
            raise StoreUnavailableError  # stored, but the reply never came
        return reply

    let_go = _LetGo()
    written = WrittenAnswers(send, QUICK, let_go)
    written.expect("a", "fp")

    assert await _write(written, answer)  # not "ended elsewhere"
    assert let_go.answers == {"a": answer}  # handed to the feed, as any stored end


async def test_past_its_bound_the_producers_next_event_fails_until_it_has_ended() -> None:
    store = BatchLog()
    written = WrittenAnswers(store.send, WriteTiming(0.01, 0.01, outage_seconds=0.2), _LetGo())
    written.expect("a", "fp")
    store.unavailable = True
    assert written.add("a", META)
    with pytest.raises(StoreUnavailableError):
        async with asyncio.timeout(5):
            await written.wait_settled("a")

    store.unavailable = False  # back: still given up, not written elsewhere's way
    with pytest.raises(StoreUnavailableError):
        written.add("a", Text(1, "x"))
    with pytest.raises(StoreUnavailableError):
        await written.read("a", 0, 0)
    written.producer_done("a")
    assert not written.holds("a")
