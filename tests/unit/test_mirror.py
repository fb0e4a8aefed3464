"""The Redis store's in-process mirror: exact, or absent (then Redis answers)."""

from __future__ import annotations

import asyncio

from qa_service.core.errors import PRODUCER_LOST
from qa_service.core.events import AnswerMeta, Failed, Meta, Text
from qa_service.stores.mirror import LocalMirror

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))


async def test_it_holds_what_was_stored_in_order_and_hands_over_at_the_end() -> None:
    mirror = LocalMirror()
    mirror.stored("a", META)
    mirror.stored("a", Text(1, "x"))

    assert await mirror.read("a", -1, 0) == [META, Text(1, "x")]
    assert await mirror.read("a", 0, 0) == [Text(1, "x")]
    mirror.stored("a", Failed(2, PRODUCER_LOST))
    assert await mirror.read("a", 1, 0) is None  # ended: Redis has it
    assert await mirror.read("b", -1, 0) is None  # never written here


async def test_a_waiting_reader_is_woken_by_the_next_event() -> None:
    mirror = LocalMirror()
    mirror.stored("a", META)
    waiting = asyncio.create_task(mirror.read("a", 0, 5))
    await asyncio.sleep(0)

    mirror.stored("a", Text(1, "y"))

    async with asyncio.timeout(1):
        assert await waiting == [Text(1, "y")]


async def test_a_gap_or_a_forget_sends_readers_to_redis() -> None:
    mirror = LocalMirror()
    mirror.stored("a", META)
    waiting = asyncio.create_task(mirror.read("a", 0, 5))
    await asyncio.sleep(0)

    mirror.stored("a", Text(2, "skipped one"))  # not the next seq: not exact any more

    async with asyncio.timeout(1):
        assert await waiting == []  # woken at once, nothing from a broken mirror
    assert await mirror.read("a", 0, 0) is None
    mirror.stored("b", META)
    mirror.forget("b")
    assert await mirror.read("b", -1, 0) is None


async def test_an_answer_created_here_is_read_from_memory_before_its_first_event() -> None:
    mirror = LocalMirror()
    mirror.expect("a")
    waiting = asyncio.create_task(mirror.read("a", -1, 5))
    await asyncio.sleep(0)
    assert not waiting.done()  # waiting on memory, not sent to Redis (None)

    mirror.stored("a", META)

    async with asyncio.timeout(1):
        assert await waiting == [META]
    assert await mirror.read("b", -1, 0) is None  # not created here
