"""The Redis slot store on a real redis-server: leases keep slots, and lapse without renewal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qa_service.stores.redis_client import open_redis_client
from qa_service.stores.redis_slots import RedisSlotStore
from tests.support.redis_server import run_redis

pytestmark = pytest.mark.replicas

LEASE = 1.5
# Renewed this often, the kept slot has a second and more to spare when a
# loaded machine delays a renewal (0.4 s leases renewed every 0.2 s lapsed
# under a full test run).
RENEW_EVERY = 0.25


async def _lease_life(url: str) -> tuple[bool, bool, bool, bool]:
    async with open_redis_client(url, max_connections=36) as client:
        store = RedisSlotStore(client)
        assert await store.take("c", "kept", 2, LEASE)
        assert await store.take("c", "lapsing", 2, LEASE)
        full = not await store.take("c", "third", 2, LEASE)
        for _ in range(round(LEASE / RENEW_EVERY) + 2):  # past the lease, renewing one slot
            await asyncio.sleep(RENEW_EVERY)
            await store.renew({"c": {"kept"}}, LEASE)
        # The lapsed slot is dropped when the next one is taken; the kept one counts.
        freed_one = await store.take("c", "third", 2, LEASE)
        still_full = not await store.take("c", "fourth", 2, LEASE)
        await store.give_back("c", "kept")
        after_give_back = await store.take("c", "fourth", 2, LEASE)
        return full, freed_one, still_full, after_give_back


def test_a_renewed_slot_outlives_its_lease_and_an_abandoned_one_lapses(tmp_path: Path) -> None:
    with run_redis(tmp_path) as redis_server:
        result = asyncio.run(_lease_life(redis_server.url))

    assert result == (True, True, True, True)
