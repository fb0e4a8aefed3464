"""The Redis answer store (QA_REDIS_URL): answers shared by every replica.

One answer is a few keys, all with the answer id as their cluster hash tag:
    qa:answer:{id}          hash: fingerprint, final_seq once ended
    qa:answer:{id}:events   stream: entry id 0-<seq+1>, field `e` = the event as JSON
    qa:answer:{id}:lease    the producer is alive (PX = QA_PRODUCER_LEASE_SECONDS)
    qa:answer:{id}:readers  a reader is attached (PX = QA_RESUME_GRACE_SECONDS)
and cancels go out on the `qa:cancel` channel.

Explicit stream ids make an append a compare-and-set (XADD refuses an id at or
below the stream's top) and let a reader continue after any seq with one XREAD.
Every key expires QA_RESUME_TTL_SECONDS after the producer's last heartbeat,
or after the answer's last event, so nothing outlives a dead replica for long;
and each has a TTL from the moment it exists (the hash from `create`, the
stream from its first event), whatever ends the answer, and whenever.
Redis errors (and commands past their deadline) become StoreUnavailableError
in redis_client.py, and nowhere else.

Readers' commands (one XREAD BLOCK per followed answer, stores/followed.py;
presence, lease checks) go through `reads`, a client with a pool of its own:
however many readers come, the producers' commands on `client` (appends,
leases, `describe_for_producer`, and the presence of readers of an answer
written here) always find a connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from qa_service.answers.follow import FollowTiming
from qa_service.answers.ports import LogInfo
from qa_service.core.errors import StoreUnavailableError
from qa_service.core.events import AnswerEvent, from_dict, is_terminal, to_dict
from qa_service.core.loops import Loop
from qa_service.stores.followed import FollowedAnswers
from qa_service.stores.mirror import LocalMirror
from qa_service.stores.redis_client import (
    REDIS_ERRORS,
    RedisClient,
    mapped_errors,
    subscriber,
    value_text,
)

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "qa:cancel"

# KEYS: stream, hash. ARGV: entry id, event JSON, MAXLEN, final (0/1), ttl.
# Returns 1 appended; 0 that seq is taken, or the log has already ended (its
# final_seq is set); -1 the answer's hash is gone (a Redis restart without
# persistence, or an eviction): the log cannot go on. Any other XADD error
# (out of memory, a read-only replica) is raised, never mistaken for "taken".
# The stream expires from its first event on, as the hash does from `create`:
# the heartbeat's EXPIRE misses a stream it runs before, and an answer that
# ended before its next beat, with no last event stored, left its stream for
# ever (issue 20: 16 of 300 hang-ups with QA_RESUME_GRACE_SECONDS=0). Only
# the first event (entry 0-1) creates the stream, so only it checks; PTTL,
# not EXPIRE's NX flag: that needs Redis 7.
_APPEND = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[2], 'final_seq') == 1 then return 0 end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1], 'e', ARGV[2])
if type(added) == 'table' and added.err then
  if string.find(added.err, 'equal or smaller', 1, true) then return 0 end
  return redis.error_reply(added.err)
end
if ARGV[1] == '0-1' and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], 'final_seq', string.match(ARGV[1], '%d+$') - 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
"""


def _keys(answer_id: str) -> tuple[str, str, str, str]:
    base = f"qa:answer:{{{answer_id}}}"
    return base, f"{base}:events", f"{base}:lease", f"{base}:readers"


def _entry_id(seq: int) -> str:
    return f"0-{seq + 1}"


class RedisAnswerStore:
    def __init__(
        self,
        client: RedisClient,
        ttl_seconds: int,
        max_events: int,
        reads: RedisClient | None = None,
    ) -> None:
        """`client` for the producers' writes; `reads` (default: `client`) for readers."""
        self._client = client
        self._reads = reads or client
        self._ttl = ttl_seconds
        self._max_events = max_events
        self._append = client.register_script(_APPEND)
        self._followed = FollowedAnswers(self._read_stream, FollowTiming().poll_seconds)
        # An answer written here is followed from memory: the mirror's events
        # go to its feed when the mirror lets go, and no read of Redis copies them.
        self._mirror = LocalMirror(self._followed.hand_over)

    async def create(
        self,
        answer_id: str,
        fingerprint: str,
        lease_seconds: float = 0.0,
        reader_seconds: float = 0.0,
    ) -> None:
        answer, _, lease, readers = _keys(answer_id)
        # One transaction: a hash with no expiry would outlive a crash between the two.
        async with mapped_errors(), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(answer, "fingerprint", fingerprint)
            pipe.expire(answer, self._ttl)
            if lease_seconds > 0:
                pipe.set(lease, 1, px=int(lease_seconds * 1000))
            if reader_seconds > 0:
                pipe.set(readers, 1, px=int(reader_seconds * 1000))
            await pipe.execute()
        # Its readers in this process wait on this process's memory from now,
        # not on an XREAD each until the producer's first event is stored.
        self._mirror.expect(answer_id)

    async def describe(self, answer_id: str) -> LogInfo | None:
        return await self._describe(self._reads, answer_id)

    async def describe_for_producer(self, answer_id: str) -> LogInfo | None:
        # On the producers' pool: with the readers' pool full, the producer's
        # last event waited 3 s for a connection there, and was lost.
        return await self._describe(self._client, answer_id)

    async def _describe(self, client: RedisClient, answer_id: str) -> LogInfo | None:
        answer, events, _, _ = _keys(answer_id)
        async with mapped_errors(), client.pipeline(transaction=False) as pipe:
            pipe.hmget(answer, ["fingerprint", "final_seq"])
            pipe.xrevrange(events, count=1)
            (fingerprint, final_seq), newest = await pipe.execute()
        if fingerprint is None:
            return None
        last_seq = int(value_text(newest[0][0]).split("-")[1]) - 1 if newest else -1
        final = None if final_seq is None else int(final_seq)
        return LogInfo(value_text(fingerprint), last_seq, final)

    async def append(self, answer_id: str, event: AnswerEvent) -> bool:
        answer, events, _, _ = _keys(answer_id)
        # ASCII-escaped: a lone surrogate in a model's text survives the trip.
        data = json.dumps(to_dict(event), separators=(",", ":"))
        args: list[str | int] = [
            _entry_id(event.seq),
            data,
            self._max_events,
            int(is_terminal(event)),
            self._ttl,
        ]
        result = None
        try:
            async with mapped_errors():
                result = await self._append(keys=[events, answer], args=args)
        finally:
            if result == 1:
                self._mirror.stored(answer_id, event)
            else:
                # Refused, or cut short by an error, a deadline or a cancel, with
                # an outcome unknown here: this process's readers read Redis from
                # now on, and get what it holds. A mirror kept after a cancel cut
                # the last append short held readers until the TTL (issue 20).
                self._mirror.forget(answer_id)
        if result == -1:
            raise StoreUnavailableError
        return bool(result == 1)

    def start_following(self, answer_id: str) -> Loop:
        return self._followed.start(answer_id)

    async def read(self, answer_id: str, after: int, wait_seconds: float) -> list[AnswerEvent]:
        mirrored = await self._mirror.read(answer_id, after, wait_seconds)
        if mirrored is not None:
            return mirrored
        followed = await self._followed.read(answer_id, after, wait_seconds)
        if followed is not None:
            return followed
        return await self._read_stream(answer_id, after, wait_seconds)

    async def _read_stream(
        self, answer_id: str, after: int, wait_seconds: float
    ) -> list[AnswerEvent]:
        _, events, _, _ = _keys(answer_id)
        block = max(1, int(wait_seconds * 1000)) if wait_seconds > 0 else None
        async with mapped_errors(wait_seconds):
            reply = await self._reads.xread({events: _entry_id(after)}, count=1000, block=block)
        if not reply:
            return []
        entries = _entries(reply)
        return [from_dict(json.loads(fields[b"e"])) for _, fields in entries]

    async def renew_lease(self, answer_id: str, seconds: float) -> None:
        answer, events, lease, _ = _keys(answer_id)
        async with mapped_errors(), self._client.pipeline(transaction=False) as pipe:
            pipe.set(lease, 1, px=int(seconds * 1000))
            pipe.expire(answer, self._ttl)
            pipe.expire(events, self._ttl)
            await pipe.execute()

    async def release_lease(self, answer_id: str) -> None:
        _, _, lease, _ = _keys(answer_id)
        async with mapped_errors():
            await self._client.delete(lease)

    async def producer_alive(self, answer_id: str) -> bool:
        _, _, lease, _ = _keys(answer_id)
        async with mapped_errors():
            return bool(await self._reads.exists(lease))

    async def touch_reader(self, answer_id: str, seconds: float) -> None:
        _, _, _, readers = _keys(answer_id)
        # An answer this process writes (its mirror holds it) is touched on the
        # producers' pool: its presence decides whether it goes on, and touches
        # failing on a full readers' pool for the whole grace cancelled it while
        # its reader was attached. Readers of answers made elsewhere keep to theirs.
        client = self._client if self._mirror.holds(answer_id) else self._reads
        async with mapped_errors():
            await client.set(readers, 1, px=int(seconds * 1000))

    async def reader_present(self, answer_id: str) -> bool:
        _, _, _, readers = _keys(answer_id)
        async with mapped_errors():
            return bool(await self._client.exists(readers))

    async def request_cancel(self, answer_id: str) -> None:
        async with mapped_errors():
            await self._client.publish(CANCEL_CHANNEL, answer_id)

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Subscribed for the app's life; a lost connection is re-subscribed.
        A cancel published while this replica was cut off from Redis is lost:
        its answer then ends by its grace period, as after a hang-up."""
        attempt = 0
        while True:
            try:
                async with subscriber(self._client, attempt) as pubsub:
                    await pubsub.subscribe(CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            yield value_text(message["data"])
            except REDIS_ERRORS as exc:
                # Any Redis error: a listener that died would end cross-replica cancel.
                log.warning("cancel subscription lost (%s); subscribing again", type(exc).__name__)
                attempt += 1
                await asyncio.sleep(1.0)


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    # XREAD's RESP2 reply: [[stream, [(id, {field: value}), ...]]]
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply[0][1])
