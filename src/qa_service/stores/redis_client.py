"""The Redis client every Redis store shares (QA_REDIS_URL): opening it, its
pool and retries, and the one place Redis errors become StoreUnavailableError."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from qa_service.core.errors import StoreUnavailableError

log = logging.getLogger(__name__)

# Retried (with backoff) before they count: what a restart or failover looks like.
_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# Commands get this long, retries included, beyond any time they block on purpose;
# then the store counts as unavailable (a Redis that hangs must not hang answers).
COMMAND_DEADLINE_SECONDS = 3.0


def describe_url(url: str) -> str:
    """Where a Redis URL points, without its password: for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


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
    except (redis.exceptions.RedisError, TimeoutError) as exc:
        log.warning("redis error %s", type(exc).__name__)
        raise StoreUnavailableError from None


def unreachable(url: str, timeout: float = 3.0) -> str | None:
    """Why Redis at `url` cannot be used, in one line without its password; None if it can."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        return f"cannot reach Redis at {describe_url(url)} ({type(exc).__name__})"
    finally:
        client.close()
    return None


@asynccontextmanager
async def open_redis_client(
    url: str, max_connections: int, *, wait_for_connection: bool = False
) -> AsyncIterator[aioredis.Redis]:
    """A client on `url`, checked with PING; raises StoreUnavailableError if unreachable.

    Its pool holds `max_connections`. Past them a command fails at once
    (MaxConnectionsError, so store_unavailable), or, with
    `wait_for_connection`, waits for one within the command's deadline.
    """
    pool_class = aioredis.BlockingConnectionPool if wait_for_connection else aioredis.ConnectionPool
    waiting = {"timeout": COMMAND_DEADLINE_SECONDS} if wait_for_connection else {}
    pool = pool_class.from_url(
        url,
        max_connections=max_connections,
        # Bridges a dropped connection, a restart or a failover of a second or
        # so (0.1 + 0.2 + 0.4 + 0.5 s of backoff); longer is an outage. The
        # asyncio Retry: the sync one never sees an async command fail.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=4),
        retry_on_error=list(_TRANSIENT),
        socket_connect_timeout=1.0,
        # Longer than any XREAD BLOCK (answers/follow.py polls every 0.5 s), so
        # only a Redis that stopped answering times out; mapped_errors bounds the total.
        socket_timeout=2.0,
        health_check_interval=15,
        # CLIENT LIST then says which replica (pod) and process holds each connection.
        client_name=connection_name(),
        **waiting,
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        async with mapped_errors():
            await client.ping()
        yield client
    finally:
        await client.aclose()
