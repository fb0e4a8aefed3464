"""Clients' answer slots in Redis (access/slots.py): one sorted set per client.

    qa:slots:{client}   member = slot id, score = the lease's end (Redis time, ms)

Taking a slot first drops the client's expired ones (a replica that died
stopped renewing them), then counts, then adds: one script, so two replicas
can never both take a client's last slot. Redis's own clock decides expiry,
so replicas' clocks need not agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from qa_service.stores.redis_client import RedisClient, mapped_errors

# KEYS: the client's set. ARGV: slot, limit, lease ms. Returns 1 taken, 0 full.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: the client's set. ARGV: lease ms, then slots. Renews only slots still there.
_RENEW = """
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


def _key(client: str) -> str:
    return f"qa:slots:{{{client}}}"


class RedisSlotStore:
    def __init__(self, client: RedisClient) -> None:
        self._take = client.register_script(_TAKE)
        self._client = client

    async def take(self, client: str, slot: str, limit: int, lease_seconds: float) -> bool:
        async with mapped_errors():
            taken = await self._take(keys=[_key(client)], args=[slot, limit, _ms(lease_seconds)])
        return bool(taken)

    async def renew(self, held: Mapping[str, set[str]], lease_seconds: float) -> None:
        # EVAL with the script's text, not the registered script's EVALSHA: a
        # cluster's pipeline loads no script on the nodes it reaches (one
        # server's pipeline does), and a replica promoted by a failover has
        # none (Redis 7 does not replicate SCRIPT LOAD). Clients' sets are in
        # different slots: on a cluster the pipeline goes to each owner.
        async with mapped_errors(), self._client.pipeline(transaction=False) as pipe:
            for client, slots in held.items():
                pipe.eval(_RENEW, 1, _key(client), _ms(lease_seconds), *slots)
            await pipe.execute()

    async def give_back(self, client: str, slot: str) -> None:
        async with mapped_errors():
            await self._client.zrem(_key(client), slot)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
