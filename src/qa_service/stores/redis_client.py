"""The Redis client every Redis store shares (QA_REDIS_URL): opening it on one
server, through Sentinel or on a cluster (redis_urls.py reads which), its pools
and retries, and the one place Redis errors become StoreUnavailableError."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from qa_service.core.errors import StoreUnavailableError
from qa_service.stores.redis_urls import (
    ClusterRedis,
    RedisTarget,
    RedisUrlError,
    SentinelRedis,
    SingleRedis,
    describe_redis_url,
    parse_redis_url,
)

log = logging.getLogger(__name__)

# What the stores are handed: the same commands, scripts, pipelines and pub/sub
# either way; a cluster routes each to the node that owns its keys' slot.
RedisClient = aioredis.Redis | RedisCluster
# Everything redis-py raises about Redis: the cluster's own (a slot nobody
# serves, a topology it cannot read) is not a RedisError.
# And what redis-py's cluster client lets through when a node dies under it,
# seen in cluster failovers with answers in flight: a write to a socket another
# task closed (uvloop's RuntimeError; AttributeError on the connection's writer,
# already dropped). For a Redis call, any of these means the store is
# unavailable until the cluster has a new primary.
REDIS_ERRORS = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    RuntimeError,
    AttributeError,
    OSError,
)
# Retried (with backoff) before they count: what a restart or failover looks like.
_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Commands get this long, retries included, beyond any time they block on purpose;
# then the store counts as unavailable (a Redis that hangs must not hang answers).
COMMAND_DEADLINE_SECONDS = 3.0


def connection_name() -> str:
    """`qa-service:<host>:<pid>`: Redis's name for this process's connections."""
    return f"qa-service:{socket.gethostname()}:{os.getpid()}"


def value_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@asynccontextmanager
async def mapped_errors(blocks_for: float = 0.0) -> AsyncIterator[None]:
    """Every Redis error, and a command past its deadline, as StoreUnavailableError."""
    try:
        async with asyncio.timeout(COMMAND_DEADLINE_SECONDS + blocks_for):
            yield
    except (*REDIS_ERRORS, TimeoutError) as exc:
        log.warning("redis error %s", type(exc).__name__)
        raise StoreUnavailableError from None


def subscriber(client: RedisClient, attempt: int) -> PubSub | ClusterPubSub:
    """A pub/sub connection for the `attempt`-th subscription (from 0).

    On a cluster, a classic PUBLISH reaches every node, so any node serves a
    subscriber: each attempt takes the next node the client knows, so one
    that died (or that the client's stale map still names) is left behind
    rather than tried again and again until something else refreshes the map.
    """
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()
        node = nodes[attempt % len(nodes)] if nodes else None
        return client.pubsub(node=node, ignore_subscribe_messages=True)
    return client.pubsub(ignore_subscribe_messages=True)


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why Redis at `url` cannot be used, in one line without its password; None if it can.
    For start-up, before any event loop runs: a URL that cannot be read, or a
    Redis (a Sentinel's primary, a cluster) that does not answer PING in time."""
    try:
        target = parse_redis_url(url)
    except RedisUrlError as exc:
        return str(exc)
    try:
        asyncio.run(_ping(target, deadline=timeout))
    except (*REDIS_ERRORS, TimeoutError, OSError) as exc:
        return f"cannot reach Redis at {describe_redis_url(url)} ({type(exc).__name__})"
    return None


async def _ping(target: RedisTarget, *, deadline: float) -> None:
    async with asyncio.timeout(deadline), _opened(target, 1, wait_for_connection=False) as client:
        await client.ping()


@asynccontextmanager
async def open_redis_client(
    url: str, max_connections: int, *, wait_for_connection: bool = False
) -> AsyncIterator[RedisClient]:
    """A client on `url`, checked with PING; raises StoreUnavailableError if unreachable.

    Its pool holds `max_connections` (on a cluster: for each node). Past them a
    command fails at once (MaxConnectionsError, so store_unavailable), or, with
    `wait_for_connection`, waits for one within the command's deadline; a
    cluster's pools cannot wait (redis-py's cluster nodes have no blocking pool).
    """
    async with _opened(parse_redis_url(url), max_connections, wait_for_connection) as client:
        async with mapped_errors():
            await client.ping()
        yield client


def connection_options() -> dict[str, Any]:
    """Retries and timeouts of every connection, whatever the topology."""
    return {
        # Bridges a dropped connection, a restart or a failover of a second or
        # so (0.1 + 0.2 + 0.4 + 0.5 s of backoff); longer is an outage. The
        # asyncio Retry: the sync one never sees an async command fail.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=4),
        "socket_connect_timeout": 1.0,
        # Longer than any XREAD BLOCK (answers/follow.py polls every 0.5 s), so
        # only a Redis that stopped answering times out; mapped_errors bounds the total.
        "socket_timeout": 2.0,
        "health_check_interval": 15,
        # CLIENT LIST then says which replica (pod) and process holds each connection.
        "client_name": connection_name(),
    }


@asynccontextmanager
async def _opened(
    target: RedisTarget, max_connections: int, wait_for_connection: bool
) -> AsyncIterator[RedisClient]:
    async with AsyncExitStack() as stack:
        if isinstance(target, ClusterRedis):
            client: RedisClient = _Cluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                username=target.username,
                password=target.password,
                max_connections=max_connections,
                **connection_options(),
            )
        elif isinstance(target, SentinelRedis):
            client = await stack.enter_async_context(
                _sentinel_primary(target, max_connections, wait_for_connection)
            )
        else:
            client = _single(target, max_connections, wait_for_connection)
        stack.push_async_callback(client.aclose)
        yield client


class _Cluster(RedisCluster):
    """redis-py's cluster client, finding XREAD's keys itself.

    redis-py asks the server which of XREAD's arguments are keys (COMMAND
    GETKEYS), before every XREAD, always on the same node and outside its
    retries: a round trip per read, and when that node died in a failover,
    every read failed (with a RuntimeError from the closed socket, not a
    Redis error) until the client was rebuilt. It finds EVALSHA's keys
    itself; XREAD's are as plain: half of what follows STREAMS.
    """

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if str(command).upper() == "XREAD":
            words = [arg.upper() if isinstance(arg, bytes | str) else b"" for arg in args]
            marker = next((w for w in words if w in (b"STREAMS", "STREAMS")), None)
            if marker is not None:
                after = args[words.index(marker) + 1 :]
                slots = {self.keyslot(key) for key in after[: len(after) // 2]}
                if len(slots) == 1:
                    return slots.pop()
        return await super()._determine_slot(command, *args)


def _waiting(wait_for_connection: bool) -> dict[str, Any]:
    return {"timeout": COMMAND_DEADLINE_SECONDS} if wait_for_connection else {}


def _single(target: SingleRedis, max_connections: int, wait_for_connection: bool) -> aioredis.Redis:
    pool_class = aioredis.BlockingConnectionPool if wait_for_connection else aioredis.ConnectionPool
    pool = pool_class.from_url(
        target.url,
        max_connections=max_connections,
        retry_on_error=list(_TRANSIENT),
        **connection_options(),
        **_waiting(wait_for_connection),
    )
    return aioredis.Redis.from_pool(pool)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it asks Sentinel where the primary is) that waits for a
    free connection, as the readers' pool does on one server."""


@asynccontextmanager
async def _sentinel_primary(
    target: SentinelRedis, max_connections: int, wait_for_connection: bool
) -> AsyncIterator[aioredis.Redis]:
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    options = connection_options()
    # The password goes to the sentinels too, as the `limits` library sends it.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        list(target.sentinels),
        sentinel_kwargs={
            **auth,
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
    )
    try:
        yield sentinel.master_for(
            target.service,
            connection_pool_class=(
                _BlockingSentinelPool if wait_for_connection else SentinelConnectionPool
            ),
            db=target.db,
            max_connections=max_connections,
            retry_on_error=list(_TRANSIENT),
            **auth,
            **options,
            **_waiting(wait_for_connection),
        )
    finally:
        await sentinel.aclose()
