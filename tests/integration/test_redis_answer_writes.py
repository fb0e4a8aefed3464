"""The Redis answer store's writes on a real redis-server: every key expires, and an
append cut short leaves this process's readers what Redis holds (issue 20, items 4, 5)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from qa_service.core.events import AnswerMeta, AnswerSummary, Done, Meta, Text
from qa_service.stores.redis_answers import RedisAnswerStore
from qa_service.stores.redis_client import open_redis_client
from tests.support.daemon import wait_until
from tests.support.redis_server import RedisServer, run_redis
from tests.support.sockets import unread_bytes

pytestmark = pytest.mark.replicas

META = Meta(0, AnswerMeta(request_id="r", provider="demo", model="m", prompt="explain"))
TTL = 300


async def _stream_ttl_after_first_event(url: str) -> int:
    async with open_redis_client(url, max_connections=8) as client:
        store = RedisAnswerStore(client, TTL, max_events=1000)
        await store.create("a", "fp", lease_seconds=3.0)
        assert await store.append("a", META)
        return int(await client.ttl("qa:answer:{a}:events"))


def test_an_answers_stream_expires_from_its_first_event(tmp_path: Path) -> None:
    """Not only from its producer's next heartbeat: an answer that ends before
    that beat, with no last event stored, left its stream for ever."""
    with run_redis(tmp_path) as redis_server:
        ttl = asyncio.run(_stream_ttl_after_first_event(redis_server.url))

    assert 0 < ttl <= TTL


async def _read_after_a_cut_short_last_append(redis_server: RedisServer) -> list[object]:
    async with open_redis_client(redis_server.url, max_connections=8) as client:
        store = RedisAnswerStore(client, TTL, max_events=1000)
        await store.create("a", "fp")
        assert await store.append("a", META)
        assert await store.append("a", Text(1, "x"))
        os.kill(redis_server.pid, signal.SIGSTOP)  # a stall: Redis takes the end, later
        try:
            appending = asyncio.create_task(
                store.append("a", Done(2, AnswerSummary("stop", None, None, 1, 1.0)))
            )
            # The command is on its way: it has reached the stopped Redis's socket.
            await asyncio.to_thread(
                wait_until, lambda: unread_bytes(redis_server.port), 10, "the append at Redis"
            )
            appending.cancel()  # a caller's deadline, or a cancel
            await asyncio.wait({appending})
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        # A reader in this process, as answers/follow.py reads: it gets what
        # Redis holds, not a mirror that waits for an end it will never hear of.
        return list(await store.read("a", 1, 5.0))


def test_a_last_append_cut_short_leaves_local_readers_what_redis_holds(tmp_path: Path) -> None:
    with run_redis(tmp_path) as redis_server:
        rest = asyncio.run(_read_after_a_cut_short_last_append(redis_server))

    assert [type(event).__name__ for event in rest] == ["Done"]
