"""Where per-client limits keep their counts: in this process, or in Redis for every replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from qa_service.access.slots import MemorySlotStore, SlotStore
from qa_service.config import Settings


@dataclass(frozen=True, slots=True)
class LimitStores:
    # The `limits` library's counters: requests and tokens per period.
    counters: Storage
    # Answers in progress per client.
    slots: SlotStore


def _limits_uri(url: str) -> str:
    # The `limits` library names its async Redis backends async+redis://,
    # async+rediss:// and async+redis+unix://.
    if url.startswith("unix://"):
        return "async+redis+" + url
    return "async+" + url


@asynccontextmanager
async def open_limit_stores(settings: Settings) -> AsyncIterator[LimitStores]:
    if settings.redis_url is None:
        yield LimitStores(MemoryStorage(), MemorySlotStore())
        return
    from qa_service.stores.redis import open_redis_client
    from qa_service.stores.slots import RedisSlotStore

    url = settings.redis_url.get_secret_value()
    async with open_redis_client(url) as client:
        counters = RedisStorage(
            _limits_uri(url),
            implementation="redispy",
            # Our client's pool: its connections, timeouts and closing are ours.
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # passed through to redis-py
            key_prefix="qa:limits",
            wrap_exceptions=True,
        )
        yield LimitStores(counters, RedisSlotStore(client))
