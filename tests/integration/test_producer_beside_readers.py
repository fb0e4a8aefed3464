"""A producer's own Redis commands never wait behind its replica's readers, and
its readers never wait on Redis for what it wrote (issue 20's review: the
readers' pool was still on the producer's path, and the feed copied what the
producer had in memory).

The readers' pool waits for a connection when it is full (stores/__init__.py).
`describe`, which the producer's last event falls back on, and the presence
touches of the connection that started an answer went through it: with every
reader connection held by an XREAD BLOCK, the last event waited 3 s and was
lost, and touches that kept failing for the grace period cancelled an answer
whose reader was attached. Here one reader connection, held, fills that pool.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qa_service.answers.readers import LocalReaders
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Meta, Text
from qa_service.stores.redis_answers import RedisAnswerStore
from qa_service.stores.redis_client import COMMAND_DEADLINE_SECONDS, open_redis_client
from qa_service.stores.redis_log import RedisLogSettings
from tests.support.redis_server import RedisServer, run_redis

pytestmark = pytest.mark.replicas

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))
WRITTEN: list[AnswerEvent] = [
    META,
    Text(1, "x"),
    Done(2, AnswerSummary("stop", None, None, 1, 1.0)),
]


async def _producer_with_the_readers_pool_full(url: str) -> tuple[int, bool, int]:
    async with (
        open_redis_client(url, 8) as client,
        open_redis_client(url, 1, wait_for_connection=True) as reads,
    ):
        store = RedisAnswerStore(client, RedisLogSettings(300, 1000), reads)
        await store.create("made-here", "fp")
        assert await store.append("made-here", META)
        # Another answer's reader holds the readers' only connection, blocked
        # well past the store's deadline.
        blocking = asyncio.create_task(
            reads.xread({"qa:answer:{elsewhere}:events": "0-0"}, block=30_000)
        )
        await asyncio.sleep(0.2)  # its XREAD is on the connection
        try:
            async with asyncio.timeout(COMMAND_DEADLINE_SECONDS * 3):
                info = await store.describe_for_producer("made-here")
                await store.touch_reader("made-here", 5.0)
                present = await store.reader_present("made-here")
            # Its producer is here, and asks only this process: no key in Redis.
            key_ttl = int(await client.pttl("qa:answer:{made-here}:readers"))
        finally:
            blocking.cancel()
            await asyncio.gather(blocking, return_exceptions=True)
        assert info is not None
        return info.last_seq, present, key_ttl


def test_a_producer_describes_and_keeps_its_reader_present_with_the_readers_pool_full(
    tmp_path: Path,
) -> None:
    with run_redis(tmp_path) as redis_server:
        last_seq, present, key_ttl = asyncio.run(
            _producer_with_the_readers_pool_full(redis_server.url)
        )

    assert last_seq in (-1, 0)  # its first event may still be gathering its batch
    assert present
    assert key_ttl == -2


async def _read_the_moment_the_writer_lets_go(redis_server: RedisServer) -> list[AnswerEvent]:
    async with open_redis_client(redis_server.url, 8) as client:
        store = RedisAnswerStore(client, RedisLogSettings(300, 1000))
        readers = LocalReaders(store, presence_seconds=0)
        await store.create("made-here", "fp")
        place = readers.admit("made-here")  # the connection that started it
        try:
            for event in WRITTEN:
                assert await store.append("made-here", event)
            # A reader busy when the last event was stored asks only now: it
            # must not find an empty log and wait for a copy from Redis.
            return await store.read("made-here", -1, 0)
        finally:
            await place.leave()


def test_a_reader_on_the_replica_writing_the_answer_gets_its_end_from_memory(
    tmp_path: Path,
) -> None:
    """The writer hands its events to the answer's feed when it lets go: before,
    the feed woke every 0.5 s to check the mirror, and once it let go XREAD and
    decoded the whole log from seq 0, while a reader that came a moment late
    found the feed empty."""
    with run_redis(tmp_path) as redis_server:
        before = redis_server.command_stats()
        got = asyncio.run(_read_the_moment_the_writer_lets_go(redis_server))
        xreads = (redis_server.command_stats() - before).calls.get("xread", 0)

    assert got == WRITTEN
    assert xreads == 0
