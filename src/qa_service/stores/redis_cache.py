"""The answer cache in Redis (QA_REDIS_URL), shared by every replica.

- A recording is one string, `qa:cache:<key>`, set with EX: Redis expires it.
  Its size is bounded by Redis (maxmemory), not by this process.
- A flight is a hash, `qa:flight:<key>` (answer id `a`, readers `n`), changed
  only by the scripts below, so two replicas joining or starting at once agree.
The key is a digest (answers/cache/keys.py): neither the question nor the
client can be read from it.
"""

from __future__ import annotations

from typing import cast

from qa_service.stores.redis_client import RedisClient, mapped_errors, value_text

RECORDINGS_PREFIX = "qa:cache:"
FLIGHTS_PREFIX = "qa:flight:"

# ARGV: new answer id, max readers, ttl. Returns {answer id, 1 started | 0 joined},
# or nil when the flight has max readers already.
_JOIN_OR_START = """
local answer = redis.call('HGET', KEYS[1], 'a')
if answer then
  if tonumber(redis.call('HGET', KEYS[1], 'n')) >= tonumber(ARGV[2]) then return nil end
  redis.call('HINCRBY', KEYS[1], 'n', 1)
  return {answer, 0}
end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 'n', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {ARGV[1], 1}
"""
# ARGV: answer id. Returns the readers left (the flight ends at 0), or -1 when
# the key has no flight of that answer.
_LEAVE = """
if redis.call('HGET', KEYS[1], 'a') ~= ARGV[1] then return -1 end
local left = redis.call('HINCRBY', KEYS[1], 'n', -1)
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""
_END = """
if redis.call('HGET', KEYS[1], 'a') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisCacheStore:
    def __init__(self, client: RedisClient) -> None:
        self._client = client
        self._join_or_start = client.register_script(_JOIN_OR_START)
        self._leave = client.register_script(_LEAVE)
        self._end = client.register_script(_END)

    async def get(self, key: str) -> bytes | None:
        async with mapped_errors():
            found = await self._client.get(RECORDINGS_PREFIX + key)
        return None if found is None else cast(bytes, found)

    async def put(self, key: str, recording: bytes, ttl_seconds: int) -> None:
        async with mapped_errors():
            await self._client.set(RECORDINGS_PREFIX + key, recording, ex=ttl_seconds)

    async def join_or_start(
        self, key: str, answer_id: str, max_readers: int, ttl_seconds: int
    ) -> tuple[str, bool] | None:
        async with mapped_errors():
            reply = await self._join_or_start(
                keys=[FLIGHTS_PREFIX + key], args=[answer_id, max_readers, ttl_seconds]
            )
        if reply is None:
            return None
        flight_id, started = reply
        return value_text(flight_id), int(started) == 1

    async def leave(self, key: str, answer_id: str) -> int | None:
        async with mapped_errors():
            left = int(await self._leave(keys=[FLIGHTS_PREFIX + key], args=[answer_id]))
        return None if left < 0 else max(left, 0)

    async def end(self, key: str, answer_id: str) -> None:
        async with mapped_errors():
            await self._end(keys=[FLIGHTS_PREFIX + key], args=[answer_id])
