"""The Redis answer store's writes on a real redis-server: every key expires,
a provider piece costs a fraction of a command, and a Redis that restarts
empty mid-answer gets the whole answer back, exact, for readers elsewhere
(issue 21)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qa_service.core.errors import PRODUCER_LOST
from qa_service.core.events import AnswerEvent, AnswerMeta, AnswerSummary, Done, Failed, Meta, Text
from qa_service.stores.redis_answers import RedisAnswerStore
from qa_service.stores.redis_client import open_redis_client
from qa_service.stores.redis_log import RedisLogSettings
from qa_service.stores.write_behind import WriteTiming
from tests.support.daemon import poll_until
from tests.support.redis_server import RedisServer, run_redis

pytestmark = pytest.mark.replicas

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))
TTL = 300
SETTINGS = RedisLogSettings(TTL, 1000, writes=WriteTiming(batch_seconds=0.05, outage_seconds=20))


def _answer(pieces: int) -> list[AnswerEvent]:
    texts: list[AnswerEvent] = [Text(n, f"w{n} ") for n in range(1, pieces + 1)]
    return [META, *texts, Done(pieces + 1, AnswerSummary("stop", None, 1.0, pieces, 1.0))]


async def _read_all(store: RedisAnswerStore, answer_id: str) -> list[AnswerEvent]:
    got: list[AnswerEvent] = []
    async with asyncio.timeout(30):
        while not got or not isinstance(got[-1], Done):
            got.extend(await store.read(answer_id, len(got) - 1, 0.5))
    return got


async def _stream_ttl_after_first_event(url: str) -> int:
    async with open_redis_client(url, max_connections=8) as client:
        store = RedisAnswerStore(client, SETTINGS)
        await store.create("a", "fp", lease_seconds=3.0)
        assert await store.append("a", META)
        await poll_until(lambda: client.exists("qa:answer:{a}:events"), 10, "the first batch")
        ttl = int(await client.ttl("qa:answer:{a}:events"))
        await store.aclose()
        return ttl


def test_an_answers_stream_expires_from_its_first_batch(tmp_path: Path) -> None:
    """Not only from its producer's next heartbeat: an answer that ends before
    that beat, with no last event stored, left its stream for ever."""
    with run_redis(tmp_path) as redis_server:
        ttl = asyncio.run(_stream_ttl_after_first_event(redis_server.url))

    assert 0 < ttl <= TTL


async def _write_twenty_answers_at_once(url: str, pieces: int) -> list[list[AnswerEvent]]:
    async with open_redis_client(url, max_connections=64) as client:
        store = RedisAnswerStore(client, SETTINGS)
        answers = [f"fast{n}" for n in range(20)]

        async def produce(answer_id: str) -> None:
            await store.create(answer_id, "fp", lease_seconds=3.0)
            for event in _answer(pieces):
                assert await store.append(answer_id, event)
                await asyncio.sleep(0)  # a provider read per piece: other answers run between

        await asyncio.gather(*(produce(a) for a in answers))
        elsewhere = RedisAnswerStore(client, SETTINGS)  # another replica: reads Redis
        logs = [await _read_all(elsewhere, a) for a in answers]
        await store.aclose()
        return logs


def test_twenty_answers_of_two_hundred_pieces_cost_a_quarter_command_a_piece(
    tmp_path: Path,
) -> None:
    """Everything an answer makes within QA_REDIS_BATCH_MS goes in one script
    call (its commands counted as Redis counts them, the script's own inside):
    one EVALSHA of four commands per piece cost about 847 for 200 pieces."""
    pieces = 200
    with run_redis(tmp_path) as redis_server:
        before = redis_server.command_stats()
        logs = asyncio.run(_write_twenty_answers_at_once(redis_server.url, pieces))
        traffic = redis_server.command_stats() - before

    assert all(log == _answer(pieces) for log in logs)
    reads = sum(traffic.calls.get(name, 0) for name in ("xread", "hget", "xrevrange", "info"))
    writes = traffic.total_calls - reads
    assert writes / (20 * pieces) <= 0.25, traffic.calls


async def _restart_mid_answer(redis_server: RedisServer) -> tuple[list[AnswerEvent], bool]:
    async with (
        open_redis_client(redis_server.url, max_connections=16) as client,
        open_redis_client(redis_server.url, max_connections=16) as other_client,
    ):
        store = RedisAnswerStore(client, SETTINGS)
        elsewhere = RedisAnswerStore(other_client, SETTINGS)  # a reader on another replica
        answer = _answer(40)
        await store.create("a", "fp", lease_seconds=3.0)
        for event in answer[:20]:
            assert await store.append("a", event)
        reading = asyncio.create_task(_read_all(elsewhere, "a"))

        async def holds_twenty() -> bool:
            info = await elsewhere.describe("a")
            return info is not None and info.last_seq >= 19

        await poll_until(holds_twenty, 10, "Redis holding the first twenty events")

        await asyncio.to_thread(redis_server.restart)  # empty: nothing is persisted
        # The producer's heartbeat finds the answer's keys gone: all of it again.
        await store.renew_lease("a", 3.0)
        for event in answer[20:]:
            assert await store.append("a", event)
        read = await reading
        fingerprint_back = (await elsewhere.describe("a")) is not None
        await store.aclose()
        return read, fingerprint_back and read == answer


def test_a_redis_restarted_empty_mid_answer_gets_it_all_back_and_readers_elsewhere_read_on(
    tmp_path: Path,
) -> None:
    with run_redis(tmp_path) as redis_server:
        read, whole = asyncio.run(_restart_mid_answer(redis_server))

    assert read == _answer(40)  # no gap, no repeat, though the reader waited
    assert whole


async def _ttls_after_a_reader_ends_a_log_with_no_batch(url: str) -> tuple[int, int]:
    async with open_redis_client(url, max_connections=8) as client:
        elsewhere = RedisAnswerStore(client, SETTINGS)  # never wrote it: a reader's path
        await client.hset("qa:answer:{gone}", "fingerprint", "fp")  # its producer died
        assert await elsewhere.append("gone", Failed(0, PRODUCER_LOST))
        ended = await elsewhere.describe("gone")
        assert ended is not None
        assert ended.final_seq == 0
        return int(await client.ttl("qa:answer:{gone}:events")), int(
            await client.ttl("qa:answer:{gone}")
        )


def test_a_log_a_reader_ends_before_its_first_batch_still_expires(tmp_path: Path) -> None:
    """Its producer died with its first batch still in memory: the reader's end
    creates the stream, and with it the expiry (before, a key for ever)."""
    with run_redis(tmp_path) as redis_server:
        stream_ttl, hash_ttl = asyncio.run(
            _ttls_after_a_reader_ends_a_log_with_no_batch(redis_server.url)
        )

    assert 0 < stream_ttl <= TTL
    assert 0 < hash_ttl <= TTL
