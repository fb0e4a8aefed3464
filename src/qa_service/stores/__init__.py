"""Stores: where answers' logs and signals (answers/ports.py), clients' limits and
stream tickets (access/) live: in this process, or in Redis with QA_REDIS_URL.

With Redis (one server, Sentinel's primary, or a cluster: stores/redis_urls.py),
one client (one connection pool, one PING at start-up) serves them all, except
the answers' readers: they have a pool of their own, so however many come,
producers and limits always find a connection (issue 20); and, on a cluster,
the limits library, which opens a cluster client of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage, Storage

from qa_service.access.slots import SlotStore
from qa_service.access.tickets import TicketStore
from qa_service.answers.cache.ports import CacheStore
from qa_service.answers.chats import ChatStore
from qa_service.answers.ports import AnswerStore
from qa_service.config import Settings
from qa_service.stores.memory_answers import MemoryAnswerStore
from qa_service.stores.memory_cache import MemoryCacheStore
from qa_service.stores.memory_slots import MemorySlotStore
from qa_service.stores.memory_values import MemoryValues
from qa_service.stores.redis_log import RedisLogSettings
from qa_service.stores.write_behind import WriteTiming


@dataclass(frozen=True, slots=True)
class Stores:
    answers: AnswerStore
    # The limits library's counters: requests and tokens per period.
    limit_counters: Storage
    # Clients' answers in progress.
    slots: SlotStore
    tickets: TicketStore
    # Each client's chat's latest answer (the AI SDK dialect's resume).
    chats: ChatStore
    # Finished answers' recordings and answers in flight (answers/cache/).
    cache: CacheStore
    # The Responses dialect's stored responses (answers/responses.py).
    responses: ChatStore


def max_logged_events(settings: Settings) -> int:
    """Meta, a text per piece up to the cap (QA_MAX_TOKENS), and the last event."""
    return (settings.max_tokens or 100_000) + 16


def redis_pool_size(settings: Settings) -> int:
    """Connections in each of the two Redis pools: two per answer this instance
    may generate at once, and some for everything else. Writers: each answer
    generating here appends and renews its lease, beside the limits, slots and
    tickets; redis-py's default pool of 100 ended streams past about 90 with
    store_unavailable (MaxConnectionsError; benchmarks/workers.py at 200
    streams). Readers: one XREAD BLOCK per answer followed here from another
    instance (stores/followed.py), and their short checks, which wait for a
    connection rather than fail when a burst of readers takes them all."""
    return 2 * settings.max_streams + 16


def redis_log_settings(settings: Settings) -> RedisLogSettings:
    return RedisLogSettings(
        ttl_seconds=settings.resume_ttl_seconds,
        max_entries=max_logged_events(settings),
        lease_seconds=settings.producer_lease_seconds,
        grace_seconds=settings.resume_grace_seconds,
        writes=WriteTiming(
            batch_seconds=settings.redis_batch_ms / 1000,
            unwatched_batch_seconds=settings.redis_unwatched_batch_ms / 1000,
            outage_seconds=settings.redis_outage_seconds,
        ),
    )


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[Stores]:
    """In this process by default; in Redis, shared by replicas, with QA_REDIS_URL."""
    if settings.redis_url is None:
        yield Stores(
            MemoryAnswerStore(settings.resume_ttl_seconds),
            MemoryStorage(),
            MemorySlotStore(),
            MemoryValues(),
            MemoryValues(),
            MemoryCacheStore(int(settings.answer_cache_max_mb * 1024 * 1024)),
            MemoryValues(),
        )
        return
    # Imported only when used: a single-process deployment never loads redis.
    from qa_service.stores.redis_answers import RedisAnswerStore
    from qa_service.stores.redis_cache import RedisCacheStore
    from qa_service.stores.redis_client import open_redis_client
    from qa_service.stores.redis_limits import open_limit_counters
    from qa_service.stores.redis_slots import RedisSlotStore
    from qa_service.stores.redis_values import (
        CHATS_PREFIX,
        RESPONSES_PREFIX,
        TICKETS_PREFIX,
        RedisValues,
    )

    url = settings.redis_url.get_secret_value()
    pool_size = redis_pool_size(settings)
    async with (
        open_redis_client(url, pool_size) as client,
        open_redis_client(url, pool_size, wait_for_connection=True) as reads_client,
        open_limit_counters(client, url, pool_size) as limit_counters,
    ):
        answers = RedisAnswerStore(client, redis_log_settings(settings), reads_client)
        try:
            yield Stores(
                answers,
                limit_counters,
                RedisSlotStore(client),
                RedisValues(client, TICKETS_PREFIX),
                RedisValues(client, CHATS_PREFIX),
                RedisCacheStore(client),
                RedisValues(client, RESPONSES_PREFIX),
            )
        finally:
            await answers.aclose()
