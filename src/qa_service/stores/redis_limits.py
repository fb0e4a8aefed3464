"""The limits library's counters in Redis, on our own client's connection pool."""

from __future__ import annotations

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage


def _limits_uri(url: str) -> str:
    # The `limits` library names its async Redis backends async+redis://,
    # async+rediss:// and async+redis+unix://.
    if url.startswith("unix://"):
        return "async+redis+" + url
    return "async+" + url


def redis_limit_counters(client: aioredis.Redis, url: str) -> RedisStorage:
    return RedisStorage(
        _limits_uri(url),
        implementation="redispy",
        # Our client's pool: its connections, timeouts and closing are ours.
        connection_pool=client.connection_pool,  # type: ignore[arg-type]  # passed through to redis-py
        key_prefix="qa:limits",
        wrap_exceptions=True,
    )
