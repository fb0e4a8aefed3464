"""Stores: where answers' logs and signals (answers/ports.py), clients' limits and
stream tickets (access/) live: in this process, or in Redis with QA_REDIS_URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from qa_service.access.admission import Admission
from qa_service.access.capacity import StreamCapacity
from qa_service.access.quotas import ClientQuotas
from qa_service.access.slots import SlotKeeper
from qa_service.access.tickets import TicketStore
from qa_service.answers.ports import AnswerStore
from qa_service.config import Settings
from qa_service.stores.limits import open_limit_stores
from qa_service.stores.memory import MemoryAnswerStore
from qa_service.stores.tickets import MemoryTicketStore

# A replica that stops renewing its clients' answer slots frees them this long after.
SLOT_LEASE_SECONDS = 30.0


def max_logged_events(settings: Settings) -> int:
    """Meta, a text per piece up to the cap (QA_MAX_TOKENS), and the last event."""
    return (settings.max_tokens or 100_000) + 16


@asynccontextmanager
async def open_answer_store(settings: Settings) -> AsyncIterator[AnswerStore]:
    """In this process by default; in Redis, shared by replicas, with QA_REDIS_URL."""
    if settings.redis_url is None:
        yield MemoryAnswerStore(settings.resume_ttl_seconds)
        return
    # Imported only when used: a single-process deployment never loads redis.
    from qa_service.stores.redis import open_redis_store

    url = settings.redis_url.get_secret_value()
    async with open_redis_store(
        url, settings.resume_ttl_seconds, max_logged_events(settings)
    ) as store:
        yield store


@asynccontextmanager
async def open_admission(settings: Settings) -> AsyncIterator[Admission]:
    """QA_MAX_STREAMS and the per-client limits, counted where QA_REDIS_URL says."""
    async with open_limit_stores(settings) as stores:
        slots = SlotKeeper(stores.slots, SLOT_LEASE_SECONDS)
        keeper = asyncio.get_running_loop().create_task(slots.keep_leases())
        try:
            yield Admission(
                StreamCapacity(settings.max_streams),
                ClientQuotas(stores.counters, settings.rate_limit, settings.client_token_budget),
                slots,
                settings.client_max_streams,
            )
        finally:
            keeper.cancel()


@asynccontextmanager
async def open_ticket_store(settings: Settings) -> AsyncIterator[TicketStore]:
    """In this process by default; in Redis with QA_REDIS_URL, so that a ticket
    issued by one replica is redeemed on another."""
    if settings.redis_url is None:
        yield MemoryTicketStore()
        return
    from qa_service.stores.redis import open_redis_client
    from qa_service.stores.redis_tickets import RedisTicketStore

    async with open_redis_client(settings.redis_url.get_secret_value()) as client:
        yield RedisTicketStore(client)
