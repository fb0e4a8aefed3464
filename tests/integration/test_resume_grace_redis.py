"""On a shared store, the resume grace of an answer generated here counts from
its last reader's leave, as on the in-process store (answers/readers.py).

It counted from that reader's last presence touch: up to a refresh before the
leave, and longer on a starved loop. A client that hung up and resumed at once
on another replica found its answer cancelled before that replica's first
touch reached Redis (test_redis_pool, on a busy CI machine: 13 of 130).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qa_service.answers.readers import LocalReaders
from qa_service.stores.redis_answers import RedisAnswerStore
from qa_service.stores.redis_client import open_redis_client
from qa_service.stores.redis_log import RedisLogSettings
from tests.support.redis_server import run_redis

pytestmark = pytest.mark.replicas

GRACE = 5.0


async def _presence_after_the_leave(url: str) -> list[tuple[float, bool]]:
    clock = [0.0]
    async with open_redis_client(url, 8) as client:
        store = RedisAnswerStore(client, RedisLogSettings(300, 1000))
        store._now = lambda: clock[0]  # type: ignore[method-assign]
        await store.create("here", "fp", lease_seconds=30, reader_seconds=40)
        readers = LocalReaders(store, presence_seconds=GRACE)
        place = readers.admit("here")
        # A touch of its presence loop's: present until 0 + GRACE.
        await store.touch_reader("here", GRACE)
        clock[0] = 4.0  # a starved loop: no touch since
        await place.leave()
        seen = []
        for at in (8.0, 8.9, 9.1):
            clock[0] = at
            seen.append((at, await store.reader_present("here")))
        await store.release_lease("here")
        return seen


def test_an_answer_made_here_is_present_for_the_grace_after_its_reader_leaves(
    tmp_path: Path,
) -> None:
    with run_redis(tmp_path) as redis_server:
        seen = asyncio.run(_presence_after_the_leave(redis_server.url))

    # Left at 4 s: present until 4 + GRACE, not until its last touch's 0 + GRACE.
    assert seen == [(8.0, True), (8.9, True), (9.1, False)]
