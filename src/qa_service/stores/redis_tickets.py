"""The Redis ticket store (QA_REDIS_URL): a ticket issued by one replica is
redeemed on any, and only once.

One key per ticket, `qa:ticket:<sha256 of the ticket>`, set with EX (Redis
expires it) and taken with GETDEL, which is atomic: of two replicas redeeming
the same ticket at once, one gets the grant and the other nothing.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from qa_service.stores.redis import mapped_errors, value_text


def _key(digest: str) -> str:
    return f"qa:ticket:{digest}"


class RedisTicketStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def put(self, digest: str, grant: str, ttl_seconds: int) -> None:
        async with mapped_errors():
            await self._client.set(_key(digest), grant, ex=ttl_seconds)

    async def take(self, digest: str) -> str | None:
        async with mapped_errors():
            value = await self._client.getdel(_key(digest))
        return None if value is None else value_text(value)
