"""Short-lived values by key in Redis (QA_REDIS_URL), shared by every replica:
stream tickets (`qa:ticket:<sha256 of the ticket>`), the chat index
(`qa:chat:<sha256 of client and chat id>`) and stored responses
(`qa:response:<sha256 of the response id>`).

One key per value, set with EX (Redis expires it). A take is GETDEL, which is
atomic: of two replicas redeeming the same ticket at once, one gets the grant
and the other nothing.
"""

from __future__ import annotations

from qa_service.stores.redis_client import RedisClient, mapped_errors, value_text

TICKETS_PREFIX = "qa:ticket:"
CHATS_PREFIX = "qa:chat:"
RESPONSES_PREFIX = "qa:response:"


class RedisValues:
    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def put(self, key: str, value: str, ttl_seconds: int) -> None:
        async with mapped_errors():
            await self._client.set(self._prefix + key, value, ex=ttl_seconds)

    async def get(self, key: str) -> str | None:
        async with mapped_errors():
            value = await self._client.get(self._prefix + key)
        return None if value is None else value_text(value)

    async def take(self, key: str) -> str | None:
        async with mapped_errors():
            value = await self._client.getdel(self._prefix + key)
        return None if value is None else value_text(value)
