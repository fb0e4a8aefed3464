"""The answer cache's stores keep the same promises, in this process and on a real
redis-server: a recording expires, and a flight counts its readers atomically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from qa_service.answers.cache.ports import CacheStore
from qa_service.stores.memory_cache import MemoryCacheStore
from qa_service.stores.redis_cache import RedisCacheStore
from qa_service.stores.redis_client import open_redis_client
from tests.support.redis_server import run_redis

OpenStore = Callable[[], AbstractAsyncContextManager[CacheStore]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.replicas)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    if request.param == "memory":

        @asynccontextmanager
        async def memory() -> AsyncIterator[CacheStore]:
            yield MemoryCacheStore(1 << 20)

        return memory

    server = request.getfixturevalue("redis_for_cache")

    @asynccontextmanager
    async def redis() -> AsyncIterator[CacheStore]:
        async with open_redis_client(server.url, max_connections=36) as client:
            yield RedisCacheStore(client)

    return redis


@pytest.fixture
def redis_for_cache(tmp_path: Path):  # type: ignore[no-untyped-def]
    with run_redis(tmp_path) as server:
        yield server


async def _flight_life(store: CacheStore) -> list[object]:
    return [
        await store.join_or_start("k", "A", 3, 60),
        await store.join_or_start("k", "B", 3, 60),
        await store.join_or_start("k", "C", 3, 60),
        await store.join_or_start("k", "D", 3, 60),  # full
        await store.leave("k", "A"),
        await store.leave("k", "not-the-flight"),
        await store.leave("k", "A"),
        await store.leave("k", "A"),  # the last: the flight ends
        await store.leave("k", "A"),
        await store.join_or_start("k", "E", 3, 60),  # a new flight
    ]


def test_a_flight_counts_its_readers_and_ends_with_its_last(open_store: OpenStore) -> None:
    async def run() -> list[object]:
        async with open_store() as store:
            return await _flight_life(store)

    assert asyncio.run(run()) == [
        ("A", True),
        ("A", False),
        ("A", False),
        None,
        2,
        None,
        1,
        0,
        None,
        ("E", True),
    ]


def test_an_ended_flight_is_not_joined_and_only_its_own_answer_ends_it(
    open_store: OpenStore,
) -> None:
    async def run() -> tuple[object, ...]:
        async with open_store() as store:
            await store.join_or_start("k", "A", 3, 60)
            await store.end("k", "other")
            still = await store.join_or_start("k", "B", 3, 60)
            await store.end("k", "A")
            return still, await store.join_or_start("k", "C", 3, 60)

    assert asyncio.run(run()) == (("A", False), ("C", True))


def test_many_joining_at_once_never_pass_the_bound(open_store: OpenStore) -> None:
    async def run() -> list[tuple[str, bool] | None]:
        async with open_store() as store:
            return list(
                await asyncio.gather(
                    *(store.join_or_start("k", f"id{n}", 10, 60) for n in range(30))
                )
            )

    flights = asyncio.run(run())
    started = [flight for flight in flights if flight is not None and flight[1]]
    joined = [flight for flight in flights if flight is not None and not flight[1]]
    assert len(started) == 1
    assert len(joined) == 9
    assert {flight[0] for flight in joined} == {started[0][0]}


def test_a_recording_is_kept_replaced_and_expires(open_store: OpenStore) -> None:
    async def run() -> tuple[object, ...]:
        async with open_store() as store:
            await store.put("k", b"first", 60)
            await store.put("k", b"second", 60)
            kept = await store.get("k")
            await store.put("short", b"x", 1)
            await asyncio.sleep(1.2)
            return kept, await store.get("short"), await store.get("missing")

    assert asyncio.run(run()) == (b"second", None, None)
