"""The limits library's counters in Redis, on our own connections where it can take them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limits.aio.storage import RedisClusterStorage, RedisStorage
from redis.asyncio.cluster import RedisCluster

from qa_service.stores.redis_client import RedisClient, connection_options
from qa_service.stores.redis_urls import ClusterRedis, parse_redis_url

KEY_PREFIX = "qa:limits"


@asynccontextmanager
async def open_limit_counters(
    client: RedisClient, url: str, max_connections: int
) -> AsyncIterator[RedisStorage]:
    """On one server or Sentinel's primary: `client`'s pool, so its connections,
    timeouts, failovers and closing are ours. On a cluster, `limits` builds a
    cluster client of its own (it takes no pool there), with our retries and
    timeouts, closed here. Every counter is one key, so one slot."""
    target = parse_redis_url(url)
    if not isinstance(target, ClusterRedis):
        assert not isinstance(client, RedisCluster)
        yield RedisStorage(
            # The URI only names the backend: every connection comes from the pool.
            "async+redis://",
            implementation="redispy",
            connection_pool=client.connection_pool,  # type: ignore[arg-type]  # passed through to redis-py
            key_prefix=KEY_PREFIX,
            wrap_exceptions=True,
        )
        return
    nodes = ",".join(f"{host}:{port}" for host, port in target.nodes)
    storage = RedisClusterStorage(
        f"async+redis+cluster://{nodes}",
        implementation="redispy",
        key_prefix=KEY_PREFIX,
        wrap_exceptions=True,
        username=target.username,  # type: ignore[arg-type]  # passed through to redis-py
        password=target.password,  # type: ignore[arg-type]  # passed through to redis-py
        max_connections=max_connections,
        **connection_options(),
    )
    try:
        yield storage
    finally:
        # limits keeps its cluster client on its bridge, and has no close of its own.
        cluster: RedisCluster = storage.bridge.storage  # type: ignore[attr-defined]
        await cluster.aclose()
